"""DNSBL/DNSWL scoring in the daemon, against a DNS stub on loopback and the real sendmail."""

from __future__ import annotations

import signal
import time

import pytest

from tests.support.client import RawClient
from tests.support.dns import DnsStub

CLIENT = "127.0.0.5"  # not 127.0.0.1: that name is the RFC 5782 "never listed" test entry
NAME = "5.0.0.127"


@pytest.fixture
def dns():
    stub = DnsStub().start()
    for zone in ("bl.test", "wl.test", "quota.test", "odd.test", "silent.test"):
        stub.set(f"2.0.0.127.{zone}", ["127.0.0.2"])  # the RFC 5782 test entry, for the self-test
    yield stub
    stub.stop()


def start(start_proxy, dns, sites: str, **overrides: str):
    overrides.setdefault("greet_pause", "0.5s")
    overrides.setdefault("greet_pause_jitter", "0")
    return start_proxy(dnsbl_sites=sites, dns_servers=f"127.0.0.1:{dns.port}", **overrides)


def banner(proxy) -> tuple[tuple[int, str], float, RawClient]:
    client = RawClient(proxy.port, source=CLIENT)
    answer = client.reply()
    return answer, time.monotonic() - client.connected_at, client


def test_a_listed_client_is_refused_naming_the_list(start_proxy, backend, dns):
    dns.set(f"{NAME}.bl.test", ["127.0.0.2"])
    proxy = start(start_proxy, dns, "bl.test*2")
    answer, _, client = banner(proxy)
    client.close()
    assert answer == (554, f"5.7.1 Service unavailable; client [{CLIENT}] blocked using bl.test")
    event = proxy.wait_event("dnsbl")
    assert event["score"] == 2 and event["listed"] == ["bl.test=127.0.0.2"]
    assert proxy.wait_event("reject", reason="dnsbl")
    assert proxy.find("pass") == []


def test_weights_and_filters_add_up_against_the_threshold(start_proxy, backend, dns):
    dns.set(f"{NAME}.bl.test", ["127.0.0.4"])
    dns.set(f"{NAME}.odd.test", ["127.0.0.3"])
    sites = "bl.test=127.0.0.[2..3]*5, odd.test=127.0.0.[3;7]*1, wl.test*-5"
    proxy = start(start_proxy, dns, sites, dnsbl_threshold="2")
    answer, _, client = banner(proxy)  # bl.test answered outside its filter: only odd.test counts
    client.close()
    assert answer.code == 220
    assert proxy.wait_event("dnsbl")["score"] == 1


def test_a_dnswl_listed_client_skips_the_pause(start_proxy, backend, dns):
    dns.set(f"{NAME}.wl.test", ["127.0.10.2"])
    proxy = start(
        start_proxy, dns, "bl.test, wl.test=127.0.[0..255].[1..3]*-5", greet_pause="3s", dnswl_threshold="-1"
    )
    answer, waited, client = banner(proxy)
    client.close()
    assert answer.code == 220 and waited < 1.5
    assert proxy.wait_event("pass")["via"] == "dnswl"


def test_lookups_run_during_the_pause(start_proxy, backend, dns):
    dns.ready_after(f"{NAME}.bl.test", 1.0)  # a recursive resolver busy for 1 s, answering retries then
    proxy = start(start_proxy, dns, "bl.test", greet_pause="1s", dnsbl_timeout="3s")
    answer, waited, client = banner(proxy)
    client.close()
    assert answer.code == 220
    assert waited < 1.0 + 0.2, f"a 1 s lookup during a 1 s pause delayed the banner to {waited:.2f}s"


@pytest.mark.parametrize("zone, answer", [("quota.test", "127.255.255.254"), ("odd.test", "10.0.0.1")])
def test_error_answers_score_nothing(start_proxy, backend, dns, zone, answer):
    dns.set(f"{NAME}.{zone}", [answer])
    proxy = start(start_proxy, dns, f"{zone}*5")
    reply, _, client = banner(proxy)
    client.close()
    assert reply.code == 220
    event = proxy.wait_event("dnsbl")
    assert event["score"] == 0 and answer in event["errors"][0]


def test_a_silent_list_fails_open_within_the_timeout(start_proxy, backend, dns):
    dns.never_answer("silent.test")
    proxy = start(start_proxy, dns, "silent.test*5", greet_pause="0.3s", dnsbl_timeout="0.8s")
    answer, waited, client = banner(proxy)
    client.close()
    assert answer.code == 220 and waited < 0.8 + 0.5
    assert "timeout" in proxy.wait_event("dnsbl")["errors"][0]


def test_connections_from_one_address_share_one_lookup(start_proxy, backend, dns):
    proxy = start(start_proxy, dns, "bl.test", greet_pause="1s")
    proxy.wait_event("listening")
    time.sleep(0.3)  # the start-up self-test is done
    dns.clear_queries()
    clients = [RawClient(proxy.port, source=CLIENT) for _ in range(5)]
    try:
        assert [client.reply().code for client in clients] == [220] * 5
    finally:
        for client in clients:
            client.close()
    assert dns.count(f"{NAME}.bl.test") == 1


def test_a_broken_list_is_reported_at_start(start_proxy, backend, dns):
    dns.nxdomain("2.0.0.127.bl.test")  # the 127.0.0.2 test entry is missing
    proxy = start(start_proxy, dns, "bl.test")
    assert "bl.test" in proxy.wait_event("dnsbl_selftest")["problem"]


def test_sighup_rereads_a_sites_file_and_keeps_the_old_lists_if_it_is_bad(
    start_proxy, backend, dns, tmp_path
):
    dns.set(f"{NAME}.quota.test", ["127.0.0.2"])  # listed only on the list the file names later
    sites = tmp_path / "dnsbl"
    sites.write_text("# the lists\nbl.test*2\n")
    proxy = start(start_proxy, dns, str(sites))
    answer, _, client = banner(proxy)
    assert answer.code == 220  # not on bl.test
    client.close()

    sites.write_text("bl.test*2  # still\nquota.test\n")
    proxy.signal(signal.SIGHUP)
    assert proxy.wait_event("dnsbl_sites")["lists"] == ["bl.test", "quota.test"]
    answer, _, client = banner(proxy)
    assert answer == (554, f"5.7.1 Service unavailable; client [{CLIENT}] blocked using quota.test")
    client.close()

    proxy.expected_errors.add("dnsbl_sites")
    sites.write_text("bl.test*heavy\n")
    proxy.signal(signal.SIGHUP)
    error = proxy.wait_event("dnsbl_sites", kept="old lists")
    assert "heavy" in error["error"]
    answer, _, client = banner(proxy)
    assert answer.code == 554  # the lists before the bad edit still hold
    client.close()
