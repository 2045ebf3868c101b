"""Payload filters: their rules, the reference evaluator, their compiled jsonpath.

A filter is a JSON object of conditions on an event's payload (docs/filters.md).
`filter_errors` checks one, `evaluate` is the reference semantics in Python, and
`compile_filter` turns it into a PostgreSQL `jsonpath` predicate that the fan-out
applies with `payload @@ predicate` (subscriptions.matching.payload_filter_sql).
The two agree on every payload (tests/subscriptions/test_filter_properties.py).

The compiled predicate is stored with the endpoint: a change to what
`compile_filter` writes needs a data migration that compiles the stored filters
again.

The jsonpath runs in lax mode, whose array handling is what the rules below say:
a path steps into the objects of an array on its way (one level per key), and a
comparison looks at the value found and, when it is an array, at its elements
(one level). Every comparison sits inside a jsonpath filter, where a mismatch of
types ("1" against 1) is dropped rather than making the result unknown, so the
predicate is true or false for every payload, never NULL or an error.
"""

import json
import math
from dataclasses import dataclass
from decimal import Decimal

COMPARISONS = ("$eq", "$neq", "$gt", "$gte", "$lt", "$lte", "$in", "$nin")
OPERATORS = (*COMPARISONS, "$exists")
ORDERINGS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
COMBINATORS = ("$and", "$or")

# Limits: past one, the filter is refused (400) rather than slowing every event.
MAX_FILTER_BYTES = 8192  # the filter as compact JSON, UTF-8
MAX_CONDITIONS = 64  # operators in the whole filter (a literal is one `$eq`)
MAX_NESTING = 4  # `$and` / `$or` inside one another
MAX_PATH_KEYS = 16  # keys of one dotted path
MAX_IN_VALUES = 100  # values of one `$in` / `$nin`
MAX_ERRORS = 10  # messages reported for one filter

SCALARS = "a string, a number, true, false or null"


class FilterError(ValueError):
    """A malformed filter; `messages` says what is wrong, each with its place."""

    def __init__(self, messages: list[str]):
        super().__init__("; ".join(messages))
        self.messages = messages


@dataclass(frozen=True)
class Condition:
    """One operator applied to the values at one dotted path."""

    path: tuple[str, ...]
    operator: str
    # A scalar; a tuple of scalars for $in/$nin; a bool for $exists.
    operand: object


@dataclass(frozen=True)
class Every:
    """All parts hold (the keys of one object, `$and`); no parts: always true."""

    parts: tuple


@dataclass(frozen=True)
class Some:
    """At least one part holds (`$or`)."""

    parts: tuple


def filter_errors(value) -> list[str]:
    """What is wrong with `value` as a filter, each message with its place.

    [] when it is valid; None (no filter) is valid.
    """
    try:
        parse(value)
    except FilterError as exc:
        return exc.messages
    return []


