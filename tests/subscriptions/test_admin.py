"""Django admin for endpoints: pages, UUID search, masked secrets, rotation, forms."""

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from subscriptions.admin import MASKED_SECRET_CHARS
from subscriptions.models import Endpoint, EndpointSecret
from tests.factories import make_endpoint, make_tenant

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:subscriptions_endpoint_changelist"


def messages_of(response) -> list[str]:
    """The messages shown on the (followed) response's page."""
    return [str(message) for message in get_messages(response.wsgi_request)]


def change_url(endpoint: Endpoint) -> str:
    return reverse("admin:subscriptions_endpoint_change", args=[endpoint.pk])


def inline_data(response) -> dict:
    """The inline formsets' management and hidden fields, as the page posts them."""
    data = {}
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        management = formset.management_form
        for name in management.fields:
            data[management.add_prefix(name)] = management[name].value()
        for form in formset.forms:
            for name in form.fields:
                value = form[name].value()
                if value is not None:
                    data[form.add_prefix(name)] = value
    return data


def endpoint_data(**fields) -> dict:
    """The endpoint form's own fields."""
    return {
        "url": "http://127.0.0.1:9/hook",
        "description": "",
        "event_types": "",
        "headers": "{}",
        "rate_limit": "",
        "is_active": "on",
        **fields,
    }


@pytest.fixture
def endpoint(tenant):
    return make_endpoint(tenant=tenant, url="http://127.0.0.1:9/orders")


def test_endpoint_admin_changelist_lists_endpoints(admin_client, endpoint):
    # given
    other = make_endpoint(tenant=make_tenant(), url="http://127.0.0.1:9/other")
    # when
    response = admin_client.get(reverse(CHANGELIST))
    # then
    assert response.status_code == 200
    assert set(response.context["cl"].result_list) == {endpoint, other}
    assert 'value="rotate_secret"' in response.content.decode()


def test_endpoint_admin_search_by_full_uuid_finds_only_that_endpoint(
    admin_client, endpoint
):
    # given
    make_endpoint(tenant=endpoint.tenant, url="http://127.0.0.1:9/other")
    # when
    response = admin_client.get(reverse(CHANGELIST), {"q": str(endpoint.pk)})
    # then
    assert list(response.context["cl"].result_list) == [endpoint]


def test_endpoint_admin_search_by_url_finds_the_endpoint(admin_client, endpoint):
    # given
    make_endpoint(tenant=endpoint.tenant, url="http://127.0.0.1:9/invoices")
    # when
    response = admin_client.get(reverse(CHANGELIST), {"q": "orders"})
    # then
    assert list(response.context["cl"].result_list) == [endpoint]


def test_endpoint_admin_change_page_masks_the_secret(admin_client, endpoint):
    # given
    secret = endpoint.secret
    assert len(secret) > MASKED_SECRET_CHARS
    # when
    response = admin_client.get(change_url(endpoint))
    # then
    html = response.content.decode()
    assert response.status_code == 200
    assert endpoint.url in html
    assert secret not in html
    assert secret[:MASKED_SECRET_CHARS] + "…" in html


def test_endpoint_admin_rotate_secret_action_keeps_the_old_secret_active(
    admin_client, endpoint
):
    # given
    old = endpoint.secret
    # when
    response = admin_client.post(
        reverse(CHANGELIST),
        {"action": "rotate_secret", "_selected_action": [str(endpoint.pk)], "index": 0},
        follow=True,
    )
    # then
    assert response.status_code == 200
    assert "Rotated the secret of 1 endpoint." in messages_of(response)
    endpoint = Endpoint.objects.get(pk=endpoint.pk)
    active = endpoint.active_secrets()
    assert len(active) == 2
    assert active[0] != old
    assert active[1] == old
    assert endpoint.secret == active[0]
    current = EndpointSecret.objects.get(endpoint=endpoint, expires_at__isnull=True)
    assert current.secret == active[0]
    [previous] = [
        row
        for row in EndpointSecret.objects.filter(endpoint=endpoint)
        if row.secret == old
    ]
    assert previous.expires_at is not None
    page = admin_client.get(change_url(endpoint)).content.decode()
    assert old not in page
    assert active[0] not in page


