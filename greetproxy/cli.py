"""Command line: ``greetproxy run`` (the daemon), ``check``, ``report``, ``demo`` and ``cache``."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

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
    cache = commands.add_parser("cache", help="inspect or edit the pass cache (GREETPROXY_STATE_DIR)")
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
    """Works beside a running daemon: it notices the change within about a second."""
    from .server import PASS_CACHE_FILE
    from .store import StoreError, cache_clear, cache_entries, cache_forget

    try:
        settings = config.load()
    except config.ConfigError as error:
        print(f"greetproxy: {error}", file=sys.stderr)
        return 2
    path = Path(settings.state_dir) / PASS_CACHE_FILE
    try:
        if args.cache_command == "list":
            for key, expires in cache_entries(path):
                print(f"{key}\t{datetime.fromtimestamp(expires, UTC).isoformat(timespec='seconds')}")
        elif args.cache_command == "forget":
            if not cache_forget(path, args.ip, *settings.pass_prefix):
                print(f"greetproxy: no pass covers {args.ip}", file=sys.stderr)
                return 1
        else:
            print(f"cleared {cache_clear(path)} passes")
    except (StoreError, ValueError) as error:
        print(f"greetproxy: {error}", file=sys.stderr)
        return 1
    return 0


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
