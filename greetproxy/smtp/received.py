"""The Received: header the proxy writes at the top of every message it relays."""

from __future__ import annotations

import email.utils
import string
import time
from datetime import datetime

MAX_HELO = 255


def address_literal(ip: str) -> str:
    """RFC 5321 4.1.3: ``[192.0.2.1]`` or ``[IPv6:2001:db8::1]``."""
    return f"[IPv6:{ip}]" if ":" in ip else f"[{ip}]"  # a peer address: IPv4 has no colon


_HELO_CHARACTERS = frozenset(string.ascii_letters + string.digits + ".-_:[]")


def clean_helo(helo: str) -> str:
    """The client's HELO name as a header may carry it: a domain or an address literal's characters,
    so that nothing in it (``;``, ``(``, spaces) can change how the header parses."""
    cleaned = "".join(char if char in _HELO_CHARACTERS else "?" for char in helo.strip()[:MAX_HELO])
    return cleaned or "unknown"


def received_header(
    helo: str,
    client_ip: str,
    hostname: str,
    protocol: str,
    session_id: str,
    tls: str | None = None,
    when: datetime | None = None,
) -> bytes:
    """``tls``: a comment on the session's TLS, such as ``(version=TLSv1.3 cipher=... bits=256)``."""
    date = email.utils.format_datetime(when) if when is not None else _now()
    tls_line = f"\t{tls}\r\n" if tls else ""
    return (
        f"Received: from {clean_helo(helo)} ({address_literal(client_ip)})\r\n{tls_line}"
        f"\tby {hostname} (greetproxy) with {protocol} id {session_id};\r\n"
        f"\t{date}\r\n"
    ).encode()


_date = (0, "")  # (second, its RFC 5322 date): formatting costs more than the rest of the header


def _now() -> str:
    global _date
    second = int(time.time())
    if _date[0] != second:
        _date = (second, email.utils.format_datetime(datetime.fromtimestamp(second).astimezone()))
    return _date[1]
