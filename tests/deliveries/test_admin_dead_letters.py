"""Dead-letter admin for triage: columns, filters, replays that ask first; attempts."""

import html
import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from deliveries.models import Delivery, DeliveryAttempt, DeliveryStatus
from tests.deliveries.test_admin import (
    DEAD_LETTER_CHANGELIST,
    REPLAY_MATCHING,
    dead_deliveries,
    messages_of,
    run_action,
    staff_with,
    statuses,
)
from tests.factories import make_endpoint, make_event, make_tenant

pytestmark = pytest.mark.django_db

HIDDEN_INPUT = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


def form_of(response) -> tuple[str, list[tuple[str, str]]]:
    """The confirmation form's action URL and hidden fields."""
    page = response.content.decode()
    [action] = re.findall(r'<form method="post" action="([^"]*)">', page)
    return html.unescape(action), [
        (name, html.unescape(value)) for name, value in HIDDEN_INPUT.findall(page)
    ]


def listed(client, **query) -> list:
    """The pks of the dead-letter list for `query`."""
    response = client.get(reverse(DEAD_LETTER_CHANGELIST), query)
    assert response.status_code == 200
    return [row.pk for row in response.context["cl"].result_list]


def post_form(client, action: str, fields: list[tuple[str, str]]):
    """Submit a form's fields as a browser would (repeated names kept)."""
    data: dict[str, list[str]] = {}
    for name, value in fields:
        data.setdefault(name, []).append(value)
    return client.post(action, data, follow=True)


# --- replays ask first -----------------------------------------------------------


def test_dead_letter_replay_selected_asks_first_with_the_count(admin_client, tenant):
    # given
    first, second, third = dead_deliveries(tenant, 3)
    # when: the action is chosen on two rows
    asked = run_action(
        admin_client, DEAD_LETTER_CHANGELIST, "replay_selected", [first.pk, second.pk]
    )
    # then: a confirmation with the count, and nothing replayed yet
    assert asked.status_code == 200
    page = asked.content.decode()
    assert "<strong>2</strong> dead-lettered deliveries will be replayed." in page
    assert 'value="Yes, replay 2"' in page
    assert statuses(first, second, third) == [DeliveryStatus.DEAD_LETTER] * 3
    action, fields = form_of(asked)
    assert ("post", "yes") in fields
    assert {value for name, value in fields if name == "_selected_action"} == {
        str(first.pk),
        str(second.pk),
    }
    # when: the operator confirms
    done = post_form(admin_client, action or reverse(DEAD_LETTER_CHANGELIST), fields)
    # then
    assert "Replayed 2 deliveries." in messages_of(done)
    assert statuses(first, second, third) == [
        DeliveryStatus.PENDING,
        DeliveryStatus.PENDING,
        DeliveryStatus.DEAD_LETTER,
    ]


def test_dead_letter_replay_selected_across_pages_counts_every_match(admin_client):
    # given: the list filtered to acme; one row ticked, then "select all 3"
    acme, globex = make_tenant(name="acme"), make_tenant(name="globex")
    acme_rows = dead_deliveries(acme, 3)
    globex_rows = dead_deliveries(globex, 1)
    url = f"{reverse(DEAD_LETTER_CHANGELIST)}?tenant__id__exact={acme.pk}"
    # when
    asked = admin_client.post(
        url,
        {
            "action": "replay_selected",
            "_selected_action": [str(acme_rows[0].pk)],
            "select_across": "1",
            "index": 0,
        },
    )
    # then: the count and the filter it follows
    page = asked.content.decode()
    assert "<strong>3</strong> dead-lettered deliveries will be replayed." in page
    assert "<li>tenant: acme</li>" in page
    action, fields = form_of(asked)
    assert ("select_across", "1") in fields
    done = post_form(admin_client, action, fields)
    assert "Replayed 3 deliveries." in messages_of(done)
    assert statuses(*acme_rows) == [DeliveryStatus.PENDING] * 3
    assert statuses(*globex_rows) == [DeliveryStatus.DEAD_LETTER]


