"""A schedule firing with a real provider and placeholder settings: refused by the preflight,
the week recorded as `blocked` with the reasons (never an unexplained `missed`), nothing
composed or sent; a later firing before the deadline, with the settings fixed, sends it once.
The provider is a real `Provider` subclass that records its calls (no network)."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlmodel import Session

from delivery_support import REAL_IDENTITY, FakeClock, RecordingProvider, add_subscribers
from digest.database.models import Delivery
from digest.edition.compose import load_issue, rendered_with
from digest.preflight.report import EXIT_PREFLIGHT
from factories import sample_comparisons, store
from schedules.weekly import fire

UTC = dt.timezone.utc
MONDAY = dt.datetime(2026, 11, 23, 8, 0, tzinfo=UTC)  # 09:00 in Berlin: sends 2026-W47
KEY = "2026-W47"


@pytest.fixture
def week(engine, settings):
    with Session(engine, expire_on_commit=False) as session:
        store(session, sample_comparisons(2))
    add_subscribers(engine, 5)


def postmark(settings, **identity):
    """The test settings sending through postmark, with the given identity fields."""
    return settings.model_copy(update={"provider": "postmark",
                                       "provider_token": SecretStr("pm-token"), **identity})


FIXED = {"from_": REAL_IDENTITY["DIGEST_FROM"], "base_url": REAL_IDENTITY["DIGEST_BASE_URL"],
         "postal_address": REAL_IDENTITY["DIGEST_POSTAL_ADDRESS"]}


def firing(conf, engine, now: dt.datetime, provider: RecordingProvider):
    clock = FakeClock(now)
    return fire(conf, engine, scheduled_for=MONDAY, now=now, clock=clock, sleep=clock.sleep,
                provider_factory=lambda _conf: provider)


def deliveries(engine) -> int:
    with Session(engine) as session:
        return session.execute(select(func.count()).select_from(Delivery)).scalar_one()


def test_refused_then_fixed_sends_once(engine, settings, week, cli, caplog):
    provider = RecordingProvider(batch_limit=10)
    broken = postmark(settings)  # digest@localhost, the sample postal address, example.test

    with caplog.at_level("INFO", logger="schedules.weekly"):
        outcome = firing(broken, engine, MONDAY, provider)
    assert [r.levelname for r in caplog.records] == ["ERROR"]
    assert caplog.records[0].getMessage().startswith("2026-W47: blocked · preflight refused")
    assert (outcome.result, outcome.exit_code, outcome.recorded) == ("blocked", EXIT_PREFLIGHT,
                                                                     True)
    with Session(engine) as session:
        stored = load_issue(session, KEY)
        assert stored.status == "blocked" and stored.html == ""
        for setting in ("DIGEST_FROM", "DIGEST_BASE_URL", "DIGEST_POSTAL_ADDRESS"):
            assert setting in stored.status_reason
    assert deliveries(engine) == 0 and provider.calls == []

    status = cli("status", "--week", KEY)
    assert status.exit_code == 0 and f"{KEY}: blocked" in status.out
    assert "DIGEST_POSTAL_ADDRESS" in status.out

    # An hour later, still broken: still blocked, still nothing.
    again = firing(broken, engine, MONDAY + dt.timedelta(hours=1), provider)
    assert again.result == "blocked" and provider.calls == []

    # Fixed before the deadline (the end of Monday): the next firing sends, once.
    fixed = postmark(settings, **FIXED)
    sent = firing(fixed, engine, MONDAY + dt.timedelta(hours=5), provider)
    assert (sent.result, sent.exit_code) == ("sent", 0), sent.message
    assert sorted(e for call in provider.calls for e in call.emails) == [
        f"reader{i}@example.com" for i in range(1, 6)]
    with Session(engine) as session:
        stored = load_issue(session, KEY)
        assert stored.status == "sent"
        assert rendered_with(stored)["base_url"] == REAL_IDENTITY["DIGEST_BASE_URL"]
        assert "digest.verdict-digest.net" in stored.html and "Torstrasse 19" in stored.html
        assert "digest.example.test" not in stored.html and "Example Street" not in stored.html

    later = firing(fixed, engine, MONDAY + dt.timedelta(hours=6), provider)
    assert later.result == "already-sent" and len(provider.calls) == 1
    assert deliveries(engine) == 5


def test_blocked_until_the_deadline_becomes_missed_with_the_reason(engine, settings, week):
    provider = RecordingProvider()
    assert firing(postmark(settings), engine, MONDAY, provider).result == "blocked"
    late = firing(postmark(settings, **FIXED), engine, MONDAY + dt.timedelta(days=1), provider)
    assert (late.result, late.exit_code, late.recorded) == ("missed", 7, True)
    with Session(engine) as session:
        stored = load_issue(session, KEY)
    assert stored.status == "missed" and "it was blocked: preflight refused" in stored.status_reason
    assert provider.calls == []


def test_outbox_firing_is_not_checked(engine, settings, week):
    outcome = firing(settings, engine, MONDAY, RecordingProvider())
    assert outcome.result == "sent"
