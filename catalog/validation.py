"""Payloads checked at publish against their type's schema, with the compiled
schemas cached per process.

A cached validator is valid for one version of its tenant's catalog:
`Tenant.catalog_version` is bumped in the transaction of every catalog change,
and the tenant row comes with the API key on every request, so each process sees
a change on its next request without asking anyone. A tenant that never had a
catalog (version 0) costs nothing: no query, no lookup.
"""

import logging
import threading
from collections import OrderedDict
from typing import NamedTuple

from catalog.schemas import SchemaInvalid, compile_schema, instance_errors
from catalog.selectors import event_type_schema
from tenants.models import Tenant

logger = logging.getLogger(__name__)

# (tenant, event type) pairs whose compiled schema (or its absence) a process
# keeps, least recently used first out: a few KiB each.
CACHE_SIZE = 2048


class _Cached(NamedTuple):
    version: int
    validator: object | None


class _ValidatorCache:
    """A bounded, thread-safe LRU of compiled schemas by (tenant, event type)."""

    def __init__(self, size: int):
        self._size = size
        self._entries: OrderedDict[tuple, _Cached] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple, version: int) -> _Cached | None:
        with self._lock:
            cached = self._entries.get(key)
            if cached is None or cached.version != version:
                return None
            self._entries.move_to_end(key)
            return cached

    def put(self, key: tuple, cached: _Cached) -> None:
        with self._lock:
            self._entries[key] = cached
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


_cache = _ValidatorCache(CACHE_SIZE)


def payload_errors(*, tenant: Tenant, event_type: str, payload) -> list[str]:
    """Why `payload` breaks the schema of `event_type` in `tenant`'s catalog.

    Empty when the type has no entry, no schema, or the payload follows it.
    Each message starts with the failing place in the payload as a JSONPath
    (`catalog.schemas.instance_errors`).
    """
    if not tenant.catalog_version:
        return []
    validator = _validator(tenant=tenant, event_type=event_type)
    if validator is None or validator.is_valid(payload):
        return []
    return instance_errors(validator, payload)


def _validator(*, tenant: Tenant, event_type: str):
    """The compiled schema of the type for the tenant's current catalog, or None."""
    key = (tenant.pk, event_type)
    cached = _cache.get(key, tenant.catalog_version)
    if cached is not None:
        return cached.validator
    schema = event_type_schema(tenant=tenant, name=event_type)
    validator = None
    if schema is not None:
        try:
            validator = compile_schema(schema)
        except SchemaInvalid:
            # Checked when stored: only a change of the validator library could
            # get here. Publishing goes on unchecked rather than refusing all.
            logger.exception("stored schema of %s no longer compiles", event_type)
    _cache.put(key, _Cached(tenant.catalog_version, validator))
    return validator


def cache_clear() -> None:
    """Forget every compiled schema of this process (tests)."""
    _cache.clear()
