"""Portal sessions in Django admin (listed without tokens, ended early by an
action) and their hourly purge."""

from datetime import timedelta

import pytest
from django.contrib.sessions.models import Session
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from deliveries.tasks import cleanup_attempt_logs
from portal.models import PortalSession
from portal.services import KEEP_EXPIRED, portal_session_create, portal_sessions_purge

pytestmark = pytest.mark.django_db


def test_admin_lists_sessions_without_their_token(admin_client, tenant):
    issued = portal_session_create(tenant=tenant, consumer="cust_42")
    listing = admin_client.get(reverse("admin:portal_portalsession_changelist"))
    page = listing.content.decode()
    assert "cust_42" in page
    assert issued.token not in page
    detail = admin_client.get(
        reverse("admin:portal_portalsession_change", args=[issued.session.pk])
    ).content.decode()
    assert issued.token not in detail
    assert issued.session.token_hash not in detail
    assert (
        admin_client.get(reverse("admin:portal_portalsession_add")).status_code == 403
    )


def test_admin_action_ends_sessions_now(admin_client, tenant):
    browser = Client()
    issued = portal_session_create(tenant=tenant, consumer="cust_42")
    browser.post(reverse("portal:enter", args=[issued.token]))
    assert browser.get(reverse("portal:endpoints")).status_code == 200
    response = admin_client.post(
        reverse("admin:portal_portalsession_changelist"),
        {"action": "end_sessions", "_selected_action": [str(issued.session.pk)]},
        follow=True,
    )
    assert "Ended 1 session." in response.content.decode()
    assert PortalSession.objects.get(pk=issued.session.pk).is_expired
    assert browser.get(reverse("portal:endpoints")).status_code == 403


def test_hourly_cleanup_deletes_long_expired_sessions_only(tenant):
    # given: a live session, one just expired, one expired long ago
    now = timezone.now()
    live, recent, old = (
        portal_session_create(tenant=tenant, consumer=f"c{n}").session for n in range(3)
    )
    PortalSession.objects.filter(pk=recent.pk).update(expires_at=now)
    PortalSession.objects.filter(pk=old.pk).update(
        expires_at=now - KEEP_EXPIRED - timedelta(minutes=1)
    )
    Session.objects.create(
        session_key="x" * 32, session_data="", expire_date=now - timedelta(seconds=1)
    )
    # when
    cleanup_attempt_logs()
    # then
    assert set(PortalSession.objects.values_list("pk", flat=True)) == {
        live.pk,
        recent.pk,
    }
    assert not Session.objects.filter(session_key="x" * 32).exists()
    assert portal_sessions_purge() == 0
