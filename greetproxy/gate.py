"""The gate: a small Protocol that holds a new connection through the greet pause.

While a client waits it costs this object, its Session and one timer handle: no task, no
SMTP engine, no backend connection. When the pause ends the verdict decides where the
connection goes: dropped, to the enforce engine, or (after the backend greeted) to the relay.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import TYPE_CHECKING

from .backend import BackendFailure, BackendLink
from .dialogue import Conversation
from .enforce import EnforceSession
from .handoff import Handoff, HandoffFailure, duplicate_socket
from .pool import BackendBusy, Slot
from .proxy_protocol import ProxyHeader, ProxyHeaderError
from .relay import RelaySession
from .screening import Action, Finding, Verdict
from .screening.access import AccessAction
from .screening.dnsbl import DnsblScore
from .screening.pregreet import Pregreet
from .session import Session
from .shared import SharedAnswer, StateUnavailable
from .smtp.replies import reply

if TYPE_CHECKING:
    from .server import Proxy

HOLD_LIMIT = 65536  # early-talk bytes kept for replay (ignore) or the enforce engine


def banner(hostname: str) -> bytes:
    return f"220 {hostname} ESMTP\r\n".encode()


class Gate(asyncio.Protocol):
    __slots__ = (
        "proxy",
        "transport",
        "session",
        "pregreet",
        "reported",
        "held",
        "timer",
        "handed",
        "banner_at",
        "banner_due",
        "queued",
        "waiting",
        "via",
        "dns",
        "dns_result",
        "fleet",
        "lookups_waiting",
        "header",
    )

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.pregreet: Pregreet | None = None
        self.reported = False
        self.held = b""
        self.timer: asyncio.TimerHandle | None = None
        self.handed = False  # the connection belongs to the relay or the enforce engine now
        self.queued: asyncio.Task[None] | None = None  # waiting for a backend connection
        self.waiting = False  # counted among the connections in the pause
        self.dns: asyncio.Task[DnsblScore] | None = None  # the DNSBL lookup, shared per address
        self.dns_result: DnsblScore | None = None
        self.fleet: asyncio.Task[SharedAnswer] | None = None  # the fleet's counts and pass, in Redis
        self.lookups_waiting = False  # the pause is over; the verdict waits for a lookup
        self.header: ProxyHeader | None = None  # awaited from a load balancer before anything else

    # -- asyncio callbacks -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        peer = transport.get_extra_info("peername") or ("unknown", 0)
        self.session = Session(peer[0], peer[1])
        refused = self.proxy.admit(self)
        if refused is not None:
            self._turn_away(refused)
            return
        if self.proxy.behind_balancer(self.session.client_ip):
            self.header = ProxyHeader()
            timeout = self.proxy.config.proxy_protocol_timeout
            self.timer = self.proxy.loop.call_later(timeout, self._header_late)
            return
        self._begin()

    def _turn_away(self, limit: str, **fields: object) -> None:
        """A limit refuses the connection: 421 and close, before anything else happens."""
        self.session.finished = True  # one event says it all under a flood
        # out of descriptors, the proxy's own file_limit warning (once a second) speaks for all
        level = logging.DEBUG if limit == "file_limit" else logging.WARNING
        self.session.log.log(level, "reject", code=421, reason=limit, command="CONNECT", **fields)
        hostname = self.proxy.config.hostname
        self._write(reply(421, f"4.7.0 {hostname} too many connections, try again later"))
        self.transport.close()

    def _begin(self) -> None:
        """The client is known (its own address, or the one a PROXY header gave): screen it."""
        proxy, config, ip = self.proxy, self.proxy.config, self.session.client_ip
        entry = proxy.access.lookup(ip)
        access = entry.action if entry is not None else None
        refused = proxy.limit(self.session, exempt=access is AccessAction.PERMIT)
        if refused is not None and not config.dry_run:
            self._turn_away(refused)
            return
        if self.session.log.is_enabled_for(logging.INFO):  # the local address costs a system call
            local = str(self.transport.get_extra_info("sockname")[0])
            if entry is None:
                self.session.log.info("connect", local=local)
            else:
                self.session.log.info("connect", local=local, access=access.value, access_entry=entry.source)
        if refused is not None:
            self.session.log.info("dry_run", would="reject", reason=refused)
        if access is AccessAction.REJECT:
            if not config.dry_run:
                self._refuse(554, f"5.7.1 Service unavailable; client [{ip}] blocked", "access")
                return
            self.session.log.info("dry_run", would="reject", reason="access")
        # Permitted clients skip every test; a remembered pass skips the pause (postscreen's PASS OLD).
        # Under Redis the fleet's pass decides, when its answer comes; this host's own, if it fails.
        shared = proxy.shared if proxy.shared is not None and proxy.shared.available else None
        self.via = "tests"
        if access is AccessAction.PERMIT:
            self.via = "permit"
        elif shared is not None:
            self.fleet = self.proxy.loop.create_task(
                shared.admit(self.session.id, ip, proxy.cache_key(ip), limits=True, dry_run=config.dry_run)
            )
            self.fleet.add_done_callback(self._fleet_answered)
        elif proxy.cached_pass(ip):
            self.via = "cache"
        if self.via == "tests" and proxy.dnsbl is not None:  # runs during the pause, not after it
            self.dns = proxy.dnsbl.lookup(ip)
            self.dns.add_done_callback(self._dns_answered)
        if config.greet_banner:
            self._write(f"220-{config.hostname} {config.greet_banner}\r\n".encode())
        loop = self.proxy.loop
        self.waiting = True
        if self.via != "tests":
            pause = proxy.wait_begins(0.0)
        else:
            own = entry.pause if access is AccessAction.PAUSE else None
            pause = proxy.wait_begins(config.greet_pause if own is None else own)
            # A random extra pause spreads clients that arrived together, so they do not all reach
            # the backend in the same instant.
            pause += random.uniform(0, proxy.jitter) if pause else 0.0
        self.banner_at = loop.time() + pause
        self.banner_due = self.session.started + pause  # on the precise clock, see _pass_on
        # The backend is connected a little ahead of the pause's end, so that the banner goes out
        # on time rather than one backend greeting late.
        self.timer = loop.call_later(pause - proxy.pool.lead(pause), self._pause_over)

    def data_received(self, data: bytes) -> None:
        if self.header is not None:
            self._header_received(data)
            return
        self.session.bytes_in += len(data)
        if self.pregreet is None:
            self.pregreet = Pregreet(after=self.session.age)
        self.pregreet.add(data)
        # A permitted client skips every test: its bytes are held and relayed as they are.
        drop = self.proxy.pregreet_action is Action.DROP and not self.proxy.config.dry_run
        if drop and self.via != "permit":
            self._report_pregreet()
            self.proxy.forget(self.session.client_ip)
            self._refuse(554, "5.5.1 Protocol error: talked before the greeting", "pregreet")
            return
        self.held += data
        if len(self.held) > HOLD_LIMIT:
            self.transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.handed:
            return
        self._stop_waiting()
        if self.timer is not None:
            self.timer.cancel()
        if self.queued is not None:
            self.queued.cancel()  # gives up its place in the backend queue
        if self.header is not None:
            self.header.close()
        self.session.finish("pregreet_hangup" if self.pregreet else "hangup")
        self.proxy.release(self)

    # -- the PROXY header of a load balancer --------------------------------------------------

    def _header_received(self, data: bytes) -> None:
        assert self.header is not None
        try:
            header = self.header.feed(data)
        except ProxyHeaderError as error:
            self.header = None
            self._proxy_failure(str(error), data[:64])
            return
        if header is None:
            return
        self.header = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        balancer = self.session.client_ip
        if header.client is not None:
            self.session.behind(*header.client, balancer=balancer)
        else:
            self.session.log.info("proxy_protocol", version=header.version, command="local")
        self._begin()
        if header.leftover and not self.transport.is_closing():
            self.data_received(header.leftover)  # the client's own early talk

    def _header_late(self) -> None:
        self.timer = None
        self._proxy_failure(f"no PROXY header within {self.proxy.config.proxy_protocol_timeout:g}s", b"")

    def _proxy_failure(self, error: str, sample: bytes) -> None:
        """A load balancer that does not speak the PROXY protocol (a configuration mistake, or
        someone else at its address): nothing is answered, the connection closes."""
        self.session.log.warning("proxy_protocol_error", error=error, sample=sample)
        self.session.finish("proxy_protocol_error")
        self.transport.abort()

    # -- decisions ---------------------------------------------------------------------------

    def _findings(self) -> list[Finding]:
        if self.via in ("permit", "dnswl"):
            return []
        findings = [self.pregreet.finding(self.proxy.pregreet_action)] if self.pregreet else []
        if self.via == "tests" and self.dns_result is not None and self.proxy.dnsbl is not None:
            listed = self.proxy.dnsbl.finding(self.dns_result, self.proxy.dnsbl_action)
            if listed is not None:
                findings.append(listed)
        return findings

    def _dns_answered(self, task: asyncio.Task[DnsblScore]) -> None:
        if self.handed or self.session.finished or task.cancelled():
            return
        self.dns_result = result = task.result()
        self.session.log.info(
            "dnsbl",
            score=result.score,
            listed=[f"{listing.domain}={listing.answer}" for listing in result.listings],
            errors=[
                f"{error.domain}: {error.kind} {error.answer or error.detail}" for error in result.errors
            ],
        )
        assert self.proxy.dnsbl is not None
        if self.via == "tests" and self.proxy.dnsbl.allowlisted(result):
            self._skip_pause("dnswl")  # a DNSWL-listed client waits no longer and skips the other tests
        elif self.lookups_waiting:
            self._pause_over()

    def _fleet_answered(self, task: asyncio.Task[SharedAnswer]) -> None:
        if self.handed or self.session.finished or task.cancelled():
            return  # the lease of a connection that ended meanwhile is the shared state's to drop
        error = task.exception()
        if error is not None and not isinstance(error, StateUnavailable):
            self.proxy.internal_error(error, self.session.log)
        answer = task.result() if error is None else None
        if answer is None:  # Redis is away: this host's own state decides
            if self.via == "tests" and self.proxy.cached_pass(self.session.client_ip):
                self._skip_pause("cache")
        elif answer.refused is not None:
            if not self.proxy.config.dry_run:
                self._turn_away(answer.refused, scope="fleet")
                return
            self.session.log.info("dry_run", would="reject", reason=answer.refused, scope="fleet")
        elif answer.pass_expires is not None and self.via == "tests":
            self.proxy.keep_locally(self.session.client_ip, answer.pass_expires)
            self._skip_pause("cache")
            return
        if self.lookups_waiting:
            self._pause_over()

    def _skip_pause(self, via: str) -> None:
        """The client needs no more waiting (an allowlist, a remembered pass): the pause ends now."""
        self.via = via
        if self.timer is not None:
            self.timer.cancel()
            self.banner_at = self.proxy.loop.time()
            self.banner_due = time.monotonic()
            self._pause_over()
        elif self.lookups_waiting:
            self._pause_over()

    def _report_pregreet(self) -> None:
        if self.pregreet is None or self.reported or self.via == "permit":
            return
        self.reported = True
        self.session.log.info(
            "pregreet",
            bytes=self.pregreet.count,
            after=round(self.pregreet.after, 3),
            sample=self.pregreet.sample,
            action=self.proxy.pregreet_action.name.lower(),
        )

    def _pause_over(self) -> None:
        self.timer = None
        if self.transport.is_closing():
            return
        # The lookups end within GREETPROXY_DNSBL_TIMEOUT and GREETPROXY_STATE_TIMEOUT of connect.
        fleet = self.fleet is not None and not self.fleet.done()
        if fleet or (self.via == "tests" and self.dns is not None and not self.dns.done()):
            self.lookups_waiting = True
            return
        self.lookups_waiting = False
        verdict = self.proxy.decide(self.session, self._findings())
        if verdict.passed:
            self.queued = self.proxy.spawn(self._pass_on())
        elif verdict.action is Action.ENFORCE:  # greeted when the pause is over, like everyone
            self.timer = self.proxy.loop.call_at(self.banner_at, self._act, verdict)
        else:
            self._act(verdict)

    def _act(self, verdict: Verdict) -> None:
        self.proxy.forget(self.session.client_ip)
        self._report_pregreet()
        if verdict.action is Action.DROP:
            listed = "dnsbl" in verdict.reason.split(", ") and self.proxy.dnsbl and self.dns_result
            text = self.proxy.dnsbl.reply_text(self.session.client_ip, self.dns_result) if listed else None
            self._refuse(554, text or "5.7.1 Service unavailable", verdict.reason)
        else:
            self._enforce(verdict.reason)

    def _refuse(self, code: int, text: str, reason: str) -> None:
        self.session.log.info("reject", code=code, reason=reason, command="CONNECT")
        self._close_with(code, text, "rejected")

    async def _pass_on(self) -> None:
        """The client passed: wait for a backend slot, then relay to the backend (connected now)
        or, in hand-off mode, give the client's socket to a new sendmail."""
        try:
            await self._pass_on_now()
        except Exception as error:  # a bug must not leave the client waiting for an answer
            self.proxy.internal_error(error, self.session.log)
            if not self.transport.is_closing():
                hostname = self.proxy.config.hostname
                self._close_with(421, f"4.3.0 {hostname} internal error, try again later", "internal_error")

    async def _pass_on_now(self) -> None:
        pool = self.proxy.pool
        hostname = self.proxy.config.hostname
        handoff = self.proxy.handoff
        link = None
        try:
            try:
                slot = await pool.admit(self.session, self.banner_at)
            finally:
                self.queued = None  # from here on a backend socket may be open: no cancelling
            if handoff is None:
                link = await pool.connect(self.session, slot)
        except BackendBusy as busy:
            self.session.log.warning("backend_busy", reason=str(busy), code=421)
            busy_text = f"4.3.2 {hostname} all server ports are busy, try again later"
            self._close_with(421, busy_text, "backend_busy")
            return
        except BackendFailure as failure:
            if not self.transport.is_closing():
                self.session.log.warning("backend_unavailable", reason=str(failure))
                self._close_with(
                    421, f"4.3.2 {hostname} service not available, try again later", "backend_unavailable"
                )
            return
        # uvloop's loop.time() counts whole milliseconds as of the start of the loop's iteration, so
        # a timer may fire a little early; the pause is checked on the precise clock instead.
        while (early := self.banner_due - time.monotonic()) > 0:
            await asyncio.sleep(early)
        if self.transport.is_closing():
            _let_go(link, slot)
            return
        # early talk may have come while the backend greeted
        verdict = self.proxy.decide(self.session, self._findings())
        if not verdict.passed:
            _let_go(link, slot)
            self._act(verdict)
            return
        self._report_pregreet()
        ignored = [finding.test for finding in verdict.findings]
        self.session.log.info(
            "pass",
            waited=round(self.session.age, 3),
            via=self.via,
            cached=self.via == "cache",
            ignored=ignored,
        )
        if self.via == "tests" and not verdict.findings:
            self.proxy.remember(self.session.client_ip)
        if link is None:
            assert handoff is not None
            await self._hand_off(handoff, slot)
            return
        self._hand_to(RelaySession(self.proxy, self.session, link))

    async def _hand_off(self, handoff: Handoff, slot: Slot) -> None:
        hostname = self.proxy.config.hostname
        self.transport.pause_reading()  # from now on the client's bytes are sendmail's to read
        self._stop_waiting()
        if self.held:  # a permitted client (or a dry run) that talked early: it cannot go on intact
            slot.release()
            self.session.log.warning("handoff_failed", reason="bytes sent before the banner", code=421)
            self._close_with(421, f"4.7.0 {hostname} talked before the greeting", "handoff_failed")
            return
        copy = duplicate_socket(self.transport)
        try:
            pid = await handoff.hand_off(self.session, copy, slot)
        except HandoffFailure as failure:
            self.session.log.warning("handoff_failed", reason=str(failure), code=421)
            self._close_with(
                421, f"4.3.2 {hostname} service not available, try again later", "handoff_failed"
            )
            return
        finally:
            copy.close()
        self.session.log.info("handoff", pid=pid, children=handoff.children)
        self.handed = True
        self.session.finish("handoff")
        self.transport.abort()  # closes only our descriptor: the connection is sendmail's now
        self.proxy.release(self)

    def _enforce(self, reason: str) -> None:
        self.session.log.info("enforce", reason=reason)
        self._hand_to(EnforceSession(self.proxy, self.session, reason))

    # -- plumbing ----------------------------------------------------------------------------

    def _stop_waiting(self) -> None:
        if self.waiting:
            self.waiting = False
            self.proxy.wait_ends()

    def _close_with(self, code: int, text: str, outcome: str) -> None:
        self._write(reply(code, text))
        self.session.finish(outcome)
        self.transport.close()

    def _write(self, data: bytes) -> None:
        if self.transport.is_closing():  # the client went; uvloop raises on a closed transport
            return
        self.session.bytes_out += len(data)
        self.transport.write(data)

    def _hand_to(self, conversation: Conversation) -> None:
        """The connection goes on with ``conversation``, from the banner on; bytes held in the
        pause (a permitted client's, or under ``ignore``) are its first input."""
        self.handed = True
        self._stop_waiting()
        self.proxy.swap(self, conversation)
        held, self.held = self.held, b""
        conversation.begin(self.transport, banner(self.proxy.config.hostname), held)

    def interrupt(self, now: bool = False) -> None:
        """Shutdown: a client still waiting is told to come back later."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.queued is not None:
            self.queued.cancel()
        if self.fleet is not None:
            self.fleet.cancel()
        if not self.transport.is_closing():
            self._close_with(421, f"4.3.2 {self.proxy.config.hostname} service shutting down", "shutdown")


def _let_go(link: BackendLink | None, slot: Slot) -> None:
    """Give the backend slot back: closing a connected link frees it once its socket is closed."""
    if link is not None:
        link.close()
    else:
        slot.release()
