"""STARTTLS at the proxy (RFC 3207), and optionally from the proxy to the backend, against real sendmail."""

from __future__ import annotations

import email
import re
import shutil
import signal
import smtplib
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme
from cryptography import x509

from tests.conftest import PROXY_HOSTNAME, proxies_for, proxy_env
from tests.support.client import RawClient
from tests.support.proxy import ProxyProcess, free_port, run_once
from tests.support.sendmail import Sendmail
from tests.support.tls import CertFiles, write_pair

DOMAIN = "example.test"
TLS_COMMENT = re.compile(r"\(version=TLSv1\.[23] cipher=[A-Z0-9_-]+ bits=\d+\)")


@pytest.fixture
def tls_proxy(start_proxy: Callable[..., ProxyProcess], proxy_certs: CertFiles) -> ProxyProcess:
    return start_proxy(tls_cert=str(proxy_certs.cert), tls_key=str(proxy_certs.key))


def ehlo_keywords(text: str) -> list[str]:
    return [line.split(" ", 1)[0].upper() for line in text.splitlines()[1:]]


def tls_client(proxy: ProxyProcess, certs: CertFiles) -> RawClient:
    """Greeted, EHLO'd, and inside TLS (verified against the test CA)."""
    client = RawClient(proxy.port)
    assert client.reply().code == 220
    assert "STARTTLS" in ehlo_keywords(client.command("EHLO tls.example").text)
    assert client.command("STARTTLS").code == 220
    client.start_tls(certs.client_context(), PROXY_HOSTNAME)
    return client


def test_ehlo_offers_starttls_once_only_when_configured(start_proxy, proxy_certs):
    plain = start_proxy()
    with RawClient(plain.port) as client:
        client.reply()
        assert "STARTTLS" not in ehlo_keywords(client.command("EHLO a.example").text)
        assert client.command("STARTTLS").code == 502
    secure = start_proxy(tls_cert=str(proxy_certs.cert), tls_key=str(proxy_certs.key))
    with tls_client(secure, proxy_certs) as client:
        keywords = ehlo_keywords(client.command("EHLO again.example").text)
        assert "STARTTLS" not in keywords  # not offered twice
        assert "PIPELINING" in keywords
        reply = client.command("STARTTLS")
        assert reply.code == 503 and "already active" in reply.text


def test_smtplib_starttls_delivery_says_esmtps_with_version_and_cipher(tls_proxy, proxy_certs, backend):
    body = b"Subject: secret\r\n\r\nover TLS\r\n"
    with smtplib.SMTP("127.0.0.1", tls_proxy.port, local_hostname="tls.example", timeout=10) as client:
        client.starttls(context=proxy_certs.client_context())
        version = client.sock.version()
        assert client.sendmail("a@sender.example", [f"tess@{DOMAIN}"], body) == {}
    [raw] = backend.wait_for_messages(1, user="tess")
    ours = [h for h in email.message_from_bytes(raw).get_all("Received") if "greetproxy" in h]
    assert len(ours) == 1
    assert re.search(r"from tls\.example \(\[127\.0\.0\.1\]\)\s+\(version=", ours[0]), ours[0]
    assert TLS_COMMENT.search(ours[0]), ours[0]
    session = re.search(r"with ESMTPS id ([0-9a-f]{12});", ours[0]).group(1)
    message = tls_proxy.wait_event("message", session=session)
    assert message["tls_version"] == version and message["tls_cipher"]
    tls = tls_proxy.wait_event("tls", session=session)
    assert tls["discarded"] == 0
    disconnect = tls_proxy.wait_event("disconnect", session=session)
    assert (disconnect["tls_version"], disconnect["tls_cipher"]) == (tls["tls_version"], tls["tls_cipher"])
    assert raw.endswith(b"\r\n\r\nover TLS\r\n")


