"""Django admin for events, deliveries and the dead-letter queue (retry, replay)."""

from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils import timezone

from deliveries.models import DeadLetter, Delivery, DeliveryAttempt, DeliveryStatus
from tests.factories import make_endpoint, make_event, make_tenant

pytestmark = pytest.mark.django_db

EVENT_CHANGELIST = "admin:deliveries_event_changelist"
DELIVERY_CHANGELIST = "admin:deliveries_delivery_changelist"
DEAD_LETTER_CHANGELIST = "admin:deliveries_deadletter_changelist"
REPLAY_MATCHING = "admin:deliveries_deadletter_replay_matching"


def messages_of(response) -> list[str]:
    """The messages shown on the (followed) response's page."""
    return [str(message) for message in get_messages(response.wsgi_request)]


def run_action(client, changelist: str, action: str, pks, **extra) -> object:
    """POST an admin action (changelist URL name) on `pks`, following the redirect.

    `extra`: more form fields, such as `post="yes"`, the answer of a confirmation.
    """
    return client.post(
        reverse(changelist),
        {
            "action": action,
            "_selected_action": [str(pk) for pk in pks],
            "index": 0,
            **extra,
        },
        follow=True,
    )


def dead(*deliveries: Delivery) -> None:
    """Move deliveries to the dead-letter queue."""
    Delivery.objects.filter(pk__in=[delivery.pk for delivery in deliveries]).update(
        status=DeliveryStatus.DEAD_LETTER,
        attempt_count=8,
        dead_lettered_at=timezone.now(),
        dead_letter_reason="retries exhausted",
    )


def statuses(*deliveries: Delivery) -> list[str]:
    """The current status of each delivery, in order."""
    by_pk = dict(
        Delivery.objects.filter(
            pk__in=[delivery.pk for delivery in deliveries]
        ).values_list("pk", "status")
    )
    return [by_pk[delivery.pk] for delivery in deliveries]


def dead_deliveries(tenant, count: int) -> list[Delivery]:
    """`count` dead-lettered deliveries of `tenant` (one endpoint, one per event)."""
    endpoint = make_endpoint(tenant=tenant)
    made = [make_event(tenant=tenant)[1][0] for _ in range(count)]
    assert all(delivery.endpoint_id == endpoint.pk for delivery in made)
    dead(*made)
    return made


def staff_with(django_user_model, *codenames: str):
    """A staff user (not superuser) holding only the given permissions."""
    user = django_user_model.objects.create_user(
        username="limited", password="x", is_staff=True
    )
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="deliveries", codename__in=codenames
        )
    )
    return user


@pytest.fixture
def delivery(tenant):
    """A pending delivery of `tenant`, with one recorded attempt."""
    make_endpoint(tenant=tenant)
    _, (delivery,) = make_event(
        tenant=tenant, event_type="order.created", payload={"order": "A-1001"}
    )
    DeliveryAttempt.objects.create(
        delivery=delivery,
        number=1,
        started_at=timezone.now(),
        outcome="5xx",
        request_headers={"Content-Type": "application/json"},
        response_status=503,
        response_headers={"Retry-After": "5"},
        response_body='{"error": "upstream-unavailable"}',
    )
    return delivery


# --- events --------------------------------------------------------------------


def test_event_admin_changelist_and_change_page_load(admin_client, delivery):
    # given
    event = delivery.event
    # when
    listed = admin_client.get(reverse(EVENT_CHANGELIST))
    page = admin_client.get(reverse("admin:deliveries_event_change", args=[event.pk]))
    # then
    assert listed.status_code == 200
    assert list(listed.context["cl"].result_list) == [event]
    assert page.status_code == 200
    html = page.content.decode()
    assert "A-1001" in html
    assert str(delivery.pk) in html
    assert reverse("admin:deliveries_delivery_change", args=[delivery.pk]) in html


def test_event_admin_search_by_full_uuid_finds_only_that_event(admin_client, delivery):
    # given
    other, _ = make_event(tenant=delivery.tenant)
    # when
    response = admin_client.get(reverse(EVENT_CHANGELIST), {"q": str(other.pk)})
    # then
    assert list(response.context["cl"].result_list) == [other]


# --- deliveries ----------------------------------------------------------------


def test_delivery_admin_changelist_and_change_page_load(admin_client, delivery):
    # when
    listed = admin_client.get(reverse(DELIVERY_CHANGELIST))
    page = admin_client.get(
        reverse("admin:deliveries_delivery_change", args=[delivery.pk])
    )
    # then
    assert listed.status_code == 200
    assert list(listed.context["cl"].result_list) == [delivery]
    assert 'value="retry_now"' in listed.content.decode()
    assert page.status_code == 200
    html = page.content.decode()
    assert str(delivery.pk) in html
    assert "upstream-unavailable" in html
    assert "Retry-After" in html


