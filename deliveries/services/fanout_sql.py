"""The fan-out's SQL: which endpoints an event goes to, and the rows it writes.

Single-event and batch ingestion (deliveries.services.ingest and .ingest_batch)
build their one statement from these fragments, so that a matching rule is
written once for both; operational events (.platform_events) write their
deliveries with the same INSERT.
"""

from deliveries.leases import waiting_sql
from deliveries.models import Delivery
from subscriptions.matching import payload_filter_sql
from webhooks_project.ids import UUID7_SQL


def endpoint_matches_sql(*, patterns: str, payload: str, consumer: str = "") -> str:
    """The condition for endpoint `ep` to receive an event (SQL for a WHERE).

    The same endpoints as subscriptions.selectors.endpoints_matching: the
    tenant's (`%(tenant)s`), active, of the event's consumer (`consumer`: an
    `AND ...` condition, empty for every consumer), and wanting every type (no
    filter) or one of the patterns the type matches (`patterns`: SQL of a
    varchar[], subscriptions.matching.patterns_matching), and whose payload
    filter (if any) passes `payload`, the event's payload (SQL of a jsonb).
    """
    types = f"""(ep."event_types" = '{{}}' OR ep."event_types" && {patterns})"""
    passes = payload_filter_sql(endpoint="ep", payload=payload, wanted=types)
    return f"""ep."tenant_id" = %(tenant)s AND ep."is_active"
              {consumer}
              AND {types}
              AND {passes}"""


def fanout_insert_sql(
    *, source: str, condition: str, ordering_key: str = "NULL", sequence: str = "NULL"
) -> str:
    """INSERT of one pending Delivery per (event `ev`, endpoint `ep`) that matches.

    `source` is the FROM list that names `ev` (with its "id" and "expires_at",
    which the delivery copies) and `ep`, and `condition` the WHERE
    (endpoint_matches_sql). `ordering_key` and `sequence` are SQL of the
    event's key and its number in acceptance order
    (deliveries.services.ordering.sequence_sql), NULL for unkeyed events. A
    delivery is its endpoint's tenant's. Endpoints refusing every delivery
    (`%(held)s`, until `%(until)s`) get theirs due when that ends, with a
    waiting lease and no message: RETURNING's `postponed` says which. Every
    other value is a parameter: `%(pending)s`, `%(now)s`, `%(lease)s`
    (deliveries.leases.queued_lease of now).
    """
    delivery = Delivery._meta.db_table
    return f"""
            INSERT INTO "{delivery}" ("id", "tenant_id", "event_id", "endpoint_id",
                "status", "attempt_count", "round_start", "next_attempt_at",
                "lease_expires_at", "last_status_code", "last_error",
                "dead_letter_reason", "succeeded_at", "dead_lettered_at",
                "expires_at", "ordering_key", "sequence", "created_at", "updated_at")
            SELECT {UUID7_SQL}, ep."tenant_id", ev."id", ep."id", %(pending)s, 0, 0,
                COALESCE(h.until, %(now)s), COALESCE(h.until, %(lease)s), NULL, '',
                '', NULL, NULL, ev."expires_at", {ordering_key}, {sequence},
                %(now)s, %(now)s
            FROM {source}
            LEFT JOIN unnest(%(held)s::uuid[], %(until)s::timestamptz[])
                AS h(endpoint_id, until) ON h.endpoint_id = ep."id"
            WHERE {condition}
            -- postponed (a refusing endpoint's): a waiting lease, no message
            RETURNING "id", "endpoint_id", "event_id", {waiting_sql()} AS postponed
    """  # noqa: S608
