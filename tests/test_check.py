"""`greetproxy check`: the effective settings with their sources, and the checks of what they name."""

from __future__ import annotations

import re

from greetproxy import config
from tests.conftest import proxy_env
from tests.support.dns import DnsStub
from tests.support.proxy import free_port, run_once


def test_check_passes_against_a_safe_sendmail_and_lists_every_setting(backend):
    result = run_once(proxy_env(backend.port, greet_pause="3s"), command="check")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "GREETPROXY_GREET_PAUSE=3s  [environment]" in out
    assert "GREETPROXY_MAX_CONNECTIONS=10000  [default]" in out
    lines = [line for line in out.splitlines() if line.startswith("  GREETPROXY_")]
    assert sorted(line.split("=", 1)[0].strip() for line in lines) == sorted(config.variable_names())
    assert all(line.endswith(("  [environment]", "  [default]")) for line in lines)
    assert re.search(r"ok +backend EHLO: .*PIPELINING", out)
    assert re.search(r"- +withheld: .*AUTH", out)  # sendmail offers it, the proxy does not pass it on
    assert re.search(r"ok +open-relay probe: .*550 5\.7\.1", out)
    assert out.rstrip().endswith("all checks passed")


def test_check_fails_on_an_open_backend_and_a_broken_dnsbl(stock_sendmail):
    with DnsStub() as dns:
        dns.set("2.0.0.127.good.test", ["127.0.0.2"])
        env = proxy_env(
            stock_sendmail.port, dnsbl_sites="good.test, broken.test", dns_servers=f"127.0.0.1:{dns.port}"
        )
        result = run_once(env, command="check")
    assert result.returncode == 1
    assert re.search(r"PROBLEM +open-relay probe: .*relays for the proxy's source address", result.stdout)
    assert re.search(r"ok +DNSBL good\.test", result.stdout)
    assert re.search(r"PROBLEM +DNSBL broken\.test: 127\.0\.0\.2 test entry not listed", result.stdout)
    assert result.stdout.rstrip().endswith("2 problem(s)")


def test_check_reports_an_unreachable_backend_and_exits_2_on_bad_config():
    result = run_once(proxy_env(free_port()), command="check")
    assert result.returncode == 1
    assert re.search(r"PROBLEM +backend: connect to 127\.0\.0\.1:\d+ failed", result.stdout)
    bad = run_once(proxy_env(free_port(), greet_pause="soon"), command="check")
    assert bad.returncode == 2 and "GREETPROXY_GREET_PAUSE='soon'" in bad.stderr