def test_endpoint_admin_add_form_creates_the_endpoint_with_a_secret(
    admin_client, tenant
):
    # given
    add_url = reverse("admin:subscriptions_endpoint_add")
    page = admin_client.get(add_url)
    data = {
        **inline_data(page),
        **endpoint_data(tenant=str(tenant.pk), event_types="order.*,invoice.paid"),
    }
    # when
    response = admin_client.post(add_url, data)
    # then
    assert response.status_code == 302, response.context["errors"]
    endpoint = Endpoint.objects.get(tenant=tenant, url="http://127.0.0.1:9/hook")
    assert endpoint.event_types == ["order.*", "invoice.paid"]
    assert endpoint.secret.startswith("whsec_")
    assert len(endpoint.active_secrets()) == 1


def test_endpoint_admin_add_form_rejects_what_the_api_rejects(admin_client, tenant):
    # given
    add_url = reverse("admin:subscriptions_endpoint_add")
    page = admin_client.get(add_url)
    data = {
        **inline_data(page),
        **endpoint_data(tenant=str(tenant.pk), url="ftp://127.0.0.1/hook"),
    }
    # when
    response = admin_client.post(add_url, data)
    # then
    assert response.status_code == 200
    assert "URL scheme must be http or https." in response.content.decode()
    assert not Endpoint.objects.filter(tenant=tenant).exists()


def test_endpoint_admin_add_form_past_the_endpoint_limit_is_a_form_error(
    admin_client, tenant, settings
):
    # given: a tenant at its limit of one endpoint
    settings.WEBHOOK_MAX_ENDPOINTS_PER_TENANT = 1
    make_endpoint(tenant=tenant)
    add_url = reverse("admin:subscriptions_endpoint_add")
    page = admin_client.get(add_url)
    data = {**inline_data(page), **endpoint_data(tenant=str(tenant.pk))}
    # when
    response = admin_client.post(add_url, data)
    # then: the form again, with the reason, not an error page
    assert response.status_code == 200
    assert "A tenant can have at most 1 endpoints" in response.content.decode()
    assert Endpoint.objects.filter(tenant=tenant).count() == 1


def test_endpoint_admin_change_form_updates_through_the_service(admin_client, endpoint):
    # given
    page = admin_client.get(change_url(endpoint))
    secret = endpoint.secret
    data = {
        **inline_data(page),
        **endpoint_data(url="http://127.0.0.1:9/changed", is_active=""),
    }
    # when
    response = admin_client.post(change_url(endpoint), data)
    # then
    assert response.status_code == 302, response.context["errors"]
    endpoint = Endpoint.objects.get(pk=endpoint.pk)
    assert endpoint.url == "http://127.0.0.1:9/changed"
    assert endpoint.is_active is False
    assert endpoint.disabled_reason == "disabled by the tenant"
    assert endpoint.disabled_at is not None
    assert endpoint.active_secrets() == [secret]


def test_endpoint_admin_lists_and_filters_by_a_typed_consumer(admin_client, tenant):
    # given
    acme = make_endpoint(tenant=tenant, consumer="acme")
    make_endpoint(tenant=tenant, consumer="globex")
    make_endpoint(tenant=tenant)
    # when
    everything = admin_client.get(reverse(CHANGELIST))
    filtered = admin_client.get(reverse(CHANGELIST), {"consumer": "acme"})
    wrong = admin_client.get(reverse(CHANGELIST), {"consumer": "a b"})
    # then: a box to type in (no list of every consumer), and the column
    page = everything.content.decode()
    assert 'name="consumer"' in page
    assert "column-consumer" in page
    assert list(filtered.context["cl"].result_list) == [acme]
    assert 'value="acme"' in filtered.content.decode()
    assert wrong.status_code == 302  # Django's "invalid filter" page, not a 500
    assert "e=1" in wrong["Location"]


def test_endpoint_admin_form_edits_the_consumer(admin_client, endpoint):
    # given
    page = admin_client.get(change_url(endpoint))
    assert 'name="consumer"' in page.content.decode()
    # when
    response = admin_client.post(
        change_url(endpoint), {**inline_data(page), **endpoint_data(consumer="acme")}
    )
    bad = admin_client.post(
        change_url(endpoint), {**inline_data(page), **endpoint_data(consumer="a b")}
    )
    # then
    assert response.status_code == 302, response.context["errors"]
    assert bad.status_code == 200
    assert "letters, digits" in bad.content.decode()
    assert Endpoint.objects.get(pk=endpoint.pk).consumer == "acme"
