"""`manage.py webhook_receiver`: a development receiver that verifies and logs webhooks.

It needs no database: it only serves `deliveries.receiver.WebhookReceiver` until
SIGINT or SIGTERM, printing one line per request (and appending JSON lines to
`--log-file` if given).
"""

import argparse
import json
import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

from django.core.management.base import BaseCommand, CommandError, CommandParser

from deliveries.receiver import ReceivedRequest, WebhookReceiver, parse_statuses


def status_list(value: str) -> tuple[int, ...]:
    """Parse `--status 500,500,200` for argparse."""
    try:
        return parse_statuses(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def non_negative(kind: type[int] | type[float]) -> Callable[[str], float]:
    """Return an argparse type that parses a non-negative `kind` number."""

    def parse(value: str) -> float:
        number = kind(value)
        if number < 0:
            raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
        return number

    parse.__name__ = kind.__name__
    return parse


class Command(BaseCommand):
    """Serve a webhook receiver on a local port until interrupted."""

    help = (
        "Receive webhooks on a local port: verify Standard Webhooks signatures, "
        "answer with scripted statuses and log one line per request."
    )
    requires_system_checks = ()

    def add_arguments(self, parser: CommandParser) -> None:
        """Declare the command-line options."""
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=non_negative(int), default=9000)
        parser.add_argument(
            "--secret",
            dest="secrets",
            action="append",
            default=[],
            help="whsec_... secret; repeatable, any may verify. None: no checks.",
        )
        parser.add_argument(
            "--delay",
            type=non_negative(float),
            default=0.0,
            help="Seconds to wait before answering each validly signed request.",
        )
        parser.add_argument(
            "--status",
            dest="statuses",
            type=status_list,
            default=(200,),
            help="Statuses to answer in order, e.g. 500,500,200; the last repeats.",
        )
        parser.add_argument(
            "--retry-after",
            type=non_negative(int),
            default=None,
            help="Add `Retry-After: N` to non-2xx responses.",
        )
        parser.add_argument("--log-file", help="Append one JSON line per request.")
        parser.add_argument("--quiet", action="store_true", help="No request lines.")

    def handle(self, *args: object, **options: object) -> None:
        """Serve until SIGINT/SIGTERM, then shut down cleanly."""
        quiet = bool(options["quiet"]) or options["verbosity"] == 0
        log_file: IO[str] | None = None
        lock = threading.Lock()

        def on_request(record: ReceivedRequest) -> None:
            line = json.dumps(record.summary())
            with lock:
                if not quiet:
                    self.stdout.write(str(record))
                    self.stdout.flush()
                if log_file is not None:
                    log_file.write(line + "\n")
                    log_file.flush()

        try:
            receiver = WebhookReceiver(
                host=options["host"],
                port=options["port"],
                secrets=options["secrets"],
                delay=options["delay"],
                statuses=options["statuses"],
                retry_after=options["retry_after"],
                on_request=on_request,
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        log_file = self._open_log(options["log_file"])

        stopping = threading.Event()
        previous = {
            signum: signal.signal(signum, lambda *_: stopping.set())
            for signum in (signal.SIGINT, signal.SIGTERM)
        }
        # The command prints request lines itself: keep the library quiet.
        library_logger = logging.getLogger("deliveries.receiver")
        previous_level = library_logger.level
        library_logger.setLevel(logging.WARNING)
        try:
            try:
                receiver.start()
            except OSError as exc:
                raise CommandError(
                    f"Cannot listen on {options['host']}:{options['port']}: {exc}"
                ) from exc
            self._say(f"Webhook receiver listening on {receiver.url}", options)
            while not stopping.wait(0.5):
                pass
        finally:
            receiver.stop()
            library_logger.setLevel(previous_level)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if log_file is not None:
                log_file.close()
        self._say(f"Stopped after {len(receiver.received)} request(s).", options)

    def _open_log(self, path: object) -> IO[str] | None:
        """Open `--log-file` for appending, or return None."""
        if not path:
            return None
        try:
            return Path(str(path)).open("a", encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"Cannot open log file {path}: {exc}") from exc

    def _say(self, message: str, options: dict[str, object]) -> None:
        """Print a status message (flushed) unless verbosity is 0."""
        if options["verbosity"]:
            self.stdout.write(message)
            self.stdout.flush()
