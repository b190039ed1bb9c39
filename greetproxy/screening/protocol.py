"""Protocol tests after the banner, in the same session (no reconnect needed, unlike postscreen's
deep tests): a non-SMTP command (an HTTP request or header line sent to port 25), and improper
pipelining (commands before the EHLO/HELO reply, or text before the 354)."""

from __future__ import annotations

import re

from . import Action, Finding

_HTTP_VERBS = (b"GET ", b"POST ", b"CONNECT ", b"HEAD ", b"PUT ", b"OPTIONS ", b"DELETE ")
_HEADER_LINE = re.compile(rb"[A-Za-z][A-Za-z0-9-]*:")  # "Host:", "User-Agent:"; SMTP verbs have a space


def non_smtp(line: bytes, action: Action) -> Finding | None:
    if line.upper().startswith(_HTTP_VERBS) or _HEADER_LINE.match(line):
        return Finding("non_smtp_command", action, line[:60].decode("ascii", "replace"))
    return None


def pipelining(after: str, pending: int, action: Action) -> Finding | None:
    """``pending`` bytes were already there when the client should have waited for a reply."""
    if pending:
        return Finding("pipelining", action, f"{pending} bytes sent before the reply to {after}")
    return None
