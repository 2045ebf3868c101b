"""The portal endpoint form: a payload filter typed as JSON, checked as by the API."""

import json

import pytest
from django.urls import reverse

from subscriptions.models import Endpoint
from tests.factories import make_endpoint
from tests.portal.conftest import CONSUMER

pytestmark = pytest.mark.django_db

GERMAN_ORDERS = {"customer.country": "DE", "total": {"$gte": 100}}


def test_create_endpoint_with_a_payload_filter(portal, tenant):
    # given
    form = portal.get(reverse("portal:endpoint-new")).content.decode()
    assert 'name="payload_filter"' in form
    # when
    response = portal.post(
        reverse("portal:endpoint-new"),
        {
            "url": "http://127.0.0.1:9/de",
            "other_event_types": "order.*",
            "payload_filter": json.dumps(GERMAN_ORDERS),
        },
    )
    # then: stored with its compiled form, and shown on the endpoint's page
    assert response.status_code == 302
    endpoint = Endpoint.objects.get(tenant=tenant, url="http://127.0.0.1:9/de")
    assert endpoint.consumer == CONSUMER
    assert endpoint.filter == GERMAN_ORDERS
    assert endpoint.filter_path is not None
    page = portal.get(response["Location"]).content.decode()
    assert "Payload filter" in page
    assert "customer.country" in page


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "Not valid JSON"),
        ('{"total": {"$gt": 1e400}}', "out of range"),
        ('{"total": {"$gt": true}}', 'filter["total"]["$gt"]: takes a number'),
        ('["DE"]', "must be a JSON object"),
    ],
)
def test_malformed_payload_filter_is_shown_beside_its_field(
    portal, tenant, text, message
):
    response = portal.post(
        reverse("portal:endpoint-new"),
        {"url": "http://127.0.0.1:9/x", "payload_filter": text},
    )
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert list(errors) == ["payload_filter"]
    assert message in " ".join(errors["payload_filter"])
    assert not Endpoint.objects.filter(tenant=tenant).exists()


def test_edit_shows_the_filter_and_an_emptied_box_removes_it(portal, tenant):
    endpoint = make_endpoint(
        tenant=tenant, url="http://127.0.0.1:9/f", consumer=CONSUMER, filter={"a": 1}
    )
    edit = reverse("portal:endpoint-edit", args=[endpoint.pk])
    form = portal.get(edit).content.decode()
    assert "&quot;a&quot;: 1" in form
    # when: saved with the box emptied
    response = portal.post(edit, {"url": endpoint.url, "payload_filter": ""})
    # then
    assert response.status_code == 302
    endpoint.refresh_from_db()
    assert endpoint.filter is None
    assert endpoint.filter_path is None
