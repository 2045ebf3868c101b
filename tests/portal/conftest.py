"""Fixtures of the portal tests: a browser session opened by a portal link."""

import pytest
from django.test import Client
from django.urls import reverse

from portal.services import portal_session_create
from tests.factories import make_endpoint, make_event

CONSUMER = "cust_42"


def enter_portal(client: Client, *, tenant, consumer: str = CONSUMER, **options):
    """Issue a link for `consumer` and open it in `client` (its page, then its
    button); return the session."""
    issued = portal_session_create(tenant=tenant, consumer=consumer, **options)
    url = reverse("portal:enter", args=[issued.token])
    page = client.get(url)
    assert page.status_code == 200
    # The button's form, with its CSRF token (a client may enforce the check).
    response = client.post(
        url, {"csrfmiddlewaretoken": str(page.context["csrf_token"])}
    )
    assert response.status_code == 302, response.content
    return issued.session


@pytest.fixture
def portal(client, tenant):
    """`client` inside the portal of CONSUMER of `tenant` (may change things)."""
    enter_portal(client, tenant=tenant)
    return client


@pytest.fixture
def owned(tenant):
    """CONSUMER's endpoint with one delivery."""
    endpoint = make_endpoint(
        tenant=tenant, url="http://127.0.0.1:9/mine", consumer=CONSUMER
    )
    _, deliveries = make_event(tenant=tenant)
    return endpoint, next(d for d in deliveries if d.endpoint_id == endpoint.pk)


@pytest.fixture
def foreign(tenant, other_api):
    """Endpoints and deliveries the portal must never show: another consumer's,
    a consumer-less one, and another tenant's endpoint of a consumer of the same
    name."""
    made = {}
    for name, owner, consumer in (
        ("other-consumer", tenant, "cust_7"),
        ("no-consumer", tenant, None),
        ("other-tenant", other_api.tenant, CONSUMER),
    ):
        endpoint = make_endpoint(
            tenant=owner, url=f"http://127.0.0.1:9/{name}", consumer=consumer
        )
        _, deliveries = make_event(tenant=owner)
        made[name] = (
            endpoint,
            next(d for d in deliveries if d.endpoint_id == endpoint.pk),
        )
    return made
