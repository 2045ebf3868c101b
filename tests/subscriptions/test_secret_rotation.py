"""At most two signing secrets: rotation ends older graces, expired ones never load.

A rotation while an older secret is still in its grace ends that older one at once,
the claim loads only secrets that still sign (filtered in SQL), and the hourly
cleanup deletes the expired rows.
"""

from datetime import timedelta

from django.utils import timezone

from deliveries.services.attempts import delivery_run
from deliveries.services.claim import deliveries_claim
from deliveries.signing import verify
from deliveries.tasks import cleanup_attempt_logs
from subscriptions.models import Endpoint, EndpointSecret
from subscriptions.services import expired_secrets_delete
from tests.factories import make_endpoint, make_event


def test_rotating_many_times_quickly_leaves_two_secrets(api, tenant, receiver):
    # given
    created = api.post("/api/v1/endpoints", {"url": receiver.url}, format="json")
    endpoint_id = created.json()["id"]
    # when: ten rotations within the grace of each other
    rotated = [
        api.post(f"/api/v1/endpoints/{endpoint_id}/secret/rotate").json()["secret"]
        for _ in range(10)
    ]
    # then: the newest and the one it replaced, nothing older
    endpoint = Endpoint.objects.get(pk=endpoint_id)
    assert endpoint.active_secrets() == [rotated[-1], rotated[-2]]
    assert EndpointSecret.objects.filter(endpoint=endpoint).count() == 2
    # the claim loads the two of them
    _, [delivery] = make_event(tenant=tenant)
    [claimed] = deliveries_claim(delivery_ids=[delivery.pk])
    assert len(claimed.endpoint.secrets.all()) == 2
    # and a real delivery carries two signatures, each verifying with its secret
    _, [delivery] = make_event(tenant=tenant)
    delivery_run(delivery_id=delivery.pk)
    [request] = receiver.received
    signatures = request.header("webhook-signature").split(" ")
    assert len(signatures) == 2
    for secret in rotated[-2:]:
        assert verify(secret=secret, headers=request.headers, body=request.body), secret


def test_claim_does_not_load_expired_secrets(tenant):
    # given: an endpoint with a secret whose grace ended (not yet deleted)
    endpoint = make_endpoint(tenant=tenant)
    EndpointSecret.objects.create(
        endpoint=endpoint,
        secret="whsec_" + "A" * 32,
        created_at=timezone.now() - timedelta(days=2),
        expires_at=timezone.now() - timedelta(seconds=1),
    )
    _, [delivery] = make_event(tenant=tenant)
    # when
    [claimed] = deliveries_claim(delivery_ids=[delivery.pk])
    # then: only the current one came back from the database
    [loaded] = claimed.endpoint.secrets.all()
    assert loaded.expires_at is None


def test_cleanup_deletes_expired_secrets_only(tenant):
    endpoint = make_endpoint(tenant=tenant)
    now = timezone.now()
    expired = EndpointSecret.objects.create(
        endpoint=endpoint, secret="whsec_" + "B" * 32, expires_at=now
    )
    in_grace = make_endpoint(tenant=tenant)
    EndpointSecret.objects.filter(endpoint=in_grace).update(
        expires_at=now + timedelta(hours=1)
    )
    assert expired_secrets_delete() == 1
    assert not EndpointSecret.objects.filter(pk=expired.pk).exists()
    assert EndpointSecret.objects.filter(endpoint=in_grace).exists()
    assert EndpointSecret.objects.filter(endpoint=endpoint).count() == 1
    # the hourly task does it too
    EndpointSecret.objects.filter(endpoint=in_grace).update(expires_at=now)
    cleanup_attempt_logs()
    assert not EndpointSecret.objects.filter(endpoint=in_grace).exists()
