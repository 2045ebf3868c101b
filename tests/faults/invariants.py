"""The invariant checker a fault run ends with, and its one-line summary."""

from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta

from django.db.models import Count, DurationField, ExpressionWrapper, F, Max
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
    max_to_final: float
    over_bound: int
    published: Published
    faults: Counter[str]
    elapsed: float = 0.0

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
            or self.over_bound
            or self.published.server_errors
            or self.published.given_up
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
