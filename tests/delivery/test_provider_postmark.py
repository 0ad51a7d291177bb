"""Postmark against a loopback server that answers as `/email/batch` does: HTTP 200 with one
result per message, in order, even when some fail."""

from __future__ import annotations

import socket
import threading
from functools import partial

import pytest

from digest.errors import PermanentProviderError, TransientProviderError, UncertainProviderError
from digest.delivery.providers.postmark import PostmarkProvider
from fakeserver import Recorded, Reply, fake_server  # noqa: F401  (fixture)
from provider_samples import ISSUE, letter, recipients

TOKEN = "server-token-123"


def provider(server, **kwargs) -> PostmarkProvider:
    kwargs.setdefault("timeout", (2.0, 2.0))
    return PostmarkProvider(TOKEN, stream="newsletters", base_url=server.url, **kwargs)


def results(codes: list[int]):
    """A Postmark batch answer for the recorded request, one result per message."""

    def answer(request: Recorded) -> Reply:
        messages = request.json()
        assert len(messages) == len(codes)
        out = []
        for i, (message, code) in enumerate(zip(messages, codes)):
            text = {0: "OK", 406: "You tried to send to a recipient that has been marked as "
                    "inactive.", 300: "Invalid 'To' address.", 405: "Not allowed to send",
                    429: "Rate limit exceeded", 999: "Something new"}[code]
            item = {"ErrorCode": code, "Message": text, "To": message["To"]}
            if code == 0:
                item.update(MessageID=f"pm-{i}", SubmittedAt="2026-11-23T09:00:00Z")
            out.append(item)
        return Reply(200, out)

    return answer


def test_batch_payload_shape_and_ids(fake_server):
    fake_server.script(results([0, 0, 0]))
    batch = recipients(3)
    with provider(fake_server) as p:
        outcomes = p.send_batch(letter(), batch, batch_key="b-1")

    assert [o.status for o in outcomes] == ["sent"] * 3
    assert [o.message_id for o in outcomes] == ["pm-0", "pm-1", "pm-2"]
    (req,) = fake_server.requests
    assert (req.method, req.route) == ("POST", "/email/batch")
    assert req.header("X-Postmark-Server-Token") == TOKEN
    assert req.header("content-type") == "application/json"
    assert req.header("user-agent").startswith("verdict-digest/")
    messages = req.json()
    assert [m["To"] for m in messages] == ["reader0@inbox.example",
                                          '"Ann & Bob <Co>" <reader1@inbox.example>',
                                          "=?utf-8?q?Zo=C3=AB?= <reader2@inbox.example>"]
    first = messages[1]
    assert first["From"] == "Weekly Verdicts <digest@verdicts.example>"
    assert first["MessageStream"] == "newsletters"
    assert first["Tag"] == ISSUE
    assert first["Metadata"] == {"issue": ISSUE, "delivery": "1001"}
    assert first["ReplyTo"] == "editor@verdicts.example"
    # per-recipient values filled, escaped in HTML only
    assert "Hi Ann &amp; Bob &lt;Co&gt;," in first["HtmlBody"]
    assert 'href="https://verdicts.example/u/tok1?a=1&amp;b=2"' in first["HtmlBody"]
    assert "Hi Ann & Bob <Co>," in first["TextBody"]
    assert "Unsubscribe: https://verdicts.example/u/tok1?a=1&b=2" in first["TextBody"]
    assert "%%" not in first["HtmlBody"] + first["TextBody"]
    headers = {h["Name"]: h["Value"] for h in first["Headers"]}
    assert headers["List-Unsubscribe"] == "<https://verdicts.example/u/tok1?a=1&b=2>"
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert headers["List-Id"] == "Weekly Verdicts <weekly.verdicts.example>"
    assert headers["X-Digest-Issue"] == ISSUE


def test_partial_failures_are_read_per_message(fake_server):
    fake_server.script(results([0, 406, 300, 429, 405, 999]))
    with provider(fake_server) as p:
        outcomes = p.send_batch(letter(), recipients(6), batch_key="b-2")
    assert [o.status for o in outcomes] == ["sent", "rejected", "rejected", "transient",
                                            "transient", "rejected"]
    assert outcomes[1].inactive and not outcomes[2].inactive
    assert outcomes[1].reason.startswith("postmark 406:")
    assert "999" in outcomes[5].reason


def test_account_refusal_of_every_message_fails_the_call(fake_server):
    fake_server.script(results([405, 405]))
    with provider(fake_server) as p, pytest.raises(PermanentProviderError, match="405"):
        p.send_batch(letter(), recipients(2), batch_key="b-3")


def test_429_carries_retry_after(fake_server):
    fake_server.script(Reply(429, {"ErrorCode": 429, "Message": "Rate limit exceeded"},
                             headers={"Retry-After": "7"}))
    with provider(fake_server) as p, pytest.raises(TransientProviderError) as caught:
        p.send_batch(letter(), recipients(2), batch_key="b-4")
    assert caught.value.retry_after == 7
    assert caught.value.status == 429
    assert not isinstance(caught.value, UncertainProviderError)


