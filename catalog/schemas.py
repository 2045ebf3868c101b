"""JSON Schemas of the catalog: the checks a schema passes before it is stored, and
its compiling into a validator.

A schema is checked against the draft 2020-12 meta-schema (`jsonschema`), then
compiled by `jsonschema_rs`, the validator payloads meet at publish:

- References stay inside the schema (`#...`): the validator is built offline,
  with a retriever that refuses every URI, so no `$ref` ever makes the server
  fetch anything, and one that cannot be resolved is a 400 when the schema is
  stored, not at publish.
- `pattern` and `patternProperties` run on the `regex` crate's engine (linear in
  the input, like RE2): no pattern can backtrack for seconds on a payload
  (ReDoS). It has no look-around and no back-references; a schema using them is
  refused with the engine's message.
- Size and nesting are bounded (MAX_SCHEMA_BYTES, MAX_SCHEMA_DEPTH), and so is
  each pattern's length.
"""

import json
import re

import jsonschema
import jsonschema_rs

from deliveries.validation import payload_error

DIALECT = "https://json-schema.org/draft/2020-12/schema"
# Serialized, as the API receives it; a realistic schema is a few KiB.
MAX_SCHEMA_BYTES = 64 * 1024
# Nesting of JSON objects and arrays in a schema (a payload's is 32: a schema
# takes about two levels per level of the payload it describes).
MAX_SCHEMA_DEPTH = 64
MAX_PATTERN_LENGTH = 1000
# The compiled regular expressions of one schema, in bytes (the regex crate's
# own bound on a program's size).
REGEX_SIZE_LIMIT = 1024 * 1024

# Errors listed for one payload; a payload can break a schema in many places.
MAX_ERRORS = 10
MAX_MESSAGE_CHARS = 300
# A key written `.key` in a payload's path; any other is written `["key"]`.
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_REGEX_ENGINE = (
    "patterns run on a linear-time engine, without look-around or back-references."
)
# Where a schema holds subschemas: one, a list, or an object of them.
_ONE = (
    "additionalProperties",
    "items",
    "contains",
    "propertyNames",
    "not",
    "if",
    "then",
    "else",
    "unevaluatedItems",
    "unevaluatedProperties",
    "contentSchema",
)
_LIST = ("allOf", "anyOf", "oneOf", "prefixItems")
_MAP = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_REFERENCES = ("$ref", "$dynamicRef")


class SchemaInvalid(ValueError):
    """The schema cannot be stored; the message says why and where."""


def json_size(value) -> int:
    """The size in bytes of `value` serialized compactly as UTF-8 JSON."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def schema_error(schema) -> str | None:
    """Why `schema` cannot be an event type's schema, or None."""
    if not isinstance(schema, dict):
        return "Must be a JSON Schema object (or null)."
    if json_size(schema) > MAX_SCHEMA_BYTES:
        return f"Larger than {MAX_SCHEMA_BYTES // 1024} KiB serialized."
    error = payload_error(schema, max_depth=MAX_SCHEMA_DEPTH)
    if error:
        return error
    dialect = schema.get("$schema", DIALECT)
    if not isinstance(dialect, str) or dialect.rstrip("#") != DIALECT:
        return f"$schema: only draft 2020-12 ({DIALECT}) is supported."
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        return f"{_pointer(exc.path)}: {exc.message}"
    error = _walk_error(schema)
    if error:
        return error
    try:
        compile_schema(schema)
    except SchemaInvalid as exc:
        return str(exc)
    return None


def compile_schema(schema: dict):
    """A validator of payloads against `schema` (checked by `schema_error`).

    Raises SchemaInvalid when it cannot be built (an unresolvable reference, a
    pattern the regex engine refuses).
    """
    try:
        return jsonschema_rs.Draft202012Validator(
            schema,
            retriever=_refuse_retrieval,
            pattern_options=jsonschema_rs.RegexOptions(size_limit=REGEX_SIZE_LIMIT),
        )
    except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError) as exc:
        message = _first_line(getattr(exc, "message", str(exc)))
        if message.endswith('is not a "regex"'):
            message += f" here: {_REGEX_ENGINE}"
        raise SchemaInvalid(message) from exc
    except ValueError as exc:
        raise SchemaInvalid(_first_line(str(exc))) from exc


def instance_errors(validator, instance) -> list[str]:
    """Why `instance` breaks the compiled schema: at most MAX_ERRORS messages, each
    after the failing place as a JSONPath (`$.customer.id`, `$.items[0]`, `$` for
    the whole payload)."""
    errors = []
    for error in validator.iter_errors(instance):
        message = error.message
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[: MAX_MESSAGE_CHARS - 1] + "…"
        errors.append(f"{json_path(error.instance_path)}: {message}")
        if len(errors) == MAX_ERRORS:
            break
    return errors


def json_path(path) -> str:
    """A place in a payload as a JSONPath: `$`, `$.customer.id`, `$.items[0]`,
    `$["key with.dots"]`."""
    parts = ["$"]
    for part in path:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif _PLAIN_KEY.match(part):
            parts.append(f".{part}")
        else:
            escaped = part.replace("\\", "\\\\").replace('"', '\\"')
            parts.append(f'["{escaped}"]')
    return "".join(parts)


def _refuse_retrieval(uri: str):
    raise ValueError(
        f"'{uri}' is outside the schema: references must start with '#' "
        "(schemas are never fetched)."
    )


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0][:500] if message.strip() else "Invalid."


def _walk_error(schema: dict) -> str | None:
    """The first reference leaving the schema, or pattern too long, or None."""
    stack: list[tuple[tuple, object]] = [((), schema)]
    while stack:
        path, node = stack.pop()
        if not isinstance(node, dict):
            continue
        for keyword in _REFERENCES:
            target = node.get(keyword)
            if isinstance(target, str) and not target.startswith("#"):
                return (
                    f"{_pointer((*path, keyword))}: '{target}' is outside the "
                    "schema; references must start with '#' (schemas are never "
                    "fetched)."
                )
        patterns = [((*path, "pattern"), node.get("pattern"))]
        if isinstance(node.get("patternProperties"), dict):
            patterns += [
                ((*path, "patternProperties", key), key)
                for key in node["patternProperties"]
            ]
        for where, pattern in patterns:
            if isinstance(pattern, str) and len(pattern) > MAX_PATTERN_LENGTH:
                return (
                    f"{_pointer(where)}: patterns are limited to "
                    f"{MAX_PATTERN_LENGTH} characters."
                )
        stack.extend(_children(path, node))
    return None


def _children(path: tuple, node: dict):
    for keyword in _ONE:
        if keyword in node:
            yield (*path, keyword), node[keyword]
    for keyword in _LIST:
        if isinstance(node.get(keyword), list):
            for index, child in enumerate(node[keyword]):
                yield (*path, keyword, index), child
    for keyword in _MAP:
        if isinstance(node.get(keyword), dict):
            for key, child in node[keyword].items():
                yield (*path, keyword, key), child


def _pointer(path) -> str:
    """A place in the schema as JSON Schema writes it: a JSON Pointer (RFC 6901)
    in a URI fragment, `#/properties/id`; `#` is the root."""
    return "#" + "".join(
        "/" + str(part).replace("~", "~0").replace("/", "~1") for part in path
    )
