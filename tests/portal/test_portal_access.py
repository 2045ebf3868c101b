"""Who gets into the portal: single-use links, expiry, read-only sessions, CSRF,
and no way from the portal's cookie into the tenant API."""

import time
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from deliveries.models import Event
from portal.access import SESSION_KEY
from portal.models import PortalSession
from portal.services import portal_session_create, portal_sessions_end
from subscriptions.models import Endpoint
from tests.portal.conftest import CONSUMER, enter_portal

pytestmark = pytest.mark.django_db


def page_urls(endpoint, delivery) -> list[str]:
    """Every page of a session that has an endpoint with a delivery."""
    return [
        reverse("portal:endpoints"),
        reverse("portal:endpoint-new"),
        reverse("portal:endpoint", args=[endpoint.pk]),
        reverse("portal:endpoint-edit", args=[endpoint.pk]),
        reverse("portal:endpoint-delete", args=[endpoint.pk]),
        reverse("portal:endpoint-secret", args=[endpoint.pk]),
        reverse("portal:endpoint-recover", args=[endpoint.pk]),
        reverse("portal:delivery", args=[endpoint.pk, delivery.pk]),
    ]


def change_urls(endpoint, delivery) -> list[str]:
    """Every URL of a session that changes something (POST)."""
    return [
        reverse("portal:endpoint-new"),
        reverse("portal:endpoint-edit", args=[endpoint.pk]),
        reverse("portal:endpoint-pause", args=[endpoint.pk]),
        reverse("portal:endpoint-resume", args=[endpoint.pk]),
        reverse("portal:endpoint-delete", args=[endpoint.pk]),
        reverse("portal:endpoint-rotate", args=[endpoint.pk]),
        reverse("portal:endpoint-replay", args=[endpoint.pk]),
        reverse("portal:endpoint-test", args=[endpoint.pk]),
        reverse("portal:endpoint-recover", args=[endpoint.pk]),
        reverse("portal:delivery-retry", args=[endpoint.pk, delivery.pk]),
    ]


def test_link_opens_a_session_for_its_consumer(client, tenant, owned):
    # given
    issued = portal_session_create(tenant=tenant, consumer=CONSUMER)
    # when
    response = client.post(reverse("portal:enter", args=[issued.token]))
    # then: on to the endpoints, with the session in a cookie until the expiry
    assert response.status_code == 302
    assert response["Location"] == reverse("portal:endpoints")
    assert client.session[SESSION_KEY] == str(issued.session.pk)
    cookie = response.cookies["sessionid"]
    assert cookie["httponly"]
    remaining = client.session.get_expiry_age()
    assert 3500 < remaining <= 3600
    page = client.get(reverse("portal:endpoints"))
    assert page.status_code == 200
    assert CONSUMER in page.content.decode()
    assert owned[0].url in page.content.decode()
    issued.session.refresh_from_db()
    assert issued.session.used_at is not None


def test_link_rotates_the_session_key(client, tenant):
    # given: a session key the browser already had (say, planted)
    client.get(reverse("portal:endpoints"))
    session = client.session
    session["planted"] = True
    session.save()
    before = client.cookies["sessionid"].value
    # when
    enter_portal(client, tenant=tenant)
    # then
    assert client.cookies["sessionid"].value != before


def test_link_opens_once(tenant):
    issued = portal_session_create(tenant=tenant, consumer=CONSUMER)
    url = reverse("portal:enter", args=[issued.token])
    assert Client().post(url).status_code == 302
    # a second browser (or the same one) with the same link
    for again in (Client().get(url), Client().post(url)):
        assert again.status_code == 403
        assert "already used" in again.content.decode()


def test_fetching_a_link_does_not_use_it(tenant):
    """Chat previews and mail scanners GET the links they see: only the page's
    button (a CSRF-checked POST) uses the link."""
    issued = portal_session_create(tenant=tenant, consumer=CONSUMER)
    url = reverse("portal:enter", args=[issued.token])
    # when: fetched twice, without cookies, as a previewer would
    pages = [Client().get(url), Client().head(url)]
    # then
    assert [page.status_code for page in pages] == [200, 200]
    assert "Open the portal" in pages[0].content.decode()
    assert 'name="csrfmiddlewaretoken"' in pages[0].content.decode()
    issued.session.refresh_from_db()
    assert issued.session.used_at is None
    # and the button without a CSRF token opens nothing
    forged = Client(enforce_csrf_checks=True).post(url)
    assert forged.status_code == 403
    issued.session.refresh_from_db()
    assert issued.session.used_at is None


def test_unknown_link_is_403(client, db):
    response = client.get(reverse("portal:enter", args=["x" * 43]))
    assert response.status_code == 403
    assert "not valid" in response.content.decode()


def test_expired_link_is_403_and_says_so(client, tenant):
    issued = portal_session_create(tenant=tenant, consumer=CONSUMER, ttl_seconds=1)
    time.sleep(1.1)
    response = client.get(reverse("portal:enter", args=[issued.token]))
    assert response.status_code == 403
    page = response.content.decode()
    assert "This link has expired" in page
    assert f"Ask {tenant.name} for a new link" in page
    assert 'href="/static/portal/portal.css"' in page


