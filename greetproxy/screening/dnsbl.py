"""The DNSBL/DNSWL test: a weighted score from DNS lists, as postscreen's `postscreen_dnsbl_sites`.

Each site is `domain[=filter][*weight]`. A client's score is the sum of the weights of the sites
whose answer for it matches their filter. postscreen leaves it to hand-written filters to tell a
listing from a list that refuses to answer, and naive set-ups read Spamhaus's "you query through a
public resolver" code as a listing and refuse all mail. Here answers in 127.255.255.0/24 and
answers outside 127.0.0.0/8 are errors, never listings. Every failure fails open: it scores 0 and
is reported.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import aiodns
import pycares
from pycares import _cares

from . import Action, Finding

# -- sites -------------------------------------------------------------------------------------------

Ranges = tuple[tuple[int, int], ...]  # the values one filter octet allows, as inclusive ranges

_SEPARATORS = re.compile(r"[\s,]+")
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_NUMBER = re.compile(r"[0-9]{1,3}")
_WEIGHT = re.compile(r"[+-]?[0-9]{1,9}")
_OCTET_DOTS = re.compile(r"\.(?![^\[]*\])")  # the dots between octets, not the dots of `n..m`
# A query name is at most 253 characters; the 32 nibbles of an IPv6 query and their dots take 64.
_MAX_DOMAIN = 253 - 64


@dataclass(frozen=True, slots=True)
class Site:
    domain: str
    filter: tuple[Ranges, Ranges, Ranges, Ranges] | None = None  # None: any answer
    weight: int = 1

    def matches(self, answer: str) -> bool:
        """Whether an A record passes the filter. Whether it can be a listing at all is answer_problem's."""
        try:
            octets = ipaddress.IPv4Address(answer).packed
        except ValueError:
            return False
        if self.filter is None:
            return True
        return all(
            any(low <= octet <= high for low, high in ranges)
            for octet, ranges in zip(octets, self.filter, strict=True)
        )


def parse_sites(text: str) -> tuple[Site, ...]:
    """postscreen's syntax: items separated by commas or white space; a bad item raises ValueError."""
    return tuple(_parse_site(item) for item in _SEPARATORS.split(text.strip()) if item)


def load_sites(setting: str) -> tuple[Site, ...]:
    """The sites a setting names: the list itself, or (a value starting with ``/``) a file of them,
    one or more a line, ``#`` comments; SIGHUP re-reads the file. Raises ValueError."""
    if not setting.startswith("/"):
        return parse_sites(setting)
    try:
        text = Path(setting).read_text()
    except OSError as error:
        raise ValueError(f"cannot read {setting}: {error.strerror or error}") from None
    sites = parse_sites(" ".join(line.partition("#")[0] for line in text.splitlines()))
    if not sites:
        raise ValueError(f"{setting} names no list")
    return sites


def _parse_site(item: str) -> Site:
    head, star, weight_text = item.partition("*")
    domain_text, equals, filter_text = head.partition("=")
    weight = _weight(item, weight_text) if star else 1
    site_filter = _filter(item, filter_text) if equals else None
    return Site(_domain(item, domain_text), site_filter, weight)


def _bad(item: str, problem: str) -> ValueError:
    return ValueError(f"item {item!r}: {problem}")


def _domain(item: str, text: str) -> str:
    domain = text.lower().removesuffix(".")
    if not domain:
        raise _bad(item, "no domain before '=' or '*'")
    if len(domain) > _MAX_DOMAIN:
        raise _bad(item, f"the domain is longer than {_MAX_DOMAIN} characters, too long for IPv6 queries")
    for label in domain.split("."):
        if not _LABEL.fullmatch(label):
            raise _bad(item, f"{domain!r} is not a domain name (label {label!r})")
    return domain


def _weight(item: str, text: str) -> int:
    if not _WEIGHT.fullmatch(text):
        raise _bad(item, f"the weight after '*' must be an integer such as 3 or -5, not {text!r}")
    return int(text)