def parse(value) -> Every | None:
    """The filter `value` as a tree of Condition/Every/Some (None: no filter).

    Raises FilterError naming every problem (up to MAX_ERRORS) with its place.
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        raise FilterError(
            ["filter: must be a JSON object of conditions (null: no filter)."]
        )
    parser = _Parser()
    node = parser.conditions(value, "filter", nesting=0)
    if not parser.errors:
        size = _json_size(value)
        if size > MAX_FILTER_BYTES:
            parser.fail(
                "filter", f"at most {MAX_FILTER_BYTES} bytes of JSON, not {size}."
            )
    if parser.errors:
        raise FilterError(parser.errors[:MAX_ERRORS])
    return node


def evaluate(filter_value, payload) -> bool:
    """Whether `payload` passes the filter (None: every payload does).

    The reference semantics; the compiled jsonpath gives the same answers.
    Raises FilterError for a malformed filter.
    """
    node = parse(filter_value)
    return node is None or _holds(node, payload)


def compile_filter(filter_value) -> str | None:
    """The filter as a jsonpath predicate for `payload @@ ...`, or None when it
    passes every payload (no filter, `{}`). Raises FilterError when malformed."""
    node = parse(filter_value)
    if node is None:
        return None
    predicate = _predicate(node)
    return None if predicate is _TRUE else predicate


# --- validation ---------------------------------------------------------------


class _Parser:
    def __init__(self):
        self.errors: list[str] = []
        self.tests = 0

    def fail(self, where: str, message: str) -> None:
        self.errors.append(f"{where}: {message}")

    def conditions(self, value, where: str, *, nesting: int) -> Every:
        if not isinstance(value, dict):
            self.fail(where, "must be a JSON object of conditions.")
            return Every(())
        parts = []
        for key, item in value.items():
            if len(self.errors) >= MAX_ERRORS:
                break
            place = f"{where}[{_quoted(key)}]"
            if key in COMBINATORS:
                parts.append(self.combination(key, item, place, nesting=nesting))
            elif isinstance(key, str) and key.startswith("$"):
                self.fail(
                    place,
                    "unknown operator: a condition's key is a dotted path into the "
                    "payload, $and or $or.",
                )
            else:
                parts.extend(self.field(key, item, place))
        return Every(tuple(parts))

    def combination(self, key: str, items, where: str, *, nesting: int):
        if nesting >= MAX_NESTING:
            self.fail(where, f"$and and $or nest at most {MAX_NESTING} levels deep.")
            return Every(())
        if not isinstance(items, list) or not items:
            self.fail(where, "takes a non-empty list of JSON objects of conditions.")
            return Every(())
        parts = tuple(
            self.conditions(item, f"{where}[{index}]", nesting=nesting + 1)
            for index, item in enumerate(items)
        )
        return Every(parts) if key == "$and" else Some(parts)

    def field(self, key: str, value, where: str) -> list[Condition]:
        path = self.path(key, where)
        if isinstance(value, list):
            self.fail(
                where,
                'a list is not a value to compare with: {"$in": [...]} matches '
                "any of several values.",
            )
            return []
        if not isinstance(value, dict):
            value = {"$eq": value}
            places = {"$eq": where}
        elif not value:
            self.fail(where, f"give at least one operator ({', '.join(OPERATORS)}).")
            return []
        else:
            places = {name: f"{where}[{_quoted(name)}]" for name in value}
        tests = []
        for operator, operand in value.items():
            place = places[operator]
            if operator not in OPERATORS:
                self.fail(place, self.not_an_operator(key, operator))
                continue
            operand = self.operand(operator, operand, place)
            self.tests += 1
            if self.tests == MAX_CONDITIONS + 1:
                self.fail("filter", f"at most {MAX_CONDITIONS} conditions.")
            if operand is not _INVALID and path is not None:
                tests.append(Condition(path, operator, operand))
        return tests

    @staticmethod
    def not_an_operator(key: str, operator: str) -> str:
        if isinstance(operator, str) and operator.startswith("$"):
            return f"unknown operator: use one of {', '.join(OPERATORS)}."
        return (
            f"not an operator ({', '.join(OPERATORS)}); a nested key is matched "
            f"with a dotted path: {_quoted(f'{key}.{operator}')}."
        )

    def path(self, key: str, where: str) -> tuple[str, ...] | None:
        keys = tuple(key.split("."))
        problem = None
        if len(keys) > MAX_PATH_KEYS:
            problem = f"a path has at most {MAX_PATH_KEYS} keys."
        elif any(not part for part in keys):
            problem = (
                "a dotted path cannot have an empty key (no leading, trailing "
                "or double dots)."
            )
        else:
            problem = _text_error(key)
        if problem:
            self.fail(where, problem)
            return None
        return keys

    def operand(self, operator: str, operand, where: str):
        if operator == "$exists":
            if isinstance(operand, bool):
                return operand
            self.fail(where, "takes true or false.")
            return _INVALID
        if operator in ("$in", "$nin"):
            if (
                not isinstance(operand, list)
                or not operand
                or len(operand) > MAX_IN_VALUES
            ):
                self.fail(
                    where,
                    f"takes a list of 1 to {MAX_IN_VALUES} values, each {SCALARS}.",
                )
                return _INVALID
            values = [
                self.scalar(item, f"{where}[{index}]")
                for index, item in enumerate(operand)
            ]
            return _INVALID if _INVALID in values else tuple(values)
        if operator in ORDERINGS and _kind(operand) not in ("number", "string"):
            self.fail(where, f"takes a number or a string, not {_shown(operand)}.")
            return _INVALID
        return self.scalar(operand, where)

    def scalar(self, value, where: str):
        kind = _kind(value)
        if kind in ("array", "object", None):
            self.fail(where, f"takes {SCALARS}, not {_shown(value)}.")
            return _INVALID
        if kind == "number" and isinstance(value, float) and not math.isfinite(value):
            self.fail(where, f"{value} is not a JSON number.")
            return _INVALID
        if kind == "string" and (problem := _text_error(value)):
            self.fail(where, problem)
            return _INVALID
        return value


_INVALID = object()


def _text_error(text: str) -> str | None:
    """Why PostgreSQL could not hold `text` in jsonb or jsonpath, or None."""
    if "\x00" in text:
        return "cannot contain the NUL character (\\u0000)."
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "cannot contain a lone surrogate (\\ud800-\\udfff)."
    return None


def _quoted(text: str) -> str:
    """`text` as a JSON string for a message (escaped where it could not be sent)."""
    return json.dumps(text, ensure_ascii=_text_error(text) is not None)


def _json_size(value) -> int:
    return len(
        json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode(
            "utf-8", "surrogatepass"
        )
    )


def _kind(value) -> str | None:
    """The JSON type of a parsed value (None for anything JSON has not)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return None


