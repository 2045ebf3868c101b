"""Model instances from hand-written SQL, as the ORM itself would build them.

The hot paths (claiming deliveries, authenticating API keys) select several
models' columns in one statement; these helpers name the columns and turn a row
back into instances with the fields' own converters.
"""

import contextlib
import functools

import psycopg
from django.db import connection
from django.db.models.base import ModelState
from psycopg.pq import Format

# psycopg's own timestamptz loader (C, with psycopg[binary]). Django installs a
# Python subclass on its connections that only sets the tzinfo the session's
# UTC already gives; it parses an eighth as fast.
_TIMESTAMPTZ = psycopg.adapters.types["timestamptz"].oid
_TIMESTAMPTZ_LOADER = psycopg.adapters.get_loader(_TIMESTAMPTZ, Format.TEXT)


def columns(model, alias: str) -> str:
    """Every concrete column of `model`, qualified by `alias`, in field order."""
    return ", ".join(f'{alias}."{f.column}"' for f in model._meta.concrete_fields)


def width(model) -> int:
    """How many columns `columns(model, ...)` selects."""
    return len(model._meta.concrete_fields)


def not_by_index(condition: str) -> str:
    """`condition` as a filter PostgreSQL checks row by row, never through an index.

    For statements that find their rows by primary key and then check a status:
    the statistics say few rows are in progress or pending, so the planner would
    rather scan a status index (or a partial index on open deliveries) than look
    each id up. But such an index keeps an entry for every row version not yet
    vacuumed, and every status change writes one: between vacuums the scan walks
    them all. After 80,000 deliveries with no vacuum a recording statement took
    23-160 ms that way, against well under 1 ms through the primary
    key. An `IS TRUE` test is no index condition, so the key is the only way in.
    """
    return f"({condition}) IS TRUE"


@functools.cache
def _loading(model) -> tuple[tuple[str, ...], tuple]:
    """The attribute names of `model`'s columns, and the fields that convert.

    The converters are PostgreSQL's: the project has no other database.
    """
    fields = model._meta.concrete_fields
    converting = tuple(
        (index, field, converters)
        for index, field in enumerate(fields)
        if (converters := field.get_db_converters(connection))
    )
    return tuple(f.attname for f in fields), converting


def uuid_array(ids) -> str:
    """One PostgreSQL array literal of `ids`, for a `%s::uuid[]` parameter.

    psycopg binds a list element by element (and quotes each with a regex): for
    the hundreds of ids of a batch one string is far cheaper.
    """
    return "{" + ",".join(str(i) for i in ids) + "}"


def timestamptz_array(values) -> str:
    """One PostgreSQL array literal of aware datetimes, for `%s::timestamptz[]`."""
    return "{" + ",".join(value.isoformat() for value in values) + "}"


@contextlib.contextmanager
def prepared(sql: str, params):
    """Run one hot statement prepared on the server; yield the psycopg cursor.

    Django's psycopg cursors bind parameters on the client (the query text is
    parsed and planned again on every call, each value quoted in Python).
    This one binds on the server and prepares the statement once per database
    connection, and parses timestamptz columns with psycopg's C loader (above:
    the session runs in UTC, so the values are the same aware datetimes).
    Errors come out as Django's (OperationalError for an outage), and the
    statement joins the current transaction like any other.
    """
    connection.ensure_connection()
    with (
        connection.wrap_database_errors,
        psycopg.Cursor(connection.connection) as cursor,
    ):
        cursor.adapters.register_loader(_TIMESTAMPTZ, _TIMESTAMPTZ_LOADER)
        cursor.execute(sql, params, prepare=True)
        yield cursor


def instance(model, values, *, db: str | None = None):
    """A `model` instance from raw column values (in `columns` order).

    What `Model.from_db` makes, without `Model.__init__`'s per-field work: every
    concrete field is loaded, so the attributes are set as a whole (the claim
    builds three instances per delivery, where `__init__` was most of its CPU).
    The models built here have no pre_init/post_init receivers.
    """
    attnames, converting = _loading(model)
    if converting:
        values = list(values)
        for index, field, converters in converting:
            value = values[index]
            for converter in converters:
                value = converter(value, field, connection)
            values[index] = value
    obj = model.__new__(model)
    state = obj._state = ModelState()
    state.adding, state.db = False, db or connection.alias
    obj.__dict__.update(zip(attnames, values, strict=True))
    return obj
