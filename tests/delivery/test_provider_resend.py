"""Resend against a loopback server answering as `/emails/batch` does in permissive mode;
every request is checked against the documented request shape (`provider_shapes`), and against
Resend's published OpenAPI document in `test_provider_specs.py`."""

from __future__ import annotations

import threading
from functools import partial

import pytest

from digest.errors import PermanentProviderError, TransientProviderError, UncertainProviderError
from digest.delivery.providers.resend import ResendProvider, idempotency_key
from fakeserver import Recorded, Reply, fake_server  # noqa: F401  (fixture)
from provider_samples import ISSUE, letter, recipients
from provider_shapes import check_shape

TOKEN = "re_test_key"


def provider(server, **kwargs) -> ResendProvider:
    kwargs.setdefault("timeout", (2.0, 2.0))
    return ResendProvider(TOKEN, base_url=server.url, **kwargs)


def permissive(bad: dict[int, str] | None = None):
    """Resend's permissive answer: ids for the created emails, errors by index for the rest."""
    bad = bad or {}

    def answer(request: Recorded) -> Reply:
        emails = request.json()
        data = [{"id": f"re-{i}"} for i in range(len(emails)) if i not in bad]
        body = {"data": data}
        if bad:
            body["errors"] = [{"index": i, "message": m} for i, m in bad.items()]
        return Reply(200, body, headers={"ratelimit-limit": "5", "ratelimit-remaining": "4",
                                         "ratelimit-reset": "1"})

    return answer