def test_delivery_admin_search_by_full_uuid_finds_the_delivery(admin_client, tenant):
    # given
    make_endpoint(tenant=tenant)
    make_endpoint(tenant=tenant)
    event, deliveries = make_event(tenant=tenant)
    _, others = make_event(tenant=tenant)
    # when
    by_id = admin_client.get(reverse(DELIVERY_CHANGELIST), {"q": str(deliveries[0].pk)})
    by_event = admin_client.get(reverse(DELIVERY_CHANGELIST), {"q": str(event.pk)})
    # then
    assert list(by_id.context["cl"].result_list) == [deliveries[0]]
    assert set(by_event.context["cl"].result_list) == set(deliveries)
    assert len(deliveries) == len(others) == 2


def test_delivery_admin_retry_action_queues_final_deliveries_again(
    admin_client, tenant
):
    # given
    make_endpoint(tenant=tenant)
    _, (dead_one,) = make_event(tenant=tenant)
    _, (failed_one,) = make_event(tenant=tenant)
    _, (untouched,) = make_event(tenant=tenant)
    dead(dead_one, untouched)
    Delivery.objects.filter(pk=failed_one.pk).update(
        status=DeliveryStatus.FAILED,
        attempt_count=2,
        next_attempt_at=timezone.now() + timedelta(hours=1),
    )
    # when
    response = run_action(
        admin_client, DELIVERY_CHANGELIST, "retry_now", [dead_one.pk, failed_one.pk]
    )
    # then
    assert response.status_code == 200
    assert "Queued 2 deliveries for retry now." in messages_of(response)
    assert statuses(dead_one, failed_one, untouched) == [
        DeliveryStatus.PENDING,
        DeliveryStatus.PENDING,
        DeliveryStatus.DEAD_LETTER,
    ]
    revived = Delivery.objects.get(pk=dead_one.pk)
    assert revived.dead_lettered_at is None
    assert revived.dead_letter_reason == ""
    assert revived.round_start == revived.attempt_count == 8
    assert Delivery.objects.get(pk=failed_one.pk).next_attempt_at <= timezone.now()


def test_delivery_admin_retry_action_notes_an_attempt_in_progress(
    admin_client, delivery
):
    # given
    Delivery.objects.filter(pk=delivery.pk).update(
        status=DeliveryStatus.IN_PROGRESS,
        lease_expires_at=timezone.now() + timedelta(minutes=5),
    )
    # when
    response = run_action(admin_client, DELIVERY_CHANGELIST, "retry_now", [delivery.pk])
    # then: not sent twice at once, but the request is kept for that attempt's end
    assert (
        "Queued 0 deliveries for retry now. 1 was being attempted: if that attempt"
        " fails, the next one follows at once." in messages_of(response)
    )
    assert statuses(delivery) == [DeliveryStatus.IN_PROGRESS]
    delivery.refresh_from_db()
    assert delivery.retry_requested_at is not None


def test_delivery_admin_retry_action_needs_change_permission(
    client, django_user_model, delivery
):
    # given
    dead(delivery)
    client.force_login(staff_with(django_user_model, "view_delivery"))
    # when
    page = client.get(reverse(DELIVERY_CHANGELIST))
    run_action(client, DELIVERY_CHANGELIST, "retry_now", [delivery.pk])
    # then
    assert page.status_code == 200
    assert 'value="retry_now"' not in page.content.decode()
    assert statuses(delivery) == [DeliveryStatus.DEAD_LETTER]


# --- dead letters --------------------------------------------------------------


def test_dead_letter_admin_changelist_lists_only_dead_letters(admin_client, tenant):
    # given
    make_endpoint(tenant=tenant)
    _, (alive,) = make_event(tenant=tenant)
    _, (failed,) = make_event(tenant=tenant)
    _, (gone,) = make_event(tenant=tenant)
    Delivery.objects.filter(pk=failed.pk).update(status=DeliveryStatus.FAILED)
    dead(gone)
    # when
    response = admin_client.get(reverse(DEAD_LETTER_CHANGELIST))
    # then
    assert response.status_code == 200
    assert [row.pk for row in response.context["cl"].result_list] == [gone.pk]
    html = response.content.decode()
    assert str(gone.pk) in html
    assert str(alive.pk) not in html
    assert str(failed.pk) not in html
    assert "Replay all matching (1)" in html


