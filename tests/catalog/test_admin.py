"""Django admin for the catalog: by tenant, searched by name, written through the
services."""

import json

import pytest
from django.urls import reverse

from catalog.models import EventType
from catalog.services import event_type_create
from tenants.models import Tenant
from tests.catalog.conftest import ORDER_EXAMPLE, ORDER_SCHEMA
from tests.factories import make_tenant

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:catalog_eventtype_changelist")
ADD = reverse("admin:catalog_eventtype_add")


def test_changelist_filters_by_tenant_and_deprecation_and_searches_names(
    admin_client, tenant
):
    # given
    other = make_tenant(name="globex")
    event_type_create(tenant=tenant, name="order.created", schema=ORDER_SCHEMA)
    event_type_create(tenant=tenant, name="order.legacy", deprecated=True)
    event_type_create(tenant=other, name="invoice.paid")

    def names(query: str) -> list[str]:
        response = admin_client.get(CHANGELIST + query)
        assert response.status_code == 200
        return sorted(t.name for t in response.context["cl"].result_list)

    # then
    assert names("") == ["invoice.paid", "order.created", "order.legacy"]
    assert names(f"?tenant__id__exact={other.pk}") == ["invoice.paid"]
    assert names("?deprecated__exact=1") == ["order.legacy"]
    assert names("?q=order") == ["order.created", "order.legacy"]


def test_change_page_shows_schema_and_example_indented(admin_client, tenant):
    event_type = event_type_create(
        tenant=tenant, name="order.created", schema=ORDER_SCHEMA, example=ORDER_EXAMPLE
    )
    url = reverse("admin:catalog_eventtype_change", args=[event_type.pk])
    page = admin_client.get(url).content.decode()
    assert '<pre class="catalog-json">' in page
    assert "&quot;required&quot;: [\n    &quot;id&quot;" in page


def test_add_form_goes_through_the_services(admin_client, tenant):
    # an invalid schema: the form again, the message beside the field
    data = {
        "tenant": str(tenant.pk),
        "name": "order.created",
        "description": "",
        "schema": json.dumps({"type": "objekt"}),
        "example": "",
    }
    response = admin_client.post(ADD, data)
    assert response.status_code == 200
    assert "#/type" in " ".join(response.context["adminform"].form.errors["schema"])
    # a reserved name
    response = admin_client.post(ADD, {**data, "name": "platform.x", "schema": ""})
    assert "platform" in " ".join(response.context["adminform"].form.errors["name"])
    # a valid one: created, and the catalog version bumped
    response = admin_client.post(ADD, {**data, "schema": json.dumps(ORDER_SCHEMA)})
    assert response.status_code == 302
    assert EventType.objects.get(tenant=tenant).schema == ORDER_SCHEMA
    assert Tenant.objects.get(pk=tenant.pk).catalog_version == 1


def test_delete_goes_through_the_service(admin_client, tenant):
    event_type = event_type_create(tenant=tenant, name="order.created")
    url = reverse("admin:catalog_eventtype_delete", args=[event_type.pk])
    response = admin_client.post(url, {"post": "yes"})
    assert response.status_code == 302
    assert not EventType.objects.exists()
    assert Tenant.objects.get(pk=tenant.pk).catalog_version == 2