def _filter(item: str, text: str) -> tuple[Ranges, Ranges, Ranges, Ranges]:
    octets = _OCTET_DOTS.split(text)
    if len(octets) != 4:
        raise _bad(item, f"the filter {text!r} must have 4 octets like 127.0.0.[2..11], not {len(octets)}")
    first, second, third, fourth = (_octet(item, octet) for octet in octets)
    if not any(low <= 127 <= high for low, high in first):
        raise _bad(item, f"the filter {text!r} can never match: answers outside 127.0.0.0/8 are errors")
    if _only(255, second) and _only(255, third):
        raise _bad(item, f"the filter {text!r} can never match: lists answer 127.255.255.x for errors")
    return first, second, third, fourth


def _octet(item: str, text: str) -> Ranges:
    if not (text.startswith("[") and text.endswith("]")):
        value = _number(item, text)
        return ((value, value),)
    elements = text[1:-1].split(";")
    if "" in elements:
        raise _bad(item, f"the filter octet {text!r} has an empty element; write [n;n..m]")
    return tuple(_range(item, text, element) for element in elements)


def _range(item: str, octet: str, element: str) -> tuple[int, int]:
    low_text, dots, high_text = element.partition("..")
    low = _number(item, low_text)
    high = _number(item, high_text) if dots else low
    if low > high:
        raise _bad(item, f"the range {element!r} in {octet!r} runs backwards")
    return low, high


def _number(item: str, text: str) -> int:
    if not _NUMBER.fullmatch(text) or int(text) > 255:
        raise _bad(item, f"{text!r} in the filter is not a number from 0 to 255 or a [n;n..m] list")
    return int(text)


def _only(value: int, ranges: Ranges) -> bool:
    return all(low == high == value for low, high in ranges)


# -- names and answers -------------------------------------------------------------------------------


