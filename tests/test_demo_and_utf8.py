"""The demo as a new user runs it, and SMTPUTF8 through the proxy.

Debian's sendmail 8.17 is built without SMTPUTF8 (no USE_EAI; ``O SmtpUTF8=True`` makes it refuse
its configuration), so SMTPUTF8 relaying is shown against the demo's aiosmtpd backend, which has
it; against sendmail the proxy must simply not offer what sendmail lacks.
"""

from __future__ import annotations

import asyncio
import mailbox
import signal
import smtplib
import subprocess
import sys
import threading

from tests.support.client import RawClient
from tests.support.proxy import ROOT, ProxyProcess, free_port


def test_demo_delivers_drops_and_serves_until_ctrl_c(tmp_path):
    port = free_port()
    maildir = tmp_path / "maildir"
    demo = subprocess.Popen(
        [sys.executable, "-m", "greetproxy", "demo", "--port", str(port), "--maildir", str(maildir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    lines: list[str] = []
    serving = threading.Event()

    def read() -> None:
        assert demo.stdout is not None
        for line in demo.stdout:
            lines.append(line)
            if "Ctrl-C stops it" in line:
                serving.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert serving.wait(30), "".join(lines)
        output = "".join(lines)
        assert str(maildir) in output
        assert "554 5.5.1" in output and "pregreet" in output
        assert f"swaks --server 127.0.0.1:{port}" in output
        with smtplib.SMTP("127.0.0.1", port, local_hostname="me.example", timeout=10) as client:
            client.sendmail("me@example.org", ["you@demo.test"], b"Subject: by hand\r\n\r\nhi\r\n")
            assert client.docmd("MAIL", "FROM:<me@example.org>")[0] == 250
            refused = client.docmd("RCPT", "TO:<someone@elsewhere.invalid>")
            assert refused == (550, b"5.7.1 Relaying denied")  # the demo backend relays for no one
    finally:
        demo.send_signal(signal.SIGINT)
        assert demo.wait(15) == 0
    messages = [message["Subject"] for message in mailbox.Maildir(maildir, create=False)]
    assert sorted(messages) == ["by hand", "hello"]
    assert "Traceback" not in "".join(lines)


def test_smtputf8_text_and_addresses_pass_byte_for_byte(tmp_path):
    from greetproxy.demo import start_backend

    received: list[bytes] = []
    ready = threading.Event()
    backend_port: list[int] = []

    def serve() -> None:
        async def main() -> None:
            server = await start_backend(tmp_path / "utf8", domain="exämple.test")
            backend_port.append(server.sockets[0].getsockname()[1])
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.05)
            server.close()

        asyncio.run(main())

    stop = threading.Event()
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    proxy = ProxyProcess(
        {
            "GREETPROXY_LISTEN": f"127.0.0.1:{free_port()}",
            "GREETPROXY_BACKEND": f"127.0.0.1:{backend_port[0]}",
            "GREETPROXY_GREET_PAUSE": "0.3s",
            "GREETPROXY_HOSTNAME": "proxy.example.test",
        }
    ).start()
    try:
        body = "Subject: grüße\r\n\r\nKöln, 日本語\r\n".encode()
        with RawClient(proxy.port) as client:
            client.reply()
            assert "SMTPUTF8" in client.command("EHLO client.example").text
            assert client.command("MAIL FROM:<jörg@exämple.org> SMTPUTF8".encode()).code == 250
            assert client.command("RCPT TO:<ünïcode@exämple.test>".encode()).code == 250
            assert client.command("DATA").code == 354
            assert client.command(body + b".").code == 250
        for message in mailbox.Maildir(tmp_path / "utf8", create=False):
            received.append(message.as_bytes())
        assert len(received) == 1 and body.split(b"\r\n\r\n")[1].replace(b"\r\n", b"\n") in received[0]
        assert b"with UTF8SMTP id" in received[0]
    finally:
        proxy.stop()
        stop.set()
        thread.join(5)


def test_sendmail_without_smtputf8_is_not_offered_it(proxy):
    with RawClient(proxy.port) as client:
        client.reply()
        assert "SMTPUTF8" not in client.command("EHLO client.example").text
        answer = client.command("MAIL FROM:<jörg@example.org> SMTPUTF8".encode())
        assert answer.code >= 500  # sendmail's own refusal, passed on
