"""Payload filters: their documented semantics, in Python and in PostgreSQL alike,
and the messages of malformed ones."""

import json

import pytest
from django.db import connection

from subscriptions.filters import (
    MAX_CONDITIONS,
    MAX_FILTER_BYTES,
    MAX_IN_VALUES,
    MAX_NESTING,
    MAX_PATH_KEYS,
    FilterError,
    compile_filter,
    evaluate,
    filter_errors,
)


def matches_in_postgres(filter_value, payload) -> bool | None:
    """What the fan-out's `payload @@ compiled` answers (None for SQL NULL)."""
    compiled = compile_filter(filter_value)
    if compiled is None:
        return True
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT %s::jsonb @@ %s::jsonpath",
            [json.dumps(payload, ensure_ascii=False), compiled],
        )
        return cursor.fetchone()[0]


ORDER = {
    "customer": {"country": "DE", "vip": True, "tier": None},
    "total": 150,
    "ratio": 0.25,
    "code": "1",
    "tags": ["new", "gift", 7, ["nested"]],
    "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-2", "qty": 1}, "loose"],
    "when": "2026-12-07T10:00:00Z",
    "weird.key": "dotted",
    'q"uo\\te ä😀': "odd",
    "": "empty",
}

# (filter, expected on ORDER): each documented rule of docs/filters.md.
SEMANTICS = [
    # No filter, or an empty one: everything.
    (None, True),
    ({}, True),
    # Literals are equality; all keys of an object must hold.
    ({"customer.country": "DE"}, True),
    ({"customer.country": "DE", "total": 151}, False),
    ({"customer.country": {"$eq": "DE"}}, True),
    # Types are strict: "1" is not 1, true is not 1, 1 is 1.0.
    ({"code": 1}, False),
    ({"code": "1"}, True),
    ({"customer.vip": 1}, False),
    ({"customer.vip": True}, True),
    ({"total": 150.0}, True),
    ({"total": {"$in": ["150", True]}}, False),
    # null is a value: it matches an explicit null only, not a missing key.
    ({"customer.tier": None}, True),
    ({"customer.missing": None}, False),
    ({"customer.tier": {"$exists": True}}, True),
    ({"customer.country": {"$neq": None}}, True),
    # A missing key matches no comparison, and every negation.
    ({"nope": {"$gt": 0}}, False),
    ({"nope": {"$neq": "x"}}, True),
    ({"nope": {"$nin": ["x"]}}, True),
    ({"nope": {"$exists": False}}, True),
    ({"nope": {"$exists": True}}, False),
    ({"nope": {"$neq": "x", "$exists": True}}, False),
    # A comparison against another type is false, so its negation is true.
    ({"total": {"$neq": "150"}}, True),
    ({"code": {"$gt": 0}}, False),
    # Ordering: numbers by value, strings by Unicode code points.
    ({"total": {"$gt": 100, "$lte": 150}}, True),
    ({"total": {"$gt": 150}}, False),
    ({"ratio": {"$lt": 0.3, "$gte": 0.25}}, True),
    ({"when": {"$gte": "2026-12-01", "$lt": "2027"}}, True),
    ({"customer.country": {"$gt": "Z"}}, False),  # "D" < "Z"
    ({"customer.country": {"$lt": "d"}}, True),  # upper case sorts first
    # Arrays: a comparison matches when any element does (one level).
    ({"tags": "gift"}, True),
    ({"tags": 7}, True),
    ({"tags": {"$gt": 5}}, True),
    ({"tags": {"$in": ["old", "new"]}}, True),
    ({"tags": {"$neq": "gift"}}, False),
    ({"tags": {"$nin": ["old"]}}, True),
    ({"tags": "nested"}, False),  # an array in the array is not looked into
    # A path steps into the objects of an array.
    ({"items.sku": "B-2"}, True),
    ({"items.qty": {"$gt": 1}}, True),
    ({"items.qty": {"$gt": 2}}, False),
    # Keys with special characters are matched as they are.
    ({'q"uo\\te ä😀': "odd"}, True),
    # $and / $or.
    ({"$or": [{"total": 1}, {"customer.country": "DE"}]}, True),
    ({"$or": [{"total": 1}, {"customer.country": "FR"}]}, False),
    ({"$and": [{"total": 150}, {"$or": [{"tags": "x"}, {"tags": "new"}]}]}, True),
    ({"$and": [{"total": 150}, {"customer.country": "FR"}]}, False),
    ({"$or": [{}, {"total": 1}]}, True),
    ({"$and": [{}, {"total": 1}]}, False),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("filter_value", "expected"), SEMANTICS)
def test_filter_semantics_hold_in_python_and_postgresql(filter_value, expected):
    assert evaluate(filter_value, ORDER) is expected
    assert matches_in_postgres(filter_value, ORDER) is expected