def test_every_page_is_403_after_the_expiry(client, tenant, owned):
    # given: a session in use
    session = enter_portal(client, tenant=tenant)
    urls = page_urls(*owned)
    for url in urls:
        assert client.get(url).status_code == 200, url
    # when: its time is up
    PortalSession.objects.filter(pk=session.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    # then: every page and every change
    for url in urls:
        response = client.get(url)
        assert response.status_code == 403, url
        assert "This link has expired" in response.content.decode()
    for url in change_urls(*owned):
        assert client.post(url).status_code == 403, url
    assert Endpoint.objects.get(pk=owned[0].pk).deleted_at is None


def test_a_session_ended_in_the_admin_is_403(client, tenant, owned):
    session = enter_portal(client, tenant=tenant)
    assert (
        portal_sessions_end(sessions=PortalSession.objects.filter(pk=session.pk)) == 1
    )
    assert client.get(reverse("portal:endpoints")).status_code == 403


def test_pages_without_a_session_are_403(client, owned):
    for url in page_urls(*owned):
        response = client.get(url)
        assert response.status_code == 403, url
        assert "This link has expired" in response.content.decode()


def test_read_only_session_sees_everything_and_changes_nothing(client, tenant, owned):
    # given
    endpoint, delivery = owned
    enter_portal(client, tenant=tenant, read_only=True)
    # then: every page opens, without a button that changes anything
    forms = ("/new", "/edit", "/delete", "/recover")
    for url in page_urls(endpoint, delivery):
        if url.endswith(forms):
            assert client.get(url).status_code == 403, url
            continue
        response = client.get(url)
        assert response.status_code == 200, url
        page = response.content.decode()
        # the one form: "Sign out"
        assert page.count('method="post"') == 1, url
    assert "Read only" in client.get(reverse("portal:endpoints")).content.decode()
    # and every change answers 403, changing nothing
    secret = endpoint.secret
    for url in change_urls(endpoint, delivery):
        data = {
            "url": "http://127.0.0.1:9/changed",
            "event_type": "webhook.test",
            "since": "2020-01-01T00:00",
        }
        response = client.post(url, data)
        assert response.status_code == 403, url
        assert "Read-only session" in response.content.decode()
    endpoint.refresh_from_db()
    assert endpoint.url == "http://127.0.0.1:9/mine"
    assert endpoint.is_active and endpoint.deleted_at is None
    assert endpoint.secret == secret
    assert Endpoint.objects.filter(tenant=tenant).count() == 1
    assert Event.objects.filter(tenant=tenant).count() == 1


def test_forms_need_the_csrf_token(tenant, owned):
    # given: a browser that checks CSRF like a real one
    endpoint, delivery = owned
    browser = Client(enforce_csrf_checks=True)
    enter_portal(browser, tenant=tenant)
    # then: a POST without the token is refused, whatever it is
    for url in [*change_urls(endpoint, delivery), reverse("portal:leave")]:
        assert browser.post(url, {"url": "http://127.0.0.1:9/x"}).status_code == 403
    endpoint.refresh_from_db()
    assert endpoint.is_active and endpoint.deleted_at is None
    # and with the token from the form, it goes through
    page = browser.get(reverse("portal:endpoint", args=[endpoint.pk]))
    token = page.context["csrf_token"]
    response = browser.post(
        reverse("portal:endpoint-pause", args=[endpoint.pk]),
        {"csrfmiddlewaretoken": str(token)},
    )
    assert response.status_code == 302
    endpoint.refresh_from_db()
    assert not endpoint.is_active


def test_portal_cookie_does_not_authenticate_the_api(portal, owned):
    endpoint, delivery = owned
    for url in (
        "/api/v1/endpoints",
        f"/api/v1/endpoints/{endpoint.pk}",
        f"/api/v1/endpoints/{endpoint.pk}/secret",
        f"/api/v1/deliveries/{delivery.pk}",
        "/api/v1/events",
    ):
        assert portal.get(url).status_code == 401, url
    created = portal.post(
        "/api/v1/portal-sessions", {"consumer": CONSUMER}, "application/json"
    )
    assert created.status_code == 401
    deleted = portal.delete(f"/api/v1/endpoints/{endpoint.pk}")
    assert deleted.status_code == 401
    assert Endpoint.objects.get(pk=endpoint.pk).deleted_at is None


def test_leaving_ends_the_session_in_this_browser(portal):
    response = portal.post(reverse("portal:leave"))
    assert response.status_code == 200
    assert "Signed out" in response.content.decode()
    assert portal.get(reverse("portal:endpoints")).status_code == 403


def test_a_deactivated_tenant_closes_its_portal(portal, tenant):
    tenant.is_active = False
    tenant.save()
    assert portal.get(reverse("portal:endpoints")).status_code == 403


def test_pages_are_not_cached(portal, owned):
    response = portal.get(reverse("portal:endpoint-secret", args=[owned[0].pk]))
    assert "no-store" in response["Cache-Control"]
