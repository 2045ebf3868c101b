"""Model instances from hand-written SQL, as the ORM itself would build them.

The hot paths (claiming deliveries, authenticating API keys) select several
models' columns in one statement; these helpers name the columns and turn a row
back into instances with the fields' own converters.
"""

from django.db import connection


def columns(model, alias: str) -> str:
    """Every concrete column of `model`, qualified by `alias`, in field order."""
    return ", ".join(f'{alias}."{f.column}"' for f in model._meta.concrete_fields)


def width(model) -> int:
    """How many columns `columns(model, ...)` selects."""
    return len(model._meta.concrete_fields)


def instance(model, values):
    """A `model` instance from raw column values (in `columns` order)."""
    fields = model._meta.concrete_fields
    converted = []
    for field, value in zip(fields, values, strict=True):
        for converter in field.get_db_converters(connection):
            value = converter(value, field, connection)
        converted.append(value)
    return model.from_db(connection.alias, [f.attname for f in fields], converted)