@pytest.mark.django_db
@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"total": None},
        {"total": {"nested": 1}},
        {"total": [[150]]},
        {"total": "a string"},
        {"total": [None, True, "x", {}, []]},
        {"total": 10**40},
        {"total": -1e300},
    ],
)
def test_filter_never_answers_null_whatever_the_payload(payload):
    # given: every operator, on a value of every odd shape
    filter_value = {
        "total": {
            "$eq": 1,
            "$neq": 2,
            "$gt": 0,
            "$gte": "a",
            "$lt": 10,
            "$lte": 1.5,
            "$in": [1, "1", None, False],
            "$nin": [3],
        },
        "$or": [{"total.x": {"$exists": True}}, {"total": {"$exists": False}}],
    }
    # then: true or false (never NULL, which would drop the delivery), as in Python
    assert matches_in_postgres(filter_value, payload) is evaluate(filter_value, payload)


def test_empty_filter_compiles_to_nothing():
    assert compile_filter(None) is None
    assert compile_filter({}) is None
    assert compile_filter({"$or": [{}, {"a": 1}]}) is None


def test_compiled_filter_quotes_every_key():
    compiled = compile_filter({'a".b': 1})
    assert compiled.startswith('exists($."a\\""."b" ? ')


@pytest.mark.parametrize(
    ("filter_value", "message"),
    [
        ([1], "filter: must be a JSON object of conditions (null: no filter)."),
        ("x", "filter: must be a JSON object of conditions (null: no filter)."),
        ({"a": [1]}, 'filter["a"]: a list is not a value to compare with'),
        ({"a": {}}, 'filter["a"]: give at least one operator'),
        ({"a": {"b": 1}}, 'filter["a"]["b"]: not an operator'),
        ({"a": {"b": 1}}, 'dotted path: "a.b"'),
        ({"a": {"$regex": "x"}}, 'filter["a"]["$regex"]: unknown operator'),
        ({"$not": {"a": 1}}, 'filter["$not"]: unknown operator'),
        ({"a": {"$gt": True}}, 'filter["a"]["$gt"]: takes a number or a string'),
        ({"a": {"$lte": None}}, 'filter["a"]["$lte"]: takes a number or a string'),
        ({"a": {"$eq": {"x": 1}}}, 'filter["a"]["$eq"]: takes a string, a number'),
        ({"a": {"$in": []}}, 'filter["a"]["$in"]: takes a list of 1 to'),
        ({"a": {"$in": "x"}}, 'filter["a"]["$in"]: takes a list of 1 to'),
        ({"a": {"$nin": [1, [2]]}}, 'filter["a"]["$nin"][1]: takes a string'),
        ({"a": {"$exists": 1}}, 'filter["a"]["$exists"]: takes true or false.'),
        ({"a..b": 1}, 'filter["a..b"]: a dotted path cannot have an empty key'),
        ({".a": 1}, "cannot have an empty key"),
        ({"": 1}, "cannot have an empty key"),
        ({"a": "x\x00"}, 'filter["a"]: cannot contain the NUL character'),
        ({"a\x00": 1}, "cannot contain the NUL character"),
        ({"a": "\ud800"}, 'filter["a"]: cannot contain a lone surrogate'),
        ({"a": float("nan")}, 'filter["a"]: nan is not a JSON number.'),
        ({"a": float("inf")}, 'filter["a"]: inf is not a JSON number.'),
        ({"$or": []}, 'filter["$or"]: takes a non-empty list'),
        ({"$and": {"a": 1}}, 'filter["$and"]: takes a non-empty list'),
        ({"$or": [{"a": 1}, 2]}, 'filter["$or"][1]: must be a JSON object'),
        (
            {"$or": [{"x": {"$gt": []}}]},
            'filter["$or"][0]["x"]["$gt"]: takes a number or a string, not a list.',
        ),
    ],
)
def test_malformed_filter_is_named_with_its_place(filter_value, message):
    errors = filter_errors(filter_value)
    assert any(message in error for error in errors), errors
    with pytest.raises(FilterError):
        compile_filter(filter_value)


def test_filter_limits_are_enforced():
    nested = {"a": 1}
    for _ in range(MAX_NESTING):
        nested = {"$and": [nested]}
    assert filter_errors(nested) == []
    assert "nest at most" in filter_errors({"$or": [nested]})[0]
    many = {f"k{n}": n for n in range(MAX_CONDITIONS)}
    assert filter_errors(many) == []
    many["one.more"] = 1
    assert filter_errors(many) == [f"filter: at most {MAX_CONDITIONS} conditions."]
    path = ".".join(["k"] * MAX_PATH_KEYS)
    assert filter_errors({path: 1}) == []
    assert "at most" in filter_errors({path + ".k": 1})[0]
    values = list(range(MAX_IN_VALUES))
    assert filter_errors({"a": {"$in": values}}) == []
    assert filter_errors({"a": {"$in": [*values, 1]}})
    big = {"a": "x" * MAX_FILTER_BYTES}
    assert filter_errors(big) == [
        f"filter: at most {MAX_FILTER_BYTES} bytes of JSON, not {MAX_FILTER_BYTES + 8}."
    ]


def test_errors_are_capped_and_all_named():
    errors = filter_errors({f"k{n}": [n] for n in range(30)})
    assert len(errors) == 10
    assert errors[0].startswith('filter["k0"]')
