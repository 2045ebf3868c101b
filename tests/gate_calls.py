"""One attempt at a time through the gate, as the tests ask it."""

from deliveries.flow import gate


def enter(*, endpoint_id, rate_limit: int | None = None) -> gate.Pass:
    """Ask to attempt one delivery to this endpoint now."""
    return gate.enter_many([(endpoint_id, rate_limit)])[0]


def leave(
    *,
    endpoint_id,
    token: str,
    succeeded: bool,
    duration_ms: int,
    pause: float | None = None,
    probe: bool = False,
) -> str | None:
    """Report one attempt's outcome; the breaker state (None without Redis)."""
    report = gate.Report(endpoint_id, token, succeeded, duration_ms, pause, probe)
    return gate.leave_many([report])[0]
