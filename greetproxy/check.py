"""``greetproxy check``: what the daemon would run with, and whether its surroundings are ready.

Prints every effective setting with its source, then checks the parts the daemon depends on: the
access file, the state directory, the shared state (Redis: reachable, and its round trip), the
TLS pair, the backend (its EHLO extensions, what the proxy passes on, the open-relay probe) or, in
hand-off mode, the sendmail command, and each DNSBL's RFC 5782 test entries. Exits 1 if anything
is wrong, 0 otherwise.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Set
from pathlib import Path

from .backend import BackendFailure, BackendLink, BackendTls
from .config import ENV_PREFIX, Settings, parse_duration
from .guard import RelayStatus, check_relay, open_relay_advice
from .handoff import missing_command
from .screening.access import AccessFileError, AccessList
from .server import build_dnsbl
from .shared import StateUnavailable, masked, run_check
from .smtp.ehlo import RELAYED_EXTENSIONS, extensions
from .tls import TlsSetupError, server_context


def shown(name: str, value: object) -> str:
    """A setting's value as its variable would say it."""
    if name == "state" and isinstance(value, str):
        return masked(value)
    if isinstance(value, tuple) and all(isinstance(item, str) for item in value):
        return shlex.join(value)
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        is_duration = any(
            getattr(meta, "func", None) is parse_duration for meta in Settings.model_fields[name].metadata
        )
        return f"{value:g}s" if is_duration else f"{value:g}"
    return "" if value is None else str(value)


class Report:
    def __init__(self) -> None:
        self.problems = 0

    def ok(self, what: str, detail: str) -> None:
        print(f"  ok       {what}: {detail}")

    def problem(self, what: str, detail: str) -> None:
        self.problems += 1
        print(f"  PROBLEM  {what}: {detail}")

    def note(self, what: str, detail: str) -> None:
        print(f"  -        {what}: {detail}")


async def check(settings: Settings, explicit: Set[str]) -> int:
    """``explicit``: the variables the environment sets."""
    print("settings ([environment]: set by its variable; [default]: not set):")
    for name in Settings.model_fields:
        variable = ENV_PREFIX + name.upper()
        source = "environment" if variable in explicit else "default"
        print(f"  {variable}={shown(name, getattr(settings, name))}  [{source}]")
    report = Report()
    print("checks:")
    _check_files(settings, report)
    if settings.state is not None:
        await _check_state(settings.state, settings.state_timeout, report)
    if settings.handoff == "sendmail":
        if problem := missing_command(settings.sendmail_command):
            report.problem("hand-off command", problem)
        else:
            report.ok("hand-off command", shlex.join(settings.sendmail_command))
    else:
        await _check_backend(settings, report)
    if settings.dnsbl_sites:
        await _check_dnsbl(settings, report)
    else:
        report.note("DNSBL", "no lists configured (GREETPROXY_DNSBL_SITES)")
    verdict = "all checks passed" if not report.problems else f"{report.problems} problem(s)"
    print(verdict)
    return 1 if report.problems else 0


def _check_files(settings: Settings, report: Report) -> None:
    if settings.access_file is None:
        report.note("access list", "none (loopback permitted, everyone else screened)")
    else:
        try:
            access = AccessList.load(settings.access_file)
            report.ok("access list", f"{settings.access_file}: {len(access.entries)} entries")
        except AccessFileError as error:
            report.problem("access list", str(error))
    if settings.pass_ttl > 0:
        state = Path(settings.state_dir)
        if os.access(state, os.W_OK | os.X_OK):
            report.ok("state directory", f"{state} is writable")
        elif not state.exists() and os.access(state.parent, os.W_OK):
            report.ok("state directory", f"{state} will be created")
        else:
            report.problem("state directory", f"{state} is not writable by this user")
    if settings.tls_cert is not None and settings.tls_key is not None:
        try:
            server_context(settings.tls_cert, settings.tls_key, settings.tls_ciphers)
            report.ok("TLS", f"{settings.tls_cert} and its key load; EHLO offers STARTTLS")
        except TlsSetupError as error:
            report.problem("TLS", str(error))


async def _check_state(url: str, timeout: float, report: Report) -> None:
    try:
        version, round_trip = await run_check(url, timeout)
    except StateUnavailable as error:
        report.problem("shared state", f"{error} (the daemon would run on local state until it answers)")
        return
    report.ok("shared state", f"Redis {version}, a round trip in {round_trip * 1000:.2f} ms")


async def _check_backend(settings: Settings, report: Report) -> None:
    try:
        tls = BackendTls.from_config(settings)
    except TlsSetupError as error:
        report.problem("backend TLS", str(error))
        return
    try:
        link, greeting = await BackendLink.open(
            settings.backend, settings.backend_source, settings.backend_connect_timeout, tls
        )
    except BackendFailure as failure:
        report.problem("backend", str(failure))
        return
    try:
        report.ok("backend", f"{settings.backend} from {settings.backend_source or 'default'}: {greeting}")
        answer = await link.command(b"EHLO " + settings.hostname.encode())
        offered = sorted(extensions(answer))
        passed = [name for name in offered if name in RELAYED_EXTENSIONS]
        withheld = [name for name in offered if name not in RELAYED_EXTENSIONS]
        report.ok("backend EHLO", " ".join(offered) or "(no extensions)")
        report.note("passed on", " ".join(passed) or "(none)")
        report.note("withheld", " ".join(withheld) or "(none)")
        await link.command(b"QUIT")
    except BackendFailure as failure:
        report.problem("backend EHLO", str(failure))
    finally:
        link.close()
    relay = await check_relay(settings, tls)
    if relay.status is RelayStatus.CLOSED:
        report.ok("open-relay probe", relay.detail)
    elif relay.status is RelayStatus.OPEN and settings.allow_open_backend:
        report.note("open-relay probe", f"OPEN, allowed by GREETPROXY_ALLOW_OPEN_BACKEND: {relay.detail}")
    elif relay.status is RelayStatus.OPEN:
        report.problem("open-relay probe", open_relay_advice(settings, relay))
    else:
        report.problem("open-relay probe", f"no verdict: {relay.detail}")


async def _check_dnsbl(settings: Settings, report: Report) -> None:
    assert settings.dnsbl_sites is not None
    screen, resolver = build_dnsbl(settings, settings.dnsbl_sites)
    try:
        warnings = {warning.split(":", 1)[0]: warning for warning in await screen.self_test()}
    finally:
        await resolver.close()
    for domain in screen.domains:
        if domain in warnings:
            report.problem(f"DNSBL {domain}", warnings[domain].split(": ", 1)[1])
        else:
            report.ok(f"DNSBL {domain}", "127.0.0.2 listed, 127.0.0.1 not (RFC 5782 test entries)")