def test_batch_payload_headers_and_ids(fake_server):
    fake_server.script(permissive())
    batch = recipients(3)
    the_letter = letter()
    with provider(fake_server) as p:
        outcomes = p.send_batch(the_letter, batch, batch_key="2026-W47:batch:000001")

    assert [(o.status, o.message_id) for o in outcomes] == [("sent", "re-0"), ("sent", "re-1"),
                                                           ("sent", "re-2")]
    assert p.last_rate_limit.remaining == 4
    (req,) = fake_server.requests
    check_shape("resend", req)
    assert (req.method, req.route) == ("POST", "/emails/batch")
    assert req.header("authorization") == f"Bearer {TOKEN}"
    assert req.header("idempotency-key") == "2026-W47:batch:000001"
    assert req.header("x-batch-validation") == "permissive"
    assert req.header("user-agent").startswith("verdict-digest/")
    emails = req.json()
    for email, r in zip(emails, batch):
        html, text = the_letter.fill(r)
        assert (email["html"], email["text"]) == (html, text)
        assert email["headers"]["List-Unsubscribe"] == f"<{r.unsubscribe_url()}>"
        assert email["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert email["headers"]["X-Digest-Issue"] == ISSUE
        assert email["reply_to"] == ["editor@verdicts.example"]
        assert "tags" not in email and "attachments" not in email  # not allowed in batch
    assert emails[1]["to"] == ['"Ann & Bob <Co>" <reader1@inbox.example>']


def test_shape_check_catches_what_resend_refuses():
    """The check itself: no `to`, tags in a batch, more than 100 emails, a long key."""
    from provider_shapes import shape_problems

    headers = {"content-type": "application/json", "authorization": "Bearer x"}
    email = {"from": "a@example.com", "to": ["b@example.com"], "subject": "s", "text": "t"}

    def problems(body, **extra) -> list[str]:
        import json

        return shape_problems("resend", Recorded("POST", "/emails/batch", {**headers, **extra},
                                                 json.dumps(body).encode(), ("127.0.0.1", 1)))

    assert problems([email]) == []
    no_to = {k: v for k, v in email.items() if k != "to"}
    assert problems([no_to]) == ["0: 'to' is a required property"]
    assert any("tags" in p for p in problems([{**email, "tags": [{"name": "a", "value": "b"}]}]))
    assert any("too long" in p for p in problems([email] * 101))
    assert problems([email], **{"idempotency-key": "k" * 257}) == [
        "Idempotency-Key of 257 characters (1-256)"]


def test_errors_by_index_reject_only_those(fake_server):
    fake_server.script(permissive({1: "Invalid `to` field.", 3: "Invalid `to` field."}))
    with provider(fake_server) as p:
        outcomes = p.send_batch(letter(), recipients(5), batch_key="k-2")
    check_shape("resend", fake_server.requests[0])
    assert [(o.status, o.message_id) for o in outcomes] == [
        ("sent", "re-0"), ("rejected", None), ("sent", "re-2"), ("rejected", None),
        ("sent", "re-4")]
    assert "Invalid `to`" in outcomes[1].reason


def test_a_retry_repeats_key_and_payload_exactly(fake_server):
    """An uncertain batch is sent again with the same key; Resend needs the same payload."""
    fake_server.script(Reply(drop=True), permissive())
    batch, the_letter = recipients(2), letter()
    with provider(fake_server) as p:
        with pytest.raises(UncertainProviderError):
            p.send_batch(the_letter, batch, batch_key="k-3")
        outcomes = p.send_batch(the_letter, batch, batch_key="k-3")
    first, second = fake_server.requests
    assert first.header("idempotency-key") == second.header("idempotency-key") == "k-3"
    assert first.body == second.body
    assert [o.status for o in outcomes] == ["sent", "sent"]


def test_long_batch_keys_are_digested_stably():
    key = "x" * 300
    assert idempotency_key(key) == idempotency_key(key)
    assert len(idempotency_key(key)) <= 256 and idempotency_key("short") == "short"


def test_409_concurrent_is_transient_and_invalid_is_permanent(fake_server):
    fake_server.script(
        Reply(409, {"statusCode": 409, "name": "concurrent_idempotent_requests",
                    "message": "Same idempotency key used while original request is still in "
                               "progress."}),
        Reply(409, {"statusCode": 409, "name": "invalid_idempotent_request",
                    "message": "Same idempotency key used with a different request payload."}))
    with provider(fake_server) as p:
        with pytest.raises(TransientProviderError) as concurrent:
            p.send_batch(letter(), recipients(1), batch_key="k-4")
        with pytest.raises(PermanentProviderError, match="another payload"):
            p.send_batch(letter(), recipients(1), batch_key="k-4")
    assert not isinstance(concurrent.value, UncertainProviderError)


def test_429_reads_retry_after_and_rate_headers(fake_server):
    fake_server.script(Reply(429, {"statusCode": 429, "name": "rate_limit_exceeded",
                                   "message": "Too many requests."},
                             headers={"retry-after": "2", "ratelimit-limit": "2",
                                      "ratelimit-remaining": "0", "ratelimit-reset": "2"}))
    with provider(fake_server) as p, pytest.raises(TransientProviderError) as caught:
        p.send_batch(letter(), recipients(1), batch_key="k-5")
    assert caught.value.retry_after == 2
    assert caught.value.rate_limit.limit == 2 and caught.value.rate_limit.exhausted


def test_422_for_the_batch_is_permanent(fake_server):
    fake_server.script(Reply(422, {"statusCode": 422, "name": "validation_error",
                                   "message": "The `from` field is invalid."}))
    with provider(fake_server) as p, pytest.raises(PermanentProviderError, match="from"):
        p.send_batch(letter(), recipients(1), batch_key="k-6")


def test_500_is_transient(fake_server):
    fake_server.script(Reply(500, {"statusCode": 500, "name": "application_error",
                                   "message": "Something went wrong."}))
    with provider(fake_server) as p, pytest.raises(TransientProviderError) as caught:
        p.send_batch(letter(), recipients(1), batch_key="k-7")
    assert not isinstance(caught.value, UncertainProviderError)


def test_slow_answer_past_read_timeout_is_transient(fake_server):
    release = threading.Event()
    fake_server.script(Reply(200, {"data": []}, hold=release))
    with provider(fake_server, timeout=(1.0, 0.05)) as p:
        with pytest.raises(TransientProviderError) as caught:
            p.send_batch(letter(), recipients(1), batch_key="k-8")
    release.set()
    assert isinstance(caught.value, UncertainProviderError)


def test_hundred_is_the_limit(fake_server):
    from provider_samples import recipient

    fake_server.script(permissive())
    with provider(fake_server) as p:
        assert len(p.send_batch(letter(), [recipient(i) for i in range(100)],
                                batch_key="k-9")) == 100
        with pytest.raises(ValueError, match="100"):
            p.send_batch(letter(), [recipient(i) for i in range(101)], batch_key="k-10")
    check_shape("resend", fake_server.requests[0])


def test_registry_builds_resend_and_sendgrid(tmp_path, monkeypatch):
    from digest.delivery.providers.registry import build
    from digest.delivery.providers.sendgrid import SendGridProvider
    from provider_samples import settings_for

    load_settings = partial(settings_for, monkeypatch, tmp_path)  # no .env, no stray DIGEST_*
    with build(load_settings(provider="resend", provider_token="re_x")) as built:
        assert isinstance(built, ResendProvider) and built.idempotent
        assert built.session.headers["Authorization"] == "Bearer re_x"
    with build(load_settings(provider="sendgrid", provider_token="SG.x",
                             provider_url="https://api.eu.sendgrid.com")) as built:
        assert isinstance(built, SendGridProvider) and built.substitutes
        assert built.base_url == "https://api.eu.sendgrid.com"
