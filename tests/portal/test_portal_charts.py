"""The SVG chart of an endpoint's last 24 hours: shapes computed server-side."""

from datetime import UTC, datetime, timedelta

from portal.charts import BAR_HEIGHT, TOP, hourly_chart, nice_ceiling

SINCE = datetime(2026, 12, 6, 10, 20, tzinfo=UTC)
UNTIL = SINCE + timedelta(hours=24)


def bucket(hour: int, succeeded: int, failed: int, p50: float | None) -> dict:
    start = SINCE.replace(minute=0) + timedelta(hours=hour)
    return {
        "start": start,
        "attempts": succeeded + failed,
        "succeeded": succeeded,
        "failed": failed,
        "p50_ms": p50,
    }


def test_nice_ceiling_rounds_up_to_1_2_5():
    assert [nice_ceiling(v) for v in (0, 1, 3, 7, 12, 180, 501)] == [
        1,
        1,
        5,
        10,
        20,
        200,
        1000,
    ]


def test_chart_covers_every_hour_and_scales_to_the_busiest():
    # given: two busy hours, one empty between them, one outside the window
    series = [bucket(0, 8, 2, 120), bucket(2, 4, 0, 80), bucket(30, 1, 0, 10)]
    # when
    chart = hourly_chart(series, since=SINCE, until=UNTIL)
    # then: 25 hourly slots (10:00 to 10:20 next day), bars per kind
    assert not chart.empty
    kinds = [bar["kind"] for bar in chart.bars]
    assert kinds == ["ok", "bad", "ok"]
    ok, bad, second = chart.bars
    # the busiest hour (10 attempts) fills the plot; stacked, failed on top
    assert ok["height"] + bad["height"] == BAR_HEIGHT
    assert bad["y"] == TOP
    assert second["height"] == BAR_HEIGHT * 4 / 10
    assert "8 succeeded, 2 failed" in ok["title"]
    # the latency line breaks at the empty hour
    assert len(chart.points) == 2
    assert chart.polylines == []
    assert [label["text"] for label in chart.x_labels] == [
        "10:00",
        "16:00",
        "22:00",
        "04:00",
        "10:00",
    ]
    assert chart.line_ticks[-1]["text"] == "200 ms"


def test_chart_of_nothing_is_empty_with_axes():
    chart = hourly_chart([], since=SINCE, until=UNTIL)
    assert chart.empty
    assert chart.bars == [] and chart.points == []
    assert [tick["text"] for tick in chart.bar_ticks] == ["0", "1"]


def test_consecutive_hours_join_into_one_line():
    series = [bucket(hour, 1, 0, 100 + hour) for hour in range(3)]
    chart = hourly_chart(series, since=SINCE, until=UNTIL)
    assert len(chart.polylines) == 1
    assert len(chart.polylines[0].split()) == 3
