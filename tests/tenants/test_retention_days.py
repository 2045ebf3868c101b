"""A tenant's retention_days: set in the admin or by `create_tenant`, never below 1."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db.models import F
from django.db.models.signals import pre_save
from django.urls import reverse

from tenants.models import Tenant
from tests.factories import make_tenant

pytestmark = pytest.mark.django_db


def change(admin_client, tenant, **fields):
    """POST the tenant's admin change form with `fields` over its current values."""
    form = {
        "name": tenant.name,
        "rate_limit": "",
        "retention_days": "",
        "is_active": "on",
        # the API keys inline's management form (no rows)
        "api_keys-TOTAL_FORMS": "0",
        "api_keys-INITIAL_FORMS": "0",
        "api_keys-MIN_NUM_FORMS": "0",
        "api_keys-MAX_NUM_FORMS": "1000",
        **fields,
    }
    return admin_client.post(
        reverse("admin:tenants_tenant_change", args=[tenant.pk]), form
    )


def test_admin_sets_and_clears_retention_days(admin_client):
    # given
    tenant = make_tenant()
    # when
    response = change(admin_client, tenant, retention_days="7")
    # then
    assert response.status_code == 302, response.content.decode()[:2000]
    tenant.refresh_from_db()
    assert tenant.retention_days == 7
    # and empty goes back to the default
    change(admin_client, tenant, retention_days="")
    tenant.refresh_from_db()
    assert tenant.retention_days is None


@pytest.mark.parametrize("value", ["0", "-3", "seven", "36501"])
def test_admin_refuses_retention_days_out_of_range(admin_client, value):
    # given
    tenant = make_tenant(retention_days=10)
    # when
    response = change(admin_client, tenant, retention_days=value)
    # then: the form comes back with the field's error, nothing saved
    assert response.status_code == 200
    assert "retention_days" in response.context["adminform"].form.errors
    tenant.refresh_from_db()
    assert tenant.retention_days == 10


def test_admin_lists_retention_days(admin_client):
    make_tenant(retention_days=45)
    response = admin_client.get(reverse("admin:tenants_tenant_changelist"))
    assert response.status_code == 200
    assert "column-retention_days" in response.content.decode()


def test_create_tenant_command_sets_retention_days():
    out = StringIO()
    call_command("create_tenant", "kept-long", "--retention-days", "90", stdout=out)
    assert Tenant.objects.get(name="kept-long").retention_days == 90


def test_create_tenant_command_without_retention_days_uses_the_default():
    call_command("create_tenant", "kept-default", stdout=StringIO())
    assert Tenant.objects.get(name="kept-default").retention_days is None


@pytest.mark.parametrize("value", ["0", "-1", "36501", "1000000"])
def test_create_tenant_command_refuses_retention_days_out_of_range(value):
    with pytest.raises(CommandError, match="--retention-days must be 1-36500 days"):
        call_command(
            "create_tenant", "never", "--retention-days", value, stdout=StringIO()
        )
    assert not Tenant.objects.filter(name="never").exists()


def test_admin_keeps_a_catalog_version_bumped_while_it_saves(admin_client):
    # given: a catalog write that lands between the admin's read and its save
    tenant = make_tenant()

    def catalog_write(sender, instance, **kwargs):
        Tenant.objects.filter(pk=instance.pk).update(
            catalog_version=F("catalog_version") + 1
        )

    pre_save.connect(catalog_write, sender=Tenant)
    try:
        # when: the change form is saved with the rate limit changed
        response = change(admin_client, tenant, rate_limit="50")
    finally:
        pre_save.disconnect(catalog_write, sender=Tenant)
    # then: the bump stands (processes would otherwise reuse a version number)
    assert response.status_code == 302
    tenant.refresh_from_db()
    assert (tenant.rate_limit, tenant.catalog_version) == (50, 1)
