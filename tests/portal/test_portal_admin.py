"""Portal sessions in Django admin: listed without tokens, ended early by an action."""

import pytest
from django.urls import reverse

from portal.models import PortalSession
from portal.services import portal_session_create

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
    from django.test import Client

    browser = Client()
    issued = portal_session_create(tenant=tenant, consumer="cust_42")
    browser.get(reverse("portal:enter", args=[issued.token]))
    assert browser.get(reverse("portal:endpoints")).status_code == 200
    response = admin_client.post(
        reverse("admin:portal_portalsession_changelist"),
        {"action": "end_sessions", "_selected_action": [str(issued.session.pk)]},
        follow=True,
    )
    assert "Ended 1 session." in response.content.decode()
    assert PortalSession.objects.get(pk=issued.session.pk).is_expired
    assert browser.get(reverse("portal:endpoints")).status_code == 403
