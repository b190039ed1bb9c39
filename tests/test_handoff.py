"""Hand-off mode: the screened client's socket goes to a new `sendmail -bs -Am`, which sees the client."""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import signal
import smtplib
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import PROXY_HOSTNAME, proxy_env
from tests.support.client import RawClient
from tests.support.dns import DnsStub
from tests.support.load import swarm
from tests.support.proxy import LOOPBACK_SCREENED, run_once
from tests.support.sendmail import Sendmail

DOMAIN = "example.test"
UNPRIVILEGED = "nobody"


@pytest.fixture
def handoff_settings(backend: Sendmail):
    """Settings (as start_proxy takes them) for a hand-off proxy in front of the shared sendmail,
    running as nobody; ``None`` leaves a setting out."""
    # nobody reads the access file after the privileges are dropped: not under pytest's 0700 folders
    folder = Path(tempfile.mkdtemp(prefix="greetproxy-handoff-"))
    folder.chmod(0o755)
    access = folder / "access"
    access.write_text(LOOPBACK_SCREENED)

    def settings(**overrides: str | None) -> dict[str, str]:
        chosen = {
            "handoff": "sendmail",
            "sendmail_command": shlex.join(backend.session_command()),
            "user": UNPRIVILEGED,
            "access_file": str(access),
            **overrides,
        }
        return {key: value for key, value in chosen.items() if value is not None}

    yield settings
    shutil.rmtree(folder)


@pytest.fixture
def handoff_proxy(start_proxy, handoff_settings):
    return lambda **overrides: start_proxy(**handoff_settings(**overrides))


def uid_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])


def test_sendmail_sees_the_real_client_and_refuses_its_relay_attempt(handoff_proxy, backend):
    proxy = handoff_proxy()
    with smtplib.SMTP(
        "127.0.0.1", proxy.port, local_hostname="five.example", source_address=("127.0.0.5", 0), timeout=20
    ) as client:
        assert client.ehlo()[1].startswith(f"mx.{DOMAIN} Hello [127.0.0.5]".encode())
        assert (
            client.sendmail("a@sender.example", [f"hana@{DOMAIN}"], b"Subject: ho\r\n\r\nhanded off\r\n")
            == {}
        )
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            client.sendmail("a@sender.example", ["x@elsewhere.invalid"], b"Subject: relay\r\n\r\nno\r\n")
    code, text = refused.value.recipients["x@elsewhere.invalid"]
    assert code == 550 and b"Relaying denied" in text  # sendmail's own answer to 127.0.0.5
    [raw] = backend.wait_for_messages(1, user="hana")
    assert b"Received: from five.example ([127.0.0.5])" in raw
    assert b"greetproxy" not in raw  # the proxy was out of the data path
    assert backend.relayed() == []
    event = proxy.wait_event("handoff")
    exit_event = proxy.wait_event("handoff_exit", session=event["session"])
    # sendmail -bs exits with EX_DATAERR (65) after a session in which it refused a recipient
    assert exit_event["pid"] == event["pid"] and exit_event["status"] == 65


def test_network_facing_process_is_unprivileged_and_the_helper_is_root(handoff_proxy):
    proxy = handoff_proxy()
    helper = proxy.wait_event("handoff_helper", state="ready")
    assert uid_of(proxy.pid) == pwd.getpwnam(UNPRIVILEGED).pw_uid
    assert uid_of(helper["pid"]) == 0
    assert proxy.wait_event("privileges")["user"] == UNPRIVILEGED


