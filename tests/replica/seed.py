"""Rows for the replica test, written through Django on the database it is given.

    DATABASE_URL=<primary> python -m tests.replica.seed   # prints their ids (JSON)

A tenant with an API key, a staff user with a session, an endpoint, an event, a
dead-lettered delivery of it and its one attempt. Made with the ORM, not through
ingestion: nothing is queued, so no worker or broker is involved. Run while the
replica's replay is paused, every one of them exists on the primary only.
"""

import json
import os
import uuid

SEEDED_TYPE = "order.created"


def seed() -> dict:
    """Write the rows; their ids, the API key and the session cookie."""
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.utils import timezone

    from deliveries.models import (
        AttemptOutcome,
        Delivery,
        DeliveryAttempt,
        DeliveryStatus,
        Event,
    )
    from tenants.services import tenant_create_with_key
    from tests.factories import make_endpoint

    now = timezone.now()
    issued = tenant_create_with_key(name=f"replica-{uuid.uuid4().hex[:8]}")
    tenant = issued.api_key.tenant
    # Events the test publishes (other types) match no endpoint: nothing queued.
    endpoint = make_endpoint(tenant=tenant, event_types=[SEEDED_TYPE])
    event = Event.objects.create(
        tenant=tenant, event_type=SEEDED_TYPE, payload={"n": 1}, request_hash=""
    )
    delivery = Delivery.objects.create(
        tenant=tenant,
        event=event,
        endpoint=endpoint,
        status=DeliveryStatus.DEAD_LETTER,
        attempt_count=1,
        last_status_code=500,
        dead_lettered_at=now,
    )
    attempt = DeliveryAttempt.objects.create(
        delivery=delivery,
        number=1,
        started_at=now,
        outcome=AttemptOutcome.HTTP_5XX,
        response_status=500,
    )
    staff = get_user_model().objects.create_superuser(
        f"ops-{uuid.uuid4().hex[:8]}", password=None
    )
    client = Client()
    client.force_login(staff)
    return {
        "api_key": issued.key,
        "cookie": f"{settings.SESSION_COOKIE_NAME}="
        f"{client.cookies[settings.SESSION_COOKIE_NAME].value}",
        "event": str(event.pk),
        "delivery": str(delivery.pk),
        "attempt": attempt.pk,
    }


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webhooks_project.settings")
    import django

    django.setup()
    print(json.dumps(seed()))
