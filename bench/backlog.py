"""A backlog written straight to the database, its tasks published: what a drain
measures the workers on (the queue is full before a worker starts)."""

from datetime import timedelta

from bench.harness import parallel, settle_database


def backlog(
    *,
    tenant,
    event_types: list[str],
    count: int,
    threads: int = 4,
    keys: int | None = None,
) -> int:
    """Store `count` events (cycling types) with their deliveries; publish tasks.

    Written in bulk and published from a few threads: the queue is full before a
    worker starts, so the drain measures the workers alone. As ingestion does,
    the deliveries of endpoints that refuse everything (an open circuit) are
    written due when that ends and not published. Returns deliveries.

    `keys`: None, no ordering keys; k, event i has key `bench-key-{i % k}`,
    written as ingestion does (in the fingerprint; on the deliveries with one
    number of the ordering sequence an event, in event order).
    """
    from django.db import connection, transaction
    from django.utils import timezone

    from deliveries.flow import refusals
    from deliveries.models import Delivery, DeliveryStatus, Event
    from deliveries.publisher import Message
    from deliveries.services.enqueue import deliveries_publish
    from deliveries.services.ingest import request_fingerprint
    from subscriptions.selectors import endpoints_matching

    matching = {
        event_type: list(
            endpoints_matching(tenant_id=tenant.pk, event_type=event_type).values_list(
                "id", flat=True
            )
        )
        for event_type in event_types
    }
    ids: list = []
    written = 0
    refusals.forget()
    for start in range(0, count, 2000):
        now = timezone.now()
        lease = now + timedelta(seconds=3600)
        held = refusals.refusing_for_tenant(tenant.pk)
        events, deliveries = [], []
        stop = min(count, start + 2000)
        numbers = iter(_sequence_numbers(stop - start, keys))
        for index in range(start, stop):
            event_type = event_types[index % len(event_types)]
            payload = {"order_id": index, "total": "39.80"}
            key = None if keys is None else f"bench-key-{index % keys}"
            sequence = next(numbers)
            event = Event(
                tenant=tenant,
                event_type=event_type,
                payload=payload,
                request_hash=request_fingerprint(
                    event_type=event_type, payload=payload, ordering_key=key
                ),
                ordering_key=key,
            )
            events.append(event)
            deliveries += [
                Delivery(
                    tenant=tenant,
                    event=event,
                    endpoint_id=endpoint_id,
                    status=DeliveryStatus.PENDING,
                    next_attempt_at=held.get(str(endpoint_id), now),
                    lease_expires_at=held.get(str(endpoint_id), lease),
                    ordering_key=key,
                    sequence=sequence,
                )
                for endpoint_id in matching[event_type]
            ]
        with transaction.atomic():
            Event.objects.bulk_create(events)
            Delivery.objects.bulk_create(deliveries, batch_size=2000)
        written += len(deliveries)
        ids += [
            Message(str(d.id), str(d.endpoint_id))
            for d in deliveries
            if str(d.endpoint_id) not in held
        ]

    def publish(part: list) -> None:
        deliveries_publish(part)
        connection.close()

    parallel(publish, [ids[i::threads] for i in range(threads)])
    settle_database()
    return written


def _sequence_numbers(count: int, keys: int | None) -> list:
    """`count` new numbers of the ordering sequence, in order (None if unkeyed)."""
    from django.db import connection

    from deliveries.services.ordering import SEQUENCE

    if keys is None:
        return [None] * count
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT nextval('{SEQUENCE}') FROM generate_series(1, %s)",
            [count],
        )
        return sorted(row[0] for row in cursor.fetchall())
