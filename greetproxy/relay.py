"""The relay: after the client passed, every command goes to the backend and every reply back.

Driven by callbacks on both connections (see dialogue.py): a client line is checked and written
to the backend in the loop turn it arrived in; the backend's reply is written to the client in the
turn it arrived in. One command is with the backend at a time, in the order the client sent them
(pipelined commands keep their order; the backend sees them one by one). Message text streams
through the BodyScanner chunk by chunk, so memory does not grow with message size, and a full
backend socket pauses reading from the client.

Two steps need a task of their own, briefly: the STARTTLS handshake, and a new backend connection
in place of one that holds half a refused message.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING

from .backend import BackendFailure, BackendLink
from .dialogue import Conversation
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
from .tls import TlsInfo, describe_failure

if TYPE_CHECKING:
    from .server import Proxy

# What the backend owes a reply to, besides a client's verb:
END_OF_DATA = "end of data"  # the message text is through
RESUMED = "resumed"  # the EHLO/HELO that resumes the session on a new backend connection


class RelaySession(Conversation):
    def __init__(self, proxy: Proxy, session: Session, backend: BackendLink) -> None:
        super().__init__(proxy, session)
        self.backend = backend
        self.expecting: str | None = None  # what the backend owes a reply to
        self.command_line = b""  # the client's line behind it
        self.text: BodyScanner | None = None  # message text is streaming to the backend
        self.header = b""  # the Received header, sent with the first text
        self.message_size = 0  # octets of the message text last passed on
        self.backend_full = False  # the backend's socket buffer is full: the client waits
        self.starting_tls = False
        self.discarded = 0  # plain text that came after STARTTLS
        self.step: asyncio.Task[None] | None = None  # a TLS handshake, or a new backend connection
        self.helo: bytes | None = None
        self.helo_verb = b"EHLO"
        self.sender: str | None = None
        self.recipients = 0
        self.smtputf8 = False

    def _started(self) -> None:
        self.backend.listen(self)

    def close(self) -> None:
        self.backend.close()
        if self.step is not None:
            self.step.cancel()
            self.step = None

    # -- the client's side -------------------------------------------------------------------

    def receive(self, data: bytes) -> None:
        if self.text is not None:
            self._message_text(data)
        elif self.starting_tls:
            self.discarded += len(data)  # plain text after STARTTLS: never run inside TLS
        else:
            super().receive(data)

    def on_client_eof(self) -> None:
        if self.text is not None or self.starting_tls:
            self.end("client_hangup")
        else:
            super().on_client_eof()

    def on_command(self, verb: str, line: Line) -> None:
        finding = self._screen(verb, line.text)
        if finding is not None and self._act_on(finding, verb, line):
            return
        if verb == "STARTTLS" and self.proxy.tls is not None:
            self._starttls(line.text)
        elif verb in ("MAIL", "RCPT", "DATA") and self.helo is None and self.session.tls is not None:
            # RFC 3207 4.2: after the handshake the client starts again with EHLO
            self.refuse(verb, 503, "5.5.1 send EHLO first: TLS started a new session", "no_ehlo")
        elif verb not in RELAYED_VERBS:
            self.refuse(verb, 502, "5.5.1 command not implemented", "not_relayed")
        else:
            self._ask(verb, line.text + b"\r\n", line.text)

    def _screen(self, verb: str, line: bytes) -> Finding | None:
        """The protocol tests after the banner; ``self.lines`` holds what came after the command."""
        found = non_smtp(verb, line, self.proxy.non_smtp_action)
        if found is None and verb in ("EHLO", "HELO", "DATA"):
            found = pipelining(verb, len(self.lines), self.proxy.pipelining_action)
        return found

    def _act_on(self, finding: Finding, verb: str, line: Line) -> bool:
        """Log a failed protocol test and apply its action. True: the command is dealt with (the
        session ended, went to the enforce engine, or the line is ignored)."""
        self.session.log.info(finding.test, detail=finding.detail, action=finding.action.name.lower())
        self.proxy.forget(self.session.client_ip)
        verdict = self.proxy.decide(self.session, [finding])
        if verdict.passed:
            return finding.test == "non_smtp_command"  # ignored, but never passed to the backend
        if verdict.action is Action.DROP:
            self.refuse(verb, 554, "5.5.1 Protocol error", finding.test)
            self.end("rejected")
            return True
        # enforce: the backend is let go, the enforce engine answers from this command on
        self.close()
        EnforceSession(self.proxy, self.session, finding.test).take_over(self, (verb, line))
        return True

    def _ask(self, what: str, data: bytes, line: bytes) -> None:
        """Send ``data`` to the backend and wait for its reply to ``what``."""
        self.busy = True
        try:
            self.backend.write(data)
        except BackendFailure as failure:
            self._backend_lost(str(failure))
            return
        self.expecting, self.command_line = what, line
        self.watchdog.begin("backend")

    # -- the backend's side ------------------------------------------------------------------

    def on_reply(self, answer: Reply) -> None:
        try:
            self._reply(answer)
        except Exception as error:
            self.crashed(error)

    def on_backend_lost(self, reason: str) -> None:
        try:
            self._backend_lost(reason)
        except Exception as error:
            self.crashed(error)

    def on_backend_full(self, full: bool) -> None:
        self.backend_full = full
        self._reading()
        if self.text is not None:
            self.watchdog.begin("backend" if full else "client")

    def _hold_reading(self) -> bool:
        return self.blocked or self.backend_full

    def _reply(self, answer: Reply) -> None:
        what, line = self.expecting, self.command_line
        if self.ended:
            return
        if what is None:
            self._backend_lost(f"backend sent a reply nobody asked for: {answer}")
            return
        self.expecting = None
        self.watchdog.end()
        if what == END_OF_DATA:
            self._message_done(answer)
        elif what == RESUMED:
            if answer.code != 250:
                self._backend_lost(f"backend refused {self.helo_verb.decode()} after a restart: {answer}")
                return
            self.answered()
        elif what == "DATA":
            self._answer(what, answer, line)
            if answer.code == 354:
                self._start_text()
            else:
                self.answered()
        else:
            self._answer(what, self._observe(what, line, answer), line)
            if what == "QUIT":
                self.end("quit")
            else:
                self.answered()

    def _backend_lost(self, reason: str) -> None:
        if self.ended:
            return
        self.session.log.warning("backend_unavailable", reason=reason, sender=self.sender)
        self.last_words(
            421,
            f"4.3.2 {self.hostname} service not available, closing transmission channel",
            "backend_failure",
        )

    def on_expired(self, what: str) -> None:
        if what == "backend":
            self._backend_lost(f"no reply from the backend within {self.proxy.config.command_timeout:g}s")
        else:
            super().on_expired(what)

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

    def _answer(self, verb: str, answer: Reply, line: bytes) -> None:
        if answer.is_error:
            self.errors += 1
            fields = {"address": address_of(argument_of(line))} if verb in ("MAIL", "RCPT") else {}
            self.session.log.info(
                "reject", code=answer.code, command=verb, reply=answer.text, by="backend", **fields
            )
        self.send(answer.raw)

    def _reset_transaction(self) -> None:
        self.sender = None
        self.recipients = 0
        self.smtputf8 = False

    # -- message text ------------------------------------------------------------------------

    def _start_text(self) -> None:
        """After the backend's 354: what the client sends is message text until its end of data."""
        self.text = BodyScanner()
        self.header = self._received()
        self._message_text(self.lines.take_buffer())

    def _message_text(self, data: bytes) -> None:
        scanner = self.text
        assert scanner is not None
        self.watchdog.begin("backend" if self.backend_full else "client")
        step = scanner.feed(data)
        if step.forward:  # the header goes with the first text: one write, one wake-up of the backend
            try:
                self.backend.write(self.header + step.forward)
            except BackendFailure as failure:
                self._backend_lost(str(failure))
                return
            self.header = b""
        if not step.done:
            return
        self.text = None
        self.lines.feed(step.rest)
        if scanner.problem is not None:
            code, status = (500, "5.5.2") if scanner.problem == LONG_LINE else (554, "5.6.0")
            self.refuse("DATA", code, f"{status} message refused: {scanner.problem}", scanner.problem)
            self._reset_transaction()
            self._restart_backend()  # it holds half a message that must never be completed
            return
        self.message_size = scanner.size
        self.expecting, self.command_line = END_OF_DATA, b"DATA"
        self.watchdog.begin("backend")

    def _message_done(self, answer: Reply) -> None:
        self.session.log.info(
            "message",
            sender=self.sender,
            recipients=self.recipients,
            size=self.message_size,
            reply=str(answer),
            **self.session.tls_fields(),
        )
        if answer.code < 300:
            self.session.messages += 1
        self._answer("DATA", answer, b"DATA")
        self._reset_transaction()
        self.answered()

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

    def _restart_backend(self) -> None:
        self.busy = True
        self.watchdog.begin("backend")
        self.step = self.proxy.spawn(self._reconnect())

    async def _reconnect(self) -> None:
        try:
            self.backend = await self.proxy.pool.reconnect(self.session, self.backend)
        except BackendFailure as failure:
            self.step = None
            self._backend_lost(str(failure))
            return
        except Exception as error:
            self.step = None
            self.crashed(error)
            return
        self.step = None
        if self.ended:
            self.backend.close()
            return
        self.backend.listen(self)
        if self.ended:
            return
        if self.helo is not None:
            self._ask(RESUMED, self.helo_verb + b" " + self.helo + b"\r\n", b"")
        else:
            self.answered()

    # -- STARTTLS ----------------------------------------------------------------------------

    def _starttls(self, line: bytes) -> None:
        if self.session.tls is not None:
            self.refuse("STARTTLS", 503, "5.5.1 TLS already active", "tls_active")
        elif argument_of(line):
            self.refuse("STARTTLS", 501, "5.5.4 syntax error (no parameters allowed)", "syntax")
        elif self.helo is None or self.helo_verb != b"EHLO":
            self.refuse("STARTTLS", 503, "5.5.1 send EHLO first", "no_ehlo")
        else:
            self.send(reply(220, "2.0.0 Ready to start TLS"))
            # Whatever the client pipelined behind STARTTLS in plain text is dropped, never read as
            # if it had come inside TLS (the STARTTLS command-injection family, CVE-2021-38371,
            # CVE-2024-34083); so is what comes before the handshake takes the connection.
            self.discarded = len(self.lines.take_buffer())
            self.starting_tls = self.busy = True
            self.watchdog.end()  # the handshake has a timeout of its own
            self.step = self.proxy.spawn(self._handshake())

    async def _handshake(self) -> None:
        assert self.transport is not None and self.proxy.tls is not None
        try:
            transport = await asyncio.get_running_loop().start_tls(
                self.transport,
                self,
                self.proxy.tls,
                server_side=True,
                ssl_handshake_timeout=self.proxy.config.command_timeout,
            )
            if transport is None:
                raise ConnectionResetError("connection closed during the TLS handshake")
        except (ssl.SSLError, OSError, TimeoutError) as error:
            self.step = None
            self.session.log.info("tls_error", reason=describe_failure(error), discarded=self.discarded)
            self.end("tls_error")
            return
        self.step = None
        self.transport = transport
        self.starting_tls = False
        if self.ended:
            transport.close()
            return
        self.session.tls = TlsInfo.of(transport)
        self.session.log.info("tls", discarded=self.discarded, **self.session.tls_fields())
        # RFC 3207 4.2: what the client said before is forgotten; its next EHLO resets the backend
        self.helo = None
        self._reset_transaction()
        try:
            self.answered()
        except Exception as error:
            self.crashed(error)
