"""Writes of the event-type catalog: create, update, delete.

Every write bumps the tenant's `catalog_version` in its own transaction. That
UPDATE also locks the tenant row, so the tenant's catalog writes run one after
another: the count against the limit holds, and a duplicate name is seen before
the insert (the unique constraint still answers, as a 400, if it is not).
"""

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F

from catalog.models import EventType
from catalog.schemas import compile_schema, instance_errors, json_size, schema_error
from deliveries.validation import payload_error
from subscriptions.matching import is_reserved_event_type, is_valid_event_type
from tenants.models import Tenant

# Types in one tenant's catalog: all of them fit one listing, one portal page and
# one endpoint form.
MAX_EVENT_TYPES_PER_TENANT = 1000
# An example is a payload: the same bound as a schema's size keeps listings small.
MAX_EXAMPLE_BYTES = 64 * 1024
UPDATABLE_FIELDS = ("description", "schema", "example", "deprecated")
DUPLICATE_NAME = "An event type with this name already exists."


@transaction.atomic
def event_type_create(
    *,
    tenant: Tenant,
    name: str,
    description: str = "",
    schema: dict | None = None,
    example: dict | None = None,
    deprecated: bool = False,
) -> EventType:
    """Add an event type to the tenant's catalog.

    Raises ValidationError (by field) for a bad or reserved name, a duplicate
    name, an invalid schema, an example the schema refuses, or past
    MAX_EVENT_TYPES_PER_TENANT.
    """
    event_type_name_check(name=name)
    _catalog_changed(tenant=tenant)
    if EventType.objects.filter(tenant=tenant, name=name).exists():
        raise ValidationError({"name": [DUPLICATE_NAME]})
    event_type_limit_check(tenant=tenant)
    event_type_content_check(schema=schema, example=example)
    try:
        with transaction.atomic():
            return EventType.objects.create(
                tenant=tenant,
                name=name,
                description=description,
                schema=schema,
                example=example,
                deprecated=deprecated,
            )
    except IntegrityError as exc:
        raise ValidationError({"name": [DUPLICATE_NAME]}) from exc


@transaction.atomic
def event_type_update(*, event_type: EventType, **changes) -> EventType:
    """Change some of UPDATABLE_FIELDS; the example is checked against the
    schema the entry has afterwards."""
    unknown = set(changes) - set(UPDATABLE_FIELDS)
    if unknown:
        raise TypeError(f"cannot update {sorted(unknown)}")
    _catalog_changed(tenant=event_type.tenant)
    if "schema" in changes or "example" in changes:
        event_type_content_check(
            schema=changes.get("schema", event_type.schema),
            example=changes.get("example", event_type.example),
            schema_changed="schema" in changes,
            example_changed="example" in changes,
        )
    for name, value in changes.items():
        setattr(event_type, name, value)
    event_type.save()
    return event_type


@transaction.atomic
def event_type_delete(*, event_type: EventType) -> None:
    """Remove an event type: its events publish unchecked from now on."""
    _catalog_changed(tenant=event_type.tenant)
    EventType.objects.filter(pk=event_type.pk).delete()


def _catalog_changed(*, tenant: Tenant) -> None:
    """Bump the version every process compares its compiled schemas with."""
    Tenant.objects.filter(pk=tenant.pk).update(catalog_version=F("catalog_version") + 1)


def event_type_limit_check(*, tenant: Tenant) -> None:
    """Raise ValidationError when the tenant has MAX_EVENT_TYPES_PER_TENANT types
    already."""
    limit = MAX_EVENT_TYPES_PER_TENANT
    if EventType.objects.filter(tenant=tenant).count() >= limit:
        raise ValidationError(
            f"A tenant can have at most {limit} event types; delete one first."
        )


def event_type_name_check(*, name: str) -> None:
    """Raise ValidationError for a malformed name or a platform one."""
    if not is_valid_event_type(name):
        raise ValidationError(
            {"name": ["Use 1-255 characters of letters, digits and _ . : -"]}
        )
    if is_reserved_event_type(name):
        raise ValidationError(
            {"name": ["Types starting with 'platform.' are the platform's own."]}
        )


def event_type_content_check(
    *,
    schema,
    example,
    schema_changed: bool = True,
    example_changed: bool = True,
) -> None:
    """The schema is valid, and the example is a payload that follows it."""
    if schema is not None and schema_changed:
        error = schema_error(schema)
        if error:
            raise ValidationError({"schema": [error]})
    if example is None:
        return
    if example_changed:
        error = _example_error(example)
        if error:
            raise ValidationError({"example": [error]})
    if schema is not None:
        errors = instance_errors(compile_schema(schema), example)
        if errors:
            raise ValidationError(
                {"example": [f"Does not follow the schema: {e}" for e in errors]}
            )


def _example_error(example) -> str | None:
    if not isinstance(example, dict):
        return "Must be a JSON object (an event payload), or null."
    if json_size(example) > MAX_EXAMPLE_BYTES:
        return f"Larger than {MAX_EXAMPLE_BYTES // 1024} KiB serialized."
    return payload_error(example)
