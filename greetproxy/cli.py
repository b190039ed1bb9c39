"""Command line: ``greetproxy run`` (the daemon) and ``greetproxy demo``."""

from __future__ import annotations

import argparse
import sys

import uvloop

from . import __version__, config, logs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="greetproxy", description="Greet-pause SMTP front proxy for sendmail."
    )
    parser.add_argument("--version", action="version", version=f"greetproxy {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="run the proxy, configured by GREETPROXY_* environment variables")
    demo = commands.add_parser("demo", help="run the proxy in front of an embedded backend, on loopback")
    demo.add_argument("--maildir", default="demo-maildir", help="where the demo backend stores messages")
    demo.add_argument("--port", type=int, default=2525, help="loopback port of the demo proxy")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import demo_main

        return demo_main(args.maildir, args.port)
    return run_main()


def run_main() -> int:
    from .server import StartupError, run

    try:
        settings = config.load()
    except config.ConfigError as error:
        print(f"greetproxy: {error}", file=sys.stderr)
        return 2
    logs.configure(settings.log_format, settings.log_level)
    try:
        return uvloop.run(run(settings))
    except StartupError as error:
        print(f"greetproxy: {error}", file=sys.stderr)
        return error.status


if __name__ == "__main__":
    sys.exit(main())
