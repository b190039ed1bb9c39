"""Hand-off mode against relay mode and a direct connection, in one run against a real sendmail.

    python3 -m bench.handoff [--senders 20] [--messages 25] [--rounds 3]

Messages per second for S concurrent senders (each one session of M messages): direct to sendmail's
daemon, through the proxy relaying to it, and through the proxy handing each session to its own
`sendmail -bs -Am` (same configuration), in alternating rounds; the ratios of the medians are the
figures. Needs root (the hand-off helper runs sendmail as root; the proxy runs as nobody). Every loop
is bounded in count and time; only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
from pathlib import Path

from bench.core import bench_parser, proxy_for, throughput, wait_listening, with_sendmail
from tests.support.proxy import LOOPBACK_SCREENED
from tests.support.sendmail import Sendmail


async def measure(args: argparse.Namespace, sendmail: Sendmail, workdir: Path) -> int:
    shared = workdir / "public"
    shared.mkdir(mode=0o755)
    workdir.chmod(0o755)  # nobody reads the access file after the proxy drops its privileges
    (shared / "access").write_text(LOOPBACK_SCREENED)
    relay = proxy_for(sendmail, 0)
    handoff = proxy_for(
        sendmail,
        0,
        GREETPROXY_HANDOFF="sendmail",
        GREETPROXY_SENDMAIL_COMMAND=shlex.join(sendmail.session_command()),
        GREETPROXY_USER="nobody",
        GREETPROXY_ACCESS_FILE=str(shared / "access"),
    )
    rates: dict[str, list[float]] = {"direct": [], "relay": [], "handoff": []}
    try:
        for proxy in (relay, handoff):
            await wait_listening(proxy.port)
        ports = {"direct": sendmail.port, "relay": relay.port, "handoff": handoff.port}
        for round_number in range(args.rounds):
            for mode, port in ports.items():
                rates[mode].append(await throughput(port, args.senders, args.messages))
                sendmail.clear()
            line = ", ".join(f"{mode} {values[-1]:.0f}" for mode, values in rates.items())
            print(f"  round {round_number + 1}: {line} msg/s", file=sys.stderr)
    finally:
        relay.stop()
        handoff.stop()
    median = {mode: statistics.median(values) for mode, values in rates.items()}
    print(f"throughput, {args.senders} concurrent senders x {args.messages} messages x {args.rounds} rounds:")
    print(
        f"  direct to sendmail {median['direct']:.0f} msg/s, relay {median['relay']:.0f} msg/s "
        f"({median['relay'] / median['direct']:.3f}x), hand-off {median['handoff']:.0f} msg/s "
        f"({median['handoff'] / median['direct']:.3f}x)"
    )
    return 0


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--senders", type=int, default=20)
    parser.add_argument("--messages", type=int, default=25, help="per sender and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    return with_sendmail(lambda sendmail, workdir: measure(args, sendmail, workdir))


if __name__ == "__main__":
    sys.exit(main())
