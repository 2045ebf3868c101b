"""Time-ordered UUIDs (version 7): primary keys sort by creation for keyset paging."""

import math
import os
import time
import uuid
from datetime import datetime, timedelta


def uuid7() -> uuid.UUID:
    """Return a UUIDv7: 48 bits of Unix milliseconds, then 74 random bits."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a, 12 bits
    value |= 0b10 << 62  # variant
    value |= rand & ((1 << 62) - 1)  # rand_b, 62 bits
    return uuid.UUID(int=value)


# A UUIDv7 made by PostgreSQL, like `uuid7`: a random (v4) UUID whose first 48
# bits become the Unix milliseconds and whose version nibble becomes 7.
UUID7_SQL = (
    "encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) placing "
    "substring(int8send(floor(extract(epoch from clock_timestamp()) * 1000)"
    "::bigint) from 3) from 1 for 6), 52, 1), 53, 1), 'hex')::uuid"
)

# How far a row's UUIDv7 may be from its created_at: the id is made a moment
# before or after it, by a clock (the web process's, PostgreSQL's) that may
# differ a little. A time window's id range is this much wider either side,
# and created_at decides exactly.
CLOCK_SLACK = timedelta(minutes=5)

# The largest 48-bit millisecond count a UUIDv7 can hold.
_MAX_MILLIS = (1 << 48) - 1


def uuid7_floor(moment: datetime, *, shift: timedelta = timedelta(0)) -> uuid.UUID:
    """The smallest UUIDv7 of the millisecond of `moment + shift`.

    Every id made at or after that millisecond sorts at or above it, so a time
    window becomes an id range that the (..., -id) indexes can seek. `shift` is
    applied in milliseconds, so extreme dates clamp instead of overflowing.
    """
    millis = math.floor((moment.timestamp() + shift.total_seconds()) * 1000)
    millis = min(max(millis, 0), _MAX_MILLIS)
    return uuid.UUID(int=(millis << 80) | (0x7 << 76) | (0b10 << 62))
