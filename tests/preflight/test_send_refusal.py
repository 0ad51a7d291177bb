"""A real send with placeholder settings is refused before anything is composed: exit 6, every
failure named with its setting and fix, no issue and no delivery in the database, and not one
request to the provider. `outbox` is never refused; `--test-to` runs with the warnings shown."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from delivery_support import REAL_IDENTITY, add_subscribers
from digest.cli import common
from digest.database.models import Delivery, Issue
from digest.preflight.identity import identity_checks
from digest.preflight.report import EXIT_PREFLIGHT
from digest.settings import load_settings
from factories import sample_comparisons, store
from fakeserver import Recorded, Reply, fake_server  # noqa: F401  (fixture)

WEEK = "2026-W47"


def postmark_accepts(request: Recorded) -> Reply:
    return Reply(200, [{"ErrorCode": 0, "Message": "OK", "To": m["To"], "MessageID": f"pm-{i}",
                        "SubmittedAt": "2026-11-23T09:00:00Z"}
                       for i, m in enumerate(request.json())])


@pytest.fixture
def real(env, engine, fake_server, monkeypatch):
    """Postmark at a loopback server, a real identity, a week with content and readers."""
    fake_server.default = postmark_accepts
    values = {"DIGEST_PROVIDER": "postmark", "DIGEST_PROVIDER_URL": fake_server.url,
              "DIGEST_PROVIDER_TOKEN": "pm-token", "DIGEST_WEBHOOK_SECRET": "hooks:pass",
              **REAL_IDENTITY}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    common.reset()
    with Session(engine, expire_on_commit=False) as session:
        store(session, sample_comparisons(3))
    add_subscribers(engine, 4)
    return fake_server


def counts(engine) -> tuple[int, int]:
    with Session(engine) as session:
        return (session.execute(select(func.count()).select_from(Issue)).scalar_one(),
                session.execute(select(func.count()).select_from(Delivery)).scalar_one())


PLACEHOLDERS = [
    ("DIGEST_FROM", None),  # the default, digest@localhost
    ("DIGEST_FROM", "Verdicts <digest@example.com>"),
    ("DIGEST_FROM", "digest@192.0.2.10"),
    ("DIGEST_FROM", "digest@news.verdicts.test"),
    ("DIGEST_BASE_URL", None),  # the default, http://127.0.0.1:8000
    ("DIGEST_BASE_URL", "https://digest.example.test"),
    ("DIGEST_BASE_URL", "http://digest.verdict-digest.net"),
    ("DIGEST_BASE_URL", "https://localhost:8443"),
    ("DIGEST_BASE_URL", "https://10.1.2.3"),
    ("DIGEST_POSTAL_ADDRESS", None),  # the sample
    ("DIGEST_POSTAL_ADDRESS", " "),
    ("DIGEST_SECRET_KEY", None),
    ("DIGEST_SECRET_KEY", "changeme"),
    ("DIGEST_PROVIDER_TOKEN", None),
]


@pytest.mark.parametrize("setting, value", PLACEHOLDERS,
                         ids=[f"{s}={v}" for s, v in PLACEHOLDERS])
def test_each_placeholder_refuses_the_send_before_composing(real, cli, engine, monkeypatch,
                                                            setting, value):
    if value is None:
        monkeypatch.delenv(setting, raising=False)
    else:
        monkeypatch.setenv(setting, value)
    common.reset()
    result = cli("send", "--week", WEEK)
    assert result.exit_code == EXIT_PREFLIGHT, result.output
    assert f"- {setting}:" in result.stderr and "Fix:" in result.stderr
    assert counts(engine) == (0, 0)
    assert real.requests == []


def test_every_failure_is_listed_at_once(real, cli, engine, monkeypatch):
    for setting in ("DIGEST_FROM", "DIGEST_BASE_URL", "DIGEST_POSTAL_ADDRESS"):
        monkeypatch.delenv(setting)
    common.reset()
    result = cli("send", "--week", WEEK)
    assert result.exit_code == EXIT_PREFLIGHT
    for setting in ("DIGEST_FROM", "DIGEST_BASE_URL", "DIGEST_POSTAL_ADDRESS"):
        assert f"- {setting}:" in result.stderr
    assert "3 preflight check(s) failed" in result.err
    assert counts(engine) == (0, 0) and real.requests == []


def test_worker_is_refused_too(real, cli, monkeypatch):
    monkeypatch.delenv("DIGEST_FROM")
    common.reset()
    result = cli("worker", "--week", WEEK)
    assert result.exit_code == EXIT_PREFLIGHT and "- DIGEST_FROM:" in result.stderr


def test_real_identity_sends(real, cli, engine):
    result = cli("send", "--week", WEEK, "--format", "json")
    assert result.exit_code == 0, result.output
    assert counts(engine) == (1, 4)
    assert len(real.requests) == 1
    body = real.requests[0].json()[0]
    assert body["From"] == REAL_IDENTITY["DIGEST_FROM"]
    assert REAL_IDENTITY["DIGEST_POSTAL_ADDRESS"] in " ".join(body["TextBody"].split())


def test_test_copy_runs_with_the_failures_as_warnings(real, cli, engine, monkeypatch):
    monkeypatch.delenv("DIGEST_POSTAL_ADDRESS")
    common.reset()
    result = cli("send", "--week", WEEK, "--test-to", "operator@example.com")
    assert result.exit_code == 0, result.output
    assert "warning: [fail] identity.postal-address" in result.err
    assert len(real.requests) == 1 and counts(engine)[1] == 0


def test_outbox_is_never_refused(cli, engine):
    with Session(engine, expire_on_commit=False) as session:
        store(session, sample_comparisons(1))
    add_subscribers(engine, 2)
    assert cli("send", "--week", WEEK).exit_code == 0  # the fixture's example.test identity


def test_missing_webhook_credential_is_a_warning_only():
    conf = load_settings(provider="resend", provider_token="re_x", secret_key="k" * 32,
                         from_=REAL_IDENTITY["DIGEST_FROM"],
                         base_url=REAL_IDENTITY["DIGEST_BASE_URL"],
                         postal_address=REAL_IDENTITY["DIGEST_POSTAL_ADDRESS"])
    checks = {c.name: c.status for c in identity_checks(conf)}
    assert checks["identity.webhook-credential"] == "warn"
    assert "fail" not in checks.values()


@pytest.mark.parametrize("host", ["digest.verdict-digest.net", "news.brand.co.uk"])
def test_public_domains_pass(host):
    conf = load_settings(provider="postmark", from_=f"d@{host}", base_url=f"https://{host}")
    checks = {c.name: c.status for c in identity_checks(conf)}
    assert checks["identity.from-domain"] == checks["identity.base-url"] == "ok"


@pytest.mark.parametrize("host", ["mail.local", "digest.invalid", "example.org", "my.example",
                                  "intranet", "news.nosuchtld"])
def test_reserved_and_unknown_names_fail(host):
    conf = load_settings(provider="postmark", from_=f"d@{host}", base_url=f"https://{host}")
    checks = {c.name: c.status for c in identity_checks(conf)}
    assert checks["identity.from-domain"] == checks["identity.base-url"] == "fail"