def test_dead_letter_admin_change_page_loads_for_a_dead_letter_only(
    admin_client, delivery
):
    # given
    change = reverse("admin:deliveries_deadletter_change", args=[delivery.pk])
    # when
    alive = admin_client.get(change)
    dead(delivery)
    page = admin_client.get(change)
    # then
    assert alive.status_code == 302
    assert page.status_code == 200
    html = page.content.decode()
    assert str(delivery.pk) in html
    assert "retries exhausted" in html
    assert "upstream-unavailable" in html


def test_dead_letter_admin_search_by_full_uuid_finds_the_row(admin_client, tenant):
    # given
    first, second = dead_deliveries(tenant, 2)
    changelist = reverse(DEAD_LETTER_CHANGELIST)
    # when
    by_id = admin_client.get(changelist, {"q": str(first.pk)})
    by_event = admin_client.get(changelist, {"q": str(second.event_id)})
    by_endpoint = admin_client.get(changelist, {"q": str(first.endpoint_id)})
    by_text = admin_client.get(changelist, {"q": "retries"})
    # then
    assert [row.pk for row in by_id.context["cl"].result_list] == [first.pk]
    assert [row.pk for row in by_event.context["cl"].result_list] == [second.pk]
    assert {row.pk for row in by_endpoint.context["cl"].result_list} == {
        first.pk,
        second.pk,
    }
    assert list(by_text.context["cl"].result_list) == []


def test_dead_letter_admin_replay_selected_replays_only_the_selection(
    admin_client, tenant
):
    # given
    first, second, third = dead_deliveries(tenant, 3)
    # when
    response = run_action(
        admin_client,
        DEAD_LETTER_CHANGELIST,
        "replay_selected",
        [first.pk, second.pk],
        post="yes",
    )
    # then
    assert response.status_code == 200
    assert "Replayed 2 deliveries." in messages_of(response)
    assert statuses(first, second, third) == [
        DeliveryStatus.PENDING,
        DeliveryStatus.PENDING,
        DeliveryStatus.DEAD_LETTER,
    ]
    replayed = Delivery.objects.get(pk=first.pk)
    assert replayed.dead_lettered_at is None
    assert replayed.dead_letter_reason == ""
    assert replayed.round_start == 8
    assert [row.pk for row in response.context["cl"].result_list] == [third.pk]


def test_dead_letter_admin_replay_selected_skips_rows_no_longer_dead(
    admin_client, tenant
):
    # given
    first, second = dead_deliveries(tenant, 2)
    # another admin replayed `second` after the page was shown
    Delivery.objects.filter(pk=second.pk).update(
        status=DeliveryStatus.PENDING, dead_lettered_at=None
    )
    # when
    response = run_action(
        admin_client,
        DEAD_LETTER_CHANGELIST,
        "replay_selected",
        [first.pk, second.pk],
        post="yes",
    )
    # then
    assert messages_of(response) == ["Replayed 1 delivery."]
    assert statuses(first, second) == [DeliveryStatus.PENDING] * 2


def test_dead_letter_admin_replay_matching_replays_only_the_filtered_tenant(
    admin_client,
):
    # given
    acme, globex = make_tenant(), make_tenant()
    acme_rows = dead_deliveries(acme, 2)
    globex_rows = dead_deliveries(globex, 2)
    query = f"tenant__id__exact={acme.pk}"
    listed = admin_client.get(f"{reverse(DEAD_LETTER_CHANGELIST)}?{query}")
    assert {row.pk for row in listed.context["cl"].result_list} == {
        row.pk for row in acme_rows
    }
    assert "Replay all matching (2)" in listed.content.decode()
    # when
    response = admin_client.post(f"{reverse(REPLAY_MATCHING)}?{query}&p=1", follow=True)
    # then
    assert response.status_code == 200
    assert response.redirect_chain == [
        (f"{reverse(DEAD_LETTER_CHANGELIST)}?{query}", 302)
    ]
    assert "Replayed 2 deliveries." in messages_of(response)
    assert statuses(*acme_rows) == [DeliveryStatus.PENDING] * 2
    assert statuses(*globex_rows) == [DeliveryStatus.DEAD_LETTER] * 2
    assert list(
        DeadLetter.objects.filter(status=DeliveryStatus.DEAD_LETTER)
        .order_by("pk")
        .values_list("tenant_id", flat=True)
    ) == [globex.pk, globex.pk]


