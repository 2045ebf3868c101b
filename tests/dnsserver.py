"""A real DNS server for tests: UDP, answering A and AAAA queries from per-name scripts.

Imports nothing of the application, so a test can run it in a process of its own
(tests/deliveries/test_resolver_system.py serves the system resolver with it).
"""

import contextlib
import socket
import threading
from collections import defaultdict

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset


class ScriptedDNSServer:
    """A real DNS server (UDP) answering from per-name scripts.

    `answer(name, a=[...], aaaa=[...])` sets the answers; `script(name, a=[[...],
    ...], aaaa=[[...], ...])` gives the answers of successive queries of each type
    (the last one repeats); `delay(name, seconds)` makes the answers for `name`
    come that late (each query waits on a thread of its own, so other names are
    answered meanwhile). Unknown names get NXDOMAIN. Every query is recorded.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.settimeout(0.1)  # lets the loop notice `_stopping`
        host, port = self.sock.getsockname()
        self.address = f"{host}:{port}"
        self.queries: list[tuple[str, str]] = []
        self._scripts: dict[tuple[str, int], list[list[str]]] = {}
        self._served: dict[tuple[str, int], int] = defaultdict(int)
        self._delays: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def answer(self, name: str, *, a=(), aaaa=()) -> None:
        """Answer every query for `name` with these addresses."""
        self.script(name, a=[a], aaaa=[aaaa])

    def script(self, name: str, *, a=((),), aaaa=((),)) -> None:
        """Answer successive A and AAAA queries for `name` in turn."""
        key = _key(name)
        with self._lock:
            for rdtype, answers in ((dns.rdatatype.A, a), (dns.rdatatype.AAAA, aaaa)):
                self._scripts[(key, rdtype)] = [list(each) for each in answers]
                self._served[(key, rdtype)] = 0

    def delay(self, name: str, seconds: float) -> None:
        """Answer queries for `name` only `seconds` after they arrive."""
        with self._lock:
            self._delays[_key(name)] = seconds

    def queries_for(self, name: str) -> list[str]:
        """The types queried for `name`, in order."""
        key = _key(name)
        with self._lock:
            return [rdtype for qname, rdtype in self.queries if qname == key]

    def _reply(self, query: dns.message.Message) -> bytes:
        response = dns.message.make_response(query)
        [question] = query.question
        qname = question.name.to_text().lower()
        with self._lock:
            known = any(name == qname for name, _ in self._scripts)
            script = self._scripts.get((qname, question.rdtype))
            if not known:
                response.set_rcode(dns.rcode.NXDOMAIN)
            elif script:
                served = self._served[(qname, question.rdtype)]
                self._served[(qname, question.rdtype)] += 1
                addresses = script[min(served, len(script) - 1)]
                if addresses:
                    rdtype = dns.rdatatype.to_text(question.rdtype)
                    response.answer.append(
                        dns.rrset.from_text_list(qname, 0, "IN", rdtype, addresses)
                    )
        return response.to_wire()

    def _answer_later(self, query: dns.message.Message, peer, delay: float) -> None:
        if self._stopping.wait(delay):
            return
        with contextlib.suppress(OSError):  # closed meanwhile
            self.sock.sendto(self._reply(query), peer)

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                wire, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(wire)
            [question] = query.question
            qname = question.name.to_text().lower()
            with self._lock:
                self.queries.append((qname, dns.rdatatype.to_text(question.rdtype)))
                delay = self._delays.get(qname, 0.0)
            if delay:
                threading.Thread(
                    target=self._answer_later, args=(query, peer, delay), daemon=True
                ).start()
            else:
                self.sock.sendto(self._reply(query), peer)

    def __enter__(self) -> "ScriptedDNSServer":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stopping.set()
        self._thread.join(5)
        self.sock.close()


def _key(name: str) -> str:
    return name.rstrip(".").lower() + "."