def test_dead_letter_replay_matching_confirmation_states_count_and_filters(
    admin_client,
):
    # given: retries exhausted for acme's two, an endpoint switched off for one
    acme, globex = make_tenant(name="acme"), make_tenant(name="globex")
    *exhausted, switched_off = dead_deliveries(acme, 3)
    Delivery.objects.filter(pk=switched_off.pk).update(
        dead_letter_reason="endpoint disabled: receiver answered 410 Gone"
    )
    others = dead_deliveries(globex, 1)
    query = f"tenant__id__exact={acme.pk}&reason=retries"
    changelist = admin_client.get(f"{reverse(DEAD_LETTER_CHANGELIST)}?{query}")
    assert "Replay all matching (2)" in changelist.content.decode()
    # when: the button (a link) is followed
    asked = admin_client.get(f"{reverse(REPLAY_MATCHING)}?{query}&p=2")
    # then
    page = asked.content.decode()
    assert "<strong>2</strong> dead-lettered deliveries will be replayed." in page
    assert "<li>tenant: acme</li>" in page
    assert "<li>reason: Retries exhausted</li>" in page
    assert (
        f'href="{reverse(DEAD_LETTER_CHANGELIST)}?{query.replace("&", "&amp;")}"'
        in page
    )
    action, _ = form_of(asked)
    assert action == f"{reverse(REPLAY_MATCHING)}?{query}"
    assert statuses(*exhausted, switched_off, *others) == (
        [DeliveryStatus.DEAD_LETTER] * 4
    )
    # when
    done = admin_client.post(action, follow=True)
    # then
    assert "Replayed 2 deliveries." in messages_of(done)
    assert statuses(*exhausted) == [DeliveryStatus.PENDING] * 2
    assert statuses(switched_off, *others) == [DeliveryStatus.DEAD_LETTER] * 2


def test_dead_letter_replay_matching_with_nothing_matching_offers_no_replay(
    admin_client, tenant
):
    dead_deliveries(tenant, 1)
    asked = admin_client.get(f"{reverse(REPLAY_MATCHING)}?age=old")
    page = asked.content.decode()
    assert "No dead letter matches: nothing to replay." in page
    assert 'value="Yes, replay' not in page


# --- columns and filters ---------------------------------------------------------


def test_dead_letter_changelist_shows_what_triage_needs(admin_client, tenant):
    # given
    [row] = dead_deliveries(tenant, 1)
    Delivery.objects.filter(pk=row.pk).update(
        dead_lettered_at=timezone.now() - timedelta(hours=3, minutes=5),
        last_status_code=503,
    )
    # when
    page = admin_client.get(reverse(DEAD_LETTER_CHANGELIST)).content.decode()
    # then: event type, endpoint (linking to its dead letters), tenant, reason,
    # attempts, last status and age
    row.refresh_from_db()
    assert "order.created" in page
    endpoint_query = (
        f"?tenant__id__exact={row.tenant_id}&amp;endpoint__id__exact={row.endpoint_id}"
    )
    assert f'<a href="{endpoint_query}"' in page
    assert f">{row.endpoint.url}</a>" in page
    assert f'<td class="field-tenant nowrap">{tenant.name}</td>' in page
    assert '<td class="field-reason">retries exhausted</td>' in page
    assert '<td class="field-attempts">8</td>' in page
    assert '<td class="field-last_status">503</td>' in page
    assert "3\xa0hours, 5\xa0minutes</time>" in page
    assert f'<span title="{row.pk}">…{str(row.pk)[-12:]}</span>' in page


def test_dead_letter_filters_by_reason_age_tenant_and_endpoint(admin_client):
    # given: acme has two endpoints; one dead letter is old, one of a disabled endpoint
    acme, globex = make_tenant(name="acme"), make_tenant(name="globex")
    first_endpoint = make_endpoint(tenant=acme)
    second_endpoint = make_endpoint(tenant=acme)
    (_, (old, other_endpoint)), (_, (disabled, recent)) = (
        make_event(tenant=acme),
        make_event(tenant=acme),
    )
    [foreign] = dead_deliveries(globex, 1)
    rows = (old, other_endpoint, disabled, recent)
    Delivery.objects.filter(pk__in=[row.pk for row in rows]).update(
        status=DeliveryStatus.DEAD_LETTER,
        dead_lettered_at=timezone.now() - timedelta(minutes=10),
        dead_letter_reason="retries exhausted",
    )
    Delivery.objects.filter(pk=old.pk).update(
        dead_lettered_at=timezone.now() - timedelta(days=9)
    )
    Delivery.objects.filter(pk=disabled.pk).update(
        dead_letter_reason="endpoint disabled: no successful delivery for 5 days"
    )
    by_endpoint = {row.pk: row.endpoint_id for row in rows}
    # when / then
    assert set(listed(admin_client, reason="disabled")) == {disabled.pk}
    assert disabled.pk not in listed(admin_client, reason="retries")
    assert set(listed(admin_client, age="old")) == {old.pk}
    assert old.pk not in listed(admin_client, age="1h")
    assert set(listed(admin_client, age="7d")) == {
        other_endpoint.pk,
        disabled.pk,
        recent.pk,
        foreign.pk,
    }
    assert set(listed(admin_client, tenant__id__exact=str(acme.pk))) == set(by_endpoint)
    assert set(
        listed(
            admin_client,
            tenant__id__exact=str(acme.pk),
            endpoint__id__exact=str(first_endpoint.pk),
        )
    ) == {pk for pk, endpoint in by_endpoint.items() if endpoint == first_endpoint.pk}
    assert second_endpoint.pk in by_endpoint.values()


