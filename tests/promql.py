"""PromQL helpers for the tests of the dashboard and the alerting rules."""

import re

from prometheus_client import REGISTRY

from webhooks_project import metrics

# Series names a metric family exposes, by type (as PromQL sees them).
SERIES_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("", "_count", "_sum"),
}
# PromQL words that are not metric names (functions, aggregations, keywords).
PROMQL_WORDS = {
    "abs",
    "absent",
    "and",
    "avg",
    "avg_over_time",
    "bool",
    "bottomk",
    "by",
    "ceil",
    "clamp_max",
    "clamp_min",
    "count",
    "delta",
    "floor",
    "group_left",
    "group_right",
    "histogram_quantile",
    "ignoring",
    "increase",
    "irate",
    "max",
    "max_over_time",
    "min",
    "min_over_time",
    "offset",
    "on",
    "or",
    "rate",
    "round",
    "sum",
    "time",
    "topk",
    "unless",
    "vector",
    "without",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr
    )
    words = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr))
    return words - PROMQL_WORDS


def registry_series_names() -> set[str]:
    """Every series name the project's metrics expose, from the default registry."""
    assert metrics.DELIVERY_ATTEMPTS  # registered on import
    names = set()
    for family in REGISTRY.collect():
        suffixes = SERIES_SUFFIXES.get(family.type, ("",))
        names.update(family.name + suffix for suffix in suffixes)
    return names
