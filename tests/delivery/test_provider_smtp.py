"""The SMTP provider against a real SMTP server (aiosmtpd) on 127.0.0.1, started by each test."""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import ssl
import threading
from functools import partial

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from tls_support import self_signed_certificate
from digest.errors import ConfigurationError, PermanentProviderError, TransientProviderError
from digest.delivery.providers.smtp import SmtpProvider, SmtpTarget
from provider_samples import ISSUE, letter, recipients


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Sink:
    """Accepts mail, refusing some recipients (a list of answers is used up one per attempt),
    optionally hanging up in the middle of DATA, offering PIPELINING when asked."""

    def __init__(self, refuse: dict[str, str | list[str]] | None = None,
                 hang_up_on: str | None = None, pipelining: bool = False,
                 refuse_mail: dict[str, list[str]] | None = None, hold: int = 0,
                 then_shut_down: bool = False):
        self.refuse = refuse or {}
        self.refuse_mail = refuse_mail or {}  # next RCPT's address -> MAIL answers, one a try
        self.hang_up_on = hang_up_on
        self.then_shut_down = then_shut_down  # after hanging up, the server goes away
        self.controller = None
        self.stopper: threading.Thread | None = None  # the shutdown a hang-up started
        self.pipelining = pipelining
        self.messages: list[dict] = []
        self.peers: list[tuple] = []
        self.mail_options: list[list[str]] = []
        self.hold = hold  # hold the first messages until this many connections are sending
        self._holding: set = set()
        self._all_here: asyncio.Event | None = None

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        answers = self.refuse_mail.get("next", [])
        if answers:
            return answers.pop(0)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        answer = self.refuse.get(address)
        if isinstance(answer, list):
            answer = answer.pop(0) if answer else None
        if answer:
            return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if envelope.rcpt_tos == [self.hang_up_on]:
            server.transport.close()  # the message arrived; the answer never will
            if self.then_shut_down:
                self.stopper = threading.Thread(target=self.controller.stop)
                self.stopper.start()
            return "250 too late"
        if self.hold and len(self.messages) < self.hold:
            if self._all_here is None:
                self._all_here = asyncio.Event()
            self._holding.add(session.peer)
            if len(self._holding) >= self.hold:
                self._all_here.set()
            try:  # a bound on a failing test, not a wait a passing one makes
                await asyncio.wait_for(self._all_here.wait(), 10)
            except asyncio.TimeoutError:
                pass
        self.mail_options.append(list(envelope.mail_options))
        self.messages.append({"peer": session.peer, "from": envelope.mail_from,
                              "to": list(envelope.rcpt_tos), "raw": envelope.original_content,
                              "message": email.message_from_bytes(envelope.original_content,
                                                                  policy=email.policy.default)})
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server(request):
    servers = []

    def start(handler: Sink, **kwargs) -> int:
        port = free_port()
        controller = Controller(handler, hostname="127.0.0.1", port=port, **kwargs)
        controller.start()
        handler.controller = controller
        servers.append(controller)
        return port

    yield start
    for controller in servers:
        stopper = getattr(controller.handler, "stopper", None)
        if stopper is not None:  # the server shut itself down: wait for that, then it is gone
            stopper.join(timeout=10)
            continue
        try:
            controller.stop()
        except AssertionError:  # a test that shut its server down already
            pass


