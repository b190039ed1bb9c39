"""Client command lines: the verb, the length limits, and which verbs the relay passes on."""

from __future__ import annotations

COMMAND_LINE_LIMIT = 512  # octets including CRLF, RFC 5321 4.5.3.1.4
# MAIL and RCPT carry extension parameters (SIZE, BODY, SMTPUTF8, DSN's ENVID/RET/NOTIFY/ORCPT);
# RFC 3461 alone allows RCPT 500 more octets.
PARAMETER_LINE_LIMIT = COMMAND_LINE_LIMIT + 500

# Commands the backend answers. Everything else (AUTH, STARTTLS, BDAT, XCLIENT, VERB, ETRN, ...)
# belongs to an extension the proxy does not offer, and is answered by the proxy itself.
RELAYED_VERBS = frozenset(
    {"HELO", "EHLO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "VRFY", "EXPN", "HELP"}
)


def verb_of(line: bytes) -> str:
    return line.split(b" ", 1)[0].decode("ascii", "replace").upper()


def argument_of(line: bytes) -> bytes:
    parts = line.split(b" ", 1)
    return parts[1].strip() if len(parts) > 1 else b""


def line_limit(verb: str) -> int:
    return PARAMETER_LINE_LIMIT if verb in ("MAIL", "RCPT") else COMMAND_LINE_LIMIT


def address_of(argument: bytes) -> str:
    """The path in ``FROM:<a@b> SIZE=1`` or ``TO:<a@b>``; ``<>`` is the null sender."""
    text = argument.decode("utf-8", "replace")
    start, end = text.find("<"), text.find(">")
    if start < 0 or end < start:
        return text.partition(":")[2].strip().split(" ", 1)[0]
    return text[start + 1 : end]
