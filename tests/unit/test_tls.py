"""The TLS pieces that need no proxy process: contexts from files, the backend's STARTTLS dialogue."""

from __future__ import annotations

import asyncio
import ssl

import pytest
import trustme

from greetproxy.backend import BackendFailure, BackendLink, BackendTls
from greetproxy.config import Endpoint
from greetproxy.tls import TlsSetupError, client_context, server_context
from tests.support.tls import write_pair


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def test_server_context_from_rsa_and_ecdsa_pairs(ca, tmp_path):
    for key_type in (trustme.KeyType.RSA, trustme.KeyType.ECDSA):
        pair = write_pair(ca, tmp_path / key_type.name, "mx.example.test", key_type=key_type)
        context = server_context(str(pair.cert), str(pair.key), None)
        assert context.minimum_version is ssl.TLSVersion.TLSv1_2
        assert context.options & ssl.OP_NO_COMPRESSION
        assert context.verify_mode is ssl.CERT_NONE  # an MX asks no client for a certificate


def test_server_context_errors_name_the_variable(ca, tmp_path):
    pair = write_pair(ca, tmp_path / "a", "mx.example.test")
    other = write_pair(ca, tmp_path / "b", "mx.example.test")
    with pytest.raises(TlsSetupError, match=r"^GREETPROXY_TLS_KEY='/nowhere': cannot read it"):
        server_context(str(pair.cert), "/nowhere", None)
    with pytest.raises(TlsSetupError, match="does not match the certificate"):
        server_context(str(pair.cert), str(other.key), None)
    not_pem = tmp_path / "junk.pem"
    not_pem.write_text("not a certificate\n")
    with pytest.raises(TlsSetupError, match="not a PEM pair"):
        server_context(str(not_pem), str(pair.key), None)


def test_client_context_rejects_a_ca_file_without_certificates(tmp_path):
    junk = tmp_path / "ca.pem"
    junk.write_text("nothing here\n")
    with pytest.raises(TlsSetupError, match="^GREETPROXY_BACKEND_TLS_CA="):
        client_context(True, str(junk))


async def _backend_says(*replies: bytes) -> tuple[asyncio.AbstractServer, int]:
    """A fake backend: greets, then answers each command with the next of ``replies``."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 fake ESMTP\r\n")
        for answer in replies:
            if not await reader.readline():
                break
            writer.write(answer)
        await reader.read()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize(
    ("replies", "expected"),
    [
        ((b"250-fake\r\n250 PIPELINING\r\n",), "does not offer STARTTLS"),
        ((b"250-fake\r\n250 STARTTLS\r\n", b"454 4.7.0 TLS not available\r\n"), "refused STARTTLS: 454"),
        # a reply smuggled behind the 220 would be read as if the backend had sent it inside TLS
        ((b"250-fake\r\n250 STARTTLS\r\n", b"220 go ahead\r\n250 injected\r\n"), "sent more after its 220"),
    ],
)
def test_backend_starttls_failures(replies, expected):
    async def attempt() -> None:
        server, port = await _backend_says(*replies)
        tls = BackendTls(client_context(False, None), "mx.example.test", "proxy.example.test")
        try:
            with pytest.raises(BackendFailure, match=expected):
                await BackendLink.open(Endpoint("127.0.0.1", port), None, 5, tls)
        finally:
            server.close()

    asyncio.run(attempt())
