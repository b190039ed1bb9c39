"""The access list (permit, reject, per-network pause, SIGHUP reload) and the pass cache."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from tests.support.client import RawClient
from tests.support.proxy import ROOT, child_environment, run_once


def access_file(tmp_path, text: str) -> str:
    path = tmp_path / "access"
    path.write_text(text)
    return str(path)


def banner_after(port: int) -> tuple[int, float]:
    with RawClient(port) as client:
        code = client.reply().code
        return code, time.monotonic() - client.connected_at


def test_permit_skips_the_pause_and_every_test(start_proxy, backend, tmp_path):
    proxy = start_proxy(greet_pause="2s", access_file=access_file(tmp_path, "127.0.0.0/8 permit\n"))
    with RawClient(proxy.port) as client:
        client.send(b"EHLO early.example\r\n")  # early talk is no test for a permitted client
        assert client.reply().code == 220
        assert time.monotonic() - client.connected_at < 1.5
        assert client.reply().code == 250
    assert proxy.wait_event("pass")["via"] == "permit"
    assert proxy.find("pregreet") == []


def test_reject_refuses_at_once_without_the_backend(start_proxy, tmp_path):
    proxy = start_proxy(access_file=access_file(tmp_path, "127.0.0.1/32 reject  # a known bad host\n"))
    with RawClient(proxy.port) as client:
        answer = client.reply()
        assert answer.code == 554 and answer.text == "5.7.1 Service unavailable; client [127.0.0.1] blocked"
        assert client.is_closed()
    assert proxy.wait_event("reject", reason="access")
    assert proxy.find("pass") == []


def test_per_network_pause_longest_prefix_wins(start_proxy, tmp_path):
    text = "127.0.0.0/8 pause=3s\n127.0.0.1/32 pause=0\n"
    proxy = start_proxy(greet_pause="2s", access_file=access_file(tmp_path, text))
    code, waited = banner_after(proxy.port)
    assert code == 220 and waited < 1.0


def test_sighup_rereads_the_list_and_a_bad_file_keeps_the_old_one(start_proxy, tmp_path):
    path = access_file(tmp_path, "127.0.0.0/8 screen\n")
    proxy = start_proxy(greet_pause="0", access_file=path)
    proxy.expected_errors.add("access_list")
    assert banner_after(proxy.port)[0] == 220
    (tmp_path / "access").write_text("127.0.0.0/8 reject\n")
    proxy.signal(signal.SIGHUP)
    proxy.wait_count("access_list", 2)
    assert banner_after(proxy.port)[0] == 554
    (tmp_path / "access").write_text("127.0.0.0/8 allow-all\n")
    proxy.signal(signal.SIGHUP)
    error = proxy.wait_event("access_list", where=lambda event: "error" in event)
    assert "access:1: unknown action 'allow-all'" in error["error"]
    assert banner_after(proxy.port)[0] == 554  # still the list that loaded last


def test_bad_access_file_at_start_exits_2_naming_file_and_line(backend, tmp_path):
    from tests.conftest import proxy_env

    path = access_file(tmp_path, "# comment\n192.0.2.0/24 permit\n192.0.2.1/24 reject\n")
    result = run_once(proxy_env(backend.port, access_file=path))
    assert result.returncode == 2
    assert f"{path}:3: 192.0.2.1/24 has host bits set" in result.stderr


def test_a_pass_is_remembered_across_a_restart_and_early_talk_withdraws_it(start_proxy, tmp_path):
    state = str(tmp_path / "state")
    first = start_proxy(greet_pause="1s", pass_ttl="1d", state_dir=state)
    code, waited = banner_after(first.port)
    assert code == 220 and waited >= 1.0
    assert first.wait_event("pass")["cached"] is False
    assert banner_after(first.port)[1] < 0.5  # remembered: no pause
    assert first.wait_count("pass", 1, cached=True)
    first.stop()
    second = start_proxy(greet_pause="1s", pass_ttl="1d", state_dir=state)
    assert banner_after(second.port)[1] < 0.5  # the SQLite store kept it
    with RawClient(second.port) as bot:
        bot.send(b"EHLO bot\r\n")
        assert bot.reply().code == 554
    time.sleep(0.2)
    assert banner_after(second.port)[1] >= 1.0  # the pass is gone: the pause again


def test_cache_command_lists_and_forgets_beside_the_daemon(start_proxy, tmp_path):
    state = str(tmp_path / "state")
    proxy = start_proxy(greet_pause="0.5s", pass_ttl="1d", state_dir=state, pass_prefix="24,64")
    banner_after(proxy.port)
    proxy.wait_event("pass")
    time.sleep(0.3)  # the write reaches the file

    def cache(*words: str) -> subprocess.CompletedProcess[str]:
        env = child_environment({"GREETPROXY_STATE_DIR": state, "GREETPROXY_PASS_PREFIX": "24,64"})
        return subprocess.run(
            [sys.executable, "-m", "greetproxy", "cache", *words],
            env=env,
            capture_output=True,
            text=True,
            cwd=ROOT,
        )

    listed = cache("list")
    assert listed.returncode == 0 and listed.stdout.startswith("127.0.0.0/24\t")
    assert banner_after(proxy.port)[1] < 0.4
    assert cache("forget", "127.0.0.9").returncode == 0  # the same /24
    time.sleep(1.5)  # the daemon looks for outside changes every second
    assert banner_after(proxy.port)[1] >= 0.5
    assert cache("forget", "192.0.2.1").returncode == 1
