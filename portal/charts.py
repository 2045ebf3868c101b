"""An endpoint's last hours as plain SVG shapes, computed here, drawn by a template.

No charting library and no script: the page's stylesheet colours the shapes
(classes, never inline styles, which the Content-Security-Policy refuses) and
each bar's <title> is its tooltip.
"""

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

HOUR = timedelta(hours=1)
WIDTH = 720
LEFT = 44  # room for the y-axis labels
RIGHT = 8
TOP = 8
BAR_HEIGHT = 120  # plot area of the attempts chart
LINE_HEIGHT = 70  # plot area of the latency chart
AXIS = 18  # room for the x-axis labels
LABEL_EVERY = 6  # hours between x-axis labels


@dataclass
class Chart:
    """Shapes of both charts (attempts per hour, p50 latency per hour)."""

    width: int = WIDTH
    left: int = LEFT
    label_x: int = LEFT - 6
    centre_x: float = (LEFT + WIDTH) / 2
    empty_y: float = TOP + BAR_HEIGHT / 2
    bars_height: int = TOP + BAR_HEIGHT + AXIS
    line_height: int = TOP + LINE_HEIGHT + AXIS
    bars: list[dict] = field(default_factory=list)
    points: list[dict] = field(default_factory=list)
    polylines: list[str] = field(default_factory=list)
    x_labels: list[dict] = field(default_factory=list)
    bar_ticks: list[dict] = field(default_factory=list)
    line_ticks: list[dict] = field(default_factory=list)
    empty: bool = True


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 5 x 10^n at or above `value` (1 for nothing)."""
    if value <= 0:
        return 1
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def hourly_chart(series: list[dict], *, since: datetime, until: datetime) -> Chart:
    """Lay out hourly buckets `{start, attempts, succeeded, failed, p50_ms}`.

    Hours missing from `series` are empty hours; the x axis always covers
    `since` to `until`, one slot an hour.
    """
    first = since.replace(minute=0, second=0, microsecond=0)
    slots = max(1, math.ceil((until - first) / HOUR))
    by_slot = {}
    for bucket in series:
        index = int((bucket["start"] - first) / HOUR)
        if 0 <= index < slots:
            by_slot[index] = bucket
    chart = Chart(empty=not any(b.get("attempts") for b in by_slot.values()))
    slot_width = (WIDTH - LEFT - RIGHT) / slots
    bar_top = nice_ceiling(
        max((b.get("attempts") or 0 for b in by_slot.values()), default=0)
    )
    latencies = [b["p50_ms"] for b in by_slot.values() if b.get("p50_ms") is not None]
    line_top = nice_ceiling(max(latencies, default=0))
    bar_base = TOP + BAR_HEIGHT
    line_base = TOP + LINE_HEIGHT
    run: list[str] = []
    for index in range(slots):
        start = first + index * HOUR
        x = LEFT + index * slot_width
        bucket = by_slot.get(index, {})
        succeeded = bucket.get("succeeded") or 0
        failed = bucket.get("failed") or 0
        label = (
            f"{start:%H:%M}-{start + HOUR:%H:%M} UTC: {succeeded} succeeded, "
            f"{failed} failed"
        )
        ok_height = BAR_HEIGHT * succeeded / bar_top
        bad_height = BAR_HEIGHT * failed / bar_top
        common = {"x": round(x + 1, 1), "width": round(max(slot_width - 2, 1), 1)}
        if succeeded:
            chart.bars.append(
                {
                    **common,
                    "y": round(bar_base - ok_height, 1),
                    "height": round(ok_height, 1),
                    "kind": "ok",
                    "title": label,
                }
            )
        if failed:
            chart.bars.append(
                {
                    **common,
                    "y": round(bar_base - ok_height - bad_height, 1),
                    "height": round(bad_height, 1),
                    "kind": "bad",
                    "title": label,
                }
            )
        p50 = bucket.get("p50_ms")
        centre = round(x + slot_width / 2, 1)
        if p50 is None:
            if len(run) > 1:
                chart.polylines.append(" ".join(run))
            run = []
        else:
            y = round(line_base - LINE_HEIGHT * p50 / line_top, 1)
            run.append(f"{centre},{y}")
            chart.points.append(
                {
                    "cx": centre,
                    "cy": y,
                    "title": f"{start:%H:%M} UTC: median {p50:g} ms",
                }
            )
        if index % LABEL_EVERY == 0:
            chart.x_labels.append({"x": round(x, 1), "text": f"{start:%H:%M}"})
    if len(run) > 1:
        chart.polylines.append(" ".join(run))
    # Attempts are whole: no gridline at half of one.
    chart.bar_ticks = [
        tick
        for tick in _ticks(bar_top, base=bar_base, height=BAR_HEIGHT, unit="")
        if "." not in tick["text"]
    ]
    chart.line_ticks = _ticks(line_top, base=line_base, height=LINE_HEIGHT, unit=" ms")
    return chart


def _ticks(top: float, *, base: int, height: int, unit: str) -> list[dict]:
    """Three y-axis gridlines: zero, half and the top."""
    return [
        {"y": round(base - height * share, 1), "text": f"{top * share:g}{unit}"}
        for share in (0, 0.5, 1)
    ]
