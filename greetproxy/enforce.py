"""The enforce engine: greets a client that failed screening, never contacts the backend.

HELO/EHLO/NOOP/RSET/QUIT are answered, MAIL and RCPT are refused with 550 5.5.1, and what the
client tried (HELO name, sender, recipients) is logged, as postscreen's enforce action does.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from .dialogue import ClientDialogue
from .session import Session
from .smtp.commands import address_of, argument_of
from .smtp.lines import Line
from .smtp.replies import reply

if TYPE_CHECKING:
    from .server import Proxy

_OK = reply(250, "2.0.0 OK")


class EnforceSession(ClientDialogue):
    def __init__(
        self,
        proxy: Proxy,
        session: Session,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        reason: str,
    ) -> None:
        super().__init__(proxy, session, reader, writer)
        self.reason = reason
        self.helo = ""

    async def converse(self, first: tuple[str, Line] | None = None) -> str:
        """``first``: a command already read (the relay hands over mid-session)."""
        command = first
        while True:
            if command is None:
                command = await self.next_command()
                if command is None:
                    return "client_hangup"
            (verb, line), command = command, None
            if verb in ("HELO", "EHLO"):
                self.helo = argument_of(line.text).decode("utf-8", "replace")
                await self._send(reply(250, self.hostname))
            elif verb in ("NOOP", "RSET"):
                await self._send(_OK)
            elif verb == "QUIT":
                await self._send(reply(221, f"2.0.0 {self.hostname} closing connection"))
                return "quit"
            elif verb in ("MAIL", "RCPT"):
                address = address_of(argument_of(line.text))
                await self.refuse(
                    verb,
                    550,
                    "5.5.1 Protocol error",
                    self.reason,
                    enforced=True,
                    address=address,
                    helo=self.helo,
                )
            else:
                await self.refuse(verb, 503, "5.5.1 Protocol error", self.reason, enforced=True)
            if await self.too_many_errors():
                return "too_many_errors"
