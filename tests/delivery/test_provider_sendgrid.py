"""SendGrid against a loopback server answering as `/v3/mail/send` does (202, X-Message-Id);
every request is checked against the documented request shape (`provider_shapes`), and against
SendGrid's published OpenAPI document in `test_provider_specs.py`."""

from __future__ import annotations

import threading

import pytest

from digest.errors import PermanentProviderError, TransientProviderError, UncertainProviderError
from digest.delivery.providers.sendgrid import SendGridProvider
from fakeserver import Reply, fake_server  # noqa: F401  (fixture)
from provider_samples import ISSUE, letter, recipient, recipients
from provider_shapes import check_shape, shape_problems

TOKEN = "SG.key"
ACCEPTED = Reply(202, b"", headers={"X-Message-Id": "sg-batch-1", "X-RateLimit-Limit": "600",
                                    "X-RateLimit-Remaining": "599",
                                    "X-RateLimit-Reset": "1795424460"})


def provider(server, **kwargs) -> SendGridProvider:
    kwargs.setdefault("timeout", (2.0, 2.0))
    return SendGridProvider(TOKEN, base_url=server.url, **kwargs)


def substitute(content: str, substitutions: dict[str, str]) -> str:
    """What SendGrid does with `substitutions`: literal replacement of each key."""
    for key, value in substitutions.items():
        content = content.replace(key, value)
    return content


def test_body_travels_once_and_substitutions_rebuild_each_message(fake_server):
    fake_server.script(ACCEPTED)
    batch = recipients(3) + [recipient(3, name='Quote " Back\\slash \u2028 \x07')]
    the_letter = letter()
    with provider(fake_server, clock=lambda: 1795424400.0) as p:
        outcomes = p.send_batch(the_letter, batch, batch_key="b-1")

    assert outcomes == [outcomes[0]] * 4 and outcomes[0].status == "sent"
    assert outcomes[0].message_id == "sg-batch-1"
    assert p.last_rate_limit.remaining == 599 and p.last_rate_limit.reset_after == 60
    (req,) = fake_server.requests
    check_shape("sendgrid", req)
    assert req.header("authorization") == f"Bearer {TOKEN}"
    payload = req.json()
    text, html = payload["content"]
    assert (text["type"], html["type"]) == ("text/plain", "text/html")
    assert req.body.count(b"This week") == 2  # once in text, once in HTML: not per recipient
    assert payload["from"] == {"email": "digest@verdicts.example", "name": "Weekly Verdicts"}
    assert payload["reply_to"] == {"email": "editor@verdicts.example"}
    assert payload["headers"] == {"X-Digest-Issue": ISSUE,
                                  "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                                  "List-Id": "Weekly Verdicts <weekly.verdicts.example>",
                                  "Precedence": "bulk"}
    assert len(payload["personalizations"]) == 4
    for person, r in zip(payload["personalizations"], batch):
        assert person["to"] == [{"email": r.email, **({"name": r.name} if r.name else {})}]
        assert person["custom_args"] == {"issue": ISSUE, "delivery": str(r.delivery_id)}
        assert person["headers"] == {"List-Unsubscribe": f"<{r.unsubscribe_url()}>"}
        assert all(isinstance(v, str) for v in person["substitutions"].values())
        expected_html, expected_text = the_letter.fill(r)
        assert substitute(html["value"], person["substitutions"]) == expected_html
        assert substitute(text["value"], person["substitutions"]) == expected_text


def test_single_recipient_keeps_every_header(fake_server):
    fake_server.script(ACCEPTED)
    with provider(fake_server) as p:
        p.send_batch(letter(), [recipient(5)], batch_key="b-2")
    (req,) = fake_server.requests
    check_shape("sendgrid", req)
    payload = req.json()
    headers = {**payload.get("headers", {}), **payload["personalizations"][0].get("headers", {})}
    assert headers["List-Unsubscribe"] == "<https://verdicts.example/u/tok5?a=1&b=2>"
    assert headers["X-Digest-Issue"] == ISSUE


