"""`greetproxy report`: a summary of a real run's JSON log."""

from __future__ import annotations

import json
import re
import smtplib
import subprocess
import sys

from tests.support.client import RawClient
from tests.support.dns import DnsStub
from tests.support.proxy import ROOT

DOMAIN = "example.test"


def test_report_of_a_real_run_counts_outcomes_talkers_messages_and_draws_the_hours(
    start_proxy, backend, tmp_path
):
    with DnsStub() as dns:
        dns.set("9.0.0.127.bl.test", ["127.0.0.2"])
        proxy = start_proxy(dnsbl_sites="bl.test", dns_servers=f"127.0.0.1:{dns.port}")
        for user in ("rita", "rob"):
            with smtplib.SMTP("127.0.0.1", proxy.port, local_hostname="r.example", timeout=10) as client:
                client.sendmail("a@sender.example", [f"{user}@{DOMAIN}"], b"Subject: r\r\n\r\nreport\r\n")
                client.mail("a@sender.example")
                assert client.rcpt(f"unknown@{DOMAIN}")[0] == 550
        for source in ("127.0.0.3", "127.0.0.3", "127.0.0.4"):
            with RawClient(proxy.port, source=source) as bot:
                bot.send(b"EHLO bot.example\r\n")
                assert bot.reply().code == 554
        with RawClient(proxy.port, source="127.0.0.9") as listed:
            assert listed.reply().code == 554
        proxy.wait_count("disconnect", 6)
        proxy.stop()
    log = tmp_path / "greetproxy.log"
    lines = [json.dumps(event) for event in proxy.events] + ["a journal line that is not JSON"]
    log.write_text("\n".join(lines) + "\n")
    png = tmp_path / "hours.png"
    result = subprocess.run(
        [sys.executable, "-m", "greetproxy", "report", str(log), "--png", str(png)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "1 other lines skipped" in out
    assert re.search(r"connections: 6, passed 2 \(33\.3%\)", out)
    assert re.search(r"^  pregreet +3 ", out, re.M) and re.search(r"^  dnsbl +1 ", out, re.M)
    assert re.search(r"top early talkers \(2 addresses\):\n  127\.0\.0\.3 +2\n  127\.0\.0\.4 +1", out)
    assert re.search(r"top DNSBL-listed clients \(1 addresses\):\n  127\.0\.0\.9 +1", out)
    assert re.search(r"messages: 2\n  250 +2", out)
    assert re.search(r"^  550 RCPT +by backend +2$", out, re.M)
    assert re.search(r"^  \d{4}-\d\d-\d\d \d\d:00 +6 +2 +0 +3 +1 +2$", out, re.M)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_of_a_missing_file_is_one_line_and_status_1(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "greetproxy", "report", str(tmp_path / "none.log")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == f"greetproxy: {tmp_path / 'none.log'}: No such file or directory"
