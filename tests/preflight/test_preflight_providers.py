"""Each provider's credential check against a loopback server answering as the provider's
documentation says: a good key, a refused one (401/403), and one that cannot send. Only
read-only GETs are made; nothing is sent."""

from __future__ import annotations

import pytest

from digest.preflight.providers import provider_checks
from digest.settings import load_settings
from fakeserver import Recorded, Reply, fake_server  # noqa: F401  (fixture)

FROM = "Weekly Verdicts <digest@news.verdict-digest.net>"


def run(server, provider: str, token: str, **extra) -> dict[str, str]:
    conf = load_settings(provider=provider, provider_token=token, provider_url=server.url,
                         from_=FROM, **extra)
    checks = provider_checks(conf)
    assert all(r.method == "GET" for r in server.requests), [r.method for r in server.requests]
    return {c.name: c.status for c in checks}


def failed(result: dict[str, str]) -> set[str]:
    return {name for name, status in result.items() if status == "fail"}


# --- Postmark: GET /server, GET /message-streams/{stream} -----------------------------------------

def postmark(server_type: str = "Live", stream: str = "Broadcasts"):
    def answer(request: Recorded) -> Reply:
        if request.header("x-postmark-server-token") != "pm-good":
            return Reply(401, {"ErrorCode": 10, "Message": "The Server Token you provided in "
                                                           "the X-Postmark-Server-Token request "
                                                           "header was invalid."})
        if request.route == "/server":
            return Reply(200, {"ID": 1, "Name": "Verdicts", "DeliveryType": server_type,
                               "SmtpApiActivated": True})
        if request.route == "/message-streams/broadcast" and stream:
            return Reply(200, {"ID": "broadcast", "ServerID": 1, "Name": "Newsletter",
                               "MessageStreamType": stream, "ArchivedAt": None})
        return Reply(422, {"ErrorCode": 1226, "Message": "The message stream for the "
                                                         "provided 'ID' was not found."})
    return answer


def test_postmark_good_token(fake_server):
    fake_server.default = postmark()
    assert failed(run(fake_server, "postmark", "pm-good")) == set()
    assert [r.route for r in fake_server.requests] == ["/server", "/message-streams/broadcast"]


def test_postmark_bad_token(fake_server):
    fake_server.default = postmark()
    assert failed(run(fake_server, "postmark", "pm-wrong")) == {"provider.credentials"}


@pytest.mark.parametrize("server_type, stream", [("Sandbox", "Broadcasts"), ("Live", "")])
def test_postmark_token_that_cannot_send(fake_server, server_type, stream):
    """A Sandbox server accepts mail and delivers none; a missing broadcast stream refuses it."""
    fake_server.default = postmark(server_type, stream)
    assert failed(run(fake_server, "postmark", "pm-good")) == {"provider.can-send"}


# --- SendGrid: GET /v3/scopes ---------------------------------------------------------------------

def sendgrid(valid: bool = True):
    def answer(request: Recorded) -> Reply:
        scopes = {"Bearer SG.full": ["mail.send", "alerts.read", "user.profile.read"],
                  "Bearer SG.admin": ["mail.send", "whitelabel.read"],
                  "Bearer SG.stats": ["stats.read", "user.profile.read"]}
        found = scopes.get(request.header("authorization") or "")
        if found is None:
            return Reply(401, {"errors": [{"field": None, "message": "authorization required"}]})
        if request.route == "/v3/scopes":
            return Reply(200, {"scopes": found})
        if request.route == "/v3/whitelabel/domains" and "whitelabel.read" in found:
            return Reply(200, [{"id": 1, "domain": "verdict-digest.net", "subdomain": "em42",
                                "default": False, "valid": valid, "automatic_security": True}])
        return Reply(403, {"errors": [{"field": None, "message": "access forbidden"}]})
    return answer


@pytest.mark.parametrize("token, expected", [("SG.full", set()),
                                             ("SG.revoked", {"provider.credentials"}),
                                             ("SG.stats", {"provider.can-send"})])
