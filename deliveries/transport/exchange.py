"""One POST on a libcurl handle: its options, the response it collects, its result.

libcurl (through pycurl) does the HTTP, the TLS and the deadlines in C: a
delivery costs a fraction of the CPU that http.client and urllib3 spent on the
same exchange, and the handles that `Sender` drives hold hundreds of requests in
flight from one thread. Handles are reused: their connections stay alive.
"""

import certifi
import pycurl
from django.conf import settings

from deliveries.models import AttemptOutcome
from deliveries.transport.request import Request
from deliveries.transport.result import TransportResult, answered, elapsed_ms

# Most bytes read from a receiver's response (the contract's 64 KiB).
RESPONSE_READ_MAX = 64 * 1024
# libcurl's error when a write callback stops the transfer: here, the body cap.
_CAPPED = pycurl.E_WRITE_ERROR


def new_handle() -> pycurl.Curl:
    """A curl handle with the options every delivery shares."""
    curl = pycurl.Curl()
    curl.setopt(pycurl.NOSIGNAL, 1)  # threads: timeouts without SIGALRM
    curl.setopt(pycurl.PROXY, "")  # never a proxy from the environment
    curl.setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
    curl.setopt(pycurl.FOLLOWLOCATION, 0)
    curl.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1)
    curl.setopt(pycurl.SSL_VERIFYPEER, 1)
    curl.setopt(pycurl.SSL_VERIFYHOST, 2)
    curl.setopt(pycurl.POST, 1)
    return curl


class Exchange:
    """A configured handle for one Request: collects headers and a capped body."""

    __slots__ = ("cap", "capped", "chunks", "curl", "headers", "request", "size")

    def __init__(self, curl: pycurl.Curl, request: Request) -> None:
        self.curl = curl
        self.request = request
        self.headers: dict[str, str] = {}
        self.chunks: list[bytes] = []
        self.size = 0
        self.cap = RESPONSE_READ_MAX
        self.capped = False
        connect = settings.WEBHOOK_CONNECT_TIMEOUT
        deadline = settings.WEBHOOK_RESPONSE_TIMEOUT
        curl.setopt(pycurl.URL, request.url)
        curl.setopt(pycurl.CONNECT_TO, request.connect_to)
        curl.setopt(pycurl.POSTFIELDS, request.body)
        curl.setopt(pycurl.HTTPHEADER, request.header_lines)
        curl.setopt(pycurl.CONNECTTIMEOUT_MS, max(1, int(connect * 1000)))
        # The whole exchange, connect included, ends by the response deadline.
        curl.setopt(pycurl.TIMEOUT_MS, max(1, int(deadline * 1000)))
        curl.setopt(pycurl.HEADERFUNCTION, self._header)
        curl.setopt(pycurl.WRITEFUNCTION, self._write)
        if request.https:
            curl.setopt(pycurl.CAINFO, settings.WEBHOOK_CA_BUNDLE or certifi.where())

    def _header(self, line: bytes) -> None:
        text = line.decode("latin-1").rstrip("\r\n")
        if text.startswith("HTTP/"):
            self.headers = {}  # a new response (after a 1xx): its own headers
            return
        name, sep, value = text.partition(":")
        if not sep:
            return
        name, value = name.strip(), value.strip()
        known = self.headers.get(name)
        self.headers[name] = value if known is None else f"{known}, {value}"

    def _write(self, chunk: bytes) -> int | None:
        room = self.cap - self.size
        if len(chunk) <= room:
            self.chunks.append(chunk)
            self.size += len(chunk)
            return None
        # Keep what fits and stop reading: libcurl closes this connection.
        self.chunks.append(chunk[:room])
        self.size = self.cap
        self.capped = True
        return 0

    def perform(self) -> TransportResult:
        """Run the exchange on this thread (blocking)."""
        try:
            self.curl.perform()
        except pycurl.error as exc:
            code, message = exc.args
            return self.finish(code, message)
        return self.finish()

    def finish(self, code: int = 0, message: str = "") -> TransportResult:
        """The result once libcurl is done with the handle (`code` 0: no error)."""
        duration_ms = elapsed_ms(self.request.started)
        curl = self.curl
        if code and not (code == _CAPPED and self.capped):
            return self._failure(code, message, duration_ms)
        return answered(
            curl.getinfo(pycurl.RESPONSE_CODE),
            self.headers,
            b"".join(self.chunks),
            duration_ms,
        )

    def _failure(self, code: int, message: str, duration_ms: int) -> TransportResult:
        connect = settings.WEBHOOK_CONNECT_TIMEOUT
        deadline = settings.WEBHOOK_RESPONSE_TIMEOUT
        if code == pycurl.E_OPERATION_TIMEDOUT:
            if not self.curl.getinfo(pycurl.CONNECT_TIME):
                error = f"connect timeout after {min(connect, deadline):g} s"
            else:
                error = f"no response within {deadline:g} s"
            return TransportResult(AttemptOutcome.TIMEOUT, duration_ms, error=error)
        return TransportResult(
            AttemptOutcome.CONNECTION_ERROR,
            duration_ms,
            error=f"{message} (curl error {code})"[:2000],
        )