def _shown(value) -> str:
    kind = _kind(value)
    if kind in ("null", "boolean"):
        return json.dumps(value)
    return {"array": "a list", "object": "an object", None: "that"}.get(
        kind, f"a {kind}"
    )


# --- the reference evaluator -------------------------------------------------


def _holds(node, payload) -> bool:
    if isinstance(node, Every):
        return all(_holds(part, payload) for part in node.parts)
    if isinstance(node, Some):
        return any(_holds(part, payload) for part in node.parts)
    found = _found(payload, node.path)
    if node.operator == "$exists":
        return bool(found) == node.operand
    if node.operator in ("$neq", "$nin"):
        positive = Condition(
            node.path, "$eq" if node.operator == "$neq" else "$in", node.operand
        )
        return not _holds(positive, payload)
    literals = node.operand if node.operator == "$in" else (node.operand,)
    operator = "$eq" if node.operator == "$in" else node.operator
    return any(
        _compare(operator, candidate, literal)
        for candidate in _candidates(found)
        for literal in literals
    )


def _found(payload, path: tuple[str, ...]) -> list:
    """The values at `path`: each key is looked up in an object, or in each
    object of an array (one level), as jsonpath's lax mode does."""
    values = [payload]
    for key in path:
        values = [
            item[key]
            for value in values
            for item in (value if isinstance(value, list) else (value,))
            if isinstance(item, dict) and key in item
        ]
    return values


def _candidates(found: list):
    """What a comparison looks at: each value, or an array's elements (one level;
    an array inside an array is never compared)."""
    for value in found:
        for item in value if isinstance(value, list) else (value,):
            if not isinstance(item, list):
                yield item


def _compare(operator: str, candidate, literal) -> bool:
    """jsonpath's comparison: only values of one JSON type compare (1 and 1.0 are
    equal; 1, "1" and true are all different); strings by Unicode code points."""
    kind = _kind(candidate)
    if kind != _kind(literal) or kind == "object":
        return False
    if kind == "number":
        candidate, literal = _decimal(candidate), _decimal(literal)
    if operator == "$eq":
        return candidate == literal
    if kind == "null" or kind == "boolean":
        return False  # ordering operators take numbers and strings only
    return {
        "$gt": candidate > literal,
        "$gte": candidate >= literal,
        "$lt": candidate < literal,
        "$lte": candidate <= literal,
    }[operator]


def _decimal(number: int | float) -> Decimal:
    """A number as its JSON text says (what PostgreSQL's numeric holds): a float
    by its shortest repr, so that 1e23 equals 100000000000000000000000."""
    return Decimal(repr(number)) if isinstance(number, float) else Decimal(number)


# --- compilation to jsonpath -------------------------------------------------

_TRUE = "true"  # a part that always holds (`{}`): dropped from the predicate


def _predicate(node) -> str:
    if isinstance(node, Every | Some):
        parts = [_predicate(part) for part in node.parts]
        if isinstance(node, Some) and _TRUE in parts:
            return _TRUE
        parts = [part for part in parts if part is not _TRUE]
        if not parts:
            return _TRUE
        joiner = " && " if isinstance(node, Every) else " || "
        return parts[0] if len(parts) == 1 else "(" + joiner.join(parts) + ")"
    path = "$" + "".join("." + _string(key) for key in node.path)
    if node.operator == "$exists":
        exists = f"exists({path})"
        return exists if node.operand else f"!({exists})"
    if node.operator in ("$in", "$nin"):
        tests = [f"@ == {_literal(value)}" for value in node.operand]
        test = tests[0] if len(tests) == 1 else "(" + " || ".join(tests) + ")"
    elif node.operator in ORDERINGS:
        test = f"@ {ORDERINGS[node.operator]} {_literal(node.operand)}"
    else:
        test = f"@ == {_literal(node.operand)}"
    # Lax mode has already unwrapped an array found at the path into its
    # elements; an element that is itself an array is skipped (not unwrapped
    # again by the comparison).
    found = f'exists({path} ? (@.type() != "array" && {test}))'
    return f"!({found})" if node.operator in ("$neq", "$nin") else found


def _string(text: str) -> str:
    """A jsonpath string literal: JSON's escapes (ASCII only) are jsonpath's too."""
    return json.dumps(text)


def _literal(value) -> str:
    if isinstance(value, str):
        return _string(value)
    # null, true, false, an int, or a float's shortest repr (1e-07, 1e+23).
    return json.dumps(value)
