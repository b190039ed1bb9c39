"""Out of file descriptors: under a low open-file limit the proxy refuses new clients with 421
before accept() itself fails, warns at most once a second, and recovers when clients leave."""

from __future__ import annotations

import smtplib
import socket
import time

from tests.conftest import proxy_env
from tests.support.proxy import ProxyProcess

FILES = 128  # the budget is this less 32 kept for the rest
CLIENTS = 300


def test_a_low_file_limit_refuses_with_421_logs_once_a_second_and_recovers(backend):
    proxy = ProxyProcess(
        proxy_env(backend.port, greet_pause="4s", client_concurrency="1000", client_rate="100000"),
        prefix=["prlimit", f"--nofile={FILES}:{FILES}"],
    ).start()
    began = time.monotonic()
    held, refused = [], 0
    for _ in range(CLIENTS):
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        sock.settimeout(0.2)
        try:
            answer = sock.recv(200)
        except TimeoutError:
            held.append(sock)  # waiting in its pause
            continue
        assert answer.startswith(b"421 4.7.0"), answer
        refused += 1
        sock.close()
    flood = time.monotonic() - began
    assert refused > 0 and len(held) <= FILES - 32
    proxy.wait_event("file_limit", where=lambda event: "refused" in event)
    warnings = [event for event in proxy.find("file_limit") if "refused" in event]
    assert len(warnings) <= flood + 1  # at most one a second
    assert sum(event["refused"] for event in warnings) <= refused
    for sock in held:
        sock.close()
    proxy.wait_count("disconnect", len(held), timeout=20)
    with smtplib.SMTP("127.0.0.1", proxy.port, local_hostname="after.example", timeout=20) as client:
        assert client.sendmail("a@sender.example", ["ada@example.test"], b"Subject: x\r\n\r\nback\r\n") == {}
    assert backend.wait_for_messages(1, user="ada")
    proxy.stop()
    assert not proxy.tracebacks(), proxy.tracebacks()[:3]
    print(
        f"\n{CLIENTS} clients under {FILES} descriptors: {len(held)} held, {refused} refused, "
        f"{len(warnings)} file_limit warnings in {flood:.1f}s"
    )
