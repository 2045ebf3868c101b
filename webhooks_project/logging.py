"""JSON log lines: one object per record, with the fields passed through `extra=`."""

import json
import logging
from datetime import UTC, datetime

# Attributes every LogRecord has; anything else on a record came from `extra=`.
RESERVED_ATTRS = frozenset(
    logging.LogRecord("", logging.INFO, "", 0, "", (), None).__dict__
) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object on one line.

    Keys: `time` (ISO 8601, UTC, milliseconds), `level`, `logger`, `message`, then
    every field the call passed with `extra=` (tenant_id, delivery_id, outcome, ...),
    and `exc_info`/`stack_info` as text when present. Values JSON cannot hold (UUIDs,
    datetimes, objects) are written as their `str()`.
    """

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as a single-line JSON object."""
        entry: dict[str, object] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in RESERVED_ATTRS and not key.startswith("_"):
                entry.setdefault(key, value)  # never over the four keys above
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """Return the creation time in ISO 8601 UTC, e.g. `2025-01-31T12:00:00.123Z`."""
        when = datetime.fromtimestamp(record.created, UTC)
        return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
