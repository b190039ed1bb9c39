"""Protocol tests after the banner, in the same session (no reconnect needed, unlike postscreen's
deep tests): a non-SMTP command (an HTTP request or header line sent to port 25), and improper
pipelining (commands before the EHLO/HELO reply, or text before the 354)."""

from __future__ import annotations

from . import Action, Finding

_HTTP_VERBS = frozenset({"GET", "POST", "CONNECT", "HEAD", "PUT", "OPTIONS", "DELETE"})


def non_smtp(verb: str, line: bytes, action: Action) -> Finding | None:
    """``verb`` is the line's first word, upper-cased: an HTTP method, or a header name such as
    ``HOST:`` or ``USER-AGENT:`` (no SMTP verb ends with a colon; ``MAIL FROM:`` has a space)."""
    if verb in _HTTP_VERBS or (verb.endswith(":") and verb[:1].isalpha()):
        return Finding("non_smtp_command", action, line[:60].decode("ascii", "replace"))
    return None


def pipelining(after: str, pending: int, action: Action) -> Finding | None:
    """``pending`` bytes were already there when the client should have waited for a reply."""
    if pending:
        return Finding("pipelining", action, f"{pending} bytes sent before the reply to {after}")
    return None
