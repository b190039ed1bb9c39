"""The one typed configuration object, built once from ``GREETPROXY_*`` environment variables.

Nothing else in greetproxy reads the environment. A bad value raises :class:`ConfigError`
whose message names the variable, the value and what was expected, on one line.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import pwd
import re
import shlex
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

ENV_PREFIX = "GREETPROXY_"
MAX_GREET_PAUSE = 300.0
# sendmail hard-codes relaying for a client at 127.0.0.1, so the proxy never connects from there by default.
DEFAULT_LOOPBACK_SOURCE = "127.0.0.2"  # RFC 5321 4.5.3.2.1: clients wait 5 minutes for the greeting


class ConfigError(Exception):
    """A configuration value is unusable; the message is meant for the administrator."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: object) -> float:
    """``500ms``, ``2.5s``, ``3`` (seconds), ``10m``, ``1h``, ``1d`` -> seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError("expected a duration such as 500ms, 2.5s or 3 (seconds)")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds < 0:
        raise ValueError("expected a duration that is not negative")
    return seconds


def _ip_literal(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"expected an IP address, not {text!r}") from None


def parse_endpoint(value: object) -> Endpoint:
    """``127.0.0.1:25`` or ``[::1]:25``; the host must be an IP address."""
    text = str(value).strip()
    match = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:\[\]]+):(\d+)", text)
    if not match:
        raise ValueError("expected host:port, with IPv6 as [addr]:port")
    host, port = (match.group(1), match.group(2)) if match.group(1) else (match.group(3), match.group(4))
    port_number = int(port)
    if not 0 < port_number < 65536:
        raise ValueError("expected a port from 1 to 65535")
    return Endpoint(_ip_literal(host), port_number)


def parse_optional_endpoint(value: object) -> Endpoint | None:
    if value is None or isinstance(value, Endpoint):
        return value
    return parse_endpoint(value) if str(value).strip() else None


def parse_endpoint_list(value: object) -> tuple[Endpoint, ...]:
    if isinstance(value, tuple | list):
        return tuple(item if isinstance(item, Endpoint) else parse_endpoint(item) for item in value)
    parts = [part for part in str(value).split(",") if part.strip()]
    if not parts:
        raise ValueError("expected at least one host:port")
    return tuple(parse_endpoint(part) for part in parts)


def parse_ip(value: object) -> str | None:
    if value is None or str(value).strip() == "":
        return None
    return _ip_literal(str(value).strip())


def parse_rate(value: object) -> float | None:
    """Connections per second; ``unlimited`` (or empty, or 0) for no pacing."""
    text = str(value).strip().lower() if value is not None else ""
    if text in ("", "unlimited", "0"):
        return None
    try:
        rate = float(text)
    except ValueError:
        raise ValueError("expected connections per second, such as 15 or 2.5, or 'unlimited'") from None
    if rate <= 0:
        raise ValueError("expected a rate above 0, or 'unlimited'")
    return rate


def parse_jitter(value: object) -> str:
    """``10%`` (of the pause) or a duration; kept as text, resolved against the pause."""
    text = str(value).strip()
    if text.endswith("%"):
        try:
            percent = float(text[:-1])
        except ValueError:
            percent = -1.0
        if not 0 <= percent <= 100:
            raise ValueError(
                "expected a percentage of the pause from 0% to 100%, or a duration such as 500ms"
            )
        return text
    parse_duration(text)
    return text


def parse_prefixes(value: object) -> tuple[int, int]:
    """``32,128`` (one address each) or e.g. ``24,64``."""
    if isinstance(value, tuple):
        return value
    parts = str(value).replace(" ", "").split(",")
    try:
        prefix4, prefix6 = (int(part) for part in parts)
    except ValueError:
        raise ValueError("expected an IPv4 and an IPv6 prefix length, such as 32,128 or 24,64") from None
    if not (0 < prefix4 <= 32 and 0 < prefix6 <= 128):
        raise ValueError("expected prefix lengths from 1 to 32 (IPv4) and 1 to 128 (IPv6)")
    return prefix4, prefix6


def check_dnsbl_sites(value: object) -> str | None:
    if value is None or not str(value).strip():
        return None
    from .screening.dnsbl import load_sites  # the syntax lives with the test that uses it

    try:
        load_sites(str(value).strip())
    except ValueError as error:
        raise ValueError(f"expected a list of domain[=filter][*weight] or a file of them; {error}") from None
    return str(value).strip()


def parse_dns_servers(value: object) -> tuple[Endpoint, ...]:
    if isinstance(value, tuple):
        return value
    servers = []
    for part in (part.strip() for part in str(value).split(",")):
        if part:
            has_port = part.startswith("[") or part.count(":") == 1
            servers.append(parse_endpoint(part) if has_port else Endpoint(_ip_literal(part), 53))
    return tuple(servers)


def parse_networks(value: object) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """``192.0.2.10, 10.0.0.0/8, ::1``: addresses or CIDR networks, comma-separated; empty: none."""
    if isinstance(value, tuple):
        return value
    networks = []
    for part in (part.strip() for part in str(value).split(",")):
        if part:
            try:
                networks.append(ipaddress.ip_network(part, strict=False))
            except ValueError:
                raise ValueError(f"expected addresses or CIDR networks, not {part!r}") from None
    return tuple(networks)


def check_state(value: object) -> str | None:
    """Where the pass cache and per-client counts live: unset for this host's own (SQLite), or a
    Redis URL shared by a fleet."""
    text = str(value).strip() if value is not None else ""
    if text in ("", "local"):
        return None
    from .shared import check_url  # the URL syntax lives with the code that uses it

    return check_url(text)


def parse_command(value: object) -> tuple[str, ...]:
    if isinstance(value, tuple):
        return value
    try:
        words = tuple(shlex.split(str(value)))
    except ValueError as error:
        raise ValueError(f"expected a command line in sh quoting ({error})") from None
    if not words:
        raise ValueError("expected a command, such as /usr/sbin/sendmail -bs -Am")
    return words


Duration = Annotated[float, BeforeValidator(parse_duration)]


class Settings(BaseModel):
    """Every setting greetproxy has; the field ``foo_bar`` is the variable ``GREETPROXY_FOO_BAR``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    listen: Annotated[tuple[Endpoint, ...], BeforeValidator(parse_endpoint_list)] = Field(
        default=(Endpoint("0.0.0.0", 25),), description="addresses to accept SMTP clients on"
    )
    backend: Annotated[Endpoint, BeforeValidator(parse_endpoint)] = Field(
        default=Endpoint("127.0.0.1", 10025),
        description="the real MTA (sendmail) that accepted sessions go to",
    )
    backend_source: Annotated[str | None, BeforeValidator(parse_ip)] = Field(
        default=None,
        description="source address for backend connections, one the backend does not trust "
        f"(default {DEFAULT_LOOPBACK_SOURCE} for a 127/8 backend; sendmail trusts 127.0.0.1)",
    )
    greet_pause: Duration = Field(default=5.0, description="how long to hold the banner back; 0 disables")
    greet_pause_jitter: Annotated[str, BeforeValidator(parse_jitter)] = Field(
        default="10%",
        description="random extra pause, a share of the pause or a duration, so that clients that came "
        "together do not pass together",
    )
    greet_banner: str | None = Field(
        default=None, description="teaser text: send `220-<hostname> <text>` at once, the final 220 after"
    )
    pregreet_action: Literal["drop", "enforce", "ignore"] = Field(
        default="drop", description="what to do with a client that talks before the banner"
    )
    non_smtp_action: Literal["drop", "enforce", "ignore"] = Field(
        default="drop", description="a client that sends an HTTP request or header line as a command"
    )
    pipelining_action: Literal["drop", "enforce", "ignore"] = Field(
        default="ignore", description="a client that sends commands before the EHLO reply or text before 354"
    )
    client_concurrency: int = Field(default=20, ge=1, description="open connections per client address")
    client_rate: int = Field(default=60, ge=1, description="new connections per client address per minute")
    stress_greet_pause: Duration = Field(
        default=2.0, description="the pause while over 90% of max_connections wait in it (until below 70%)"
    )
    access_file: str | None = Field(
        default=None, description="lines of `CIDR permit|reject|screen|pause=<duration>`; SIGHUP re-reads it"
    )
    state_dir: str = Field(default="/var/lib/greetproxy", description="where the pass cache (SQLite) lives")
    state: Annotated[str | None, BeforeValidator(check_state)] = Field(
        default=None,
        description="redis://host:port/db (or rediss://, unix://, redis+sentinel://host:port/service): "
        "share the pass cache and per-client limits with other instances; unset: this host's own",
    )
    state_timeout: Duration = Field(
        default=0.25, description="how long a Redis call may take before local state decides instead"
    )
    proxy_protocol_from: Annotated[
        tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...], BeforeValidator(parse_networks)
    ] = Field(
        default=(),
        description="load balancers (addresses or CIDRs) that must open with a PROXY v1/v2 header "
        "naming the real client; from anyone else such a header is early talk",
    )
    proxy_protocol_timeout: Duration = Field(
        default=5.0, description="how long a load balancer gets to send its PROXY header"
    )
    pass_ttl: Duration = Field(
        default=86400.0, description="how long a client that passed is remembered; 0: never"
    )
    pass_prefix: Annotated[tuple[int, int], BeforeValidator(parse_prefixes)] = Field(
        default=(32, 128), description="IPv4,IPv6 prefix lengths a pass covers (24,64: a provider's pool)"
    )
    dnsbl_sites: Annotated[str | None, BeforeValidator(check_dnsbl_sites)] = Field(
        default=None, description="postscreen syntax: `zen.spamhaus.org=127.0.0.[2..11]*3, list.dnswl.org*-5`"
    )
    dnsbl_threshold: int = Field(default=1, ge=1, description="a score at or above it fails the test")
    dnsbl_action: Literal["drop", "enforce", "ignore"] = Field(default="drop", description="a listed client")
    dnswl_threshold: int | None = Field(
        default=None, lt=0, description="a score at or below it skips the pause and the other tests"
    )
    dnsbl_timeout: Duration = Field(default=2.0, description="how long lookups may take, from connect")
    dns_servers: Annotated[tuple[Endpoint, ...], BeforeValidator(parse_dns_servers)] = Field(
        default=(), description="resolvers as host[:port] (default port 53); empty: /etc/resolv.conf"
    )
    dry_run: bool = Field(default=False, description="run every test and log its verdict, but let all pass")
    hostname: str = Field(
        default_factory=socket.getfqdn, validate_default=True, description="name in the banner and Received"
    )
    max_connections: int = Field(default=10000, ge=1, description="open client connections at most")
    command_timeout: Duration = Field(default=300.0, description="idle time allowed to a client or backend")
    backend_connect_timeout: Duration = Field(default=10.0, description="connect plus greeting from backend")
    backend_max_connections: int = Field(default=100, ge=1, description="backend connections open at most")
    backend_connects: int = Field(
        default=8,
        ge=1,
        description="backend connects in flight at most; keep it below the backend's listen backlog",
    )
    backend_queue_timeout: Duration = Field(
        default=30.0, description="how long a client that passed may wait for a backend connection"
    )
    backend_connect_rate: Annotated[float | None, BeforeValidator(parse_rate)] = Field(
        default=None, description="new backend connections per second at most; unlimited by default"
    )
    tls_cert: str | None = Field(
        default=None,
        description="PEM certificate (chain) file; with GREETPROXY_TLS_KEY, EHLO offers STARTTLS",
    )
    tls_key: str | None = Field(default=None, description="PEM private key file of GREETPROXY_TLS_CERT")
    tls_ciphers: str | None = Field(
        default=None, description="OpenSSL cipher list for TLS 1.2 (default: the ssl module's secure list)"
    )
    backend_tls: Literal["off", "starttls"] = Field(
        default="off", description="`starttls`: encrypt backend connections too (the backend is local)"
    )
    backend_tls_verify: bool = Field(
        default=True, description="verify the backend's certificate (chain and name) under STARTTLS"
    )
    backend_tls_ca: str | None = Field(
        default=None, description="PEM CA file for that check (default: the system's CAs)"
    )
    backend_tls_name: str | None = Field(
        default=None, description="name the backend's certificate must carry (default: GREETPROXY_HOSTNAME)"
    )
    handoff: Literal["off", "sendmail"] = Field(
        default="off",
        description="`sendmail`: give each screened client's socket to a new sendmail (it sees the real "
        "client) instead of relaying",
    )
    sendmail_command: Annotated[tuple[str, ...], BeforeValidator(parse_command)] = Field(
        default=("/usr/sbin/sendmail", "-bs", "-Am"),
        description="what the hand-off helper runs, as root, with the client socket as stdin and stdout",
    )
    user: str | None = Field(
        default=None, description="user to run as after binding the ports (the hand-off helper stays root)"
    )
    metrics_listen: Annotated[Endpoint | None, BeforeValidator(parse_optional_endpoint)] = Field(
        default=None,
        description="address for Prometheus metrics at /metrics, e.g. 127.0.0.1:9125; unset: off",
    )
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="worker processes on the same ports (SO_REUSEPORT) under one supervisor; the "
        "connection and backend limits are shared out among them",
    )
    max_errors: int = Field(default=10, ge=1, description="error replies before a client is cut off")
    shutdown_grace: Duration = Field(default=30.0, description="time live sessions get to finish on SIGTERM")
    allow_open_backend: bool = Field(default=False, description="start even if the backend relays for us")
    log_format: Literal["json", "console"] = Field(default="json", description="log line format on stdout")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="lowest level"
    )

    @model_validator(mode="after")
    def _untrusted_loopback_source(self) -> Settings:
        if self.backend_source is None and self.backend.host.startswith("127."):
            object.__setattr__(self, "backend_source", DEFAULT_LOOPBACK_SOURCE)
        return self

    @model_validator(mode="after")
    def _certificate_with_key(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            given, missing = ("TLS_CERT", "TLS_KEY") if self.tls_key is None else ("TLS_KEY", "TLS_CERT")
            value = self.tls_cert or self.tls_key
            raise ConfigError(
                f"{ENV_PREFIX}{given}={value!r}: expected {ENV_PREFIX}{missing} as well (STARTTLS needs both)"
            )
        return self

    @model_validator(mode="after")
    def _handoff_keeps_every_byte(self) -> Settings:
        if self.handoff != "sendmail":
            return self
        if self.pregreet_action == "ignore":
            raise ConfigError(
                f"{ENV_PREFIX}PREGREET_ACTION='ignore': expected drop or enforce with "
                f"{ENV_PREFIX}HANDOFF=sendmail (the bytes an early talker sent cannot be handed over)"
            )
        if self.proxy_protocol_from:
            networks = ",".join(map(str, self.proxy_protocol_from))
            raise ConfigError(
                f"{ENV_PREFIX}PROXY_PROTOCOL_FROM={networks!r}: not possible with "
                f"{ENV_PREFIX}HANDOFF=sendmail "
                "(sendmail would take the load balancer for the client: use relay mode behind one)"
            )
        if self.tls_cert is not None:
            raise ConfigError(
                f"{ENV_PREFIX}TLS_CERT={self.tls_cert!r}: not used with {ENV_PREFIX}HANDOFF=sendmail "
                "(STARTTLS is sendmail's own after the hand-off: configure its certificate there)"
            )
        return self

    @property
    def jitter_seconds(self) -> float:
        if self.greet_pause_jitter.endswith("%"):
            return self.greet_pause * float(self.greet_pause_jitter[:-1]) / 100
        return parse_duration(self.greet_pause_jitter)

    @field_validator("greet_pause", "stress_greet_pause")
    @classmethod
    def _pause_within_rfc_limit(cls, value: float) -> float:
        if value > MAX_GREET_PAUSE:
            raise ValueError("expected a duration of at most 300s (clients give up on the greeting after 5m)")
        return value

    @field_validator(
        "command_timeout",
        "backend_connect_timeout",
        "backend_queue_timeout",
        "dnsbl_timeout",
        "state_timeout",
        "proxy_protocol_timeout",
    )
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("expected a duration above 0")
        return value

    @field_validator("access_file", "state_dir", "tls_cert", "tls_key", "backend_tls_ca")
    @classmethod
    def _a_path(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("expected a path, not an empty value")
        return value

    @field_validator("hostname", "backend_tls_name")
    @classmethod
    def _plain_hostname(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?", value):
            raise ValueError("expected a host name of letters, digits, dots and dashes")
        return value

    @field_validator("tls_ciphers")
    @classmethod
    def _known_ciphers(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ssl.create_default_context().set_ciphers(value)
            except ssl.SSLError:
                raise ValueError("expected an OpenSSL cipher list that names a cipher") from None
        return value

    @field_validator("user")
    @classmethod
    def _known_user(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                pwd.getpwnam(value)
            except KeyError:
                raise ValueError("expected the name of a user on this host") from None
        return value

    @field_validator("greet_banner")
    @classmethod
    def _printable_banner(cls, value: str | None) -> str | None:
        if value is not None and not all(" " <= char <= "~" for char in value):
            raise ValueError("expected printable ASCII text without line breaks")
        return value or None


def worker_share(settings: Settings) -> Settings:
    """One worker's settings: the process-wide limits divided among the workers (rounded up), so
    that together they keep to what the administrator set."""
    workers = settings.workers
    if workers == 1:
        return settings
    rate = settings.backend_connect_rate
    return settings.model_copy(
        update={
            "max_connections": -(-settings.max_connections // workers),
            "backend_max_connections": -(-settings.backend_max_connections // workers),
            "backend_connects": -(-settings.backend_connects // workers),
            "backend_connect_rate": rate / workers if rate is not None else None,
        }
    )


def variable_names() -> list[str]:
    return [ENV_PREFIX + name.upper() for name in Settings.model_fields]


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from ``environ`` (default: the process environment)."""
    environ = os.environ if environ is None else environ
    known = set(variable_names())
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX) and name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]}?" if close else "see the README's Configuration table"
            raise ConfigError(f"{name}={environ[name]!r}: unknown variable; {hint}")
    values = {name[len(ENV_PREFIX) :].lower(): value for name, value in environ.items() if name in known}
    try:
        return Settings.model_validate(values)
    except ValidationError as error:
        raise ConfigError(_describe(error, values)) from None


def explicit_variables(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """The GREETPROXY_ variables the environment sets (the rest take their defaults)."""
    environ = os.environ if environ is None else environ
    return frozenset(environ).intersection(variable_names())


def systemd_notify(environ: Mapping[str, str] | None = None) -> tuple[str | None, float | None]:
    """Where systemd wants sd_notify messages, and how often a watchdog ping (half its interval).
    systemd's own variables, not settings; read here so that nothing else reads the environment."""
    environ = os.environ if environ is None else environ
    usec, pid = environ.get("WATCHDOG_USEC", ""), environ.get("WATCHDOG_PID", "")
    ours = not pid or pid == str(os.getpid())
    interval = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 and ours else None
    return environ.get("NOTIFY_SOCKET") or None, interval


def _describe(error: ValidationError, values: Mapping[str, str]) -> str:
    first = error.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else "?"
    message = first["msg"].removeprefix("Value error, ").replace("Input should be", "expected")
    value = values.get(field, first.get("input"))
    return f"{ENV_PREFIX}{field.upper()}={value!r}: {message}"
