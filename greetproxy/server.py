"""The outer shell: listening sockets, capacity, the open-relay guard, signals, graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import os
import pwd
import resource
import shlex
import signal
import socket
import ssl
import sys
import time
import traceback
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Protocol

from . import logs
from .backend import BackendTls
from .config import Endpoint, Settings
from .gate import Gate
from .guard import RelayStatus, check_relay, open_relay_advice
from .handoff import Handoff, missing_command
from .logs import get_logger
from .metrics import Metrics
from .notify import Notifier
from .pool import BackendPool
from .screening import Action, Finding, Verdict, decide
from .screening.access import AccessFileError, AccessList
from .screening.dnsbl import DnsblScreen, Resolver, load_sites, make_resolver
from .screening.limits import ClientLimits
from .session import Session
from .shared import RedisState
from .store import SqlitePassCache, StoreError, cache_key
from .stress import StressMode
from .tls import TlsSetupError, server_context

PASS_CACHE_FILE = "passcache.sqlite"
CACHE_PURGE_EVERY = 3600.0  # seconds
DNSBL_SELF_TEST_EVERY = 600.0
RELAY_CHECK_RETRY = 5.0  # seconds between open-relay checks while the backend is unreachable
TASK_WIND_DOWN = 5.0  # after the grace: how long sessions get to send their 421
FILE_RESERVE = 32  # descriptors kept for everything but connections: the cache, DNS, logs, metrics
# Connections the kernel completes before the proxy accepts them: a burst of clients (a restart, an
# MX failing over) must not overflow the queue, or each extra client waits 1 s for a SYN retry.
LISTEN_BACKLOG = 4096


class Connection(Protocol):
    session: Session

    def interrupt(self, now: bool = False) -> None: ...


class StartupError(Exception):
    """The proxy cannot start; the message is for the administrator."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


