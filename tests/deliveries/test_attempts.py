"""The delivery task body against real local receivers: signing, outcomes, retries."""

import json
import time
from datetime import timedelta

import pytest
import standardwebhooks
from django.utils import timezone
from svix.webhooks import Webhook as SvixWebhook

from deliveries.models import AttemptOutcome, Delivery, DeliveryStatus
from deliveries.receiver import WebhookReceiver
from deliveries.services.attempts import (
    attempt_send,
    attempts_leave_gate,
    attempts_store,
    deliveries_admit,
    delivery_run,
)
from deliveries.services.scheduling import delivery_requeue
from deliveries.tasks import deliver
from subscriptions.models import Endpoint
from subscriptions.services import endpoint_rotate_secret
from tests.factories import make_endpoint, make_event, make_tenant
from webhooks_project.version import USER_AGENT

pytestmark = pytest.mark.django_db


def run_attempt(delivery: Delivery):
    decision = delivery_run(delivery_id=delivery.pk)
    delivery.refresh_from_db()
    return decision


def make_due(delivery: Delivery) -> None:
    Delivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now() - timedelta(seconds=1)
    )


def verify_with_both_libraries(secret: str, request) -> None:
    body = request.body.decode()
    headers = dict(request.headers)
    standardwebhooks.Webhook(secret).verify(body, headers)
    SvixWebhook(secret).verify(body, headers)


def test_delivery_signed_for_standardwebhooks_and_svix(tenant, receiver):
    # given
    endpoint = make_endpoint(tenant=tenant, url=receiver.url, headers={"X-Team": "a"})
    event, [delivery] = make_event(tenant=tenant, payload={"order_id": 42})
    # when
    decision = run_attempt(delivery)
    # then
    assert decision.status == DeliveryStatus.SUCCEEDED
    [request] = receiver.received
    verify_with_both_libraries(endpoint.secret, request)
    assert request.header("webhook-id") == str(event.id)
    assert request.header("content-type") == "application/json"
    assert request.header("user-agent") == USER_AGENT
    assert request.header("x-team") == "a"
    envelope = json.loads(request.body)
    assert envelope["id"] == str(event.id)
    assert envelope["type"] == "order.created"
    assert envelope["data"] == {"order_id": 42}
    assert envelope["timestamp"].endswith("Z")


def test_delivery_during_rotation_verifies_with_old_and_new_secret(tenant, receiver):
    endpoint = make_endpoint(tenant=tenant, url=receiver.url)
    old = endpoint.secret
    new = endpoint_rotate_secret(endpoint=endpoint)
    _, [delivery] = make_event(tenant=tenant)
    run_attempt(delivery)
    [request] = receiver.received
    assert len(request.header("webhook-signature").split()) == 2
    verify_with_both_libraries(old, request)
    verify_with_both_libraries(new, request)


def test_delivery_after_grace_is_signed_by_new_secret_only(tenant, receiver, settings):
    settings.WEBHOOK_SECRET_ROTATION_GRACE = 0
    endpoint = make_endpoint(tenant=tenant, url=receiver.url)
    old = endpoint.secret
    new = endpoint_rotate_secret(endpoint=endpoint)
    _, [delivery] = make_event(tenant=tenant)
    run_attempt(delivery)
    [request] = receiver.received
    verify_with_both_libraries(new, request)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(old).verify(request.body.decode(), request.headers)


def test_endpoint_headers_never_override_platform_headers(tenant, receiver):
    endpoint = make_endpoint(tenant=tenant, url=receiver.url)
    Endpoint.objects.filter(pk=endpoint.pk).update(
        headers={"Webhook-Id": "forged", "User-Agent": "x", "Authorization": "t"}
    )
    event, [delivery] = make_event(tenant=tenant)
    run_attempt(delivery)
    [request] = receiver.received
    assert request.header("webhook-id") == str(event.id)
    assert request.header("user-agent") == USER_AGENT
    assert request.header("authorization") == "t"
    stored = delivery.attempts.get().request_headers
    assert stored["Authorization"] == "[redacted]"


def test_delivery_success_records_attempt(tenant, receiver):
    make_endpoint(tenant=tenant, url=receiver.url)
    _, [delivery] = make_event(tenant=tenant)
    run_attempt(delivery)
    assert delivery.status == DeliveryStatus.SUCCEEDED
    assert delivery.attempt_count == 1
    assert delivery.last_status_code == 200
    attempt = delivery.attempts.get()
    assert attempt.number == 1
    assert attempt.outcome == AttemptOutcome.SUCCESS
    assert attempt.response_status == 200
    assert "webhook-signature" in attempt.request_headers
    assert attempt.response_body
    assert attempt.duration_ms >= 0


def test_delivery_redelivered_task_after_success_does_nothing(tenant, receiver):
    make_endpoint(tenant=tenant, url=receiver.url)
    _, [delivery] = make_event(tenant=tenant)
    run_attempt(delivery)
    # when: the same message arrives again (broker redelivery)
    decision = run_attempt(delivery)
    # then
    assert decision.attempted is False
    assert len(receiver.received) == 1
    assert delivery.attempts.count() == 1