def client_address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address lists know the client by: an IPv4-mapped IPv6 address (a dual-stack socket) as IPv4."""
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def reversed_name(ip: str) -> str:
    """`4.3.2.1` for 1.2.3.4; 32 reversed nibbles for an IPv6 address (RFC 5782 section 2.4)."""
    return client_address(ip).reverse_pointer.rsplit(".", 2)[0]  # less `in-addr.arpa` / `ip6.arpa`


def query_name(ip: str, domain: str) -> str:
    return f"{reversed_name(ip)}.{domain}"


_LISTINGS = ipaddress.IPv4Network("127.0.0.0/8")
_REFUSALS = ipaddress.IPv4Network("127.255.255.0/24")
# Spamhaus's return codes for queries it will not answer (https://www.spamhaus.org/faqs/dnsbl-usage/)
_REFUSAL_REASONS = {
    "127.255.255.252": "the list says the list name is mistyped",
    "127.255.255.254": "the list refuses queries through public or open resolvers",
    "127.255.255.255": "the list says this resolver sends too many queries",
}


def answer_problem(answer: str) -> str | None:
    """Why an A record from a list cannot be a listing, or None when it can."""
    try:
        address = ipaddress.IPv4Address(answer)
    except ValueError:
        return "not an IPv4 address"
    if address not in _LISTINGS:
        return "outside 127.0.0.0/8: a resolver that rewrites answers, or a lapsed list domain"
    if address in _REFUSALS:
        return _REFUSAL_REASONS.get(answer, "in 127.255.255.0/24, which lists use to refuse a query")
    return None


# -- the resolver ------------------------------------------------------------------------------------

DnsErrorKind = Literal["timeout", "servfail", "error"]


class DnsError(Exception):
    """A lookup that failed; the DNSBL test fails open on it."""

    def __init__(self, kind: DnsErrorKind, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind: DnsErrorKind = kind
        self.detail = detail


class ResolverLike(Protocol):
    async def a_records(self, name: str) -> list[str]:
        """The A records of name; [] for NXDOMAIN or no data; DnsError for anything else."""
        ...


# What the installed aiodns 4.0.4 / pycares 5.2.1 / c-ares 1.34.9 do (read in their sources, checked
# against tests/support/dns.py):
# - Cache: c-ares keeps answers (its query cache, on by default since 1.31) for their TTL, at most
#   `qcache_max_ttl` = 3600 s: NXDOMAIN for the SOA minimum, an empty NOERROR for the whole hour. A
#   list's answer can change at any time and our own pass cache sits above, so it is off
#   (`qcache_max_ttl` 0). pycares 5 takes no argument for it, nor for `maxtimeout`, and c-ares reads
#   neither from resolv.conf or RES_OPTIONS, so _configure rebuilds the channel through pycares' cffi
#   handle with both (their bits are c-ares ABI; keep pycares at 5.x).
# - Timeouts: the configured timeout is only the first per-try timeout of a fresh channel. Once the
#   server has answered 3 queries, a try waits 5 times its average latency, never less than 250 ms
#   (ares_metrics.c); each round of retries doubles that (jittered down to as little as half), capped
#   by `maxtimeout`. A retry goes out from a new socket, so a late answer to an earlier try is lost.
#   Hence timeout=2.0 with one try gave up after 251 ms on a warm channel. We start at 250 ms, warm
#   or cold, cap each try at our timeout and give enough tries that even the shortest per-try
#   timeouts add up to it: c-ares never gives up before we do, and asyncio.timeout ends the lookup.
#   A recursive resolver still working on a name answers the retries as soon as it is done; a server
#   that is slow for every query is answered by the first try that waits long enough for it.
#   An abandoned query cannot be cancelled alone (ares_cancel ends all): it goes on retrying for at
#   most about 2.6 times our timeout from its start.
_FLOOR = 0.25  # c-ares's smallest per-try timeout once it has latency figures (MIN_TIMEOUT_MS)
_MAX_TRIES = 16
_OPT_MAXTIMEOUTMS = 1 << 20  # ares.h; pycares 5 does not export the two
_OPT_QUERY_CACHE = 1 << 21


def c_ares_tries(timeout: float) -> int:
    """Rounds of tries (c-ares tries each server once a round) whose shortest timeouts fill timeout."""
    floor = min(timeout, _FLOOR)
    total, rounds = floor, 1
    while total < timeout and rounds < _MAX_TRIES:
        total += max(floor, min(floor * 2**rounds, timeout) / 2)
        rounds += 1
    return rounds


class Resolver:
    """A records through aiodns; create it inside the running loop, which it calls back into."""

    def __init__(self, servers: Sequence[tuple[str, int]], timeout: float) -> None:
        self.timeout = timeout
        loop = asyncio.get_running_loop()
        nameservers = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host, port in servers]
        self._dns = aiodns.DNSResolver(nameservers=nameservers or None, loop=loop)
        _configure(self._dns._channel, timeout)

    async def a_records(self, name: str) -> list[str]:
        try:
            async with asyncio.timeout(self.timeout):
                result = await self._dns.query_dns(name, "A")
        except TimeoutError:
            raise DnsError("timeout", f"no answer within {self.timeout:g}s") from None
        except aiodns.error.DNSError as error:
            code = error.args[0] if error.args else None
            if code in (aiodns.error.ARES_ENOTFOUND, aiodns.error.ARES_ENODATA):
                return []
            if code == aiodns.error.ARES_ETIMEOUT:
                raise DnsError("timeout", "c-ares gave up") from None
            if code == aiodns.error.ARES_ESERVFAIL:
                raise DnsError("servfail") from None
            raise DnsError("error", str(error.args[-1]) if error.args else repr(error)) from None
        return [record.data.addr for record in result.answer if record.type == pycares.QUERY_TYPE_A]

    async def close(self) -> None:
        await self._dns.close()


def make_resolver(servers: list[tuple[str, int]], timeout: float) -> Resolver:
    """servers empty: the ones in /etc/resolv.conf. Call it inside the running loop."""
    return Resolver(servers, timeout)


def _configure(channel: pycares.Channel, timeout: float) -> None:
    """Swap the channel's c-ares channel for one without a query cache and with bounded tries."""
    ffi, lib = _cares.ffi, _cares.lib
    if not isinstance(getattr(channel, "_channel", None), ffi.CData):
        raise RuntimeError("pycares internals changed: cannot turn off the c-ares query cache")
    servers = channel.servers
    options = ffi.new("struct ares_options *")
    options.timeout = round(min(timeout, _FLOOR) * 1000)
    options.maxtimeout = max(1, round(timeout * 1000))
    options.tries = c_ares_tries(timeout)
    options.qcache_max_ttl = 0
    mask = lib.ARES_OPT_TIMEOUTMS | lib.ARES_OPT_TRIES | _OPT_MAXTIMEOUTMS | _OPT_QUERY_CACHE
    if channel._sock_state_cb_handle is None:  # aiodns's default: c-ares runs its own event thread
        mask |= lib.ARES_OPT_EVENT_THREAD
        options.evsys = lib.ARES_EVSYS_DEFAULT
    else:
        mask |= lib.ARES_OPT_SOCK_STATE_CB
        options.sock_state_cb = lib._sock_state_cb
        options.sock_state_cb_data = channel._sock_state_cb_handle
    replacement = ffi.new("ares_channel *")
    if lib.ares_init_options(replacement, options, mask) != lib.ARES_SUCCESS:
        raise RuntimeError("c-ares refused the DNSBL resolver options")
    with channel._lock:
        original, channel._channel = channel._channel, replacement
    lib.ares_destroy(original[0])  # it never had a query
    channel.servers = servers


