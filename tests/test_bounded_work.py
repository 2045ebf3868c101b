"""No single API call or admin action does unbounded work.

Deleting an endpoint is bounded (its rows are purged later, in batches); admin
actions handle at most ACTION_MAX_ROWS rows, "select all" included; the
changelists of the big tables offer no "delete selected"; tenants are
deactivated, not deleted, in admin.
"""

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from deliveries.models import Delivery, DeliveryAttempt
from deliveries.services.attempts import delivery_run
from deliveries.tasks import cleanup_attempt_logs
from subscriptions.models import Endpoint, EndpointSecret
from tenants.models import ApiKey
from tenants.services import api_key_create
from tests.factories import make_endpoint, make_event
from webhooks_project import admin_lists


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def test_endpoint_delete_is_bounded_and_purged_later(
    api, tenant, receiver, django_assert_max_num_queries
):
    # given: an endpoint with deliveries and attempts, and another one
    doomed = make_endpoint(tenant=tenant, url=receiver.url, event_types=["a"])
    kept = make_endpoint(tenant=tenant, url=receiver.url, event_types=["b"])
    for _ in range(30):
        make_event(tenant=tenant, event_type="a")
    _, [delivered] = make_event(tenant=tenant, event_type="a")
    delivery_run(delivery_id=delivered.pk)
    _, [other] = make_event(tenant=tenant, event_type="b")
    path = f"/api/v1/endpoints/{doomed.pk}"
    # when: deleted, in a few statements whatever it holds
    with django_assert_max_num_queries(8):
        response = api.delete(path)
    # then: gone from the API at once, and no longer fanned out to
    assert response.status_code == 204
    assert api.get(path).status_code == 404
    assert api.delete(path).status_code == 404
    listed = [item["id"] for item in api.get("/api/v1/endpoints").json()["results"]]
    assert listed == [str(kept.pk)]
    assert make_event(tenant=tenant, event_type="a")[1] == []
    # its rows are still there until the cleanup purges them, in batches
    assert Delivery.objects.filter(endpoint_id=doomed.pk).count() == 31
    cleanup_attempt_logs()
    assert not Endpoint.objects.filter(pk=doomed.pk).exists()
    assert not Delivery.objects.filter(endpoint_id=doomed.pk).exists()
    assert not DeliveryAttempt.objects.filter(delivery_id=delivered.pk).exists()
    assert not EndpointSecret.objects.filter(endpoint_id=doomed.pk).exists()
    # the other endpoint's rows are untouched
    assert Delivery.objects.filter(pk=other.pk).exists()
    assert EndpointSecret.objects.filter(endpoint=kept).exists()


def test_deleted_endpoints_do_not_count_against_the_limit(api, tenant, settings):
    settings.WEBHOOK_MAX_ENDPOINTS_PER_TENANT = 1
    first = api.post("/api/v1/endpoints", {"url": "http://127.0.0.1:9/"}, "json")
    assert first.status_code == 201
    assert api.delete(f"/api/v1/endpoints/{first.json()['id']}").status_code == 204
    again = api.post("/api/v1/endpoints", {"url": "http://127.0.0.1:9/"}, "json")
    assert again.status_code == 201, again.content


def test_endpoint_admin_delete_goes_through_the_service(admin_client, tenant):
    # given: an endpoint with deliveries
    endpoint = make_endpoint(tenant=tenant)
    for _ in range(5):
        make_event(tenant=tenant)
    url = reverse("admin:subscriptions_endpoint_delete", args=[endpoint.pk])
    # when: the confirmation lists the endpoint only, not its deliveries
    page = admin_client.get(url)
    assert page.status_code == 200
    assert "Delivery" not in page.content.decode()
    admin_client.post(url, {"post": "yes"})
    # then: deleted, purged later
    endpoint.refresh_from_db()
    assert endpoint.deleted_at is not None
    assert not endpoint.is_active
    changelist = admin_client.get(reverse("admin:subscriptions_endpoint_changelist"))
    assert endpoint not in changelist.context["cl"].result_list


@pytest.mark.parametrize(
    "model", ["deliveries_event", "deliveries_delivery", "deliveries_deadletter"]
)
def test_big_tables_offer_no_delete_selected(admin_client, model):
    page = admin_client.get(reverse(f"admin:{model}_changelist"))
    assert page.status_code == 200
    assert 'value="delete_selected"' not in page.content.decode()


def test_tenants_are_not_deleted_in_admin(admin_client, tenant):
    url = reverse("admin:tenants_tenant_delete", args=[tenant.pk])
    assert admin_client.post(url, {"post": "yes"}).status_code == 403
    changelist = admin_client.get(reverse("admin:tenants_tenant_changelist"))
    assert 'value="delete_selected"' not in changelist.content.decode()


def test_admin_actions_handle_a_bounded_selection(admin_client, tenant, monkeypatch):
    # given: three active keys, "select all" across the changelist, a bound of 2
    monkeypatch.setattr(admin_lists, "ACTION_MAX_ROWS", 2)
    for number in range(2):
        api_key_create(tenant=tenant, name=f"extra-{number}")
    assert ApiKey.objects.filter(revoked_at__isnull=True).count() == 3
    # when
    response = admin_client.post(
        reverse("admin:tenants_apikey_changelist"),
        {
            "action": "revoke_keys",
            "select_across": "1",
            "_selected_action": [str(ApiKey.objects.first().pk)],
            "index": 0,
        },
        follow=True,
    )
    # then: two revoked, and the message says to run it again
    [message] = messages_of(response)
    assert message.startswith("Revoked 2 keys.")
    assert "run it again for the rest" in message
    assert ApiKey.objects.filter(revoked_at__isnull=True).count() == 1
