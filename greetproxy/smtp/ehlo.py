"""What the client is told about the backend: its EHLO/HELO reply, renamed and filtered."""

from __future__ import annotations

from .replies import Reply

# Extensions the relay carries byte for byte. Everything else is withheld: CHUNKING/BDAT and
# BINARYMIME (BDAT is not relayed), PIPECONNECT (clients would talk before the banner), the
# backend's STARTTLS (the proxy offers its own), AUTH, XCLIENT, XFORWARD (they would hand the
# proxy's trust to the client), VERB, ETRN.
RELAYED_EXTENSIONS = frozenset(
    {"SIZE", "8BITMIME", "SMTPUTF8", "DSN", "PIPELINING", "ENHANCEDSTATUSCODES", "DELIVERBY", "HELP"}
)


def greeting_line(hostname: str, client_ip: str) -> bytes:
    return f"{hostname} Hello [{client_ip}], pleased to meet you".encode()


def filter_ehlo(reply: Reply, hostname: str, client_ip: str, starttls: bool = False) -> Reply:
    """Name the proxy on the first line and keep only the extensions the relay supports; offer
    the proxy's own STARTTLS if ``starttls``."""
    if reply.code != 250:
        return reply
    kept = tuple(line for line in reply.lines[1:] if keyword(line) in RELAYED_EXTENSIONS)
    offered = (b"STARTTLS",) if starttls else ()
    return Reply(250, (greeting_line(hostname, client_ip), *kept, *offered))


def keyword(line: bytes) -> str:
    return line.split(b" ", 1)[0].decode("ascii", "replace").upper()


def extensions(reply: Reply) -> frozenset[str]:
    return frozenset(keyword(line) for line in reply.lines[1:])
