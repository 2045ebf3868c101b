"""Outbound HTTP: one POST to a checked address, returning a result, never raising.

No redirects, a connect timeout and a whole-exchange deadline, a capped body
read. `prepare` checks the destination against the address policy and pins the
connection to the checked address; libcurl sends it: `post` on the calling
thread, or a `Sender` (the delivery engine's) with every request of the process
in flight on one event loop thread.
"""

import threading

from deliveries.transport.exchange import Exchange, new_handle
from deliveries.transport.request import Request, lookup_started, prepare
from deliveries.transport.result import TransportResult
from deliveries.transport.sender import Sender

__all__ = ["Request", "Sender", "TransportResult", "lookup_started", "perform", "post"]

_local = threading.local()


def perform(request: Request) -> TransportResult:
    """Send a prepared request on this thread (its handle keeps connections alive)."""
    curl = getattr(_local, "curl", None)
    if curl is None:
        curl = _local.curl = new_handle()
    return Exchange(curl, request).perform()


def post(*, url: str, body: bytes, headers: dict[str, str]) -> TransportResult:
    """POST `body` to `url` under the address policy; never raises on failure."""
    prepared = prepare(url=url, body=body, headers=headers)
    if isinstance(prepared, TransportResult):
        return prepared
    return perform(prepared)
