"""What one POST came to: a status and response, or an error."""

import time
from dataclasses import dataclass, field

from deliveries.models import AttemptOutcome
from deliveries.retry import is_success


@dataclass
class TransportResult:
    """What one POST produced: a status and response, or an error."""

    outcome: str
    duration_ms: int
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    error: str = ""

    @property
    def succeeded(self) -> bool:
        """Whether the receiver accepted the delivery."""
        return self.outcome == AttemptOutcome.SUCCESS


def elapsed_ms(started: float) -> int:
    """Milliseconds since `started` (time.monotonic)."""
    return int((time.monotonic() - started) * 1000)


def answered(
    status: int, headers: dict[str, str], body: bytes, duration_ms: int
) -> TransportResult:
    """The result of a response: 2xx succeeds, anything else fails by class."""
    if is_success(status):
        outcome = AttemptOutcome.SUCCESS
    elif 400 <= status < 500:
        outcome = AttemptOutcome.HTTP_4XX
    elif 500 <= status < 600:
        outcome = AttemptOutcome.HTTP_5XX
    else:
        outcome = AttemptOutcome.HTTP_OTHER
    return TransportResult(
        outcome=outcome,
        duration_ms=duration_ms,
        status=status,
        headers=headers,
        body=body,
        error="" if outcome == AttemptOutcome.SUCCESS else f"HTTP {status}",
    )
