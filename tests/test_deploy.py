"""deploy/systemd: the unit verifies, the env file matches the settings, sd_notify is spoken."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys

import pytest

from greetproxy import config
from tests.conftest import proxy_env
from tests.support.proxy import ROOT, ProxyProcess, child_environment

SYSTEMD = ROOT / "deploy" / "systemd"


def env_file_values() -> dict[str, str]:
    text = (SYSTEMD / "greetproxy.env").read_text()
    return dict(re.findall(r"^#?(GREETPROXY_[A-Z0-9_]+)=(.*)$", text, re.M))


def test_env_file_names_every_variable_and_nothing_else():
    assert sorted(env_file_values()) == sorted(config.variable_names())


def test_env_file_values_are_valid_settings():
    shown = {name: value for name, value in env_file_values().items() if value}
    settings = config.load(shown)
    assert settings.greet_pause == 5.0 and settings.listen[0].port == 25


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_unit_passes_systemd_analyze_verify(tmp_path):
    script = shutil.which("greetproxy")
    assert script, "the greetproxy console script is not installed"
    unit = (SYSTEMD / "greetproxy.service").read_text()
    unit = unit.replace("/usr/local/bin/greetproxy", script)
    unit = unit.replace("/etc/greetproxy/greetproxy.env", str(SYSTEMD / "greetproxy.env"))
    (tmp_path / "greetproxy.service").write_text(unit)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "greetproxy.service")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    for hardening in (
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "StateDirectory=greetproxy",
        "Type=notify",
    ):
        assert hardening in unit


def test_sd_notify_ready_watchdog_stopping(backend, tmp_path):
    path = str(tmp_path / "notify")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    listener.settimeout(10)
    try:
        env = proxy_env(backend.port)
        env.update(NOTIFY_SOCKET=path, WATCHDOG_USEC="200000")
        proxy = ProxyProcess(env).start()
        ready = listener.recv(4096).decode()
        assert ready.startswith("READY=1\nSTATUS=listening on 127.0.0.1:")
        assert listener.recv(4096) == b"WATCHDOG=1"
        assert listener.recv(4096) == b"WATCHDOG=1"  # again, 0.1 s later: half the interval
        proxy.signal(signal.SIGTERM)
        messages = []
        while b"STOPPING=1" not in messages:
            messages.append(listener.recv(4096))
        assert proxy.wait() == 0
    finally:
        listener.close()


def test_freebsd_rc_script_is_valid_sh():
    script = ROOT / "deploy" / "freebsd" / "greetproxy"
    result = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = script.read_text()
    for word in ('rcvar="greetproxy_enable"', "greetproxy_env_file", "/usr/sbin/daemon", "run_rc_command"):
        assert word in text


@pytest.mark.skipif(os.geteuid() != 0, reason="the refusal is of root")
def test_root_without_greetproxy_user_refuses_to_start(backend):
    env = child_environment(proxy_env(backend.port))
    del env["GREETPROXY_USER"]
    result = subprocess.run(
        [sys.executable, "-m", "greetproxy", "run"], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "running as root: set GREETPROXY_USER" in result.stderr


def test_the_haproxy_example_is_a_valid_haproxy_config():
    from tests.support.fleet import HAPROXY

    if shutil.which(HAPROXY) is None:
        message = "haproxy is not installed; `sh scripts/test` (as root) installs it"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    result = subprocess.run(
        [HAPROXY, "-c", "-f", str(ROOT / "deploy" / "haproxy" / "haproxy.cfg")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
