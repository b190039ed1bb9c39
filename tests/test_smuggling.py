"""SMTP smuggling against the real sendmail: one DATA never becomes two messages."""

from __future__ import annotations

import time

import pytest

from tests.conftest import PROXY_HOSTNAME
from tests.support.client import RawClient

# End-of-data look-alikes from the 2023 SMTP smuggling research (SEC Consult; Postfix, sendmail,
# Exim advisories): every one but the real CRLF.CRLF contains a bare CR or LF.
VARIANTS = {
    "lf_dot_lf": b"\n.\n",
    "lf_dot_crlf": b"\n.\r\n",
    "crlf_dot_lf": b"\r\n.\n",
    "cr_dot_cr": b"\r.\r",
    "crlf_dot_cr": b"\r\n.\r",
    "cr_dot_crlf": b"\r.\r\n",
    "lf_dot_cr": b"\n.\r",
    "cr_dot_lf": b"\r.\n",
    "crcrlf_dot_crcrlf": b"\r\r\n.\r\r\n",
    "crlf_nul_dot_crlf": b"\r\n\x00.\r\n",
}
SMUGGLED = (
    b"MAIL FROM:<admin@sender.example>\r\nRCPT TO:<victim@example.test>\r\n"
    b"DATA\r\nSubject: smuggled\r\n\r\nevil\r\n"
)


@pytest.fixture(params=["plain", "starttls"])
def smuggler(request, start_proxy, proxy_certs):
    """The proxy, and a function giving a client that has said EHLO (inside TLS, for starttls)."""
    if request.param == "plain":
        proxy = start_proxy()
    else:
        proxy = start_proxy(tls_cert=str(proxy_certs.cert), tls_key=str(proxy_certs.key))

    def greeted() -> RawClient:
        client = RawClient(proxy.port)
        client.reply()
        client.command("EHLO smuggler.example")
        if request.param == "starttls":
            assert client.command("STARTTLS").code == 220
            client.start_tls(proxy_certs.client_context(), PROXY_HOSTNAME)
            assert client.command("EHLO smuggler.example").code == 250
        return client

    return proxy, greeted


@pytest.mark.parametrize("variant", VARIANTS.values(), ids=VARIANTS.keys())
def test_fake_end_of_data_never_yields_a_second_message(smuggler, backend, variant):
    proxy, greeted = smuggler
    with greeted() as client:
        assert client.command("MAIL FROM:<outer@sender.example>").code == 250
        assert client.command("RCPT TO:<outer@example.test>").code == 250
        assert client.command("DATA").code == 354
        client.send(b"Subject: outer\r\n\r\nfirst part" + variant + SMUGGLED + b"\r\n.\r\n")
        answer = client.reply()
        followups = []
        try:  # whatever the proxy made of the bytes, it answers each command it saw; drain them
            while True:
                followups.append(client.reply(timeout=1))
        except (TimeoutError, OSError):
            pass
    time.sleep(1.0)  # sendmail delivers in the background
    assert backend.messages(user="victim") == [], "a smuggled message was delivered"
    delivered = backend.messages()
    assert len(delivered) <= 1
    if b"\x00" in variant:  # no bare CR or LF: the proxy passes the text, Debian's sendmail refuses NULs
        assert answer == (554, "5.6.1 NUL byte not allowed")
        assert delivered == []
    else:
        assert answer.code == 554 and "5.6.0" in answer.text, answer
        assert delivered == []
        assert proxy.wait_count("reject", 1, reason="bare CR or LF in message text")
    assert all(reply.code != 250 or "queued" not in reply.text for reply in followups)
