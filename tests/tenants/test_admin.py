"""Django admin for tenants and API keys: pages, UUID search, issue and revoke keys."""

import re

import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.urls import reverse
from rest_framework.test import APIClient

from tenants.admin import ADMIN_KEY_NAME
from tenants.keys import KEY_PREFIX, display_prefix, hash_key
from tenants.models import ApiKey
from tenants.services import api_key_create, api_key_revoke
from tests.factories import make_tenant

pytestmark = pytest.mark.django_db

KEY_RE = re.compile(re.escape(KEY_PREFIX) + r"[A-Za-z0-9_-]{43}")


def messages_of(response) -> list[str]:
    """The messages shown on the (followed) response's page."""
    return [str(message) for message in get_messages(response.wsgi_request)]


def api_status(key: str) -> int:
    """The status of GET /api/v1/endpoints authenticated with `key`."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client.get("/api/v1/endpoints").status_code


def run_action(client, changelist: str, action: str, pks) -> object:
    """POST an admin action (changelist URL name) on `pks`, following the redirect."""
    return client.post(
        reverse(changelist),
        {"action": action, "_selected_action": [str(pk) for pk in pks], "index": 0},
        follow=True,
    )


def staff_with(django_user_model, *codenames: str):
    """A staff user (not superuser) holding only the given permissions."""
    user = django_user_model.objects.create_user(
        username="limited", password="x", is_staff=True
    )
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return user


TENANT_CHANGELIST = "admin:tenants_tenant_changelist"
APIKEY_CHANGELIST = "admin:tenants_apikey_changelist"


def test_tenant_admin_changelist_lists_tenants(admin_client, tenant):
    # given
    other = make_tenant()
    # when
    response = admin_client.get(reverse(TENANT_CHANGELIST))
    # then
    assert response.status_code == 200
    assert set(response.context["cl"].result_list) == {tenant, other}
    assert tenant.name in response.content.decode()
    assert 'value="create_api_key"' in response.content.decode()


def test_tenant_admin_change_page_shows_keys_but_never_their_hash(
    admin_client, issued_key
):
    # given
    tenant = issued_key.api_key.tenant
    # when
    response = admin_client.get(
        reverse("admin:tenants_tenant_change", args=[tenant.pk])
    )
    # then
    html = response.content.decode()
    assert response.status_code == 200
    assert str(tenant.pk) in html
    assert issued_key.api_key.prefix in html
    assert issued_key.api_key.key_hash not in html
    assert issued_key.key not in html


def test_tenant_admin_search_by_full_uuid_finds_only_that_tenant(admin_client, tenant):
    # given
    make_tenant()
    # when
    response = admin_client.get(reverse(TENANT_CHANGELIST), {"q": str(tenant.pk)})
    # then
    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == [tenant]


def test_tenant_admin_search_by_name_finds_the_tenant(admin_client):
    # given
    wanted = make_tenant(name="acme-search-target")
    make_tenant(name="globex")
    # when
    response = admin_client.get(reverse(TENANT_CHANGELIST), {"q": "search-target"})
    # then
    assert list(response.context["cl"].result_list) == [wanted]


def test_tenant_admin_create_api_key_action_issues_a_working_key(admin_client, tenant):
    # given
    before = set(ApiKey.objects.filter(tenant=tenant).values_list("pk", flat=True))
    # when
    response = run_action(
        admin_client, TENANT_CHANGELIST, "create_api_key", [tenant.pk]
    )
    # then
    assert response.status_code == 200
    created = ApiKey.objects.filter(tenant=tenant).exclude(pk__in=before)
    assert created.count() == 1
    api_key = created.get()
    assert api_key.name == f"{ADMIN_KEY_NAME} by admin"
    assert api_key.revoked_at is None
    shown = [message for message in messages_of(response) if tenant.name in message]
    assert len(shown) == 1
    match = KEY_RE.search(shown[0])
    assert match is not None, shown[0]
    key = match.group(0)
    assert hash_key(key) == api_key.key_hash
    assert display_prefix(key) == api_key.prefix
    assert api_status(key) == 200


def test_tenant_admin_new_key_never_travels_in_a_cookie(admin_client, tenant):
    # when: the action issues a key and the changelist shows it
    posted = admin_client.post(
        reverse(TENANT_CHANGELIST),
        {"action": "create_api_key", "_selected_action": [str(tenant.pk)], "index": 0},
    )
    # then: no cookie set on the way carries it (the message is in the session)
    shown = admin_client.get(posted["Location"])
    [key] = KEY_RE.findall(" ".join(messages_of(shown)))
    for response in (posted, shown):
        for cookie in response.cookies.values():
            assert key not in cookie.value
            assert display_prefix(key) not in cookie.value
    assert "messages" not in admin_client.cookies


def test_tenant_admin_create_api_key_action_issues_one_key_per_tenant(admin_client):
    # given
    first, second = make_tenant(), make_tenant()
    # when
    response = run_action(
        admin_client, TENANT_CHANGELIST, "create_api_key", [first.pk, second.pk]
    )
    # then
    assert ApiKey.objects.filter(tenant=first).count() == 1
    assert ApiKey.objects.filter(tenant=second).count() == 1
    keys = KEY_RE.findall(" ".join(messages_of(response)))
    assert {hash_key(key) for key in keys} == set(
        ApiKey.objects.filter(tenant__in=[first, second]).values_list(
            "key_hash", flat=True
        )
    )


def test_tenant_admin_create_api_key_action_needs_add_apikey_permission(
    client, django_user_model, tenant
):
    # given
    user = staff_with(django_user_model, "view_tenant", "change_tenant")
    client.force_login(user)
    before = ApiKey.objects.count()
    # when
    page = client.get(reverse(TENANT_CHANGELIST))
    response = run_action(client, TENANT_CHANGELIST, "create_api_key", [tenant.pk])
    # then
    assert page.status_code == 200
    assert 'value="create_api_key"' not in page.content.decode()
    assert ApiKey.objects.count() == before
    assert not KEY_RE.search(" ".join(messages_of(response)))


def test_api_key_admin_changelist_and_change_page_load_without_hash(
    admin_client, issued_key
):
    # given
    api_key = issued_key.api_key
    # when
    listed = admin_client.get(reverse(APIKEY_CHANGELIST))
    page = admin_client.get(reverse("admin:tenants_apikey_change", args=[api_key.pk]))
    # then
    assert listed.status_code == 200
    assert list(listed.context["cl"].result_list) == [api_key]
    assert 'value="revoke_keys"' in listed.content.decode()
    assert page.status_code == 200
    html = page.content.decode()
    assert api_key.prefix in html
    assert api_key.key_hash not in html
    assert issued_key.key not in html


def test_api_key_admin_add_page_is_forbidden(admin_client):
    response = admin_client.get(reverse("admin:tenants_apikey_add"))
    assert response.status_code == 403


def test_api_key_admin_search_by_full_uuid_finds_the_key(admin_client, issued_key):
    # given
    api_key_create(tenant=make_tenant(), name="other")
    # when
    by_id = admin_client.get(
        reverse(APIKEY_CHANGELIST), {"q": str(issued_key.api_key.pk)}
    )
    by_tenant = admin_client.get(
        reverse(APIKEY_CHANGELIST), {"q": str(issued_key.api_key.tenant_id)}
    )
    # then
    assert list(by_id.context["cl"].result_list) == [issued_key.api_key]
    assert list(by_tenant.context["cl"].result_list) == [issued_key.api_key]


def test_api_key_admin_revoke_action_revokes_and_api_rejects_the_key(
    admin_client, issued_key
):
    # given
    assert api_status(issued_key.key) == 200
    # when
    response = run_action(
        admin_client, APIKEY_CHANGELIST, "revoke_keys", [issued_key.api_key.pk]
    )
    # then
    assert response.status_code == 200
    assert "Revoked 1 key." in messages_of(response)
    issued_key.api_key.refresh_from_db()
    assert issued_key.api_key.revoked_at is not None
    assert api_status(issued_key.key) == 401


def test_api_key_admin_revoke_action_leaves_revoked_keys_alone(
    admin_client, issued_key
):
    # given
    api_key_revoke(api_key=issued_key.api_key)
    revoked_at = ApiKey.objects.get(pk=issued_key.api_key.pk).revoked_at
    # when
    response = run_action(
        admin_client, APIKEY_CHANGELIST, "revoke_keys", [issued_key.api_key.pk]
    )
    # then
    assert "Revoked 0 keys." in messages_of(response)
    assert ApiKey.objects.get(pk=issued_key.api_key.pk).revoked_at == revoked_at


def test_api_key_admin_revoke_action_needs_change_apikey_permission(
    client, django_user_model, issued_key
):
    # given
    client.force_login(staff_with(django_user_model, "view_apikey"))
    # when
    page = client.get(reverse(APIKEY_CHANGELIST))
    run_action(client, APIKEY_CHANGELIST, "revoke_keys", [issued_key.api_key.pk])
    # then
    assert page.status_code == 200
    assert 'value="revoke_keys"' not in page.content.decode()
    assert ApiKey.objects.get(pk=issued_key.api_key.pk).revoked_at is None
    assert api_status(issued_key.key) == 200
