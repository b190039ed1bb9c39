"""The Received: header the proxy writes at the top of every message it relays."""

from __future__ import annotations

import email.utils
import ipaddress
from datetime import datetime

MAX_HELO = 255


def address_literal(ip: str) -> str:
    """RFC 5321 4.1.3: ``[192.0.2.1]`` or ``[IPv6:2001:db8::1]``."""
    return f"[IPv6:{ip}]" if ipaddress.ip_address(ip).version == 6 else f"[{ip}]"


def clean_helo(helo: str) -> str:
    """The client's HELO name as a header may carry it: printable ASCII, no spaces or parentheses."""
    cleaned = "".join(char if "!" <= char <= "~" and char not in "()\\" else "?" for char in helo[:MAX_HELO])
    return cleaned or "unknown"


def received_header(
    helo: str, client_ip: str, hostname: str, protocol: str, session_id: str, when: datetime | None = None
) -> bytes:
    date = email.utils.format_datetime(when or datetime.now().astimezone())
    return (
        f"Received: from {clean_helo(helo)} ({address_literal(client_ip)})\r\n"
        f"\tby {hostname} (greetproxy) with {protocol} id {session_id};\r\n"
        f"\t{date}\r\n"
    ).encode()
