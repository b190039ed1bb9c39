"""The relay: after the client passed, every command goes to the backend and every reply back.

One task per session, one command at a time, in the order the client sent them (pipelined
commands keep their order; the backend sees them one by one). Message text streams through
the BodyScanner in chunks, so memory does not grow with message size.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING

from .backend import BackendFailure, BackendLink
from .dialogue import ClientDialogue, ClientGone
from .enforce import EnforceSession
from .screening import Action, Finding
from .screening.protocol import non_smtp, pipelining
from .session import Session
from .smtp.body import LONG_LINE, BodyScanner
from .smtp.commands import RELAYED_VERBS, address_of, argument_of
from .smtp.ehlo import filter_ehlo, greeting_line
from .smtp.lines import Line
from .smtp.received import received_header
from .smtp.replies import Reply, reply
from .tls import TlsInfo, describe_failure, start_tls

if TYPE_CHECKING:
    from .server import Proxy


class RelaySession(ClientDialogue):
    def __init__(
        self,
        proxy: Proxy,
        session: Session,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        backend: BackendLink,
    ) -> None:
        super().__init__(proxy, session, reader, writer)
        self.backend = backend
        self.helo: bytes | None = None
        self.helo_verb = b"EHLO"
        self.sender: str | None = None
        self.recipients = 0
        self.smtputf8 = False

    def close(self) -> None:
        self.backend.close()

    async def converse(self) -> str:
        try:
            return await self._relay_commands()
        except BackendFailure as failure:
            return await self._backend_lost(str(failure))

    async def _cancelled(self, expired: str | None) -> str:
        if expired == "backend":
            return await self._backend_lost(
                f"no reply from the backend within {self.proxy.config.command_timeout:g}s"
            )
        return await super()._cancelled(expired)

    async def _backend_lost(self, reason: str) -> str:
        self.session.log.warning("backend_unavailable", reason=reason, sender=self.sender)
        await self._last_words(
            421, f"4.3.2 {self.hostname} service not available, closing transmission channel"
        )
        return "backend_failure"

    async def _backend(self, line: bytes | None = None) -> Reply:
        """Send ``line`` (if any) and wait, under the watchdog, for the backend's reply."""
        assert self.watchdog is not None
        self.watchdog.begin("backend")
        try:
            return await (self.backend.reply() if line is None else self.backend.command(line))
        finally:
            self.watchdog.end()

    async def _relay_commands(self) -> str:
        while True:
            command = await self.next_command()
            if command is None:
                return "client_hangup"
            verb, line = command
            finding = self._screen(verb, line.text)
            if finding is not None:
                outcome = await self._act_on(finding, command)
                if outcome is not None:
                    return outcome
                if finding.test == "non_smtp_command":
                    continue  # ignored, but never passed to the backend
            if verb == "STARTTLS" and self.proxy.tls is not None:
                if not await self._starttls(line.text):
                    return "tls_error"
            elif verb in ("MAIL", "RCPT", "DATA") and self.helo is None and self.session.tls is not None:
                # RFC 3207 4.2: after the handshake the client starts again with EHLO
                await self.refuse(verb, 503, "5.5.1 send EHLO first: TLS started a new session", "no_ehlo")
            elif verb not in RELAYED_VERBS:
                await self.refuse(verb, 502, "5.5.1 command not implemented", "not_relayed")
            elif verb == "DATA":
                await self._data(line.text)
            else:
                answer = self._observe(verb, line.text, await self._backend(line.text))
                await self._answer(verb, answer, line.text)
                if verb == "QUIT":
                    return "quit"
            if await self.too_many_errors():
                return "too_many_errors"

    def _screen(self, verb: str, line: bytes) -> Finding | None:
        """The protocol tests after the banner; ``self.lines`` holds what came after the command."""
        found = non_smtp(verb, line, self.proxy.non_smtp_action)
        if found is None and verb in ("EHLO", "HELO", "DATA"):
            found = pipelining(verb, len(self.lines), self.proxy.pipelining_action)
        return found

    async def _act_on(self, finding: Finding, command: tuple[str, Line]) -> str | None:
        """Log a failed protocol test and apply its action; an outcome ends the session."""
        self.session.log.info(finding.test, detail=finding.detail, action=finding.action.name.lower())
        self.proxy.forget(self.session.client_ip)
        verdict = self.proxy.decide(self.session, [finding])
        if verdict.passed:
            return None
        if verdict.action is Action.DROP:
            await self.refuse(command[0], 554, "5.5.1 Protocol error", finding.test)
            return "rejected"
        # enforce: the backend is let go, the enforce engine answers from this command on
        self.backend.close()
        engine = EnforceSession(self.proxy, self.session, self.reader, self.writer, finding.test)
        engine.lines, engine.errors, engine.task, engine.watchdog = (
            self.lines,
            self.errors,
            self.task,
            self.watchdog,
        )
        self.proxy.swap(self, engine)
        try:
            return await engine.converse(first=command)
        finally:
            self.proxy.swap(engine, self)

    def _observe(self, verb: str, line: bytes, answer: Reply) -> Reply:
        """Track the transaction and rewrite the greeting replies to name the proxy."""
        if answer.code >= 300:
            return answer
        if verb in ("EHLO", "HELO"):
            self.helo = argument_of(line)
            self.helo_verb = verb.encode()
            self._reset_transaction()
            if verb == "EHLO":
                offer = self.proxy.tls is not None and self.session.tls is None
                return filter_ehlo(answer, self.hostname, self.session.client_ip, starttls=offer)
            return Reply(answer.code, (greeting_line(self.hostname, self.session.client_ip),))
        if verb == "MAIL":
            argument = argument_of(line)
            self.sender = address_of(argument)
            self.smtputf8 = b"SMTPUTF8" in argument.upper()
            self.recipients = 0
        elif verb == "RCPT":
            self.recipients += 1
        elif verb == "RSET":
            self._reset_transaction()
        return answer

    async def _starttls(self, line: bytes) -> bool:
        """Answer STARTTLS; False if the handshake failed (the connection is gone then)."""
        if self.session.tls is not None:
            await self.refuse("STARTTLS", 503, "5.5.1 TLS already active", "tls_active")
            return True
        if argument_of(line):
            await self.refuse("STARTTLS", 501, "5.5.4 syntax error (no parameters allowed)", "syntax")
            return True
        if self.helo is None or self.helo_verb != b"EHLO":
            await self.refuse("STARTTLS", 503, "5.5.1 send EHLO first", "no_ehlo")
            return True
        await self._send(reply(220, "2.0.0 Ready to start TLS"))
        discarded = len(self.lines.take_buffer())  # pipelined in plain text: never run inside TLS
        assert self.watchdog is not None and self.proxy.tls is not None
        self.watchdog.begin("client")
        try:
            self.reader, self.writer = await start_tls(
                self.writer, self.proxy.tls, self.proxy.config.command_timeout
            )
        except (ssl.SSLError, OSError, TimeoutError) as error:
            self.session.log.info("tls_error", reason=describe_failure(error), discarded=discarded)
            return False
        finally:
            self.watchdog.end()
        self.session.tls = TlsInfo.of(self.writer.transport)
        self.session.log.info("tls", discarded=discarded, **self.session.tls_fields())
        # RFC 3207 4.2: what the client said before is forgotten; its next EHLO resets the backend
        self.helo = None
        self._reset_transaction()
        return True

    def _reset_transaction(self) -> None:
        self.sender = None
        self.recipients = 0
        self.smtputf8 = False

    async def _data(self, line: bytes) -> None:
        answer = await self._backend(line)
        if answer.code != 354:
            await self._answer("DATA", answer, line)
            return
        await self._answer("DATA", answer, line)
        scanner = BodyScanner()
        step = scanner.feed(self.lines.take_buffer())
        header = self._received()  # goes out with the first text, saving a write
        while True:
            if step.forward or header:
                await self.backend.send(header + step.forward)
                header = b""
            if step.done:
                break
            data = await self._read()
            if not data:
                raise ClientGone
            step = scanner.feed(data)
        self.lines.feed(step.rest)
        if scanner.problem is not None:
            code, status = (500, "5.5.2") if scanner.problem == LONG_LINE else (554, "5.6.0")
            await self.refuse("DATA", code, f"{status} message refused: {scanner.problem}", scanner.problem)
            self._reset_transaction()
            await self._restart_backend()  # it holds half a message that must never be completed
            return
        answer = await self._backend()
        self.session.log.info(
            "message",
            sender=self.sender,
            recipients=self.recipients,
            size=scanner.size,
            reply=str(answer),
            **self.session.tls_fields(),
        )
        if answer.code < 300:
            self.session.messages += 1
        await self._answer("DATA", answer, line)
        self._reset_transaction()

    def _received(self) -> bytes:
        tls = self.session.tls
        if self.helo_verb == b"EHLO":  # RFC 3848 and RFC 6531 names: ESMTPS, UTF8SMTPS
            protocol = ("UTF8SMTP" if self.smtputf8 else "ESMTP") + ("S" if tls is not None else "")
        else:
            protocol = "SMTP"
        helo = (self.helo or b"").decode("utf-8", "replace")
        return received_header(
            helo,
            self.session.client_ip,
            self.hostname,
            protocol,
            self.session.id,
            tls=tls.comment() if tls is not None else None,
        )

    async def _restart_backend(self) -> None:
        self.backend = await self.proxy.pool.reconnect(self.session, self.backend)
        if self.helo is not None:
            answer = await self._backend(self.helo_verb + b" " + self.helo)
            if answer.code != 250:
                raise BackendFailure(f"backend refused {self.helo_verb.decode()} after a restart: {answer}")

    async def _answer(self, verb: str, answer: Reply, line: bytes) -> None:
        if answer.is_error:
            self.errors += 1
            fields = {"address": address_of(argument_of(line))} if verb in ("MAIL", "RCPT") else {}
            self.session.log.info(
                "reject", code=answer.code, command=verb, reply=answer.text, by="backend", **fields
            )
        await self._send(answer.raw)
