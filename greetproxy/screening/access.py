"""The permanent access list: per-network permit, reject or greet pause, read from a file.

Like postscreen_access_list and sendmail's ``GreetPause:`` entries. One entry a line::

    # network         action
    192.0.2.0/24      permit      # skip every test and the pause
    198.51.100.7      reject      # 554 5.7.1 and close
    2001:db8::/32     pause=10s   # this network's greet pause; pause=0 skips the pause, not the tests

The most specific network holding the client wins. Loopback (127.0.0.0/8, ::1) is permitted unless
the file has an entry for a loopback network. A list never changes once built: a reload builds a
new one and swaps it in, and a file with any error is refused whole (the caller keeps the old list).
"""

from __future__ import annotations

import enum
import ipaddress
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from ..config import MAX_GREET_PAUSE, parse_duration

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_EXPECTED_ACTION = "expected permit, reject, screen or pause=<duration>"
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_LOOPBACK = (ipaddress.IPv4Network("127.0.0.0/8"), ipaddress.IPv6Network("::1/128"))


class AccessFileError(Exception):
    """The access file cannot be used; the message names the file, the line and the problem."""


class AccessAction(enum.Enum):
    PERMIT = "permit"  # skip every test and the pause
    REJECT = "reject"  # 554 5.7.1 and close
    PAUSE = "pause"  # this network's own greet pause
    SCREEN = "screen"  # no special treatment: e.g. to test the proxy from loopback, permitted by default


@dataclass(frozen=True, slots=True)
class AccessEntry:
    network: Network
    action: AccessAction
    pause: float | None  # seconds, for PAUSE only
    source: str  # "file:line" for the logs, or "default" for the built-in loopback permit


def client_address(ip: str) -> Address:
    """The address a client is known by: an IPv4-mapped IPv6 address (::ffff:192.0.2.1, what a
    dual-stack socket reports for an IPv4 client) as the IPv4 address, without an IPv6 zone (%eth0)."""
    address = ipaddress.ip_address(ip.partition("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def address_value(ip: str) -> tuple[int, int]:
    """(IP version, the address as an integer) of a client's address, as client_address knows it;
    a dotted quad is read by inet_pton, ten times faster than ipaddress (every connection's first
    step, a bot flood's included). ValueError if it is no address."""
    if ":" not in ip:
        try:
            return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, ip), "big")
        except OSError:
            raise ValueError(f"{ip!r} does not appear to be an IPv4 address") from None
    address = client_address(ip)
    return address.version, int(address)


@dataclass(frozen=True)
class AccessList:
    """The entries of one access file; frozen, so a reload replaces the whole object at once."""

    entries: tuple[AccessEntry, ...] = ()  # as given (the file's), one per network; not the defaults
    # Per family, (netmask, {network address: entry}) for each prefix length in use, longest first.
    _probes: dict[int, tuple[tuple[int, dict[int, AccessEntry]], ...]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        given = {entry.network for entry in self.entries}
        defaults = [
            AccessEntry(net, AccessAction.PERMIT, None, "default") for net in _LOOPBACK if net not in given
        ]
        by_length: dict[int, dict[int, tuple[int, dict[int, AccessEntry]]]] = {4: {}, 6: {}}
        for entry in (*self.entries, *defaults):
            network = entry.network
            _, table = by_length[network.version].setdefault(network.prefixlen, (int(network.netmask), {}))
            table[int(network.network_address)] = entry
        probes = {
            version: tuple(lengths[length] for length in sorted(lengths, reverse=True))
            for version, lengths in by_length.items()
        }
        object.__setattr__(self, "_probes", probes)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> AccessList:
        try:
            # A stray Latin-1 byte in a comment is harmless; in an entry it fails that line's parse.
            text = Path(path).read_text(encoding="utf-8", errors="replace")
        except OSError as error:
            raise AccessFileError(f"{path}: {error.strerror}") from None
        return cls.parse(text, str(path))

    @classmethod
    def parse(cls, text: str, source: str = "<access list>") -> AccessList:
        entries: dict[Network, AccessEntry] = {}
        for number, line in enumerate(text.splitlines(), 1):
            words = line.partition("#")[0].split()
            if not words:
                continue
            where = f"{source}:{number}"
            try:
                entry = _entry(words, where)
            except ValueError as error:
                raise AccessFileError(f"{where}: {error}") from None
            first = entries.setdefault(entry.network, entry)
            if first is not entry:
                raise AccessFileError(f"{where}: {entry.network} is listed already, at {first.source}")
        return cls(tuple(entries.values()))

    def lookup(self, ip: str) -> AccessEntry | None:
        """The entry of the most specific network holding ``ip`` (ValueError if it is no address).

        O(P) for P distinct prefix lengths in the family (at most 33 or 129), whatever the number
        of entries: one masked dict probe per length, longest first, so the first hit wins.
        """
        version, value = address_value(ip)
        for netmask, table in self._probes[version]:
            entry = table.get(value & netmask)
            if entry is not None:
                return entry
        return None


def _entry(words: list[str], source: str) -> AccessEntry:
    network = _network(words[0])
    if len(words) == 1:
        raise ValueError(f"no action after {words[0]} ({_EXPECTED_ACTION})")
    if len(words) > 2:
        raise ValueError(f"unexpected {words[2]!r} after the action (one network and one action a line)")
    action = words[1]
    if action in ("permit", "reject", "screen"):
        return AccessEntry(network, AccessAction(action), None, source)
    if action.startswith("pause="):
        return AccessEntry(network, AccessAction.PAUSE, _pause(action.removeprefix("pause=")), source)
    raise ValueError(f"unknown action {action!r} ({_EXPECTED_ACTION})")


def _network(text: str) -> Network:
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address or network such as 192.0.2.0/24") from None
    if int(ipaddress.ip_interface(text).ip) != int(network.network_address):
        raise ValueError(f"{text} has host bits set; did you mean {network}?")
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_MAPPED):
        # Such clients are looked up as IPv4, so this entry could never match as written.
        ipv4 = ipaddress.IPv4Network((int(network.network_address) & 0xFFFFFFFF, network.prefixlen - 96))
        raise ValueError(f"{text} is IPv4-mapped and its clients are looked up as IPv4; write {ipv4}")
    return network


def _pause(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as error:
        raise ValueError(f"pause={text}: {error}") from None
    if seconds > MAX_GREET_PAUSE:
        raise ValueError(
            f"pause={text}: expected at most {MAX_GREET_PAUSE:g}s, as for GREETPROXY_GREET_PAUSE"
        )
    return seconds
