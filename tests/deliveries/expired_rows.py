"""Expired events, deliveries and attempts written fast, for the retention tests."""

from django.db import connection, transaction

from deliveries.models import DeliveryStatus

# A UUIDv7 of the moment `ts` (as the application makes them), random from `salt`.
UUID7 = (
    "(lpad(to_hex(floor(extract(epoch FROM {ts}) * 1000)::bigint), 12, '0') || '7'"
    " || substr(md5({salt}), 1, 3) || '8' || substr(md5({salt}), 4, 15))::uuid"
)


def seed_expired(
    tenant, endpoints, *, events: int, attempts_to=None, days_ago: int = 60
) -> None:
    """`events` events of `days_ago` days ago, each with a final delivery to
    every one of `endpoints` (1 % dead letters), and an attempt for each
    delivery to `attempts_to` (default: the first endpoint). Analyzed."""
    attempts_to = attempts_to or endpoints[0]
    event_id = UUID7.format(ts="ts", salt="i::text")
    delivery_id = UUID7.format(ts="e.created_at", salt="e.id::text || j")
    with transaction.atomic(), connection.cursor() as cursor:
        # Without triggers: no foreign-key check per row (valid by construction).
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(
            f"""
            INSERT INTO deliveries_event (id, tenant_id, event_type, payload,
                idempotency_key, request_hash, created_at)
            SELECT {event_id}, %(tenant)s, 'order.created',
                   jsonb_build_object('n', i), NULL, '', ts
            FROM (SELECT i, now() - %(days)s * interval '1 day'
                            + i * interval '1 ms' AS ts
                  FROM generate_series(1, %(events)s) AS i) AS s
            """,
            {"tenant": tenant.pk, "events": events, "days": days_ago},
        )
        cursor.execute(
            f"""
            INSERT INTO deliveries_delivery (id, tenant_id, event_id, endpoint_id,
                status, attempt_count, round_start, next_attempt_at,
                lease_expires_at, last_status_code, last_error, dead_letter_reason,
                succeeded_at, dead_lettered_at, created_at, updated_at)
            SELECT {delivery_id}, e.tenant_id, e.id, (%(endpoints)s::uuid[])[j],
                   CASE WHEN e.n %% 100 = 0 THEN %(dead)s ELSE %(ok)s END,
                   1, 0, NULL, NULL, 200, '', '', e.created_at, NULL,
                   e.created_at, e.created_at
            FROM (SELECT *, row_number() OVER () AS n FROM deliveries_event
                  WHERE tenant_id = %(tenant)s) AS e,
                 generate_series(1, %(fan_out)s) AS j
            """,
            {
                "tenant": tenant.pk,
                "endpoints": [str(endpoint.pk) for endpoint in endpoints],
                "fan_out": len(endpoints),
                "dead": DeliveryStatus.DEAD_LETTER,
                "ok": DeliveryStatus.SUCCEEDED,
            },
        )
        cursor.execute(
            """
            INSERT INTO deliveries_deliveryattempt (delivery_id, number, started_at,
                duration_ms, outcome, request_headers, response_status,
                response_headers, response_body, error)
            SELECT id, 1, created_at, 5, 'success', '{}', 200, '{}', '', ''
            FROM deliveries_delivery
            WHERE tenant_id = %(tenant)s AND endpoint_id = %(first)s
            """,
            {"tenant": tenant.pk, "first": attempts_to.pk},
        )
        cursor.execute("SET LOCAL session_replication_role = DEFAULT")
    with connection.cursor() as cursor:
        for table in (
            "deliveries_event",
            "deliveries_delivery",
            "deliveries_deliveryattempt",
        ):
            cursor.execute(f"ANALYZE {table}")
