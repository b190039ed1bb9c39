"""Client-controlled text (HELO, addresses, early bytes, echoed replies) cannot forge log lines or
break them: JSON lines stay one valid object each, console lines stay one line each, long values are
cut, control characters never reach the output raw."""

from __future__ import annotations

import json

from tests.conftest import proxy_env
from tests.support.client import RawClient
from tests.support.proxy import ProxyProcess

HOSTILE = '"}\\ \x1b[2J\x07\x7f\x8a\x8d {"event":"pass","client":"192.0.2.1"} ' + "z" * 900


def hostile_session(port: int) -> None:
    with RawClient(port) as bot:
        bot.send(f"HELO {HOSTILE}\r\n".encode("utf-8", "surrogateescape"))  # early: enforce logs it
        bot.reply()
        bot.reply()
        bot.command(f"MAIL FROM:<{HOSTILE[:400]}@x>".encode())
        bot.command(f"RCPT TO:<{HOSTILE[:400]}@y>".encode())
        bot.command("QUIT")


def test_json_lines_stay_valid_and_cut(start_proxy):
    proxy = start_proxy(pregreet_action="enforce")
    hostile_session(proxy.port)
    proxy.wait_event("disconnect")
    proxy.stop()
    assert not proxy.find("unparsed")  # every stdout line was one JSON object
    assert not proxy.find("pass")  # the forged event stayed a string inside another one
    values = [value for event in proxy.events for value in event.values() if isinstance(value, str)]
    assert max(len(value) for value in values) <= 300 + len("...(+9999 chars)")
    pregreet = proxy.find("pregreet")[0]
    assert "\\x1b" in pregreet["sample"]  # the early bytes, escaped
    assert any("chars)" in value for value in values)
    assert json.loads(json.dumps(proxy.events))  # round-trips


def test_console_lines_stay_one_line_each_without_raw_control_characters(backend):
    proxy = ProxyProcess(proxy_env(backend.port, pregreet_action="enforce", log_format="console"))
    proxy.start(wait_for=None)
    proxy.wait_event("unparsed", where=lambda event: " listening " in event["line"])
    hostile_session(proxy.port)
    proxy.wait_event("unparsed", where=lambda event: " disconnect " in event["line"])
    proxy.stop()
    lines = [event["line"] for event in proxy.find("unparsed")]
    assert all(line.startswith("20") and line.endswith("\n") for line in lines)
    assert all(line.count("\n") == 1 for line in lines)
    assert not any(char in line for line in lines for char in "\x1b\x07\x7f\r")
    assert any("...(+" in line for line in lines)  # long values cut here too
    assert "Traceback" not in proxy.stderr
