"""The open-relay guard: refuse to serve if the backend would relay for the proxy's address.

Every client's session reaches the backend from the proxy's source address, so whatever trust
the backend gives that address (sendmail: 127.0.0.1 always, Debian's stock access map: all of
127/8) every client on the internet would inherit.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass

from .backend import BackendFailure, BackendLink, BackendTls
from .config import Settings

PROBE_RECIPIENT = b"probe@relay-test.invalid"


class RelayStatus(enum.Enum):
    CLOSED = "closed"  # the backend refused to relay: safe
    OPEN = "open"  # the backend accepted a foreign recipient from us
    UNKNOWN = "unknown"  # unreachable, or an answer that proves nothing (4xx)


@dataclass(frozen=True, slots=True)
class RelayCheck:
    status: RelayStatus
    detail: str


async def check_relay(config: Settings, tls: BackendTls | None = None) -> RelayCheck:
    try:
        link, _ = await BackendLink.open(
            config.backend, config.backend_source, config.backend_connect_timeout, tls
        )
    except BackendFailure as failure:
        return RelayCheck(RelayStatus.UNKNOWN, str(failure))
    try:
        async with asyncio.timeout(config.command_timeout):
            return await _probe(link, config)
    except TimeoutError:
        return RelayCheck(
            RelayStatus.UNKNOWN, f"no reply from the backend within {config.command_timeout:g}s"
        )
    except BackendFailure as failure:
        return RelayCheck(RelayStatus.UNKNOWN, str(failure))
    finally:
        link.close()


async def _probe(link: BackendLink, config: Settings) -> RelayCheck:
    for line in (b"EHLO " + config.hostname.encode(), b"MAIL FROM:<>"):
        answer = await link.command(line)
        if answer.code != 250:
            return RelayCheck(RelayStatus.UNKNOWN, f"backend answered {line.decode()} with {answer}")
    answer = await link.command(b"RCPT TO:<" + PROBE_RECIPIENT + b">")
    detail = (
        f"RCPT TO:<{PROBE_RECIPIENT.decode()}> from {config.backend_source or 'default source'}: {answer}"
    )
    await link.command(b"RSET")
    await link.command(b"QUIT")
    if answer.code < 300:
        return RelayCheck(RelayStatus.OPEN, detail)
    if answer.code >= 500:
        return RelayCheck(RelayStatus.CLOSED, detail)
    return RelayCheck(RelayStatus.UNKNOWN, detail)


def open_relay_advice(config: Settings, check: RelayCheck) -> str:
    source = config.backend_source or "the kernel's default source address"
    return (
        f"the backend {config.backend} relays for the proxy's source address {source} ({check.detail}); "
        "every client would inherit that trust and this host would be an open relay. "
        "Set GREETPROXY_BACKEND_SOURCE to a loopback address the backend does not trust (e.g. 127.0.0.2; "
        "sendmail always trusts 127.0.0.1) and make sure the backend grants it no RELAY: Debian's stock "
        "/etc/mail/access has 'Connect:127 RELAY', narrow it to 'Connect:127.0.0.1 RELAY' and run makemap. "
        "Set GREETPROXY_ALLOW_OPEN_BACKEND=1 only if the backend rejects relaying by other means."
    )
