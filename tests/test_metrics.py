"""Prometheus metrics at GREETPROXY_METRICS_LISTEN, counted from the decisions the proxy logs."""

from __future__ import annotations

import smtplib
import time

from tests.support.client import RawClient
from tests.support.dns import DnsStub
from tests.support.metrics import scrape
from tests.support.proxy import free_port

DOMAIN = "example.test"


def test_metrics_count_outcomes_messages_dnsbl_answers_and_waiting_clients(start_proxy, backend):
    metrics_port = free_port()
    with DnsStub() as dns:
        dns.set("7.0.0.127.bl.test", ["127.0.0.2"])
        proxy = start_proxy(
            metrics_listen=f"127.0.0.1:{metrics_port}",
            dnsbl_sites="bl.test",
            dns_servers=f"127.0.0.1:{dns.port}",
            greet_pause="2s",  # long enough to see a client waiting
        )
        with smtplib.SMTP("127.0.0.1", proxy.port, local_hostname="m.example", timeout=10) as client:
            client.sendmail("a@sender.example", [f"mia@{DOMAIN}"], b"Subject: m\r\n\r\ncounted\r\n")
            client.mail("a@sender.example")
            assert client.rcpt(f"unknown@{DOMAIN}")[0] == 550
        with RawClient(proxy.port) as bot:
            bot.send(b"EHLO bot.example\r\n")
            assert bot.reply().code == 554
        with RawClient(proxy.port, source="127.0.0.7") as listed:
            assert listed.reply().code == 554
        with RawClient(proxy.port, source="127.0.0.8"):  # still in its pause while we look
            deadline = time.monotonic() + 3  # the gauges are refreshed once a second
            while (values := scrape(metrics_port))[("greetproxy_connections_waiting", ())] != 1:
                assert time.monotonic() < deadline, values[("greetproxy_connections_waiting", ())]
                time.sleep(0.1)
    assert values[("greetproxy_connections_total", (("outcome", "pass"),))] == 1
    assert values[("greetproxy_connections_total", (("outcome", "pregreet"),))] == 1
    assert values[("greetproxy_connections_total", (("outcome", "dnsbl"),))] == 1
    assert values[("greetproxy_messages_total", (("reply", "2xx"),))] == 1
    assert values[("greetproxy_backend_errors_total", (("command", "RCPT"), ("reply", "5xx")))] == 1
    assert values[("greetproxy_dnsbl_answers_total", (("list", "bl.test"), ("result", "listed")))] == 1
    assert values[("greetproxy_dnsbl_answers_total", (("list", "bl.test"), ("result", "not_listed")))] >= 1
    assert values[("greetproxy_pause_seconds_count", ())] == 1
    assert values[("greetproxy_session_seconds_count", ())] >= 3  # the three that ended