def test_teaser_and_sendmails_banner_make_one_greeting(handoff_proxy, backend):
    proxy = handoff_proxy(greet_banner="greetings, please wait")
    with RawClient(proxy.port) as client:
        reply = client.reply()
        lines = reply.text.splitlines()
        assert reply.code == 220 and lines[0] == f"{PROXY_HOSTNAME} greetings, please wait"
        assert lines[1].startswith(f"mx.{DOMAIN} ESMTP")
        assert client.command("QUIT").code == 221
    with smtplib.SMTP("127.0.0.1", proxy.port, local_hostname="teaser.example", timeout=20) as client:
        client.sendmail("a@sender.example", [f"tina@{DOMAIN}"], b"Subject: t\r\n\r\nteaser\r\n")
    result = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{proxy.port}", "--from", "s@sender.example"]
        + ["--to", f"tina@{DOMAIN}", "--helo", "swaks.example", "--body", "via swaks"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(backend.wait_for_messages(2, user="tina")) == 2


def test_early_talkers_and_listed_clients_never_start_sendmail(handoff_proxy, backend):
    with DnsStub() as dns:
        dns.set("6.0.0.127.bl.test", ["127.0.0.2"])
        proxy = handoff_proxy(dnsbl_sites="bl.test", dns_servers=f"127.0.0.1:{dns.port}")
        with RawClient(proxy.port) as bot:
            bot.send(b"EHLO bot.example\r\n")
            assert bot.reply().code == 554
        with RawClient(proxy.port, source="127.0.0.6") as listed:
            assert listed.reply().code == 554
        proxy.wait_count("reject", 2)
    assert proxy.find("handoff") == []
    assert "[127.0.0.6]" not in backend.log()
    helper = proxy.wait_event("handoff_helper", state="ready")
    assert not [pid for pid in os.listdir("/proc") if pid.isdigit() and _parent(int(pid)) == helper["pid"]]


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return -1


def test_a_burst_of_200_stays_within_the_child_limit_and_all_deliver(handoff_proxy, backend):
    proxy = handoff_proxy(backend_max_connections="10", client_concurrency="500", client_rate="10000")
    outcomes = swarm(proxy.port, 200, timeout=120)
    failed = [outcome for outcome in outcomes if not outcome.delivered]
    assert not failed, f"{len(failed)} of 200 not delivered, e.g. {failed[:3]}"
    assert len(backend.wait_for_messages(200, timeout=60)) == 200
    handoffs = proxy.wait_count("handoff", 200)
    assert max(event["children"] for event in handoffs) <= 10
    exits = proxy.wait_count("handoff_exit", 200)
    assert {event["status"] for event in exits} == {0}


def test_a_failed_spawn_gives_421(handoff_proxy, tmp_path):
    script = tmp_path / "mta"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    proxy = handoff_proxy(sendmail_command=str(script))
    proxy.expected_errors.add("handoff_spawn")
    script.chmod(0o644)  # the helper can no longer execute it
    with RawClient(proxy.port) as client:
        reply = client.reply()
        assert reply.code == 421 and reply.text.startswith("4.3.2")
    assert "Permission denied" in proxy.wait_event("handoff_failed")["reason"]


def test_losing_the_helper_stops_the_proxy_with_status_1(handoff_proxy):
    proxy = handoff_proxy()
    helper = proxy.wait_event("handoff_helper", state="ready")
    proxy.expected_errors.add("handoff_helper")
    os.kill(helper["pid"], signal.SIGKILL)
    assert proxy.wait(timeout=30) == 1
    assert proxy.wait_event("handoff_helper", state="lost")


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"pregreet_action": "ignore"}, "GREETPROXY_PREGREET_ACTION='ignore': expected drop or enforce"),
        ({"sendmail_command": "/nonexistent/sendmail -bs"}, "/nonexistent/sendmail is not an executable"),
        ({"user": "root"}, "GREETPROXY_USER='root': GREETPROXY_HANDOFF=sendmail needs an unprivileged user"),
    ],
)
def test_handoff_misconfiguration_exits_2(handoff_settings, backend, overrides, expected):
    result = run_once(proxy_env(backend.port, **handoff_settings(**overrides)))
    assert result.returncode == 2, result.stdout + result.stderr
    assert expected in result.stderr