def test_delivery_in_progress_with_live_lease_is_not_taken_twice(tenant, receiver):
    make_endpoint(tenant=tenant, url=receiver.url)
    _, [delivery] = make_event(tenant=tenant)
    Delivery.objects.filter(pk=delivery.pk).update(
        status=DeliveryStatus.IN_PROGRESS,
        lease_expires_at=timezone.now() + timedelta(minutes=1),
    )
    assert run_attempt(delivery).attempted is False
    Delivery.objects.filter(pk=delivery.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert run_attempt(delivery).status == DeliveryStatus.SUCCEEDED


def test_delivery_failure_schedules_retry_along_schedule(tenant, receiver, settings):
    settings.WEBHOOK_RETRY_SCHEDULE = [5, 300]
    settings.WEBHOOK_RETRY_JITTER = 0.2
    receiver.set_statuses([500])
    make_endpoint(tenant=tenant, url=receiver.url)
    _, [delivery] = make_event(tenant=tenant)
    # first failure: 5 s ± 20 %, carried by the broker
    before = timezone.now()
    decision = run_attempt(delivery)
    assert delivery.status == DeliveryStatus.FAILED
    assert 4.0 <= decision.retry_in <= 6.0
    wait = (delivery.next_attempt_at - before).total_seconds()
    assert 3.9 <= wait <= 6.1
    assert delivery.last_status_code == 500
    assert delivery.last_error == "HTTP 500"
    # second failure: 300 s, too long for the broker: kept in the database
    make_due(delivery)
    decision = run_attempt(delivery)
    assert decision.retry_in is None
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.lease_expires_at == delivery.next_attempt_at
    assert 239 <= (delivery.next_attempt_at - timezone.now()).total_seconds() <= 361
    # third failure: schedule exhausted
    make_due(delivery)
    run_attempt(delivery)
    assert delivery.status == DeliveryStatus.DEAD_LETTER
    assert delivery.dead_letter_reason == "retries exhausted"
    assert list(delivery.attempts.values_list("number", flat=True)) == [1, 2, 3]


def test_delivery_not_due_is_left_for_later(tenant, receiver, settings):
    receiver.set_statuses([500])
    make_endpoint(tenant=tenant, url=receiver.url)
    _, [delivery] = make_event(tenant=tenant)
    run_attempt(delivery)
    assert run_attempt(delivery).attempted is False
    assert len(receiver.received) == 1


def test_delivery_retry_after_honoured_and_bounded(tenant, settings):
    settings.WEBHOOK_RETRY_SCHEDULE = [5, 60]
    with WebhookReceiver(statuses=[503], retry_after=30) as slow_down:
        make_endpoint(tenant=tenant, url=slow_down.url)
        _, [delivery] = make_event(tenant=tenant)
        decision = run_attempt(delivery)
        assert decision.retry_in == 30
    with WebhookReceiver(statuses=[429], retry_after=3600) as too_long:
        other = make_tenant()
        make_endpoint(tenant=other, url=too_long.url)
        _, [delivery] = make_event(tenant=other)
        decision = run_attempt(delivery)
        assert decision.retry_in == 60


def test_delivery_410_disables_endpoint_and_dead_letters(tenant):
    with WebhookReceiver(statuses=[410]) as gone:
        endpoint = make_endpoint(tenant=tenant, url=gone.url)
        _, [delivery] = make_event(tenant=tenant)
        run_attempt(delivery)
    endpoint.refresh_from_db()
    assert delivery.status == DeliveryStatus.DEAD_LETTER
    assert "410" in delivery.dead_letter_reason
    assert endpoint.is_active is False
    assert "410" in endpoint.disabled_reason


def test_delivery_redirect_is_not_followed(tenant):
    # The receiver redirects to a closed port: following it would end in a
    # connection error, not in the 301 itself.
    with WebhookReceiver(statuses=[301]) as redirecting:
        make_endpoint(tenant=tenant, url=redirecting.url)
        _, [delivery] = make_event(tenant=tenant)
        run_attempt(delivery)
    attempt = delivery.attempts.get()
    assert attempt.response_status == 301
    assert attempt.outcome == AttemptOutcome.HTTP_OTHER
    assert delivery.status == DeliveryStatus.FAILED
    assert len(redirecting.received) == 1


def test_delivery_dead_receiver_is_connection_error(tenant):
    with WebhookReceiver() as closed:
        url = closed.url
    make_endpoint(tenant=tenant, url=url)
    _, [delivery] = make_event(tenant=tenant)
    run_attempt(delivery)
    attempt = delivery.attempts.get()
    assert attempt.outcome == AttemptOutcome.CONNECTION_ERROR
    assert attempt.response_status is None
    assert delivery.status == DeliveryStatus.FAILED


def test_delivery_slow_receiver_times_out_at_deadline(tenant, settings):
    settings.WEBHOOK_RESPONSE_TIMEOUT = 0.5
    with WebhookReceiver(delay=3) as slow:
        make_endpoint(tenant=tenant, url=slow.url)
        _, [delivery] = make_event(tenant=tenant)
        started = time.monotonic()
        run_attempt(delivery)
        took = time.monotonic() - started
    attempt = delivery.attempts.get()
    assert attempt.outcome == AttemptOutcome.TIMEOUT
    assert took < 2.5
    assert delivery.status == DeliveryStatus.FAILED


def test_delivery_blocked_address_recorded_as_attempt(tenant, receiver, settings):
    make_endpoint(tenant=tenant, url=receiver.url)
    _, [delivery] = make_event(tenant=tenant)
    settings.WEBHOOK_ALLOWED_NETWORKS = []
    run_attempt(delivery)
    attempt = delivery.attempts.get()
    assert attempt.outcome == AttemptOutcome.BLOCKED
    assert "loopback" in attempt.error
    assert receiver.received == []
    assert delivery.status == DeliveryStatus.FAILED


def test_delivery_to_disabled_endpoint_is_dead_lettered_without_attempt(
    tenant, receiver
):
    endpoint = make_endpoint(tenant=tenant, url=receiver.url)
    _, [delivery] = make_event(tenant=tenant)
    Endpoint.objects.filter(pk=endpoint.pk).update(
        is_active=False, disabled_reason="manual"
    )
    run_attempt(delivery)
    assert delivery.status == DeliveryStatus.DEAD_LETTER
    assert "manual" in delivery.dead_letter_reason
    assert receiver.received == []


def test_deliver_task_for_missing_row_returns_quietly():
    assert deliver.run("00000000-0000-7000-8000-000000000000") is None


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("attempts_before", "round_start"),
    [(0, 0), (1, 2)],  # its first attempt; the last of its round (a fresh one starts)
)
def test_delivery_retried_during_a_failing_attempt_is_due_at_once(
    tenant, settings, attempts_before, round_start
):
    # given: a schedule of an hour, and a receiver whose request handler retries
    # the delivery through the service the API uses, then answers 500
    settings.WEBHOOK_RETRY_SCHEDULE = [3600]
    requeued = []

    def retry_meanwhile(_request):
        requeued.append(delivery_requeue(delivery=delivery))

    with WebhookReceiver(statuses=[500], on_request=retry_meanwhile) as receiver:
        make_endpoint(tenant=tenant, url=receiver.url)
        _, [delivery] = make_event(tenant=tenant)
        Delivery.objects.filter(pk=delivery.pk).update(attempt_count=attempts_before)
        # when
        before = timezone.now()
        decision = run_attempt(delivery)
    # then: the retry did not send it a second time meanwhile ...
    assert [d.status for d in requeued] == [DeliveryStatus.IN_PROGRESS]
    assert len(receiver.received) == 1
    # ... and the failed attempt is followed at once, not in an hour
    assert delivery.status == DeliveryStatus.FAILED
    assert decision.retry_in == 0
    assert before <= delivery.next_attempt_at <= timezone.now()
    assert (delivery.attempt_count, delivery.round_start) == (
        attempts_before + 1,
        round_start,
    )
    assert delivery.retry_requested_at is None


