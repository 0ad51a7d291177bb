"""Mailgun against a loopback server answering as `/v3/{domain}/messages` does; the multipart
form is parsed back and Mailgun's `%recipient.x%` substitution replayed on it."""

from __future__ import annotations

import base64
import json
import re
import threading
from functools import partial

import pytest

from digest.errors import PermanentProviderError, TransientProviderError, UncertainProviderError
from digest.delivery.providers.mailgun import MailgunProvider
from fakeserver import Reply, fake_server  # noqa: F401  (fixture)
from provider_samples import ISSUE, letter, recipient, recipients

TOKEN = "key-abc"
DOMAIN = "mg.verdicts.example"
QUEUED = Reply(200, {"id": "<20261123090000.1@mg.verdicts.example>",
                     "message": "Queued. Thank you."})
_VAR = re.compile(r"%recipient\.([a-z0-9_]+)%")


def provider(server, **kwargs) -> MailgunProvider:
    kwargs.setdefault("timeout", (2.0, 2.0))
    return MailgunProvider(TOKEN, domain=DOMAIN, base_url=server.url, **kwargs)


def for_recipient(template: str, variables: dict[str, str]) -> str:
    """What Mailgun does for one recipient: every %recipient.key% becomes its value."""
    return _VAR.sub(lambda m: variables[m.group(1)], template)


def test_form_shape_and_per_recipient_substitution(fake_server):
    fake_server.script(QUEUED)
    batch = recipients(3)
    the_letter = letter()
    with provider(fake_server) as p:
        outcomes = p.send_batch(the_letter, batch, batch_key="b-1")

    assert [o.status for o in outcomes] == ["sent"] * 3
    assert {o.message_id for o in outcomes} == {"<20261123090000.1@mg.verdicts.example>"}
    (req,) = fake_server.requests
    assert (req.method, req.route) == ("POST", f"/v3/{DOMAIN}/messages")
    assert req.header("content-type").startswith("multipart/form-data; boundary=")
    assert req.header("authorization") == "Basic " + base64.b64encode(
        f"api:{TOKEN}".encode()).decode()
    form = req.form_dict()
    assert form["to"] == ["reader0@inbox.example", '"Ann & Bob <Co>" <reader1@inbox.example>',
                          "=?utf-8?q?Zo=C3=AB?= <reader2@inbox.example>"]
    assert len(form["html"]) == len(form["text"]) == 1  # the body travels once
    assert form["v:issue"] == [ISSUE]
    assert form["h:X-Digest-Issue"] == [ISSUE]
    assert form["h:List-Unsubscribe-Post"] == ["List-Unsubscribe=One-Click"]
    assert form["h:List-Id"] == ["Weekly Verdicts <weekly.verdicts.example>"]
    assert form["h:Reply-To"] == ["editor@verdicts.example"]
    variables = json.loads(form["recipient-variables"][0])
    assert list(variables) == [r.email for r in batch]
    for r in batch:
        mine = variables[r.email]
        expected_html, expected_text = the_letter.fill(r)
        assert for_recipient(form["html"][0], mine) == expected_html
        assert for_recipient(form["text"][0], mine) == expected_text
        assert for_recipient(form["h:List-Unsubscribe"][0], mine) == f"<{r.unsubscribe_url()}>"


def test_recipient_variables_even_without_placeholders(fake_server):
    """Without recipient-variables Mailgun shows every recipient the whole To list."""
    fake_server.script(QUEUED)
    plain = letter(html="<p>No placeholders</p>", text="No placeholders", bulk=False)
    with provider(fake_server) as p:
        p.send_batch(plain, recipients(2), batch_key="b-2")
    form = fake_server.requests[0].form_dict()
    assert json.loads(form["recipient-variables"][0]) == {"reader0@inbox.example": {},
                                                          "reader1@inbox.example": {}}


def test_duplicate_address_in_a_batch_is_refused_before_sending(fake_server):
    with provider(fake_server) as p, pytest.raises(ValueError, match="twice"):
        p.send_batch(letter(), [recipient(1), recipient(1)], batch_key="b-3")
    assert fake_server.requests == []


def test_400_is_permanent(fake_server):
    fake_server.script(Reply(400, {"message": "to parameter is not a valid address. please "
                                              "check documentation"}))
    with provider(fake_server) as p, pytest.raises(PermanentProviderError, match="valid address"):
        p.send_batch(letter(), recipients(2), batch_key="b-4")


def test_404_names_the_domain_and_region(fake_server):
    fake_server.script(Reply(404, {"message": "Domain not found: mg.verdicts.example"}))
    with provider(fake_server) as p, pytest.raises(PermanentProviderError, match="api.eu"):
        p.send_batch(letter(), recipients(1), batch_key="b-5")


def test_429_carries_retry_after(fake_server):
    fake_server.script(Reply(429, {"message": "Too many requests"}, headers={"Retry-After": "11"}))
    with provider(fake_server) as p, pytest.raises(TransientProviderError) as caught:
        p.send_batch(letter(), recipients(1), batch_key="b-6")
    assert caught.value.retry_after == 11


def test_500_is_transient(fake_server):
    fake_server.script(Reply(502, "<html>bad gateway</html>"))
    with provider(fake_server) as p, pytest.raises(TransientProviderError) as caught:
        p.send_batch(letter(), recipients(1), batch_key="b-7")
    assert caught.value.status == 502 and not isinstance(caught.value, UncertainProviderError)


def test_dropped_connection_is_uncertain(fake_server):
    fake_server.script(Reply(drop=True))
    with provider(fake_server) as p, pytest.raises(UncertainProviderError):
        p.send_batch(letter(), recipients(2), batch_key="b-8")


def test_slow_answer_past_read_timeout_is_transient(fake_server):
    release = threading.Event()
    fake_server.script(Reply(200, {"id": "x"}, hold=release))
    with provider(fake_server, timeout=(1.0, 0.05)) as p:
        with pytest.raises(TransientProviderError) as caught:
            p.send_batch(letter(), recipients(1), batch_key="b-9")
    release.set()
    assert isinstance(caught.value, UncertainProviderError)


def test_registry_builds_mailgun_and_names_what_is_missing(tmp_path, monkeypatch):
    from digest.errors import ConfigurationError
    from digest.delivery.providers.registry import build
    from provider_samples import settings_for

    load_settings = partial(settings_for, monkeypatch, tmp_path)  # no .env, no stray DIGEST_*
    with pytest.raises(ConfigurationError, match="DIGEST_PROVIDER_TOKEN"):
        build(load_settings(provider="mailgun", mailgun_domain=DOMAIN))
    with pytest.raises(ConfigurationError, match="DIGEST_MAILGUN_DOMAIN"):
        build(load_settings(provider="mailgun", provider_token="key"))
    built = build(load_settings(provider="mailgun", provider_token="key", mailgun_domain=DOMAIN,
                                provider_url="https://api.eu.mailgun.net/"))
    with built:
        assert isinstance(built, MailgunProvider)
        assert (built.domain, built.base_url) == (DOMAIN, "https://api.eu.mailgun.net")
