"""Command line: ``greetproxy run`` (the daemon), ``check``, ``report``, ``demo`` and ``cache``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop

from . import __version__, config, logs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="greetproxy", description="Greet-pause SMTP front proxy for sendmail."
    )
    parser.add_argument("--version", action="version", version=f"greetproxy {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="run the proxy, configured by GREETPROXY_* environment variables")
    worker = commands.add_parser("worker", help=argparse.SUPPRESS)  # started by the supervisor
    worker.add_argument("--index", type=int, required=True)
    commands.add_parser(
        "check", help="print the effective settings and check the backend, files and DNSBLs; 1 if wrong"
    )
    demo = commands.add_parser("demo", help="run the proxy in front of an embedded backend, on loopback")
    demo.add_argument("--maildir", default="demo-maildir", help="where the demo backend stores messages")
    demo.add_argument("--port", type=int, default=2525, help="loopback port of the demo proxy")
    report = commands.add_parser("report", help="summarize a JSON log: outcomes, top talkers, hourly")
    report.add_argument("logfile", nargs="?", default="-", help="the log (default: standard input)")
    report.add_argument("--top", type=int, default=10, help="how many clients in the top lists")
    report.add_argument("--png", metavar="FILE", help="also draw the hourly outcomes (needs matplotlib)")
    cache = commands.add_parser(
        "cache", help="inspect or edit the pass cache (GREETPROXY_STATE_DIR, or GREETPROXY_STATE's Redis)"
    )
    cache_commands = cache.add_subparsers(dest="cache_command", required=True)
    cache_commands.add_parser("list", help="every remembered pass and when it expires")
    forget = cache_commands.add_parser("forget", help="withdraw the pass that covers an address")
    forget.add_argument("ip")
    cache_commands.add_parser("clear", help="withdraw every pass")
    args = parser.parse_args(argv)
    if args.command == "cache":
        return cache_main(args)
    if args.command == "report":
        return report_main(args)
    if args.command == "check":
        return check_main()
    if args.command == "demo":
        from .demo import demo_main

        return demo_main(args.maildir, args.port)
    return run_main(getattr(args, "index", None))


def cache_main(args: argparse.Namespace) -> int:
    """Works beside a running daemon: it notices the change within about a second (at once under
    Redis, where the fleet's passes are; this host's file, the fallback, is changed as well)."""
    from .server import PASS_CACHE_FILE
    from .shared import StateUnavailable
    from .store import StoreError, cache_clear, cache_entries, cache_forget, cache_key

    try:
        settings = config.load()
    except config.ConfigError as error:
        print(f"greetproxy: {error}", file=sys.stderr)
        return 2
    path = Path(settings.state_dir) / PASS_CACHE_FILE
    local = path.is_file() or settings.state is None  # without Redis, a missing file is an error
    try:
        if args.cache_command == "list":
            entries = _fleet_cache(settings, "list") if settings.state is not None else cache_entries(path)
            for key, expires in entries:
                print(f"{key}\t{datetime.fromtimestamp(expires, UTC).isoformat(timespec='seconds')}")
        elif args.cache_command == "forget":
            key = cache_key(args.ip, *settings.pass_prefix)
            found = settings.state is not None and bool(_fleet_cache(settings, "forget", key))
            found = (local and cache_forget(path, args.ip, *settings.pass_prefix)) or found
            if not found:
                print(f"greetproxy: no pass covers {args.ip}", file=sys.stderr)
                return 1
        else:
            cleared = _fleet_cache(settings, "clear") if settings.state is not None else 0
            cleared = max(cleared, cache_clear(path) if local else 0)
            print(f"cleared {cleared} passes")
    except (StoreError, StateUnavailable, ValueError) as error:
        print(f"greetproxy: {error}", file=sys.stderr)
        return 1
    return 0


def _fleet_cache(settings: config.Settings, command: str, key: str = "") -> Any:
    from . import shared

    assert settings.state is not None
    work = {
        "list": shared.pass_entries,
        "forget": lambda client: shared.pass_forget(client, key),
        "clear": shared.pass_clear,
    }[command]
    return asyncio.run(shared.run_once(settings.state, settings.state_timeout, work))


def report_main(args: argparse.Namespace) -> int:
    from .report import plot, render, summarize

    try:
        if args.logfile == "-":
            summary = summarize(sys.stdin.buffer)
        else:
            with open(args.logfile, "rb") as log:
                summary = summarize(log)
    except OSError as error:
        print(f"greetproxy: {args.logfile}: {error.strerror or error}", file=sys.stderr)
        return 1
    print(render(summary, args.top), end="")
    if args.png:
        try:
            plot(summary, args.png)
        except (RuntimeError, OSError) as error:
            print(f"greetproxy: {error}", file=sys.stderr)
            return 1
    return 0


def check_main() -> int:
    from .check import check

    try:
        settings = config.load()
    except config.ConfigError as error:
        print(f"greetproxy: {error}", file=sys.stderr)
        return 2
    logs.configure(settings.log_format, "error")  # the report is the output; log lines would clutter it
    return uvloop.run(check(settings, config.explicit_variables()))


def run_main(worker: int | None = None) -> int:
    """The daemon; with GREETPROXY_WORKERS above 1, the supervisor of that many ``worker``s."""
    from .metrics import Metrics
    from .notify import Notifier
    from .server import StartupError, run

    try:
        settings = config.load()
    except config.ConfigError as error:
        print(f"greetproxy: {error}", file=sys.stderr)
        return 2
    notifier = Notifier(*config.systemd_notify(), logs.get_logger())
    if settings.workers > 1 and worker is None:
        from .supervisor import Supervisor

        logs.configure(settings.log_format, settings.log_level)
        return uvloop.run(Supervisor(settings, notifier, logs.get_logger()).run())
    metrics = Metrics() if settings.metrics_listen is not None else None
    logs.configure(settings.log_format, settings.log_level, counter=metrics, worker=worker)
    try:
        return uvloop.run(run(config.worker_share(settings), notifier, metrics))
    except StartupError as error:
        print(f"greetproxy: {error}", file=sys.stderr)
        return error.status


if __name__ == "__main__":
    sys.exit(main())