# -- the screen --------------------------------------------------------------------------------------

ErrorKind = Literal["timeout", "servfail", "error", "invalid_answer"]


@dataclass(frozen=True, slots=True)
class Listing:
    domain: str
    answer: str  # the first A record that matched the site's filter
    weight: int


@dataclass(frozen=True, slots=True)
class SiteError:
    domain: str
    kind: ErrorKind
    detail: str = ""
    answer: str | None = None  # for invalid_answer


@dataclass(frozen=True, slots=True)
class DnsblScore:
    ip: str
    score: int
    listings: tuple[Listing, ...]
    errors: tuple[SiteError, ...]


class DnsblScreen:
    """Scores clients against the sites; one lookup per IP at a time, shared by concurrent callers."""

    def __init__(
        self,
        sites: Sequence[Site],
        threshold: int,
        allowlist_threshold: int | None,
        timeout: float,
        resolver: ResolverLike,
    ) -> None:
        if not sites:
            raise ValueError("no DNSBL sites")
        if threshold < 1:
            raise ValueError(
                f"the DNSBL threshold must be at least 1, not {threshold}: it would block everyone"
            )
        if allowlist_threshold is not None and allowlist_threshold >= 0:
            raise ValueError(
                f"the DNSWL threshold must be negative, not {allowlist_threshold}: "
                "it would allowlist every client no list knows"
            )
        if not timeout > 0:
            raise ValueError(f"the DNSBL timeout must be positive, not {timeout}")
        self.sites = tuple(sites)
        self.threshold = threshold
        self.allowlist_threshold = allowlist_threshold
        self.timeout = timeout
        self.domains = tuple(dict.fromkeys(site.domain for site in self.sites))  # one query per domain
        self.error_counts: dict[str, Counter[ErrorKind]] = {domain: Counter() for domain in self.domains}
        self._resolver = resolver
        self._pending: dict[str, asyncio.Task[DnsblScore]] = {}

    async def score(self, ip: str) -> DnsblScore:
        """At most `timeout` seconds; lists that have not answered by then count 0 (as timeouts).

        Concurrent calls for one address (IPv4-mapped IPv6 included) share one lookup, as postscreen's
        reference-counted request does: one query per list domain, however many connections wait.
        """
        # A caller that gives up (its client hung up) must not cancel the lookup the others wait for.
        return await asyncio.shield(self.lookup(ip))

    def lookup(self, ip: str) -> asyncio.Task[DnsblScore]:
        """The shared lookup for ``ip``, started if none is under way; never cancel it: others wait
        on it too. The gate takes this (one task per address, none per connection)."""
        key = str(client_address(ip))
        task = self._pending.get(key)
        if task is None:
            task = asyncio.create_task(self._score(key))
            self._pending[key] = task
            task.add_done_callback(functools.partial(self._forget, key))
        return task

    def _forget(self, key: str, task: asyncio.Task[DnsblScore]) -> None:
        if self._pending.get(key) is task:
            del self._pending[key]

    def blocked(self, result: DnsblScore) -> bool:
        return result.score >= self.threshold

    def allowlisted(self, result: DnsblScore) -> bool:
        return self.allowlist_threshold is not None and result.score <= self.allowlist_threshold

    def finding(self, result: DnsblScore, action: Action) -> Finding | None:
        if not self.blocked(result):
            return None
        listed = ", ".join(f"{item.domain} {item.answer} ({item.weight:+d})" for item in result.listings)
        return Finding("dnsbl", action, f"rank {result.score}: {listed}")

    def reply_text(self, ip: str, result: DnsblScore) -> str:
        """postscreen's reply text for a blocked client, naming the list with the highest weight."""
        positive = [listing for listing in result.listings if listing.weight > 0]
        if not positive:
            raise ValueError(f"{result.ip} is not on any blocklist")
        top = max(positive, key=lambda listing: listing.weight)  # the first of equals: config order
        return f"5.7.1 Service unavailable; client [{ip}] blocked using {top.domain}"

    async def self_test(self) -> list[str]:
        """RFC 5782 section 5 probes: 127.0.0.2 must be listed, 127.0.0.1 not; one warning per broken list."""
        warnings = await asyncio.gather(*(self._probe(domain) for domain in self.domains))
        return [warning for warning in warnings if warning is not None]

    async def _score(self, ip: str) -> DnsblScore:
        name = reversed_name(ip)
        lookups = {
            domain: asyncio.create_task(self._resolver.a_records(f"{name}.{domain}"))
            for domain in self.domains
        }
        _, late = await asyncio.wait(lookups.values(), timeout=self.timeout)
        for task in late:
            task.cancel()
        listings: list[Listing] = []
        errors: list[SiteError] = []
        for domain, task in lookups.items():
            if task in late:
                errors.append(SiteError(domain, "timeout", f"no answer within {self.timeout:g}s"))
                continue
            answers, error = _outcome(domain, task)
            if error is None:
                error = self._listings(domain, answers, listings)
            if error is not None:
                errors.append(error)
        for error in errors:
            self.error_counts[error.domain][error.kind] += 1
        score = sum(listing.weight for listing in listings)
        return DnsblScore(ip, score, tuple(listings), tuple(errors))

    def _listings(self, domain: str, answers: list[str], listings: list[Listing]) -> SiteError | None:
        """Add the domain's sites that match; an answer that cannot be a listing voids the whole answer."""
        bad = _first_problem(answers)
        if bad is not None:
            return SiteError(domain, "invalid_answer", bad[1], bad[0])
        for site in self.sites:
            if site.domain == domain:
                match = next((answer for answer in answers if site.matches(answer)), None)
                if match is not None:
                    listings.append(Listing(domain, match, site.weight))
        return None

    async def _probe(self, domain: str) -> str | None:
        (listed, listed_error), (unlisted, unlisted_error) = await asyncio.gather(
            self._ask(f"2.0.0.127.{domain}"), self._ask(f"1.0.0.127.{domain}")
        )
        problems = []
        if listed_error is not None:
            problems.append(f"127.0.0.2 test query failed ({listed_error}): list unreachable")
        elif not listed:
            problems.append("127.0.0.2 test entry not listed: list broken or blocked for this resolver")
        elif bad := _first_problem(listed):
            problems.append(f"127.0.0.2 test entry answered {bad[0]}: {bad[1]}")
        if unlisted_error is not None:
            if listed_error is None:
                problems.append(f"127.0.0.1 test query failed ({unlisted_error})")
        elif unlisted:
            bad = _first_problem(unlisted)
            if bad is None:
                problems.append(
                    f"127.0.0.1 is listed ({unlisted[0]}), which it must never be: it lists everyone"
                )
            elif not problems:  # a refusal for both probes is told once
                problems.append(f"127.0.0.1 test entry answered {bad[0]}: {bad[1]}")
        return f"{domain}: " + "; ".join(problems) if problems else None

    async def _ask(self, name: str) -> tuple[list[str], str | None]:
        try:
            async with asyncio.timeout(self.timeout):
                return await self._resolver.a_records(name), None
        except TimeoutError:
            return [], "timeout"
        except DnsError as error:
            return [], str(error)
        except Exception as error:  # any resolver failure is a finding of the test, not a crash
            return [], repr(error)


def _first_problem(answers: list[str]) -> tuple[str, str] | None:
    """The first answer that cannot be a listing, with why."""
    for answer in answers:
        problem = answer_problem(answer)
        if problem is not None:
            return answer, problem
    return None


def _outcome(domain: str, task: asyncio.Task[list[str]]) -> tuple[list[str], SiteError | None]:
    try:
        return task.result(), None
    except DnsError as error:
        return [], SiteError(domain, error.kind, error.detail)
    except Exception as error:  # fail open on whatever the resolver raised
        return [], SiteError(domain, "error", repr(error))