def test_sendgrid(fake_server, token, expected):
    fake_server.default = sendgrid()
    assert failed(run(fake_server, "sendgrid", token)) == expected


@pytest.mark.parametrize("valid, expected", [(True, set()), (False, {"provider.domain"})])
def test_sendgrid_from_domain_authenticated_when_the_key_may_read_it(fake_server, valid,
                                                                     expected):
    fake_server.default = sendgrid(valid)
    assert failed(run(fake_server, "sendgrid", "SG.admin")) == expected
    assert fake_server.requests[-1].route == "/v3/whitelabel/domains"


# --- Mailgun: GET /v4/domains/{domain} ------------------------------------------------------------

def mailgun(state: str):
    def answer(request: Recorded) -> Reply:
        import base64

        expected = "Basic " + base64.b64encode(b"api:key-good").decode()
        if request.header("authorization") != expected:
            return Reply(401, "Forbidden")
        if request.route != "/v4/domains/news.verdict-digest.net":
            return Reply(404, {"message": "Domain not found"})
        return Reply(200, {"domain": {"name": "news.verdict-digest.net", "state": state,
                                      "is_disabled": False, "type": "custom"},
                           "receiving_dns_records": [], "sending_dns_records": []})
    return answer


@pytest.mark.parametrize("token, state, expected", [
    ("key-good", "active", set()),
    ("key-bad", "active", {"provider.credentials"}),
    ("key-good", "unverified", {"provider.can-send"})])
def test_mailgun(fake_server, token, state, expected):
    fake_server.default = mailgun(state)
    assert failed(run(fake_server, "mailgun", token,
                      mailgun_domain="news.verdict-digest.net")) == expected


def test_mailgun_unknown_domain_names_the_eu_host(fake_server):
    fake_server.default = mailgun("active")
    checks = provider_checks(load_settings(provider="mailgun", provider_token="key-good",
                                           provider_url=fake_server.url, from_=FROM,
                                           mailgun_domain="mg.elsewhere.net"))
    assert any(c.status == "fail" and "api.eu.mailgun.net" in c.saw for c in checks)


# --- Resend: GET /domains -------------------------------------------------------------------------

def resend(status: str = "verified", sending: str = "enabled"):
    def answer(request: Recorded) -> Reply:
        token = request.header("authorization")
        if request.header("user-agent") is None:
            return Reply(403, {"statusCode": 403, "name": "missing_user_agent"})
        if token == "Bearer re_send_only":
            return Reply(401, {"statusCode": 401, "name": "restricted_api_key",
                               "message": "This API key is restricted to only send emails"})
        if token != "Bearer re_full":
            return Reply(403, {"statusCode": 403, "name": "validation_error",
                               "message": "API key is invalid"})
        return Reply(200, {"object": "list", "has_more": False, "data": [
            {"id": "d91cd9bd", "name": "news.verdict-digest.net", "status": status,
             "created_at": "2026-11-01 10:00:00+00", "region": "eu-west-1",
             "capabilities": {"sending": sending, "receiving": "disabled"}}]})
    return answer


@pytest.mark.parametrize("token, status, sending, expected", [
    ("re_full", "verified", "enabled", set()),
    ("re_revoked", "verified", "enabled", {"provider.credentials"}),
    ("re_full", "pending", "enabled", {"provider.can-send"}),
    ("re_full", "verified", "disabled", {"provider.can-send"})])
def test_resend(fake_server, token, status, sending, expected):
    fake_server.default = resend(status, sending)
    assert failed(run(fake_server, "resend", token)) == expected


def test_resend_sending_only_key_is_a_warning(fake_server):
    fake_server.default = resend()
    result = run(fake_server, "resend", "re_send_only")
    assert failed(result) == set() and result["provider.domain"] == "warn"


def test_unreachable_provider_is_a_failure(fake_server):
    url = fake_server.url
    fake_server.stop()
    checks = provider_checks(load_settings(provider="sendgrid", provider_token="SG.x",
                                           provider_url=url, from_=FROM))
    assert [(c.name, c.status) for c in checks] == [("provider.credentials", "fail")]
