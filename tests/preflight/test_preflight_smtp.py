"""The SMTP check against aiosmtpd on 127.0.0.1: connect, EHLO, STARTTLS, AUTH; no MAIL."""

from __future__ import annotations

import socket
import ssl

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from tls_support import self_signed_certificate
from digest.preflight.providers import check_smtp
from digest.settings import load_settings


class Refuser:
    """Counts any attempt to send: the check must never make one."""

    def __init__(self) -> None:
        self.mail_from = 0

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        self.mail_from += 1
        return "550 no mail expected"


def _authenticator(server, session, envelope, mechanism, auth_data):
    return AuthResult(success=(auth_data.login, auth_data.password) == (b"digest", b"right"),
                      handled=False)


@pytest.fixture
def relay(tmp_path):
    cert, key = self_signed_certificate(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    started = []

    def start(*, tls: bool = True):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        handler = Refuser()
        controller = Controller(handler, hostname="127.0.0.1", port=port,
                                authenticator=_authenticator,
                                tls_context=server_tls if tls else None,
                                auth_require_tls=tls)
        controller.start()
        started.append(controller)
        return port, handler, ssl.create_default_context(cafile=str(cert))

    yield start
    for controller in started:
        controller.stop()


def statuses(url: str, context) -> dict[str, str]:
    checks = check_smtp(load_settings(provider="smtp", smtp_url=url), ssl_context=context)
    return {c.name: c.status for c in checks}


def test_good_login_over_starttls(relay):
    port, handler, context = relay()
    assert statuses(f"smtp+starttls://digest:right@127.0.0.1:{port}", context) == {
        "provider.tls": "ok", "provider.credentials": "ok"}
    assert handler.mail_from == 0


def test_wrong_password(relay):
    port, _, context = relay()
    result = statuses(f"smtp+starttls://digest:wrong@127.0.0.1:{port}", context)
    assert result["provider.credentials"] == "fail"


def test_no_starttls_offered(relay):
    port, _, context = relay(tls=False)
    assert statuses(f"smtp+starttls://digest:right@127.0.0.1:{port}", context) == {
        "provider.tls": "fail"}


def test_plain_url_while_starttls_is_offered_warns(relay):
    port, _, context = relay()
    result = statuses(f"smtp://127.0.0.1:{port}", context)
    assert result == {"provider.tls": "warn", "provider.credentials": "warn"}
