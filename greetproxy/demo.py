"""``greetproxy demo``: the proxy in front of an embedded aiosmtpd backend storing into a Maildir.

It works on a fresh machine with nothing else installed: one polite client delivers, one early
talker is dropped, and the proxy keeps serving on loopback until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import mailbox
import os
import signal
import socket
import tempfile
from pathlib import Path

import aiosmtplib
import uvloop
from aiosmtpd.smtp import SMTP, Envelope
from aiosmtpd.smtp import Session as BackendSession

from . import config, logs
from .server import Proxy, StartupError

DEMO_DOMAIN = "demo.test"
DEMO_HOSTNAME = "mx.demo.test"
DEMO_PAUSE = "1s"


class MaildirBackend:
    """aiosmtpd handler: accepts mail for one domain only (so the open-relay guard passes)."""

    def __init__(self, maildir: Path, domain: str) -> None:
        for folder in ("tmp", "new", "cur"):  # Maildir(create=True) skips these if maildir exists
            (maildir / folder).mkdir(parents=True, exist_ok=True)
        self.mailbox = mailbox.Maildir(maildir, create=False)
        self.domain = domain.lower()

    async def handle_RCPT(
        self, server: SMTP, session: BackendSession, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if not address.lower().endswith("@" + self.domain):
            return "550 5.7.1 Relaying denied"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Recipient OK"

    async def handle_DATA(self, server: SMTP, session: BackendSession, envelope: Envelope) -> str:
        self.mailbox.add(envelope.original_content or b"")
        return "250 2.0.0 Message accepted for delivery"


async def start_backend(maildir: Path, domain: str = DEMO_DOMAIN, host: str = "127.0.0.1") -> asyncio.Server:
    """An aiosmtpd backend on a free loopback port of the running loop."""
    handler = MaildirBackend(maildir, domain)
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: SMTP(handler, hostname="backend." + domain, enable_SMTPUTF8=True, decode_data=False), host, 0
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def say(text: str) -> None:
    print(f"\n>>> {text}", flush=True)


async def _demo(maildir: Path, port: int, state: Path) -> int:
    loop = asyncio.get_running_loop()
    backend = await start_backend(maildir)
    backend_port = backend.sockets[0].getsockname()[1]
    settings = config.load(
        {
            "GREETPROXY_LISTEN": f"127.0.0.1:{port}",
            "GREETPROXY_BACKEND": f"127.0.0.1:{backend_port}",
            "GREETPROXY_GREET_PAUSE": DEMO_PAUSE,
            "GREETPROXY_HOSTNAME": DEMO_HOSTNAME,
            "GREETPROXY_SHUTDOWN_GRACE": "2s",
            "GREETPROXY_LOG_FORMAT": "console",
            # The demo's clients come from loopback, which is permitted (not screened) by default.
            "GREETPROXY_ACCESS_FILE": str(write_access_file(state)),
            "GREETPROXY_STATE_DIR": str(state),
            # ... and all from 127.0.0.1: a remembered pass would let the early talker skip the pause.
            "GREETPROXY_PASS_TTL": "0",
            # loopback only, for a few minutes: root may stay root (the daemon refuses to unless told)
            **({"GREETPROXY_USER": "root"} if os.geteuid() == 0 else {}),
        }
    )
    logs.configure(settings.log_format, settings.log_level)
    proxy = Proxy(settings)
    say(f"Messages go to the Maildir {maildir} (new/ holds one file per message).")
    say(
        f"Proxy on 127.0.0.1:{port}, greet pause {DEMO_PAUSE}, "
        f"in front of an aiosmtpd backend on port {backend_port}."
    )
    try:
        await proxy.start()
    except StartupError as error:
        print(f"greetproxy: {error}")
        return error.status
    say("A polite client waits for the banner, then delivers a message:")
    client = aiosmtplib.SMTP(
        hostname="127.0.0.1", port=port, local_hostname="polite.example", start_tls=False
    )
    started = loop.time()
    await client.connect(timeout=10)
    waited = loop.time() - started
    _, answer = await client.sendmail(
        "alice@example.org", [f"bob@{DEMO_DOMAIN}"], b"Subject: hello\r\n\r\nDelivered.\r\n"
    )
    await client.quit()
    say(
        f"The polite client got the banner after {waited:.1f}s, "
        "and the answer to its message was the backend's "
        f"own: '{answer}'. The proxy added a Received: header naming the session id in the log lines above."
    )
    say("An early talker sends EHLO before the banner, as spam bots replaying a dialogue do:")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"EHLO bot.example\r\n")
    refusal = (await reader.read(1024)).decode().strip()
    writer.close()
    await asyncio.sleep(0.1)
    say(
        f"The early talker got '{refusal}' at once and was closed: the 'pregreet' line shows what it sent. "
        "The backend never saw it."
    )
    say(
        f"Delivered so far: {len(mailbox.Maildir(maildir, create=False))} message(s). "
        "The proxy keeps serving.\n"
        f"    Try it: swaks --server 127.0.0.1:{port} --to you@{DEMO_DOMAIN}\n"
        f"    or:     python3 -c \"import smtplib; smtplib.SMTP('127.0.0.1', {port}).sendmail("
        f"'me@example.org', ['you@{DEMO_DOMAIN}'], 'Subject: hi\\r\\n\\r\\nhi')\"\n"
        "    Ctrl-C stops it."
    )
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, proxy.stop)
    await proxy.stopped()
    await proxy.shutdown()
    backend.close()
    return 0


def write_access_file(state: Path) -> Path:
    path = state / "access"
    path.write_text("# the demo screens loopback clients like any others\n127.0.0.0/8 screen\n::1 screen\n")
    return path


def demo_main(maildir: str, port: int) -> int:
    with tempfile.TemporaryDirectory(prefix="greetproxy-demo-") as state:
        return uvloop.run(_demo(Path(maildir).resolve(), port, Path(state)))
