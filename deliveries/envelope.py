"""What a receiver gets: the JSON envelope and the signed headers."""

import json
import time

from deliveries.models import Event
from deliveries.signing import sign
from webhooks_project.version import USER_AGENT

# Headers the platform sets; an endpoint's own headers never replace them.
RESERVED_HEADERS = frozenset(
    {
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "content-type",
        "content-length",
        "user-agent",
        "host",
        "connection",
        "transfer-encoding",
        "accept-encoding",
        "accept",
        "expect",
    }
)


def envelope_body(event: Event) -> bytes:
    """The request body: id, type, timestamp (ISO 8601 UTC) and data.

    Events never change: the body is built once per event instance, which the
    deliveries of one batch share (one per endpoint).
    """
    body = event.__dict__.get("_envelope_body")
    if body is None:
        timestamp = event.created_at.isoformat(timespec="milliseconds").replace(
            "+00:00", "Z"
        )
        envelope = {
            "id": str(event.id),
            "type": event.event_type,
            "timestamp": timestamp,
            "data": event.payload,
        }
        body = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()
        event.__dict__["_envelope_body"] = body
    return body


def signed_headers(
    *,
    event_id: str,
    body: bytes,
    secrets: list[str],
    extra: dict[str, str] | None = None,
    timestamp: int | None = None,
) -> dict[str, str]:
    """Headers for one attempt: the endpoint's own first, then the signed ones."""
    now = int(time.time()) if timestamp is None else timestamp
    headers = {
        name: value
        for name, value in (extra or {}).items()
        if name.lower() not in RESERVED_HEADERS
    }
    headers.update(
        {
            "webhook-id": event_id,
            "webhook-timestamp": str(now),
            "webhook-signature": sign(
                msg_id=event_id, timestamp=now, body=body, secrets=secrets
            ),
            "content-type": "application/json",
            "user-agent": USER_AGENT,
        }
    )
    return headers
