"""The invariant checker a fault run ends with, and its one-line summary."""

from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from django.db.models import Count, DurationField, ExpressionWrapper, F, Max, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from deliveries.models import OPEN_STATUSES, Delivery, DeliveryStatus, Event

from .receivers import FaultReceiver


@dataclass
class Published:
    """What the producers saw: accepted events and every answer that was not."""

    accepted: dict[str, int] = field(default_factory=dict)  # event id -> fan-out
    answers: Counter[int] = field(default_factory=Counter)
    server_errors: int = 0  # 5xx other than 503
    refused: int = 0  # 503 while a service was away
    connection_errors: int = 0
    accepted_while_broker_down: int = 0
    given_up: int = 0  # never accepted within the producer's patience
    keyed_accepted: int = 0  # accepted events of a keyed stream (a line)
    rejected: int = 0  # keyed events answered a definite 4xx (not retried)


@dataclass(frozen=True)
class OrderViolation:
    """A first successful arrival below a counter its line had already delivered."""

    endpoint: str
    line: str
    counter: int
    after: int  # the highest counter of the line that arrived before it


@dataclass
class Summary:
    """The figures of a run; `ok` when every invariant holds."""

    events: int
    deliveries: int
    succeeded: int
    dead_letter: int
    lost: int
    stuck_past_lease: int
    missing_events: int
    fanout_mismatch: int
    missing_at_receiver: int
    attempts_mismatch: int
    duplicates: int
    bad_signatures: int
    keyed_requests: int
    order_violations: int
    max_to_final: float
    over_bound: int
    published: Published
    faults: Counter[str]
    elapsed: float = 0.0
    # The first violations, for the run's notes.
    order_evidence: list[OrderViolation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing accepted was lost and every record adds up."""
        return not (
            self.lost
            or self.stuck_past_lease
            or self.missing_events
            or self.fanout_mismatch
            or self.missing_at_receiver
            or self.attempts_mismatch
            or self.bad_signatures
            or self.order_violations
            or self.over_bound
            or self.published.server_errors
            or self.published.given_up
            or self.published.rejected
        )

    @property
    def duplicate_rate(self) -> float:
        """Duplicates per succeeded delivery."""
        return self.duplicates / self.succeeded if self.succeeded else 0.0

    def line(self) -> str:
        """The one summary line."""
        faults = ",".join(f"{name}:{n}" for name, n in sorted(self.faults.items()))
        return (
            f"fault suite {'PASSED' if self.ok else 'FAILED'}: "
            f"events={self.events} deliveries={self.deliveries} "
            f"succeeded={self.succeeded} dead_letter={self.dead_letter} "
            f"lost={self.lost} stuck_past_lease={self.stuck_past_lease} "
            f"missing_at_receiver={self.missing_at_receiver} "
            f"duplicates={self.duplicates} ({self.duplicate_rate:.3%}) "
            f"keyed_requests={self.keyed_requests} "
            f"order_violations={self.order_violations} "
            f"max_to_final={self.max_to_final:.1f}s over_bound={self.over_bound} "
            f"attempts_mismatch={self.attempts_mismatch} "
            f"missing_events={self.missing_events} "
            f"fanout_mismatch={self.fanout_mismatch} "
            f"api_5xx={self.published.server_errors} "
            f"api_503={self.published.refused} "
            f"api_unreachable={self.published.connection_errors} "
            f"accepted_while_broker_down={self.published.accepted_while_broker_down} "
            f"bad_signatures={self.bad_signatures} "
            f"faults={faults or 'none'} elapsed={self.elapsed:.0f}s"
        )


def open_deliveries() -> int:
    """Deliveries not yet in a final state."""
    return Delivery.objects.filter(status__in=OPEN_STATUSES).count()


def check(
    *,
    published: Published,
    receivers: dict[str, FaultReceiver],
    faults: Counter[str],
    final_bound: float,
) -> Summary:
    """Check every invariant against the database and the receivers' counts.

    `receivers` maps endpoint ids to their receivers; the database is the run's
    own, so every row in it belongs to this run.
    """
    now = timezone.now()
    accepted = published.accepted
    stored = {str(pk) for pk in Event.objects.values_list("pk", flat=True)}
    missing_events = len(set(accepted) - stored)
    fanout = dict(
        Delivery.objects.values_list("event_id")
        .annotate(n=Count("id"))
        .values_list("event_id", "n")
    )
    fanout_mismatch = _fanout_mismatch(accepted, fanout)
    statuses = Counter(
        dict(
            Delivery.objects.values_list("status")
            .annotate(n=Count("id"))
            .values_list("status", "n")
        )
    )
    open_rows = Delivery.objects.filter(status__in=OPEN_STATUSES)
    lost = open_rows.count()
    stuck = open_rows.filter(lease_expires_at__lt=now).count()
    missing_at_receiver = _missing_at_receiver(receivers)
    keyed = [
        (endpoint_id, line, counter)
        for endpoint_id, receiver in receivers.items()
        for line, counter in receiver.keyed_snapshot()
    ]
    violations = order_violations(keyed, excluded=_order_excluded())
    attempts_mismatch = (
        Delivery.objects.annotate(rows=Count("attempts"))
        .exclude(attempt_count=F("rows"))
        .count()
    )
    to_final = ExpressionWrapper(
        Coalesce("succeeded_at", "dead_lettered_at") - F("event__created_at"),
        output_field=DurationField(),
    )
    finals = Delivery.objects.exclude(status__in=OPEN_STATUSES).annotate(
        to_final=to_final
    )
    longest = finals.aggregate(longest=Max("to_final"))["longest"]
    over_bound = finals.filter(to_final__gt=timedelta(seconds=final_bound))
    return Summary(
        events=len(accepted),
        deliveries=sum(statuses.values()),
        succeeded=statuses[DeliveryStatus.SUCCEEDED],
        dead_letter=statuses[DeliveryStatus.DEAD_LETTER],
        lost=lost,
        stuck_past_lease=stuck,
        missing_events=missing_events,
        fanout_mismatch=fanout_mismatch,
        missing_at_receiver=missing_at_receiver,
        attempts_mismatch=attempts_mismatch,
        duplicates=sum(receiver.duplicates() for receiver in receivers.values()),
        bad_signatures=sum(r.bad_signatures for r in receivers.values()),
        keyed_requests=len(keyed),
        order_violations=len(violations),
        order_evidence=violations[:20],
        max_to_final=longest.total_seconds() if longest else 0.0,
        over_bound=over_bound.count(),
        published=published,
        faults=faults,
    )


def _fanout_mismatch(accepted: dict[str, int], fanout: dict) -> int:
    """Accepted events whose stored delivery rows differ from the announced fan-out."""
    by_id = {str(event_id): n for event_id, n in fanout.items()}
    return sum(1 for event_id, n in accepted.items() if by_id.get(event_id, 0) != n)


def _missing_at_receiver(receivers: dict[str, FaultReceiver]) -> int:
    """Succeeded deliveries that their endpoint's receiver never accepted."""
    missing = 0
    succeeded = Delivery.objects.filter(status=DeliveryStatus.SUCCEEDED).values_list(
        "endpoint_id", "event_id"
    )
    counts = {endpoint_id: r.snapshot() for endpoint_id, r in receivers.items()}
    for endpoint_id, event_id in succeeded.iterator(chunk_size=5000):
        if counts[str(endpoint_id)][str(event_id)] < 1:
            missing += 1
    return missing


def order_violations(
    arrivals: Iterable[tuple[str, str, int]],
    *,
    excluded: Collection[tuple[str, str, int]] = (),
) -> list[OrderViolation]:
    """Per (endpoint, line), first successful arrivals out of counter order.

    `arrivals` are (endpoint, line, counter) of keyed requests answered 2xx, each
    endpoint's in the order its receiver answered them. A counter that already
    arrived is a duplicate, not an arrival; `excluded` ones (a replayed or expired
    delivery, which the promise leaves out) are skipped. Each remaining arrival
    below the highest counter its line had already delivered is one violation.
    """
    highest: dict[tuple[str, str], int] = {}
    seen: set[tuple[str, str, int]] = set()
    violations = []
    for endpoint, line, counter in arrivals:
        arrival = (endpoint, line, counter)
        if arrival in seen or arrival in excluded:
            continue
        seen.add(arrival)
        before = highest.get((endpoint, line))
        if before is not None and counter < before:
            violations.append(OrderViolation(endpoint, line, counter, before))
        else:
            highest[(endpoint, line)] = counter
    return violations


def _order_excluded() -> set[tuple[str, str, int]]:
    """(endpoint, line, counter) of keyed deliveries that were replayed or expired.

    A replay starts a new round (round_start above 0; so does a receiver's
    429/503, which the fault receivers never answer): such a dead letter goes
    again after its line moved on, by design. The suite neither replays nor
    sets expiries, so this is empty unless those are added.
    """
    rows = Delivery.objects.filter(
        Q(round_start__gt=0) | Q(status=DeliveryStatus.EXPIRED),
        event__payload__has_key="line",
    ).values_list("endpoint_id", "event__payload__line", "event__payload__counter")
    return {(str(endpoint), str(line), int(n)) for endpoint, line, n in rows}
