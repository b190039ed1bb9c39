"""Socket-free stand-ins for the relay's unit tests: transports that record what is written, and
a proxy whose backend link is fed by hand. The relay runs on them in one event loop turn after
another, with no timer and no socket."""

from __future__ import annotations

import asyncio
from typing import Any

from greetproxy import config
from greetproxy.backend import BackendLink
from greetproxy.relay import RelaySession
from greetproxy.server import Proxy
from greetproxy.session import Session


class FakeTransport(asyncio.Transport):
    """Records writes; knows whether it is closed and whether reading is paused."""

    def __init__(self, peer: tuple[str, int] = ("192.0.2.1", 4242)) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False
        self.reading = True
        self.protocol: asyncio.BaseProtocol | None = None
        self._extra = {"peername": peer, "sockname": ("127.0.0.1", 25)}

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "write to a closed transport"
        self.written += data

    def take(self) -> bytes:
        """What was written since the last take."""
        data = bytes(self.written)
        self.written.clear()
        return data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> Any:
        return self.protocol

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)


def unstarted_proxy(**variables: str) -> Proxy:
    """A Proxy built from ``variables`` (GREETPROXY_ names without the prefix, lower case); not
    started: nothing listens, the backend is never contacted."""
    environ = {"GREETPROXY_HOSTNAME": "proxy.example.test", "GREETPROXY_PASS_TTL": "0"}
    environ.update({f"GREETPROXY_{name.upper()}": value for name, value in variables.items()})
    return Proxy(config.load(environ))


class Wire:
    """A relayed session on fake transports: ``client`` and ``backend`` record what the relay
    wrote to each; ``say`` is the client sending, ``reply`` the backend answering."""

    def __init__(self, proxy: Proxy, held: bytes = b"") -> None:
        self.proxy = proxy
        self.session = Session("192.0.2.1", 4242)
        self.client = FakeTransport()
        self.backend = FakeTransport(("127.0.0.1", 10025))
        self.link = BackendLink()
        self.link.connection_made(self.backend)
        self.relay = RelaySession(proxy, self.session, self.link)
        proxy.connections.add(self.relay)
        self.relay.begin(self.client, b"220 proxy.example.test ESMTP\r\n", held)

    @property
    def conversation(self) -> Any:
        """Whoever answers the client now (the relay, or the enforce engine it handed over to)."""
        return self.client.protocol

    def say(self, data: bytes) -> None:
        self.conversation.data_received(data)

    def reply(self, data: bytes) -> None:
        self.link.data_received(data)
