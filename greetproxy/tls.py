"""TLS: the contexts built from the configured files, and what a session reports about the TLS it
got. The STARTTLS upgrades themselves are the relay's (client side) and the backend link's."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass


class TlsSetupError(Exception):
    """A certificate, key, CA file or cipher list is unusable; the message names the variable."""


def _readable(variable: str, path: str) -> None:
    try:
        with open(path, "rb") as file:
            file.read(1)
    except OSError as error:
        raise TlsSetupError(f"{variable}={path!r}: cannot read it: {error.strerror or error}") from None


def server_context(cert: str, key: str, ciphers: str | None) -> ssl.SSLContext:
    """The ssl module's secure defaults for a server (no compression, no client certificate asked
    for: an MX takes mail from anyone), TLS 1.2 at least."""
    _readable("GREETPROXY_TLS_CERT", cert)
    _readable("GREETPROXY_TLS_KEY", key)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as error:
        why = "the key does not match the certificate" if "MISMATCH" in str(error) else "not a PEM pair"
        raise TlsSetupError(
            f"GREETPROXY_TLS_CERT={cert!r}, GREETPROXY_TLS_KEY={key!r}: {why} ({error.reason or error})"
        ) from None
    if ciphers:
        context.set_ciphers(ciphers)  # the setting checked the list; it applies below TLS 1.3
    return context


def client_context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    """For STARTTLS to the backend: verified against ``ca_file`` (or the system's CAs), or not at all."""
    if ca_file is not None:
        _readable("GREETPROXY_BACKEND_TLS_CA", ca_file)
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except ssl.SSLError as error:
        raise TlsSetupError(f"GREETPROXY_BACKEND_TLS_CA={ca_file!r}: no PEM certificates ({error})") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


@dataclass(frozen=True, slots=True)
class TlsInfo:
    version: str
    cipher: str
    bits: int

    @classmethod
    def of(cls, transport: asyncio.BaseTransport) -> TlsInfo:
        cipher, version, bits = transport.get_extra_info("cipher")
        return cls(version, cipher, bits)

    def comment(self) -> str:
        """As sendmail writes it in its Received header."""
        return f"(version={self.version} cipher={self.cipher} bits={self.bits})"

    def fields(self) -> dict[str, object]:
        return {"tls_version": self.version, "tls_cipher": self.cipher}


def describe_failure(error: BaseException) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {error.verify_message}"
    if isinstance(error, ssl.SSLError):
        return error.reason or str(error)
    if isinstance(error, TimeoutError):
        return "handshake timed out"
    return str(error) or type(error).__name__
