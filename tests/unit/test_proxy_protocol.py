"""The PROXY header reader, without sockets: v1 and v2, byte by byte, and what it refuses."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from greetproxy.proxy_protocol import LONGEST, ProxyHeader, ProxyHeaderError, ProxyResult

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v2(source: str, port: int, command: int = 0x1, tlvs: bytes = b"") -> bytes:
    address = ipaddress.ip_address(source)
    family = 0x11 if address.version == 4 else 0x21  # TCP over IPv4 / IPv6
    destination = ipaddress.ip_address("127.0.0.1" if address.version == 4 else "::1")
    body = address.packed + destination.packed + struct.pack("!HH", port, 25) + tlvs
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


def parse(data: bytes) -> ProxyResult | None:
    return ProxyHeader().feed(data)


def test_v1_gives_the_client_and_keeps_what_follows():
    result = parse(b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 25\r\nEHLO early\r\n")
    assert result == ProxyResult(1, ("192.0.2.7", 40000), b"EHLO early\r\n")


def test_v1_ipv6():
    assert parse(b"PROXY TCP6 2001:db8::7 ::1 40000 25\r\n").client == ("2001:db8::7", 40000)


def test_v2_ipv4_and_ipv6_with_tlvs_skipped():
    tlv = bytes([0x05]) + struct.pack("!H", 4) + b"uniq"  # PP2_TYPE_UNIQUE_ID
    assert parse(v2("198.51.100.9", 5555, tlvs=tlv) + b"HELO") == ProxyResult(
        2, ("198.51.100.9", 5555), b"HELO"
    )
    assert parse(v2("2001:db8::9", 6666)).client == ("2001:db8::9", 6666)


def test_an_ipv4_mapped_source_is_the_ipv4_client():
    assert parse(b"PROXY TCP6 ::ffff:192.0.2.1 ::1 1 25\r\n").client == ("192.0.2.1", 1)


def test_local_and_unknown_mean_the_balancer_itself():
    assert parse(V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", 0)) == ProxyResult(2, None, b"")
    assert parse(b"PROXY UNKNOWN\r\n") == ProxyResult(1, None, b"")


@pytest.mark.parametrize(
    "header", [b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 25\r\n", v2("198.51.100.9", 5555)], ids=["v1", "v2"]
)
def test_a_header_that_comes_a_byte_at_a_time(header):
    reader = ProxyHeader()
    results = [reader.feed(header[index : index + 1]) for index in range(len(header))]
    assert results[:-1] == [None] * (len(header) - 1)
    assert results[-1] is not None and results[-1].client is not None


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"EHLO bot.example\r\n", "PROXY unrecognized signature"),
        (b"PROXY TCP4 999.0.2.7 127.0.0.1 1 25\r\n", "PROXYv1 address malformed"),
        (b"PROXY TCP4 192.0.2.7 127.0.0.1 1\r\n", "PROXY exception"),
        (b"PROXY TCP4 192.0.2.7 127.0.0.1 1 99999\r\n", "PROXYv1"),
        (b"PROXY TCP4 192.0.2.7 127.0.0.1 1 25\n", "PROXYv1 malformed"),
        (b"PROXY " + b"9" * 200, "PROXYv1 header too long"),
        (V2_SIGNATURE + bytes([0x30, 0x11, 0, 12]) + bytes(12), "PROXYv2 illegal version"),
        (V2_SIGNATURE + bytes([0x21, 0x11, 0, 4]) + bytes(4), "PROXYv2 truncated address"),
    ],
)
def test_what_it_refuses_and_why(data, error):
    with pytest.raises(ProxyHeaderError) as caught:
        parse(data)
    assert str(caught.value).startswith(error)


def test_a_v2_header_that_claims_more_than_it_may():
    reader = ProxyHeader()
    start = V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", 65535)
    assert reader.feed(start) is None
    with pytest.raises(ProxyHeaderError, match="no complete header"):
        reader.feed(bytes(LONGEST))


@given(st.binary(max_size=300), st.integers(min_value=1, max_value=50))
def test_any_bytes_in_any_pieces_end_in_a_result_an_error_or_a_wait(data, piece):
    reader = ProxyHeader()
    try:
        for start in range(0, len(data), piece):
            if reader.feed(data[start : start + piece]) is not None:
                break
    except ProxyHeaderError:
        pass
    reader.close()