def test_dead_letter_admin_replay_matching_follows_the_date_filter(
    admin_client, tenant
):
    # given
    old, recent = dead_deliveries(tenant, 2)
    now = timezone.now()
    Delivery.objects.filter(pk=old.pk).update(dead_lettered_at=now - timedelta(days=9))
    query = urlencode(
        {
            "dead_lettered_at__gte": (now - timedelta(days=7)).isoformat(),
            "dead_lettered_at__lt": (now + timedelta(days=1)).isoformat(),
        }
    )
    listed = admin_client.get(f"{reverse(DEAD_LETTER_CHANGELIST)}?{query}")
    assert [row.pk for row in listed.context["cl"].result_list] == [recent.pk]
    # when
    response = admin_client.post(f"{reverse(REPLAY_MATCHING)}?{query}", follow=True)
    # then
    assert "Replayed 1 delivery." in messages_of(response)
    assert statuses(old, recent) == [
        DeliveryStatus.DEAD_LETTER,
        DeliveryStatus.PENDING,
    ]


def test_dead_letter_admin_replay_matching_follows_the_search(admin_client, tenant):
    # given
    first, second = dead_deliveries(tenant, 2)
    # when
    response = admin_client.post(
        reverse(REPLAY_MATCHING) + f"?q={second.pk}", follow=True
    )
    # then
    assert "Replayed 1 delivery." in messages_of(response)
    assert statuses(first, second) == [
        DeliveryStatus.DEAD_LETTER,
        DeliveryStatus.PENDING,
    ]


def test_dead_letter_admin_replay_matching_without_filters_replays_every_page(
    admin_client,
):
    # given
    rows = dead_deliveries(make_tenant(), 2) + dead_deliveries(make_tenant(), 1)
    # when: the page and error flags of the list do not narrow the replay
    response = admin_client.post(reverse(REPLAY_MATCHING) + "?p=7&e=1", follow=True)
    # then
    assert response.redirect_chain == [(reverse(DEAD_LETTER_CHANGELIST), 302)]
    assert "Replayed 3 deliveries." in messages_of(response)
    assert statuses(*rows) == [DeliveryStatus.PENDING] * 3


def test_dead_letter_admin_replay_matching_with_invalid_filter_replays_nothing(
    admin_client,
):
    # given: two tenants with dead letters, so the tenant filter is offered
    rows = dead_deliveries(make_tenant(), 1) + dead_deliveries(make_tenant(), 1)
    # when
    response = admin_client.post(
        reverse(REPLAY_MATCHING) + "?tenant__id__exact=not-a-uuid", follow=True
    )
    # then
    assert response.redirect_chain == [(reverse(DEAD_LETTER_CHANGELIST), 302)]
    assert "The filters are not valid; nothing replayed." in messages_of(response)
    assert statuses(*rows) == [DeliveryStatus.DEAD_LETTER] * 2


def test_dead_letter_admin_replay_matching_twice_leaves_other_tenants_dead(
    admin_client,
):
    # given
    acme, globex = make_tenant(), make_tenant()
    acme_rows = dead_deliveries(acme, 2)
    globex_rows = dead_deliveries(globex, 2)
    url = f"{reverse(REPLAY_MATCHING)}?tenant__id__exact={acme.pk}"
    first = admin_client.post(url, follow=True)
    assert "Replayed 2 deliveries." in messages_of(first)
    # when: the same form is submitted again (double click, re-POST)
    second = admin_client.post(url, follow=True)
    # then
    assert statuses(*acme_rows) == [DeliveryStatus.PENDING] * 2
    assert statuses(*globex_rows) == [DeliveryStatus.DEAD_LETTER] * 2
    assert "Replayed 0 deliveries." in messages_of(second)


def test_dead_letter_admin_replay_matching_get_only_asks(admin_client, tenant):
    # given
    rows = dead_deliveries(tenant, 1)
    # when
    response = admin_client.get(reverse(REPLAY_MATCHING))
    put = admin_client.put(reverse(REPLAY_MATCHING))
    # then: a confirmation page, and nothing replayed
    assert response.status_code == 200
    assert "1</strong> dead-lettered delivery will be replayed" in (
        response.content.decode()
    )
    assert put.status_code == 405
    assert statuses(*rows) == [DeliveryStatus.DEAD_LETTER]


def test_dead_letter_admin_replay_matching_needs_login(client, tenant):
    # given
    rows = dead_deliveries(tenant, 1)
    # when
    response = client.post(reverse(REPLAY_MATCHING))
    # then
    assert response.status_code == 302
    assert reverse("admin:login") in response["Location"]
    assert statuses(*rows) == [DeliveryStatus.DEAD_LETTER]


