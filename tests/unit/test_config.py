"""config.load(): GREETPROXY_* variables -> Settings, or one ConfigError line for the administrator."""

from __future__ import annotations

import re

import pytest

from greetproxy.config import (
    DEFAULT_LOOPBACK_SOURCE,
    ConfigError,
    Endpoint,
    Settings,
    load,
    parse_duration,
    variable_names,
)


def test_defaults() -> None:
    settings = load({})
    assert settings.listen == (Endpoint("0.0.0.0", 25),)
    assert settings.backend == Endpoint("127.0.0.1", 10025)
    assert settings.backend_source == DEFAULT_LOOPBACK_SOURCE == "127.0.0.2"
    assert settings.greet_pause == 5.0
    assert settings.greet_banner is None
    assert settings.pregreet_action == "drop"
    assert settings.max_connections == 10000
    assert settings.command_timeout == 300.0
    assert settings.backend_connect_timeout == 10.0
    assert settings.max_errors == 10
    assert settings.shutdown_grace == 30.0
    assert settings.allow_open_backend is False
    assert (settings.log_format, settings.log_level) == ("json", "info")
    assert settings.hostname  # the machine's name


def test_other_environment_variables_are_ignored() -> None:
    assert load({"PATH": "/bin", "GREETPROXYX": "1", "HOME": "/root"}) == load({})


@pytest.mark.parametrize(
    ("backend", "source"),
    [
        ("127.0.0.1:10025", DEFAULT_LOOPBACK_SOURCE),
        ("127.1.2.3:25", DEFAULT_LOOPBACK_SOURCE),
        ("192.0.2.5:25", None),
        ("[2001:db8::5]:25", None),
    ],
)
def test_backend_source_default_depends_on_the_backend(backend: str, source: str | None) -> None:
    assert load({"GREETPROXY_BACKEND": backend}).backend_source == source


@pytest.mark.parametrize("source", ["127.0.0.9", "192.0.2.77"])
def test_backend_source_set_explicitly_wins(source: str) -> None:
    assert load({"GREETPROXY_BACKEND_SOURCE": source}).backend_source == source


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("2.5s", 2.5),
        ("3", 3.0),
        ("0", 0.0),
        (" 10 s ", 10.0),
        ("1.5m", 90.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "seconds"), [("500ms", 0.5), ("2.5s", 2.5), ("3", 3.0), ("0", 0.0), ("300s", 300.0)]
)
def test_greet_pause_takes_durations_up_to_300s(text: str, seconds: float) -> None:
    assert load({"GREETPROXY_GREET_PAUSE": text}).greet_pause == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["300.001s", "301", "6m", "1h"])
def test_greet_pause_over_300s_is_rejected(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^GREETPROXY_GREET_PAUSE=.*: expected a duration of at most 300s"):
        load({"GREETPROXY_GREET_PAUSE": text})


@pytest.mark.parametrize("text", ["-1", "1e3", "fast", "5 min", "1.s", ""])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="expected"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "endpoints"),
    [
        ("[::]:25", (Endpoint("::", 25),)),
        ("[::1]:2525", (Endpoint("::1", 2525),)),
        ("0.0.0.0:25,[::]:25", (Endpoint("0.0.0.0", 25), Endpoint("::", 25))),
        (" 192.0.2.1:25 , [2001:db8::1]:587 ,", (Endpoint("192.0.2.1", 25), Endpoint("2001:db8::1", 587))),
        ("[2001:0db8:0000::0001]:25", (Endpoint("2001:db8::1", 25),)),
    ],
)
def test_listen_addresses(text: str, endpoints: tuple[Endpoint, ...]) -> None:
    assert load({"GREETPROXY_LISTEN": text}).listen == endpoints


@pytest.mark.parametrize(
    ("endpoint", "text"), [(Endpoint("::", 25), "[::]:25"), (Endpoint("0.0.0.0", 25), "0.0.0.0:25")]
)
def test_endpoint_str(endpoint: Endpoint, text: str) -> None:
    assert str(endpoint) == text


# One bad value for every setting; test_every_setting_has_a_bad_value keeps the list complete.
BAD_VALUES = {
    "listen": "localhost:25",
    "backend": "127.0.0.1:0",
    "backend_source": "not-an-ip",
    "greet_pause": "soon",
    "greet_banner": "two\r\nlines",
    "pregreet_action": "kill",
    "hostname": "bad_host name",
    "max_connections": "0",
    "command_timeout": "0",
    "backend_connect_timeout": "-5s",
    "backend_max_connections": "0",
    "backend_connects": "none",
    "backend_queue_timeout": "0",
    "backend_connect_rate": "fast",
    "greet_pause_jitter": "150%",
    "non_smtp_action": "shout",
    "pipelining_action": "maybe",
    "client_concurrency": "0",
    "client_rate": "-1",
    "stress_greet_pause": "400s",
    "dry_run": "sometimes",
    "dnsbl_sites": "zen.spamhaus.org*heavy",
    "dnsbl_threshold": "0",
    "dnsbl_action": "bounce",
    "dnswl_threshold": "5",
    "dnsbl_timeout": "0",
    "dns_servers": "resolver.example",
    "access_file": "",
    "state_dir": "",
    "pass_ttl": "forever",
    "pass_prefix": "24",
    "max_errors": "many",
    "shutdown_grace": "30 sec",
    "allow_open_backend": "perhaps",
    "log_format": "xml",
    "log_level": "trace",
    "tls_cert": "",
    "tls_key": "",
    "tls_ciphers": "NO-SUCH-CIPHER",
    "backend_tls": "on",
    "backend_tls_verify": "perhaps",
    "backend_tls_ca": "",
    "backend_tls_name": "bad name",
    "handoff": "inetd",
    "sendmail_command": "'unclosed",
    "user": "no-such-user-here",
    "metrics_listen": "localhost:9125",
    "workers": "0",
    "state": "memcached://127.0.0.1:11211",
    "state_timeout": "0",
    "proxy_protocol_from": "10.0.0.0/33",
    "proxy_protocol_timeout": "never",
}