def test_shape_check_catches_a_malformed_body():
    """The check itself: a request SendGrid would refuse does not pass."""
    from fakeserver import Recorded

    bad = Recorded("POST", "/v3/mail/send", {"content-type": "application/json",
                                             "authorization": "Bearer x"},
                   b'{"personalizations": [{"to": "someone"}], "from": {"email": "a@b.c"}}',
                   ("127.0.0.1", 1))
    assert [p.split(":")[0] for p in shape_problems("sendgrid", bad)] == ["personalizations/0/to"]
    missing_from = Recorded("POST", "/v3/mail/send", bad.headers,
                            b'{"personalizations": [{"to": [{"email": "a@b.c"}]}]}', bad.peer)
    assert any("'from' is a required property" in p
               for p in shape_problems("sendgrid", missing_from))


def test_400_naming_personalizations_rejects_only_them(fake_server):
    fake_server.script(Reply(400, {"errors": [
        {"message": "Does not contain a valid address.",
         "field": "personalizations.1.to.0.email", "help": "http://sendgrid.example/help"}]}))
    with provider(fake_server) as p:
        outcomes = p.send_batch(letter(), recipients(3), batch_key="b-3")
    assert [o.status for o in outcomes] == ["transient", "rejected", "transient"]
    assert "valid address" in outcomes[1].reason


def test_400_about_the_whole_message_is_permanent(fake_server):
    fake_server.script(Reply(400, {"errors": [
        {"message": "The from address does not match a verified Sender Identity.",
         "field": "from", "help": None}]}))
    with provider(fake_server) as p, pytest.raises(PermanentProviderError, match="Sender"):
        p.send_batch(letter(), recipients(2), batch_key="b-4")


def test_429_uses_retry_after_then_rate_headers(fake_server):
    fake_server.script(
        Reply(429, {"errors": [{"message": "too many requests"}]}, headers={"Retry-After": "3"}),
        Reply(429, {"errors": [{"message": "too many requests"}]},
              headers={"X-RateLimit-Limit": "600", "X-RateLimit-Remaining": "0",
                       "X-RateLimit-Reset": "1795424412"}))
    with provider(fake_server, clock=lambda: 1795424400.0) as p:
        with pytest.raises(TransientProviderError) as first:
            p.send_batch(letter(), recipients(1), batch_key="b-5")
        with pytest.raises(TransientProviderError) as second:
            p.send_batch(letter(), recipients(1), batch_key="b-5")
    assert first.value.retry_after == 3
    assert second.value.retry_after == 12
    assert second.value.rate_limit.exhausted


def test_500_is_transient(fake_server):
    fake_server.script(Reply(500, {"errors": [{"message": "internal"}]}))
    with provider(fake_server) as p, pytest.raises(TransientProviderError) as caught:
        p.send_batch(letter(), recipients(2), batch_key="b-6")
    assert not isinstance(caught.value, UncertainProviderError)


def test_dropped_connection_is_uncertain(fake_server):
    fake_server.script(Reply(drop=True))
    with provider(fake_server) as p, pytest.raises(UncertainProviderError):
        p.send_batch(letter(), recipients(2), batch_key="b-7")


def test_slow_answer_past_read_timeout_is_transient(fake_server):
    release = threading.Event()
    fake_server.script(Reply(202, b"", hold=release))
    with provider(fake_server, timeout=(1.0, 0.05)) as p:
        with pytest.raises(TransientProviderError) as caught:
            p.send_batch(letter(), recipients(1), batch_key="b-8")
    release.set()
    assert isinstance(caught.value, UncertainProviderError)


def test_thousand_personalizations_in_one_call(fake_server):
    fake_server.script(ACCEPTED)
    batch = [recipient(i) for i in range(1000)]
    with provider(fake_server) as p:
        outcomes = p.send_batch(letter(), batch, batch_key="b-9")
    assert len(outcomes) == 1000 and {o.status for o in outcomes} == {"sent"}
    (req,) = fake_server.requests
    check_shape("sendgrid", req)
    assert len(req.json()["personalizations"]) == 1000