class Proxy:
    def __init__(self, config: Settings, metrics: Metrics | None = None) -> None:
        # Built inside the running loop. Kept: asyncio.get_running_loop() costs a getpid() system
        # call on Python 3.11, and every connection needs the loop.
        self.loop = asyncio.get_running_loop()
        self.config = config
        self.metrics = metrics
        self.pregreet_action = Action.named(config.pregreet_action)
        self.non_smtp_action = Action.named(config.non_smtp_action)
        self.pipelining_action = Action.named(config.pipelining_action)
        self.log = get_logger()
        self.connections: set[Connection] = set()
        try:
            self.tls = self._server_tls()
            self.pool = BackendPool(config, BackendTls.from_config(config), self.loop)
        except TlsSetupError as error:
            raise StartupError(str(error), status=2) from None
        self.jitter = config.jitter_seconds
        self.limits = ClientLimits(config.client_concurrency, config.client_rate)
        self.stress = StressMode(config.max_connections, self.log)
        self.waiting = 0  # connections in the greet pause
        self.file_budget = config.max_connections + config.backend_max_connections  # set at start
        self._file_limit_refused = 0  # refusals since the last file_limit warning
        self._file_limit_logged = 0.0
        self.access = AccessList()
        self.cache: SqlitePassCache | None = None  # this host's own passes (the fallback under Redis)
        self.shared: RedisState | None = None
        self.dnsbl: DnsblScreen | None = None
        self.resolver: Resolver | None = None
        self.dnsbl_action = Action.named(config.dnsbl_action)
        self.handoff: Handoff | None = None
        if config.handoff == "sendmail":
            if problem := missing_command(config.sendmail_command):
                command = shlex.join(config.sendmail_command)
                raise StartupError(f"GREETPROXY_SENDMAIL_COMMAND={command!r}: {problem}", status=2)
            self.handoff = Handoff(config.sendmail_command, config.log_format, config.log_level)
        self.exit_status = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._servers: list[asyncio.AbstractServer] = []
        self._stopping = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    # -- what gates and sessions use ---------------------------------------------------------

    def admit(self, connection: Connection) -> str | None:
        """Take a new connection in, or return the limit of this process that refuses it."""
        if self._stopping.is_set() or len(self.connections) >= self.config.max_connections:
            return "max_connections"
        if len(self.connections) + self.pool.slots.in_use >= self.file_budget:
            self._file_limit_hit()
            return "file_limit"
        self.connections.add(connection)
        self._idle.clear()
        return None

    def limit(self, session: Session, exempt: bool) -> str | None:
        """Count the client's new connection against its own limits (on this instance; the fleet's
        counts are the gate's to ask), or return the limit that refuses it; ``exempt`` (permitted
        clients) skips them. Under a dry run the connection is counted and its limit returned."""
        if exempt:
            return None
        now = time.monotonic()
        broken = self.limits.check(session.client_ip, now)
        if broken is not None and not self.config.dry_run:
            return broken
        self.limits.count(session.client_ip, now)
        session.counted = True
        return broken

    def behind_balancer(self, ip: str) -> bool:
        """Whether a connection from ``ip`` must open with a PROXY header."""
        networks = self.config.proxy_protocol_from
        return bool(networks) and any(ipaddress.ip_address(ip) in network for network in networks)

    def _file_limit_hit(self) -> None:
        """Out of descriptors: refuse before accept() itself fails, and say so once a second."""
        self._file_limit_refused += 1
        now = time.monotonic()
        if now - self._file_limit_logged >= 1.0:
            self.log.warning(
                "file_limit",
                refused=self._file_limit_refused,
                connections=len(self.connections),
                backend=self.pool.slots.in_use,
                budget=self.file_budget,
            )
            self._file_limit_refused = 0
            self._file_limit_logged = now

    def swap(self, old: Connection, new: Connection) -> None:
        self.connections.discard(old)
        self.connections.add(new)

    def release(self, connection: Connection) -> None:
        session = connection.session
        if connection in self.connections:
            if session.counted:
                self.limits.release(session.client_ip)
            if self.shared is not None:
                self.shared.release(session.id)
        self.connections.discard(connection)
        if not self.connections:
            self._idle.set()

    def decide(self, session: Session, findings: list[Finding]) -> Verdict:
        """The verdict on ``findings``; under a dry run it is logged and the client passes."""
        verdict = decide(findings)
        if self.config.dry_run and not verdict.passed:
            assert verdict.action is not None
            session.log.info("dry_run", would=verdict.action.name.lower(), reason=verdict.reason)
            return Verdict(None, verdict.findings)
        return verdict

    def wait_begins(self, pause: float) -> float:
        """A client enters the pause; returns the pause it gets (shorter under stress)."""
        self.waiting += 1
        self.stress.update(self.waiting)
        return min(pause, self.config.stress_greet_pause) if self.stress.active else pause

    def wait_ends(self) -> None:
        self.waiting -= 1
        self.stress.update(self.waiting)

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = self.loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.internal_error(task.exception())

    def internal_error(self, error: BaseException, log: Any = None) -> None:
        """A bug: logged with its traceback (for the report that fixes it)."""
        where = "".join(traceback.format_exception(error))
        (log or self.log).error("internal_error", error=repr(error), traceback=where)

    # -- life cycle --------------------------------------------------------------------------

    async def start(self) -> None:
        soft = raise_file_limit(self.log)
        self.file_budget = max(soft - FILE_RESERVE, 1)
        wanted = self.config.max_connections + self.config.backend_max_connections
        if wanted > self.file_budget:
            self.log.warning(
                "file_limit",
                budget=self.file_budget,
                wanted=wanted,
                advice="raise the open-file limit (LimitNOFILE=, ulimit -n) or lower "
                "GREETPROXY_MAX_CONNECTIONS",
            )
        reuse = self.config.workers > 1  # the workers share the ports
        sockets = [listening_socket(endpoint, reuse) for endpoint in self.config.listen]  # as root
        if self.handoff is not None:
            self.handoff.start()  # the helper keeps root; this process gives it up now
        drop_privileges(self.config.user, self.handoff is not None, self.log)
        self.access = self._load_access()
        if self.config.pass_ttl > 0:
            try:
                self.cache = await SqlitePassCache.open(Path(self.config.state_dir) / PASS_CACHE_FILE)
            except StoreError as error:
                raise StartupError(
                    f"GREETPROXY_STATE_DIR={self.config.state_dir!r}: {error}", status=2
                ) from None
            self.spawn(self._purge_cache(self.cache))
        if self.config.state is not None:
            config = self.config
            self.shared = RedisState(
                config.state, config.state_timeout, config.client_concurrency, config.client_rate
            )
            self.shared.start()
        if self.config.dnsbl_sites:
            self._start_dnsbl(self.config.dnsbl_sites)
        if self.handoff is not None:
            self.handoff.attach(self._handoff_lost)
            # sendmail sees every client's own address: there is no trust in ours to inherit
            self.pool.ready = True
        else:
            await self._check_relay(first=True)
        loop = asyncio.get_running_loop()
        for sock in sockets:
            # create_server listens again, with its own backlog (100 unless told): say it again
            server = await loop.create_server(lambda: Gate(self), sock=sock, backlog=LISTEN_BACKLOG)
            self._servers.append(server)
        if self.metrics is not None:
            self._serve_metrics(self.metrics)
        self.log.info(
            "listening",
            listen=[str(endpoint) for endpoint in self.config.listen],
            backend=str(self.config.backend),
            backend_source=self.config.backend_source,
            greet_pause=self.config.greet_pause,
            pregreet_action=self.config.pregreet_action,
            max_connections=self.config.max_connections,
            backend_max_connections=self.config.backend_max_connections,
            backend_connect_rate=self.config.backend_connect_rate,
            handoff=self.config.handoff,
            state=self.shared.where if self.shared is not None else "local",
            proxy_protocol_from=[str(network) for network in self.config.proxy_protocol_from],
        )

    async def _check_relay(self, first: bool) -> None:
        started = time.monotonic()
        check = await check_relay(self.config, self.pool.tls)
        if check.status is not RelayStatus.UNKNOWN and not self.pool.latency:
            self.pool.latency = time.monotonic() - started  # a whole dialogue: errs on the early side
        if check.status is RelayStatus.OPEN and not self.config.allow_open_backend:
            advice = open_relay_advice(self.config, check)
            self.log.error("relay_check", status="open", detail=check.detail)
            if first:
                raise StartupError(advice, status=2)
            print(f"greetproxy: {advice}", file=sys.stderr)
            self.exit_status = 2
            self.stop()
            return
        if check.status is RelayStatus.UNKNOWN:
            if first:
                self.log.warning(
                    "relay_check", status="unknown", detail=check.detail, retry=RELAY_CHECK_RETRY
                )
                self.spawn(self._retry_relay_check())
            return
        self.pool.ready = True
        self.log.info(
            "relay_check",
            status=check.status.value,
            detail=check.detail,
            allowed=self.config.allow_open_backend,
        )

    async def _retry_relay_check(self) -> None:
        while not self.pool.ready and not self._stopping.is_set():
            await asyncio.sleep(RELAY_CHECK_RETRY)
            await self._check_relay(first=False)

    def stop(self) -> None:
        self._stopping.set()

    def _serve_metrics(self, metrics: Metrics) -> None:
        metrics.watch(
            waiting=lambda: self.waiting,
            served=lambda: len(self.connections) - self.waiting,
            dnsbl_lists=lambda: self.dnsbl.domains if self.dnsbl is not None else (),
        )
        self.spawn(metrics.refresh_forever())
        endpoint = self.config.metrics_listen
        assert endpoint is not None  # metrics exist only when it is set
        if self.config.workers > 1:
            return  # the supervisor serves the sum of the workers' metrics
        try:
            metrics.serve(endpoint)
        except OSError as error:
            raise StartupError(
                f"GREETPROXY_METRICS_LISTEN={str(endpoint)!r}: cannot listen: {error.strerror or error}",
                status=2,
            ) from None
        self.log.info("metrics", listen=str(endpoint))

    def _handoff_lost(self) -> None:
        """Only root could start a new helper: exit, for the supervisor to restart us both."""
        self.log.error("handoff_helper", state="lost", action="exiting")
        self.exit_status = 1
        self.stop()

    def _load_access(self) -> AccessList:
        path = self.config.access_file
        if path is None:
            return AccessList()
        try:
            access = AccessList.load(path)
        except AccessFileError as error:
            raise StartupError(str(error), status=2) from None
        self.log.info("access_list", path=path, entries=len(access.entries))
        return access

    def reload(self) -> None:
        """SIGHUP: re-read the access file, the TLS certificate and key, and the DNSBL sites file; a
        bad file keeps the old one. Connections in flight keep what they were given; new ones get the
        new (one assignment each)."""
        try:
            self.access = self._load_access()
        except StartupError as error:
            self.log.error("access_list", path=self.config.access_file, error=str(error), kept="old list")
        if self.tls is not None:
            try:
                self.tls = self._server_tls()
            except TlsSetupError as error:
                self.log.error("tls_reload", error=str(error), kept="old certificate")
        sites = self.config.dnsbl_sites
        if sites is not None and sites.startswith("/") and self.resolver is not None:
            try:
                self.dnsbl = dnsbl_screen(self.config, sites, self.resolver)
            except ValueError as error:
                self.log.error("dnsbl_sites", path=sites, error=str(error), kept="old lists")
            else:
                self.log.info("dnsbl_sites", path=sites, lists=list(self.dnsbl.domains))

    def _server_tls(self) -> ssl.SSLContext | None:
        config = self.config
        if config.tls_cert is None or config.tls_key is None:
            return None
        context = server_context(config.tls_cert, config.tls_key, config.tls_ciphers)
        self.log.info("tls_certificate", cert=config.tls_cert, key=config.tls_key)
        return context

    def cache_key(self, ip: str) -> str:
        return cache_key(ip, *self.config.pass_prefix)

    def cached_pass(self, ip: str) -> bool:
        """Whether this host remembers a pass for ``ip`` (under Redis: the fallback's answer)."""
        return self.cache is not None and self.cache.peek(self.cache_key(ip)) is not None

    def remember(self, ip: str) -> None:
        if self.cache is not None:
            key, expires = self.cache_key(ip), time.time() + self.config.pass_ttl
            self.spawn(self.cache.put(key, expires))
            if self.shared is not None:
                self.shared.remember(key, expires)

    def keep_locally(self, ip: str, expires: float) -> None:
        """A pass another instance gave: this host keeps a copy, for when Redis is away."""
        if self.cache is not None:
            key = self.cache_key(ip)
            if self.cache.peek(key) != expires:
                self.spawn(self.cache.put(key, expires))

    def forget(self, ip: str) -> None:
        """A failed test: the client's pass (if it had one; most bots have none) is withdrawn."""
        if self.cache is None:
            return
        if self.cached_pass(ip):
            self.spawn(self.cache.forget(self.cache_key(ip)))
        if self.shared is not None:  # another instance may have given the pass: no telling here
            self.shared.forget(self.cache_key(ip))

    def _start_dnsbl(self, sites: str) -> None:
        self.dnsbl, self.resolver = build_dnsbl(self.config, sites)
        self.spawn(self._dnsbl_self_test())

    async def _dnsbl_self_test(self) -> None:
        """RFC 5782 probes at start and every 10 minutes: a broken or blocked list is worse than none."""
        while self.dnsbl is not None:  # the lists of the moment: SIGHUP may have replaced them
            for warning in await self.dnsbl.self_test():
                self.log.warning("dnsbl_selftest", problem=warning)
            await asyncio.sleep(DNSBL_SELF_TEST_EVERY)

    async def _purge_cache(self, cache: SqlitePassCache) -> None:
        while True:
            await asyncio.sleep(CACHE_PURGE_EVERY)
            purged = await cache.purge()
            self.log.info("cache_purge", purged=purged)

    async def stopped(self) -> None:
        await self._stopping.wait()

    async def serve(self, notifier: Notifier) -> int:
        await self.start()
        logs.batch_in(self.loop)
        # What start made lives as long as the process: the collector need not walk it again on
        # every full collection (each one evicts the relay's working set from the CPU caches).
        gc.freeze()
        notifier.send(f"READY=1\nSTATUS=listening on {', '.join(map(str, self.config.listen))}")
        if notifier.watchdog_interval:
            self.spawn(notifier.keep_alive())
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        await self.stopped()
        notifier.send("STOPPING=1")
        await self.shutdown()
        logs.batch_in(None)
        return self.exit_status

    async def shutdown(self) -> None:
        for server in self._servers:
            server.close()
        waiting = [connection for connection in self.connections if isinstance(connection, Gate)]
        self.log.info(
            "shutdown",
            sessions=len(self.connections) - len(waiting),
            waiting=len(waiting),
            grace=self.config.shutdown_grace,
        )
        for gate in waiting:
            gate.interrupt()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), self.config.shutdown_grace)
        for connection in list(self.connections):
            connection.interrupt()  # now if it waits for its client, else once its answer is out
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), TASK_WIND_DOWN)
        for connection in list(self.connections):
            connection.interrupt(now=True)  # those still waiting for the backend
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=TASK_WIND_DOWN)
        for server in self._servers:
            await server.wait_closed()
        if self.cache is not None:
            await self.cache.close()
        if self.shared is not None:
            await self.shared.close()
        if self.resolver is not None:
            await self.resolver.close()
        if self.handoff is not None:
            self.handoff.close(self.log)
        self.log.info("stopped", left=len(self.connections))