def test_plain_session_has_no_tls_fields(tls_proxy, backend):
    with smtplib.SMTP("127.0.0.1", tls_proxy.port, local_hostname="plain.example", timeout=10) as client:
        client.sendmail("a@sender.example", [f"pia@{DOMAIN}"], b"Subject: plain\r\n\r\nclear\r\n")
    [raw] = backend.wait_for_messages(1, user="pia")
    [ours] = [h for h in email.message_from_bytes(raw).get_all("Received") if "greetproxy" in h]
    assert "with ESMTP id" in ours and "version=" not in ours
    message = tls_proxy.wait_event("message", where=lambda event: event["sender"] == "a@sender.example")
    assert "tls_version" not in message


def test_swaks_tls_delivery(tls_proxy, backend):
    result = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{tls_proxy.port}", "--tls", "--helo", "swaks.example"]
        + ["--from", "s@sender.example", "--to", f"sam@{DOMAIN}", "--body", "swaks over TLS"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "TLS started with cipher" in result.stdout
    [raw] = backend.wait_for_messages(1, user="sam")
    assert b"with ESMTPS id" in raw and b"swaks over TLS" in raw


def test_openssl_s_client_starttls_delivery(tls_proxy, proxy_certs, backend):
    dialogue = (
        "EHLO openssl.example\nMAIL FROM:<o@sender.example>\nRCPT TO:<olga@example.test>\nDATA\n"
        "Subject: openssl\n\nvia s_client\n.\nQUIT\n"
    )
    result = subprocess.run(
        ["openssl", "s_client", "-starttls", "smtp", "-connect", f"127.0.0.1:{tls_proxy.port}"]
        + ["-crlf", "-quiet", "-CAfile", str(proxy_certs.ca), "-verify_return_error"]
        + ["-verify_hostname", PROXY_HOSTNAME, "-name", "openssl.example"],
        input=dialogue,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "250 2.0.0" in result.stdout and "221 2.0.0" in result.stdout, result.stdout
    [raw] = backend.wait_for_messages(1, user="olga")
    assert b"via s_client" in raw and b"with ESMTPS id" in raw


def test_commands_pipelined_after_starttls_are_discarded_not_run_inside_tls(tls_proxy, proxy_certs, backend):
    client = RawClient(tls_proxy.port)
    assert client.reply().code == 220
    client.command("EHLO inject.example")
    client.send(b"STARTTLS\r\nRSET\r\n")  # one write: the RSET must never be answered inside TLS
    assert client.reply().code == 220
    client.start_tls(proxy_certs.client_context(), PROXY_HOSTNAME)
    client.sock.settimeout(0.5)
    with pytest.raises(TimeoutError):
        client.sock.recv(100)  # nothing arrives unasked: no 250 for the RSET
    reply = client.command("EHLO inject.example")
    assert reply.code == 250 and reply.text.startswith(PROXY_HOSTNAME)
    event = tls_proxy.wait_event("tls")
    assert event["discarded"] == len(b"RSET\r\n")
    assert client.command("QUIT").code == 221
    client.close()


def test_injected_mail_transaction_after_starttls_never_reaches_sendmail(tls_proxy, proxy_certs, backend):
    """CVE-2021-38371 style: a whole transaction pipelined in plain text behind STARTTLS."""
    client = RawClient(tls_proxy.port)
    client.reply()
    client.command("EHLO inject.example")
    client.send(
        b"STARTTLS\r\nMAIL FROM:<evil@sender.example>\r\nRCPT TO:<ivan@example.test>\r\nDATA\r\n"
        b"Subject: injected\r\n\r\nplain text\r\n.\r\n"
    )
    assert client.reply().code == 220
    client.start_tls(proxy_certs.client_context(), PROXY_HOSTNAME)
    assert client.command("MAIL FROM:<a@sender.example>").code == 503  # EHLO first, after TLS
    assert client.command("EHLO again.example").code == 250
    assert client.command("QUIT").code == 221
    client.close()
    tls_proxy.wait_event("disconnect", outcome="quit")
    assert backend.messages("ivan") == []


def test_starttls_out_of_order_and_with_parameters(tls_proxy):
    with RawClient(tls_proxy.port) as client:
        client.reply()
        assert client.command("STARTTLS").code == 503  # before EHLO
        client.command("HELO old.example")
        assert client.command("STARTTLS").code == 503  # HELO has no extensions
        client.command("EHLO new.example")
        assert client.command("STARTTLS now").code == 501
        assert client.command("QUIT").code == 221


def test_garbage_instead_of_client_hello_closes_only_that_connection(tls_proxy, proxy_certs, backend):
    with RawClient(tls_proxy.port) as client:
        client.reply()
        client.command("EHLO garbage.example")
        assert client.command("STARTTLS").code == 220
        client.send(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n" + bytes(range(256)))
        assert client.is_closed()
    event = tls_proxy.wait_event("tls_error")
    assert event["reason"]
    tls_proxy.wait_event("disconnect", outcome="tls_error")
    with tls_client(tls_proxy, proxy_certs) as client:  # the next client is served as usual
        assert client.command("EHLO fine.example").code == 250
        assert client.command("QUIT").code == 221


def test_client_that_hangs_up_during_the_handshake(tls_proxy):
    with RawClient(tls_proxy.port) as client:
        client.reply()
        client.command("EHLO gone.example")
        assert client.command("STARTTLS").code == 220
    tls_proxy.wait_event("tls_error")
    tls_proxy.wait_event("disconnect", outcome="tls_error")


def peer_serial(proxy: ProxyProcess, certs: CertFiles) -> int:
    with tls_client(proxy, certs) as client:
        serial = int(client.sock.getpeercert()["serialNumber"], 16)
        client.command("QUIT")
    return serial


def install(pair: CertFiles, live: Path, key_from: CertFiles | None = None) -> None:
    shutil.copyfile(pair.cert, live / "cert.pem")
    shutil.copyfile((key_from or pair).key, live / "key.pem")


def test_sighup_reloads_the_certificate_and_keeps_it_if_the_new_pair_is_bad(
    start_proxy, test_ca, tmp_path, backend
):
    first, second, third = (write_pair(test_ca, tmp_path / name, PROXY_HOSTNAME) for name in "abc")
    live = tmp_path / "live"
    live.mkdir(mode=0o700)
    install(first, live)
    proxy = start_proxy(tls_cert=str(live / "cert.pem"), tls_key=str(live / "key.pem"))
    serials = {
        pair: x509.load_pem_x509_certificate(pair.cert.read_bytes()).serial_number for pair in (first, second)
    }
    assert peer_serial(proxy, first) == serials[first]

    held = tls_client(proxy, first)  # a session in flight keeps its TLS across the reload
    install(second, live)
    proxy.signal(signal.SIGHUP)
    proxy.wait_count("tls_certificate", 2)
    assert peer_serial(proxy, first) == serials[second]
    assert int(held.sock.getpeercert()["serialNumber"], 16) == serials[first]
    assert held.command("EHLO still.example").code == 250 and held.command("QUIT").code == 221
    held.close()

    proxy.expected_errors.add("tls_reload")
    install(third, live, key_from=first)  # a renewal gone wrong: the key is not the certificate's
    proxy.signal(signal.SIGHUP)
    error = proxy.wait_event("tls_reload")
    assert "does not match" in error["error"] and error["kept"] == "old certificate"
    assert peer_serial(proxy, first) == serials[second]


@pytest.mark.parametrize(
    ("problem", "expected"),
    [("missing", "GREETPROXY_TLS_CERT='{cert}': cannot read it"), ("mismatch", "does not match")],
)
def test_unusable_certificate_fails_start_with_status_2(problem, expected, test_ca, tmp_path):
    pair = write_pair(test_ca, tmp_path / "pair", PROXY_HOSTNAME)
    other = write_pair(test_ca, tmp_path / "other", PROXY_HOSTNAME)
    cert = tmp_path / "absent.pem" if problem == "missing" else pair.cert
    env = proxy_env(free_port(), tls_cert=str(cert), tls_key=str(other.key))
    result = run_once(env)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert expected.format(cert=cert) in line


def test_certificate_without_key_is_a_config_error(proxy_certs):
    result = run_once(proxy_env(free_port(), tls_cert=str(proxy_certs.cert)))
    assert result.returncode == 2
    assert "GREETPROXY_TLS_KEY as well" in result.stderr


# -- STARTTLS from the proxy to the backend -------------------------------------------------------


@pytest.fixture(scope="module")
def tls_sendmail(tmp_path_factory: pytest.TempPathFactory, test_ca: trustme.CA) -> Iterator[Sendmail]:
    """A sendmail that offers STARTTLS with a certificate for its own name, mx.example.test."""
    certs = write_pair(test_ca, tmp_path_factory.mktemp("sendmail-tls"), f"mx.{DOMAIN}")
    extra = "".join(
        f"define(`{name}', `{path}')dnl\n"
        for name, path in (
            ("confSERVER_CERT", certs.cert),
            ("confSERVER_KEY", certs.key),
            ("confCACERT", certs.ca),
            ("confCACERT_PATH", certs.ca.parent),
        )
    )
    server = Sendmail(tmp_path_factory.mktemp("tls-sendmail"), free_port(), extra_mc=extra)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def start_tls_backend_proxy(tls_sendmail: Sendmail) -> Iterator[Callable[..., ProxyProcess]]:
    tls_sendmail.clear()
    yield from proxies_for(tls_sendmail)


def test_backend_starttls_delivery_verified(start_tls_backend_proxy, tls_sendmail, test_ca, proxy_certs):
    ca = tls_sendmail.workdir.parent / "ca.pem"
    ca.write_bytes(test_ca.cert_pem.bytes())
    proxy = start_tls_backend_proxy(
        backend_tls="starttls",
        backend_tls_ca=str(ca),
        backend_tls_name=f"mx.{DOMAIN}",
        tls_cert=str(proxy_certs.cert),
        tls_key=str(proxy_certs.key),
    )
    proxy.wait_event("relay_check", status="closed")
    with smtplib.SMTP("127.0.0.1", proxy.port, local_hostname="both.example", timeout=10) as client:
        keywords = ehlo_keywords(client.ehlo()[1].decode())
        assert keywords.count("STARTTLS") == 1  # ours; sendmail's own is withheld
        client.starttls(context=proxy_certs.client_context())
        assert client.sendmail("a@sender.example", [f"bea@{DOMAIN}"], b"Subject: both\r\n\r\nhops\r\n") == {}
    [raw] = tls_sendmail.wait_for_messages(1, user="bea")
    received = email.message_from_bytes(raw).get_all("Received")
    sendmails = [header for header in received if f"by mx.{DOMAIN}" in header]
    assert "with ESMTPS" in sendmails[0] and "verify=" in sendmails[0], sendmails[0]  # proxy -> sendmail
    assert "STARTTLS=server" in tls_sendmail.log()


def test_backend_certificate_with_the_wrong_name_is_refused(start_tls_backend_proxy, tls_sendmail, test_ca):
    ca = tls_sendmail.workdir.parent / "ca.pem"
    ca.write_bytes(test_ca.cert_pem.bytes())
    proxy = start_tls_backend_proxy(
        backend_tls="starttls", backend_tls_ca=str(ca), backend_tls_name="other.example.test"
    )
    check = proxy.wait_event("relay_check", status="unknown")
    assert "certificate verify failed" in check["detail"] and "other.example.test" in check["detail"]
    with RawClient(proxy.port) as client:
        reply = client.reply()
        assert reply.code == 421 and reply.text.startswith("4.3.2")


def test_backend_starttls_unverified_and_backend_without_starttls(
    start_tls_backend_proxy, start_proxy, tls_sendmail, backend
):
    proxy = start_tls_backend_proxy(backend_tls="starttls", backend_tls_verify="0")
    proxy.wait_event("relay_check", status="closed")
    with smtplib.SMTP("127.0.0.1", proxy.port, local_hostname="unverified.example", timeout=10) as client:
        client.sendmail("a@sender.example", [f"uma@{DOMAIN}"], b"Subject: u\r\n\r\nx\r\n")
    [raw] = tls_sendmail.wait_for_messages(1, user="uma")
    assert b"with ESMTPS" in raw
    plain_backend = start_proxy(backend_tls="starttls")  # the shared sendmail has no certificate
    check = plain_backend.wait_event("relay_check", status="unknown")
    assert "does not offer STARTTLS" in check["detail"]
