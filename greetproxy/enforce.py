"""The enforce engine: greets a client that failed screening, never contacts the backend.

HELO/EHLO/NOOP/RSET/QUIT are answered, MAIL and RCPT are refused with 550 5.5.1, and what the
client tried (HELO name, sender, recipients) is logged, as postscreen's enforce action does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .dialogue import Conversation
from .session import Session
from .smtp.commands import address_of, argument_of
from .smtp.lines import Line
from .smtp.replies import reply

if TYPE_CHECKING:
    from .server import Proxy

_OK = reply(250, "2.0.0 OK")


class EnforceSession(Conversation):
    def __init__(self, proxy: Proxy, session: Session, reason: str) -> None:
        super().__init__(proxy, session)
        self.reason = reason
        self.helo = ""

    def on_command(self, verb: str, line: Line) -> None:
        if verb in ("HELO", "EHLO"):
            self.helo = argument_of(line.text).decode("utf-8", "replace")
            self.send(reply(250, self.hostname))
        elif verb in ("NOOP", "RSET"):
            self.send(_OK)
        elif verb == "QUIT":
            self.send(reply(221, f"2.0.0 {self.hostname} closing connection"))
            self.end("quit")
        elif verb in ("MAIL", "RCPT"):
            address = address_of(argument_of(line.text))
            self.refuse(
                verb, 550, "5.5.1 Protocol error", self.reason, enforced=True, address=address, helo=self.helo
            )
        else:
            self.refuse(verb, 503, "5.5.1 Protocol error", self.reason, enforced=True)