def listening_socket(endpoint: Endpoint, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in endpoint.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:  # the kernel spreads new connections over the workers' sockets
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # [::] beside 0.0.0.0 on one port
        sock.bind((endpoint.host, endpoint.port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError as error:
        sock.close()
        raise StartupError(f"cannot listen on {endpoint}: {error.strerror or error}") from None
    return sock


def build_dnsbl(config: Settings, sites: str) -> tuple[DnsblScreen, Resolver]:
    servers = [(server.host, server.port) for server in config.dns_servers]
    resolver = make_resolver(servers, config.dnsbl_timeout)
    return dnsbl_screen(config, sites, resolver), resolver


def dnsbl_screen(config: Settings, sites: str, resolver: Resolver) -> DnsblScreen:
    return DnsblScreen(
        load_sites(sites), config.dnsbl_threshold, config.dnswl_threshold, config.dnsbl_timeout, resolver
    )


def drop_privileges(user: str | None, handoff: bool, log: Any) -> None:
    """Become ``user`` once the ports are bound. Root stays root only when ``user`` says so, and
    never in hand-off mode, whose network-facing process must not have root."""
    if os.geteuid() != 0:
        if user is not None and pwd.getpwnam(user).pw_uid != os.geteuid():
            raise StartupError(f"GREETPROXY_USER={user!r}: only root can switch to another user", status=2)
        return
    if user is None:
        raise StartupError(
            "running as root: set GREETPROXY_USER to the user to become once the ports are bound "
            "(e.g. greetproxy), or GREETPROXY_USER=root to keep root on purpose",
            status=2,
        )
    entry = pwd.getpwnam(user)
    if entry.pw_uid == 0:
        if handoff:
            raise StartupError(
                f"GREETPROXY_USER={user!r}: GREETPROXY_HANDOFF=sendmail needs an unprivileged user for "
                "the network-facing process (only the hand-off helper keeps root)",
                status=2,
            )
        log.warning("privileges", user=user, kept="root, as GREETPROXY_USER says")
        return
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    log.info("privileges", user=user, uid=entry.pw_uid, gid=entry.pw_gid)


def raise_file_limit(log: Any) -> int:
    """Each client and backend connection is a descriptor; use all the hard limit allows. Returns
    the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    log.info("file_limit", soft=soft, hard=hard)
    return soft


async def run(config: Settings, notifier: Notifier, metrics: Metrics | None = None) -> int:
    proxy = Proxy(config, metrics)
    return await proxy.serve(notifier)