def test_retry_after_as_http_date(fake_server):
    fake_server.script(Reply(503, "maintenance", headers={
        "Retry-After": "Mon, 23 Nov 2026 09:00:30 GMT"}))
    now = 1795424400.0  # 2026-11-23 09:00:00 UTC
    with provider(fake_server, clock=lambda: now) as p, \
            pytest.raises(TransientProviderError) as caught:
        p.send_batch(letter(), recipients(1), batch_key="b-5")
    assert caught.value.retry_after == pytest.approx(30)


def test_500_is_transient_and_certain(fake_server):
    fake_server.script(Reply(500, {"ErrorCode": 0, "Message": "oops"}))
    with provider(fake_server) as p, pytest.raises(TransientProviderError) as caught:
        p.send_batch(letter(), recipients(2), batch_key="b-6")
    assert not isinstance(caught.value, UncertainProviderError)


def test_bad_token_is_permanent(fake_server):
    fake_server.script(Reply(401, {"ErrorCode": 10, "Message": "Bad or missing API token"}))
    with provider(fake_server) as p, pytest.raises(PermanentProviderError, match="credentials"):
        p.send_batch(letter(), recipients(1), batch_key="b-7")


def test_422_for_the_whole_batch_is_permanent(fake_server):
    fake_server.script(Reply(422, {"ErrorCode": 402, "Message": "Invalid JSON"}))
    with provider(fake_server) as p, pytest.raises(PermanentProviderError, match="ErrorCode 402"):
        p.send_batch(letter(), recipients(1), batch_key="b-8")


def test_dropped_connection_is_uncertain(fake_server):
    fake_server.script(Reply(drop=True))
    with provider(fake_server) as p, pytest.raises(UncertainProviderError):
        p.send_batch(letter(), recipients(2), batch_key="b-9")
    assert len(fake_server.requests) == 1  # the request went out, and was not re-posted


def test_slow_answer_past_read_timeout_is_uncertain(fake_server):
    release = threading.Event()
    fake_server.script(Reply(200, [], hold=release))
    with provider(fake_server, timeout=(1.0, 0.05)) as p:
        with pytest.raises(TransientProviderError) as caught:
            p.send_batch(letter(), recipients(1), batch_key="b-10")
    release.set()
    assert isinstance(caught.value, UncertainProviderError)


def test_unreadable_success_is_uncertain(fake_server):
    fake_server.script(Reply(200, [{"ErrorCode": 0, "MessageID": "x"}]))  # 1 result for 2
    with provider(fake_server) as p, pytest.raises(UncertainProviderError):
        p.send_batch(letter(), recipients(2), batch_key="b-11")


def test_refused_connection_is_transient_not_uncertain():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    p = PostmarkProvider(TOKEN, base_url=f"http://127.0.0.1:{port}", timeout=(1.0, 1.0))
    with p, pytest.raises(TransientProviderError) as caught:
        p.send_batch(letter(), recipients(1), batch_key="b-12")
    assert not isinstance(caught.value, UncertainProviderError)


def test_one_pooled_connection_across_batches(fake_server):
    fake_server.default = results([0, 0])
    with provider(fake_server) as p:
        for n in range(3):
            p.send_batch(letter(), recipients(2), batch_key=f"b-{n}")
    assert len(fake_server.requests) == 3
    assert len(fake_server.connections) == 1


def test_batch_limit_is_enforced(fake_server):
    from provider_samples import recipient

    with provider(fake_server) as p, pytest.raises(ValueError, match="500"):
        p.send_batch(letter(), [recipient(i) for i in range(501)], batch_key="b-13")
    assert fake_server.requests == []


def test_registry_builds_postmark_from_settings(tmp_path, monkeypatch):
    from digest.errors import ConfigurationError
    from digest.delivery.providers.registry import build
    from provider_samples import settings_for

    load_settings = partial(settings_for, monkeypatch, tmp_path)  # no .env, no stray DIGEST_*
    built = build(load_settings(provider="postmark", provider_token="pm-token",
                                postmark_stream="weekly-digest"))
    with built:
        assert isinstance(built, PostmarkProvider)
        assert (built.stream, built.base_url) == ("weekly-digest", "https://api.postmarkapp.com")
        assert built.session.headers["X-Postmark-Server-Token"] == "pm-token"
    with pytest.raises(ConfigurationError, match="DIGEST_PROVIDER_TOKEN"):
        build(load_settings(provider="postmark"))
    with pytest.raises(ConfigurationError, match="DIGEST_PROVIDER_URL"):
        build(load_settings(provider="postmark", provider_token="t",
                            provider_url="api.postmarkapp.com"))