def test_dead_letter_endpoint_filter_offered_once_a_tenant_is_chosen(admin_client):
    # given
    acme, globex = make_tenant(name="acme"), make_tenant(name="globex")
    acme_rows = dead_deliveries(acme, 1)
    globex_rows = dead_deliveries(globex, 1)
    make_tenant(name="calm")  # no dead letters: not offered
    changelist = reverse(DEAD_LETTER_CHANGELIST)

    def filters(**query):
        cl = admin_client.get(changelist, query).context["cl"]
        return {spec.title: spec.lookup_choices for spec in cl.filter_specs}

    # when / then: tenants with dead letters, no endpoint list until one is chosen
    unfiltered = filters()
    assert [name for _, name in unfiltered["tenant"]] == ["acme", "globex"]
    assert "endpoint" not in unfiltered
    assert set(unfiltered) == {"tenant", "reason", "age"}
    chosen = filters(tenant__id__exact=str(acme.pk))
    assert chosen["endpoint"] == [
        (str(acme_rows[0].endpoint_id), acme_rows[0].endpoint.url)
    ]
    # A chosen endpoint alone (a link, a bookmark) still narrows the list.
    assert listed(
        admin_client, endpoint__id__exact=str(globex_rows[0].endpoint_id)
    ) == [globex_rows[0].pk]


@pytest.mark.parametrize("parameter", ["tenant__id__exact", "endpoint__id__exact"])
def test_dead_letter_malformed_id_filter_is_the_lists_error(admin_client, parameter):
    dead_deliveries(make_tenant(), 1)
    response = admin_client.get(reverse(DEAD_LETTER_CHANGELIST), {parameter: "x"})
    assert response.status_code == 302
    assert response["Location"].endswith("?e=1")


# --- a delivery's attempts -------------------------------------------------------


def test_delivery_page_shows_attempts_with_status_duration_and_excerpt(
    admin_client, tenant
):
    # given: a long JSON body and a connection error
    make_endpoint(tenant=tenant)
    _, (delivery,) = make_event(tenant=tenant)
    now = timezone.now()
    body = '{"error": "upstream-unavailable", "detail": "' + "x" * 400 + '"}'
    DeliveryAttempt.objects.create(
        delivery=delivery,
        number=1,
        started_at=now,
        duration_ms=1234,
        outcome="5xx",
        response_status=503,
        response_headers={"Retry-After": "5"},
        response_body=body,
    )
    DeliveryAttempt.objects.create(
        delivery=delivery,
        number=2,
        started_at=now,
        duration_ms=5000,
        outcome="connection_error",
        error="connection refused",
    )
    # when
    page = admin_client.get(
        reverse("admin:deliveries_delivery_change", args=[delivery.pk])
    ).content.decode()
    # then: one row per attempt; the whole body and headers behind a toggle
    page = re.sub(r">\s+<", "><", page)
    assert '<td class="field-duration"><p>1234 ms</p></td>' in page
    assert '<td class="field-response_status"><p>503</p></td>' in page
    excerpt = re.search(r'<td class="field-excerpt"><p>(.*?)</p></td>', page)[1]
    assert excerpt.startswith("{&quot;error&quot;: &quot;upstream-unavailable")
    assert excerpt.endswith("…") and "x" * 400 not in excerpt
    assert "x" * 400 in page  # in the details
    assert "<summary>show</summary>" in page
    assert '<td class="field-excerpt"><p>connection refused</p></td>' in page
    assert "deliveries/admin.css" in page


def test_delivery_attempts_shown_to_staff_who_may_see_deliveries(
    client, django_user_model, tenant
):
    # given: a staff member with the delivery permission only (none on attempts)
    make_endpoint(tenant=tenant)
    _, (delivery,) = make_event(tenant=tenant)
    DeliveryAttempt.objects.create(
        delivery=delivery,
        number=1,
        started_at=timezone.now(),
        outcome="5xx",
        response_status=503,
        response_body="upstream-unavailable",
    )
    client.force_login(staff_with(django_user_model, "view_delivery"))
    # when
    page = client.get(reverse("admin:deliveries_delivery_change", args=[delivery.pk]))
    # then
    assert page.status_code == 200
    assert 'id="attempts-0"' in page.content.decode()
    assert "upstream-unavailable" in page.content.decode()
