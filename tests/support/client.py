"""A raw-socket SMTP client, for bots and for exact byte-level checks."""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import time
from collections.abc import Iterator

_FINAL = re.compile(rb"^\d{3}(?: |\r?$)", re.M)


class Reply(tuple):
    """(code, text) with every line of a multi-line reply joined by newlines."""

    @property
    def code(self) -> int:
        return self[0]

    @property
    def text(self) -> str:
        return self[1]


class RawClient:
    def __init__(
        self, port: int, host: str = "127.0.0.1", timeout: float = 10, source: str | None = None
    ) -> None:
        self.sock = socket.create_connection(
            (host, port), timeout=timeout, source_address=(source, 0) if source else None
        )
        self.connected_at = time.monotonic()
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self, timeout: float = 10) -> Reply:
        """The next whole reply; raises ConnectionError if the server closes first."""
        deadline = time.monotonic() + timeout
        while True:
            end = self._final_line_end()
            if end is not None:
                raw, self.buffer = self.buffer[:end], self.buffer[end:]
                lines = raw.decode("utf-8", "replace").splitlines()
                return Reply((int(lines[0][:3]), "\n".join(line[4:] for line in lines)))
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError(f"server closed the connection; unread: {self.buffer!r}")
            self.buffer += data

    def _final_line_end(self) -> int | None:
        start = 0
        while True:
            newline = self.buffer.find(b"\n", start)
            if newline < 0:
                return None
            line = self.buffer[start:newline]
            if len(line) >= 3 and (len(line) == 3 or line[3:4] in (b" ", b"\r")):
                return newline + 1
            start = newline + 1

    def start_tls(self, context: ssl.SSLContext, server_hostname: str) -> None:
        """The handshake after a 220 to STARTTLS; nothing may be left unread from before it."""
        assert not self.buffer, f"unread before the handshake: {self.buffer!r}"
        self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname)

    def command(self, line: bytes | str, timeout: float = 10) -> Reply:
        self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return self.reply(timeout)

    def is_closed(self, timeout: float = 5) -> bool:
        """True once the server has closed (reading whatever is left)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
                self.buffer += data
        except TimeoutError:
            return False
        except (ConnectionResetError, ssl.SSLError):
            return True

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def early_ehlo_then_deliver(port: int, user: str) -> None:
    """Send EHLO before the banner, then deliver one message to ``user@example.test``: what a
    client let through despite its early talk (ignore, dry run) does."""
    with RawClient(port) as client:
        client.send(b"EHLO early.example\r\n")
        assert client.reply().code == 220
        assert client.reply().code == 250
        assert client.command("MAIL FROM:<a@sender.example>").code == 250
        assert client.command(f"RCPT TO:<{user}@example.test>").code == 250
        assert client.command("DATA").code == 354
        assert client.command(f"Subject: {user}\r\n\r\nok\r\n.".encode()).code == 250


@contextlib.contextmanager
def holding(port: int, count: int) -> Iterator[list[RawClient]]:
    """``count`` clients connected and left waiting, closed on the way out."""
    clients = [RawClient(port) for _ in range(count)]
    try:
        yield clients
    finally:
        for client in clients:
            client.close()
