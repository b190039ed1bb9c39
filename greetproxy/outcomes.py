"""What a connection came to, read from the log event that decided it (for metrics and reports)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

LIMITS = frozenset({"max_connections", "file_limit", "client_concurrency", "client_rate"})
PASS_VIA = {"tests": "pass", "cache": "pass_cached", "permit": "pass_permit", "dnswl": "pass_dnswl"}
GATE_FAILURES = frozenset({"backend_unavailable", "backend_busy", "handoff_failed", "proxy_protocol_error"})


def connection_outcome(event: Mapping[str, Any]) -> str | None:
    """The outcome this event decides for its connection, or None if it decides none."""
    name = event.get("event")
    if name == "pass":
        return PASS_VIA.get(event.get("via", "tests"), "pass")
    if name == "reject" and event.get("command") == "CONNECT":
        reasons = set(str(event.get("reason", "")).split(", "))
        if "pregreet" in reasons:
            return "pregreet"
        if "dnsbl" in reasons:
            return "dnsbl"
        if reasons & LIMITS:
            return "limit"
        return "access_reject" if "access" in reasons else "rejected"
    if name in GATE_FAILURES and "sender" not in event:  # a relay that fails later is no outcome
        return str(name)
    if name == "enforce":
        return "enforce"
    return None


def reply_class(reply: object) -> str:
    text = str(reply)
    return f"{text[0]}xx" if text[:1].isdigit() else "other"
