"""A DNS stub server on 127.0.0.1 for the DNSBL tests: programmable answers, failures and delays.

It runs in one background thread (UDP and TCP on the same port) so that the code under test talks to
it through a real resolver library over real sockets. Every answer, positive or negative, carries a
realistic TTL (and NXDOMAIN an SOA), so that a resolver-side cache would keep it: a test that changes
an answer and sees the change proves there is no such cache, rather than relying on TTL 0.
"""

from __future__ import annotations

import heapq
import itertools
import selectors
import socket
import struct
import threading
import time

from dnslib import QTYPE, RCODE, RR, SOA, A, DNSRecord

TTL = 300
_POLL = 0.05  # how long the server thread sleeps at most before it looks at the stop flag
_TCP_READ_TIMEOUT = 1.0


class DnsStub:
    """Names are case-insensitive and given without the final dot; `*.zone` answers every name below zone.

    Names not set get NXDOMAIN. `delay()`, `ready_after()` and `never_answer()` take a name or a zone
    (the name and every name below it).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._answers: dict[str, list[str]] = {}
        self._servfail: set[str] = set()
        self._delays: dict[str, float] = {}
        self._ready: dict[str, float] = {}
        self._first_asked: dict[str, float] = {}
        self._silent: set[str] = set()
        self._queries: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self.port = 0

    # -- programming ---------------------------------------------------------------------------------

    def set(self, name: str, addresses: list[str]) -> None:
        """Answer A queries for name with these addresses (an empty list: NOERROR with no data)."""
        with self._lock:
            key = _key(name)
            self._answers[key] = list(addresses)
            self._servfail.discard(key)

    def nxdomain(self, name: str) -> None:
        """Forget whatever was set for name: it gets NXDOMAIN again (the default)."""
        with self._lock:
            self._answers.pop(_key(name), None)
            self._servfail.discard(_key(name))

    def servfail(self, name: str) -> None:
        with self._lock:
            self._servfail.add(_key(name))

    def delay(self, name_or_zone: str, seconds: float) -> None:
        with self._lock:
            self._delays[_key(name_or_zone)] = seconds

    def ready_after(self, name_or_zone: str, seconds: float) -> None:
        """Hold every answer until `seconds` after the name was first asked, then answer at once.

        This is a recursive resolver still resolving a name: it answers the client's retries as soon as
        it has the answer, unlike `delay()`, which makes every query wait the full time (a slow link).
        """
        with self._lock:
            self._ready[_key(name_or_zone)] = seconds

    def never_answer(self, zone: str) -> None:
        with self._lock:
            self._silent.add(_key(zone))

    @property
    def queries(self) -> list[str]:
        """The names asked so far (lower case, no final dot), in arrival order; a copy."""
        with self._lock:
            return list(self._queries)

    def clear_queries(self) -> None:
        with self._lock:
            self._queries.clear()

    def count(self, name: str) -> int:
        return self.queries.count(_key(name))

    # -- life cycle ----------------------------------------------------------------------------------

    def start(self) -> DnsStub:
        self._udp, self._tcp = _bind_pair()
        self.port = self._udp.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name=f"dns-stub-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for sock in (self._udp, self._tcp):
            if sock is not None:
                sock.close()

    def __enter__(self) -> DnsStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the server thread ---------------------------------------------------------------------------

    def _serve(self) -> None:
        assert self._udp is not None and self._tcp is not None
        selector = selectors.DefaultSelector()
        selector.register(self._udp, selectors.EVENT_READ)
        selector.register(self._tcp, selectors.EVENT_READ)
        pending: list[tuple[float, int, socket.socket, bytes, tuple[str, int] | None]] = []
        order = itertools.count()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                while pending and pending[0][0] <= now:
                    _, _, sock, data, address = heapq.heappop(pending)
                    _send(sock, data, address)
                wait = _POLL if not pending else max(0.0, min(_POLL, pending[0][0] - now))
                for key, _ in selector.select(wait):
                    query = self._receive(key.fileobj)  # type: ignore[arg-type]
                    if query is None:
                        continue
                    sock, packet, address = query
                    reply, delay = self._answer(packet)
                    if reply is None:
                        if address is None:
                            sock.close()
                        continue
                    heapq.heappush(pending, (time.monotonic() + delay, next(order), sock, reply, address))
        finally:
            selector.close()
            for _, _, sock, _, address in pending:
                if address is None:
                    sock.close()

    def _receive(self, listener: socket.socket) -> tuple[socket.socket, bytes, tuple[str, int] | None] | None:
        """One query: from the UDP socket (with its sender), or from a new TCP connection (address None)."""
        if listener is self._udp:
            try:
                packet, address = listener.recvfrom(4096)
            except OSError:
                return None
            return listener, packet, address
        try:
            connection, _ = listener.accept()
        except OSError:
            return None
        connection.settimeout(_TCP_READ_TIMEOUT)
        try:
            (length,) = struct.unpack("!H", _read_exactly(connection, 2))
            return connection, _read_exactly(connection, length), None
        except (OSError, struct.error, EOFError):
            connection.close()
            return None

    def _answer(self, packet: bytes) -> tuple[bytes | None, float]:
        """The reply to send and after how long; None: stay silent."""
        try:
            request = DNSRecord.parse(packet)
        except Exception:  # a malformed packet is ignored, as a server would
            return None, 0.0
        name = _key(str(request.q.qname))
        with self._lock:
            self._queries.append(name)
            if _covered(name, self._silent):
                return None, 0.0
            now = time.monotonic()
            first = self._first_asked.setdefault(name, now)
            delay = max(
                [seconds for zone, seconds in self._delays.items() if _under(name, zone)]
                + [first + seconds - now for zone, seconds in self._ready.items() if _under(name, zone)],
                default=0.0,
            )
            servfail = name in self._servfail
            addresses = self._lookup(name)
        reply = request.reply()
        if servfail:
            reply.header.rcode = RCODE.SERVFAIL
        elif addresses is None:
            reply.header.rcode = RCODE.NXDOMAIN
            reply.add_auth(_soa(name))
        elif request.q.qtype == QTYPE.A and addresses:
            for address in addresses:
                reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(address), ttl=TTL))
        else:
            reply.add_auth(_soa(name))  # NOERROR, no data
        return reply.pack(), delay

    def _lookup(self, name: str) -> list[str] | None:
        if name in self._answers:
            return self._answers[name]
        labels = name.split(".")
        for start in range(1, len(labels)):
            wildcard = "*." + ".".join(labels[start:])
            if wildcard in self._answers:
                return self._answers[wildcard]
        return None


def _key(name: str) -> str:
    return name.lower().rstrip(".")


def _under(name: str, zone: str) -> bool:
    return name == zone or name.endswith("." + zone)


def _covered(name: str, zones: set[str]) -> bool:
    return any(_under(name, zone) for zone in zones)


def _soa(name: str) -> RR:
    zone = name.split(".", 1)[-1] or name
    record = SOA(f"ns.{zone}", f"hostmaster.{zone}", (1, 3600, 600, 86400, TTL))
    return RR(zone, QTYPE.SOA, rdata=record, ttl=TTL)


def _send(sock: socket.socket, data: bytes, address: tuple[str, int] | None) -> None:
    try:
        if address is None:
            sock.sendall(struct.pack("!H", len(data)) + data)
        else:
            sock.sendto(data, address)
    except OSError:
        pass  # the client went away; nothing to tell it
    finally:
        if address is None:
            sock.close()


def _read_exactly(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:  # bounded by size and by the socket timeout
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _bind_pair(attempts: int = 20) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket on the same free loopback port (another process may take the port between)."""
    for _ in range(attempts):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            tcp.bind(("127.0.0.1", udp.getsockname()[1]))
        except OSError:
            udp.close()
            tcp.close()
            continue
        tcp.listen(16)
        udp.setblocking(False)
        tcp.setblocking(False)
        return udp, tcp
    raise RuntimeError(f"no free loopback port for UDP and TCP after {attempts} attempts")