def test_every_setting_has_a_bad_value() -> None:
    assert set(BAD_VALUES) == set(Settings.model_fields)


@pytest.mark.parametrize(("field", "value"), BAD_VALUES.items())
def test_bad_value_names_the_variable_and_the_value_and_says_what_was_expected(
    field: str, value: str
) -> None:
    name = f"GREETPROXY_{field.upper()}"
    with pytest.raises(ConfigError) as caught:
        load({name: value})
    message = str(caught.value)
    assert message.startswith(f"{name}={value!r}: expected ")
    assert "\n" not in message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GREETPROXY_LISTEN", "127.0.0.1"),
        ("GREETPROXY_LISTEN", "::1:25"),
        ("GREETPROXY_LISTEN", ","),
        ("GREETPROXY_LISTEN", "0.0.0.0:25,[::]:99999"),
        ("GREETPROXY_BACKEND", "[::1]"),
        ("GREETPROXY_BACKEND", "256.0.0.1:25"),
        ("GREETPROXY_BACKEND", "mx.example.test:25"),
        ("GREETPROXY_HOSTNAME", ""),
        ("GREETPROXY_HOSTNAME", "-lead.example"),
        ("GREETPROXY_GREET_BANNER", "caf\u00e9"),
        ("GREETPROXY_MAX_ERRORS", "1.5"),
        ("GREETPROXY_STATE", "redis://127.0.0.1:notaport/0"),
        ("GREETPROXY_STATE", "redis+sentinel://127.0.0.1:26379"),
        ("GREETPROXY_STATE", "redis+sentinel://127.0.0.1/mymaster"),
        ("GREETPROXY_PROXY_PROTOCOL_FROM", "lb.example"),
    ],
)
def test_more_bad_values(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match="^" + name + "="):
        load({name: value})


@pytest.mark.parametrize("name", ["GREETPROXY_GREETPAUSE", "GREETPROXY_NO_SUCH_THING"])
def test_unknown_variable_is_rejected(name: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name}\\b.*unknown variable"):
        load({name: "5s", "GREETPROXY_GREET_PAUSE": "1s"})


def test_empty_banner_means_no_banner() -> None:
    assert load({"GREETPROXY_GREET_BANNER": ""}).greet_banner is None


def test_set_values_are_typed() -> None:
    settings = load(
        {
            "GREETPROXY_BACKEND": "[::1]:10025",
            "GREETPROXY_HOSTNAME": "mx1.example.test",
            "GREETPROXY_GREET_BANNER": "ESMTP wait for it",
            "GREETPROXY_PREGREET_ACTION": "enforce",
            "GREETPROXY_MAX_CONNECTIONS": "20",
            "GREETPROXY_COMMAND_TIMEOUT": "1m",
            "GREETPROXY_ALLOW_OPEN_BACKEND": "true",
            "GREETPROXY_LOG_FORMAT": "console",
        }
    )
    assert settings.backend == Endpoint("::1", 10025)
    assert (settings.hostname, settings.greet_banner) == ("mx1.example.test", "ESMTP wait for it")
    assert (settings.pregreet_action, settings.max_connections, settings.command_timeout) == (
        "enforce",
        20,
        60.0,
    )
    assert settings.allow_open_backend is True and settings.log_format == "console"


def test_settings_are_frozen() -> None:
    settings = load({})
    with pytest.raises(Exception, match="frozen"):
        settings.greet_pause = 1.0  # type: ignore[misc]


def test_variable_names_cover_every_setting() -> None:
    assert sorted(variable_names()) == sorted(
        f"GREETPROXY_{field.upper()}" for field in Settings.model_fields
    )


@pytest.mark.parametrize(
    ("pause", "jitter", "seconds"),
    [("5s", "10%", 0.5), ("2s", "0%", 0.0), ("5s", "250ms", 0.25), ("0", "10%", 0.0)],
)
def test_pause_jitter_is_a_share_of_the_pause_or_a_duration(pause: str, jitter: str, seconds: float) -> None:
    settings = load({"GREETPROXY_GREET_PAUSE": pause, "GREETPROXY_GREET_PAUSE_JITTER": jitter})
    assert settings.jitter_seconds == pytest.approx(seconds)


@pytest.mark.parametrize(("text", "rate"), [("15", 15.0), ("2.5", 2.5), ("unlimited", None), ("0", None)])
def test_backend_connect_rate(text: str, rate: float | None) -> None:
    assert load({"GREETPROXY_BACKEND_CONNECT_RATE": text}).backend_connect_rate == rate


def test_backend_pressure_defaults() -> None:
    settings = load({})
    assert (settings.backend_max_connections, settings.backend_queue_timeout) == (100, 30.0)
    assert settings.backend_connect_rate is None and settings.greet_pause_jitter == "10%"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"GREETPROXY_PREGREET_ACTION": "ignore"},
            "GREETPROXY_PREGREET_ACTION='ignore': expected drop or enforce",
        ),
        (
            {"GREETPROXY_TLS_CERT": "/c.pem", "GREETPROXY_TLS_KEY": "/k.pem"},
            "GREETPROXY_TLS_CERT='/c.pem': not used with GREETPROXY_HANDOFF=sendmail",
        ),
    ],
)
def test_handoff_refuses_settings_that_belong_to_the_relay(extra, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load({"GREETPROXY_HANDOFF": "sendmail", **extra})
