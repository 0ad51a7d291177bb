"""The SMTP provider against a real SMTP server (aiosmtpd) on 127.0.0.1, started by each test."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import ipaddress
import socket
import ssl
from functools import partial

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from digest.errors import ConfigurationError, PermanentProviderError, TransientProviderError
from digest.delivery.providers.smtp import SmtpProvider, SmtpTarget
from provider_samples import ISSUE, letter, recipients


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Sink:
    """Accepts mail, refusing some recipients, optionally hanging up in the middle of DATA."""

    def __init__(self, refuse: dict[str, str] | None = None, hang_up_on: str | None = None):
        self.refuse = refuse or {}
        self.hang_up_on = hang_up_on
        self.messages: list[dict] = []
        self.peers: list[tuple] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if envelope.rcpt_tos == [self.hang_up_on]:
            server.transport.close()  # the message arrived; the answer never will
            return "250 too late"
        self.messages.append({"peer": session.peer, "from": envelope.mail_from,
                              "to": list(envelope.rcpt_tos),
                              "message": email.message_from_bytes(envelope.content,
                                                                  policy=email.policy.default)})
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server(request):
    servers = []

    def start(handler: Sink, **kwargs) -> int:
        port = free_port()
        controller = Controller(handler, hostname="127.0.0.1", port=port, **kwargs)
        controller.start()
        servers.append(controller)
        return port

    yield start
    for controller in servers:
        controller.stop()


def test_batch_arrives_as_separate_messages_over_one_connection(smtp_server):
    sink = Sink(refuse={"reader1@inbox.example": "550 5.1.1 <reader1@inbox.example>: no such "
                                                  "user"})
    port = smtp_server(sink)
    batch = recipients(4)
    with SmtpProvider.from_url(f"smtp://127.0.0.1:{port}", timeout=5) as provider:
        outcomes = provider.send_batch(letter(), batch, batch_key="b-1")

    assert [o.status for o in outcomes] == ["sent", "rejected", "sent", "sent"]
    assert outcomes[1].reason.startswith("smtp 550: recipient refused")
    assert outcomes[0].message_id == "<m0000@verdicts.example>"
    assert [m["to"] for m in sink.messages] == [["reader0@inbox.example"],
                                               ["reader2@inbox.example"],
                                               ["reader3@inbox.example"]]
    assert len({m["peer"] for m in sink.messages}) == 1  # one connection for the batch
    for m, r in zip(sink.messages, [batch[0], batch[2], batch[3]]):
        msg = m["message"]
        assert m["from"] == "digest@verdicts.example"
        assert r.email in msg["To"]
        assert msg["List-Unsubscribe"] == f"<{r.unsubscribe_url()}>"
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert msg["X-Digest-Issue"] == ISSUE
        assert msg["Message-ID"] == f"<{r.message_id}@verdicts.example>"
        assert msg.get_content_type() == "multipart/alternative"
        html = msg.get_body(("html",)).get_content()
        assert f'href="{r.unsubscribe_url().replace("&", "&amp;")}"' in html


def test_each_batch_opens_its_own_connection(smtp_server):
    sink = Sink()
    port = smtp_server(sink)
    with SmtpProvider.from_url(f"smtp://127.0.0.1:{port}", timeout=5) as provider:
        provider.send_batch(letter(), recipients(2), batch_key="b-1")
        provider.send_batch(letter(), recipients(2), batch_key="b-2")
    peers = [m["peer"] for m in sink.messages]
    assert peers[0] == peers[1] and peers[2] == peers[3] and peers[0] != peers[2]


def test_temporary_refusal_is_transient(smtp_server):
    sink = Sink(refuse={"reader0@inbox.example": "452 4.2.2 mailbox full, try later"})
    port = smtp_server(sink)
    with SmtpProvider.from_url(f"smtp://127.0.0.1:{port}", timeout=5) as provider:
        outcomes = provider.send_batch(letter(), recipients(2), batch_key="b-1")
    assert [o.status for o in outcomes] == ["transient", "sent"]


def test_connection_lost_during_data_is_uncertain_and_the_rest_unsent(smtp_server):
    sink = Sink(hang_up_on="reader1@inbox.example")
    port = smtp_server(sink)
    with SmtpProvider.from_url(f"smtp://127.0.0.1:{port}", timeout=5) as provider:
        outcomes = provider.send_batch(letter(), recipients(3), batch_key="b-1")
    assert [o.status for o in outcomes] == ["sent", "uncertain", "transient"]
    assert len(sink.messages) == 1


def test_login_with_url_credentials(smtp_server):
    seen = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        seen.append((auth_data.login, auth_data.password))
        return AuthResult(success=auth_data.password == b"p@ss:word", handled=False)

    sink = Sink()
    port = smtp_server(sink, authenticator=authenticator, auth_require_tls=False)
    url = f"smtp://digest%40verdicts.example:p%40ss%3Aword@127.0.0.1:{port}"
    with SmtpProvider.from_url(url, timeout=5) as provider:
        assert provider.send_batch(letter(), recipients(1), batch_key="b")[0].status == "sent"
    assert seen == [(b"digest@verdicts.example", b"p@ss:word")]

    wrong = f"smtp://digest:nope@127.0.0.1:{port}"
    with SmtpProvider.from_url(wrong, timeout=5) as provider, \
            pytest.raises(PermanentProviderError, match="login"):
        provider.send_batch(letter(), recipients(1), batch_key="b")


def test_starttls_upgrade(smtp_server, tmp_path):
    cert, key = _self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    sink = Sink()
    port = smtp_server(sink, tls_context=server_tls, require_starttls=True)
    client_tls = ssl.create_default_context(cafile=str(cert))
    with SmtpProvider.from_url(f"smtp+starttls://127.0.0.1:{port}", timeout=5,
                               ssl_context=client_tls) as provider:
        assert provider.send_batch(letter(), recipients(1), batch_key="b")[0].status == "sent"
    assert len(sink.messages) == 1
    # Without the certificate's CA the upgrade is refused, and no retry can fix that.
    with SmtpProvider.from_url(f"smtp+starttls://127.0.0.1:{port}", timeout=5) as provider, \
            pytest.raises(PermanentProviderError, match="certificate"):
        provider.send_batch(letter(), recipients(1), batch_key="b")


def test_nobody_listening_is_transient():
    with SmtpProvider.from_url(f"smtp://127.0.0.1:{free_port()}", timeout=2) as provider, \
            pytest.raises(TransientProviderError):
        provider.send_batch(letter(), recipients(1), batch_key="b")


@pytest.mark.parametrize("url, expected", [
    ("smtp://relay.local", SmtpTarget("relay.local", 25, "plain")),
    ("smtp+starttls://u:p%2F@mail.example:2525", SmtpTarget("mail.example", 2525, "starttls",
                                                            "u", "p/")),
    ("smtps://u:p@mail.example", SmtpTarget("mail.example", 465, "ssl", "u", "p")),
])
def test_url_forms(url, expected):
    assert SmtpTarget.from_url(url) == expected


@pytest.mark.parametrize("url", ["http://mail.example", "smtp://", "smtp://host:port"])
def test_bad_urls_name_the_setting(url):
    with pytest.raises(ConfigurationError, match="DIGEST_SMTP_URL"):
        SmtpTarget.from_url(url)


def _self_signed(folder):
    """A throwaway certificate for 127.0.0.1, made with `cryptography`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_registry_builds_smtp_from_settings(tmp_path, monkeypatch):
    from digest.delivery.providers.registry import build
    from provider_samples import settings_for

    load_settings = partial(settings_for, monkeypatch, tmp_path)  # no .env, no stray DIGEST_*
    built = build(load_settings(provider="smtp", smtp_url="smtps://u:p@mail.example"))
    assert isinstance(built, SmtpProvider)
    assert built.target == SmtpTarget("mail.example", 465, "ssl", "u", "p")
    with pytest.raises(ConfigurationError, match="DIGEST_SMTP_URL"):
        build(load_settings(provider="smtp"))
