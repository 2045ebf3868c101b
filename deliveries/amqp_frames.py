"""AMQP 0-9-1 `basic.publish` frames for task messages, encoded in one buffer.

py-amqp encodes every message field by field in Python (a table writer per
header, a BytesIO per table) and writes each message to the socket on its own:
for an event's three delivery tasks that was most of the publisher's CPU in the
web process. The publisher's messages all have one shape (the properties below,
a small table of strings and integers, a body far under a frame), so they are
encoded here with a few `struct` packs each and a batch is written at once.
The bytes are the ones py-amqp writes for the same message (a test holds them
equal); anything of another shape is refused with ValueError.
"""

import functools
from struct import Struct

_FRAME_END = b"\xce"
_METHOD, _HEADER, _BODY = 1, 2, 3
# basic.publish (class 60, method 40), ticket 0.
_PUBLISH = Struct(">HHH").pack(60, 40, 0)
# Frame header: type, channel, payload size.
_FRAME = Struct(">BHI")
# Content header: class 60, weight 0, body size; then the property flags:
# content-type, content-encoding, headers, delivery-mode and correlation-id.
_CONTENT = Struct(">HHQH")
_FLAGS = 0x8000 | 0x4000 | 0x2000 | 0x1000 | 0x0400
_LONG = Struct(">I")
_STRING = Struct(">cI")
_INT = Struct(">ci")
_INT_MAX = 2147483647
# Frame header and end, method arguments' fixed part: what frame_max must hold.
_OVERHEAD = 8 * 3 + 64


def _short(value: str) -> bytes:
    data = value.encode()
    if len(data) > 255:
        raise ValueError("a short string is at most 255 bytes")
    return bytes((len(data),)) + data


# Header names, exchanges, routing keys and content types repeat.
_name = functools.lru_cache(maxsize=1024)(_short)


def _table(headers: dict) -> bytes:
    parts = []
    for key, value in headers.items():
        parts.append(_name(key))
        if isinstance(value, str):
            data = value.encode("utf-8", "surrogatepass")
            parts += (_STRING.pack(b"S", len(data)), data)
        elif isinstance(value, int) and not isinstance(value, bool):
            if not -_INT_MAX <= value <= _INT_MAX:
                raise ValueError("a header integer over 32 bits")
            parts.append(_INT.pack(b"I", value))
        else:
            raise ValueError(f"a header of type {type(value).__name__}")
    table = b"".join(parts)
    return _LONG.pack(len(table)) + table


def _frame(kind: int, channel: int, payload: bytes) -> bytes:
    return _FRAME.pack(kind, channel, len(payload)) + payload + _FRAME_END


def publish_frames(
    *,
    channel: int,
    frame_max: int,
    exchange: str,
    routing_key: str,
    mandatory: bool,
    correlation_id: str,
    headers: dict,
    body: bytes,
    content_type: str = "application/json",
    content_encoding: str = "utf-8",
) -> bytes:
    """The method, content header and body frames of one persistent message.

    Raises ValueError for a message that would need more than one body frame
    or a header value other than a string or a 32-bit integer.
    """
    properties = (
        _name(content_type)
        + _name(content_encoding)
        + _table(headers)
        + b"\x02"  # delivery mode: persistent
        + _short(correlation_id)
    )
    if len(body) + len(properties) + _OVERHEAD > frame_max:
        raise ValueError("the message needs more than one body frame")
    method = (
        _PUBLISH
        + _name(exchange)
        + _name(routing_key)
        + (b"\x01" if mandatory else b"\x00")
    )
    header = _CONTENT.pack(60, 0, len(body), _FLAGS) + properties
    return (
        _frame(_METHOD, channel, method)
        + _frame(_HEADER, channel, header)
        + _frame(_BODY, channel, body)
    )