def test_dead_letter_admin_view_only_staff_cannot_replay(
    client, django_user_model, tenant
):
    # given
    rows = dead_deliveries(tenant, 2)
    client.force_login(staff_with(django_user_model, "view_delivery"))
    # when
    page = client.get(reverse(DEAD_LETTER_CHANGELIST))
    matching = client.post(reverse(REPLAY_MATCHING))
    asking = client.get(reverse(REPLAY_MATCHING))
    selected = run_action(
        client,
        DEAD_LETTER_CHANGELIST,
        "replay_selected",
        [row.pk for row in rows],
        post="yes",
    )
    # then
    assert page.status_code == 200
    html = page.content.decode()
    assert {row.pk for row in page.context["cl"].result_list} == {
        row.pk for row in rows
    }
    assert "Replay all matching" not in html
    assert reverse(REPLAY_MATCHING) not in html
    assert 'value="replay_selected"' not in html
    assert matching.status_code == asking.status_code == 403
    assert selected.status_code == 200
    assert not any("Replayed" in text for text in messages_of(selected))
    assert statuses(*rows) == [DeliveryStatus.DEAD_LETTER] * 2


def test_dead_letter_admin_change_delivery_permission_allows_replay(
    client, django_user_model, tenant
):
    # given
    rows = dead_deliveries(tenant, 2)
    client.force_login(staff_with(django_user_model, "change_delivery"))
    # when
    page = client.get(reverse(DEAD_LETTER_CHANGELIST))
    response = client.post(reverse(REPLAY_MATCHING), follow=True)
    # then
    assert page.status_code == 200
    assert "Replay all matching (2)" in page.content.decode()
    assert 'value="replay_selected"' in page.content.decode()
    assert "Replayed 2 deliveries." in messages_of(response)
    assert statuses(*rows) == [DeliveryStatus.PENDING] * 2


def test_dead_letter_admin_replay_matching_is_bounded(admin_client, tenant, settings):
    # given: three dead letters, one replay may queue two
    settings.WEBHOOK_REPLAY_MAX = 2
    rows = dead_deliveries(tenant, 3)
    # when
    first = admin_client.post(reverse(REPLAY_MATCHING), follow=True)
    # then: two now, and the message says one more matches
    assert (
        "Replayed 2 deliveries. 1 more match: replay again for the next batch."
        in messages_of(first)
    )
    assert sorted(statuses(*rows)).count(DeliveryStatus.PENDING) == 2
    second = admin_client.post(reverse(REPLAY_MATCHING), follow=True)
    assert "Replayed 1 delivery." in messages_of(second)
    assert statuses(*rows) == [DeliveryStatus.PENDING] * 3


def test_delivery_admin_retries_expired_deliveries_only_when_told(admin_client, tenant):
    # given: an expired delivery beside a dead letter
    make_endpoint(tenant=tenant)
    make_endpoint(tenant=tenant)
    _, (expired, dead) = make_event(tenant=tenant)
    Delivery.objects.filter(pk=expired.pk).update(
        status=DeliveryStatus.EXPIRED, expires_at=timezone.now() - timedelta(minutes=1)
    )
    Delivery.objects.filter(pk=dead.pk).update(status=DeliveryStatus.DEAD_LETTER)
    # when: the plain action
    plain = run_action(
        admin_client, DELIVERY_CHANGELIST, "retry_now", [expired.pk, dead.pk]
    )
    # then: the expired one is left as it is, and the message says how to retry it
    assert messages_of(plain) == [
        "Queued 1 delivery for retry now. 1 had expired and was left as it is "
        "(retry it with \u201cexpired ones too\u201d)."
    ]
    assert statuses(expired, dead) == [DeliveryStatus.EXPIRED, DeliveryStatus.PENDING]
    # when: the forced action
    forced = run_action(
        admin_client, DELIVERY_CHANGELIST, "retry_now_forced", [expired.pk]
    )
    # then
    assert messages_of(forced) == ["Queued 1 delivery for retry now."]
    assert statuses(expired) == [DeliveryStatus.PENDING]
    assert Delivery.objects.get(pk=expired.pk).expires_at is None


def test_admin_shows_the_ordering_key_of_events_and_deliveries(admin_client, tenant):
    make_endpoint(tenant=tenant)
    event, (delivery,) = make_event(tenant=tenant)
    event.ordering_key = "order-42"
    event.save(update_fields=["ordering_key"])
    Delivery.objects.filter(pk=delivery.pk).update(ordering_key="order-42", sequence=7)
    for name, pk in [
        ("admin:deliveries_event_change", event.pk),
        ("admin:deliveries_delivery_change", delivery.pk),
        (EVENT_CHANGELIST, None),
        (DELIVERY_CHANGELIST, None),
    ]:
        page = admin_client.get(reverse(name, args=[pk] if pk else []))
        assert page.status_code == 200
        assert "order-42" in page.content.decode(), name
