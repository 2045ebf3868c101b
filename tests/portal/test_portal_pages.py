"""The portal's pages: what a consumer sees and changes, and nothing of others'."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from deliveries.models import Delivery, DeliveryAttempt, DeliveryStatus, Event
from subscriptions.models import Endpoint
from tests.factories import make_endpoint, make_event
from tests.portal.conftest import CONSUMER

pytestmark = pytest.mark.django_db


def object_pages(endpoint, delivery) -> list[tuple[str, str]]:
    """(method, url) of every page about one endpoint or one of its deliveries."""
    e, d = endpoint.pk, delivery.pk
    gets = [
        reverse("portal:endpoint", args=[e]),
        reverse("portal:endpoint-edit", args=[e]),
        reverse("portal:endpoint-delete", args=[e]),
        reverse("portal:endpoint-secret", args=[e]),
        reverse("portal:endpoint-recover", args=[e]),
        reverse("portal:delivery", args=[e, d]),
    ]
    posts = [
        reverse("portal:endpoint-edit", args=[e]),
        reverse("portal:endpoint-pause", args=[e]),
        reverse("portal:endpoint-resume", args=[e]),
        reverse("portal:endpoint-delete", args=[e]),
        reverse("portal:endpoint-rotate", args=[e]),
        reverse("portal:endpoint-replay", args=[e]),
        reverse("portal:endpoint-test", args=[e]),
        reverse("portal:endpoint-recover", args=[e]),
        reverse("portal:delivery-retry", args=[e, d]),
    ]
    return [("get", url) for url in gets] + [("post", url) for url in posts]


def test_endpoint_list_shows_the_consumers_endpoints_only(portal, owned, foreign):
    page = portal.get(reverse("portal:endpoints")).content.decode()
    assert owned[0].url in page
    for endpoint, _ in foreign.values():
        assert endpoint.url not in page
        assert str(endpoint.pk) not in page


def test_foreign_ids_answer_404_on_every_page(portal, owned, foreign):
    # given: what the portal may not reach, and a secret to keep
    events = Event.objects.count()
    for name, (endpoint, delivery) in foreign.items():
        secret = endpoint.secret
        for method, url in object_pages(endpoint, delivery):
            # when
            response = getattr(portal, method)(url, {"url": "http://127.0.0.1:9/x"})
            # then: the portal's own page, the same as for an id that never was
            assert response.status_code == 404, (name, method, url)
            assert "Not found" in response.content.decode()
        endpoint.refresh_from_db()
        assert endpoint.is_active and endpoint.deleted_at is None, name
        assert endpoint.secret == secret
        assert endpoint.url.endswith(name)
    assert Event.objects.count() == events  # no test event sent
    # a delivery of another endpoint, under the consumer's own endpoint
    mine, _ = owned
    _, theirs = foreign["other-consumer"]
    url = reverse("portal:delivery", args=[mine.pk, theirs.pk])
    assert portal.get(url).status_code == 404


def test_secret_is_not_on_the_endpoint_page_until_revealed(portal, owned):
    endpoint, _ = owned
    page = portal.get(reverse("portal:endpoint", args=[endpoint.pk])).content.decode()
    assert endpoint.secret not in page
    assert "Reveal secret" in page
    shown = portal.get(reverse("portal:endpoint-secret", args=[endpoint.pk]))
    assert endpoint.secret in shown.content.decode()


def test_create_endpoint_through_the_form(portal, tenant):
    # given: event types the tenant sent lately, to be offered
    make_event(tenant=tenant, event_type="invoice.paid")
    form = portal.get(reverse("portal:endpoint-new")).content.decode()
    assert 'value="invoice.paid"' in form
    # when
    response = portal.post(
        reverse("portal:endpoint-new"),
        {
            "url": "http://127.0.0.1:9/hooks",
            "description": "billing",
            "event_types": ["invoice.paid"],
            "other_event_types": "order.*, refund.created",
        },
    )
    # then: the consumer's endpoint, with the types ticked and typed
    endpoint = Endpoint.objects.get(tenant=tenant, url="http://127.0.0.1:9/hooks")
    assert response.status_code == 302
    assert response["Location"] == reverse("portal:endpoint", args=[endpoint.pk])
    assert endpoint.consumer == CONSUMER
    assert endpoint.event_types == ["invoice.paid", "order.*", "refund.created"]
    assert endpoint.description == "billing"
    assert endpoint.secret.startswith("whsec_")
    page = portal.get(response["Location"]).content.decode()
    assert "Endpoint added" in page


def test_event_type_suggestions_leave_out_other_consumers_events(portal, tenant):
    from deliveries.services.ingest import event_ingest

    event_ingest(tenant=tenant, event_type="theirs.only", payload={}, consumer="cust_7")
    event_ingest(tenant=tenant, event_type="mine.only", payload={}, consumer=CONSUMER)
    form = portal.get(reverse("portal:endpoint-new")).content.decode()
    assert "mine.only" in form
    assert "theirs.only" not in form


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"url": "ftp://127.0.0.1/x"}, "url", "scheme must be http or https"),
        ({"url": "http://10.0.0.1/x"}, "url", "outbound address policy"),
        ({"url": "http://169.254.169.254/"}, "url", "outbound address policy"),
        ({"url": ""}, "url", "This field is required"),
        (
            {"url": "http://127.0.0.1:9/x", "other_event_types": "order.**"},
            "other_event_types",
            "not a valid",
        ),
    ],
)
def test_create_endpoint_shows_errors_beside_the_field(
    portal, tenant, data, field, message
):
    # when (the tests' outbound policy opens loopback only)
    response = portal.post(reverse("portal:endpoint-new"), data)
    # then: the form again, the message under its field, nothing created
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert list(errors) == [field]
    assert message in " ".join(errors[field])
    assert 'class="field field-invalid"' in response.content.decode()
    assert not Endpoint.objects.filter(tenant=tenant).exists()


def test_edit_endpoint(portal, owned):
    endpoint, _ = owned
    form = portal.get(reverse("portal:endpoint-edit", args=[endpoint.pk]))
    assert endpoint.url in form.content.decode()
    response = portal.post(
        reverse("portal:endpoint-edit", args=[endpoint.pk]),
        {"url": "http://127.0.0.1:9/v2", "description": "", "other_event_types": ""},
    )
    assert response.status_code == 302
    endpoint.refresh_from_db()
    assert endpoint.url == "http://127.0.0.1:9/v2"
    assert endpoint.event_types == []
    assert endpoint.consumer == CONSUMER


def test_pause_dead_letters_what_waits_and_resume_reopens(portal, owned):
    endpoint, delivery = owned
    portal.post(reverse("portal:endpoint-pause", args=[endpoint.pk]))
    endpoint.refresh_from_db()
    delivery.refresh_from_db()
    assert not endpoint.is_active
    assert delivery.status == DeliveryStatus.DEAD_LETTER
    page = portal.get(reverse("portal:endpoint", args=[endpoint.pk])).content.decode()
    assert "Paused" in page and "Resume" in page
    # a paused endpoint's delivery is not retried (it would be dead again)
    portal.post(reverse("portal:delivery-retry", args=[endpoint.pk, delivery.pk]))
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DEAD_LETTER
    # resumed, the dead letters replay
    portal.post(reverse("portal:endpoint-resume", args=[endpoint.pk]))
    endpoint.refresh_from_db()
    assert endpoint.is_active
    response = portal.post(reverse("portal:endpoint-replay", args=[endpoint.pk]))
    assert response.status_code == 302
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING
    page = portal.get(response["Location"]).content.decode()
    assert "1 dead letters queued again" in page


def test_delete_asks_first(portal, owned):
    endpoint, _ = owned
    confirm = portal.get(reverse("portal:endpoint-delete", args=[endpoint.pk]))
    assert "Delete this endpoint?" in confirm.content.decode()
    assert Endpoint.objects.get(pk=endpoint.pk).deleted_at is None
    response = portal.post(reverse("portal:endpoint-delete", args=[endpoint.pk]))
    assert response["Location"] == reverse("portal:endpoints")
    assert Endpoint.objects.get(pk=endpoint.pk).deleted_at is not None
    assert portal.get(reverse("portal:endpoint", args=[endpoint.pk])).status_code == 404


def test_rotate_secret_shows_the_new_one(portal, owned):
    endpoint, _ = owned
    old = endpoint.secret
    response = portal.post(reverse("portal:endpoint-rotate", args=[endpoint.pk]))
    assert response["Location"] == reverse("portal:endpoint-secret", args=[endpoint.pk])
    endpoint = Endpoint.objects.get(pk=endpoint.pk)
    assert endpoint.secret != old
    assert endpoint.active_secrets() == [endpoint.secret, old]
    page = portal.get(response["Location"]).content.decode()
    assert endpoint.secret in page
    assert "Secret rotated" in page


def test_delivery_page_shows_attempts_as_the_api_does(portal, owned):
    # given: an attempt with headers, a body and an error
    endpoint, delivery = owned
    DeliveryAttempt.objects.create(
        delivery=delivery,
        number=1,
        started_at=delivery.created_at,
        duration_ms=812,
        outcome="5xx",
        request_headers={"webhook-id": str(delivery.event_id)},
        response_status=503,
        response_headers={"Retry-After": "30"},
        response_body='{"error": "<upstream>"}',
        error="HTTP 503",
    )
    # when
    response = portal.get(reverse("portal:delivery", args=[endpoint.pk, delivery.pk]))
    # then
    page = response.content.decode()
    assert response.status_code == 200
    assert "Attempt 1" in page and "812 ms" in page and "HTTP 503" in page
    assert "Retry-After" in page and "webhook-id" in page
    assert "&lt;upstream&gt;" in page  # escaped, never markup
    assert "&quot;n&quot;: 1" in page  # the payload


def test_retry_queues_the_delivery_again(portal, owned):
    endpoint, delivery = owned
    Delivery.objects.filter(pk=delivery.pk).update(status=DeliveryStatus.DEAD_LETTER)
    url = reverse("portal:delivery-retry", args=[endpoint.pk, delivery.pk])
    assert portal.post(url).status_code == 302
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING


def test_an_expired_delivery_is_retried_only_by_its_retry_anyway_button(portal, owned):
    endpoint, delivery = owned
    gone = timezone.now() - timedelta(minutes=1)
    Delivery.objects.filter(pk=delivery.pk).update(
        status=DeliveryStatus.EXPIRED, expires_at=gone
    )
    page = reverse("portal:delivery", args=[endpoint.pk, delivery.pk])
    shown = portal.get(page).content.decode()
    assert "Retry anyway" in shown and 'name="force"' in shown
    assert "Expired" in shown
    url = reverse("portal:delivery-retry", args=[endpoint.pk, delivery.pk])
    # a plain retry (a stale page, a hand-made form) leaves it as it is
    refused = portal.post(url, follow=True)
    assert "expired" in refused.content.decode()
    assert Delivery.objects.get(pk=delivery.pk).status == DeliveryStatus.EXPIRED
    # the button's forced retry queues it, no longer expiring
    assert portal.post(url, {"force": "1"}).status_code == 302
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING
    assert delivery.expires_at is None


def test_a_delivery_shows_its_ordering_key(portal, owned):
    endpoint, delivery = owned
    Delivery.objects.filter(pk=delivery.pk).update(ordering_key="order-42")
    page = reverse("portal:delivery", args=[endpoint.pk, delivery.pk])
    assert "order-42" in portal.get(page).content.decode()
    listed = reverse("portal:endpoint", args=[endpoint.pk])
    assert "order-42" in portal.get(listed).content.decode()


def test_deliveries_are_paged_and_filtered_by_status(portal, tenant):
    endpoint = make_endpoint(tenant=tenant, consumer=CONSUMER)
    for _ in range(27):
        make_event(tenant=tenant)
    oldest = Delivery.objects.filter(endpoint=endpoint).order_by("id").first()
    Delivery.objects.filter(pk=oldest.pk).update(status=DeliveryStatus.SUCCEEDED)
    url = reverse("portal:endpoint", args=[endpoint.pk])
    first = portal.get(url)
    assert len(first.context["page"].rows) == 25
    assert first.context["page"].has_next
    second = portal.get(url, {"page": 2})
    assert len(second.context["page"].rows) == 2
    assert not second.context["page"].has_next
    succeeded = portal.get(url, {"status": "succeeded"})
    assert len(succeeded.context["page"].rows) == 1
    assert portal.get(url, {"page": "x", "status": "bogus"}).status_code == 200


def test_pages_send_the_strict_policy_and_no_inline_script(portal, owned, tenant):
    from catalog.services import event_type_create

    endpoint, delivery = owned
    event_type_create(tenant=tenant, name="a.b", schema={}, example={"x": 1})
    for url in (
        reverse("portal:endpoints"),
        reverse("portal:endpoint", args=[endpoint.pk]),
        reverse("portal:delivery", args=[endpoint.pk, delivery.pk]),
        reverse("portal:event-types"),
    ):
        response = portal.get(url)
        policy = response["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "style-src 'self'" in policy
        page = response.content.decode()
        assert "<script>" not in page and "<style" not in page
        assert " style=" not in page and " onclick=" not in page


def test_event_types_page_shows_the_catalog_read_only(client, tenant, other_api):
    from catalog.services import event_type_create
    from tests.portal.conftest import enter_portal

    # given: a described type, a deprecated one, and another tenant's
    event_type_create(
        tenant=tenant,
        name="invoice.paid",
        description="An invoice was paid.",
        schema={"type": "object", "required": ["invoice_id"]},
        example={"invoice_id": "in_1"},
    )
    event_type_create(tenant=tenant, name="invoice.legacy", deprecated=True)
    event_type_create(tenant=other_api.tenant, name="their.secret.type")
    enter_portal(client, tenant=tenant, read_only=True)
    # when
    response = client.get(reverse("portal:event-types"))
    # then
    page = response.content.decode()
    assert response.status_code == 200
    assert "invoice.paid" in page and "An invoice was paid." in page
    assert "&quot;required&quot;: [\n    &quot;invoice_id&quot;" in page  # indented
    assert "&quot;invoice_id&quot;: &quot;in_1&quot;" in page
    assert "invoice.legacy" not in page
    assert "their.secret.type" not in page
    assert "<form" not in page.split("</header>")[1]  # nothing to change here
    assert 'href="/portal/event-types"' in page  # the header links it


def test_event_types_page_needs_a_session(client, db):
    assert client.get(reverse("portal:event-types")).status_code == 403


def test_endpoint_form_offers_the_catalogs_names(portal, tenant):
    from catalog.services import event_type_create

    event_type_create(tenant=tenant, name="invoice.voided")
    event_type_create(tenant=tenant, name="invoice.legacy", deprecated=True)
    form = portal.get(reverse("portal:endpoint-new")).content.decode()
    assert 'value="invoice.voided"' in form
    assert "invoice.legacy" not in form


def test_a_delivery_past_its_expiry_not_yet_settled_offers_retry_anyway(portal, owned):
    endpoint, delivery = owned
    Delivery.objects.filter(pk=delivery.pk).update(
        status=DeliveryStatus.DEAD_LETTER,
        expires_at=timezone.now() - timedelta(seconds=1),
    )
    page = reverse("portal:delivery", args=[endpoint.pk, delivery.pk])
    assert "Retry anyway" in portal.get(page).content.decode()
