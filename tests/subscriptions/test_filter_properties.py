"""Property tests: the compiled jsonpath, run by the real PostgreSQL, and the Python
reference evaluator agree on random payloads and filters; any JSON is either a
valid filter that PostgreSQL accepts or a list of messages, never an exception.

Each example is a batch of cases checked in one statement. Derandomized and
small by default; a longer random run:

    FILTER_EXAMPLES=2000 FILTER_RANDOM=1 bash scripts/test.sh \\
        tests/subscriptions/test_filter_properties.py
"""

import json
import os

import pytest
from django.db import connection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from subscriptions.filters import compile_filter, evaluate, filter_errors

EXAMPLES = int(os.environ.get("FILTER_EXAMPLES", "40"))
RANDOM = os.environ.get("FILTER_RANDOM", "") not in ("", "0")
BATCH = 25

PROPERTY_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not RANDOM,
    database=None,
    suppress_health_check=list(HealthCheck),
)

# A few keys, so that filters often name what payloads hold; with characters a
# jsonpath must quote.
KEYS = ["a", "b", "c", "é", "k y", 'q"', "$x", "\\", "😀"]
# Values where JSON, Python and PostgreSQL could disagree.
EDGE_SCALARS = [
    None,
    True,
    False,
    0,
    -0.0,
    0.0,
    1,
    1.0,
    -1,
    "1",
    "",
    " ",
    "a",
    "A",
    "é",
    "e\u0301",
    "😀",
    "\uffff",
    "\U0010ffff",
    2**53,
    2**53 + 1,
    float(2**53),
    10**23,
    1e23,
    -(10**40),
    1e-7,
    0.1,
    0.30000000000000004,
    1.7976931348623157e308,
    5e-324,
]
# Any Unicode but NUL and lone surrogates (which no payload can hold).
TEXT = st.text(
    alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\x00"),
    max_size=6,
)
scalars = st.one_of(
    st.sampled_from(EDGE_SCALARS),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
    st.booleans(),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | TEXT, inner, max_size=4)
    ),
    max_leaves=12,
)
payloads = st.dictionaries(st.sampled_from(KEYS), json_values, max_size=5)

# A path cannot start with "$" (that is an operator's name).
paths = st.tuples(
    st.sampled_from([key for key in KEYS if not key.startswith("$")]),
    st.lists(st.sampled_from(KEYS), max_size=2),
).map(lambda parts: ".".join([parts[0], *parts[1]]))
orderable = st.one_of(
    st.sampled_from([v for v in EDGE_SCALARS if isinstance(v, int | float | str)]),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
).filter(lambda value: not isinstance(value, bool))
value_lists = st.lists(scalars, min_size=1, max_size=4)


@st.composite
def operator_objects(draw):
    """1-3 operators with operands of the kinds each takes."""
    names = draw(
        st.lists(
            st.sampled_from(
                ["$eq", "$neq", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists"]
            ),
            min_size=1,
            max_size=3,
            unique=True,
        )
    )
    chosen = {}
    for name in names:
        if name in ("$eq", "$neq"):
            chosen[name] = draw(scalars)
        elif name in ("$in", "$nin"):
            chosen[name] = draw(value_lists)
        elif name == "$exists":
            chosen[name] = draw(st.booleans())
        else:
            chosen[name] = draw(orderable)
    return chosen


conditions = st.dictionaries(paths, scalars | operator_objects(), max_size=3)
filters = st.recursive(
    conditions,
    lambda inner: st.builds(
        lambda base, combinator, parts: {**base, combinator: parts},
        conditions,
        st.sampled_from(["$and", "$or"]),
        st.lists(inner, min_size=1, max_size=3),
    ),
    max_leaves=6,
).filter(lambda value: not filter_errors(value))


def postgres_answers(cases) -> list:
    """`payload @@ compiled` for each (payload, filter), in one statement."""
    compiled = [compile_filter(filter_value) or "true" for _, filter_value in cases]
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.payload::jsonb @@ c.path::jsonpath
            FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY
                AS c(payload, path, n)
            ORDER BY c.n
            """,
            [
                [json.dumps(payload, ensure_ascii=False) for payload, _ in cases],
                compiled,
            ],
        )
        return [row[0] for row in cursor.fetchall()]


@pytest.mark.django_db
@PROPERTY_SETTINGS
@given(st.lists(st.tuples(payloads, filters), min_size=BATCH, max_size=BATCH))
def test_compiled_filter_and_reference_evaluator_agree(cases):
    expected = [evaluate(filter_value, payload) for payload, filter_value in cases]
    # then: the same answers, and never NULL (which would drop a delivery)
    assert postgres_answers(cases) == expected


# Any JSON object with keys that look like operators or paths.
ANY_KEYS = st.sampled_from(
    ["$and", "$or", "$eq", "$neq", "$gt", "$in", "$nin", "$exists", "$x", "a", "a.b"]
) | st.text(max_size=4)
any_objects = st.recursive(
    scalars | st.floats(),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(ANY_KEYS, inner, max_size=3)
    ),
    max_leaves=10,
)


@pytest.mark.django_db
@PROPERTY_SETTINGS
@given(st.lists(any_objects, min_size=BATCH, max_size=BATCH))
def test_any_json_is_a_valid_filter_or_messages(values):
    valid = []
    for value in values:
        errors = filter_errors(value)
        assert isinstance(errors, list)
        assert all(isinstance(error, str) and error for error in errors)
        if errors:
            # each message can be sent in a UTF-8 JSON body
            json.dumps(errors, ensure_ascii=False).encode()
        else:
            valid.append(value)
    # every valid one compiles to a jsonpath PostgreSQL accepts and agrees on
    cases = [({"a": {"b": 1}, "$x": [1, "a"]}, value) for value in valid]
    assert postgres_answers(cases) == [evaluate(v, p) for p, v in cases]
