"""Certificates made in the test run (trustme): a private CA and server pairs written as PEM files."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class CertFiles:
    cert: Path  # the certificate followed by its chain
    key: Path
    ca: Path  # the CA that signed it, for clients to trust

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


def write_pair(
    ca: trustme.CA, folder: Path, *names: str, key_type: trustme.KeyType = trustme.KeyType.RSA
) -> CertFiles:
    """A certificate for ``names`` from ``ca`` in ``folder`` (key readable by its owner only)."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    issued = ca.issue_cert(*names, key_type=key_type)
    files = CertFiles(folder / "cert.pem", folder / "key.pem", folder / "ca.pem")
    files.cert.write_bytes(b"".join(pem.bytes() for pem in issued.cert_chain_pems))
    files.key.touch(mode=0o600)
    files.key.write_bytes(issued.private_key_pem.bytes())
    files.ca.write_bytes(ca.cert_pem.bytes())
    return files
