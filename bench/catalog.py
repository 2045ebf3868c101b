"""Ingest with a catalog schema vs without, in the same run.

Two event types of one tenant, each fanned out to FAN_OUT endpoints: one whose
catalog entry has a realistic schema (13 properties, a nested object, an array
of objects, required fields, patterns) that every posted payload follows, and
one without a schema. wrk posts the same payloads to each, alternated ROUNDS
times because this machine's speed drifts between minutes; the figure is each
type's mean and the ratio schema / without (target: >= 0.9).
"""

from bench import harness as h
from bench.alternated_ingest import alternated_rates
from bench.scenarios import FAN_OUT, Context

ROUNDS = 2
# Rows of the summary table (bench/report.py ROWS).
ROWS = [
    (
        "catalog_schema_events_per_s",
        "catalog: events accepted, payload checked against a schema",
        "/s",
        "catalog_plain_events_per_s",
        ">= 0.9 of without a schema",
        lambda v, r: r >= 0.9,
    ),
    ("catalog_plain_events_per_s", "catalog: same, no schema", "/s", None, "", None),
]
CHECKED, PLAIN = "bench.checked", "bench.plain"
MONEY = {"type": "string", "pattern": "^[0-9]+\\.[0-9]{2}$"}
# What bench/wrk/post.lua posts, described as a producer would.
ORDER_SCHEMA = {
    "type": "object",
    "required": ["order_id", "customer", "items", "total"],
    "properties": {
        "order_id": {"type": "integer", "minimum": 0},
        "thread": {"type": "integer"},
        "customer": {
            "type": "object",
            "required": ["id", "email"],
            "properties": {
                "id": {"type": "string", "pattern": "^cus_[0-9]+$"},
                "email": {"type": "string", "maxLength": 254},
                "name": {"type": "string"},
            },
            "additionalProperties": False,
        },
        "items": {
            "type": "array",
            "minItems": 1,
            "maxItems": 100,
            "items": {
                "type": "object",
                "required": ["sku", "qty", "price"],
                "properties": {
                    "sku": {"type": "string"},
                    "qty": {"type": "integer", "minimum": 1},
                    "price": MONEY,
                },
            },
        },
        "total": MONEY,
        "currency": {"type": "string", "enum": ["EUR", "USD", "GBP"]},
        "note": {"type": "string", "maxLength": 1000},
    },
}


def catalog(ctx: Context) -> dict:
    """Events accepted/s of a type with a schema and of one without."""
    from catalog.services import event_type_create

    args = ctx.args
    ctx.reset()
    world = h.World()
    for event_type in (CHECKED, PLAIN):
        world.add_receivers(FAN_OUT, event_type=event_type)
    world.stop()  # no worker runs: the deliveries only wait in the queue
    event_type_create(tenant=world.tenant, name=CHECKED, schema=ORDER_SCHEMA)
    event_type_create(tenant=world.tenant, name=PLAIN, description="no schema")
    with ctx.web() as web:
        rates = alternated_rates(
            web,
            key=world.key,
            args=args,
            order=[PLAIN, CHECKED] * ROUNDS,
            seconds=args.seconds,
        )
    checked = sum(rates[CHECKED]) / ROUNDS
    plain = sum(rates[PLAIN]) / ROUNDS
    print(f"    catalog: with schema / without = {checked / plain:.3f}", flush=True)
    return {"catalog_schema_events_per_s": checked, "catalog_plain_events_per_s": plain}