class Sleeps:
    """Records the waits the provider asks for; moves a fake clock instead of sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(round(seconds, 6))
        self.now += seconds


def provider_for(port: int, **kwargs) -> SmtpProvider:
    kwargs.setdefault("timeout", 5)
    kwargs.setdefault("sleep", Sleeps().sleep)
    return SmtpProvider.from_url(f"smtp://127.0.0.1:{port}", **kwargs)


def test_batch_arrives_as_separate_messages_over_one_connection(smtp_server):
    sink = Sink(refuse={"reader1@inbox.example": "550 5.1.1 <reader1@inbox.example>: no such "
                                                  "user"})
    port = smtp_server(sink)
    batch = recipients(4)
    with provider_for(port, connections=1) as provider:
        outcomes = provider.send_batch(letter(), batch, batch_key="b-1")

    assert [o.status for o in outcomes] == ["sent", "rejected", "sent", "sent"]
    assert outcomes[1].reason == ("smtp 550: recipient refused: 5.1.1 <reader1@inbox.example>: "
                                  "no such user")
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
    assert sink.messages[1]["message"]["To"] == "Zoë <reader2@inbox.example>"


def test_connections_are_kept_across_batches_and_replaced_after_their_quota(smtp_server):
    sink = Sink()
    port = smtp_server(sink)
    with provider_for(port, connections=1, messages_per_connection=3) as provider:
        provider.send_batch(letter(), recipients(2), batch_key="b-1")
        provider.send_batch(letter(), recipients(2), batch_key="b-2")
    peers = [m["peer"] for m in sink.messages]
    assert peers[0] == peers[1] == peers[2] != peers[3]


def test_several_connections_send_one_batch_at_once(smtp_server):
    sink = Sink(hold=3)  # the first messages wait until three connections are sending
    port = smtp_server(sink)
    batch = recipients(30)
    with provider_for(port, connections=3) as provider:
        assert provider.batch_limit >= 150
        outcomes = provider.send_batch(letter(), batch, batch_key="b-1")
    assert [o.status for o in outcomes] == ["sent"] * 30
    assert [o.message_id for o in outcomes] == [f"<{r.message_id}@verdicts.example>"
                                                for r in batch]
    assert sorted(m["to"][0] for m in sink.messages) == sorted(r.email for r in batch)
    assert len({m["peer"] for m in sink.messages}) == 3


def test_server_closing_before_the_message_reconnects_and_sends_it(smtp_server):
    sink = Sink(refuse={"reader1@inbox.example": ["421 4.3.2 shutting down"]})
    port = smtp_server(sink)
    sleeps = Sleeps()
    with provider_for(port, connections=1, sleep=sleeps.sleep) as provider:
        outcomes = provider.send_batch(letter(), recipients(3), batch_key="b-1")
    assert [o.status for o in outcomes] == ["sent", "sent", "sent"]
    assert [m["to"][0] for m in sink.messages] == [f"reader{i}@inbox.example" for i in range(3)]
    peers = [m["peer"] for m in sink.messages]
    assert peers[0] != peers[1] == peers[2]
    assert sleeps.waits == []  # nothing was refused: a new connection is tried at once


def test_temporary_refusal_is_retried_after_a_backoff(smtp_server):
    sink = Sink(refuse={"reader0@inbox.example": ["451 4.7.1 greylisted", "452 4.2.2 full"]})
    port = smtp_server(sink)
    sleeps = Sleeps()
    with provider_for(port, connections=1, sleep=sleeps.sleep, backoff=0.5) as provider:
        outcomes = provider.send_batch(letter(), recipients(2), batch_key="b-1")
    assert [o.status for o in outcomes] == ["sent", "sent"]
    assert sleeps.waits == [0.5, 1.0]
    assert [m["to"][0] for m in sink.messages] == ["reader0@inbox.example",
                                                  "reader1@inbox.example"]


def test_temporary_refusal_that_persists_is_transient_with_the_reply(smtp_server):
    sink = Sink(refuse={"reader0@inbox.example": "452 4.2.2 mailbox full, try later"})
    port = smtp_server(sink)
    sleeps = Sleeps()
    with provider_for(port, connections=1, sleep=sleeps.sleep, retries=2) as provider:
        outcomes = provider.send_batch(letter(), recipients(2), batch_key="b-1")
    assert [o.status for o in outcomes] == ["transient", "sent"]
    assert outcomes[0].reason == "smtp 452: recipient refused: 4.2.2 mailbox full, try later"
    assert sleeps.waits == [1.0, 2.0]


def test_connection_lost_during_data_is_uncertain_and_never_resent(smtp_server):
    sink = Sink(hang_up_on="reader1@inbox.example")
    port = smtp_server(sink)
    with provider_for(port, connections=1) as provider:
        outcomes = provider.send_batch(letter(), recipients(3), batch_key="b-1")
    assert [o.status for o in outcomes] == ["sent", "uncertain", "sent"]
    assert outcomes[1].reason.startswith("uncertain: connection lost while the message")
    assert [m["to"][0] for m in sink.messages] == ["reader0@inbox.example",
                                                  "reader2@inbox.example"]
    assert sink.messages[0]["peer"] != sink.messages[1]["peer"]  # the next one reconnected


def test_an_uncertain_message_is_never_retried_with_the_batch(smtp_server):
    """The first message is lost mid-DATA and then the server is gone: the call must return
    that recipient as uncertain, not fail as a whole (the sender would retry every message)."""
    sink = Sink(hang_up_on="reader0@inbox.example", then_shut_down=True)
    port = smtp_server(sink)
    with provider_for(port, connections=1, retries=1) as provider:
        outcomes = provider.send_batch(letter(), recipients(3), batch_key="b-1")
    assert [o.status for o in outcomes] == ["uncertain", "transient", "transient"]
    assert sink.messages == []


def test_sender_refused_on_a_fresh_connection_fails_the_call(smtp_server):
    sink = Sink(refuse_mail={"next": ["553 5.7.1 sender not allowed"] * 4})
    port = smtp_server(sink)
    with provider_for(port, connections=2) as provider, \
            pytest.raises(PermanentProviderError, match="sender digest@verdicts.example refused"):
        provider.send_batch(letter(), recipients(4), batch_key="b-1")


@pytest.mark.parametrize("pipelining", [True, False])
def test_pipelining_places_each_refusal_on_its_recipient(smtp_server, pipelining):
    sink = Sink(pipelining=pipelining,
                refuse={"reader1@inbox.example": "550 5.1.1 no such user",
                        "reader2@inbox.example": ["450 4.2.1 try again"]})
    port = smtp_server(sink)
    with provider_for(port, connections=1) as provider:
        outcomes = provider.send_batch(letter(), recipients(4), batch_key="b-1")
        assert provider._idle[0].pipelining is pipelining
    assert [o.status for o in outcomes] == ["sent", "rejected", "sent", "sent"]
    assert [m["to"][0] for m in sink.messages] == ["reader0@inbox.example",
                                                  "reader2@inbox.example",
                                                  "reader3@inbox.example"]


def test_8bit_where_offered_quoted_printable_elsewhere_same_content(smtp_server):
    eight, seven = Sink(), Sink()
    ports = smtp_server(eight), smtp_server(seven, decode_data=True)  # decode_data: no 8BITMIME
    batch = recipients(3)
    for port in ports:
        with provider_for(port, connections=1) as provider:
            assert [o.status for o in provider.send_batch(letter(), batch, batch_key="b")] == \
                ["sent"] * 3
    assert eight.mail_options[0] == ["BODY=8BITMIME"] and seven.mail_options[0] == []
    assert b"Content-Transfer-Encoding: 8bit" in eight.messages[0]["raw"]
    assert b"Content-Transfer-Encoding: quoted-printable" in seven.messages[0]["raw"]
    for a, b in zip(eight.messages, seven.messages):
        for kind in ("plain", "html"):
            assert a["message"].get_body((kind,)).get_content() == \
                b["message"].get_body((kind,)).get_content()


def test_non_ascii_address_uses_smtputf8_where_offered(smtp_server):
    from provider_samples import recipient

    zoe = recipient(9, email="zoë@inbox.example", name="Zoë")
    utf8, plain = Sink(), Sink()
    ports = smtp_server(utf8, enable_SMTPUTF8=True), smtp_server(plain, enable_SMTPUTF8=False)
    with provider_for(ports[0], connections=1) as provider:
        assert provider.send_batch(letter(), [zoe], batch_key="b")[0].status == "sent"
    assert utf8.messages[0]["to"] == ["zoë@inbox.example"]
    assert "SMTPUTF8" in utf8.mail_options[0]
    assert 'To: "Zoë" <zoë@inbox.example>\r\n'.encode() in utf8.messages[0]["raw"]
    with provider_for(ports[1], connections=1) as provider:
        outcome = provider.send_batch(letter(), [zoe], batch_key="b")[0]
    assert outcome.status == "rejected" and "SMTPUTF8" in outcome.reason
    assert plain.messages == []


def test_rate_limit_spaces_messages_over_all_connections(smtp_server):
    sink = Sink()
    port = smtp_server(sink)
    sleeps = Sleeps()
    with provider_for(port, connections=1, rate_limit=4, clock=sleeps.clock,
                      sleep=sleeps.sleep) as provider:
        provider.send_batch(letter(), recipients(5), batch_key="b")
    assert sleeps.waits == [0.25] * 4
    assert len(sink.messages) == 5


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
    cert, key = self_signed_certificate(tmp_path)
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
    with provider_for(free_port(), timeout=2) as provider, \
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


def test_registry_builds_smtp_from_settings(tmp_path, monkeypatch):
    from digest.delivery.providers.registry import build
    from provider_samples import settings_for

    load_settings = partial(settings_for, monkeypatch, tmp_path)  # no .env, no stray DIGEST_*
    built = build(load_settings(provider="smtp", smtp_url="smtps://u:p@mail.example"))
    assert isinstance(built, SmtpProvider)
    assert built.target == SmtpTarget("mail.example", 465, "ssl", "u", "p")
    with pytest.raises(ConfigurationError, match="DIGEST_SMTP_URL"):
        build(load_settings(provider="smtp"))


def test_send_over_several_connections_delivers_each_reader_once(smtp_server, engine, session,
                                                                 settings):
    """The whole loop (ledger, claims, several connections): a connection lost mid-DATA leaves
    exactly its reader uncertain, everyone else is sent once, and running the send again sends
    nobody twice."""
    from collections import Counter

    from delivery_support import FakeClock, add_subscribers, make_issue
    from digest.delivery import ledger
    from digest.delivery.send import SendPolicy, send_issue

    issue = make_issue(session)
    add_subscribers(engine, 120)
    sink = Sink(hang_up_on="reader57@example.com")
    port = smtp_server(sink)
    clock = FakeClock()

    def send():
        with provider_for(port, connections=3, messages_per_connection=25,
                          sleep=clock.sleep) as provider:
            return send_issue(engine, issue.id, provider, settings, clock=clock,
                              sleep=clock.sleep, policy=SendPolicy(in_flight=2))

    first = send()
    assert (first.sent, first.uncertain) == (119, 1)
    received = Counter(m["to"][0] for m in sink.messages)
    assert len(received) == 119 and set(received.values()) == {1}
    assert "reader57@example.com" not in received
    assert len({m["peer"] for m in sink.messages}) >= 5  # 25 a connection, then a new one
    second = send()
    assert (second.sent, second.uncertain) == (119, 1)
    assert len(sink.messages) == 119  # nobody got it twice; the uncertain one waits
    counts = ledger.counts(session, issue.id)
    assert counts["sent"] == 119 and counts["uncertain"] == 1