def test_delivery_retried_after_its_claim_before_its_request_is_due_at_once(
    tenant, receiver, settings
):
    # given: a delivery claimed by a worker whose request has not gone out yet
    # (its name being looked up, its pool busy), and a receiver answering 500
    settings.WEBHOOK_RETRY_SCHEDULE = [3600]
    receiver.set_statuses([500])
    make_endpoint(tenant=tenant, url=receiver.url)
    _, [delivery] = make_event(tenant=tenant)
    [attempt] = deliveries_admit(delivery_ids=[delivery.pk]).ready
    # when: retried through the API's service, which answers in_progress ...
    assert delivery_requeue(delivery=delivery).status == DeliveryStatus.IN_PROGRESS
    # ... and the attempt then sent fails
    attempt_send(attempt)
    [decision] = attempts_store(attempts=[attempt])
    attempts_leave_gate(attempts=[attempt])
    # then: the request is answered by the next attempt, due now
    delivery.refresh_from_db()
    assert len(receiver.received) == 1
    assert decision.retry_in == 0
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.next_attempt_at <= timezone.now()
    assert delivery.retry_requested_at is None


def test_delivery_retry_asked_before_its_attempt_began_changes_nothing(
    tenant, receiver, settings
):
    # given: a retry noted for an earlier attempt, then an attempt that fails
    settings.WEBHOOK_RETRY_SCHEDULE = [3600]
    receiver.set_statuses([500])
    make_endpoint(tenant=tenant, url=receiver.url)
    _, [delivery] = make_event(tenant=tenant)
    Delivery.objects.filter(pk=delivery.pk).update(
        retry_requested_at=timezone.now() - timedelta(minutes=1)
    )
    # when
    decision = run_attempt(delivery)
    # then: the schedule as usual, and the request counts as answered
    assert decision.retry_in is None
    assert (delivery.next_attempt_at - timezone.now()).total_seconds() > 2000
    assert delivery.retry_requested_at is None
