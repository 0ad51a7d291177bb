"""The weekly job against a real database (SQLite, and PostgreSQL when configured) and the real
outbox provider, with the clock passed in: on time and late within the deadline it sends; past
the deadline it records `missed` and sends nothing, ever; a skipped week is followed by an issue
with only the new comparisons; a second firing reports the week already sent or being sent."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select, update
from sqlmodel import Session

from delivery_support import FakeClock, add_subscribers
from digest.delivery import ledger
from digest.edition.compose import compose_issue, issue_comparison_ids, load_issue
from digest.database import session_scope, utcnow
from digest.errors import ConfigurationError
from digest.database.models import Delivery, Issue, IssueLink
from digest.edition.weeks import last_complete_edition
from factories import sample_comparisons, store
from schedules import weekly
from schedules.weekly import fire

UTC = dt.timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")


def berlin(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=BERLIN)


MONDAY_W48 = berlin(2026, 11, 23, 9, 0)  # sends 2026-W47 (16-22 November)
READERS = 6


@pytest.fixture
def readers(engine):
    return add_subscribers(engine, READERS)


def publish(engine, week_monday: dt.datetime, n: int, prefix: str) -> list[int]:
    """`n` comparisons published on the Tuesday of the week starting `week_monday`."""
    start = (week_monday + dt.timedelta(days=1, hours=1)).astimezone(UTC)
    with Session(engine, expire_on_commit=False) as session:
        return [c.id for c in store(session, sample_comparisons(n, start=start, prefix=prefix))]


def run(settings, engine, at: dt.datetime, now: dt.datetime | None = None, **kwargs):
    now = now or at
    clock = FakeClock(now)
    return fire(settings, engine, scheduled_for=at, now=now, clock=clock, sleep=clock.sleep,
                **kwargs)


def issue(engine, key: str) -> Issue:
    with Session(engine) as session:
        return load_issue(session, key)


def outbox(settings, key: str) -> list[Path]:
    return sorted((Path(settings.outbox_dir) / key).glob("*.eml"))


def index_lines(settings, key: str) -> list[dict]:
    path = Path(settings.outbox_dir) / key / "index.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def delivery_count(engine, status: str | None = None) -> int:
    query = select(func.count()).select_from(Delivery)
    if status:
        query = query.where(Delivery.status == status)
    with Session(engine) as session:
        return session.execute(query).scalar_one()


# --- on time, late, too late --------------------------------------------------------------------

def test_on_time_firing_sends_everyone_once_and_a_second_firing_is_a_no_op(engine, settings,
                                                                          readers):
    publish(engine, berlin(2026, 11, 16), 3, "w47-")
    outcome = run(settings, engine, MONDAY_W48)
    assert (outcome.result, outcome.exit_code, outcome.recorded) == ("sent", 0, True)
    assert outcome.edition == "2026-W47"
    assert issue(engine, "2026-W47").status == "sent"
    assert len(outbox(settings, "2026-W47")) == READERS
    again = run(settings, engine, MONDAY_W48, MONDAY_W48 + dt.timedelta(minutes=5))
    assert (again.result, again.exit_code) == ("already-sent", 0)
    assert "already sent at Mon 2026-11-23 09:00" in again.message
    assert len(index_lines(settings, "2026-W47")) == READERS  # nothing went out twice
    assert delivery_count(engine, "sent") == READERS


def test_a_late_start_within_the_deadline_sends(engine, settings, readers):
    publish(engine, berlin(2026, 11, 16), 2, "w47-")
    late = berlin(2026, 11, 23, 23, 30)  # the scheduler was down until late that evening
    outcome = run(settings, engine, MONDAY_W48, late)
    assert (outcome.result, outcome.exit_code) == ("sent", 0)
    assert len(outbox(settings, "2026-W47")) == READERS


@pytest.mark.parametrize("now", [berlin(2026, 11, 24, 0, 0), berlin(2026, 11, 26, 14, 0),
                                 berlin(2026, 12, 29, 9, 0)],
                         ids=["at-the-deadline", "days-late", "restored-a-month-later"])
def test_past_the_deadline_records_missed_and_sends_nothing(engine, settings, readers, now):
    publish(engine, berlin(2026, 11, 16), 3, "w47-")
    outcome = run(settings, engine, MONDAY_W48, now)
    assert (outcome.result, outcome.exit_code, outcome.recorded) == ("missed", 7, True)
    stored = issue(engine, "2026-W47")
    assert stored.status == "missed"
    assert "not started by its deadline Tue 2026-11-24 00:00 CET" in stored.status_reason
    assert stored.html == "" and stored.sent_at is None
    assert delivery_count(engine) == 0 and not Path(settings.outbox_dir).exists()
    again = run(settings, engine, MONDAY_W48, now + dt.timedelta(hours=1))
    assert (again.result, again.exit_code, again.recorded) == ("missed", 0, False)
    assert again.message.startswith("already recorded as missed")
    # A firing inside the deadline (a clock that was wrong) cannot bring it back either.
    inside = run(settings, engine, MONDAY_W48, MONDAY_W48 + dt.timedelta(hours=1))
    assert inside.result == "missed" and delivery_count(engine) == 0


def test_a_restored_machine_skips_last_week_and_sends_this_week_only_the_new(engine, settings,
                                                                           readers):
    """A snapshot taken before the W47 send is restored on Thursday: its scheduler fires the
    overdue Monday run, which is recorded missed; next Monday sends W48 with W48's news only."""
    w47 = publish(engine, berlin(2026, 11, 16), 2, "w47-")
    w48 = publish(engine, berlin(2026, 11, 23), 2, "w48-")
    restored = run(settings, engine, MONDAY_W48, berlin(2026, 11, 26, 10, 0))
    assert restored.result == "missed" and not Path(settings.outbox_dir).exists()
    monday = run(settings, engine, berlin(2026, 11, 30, 9, 0))
    assert (monday.result, monday.edition) == ("sent", "2026-W48")
    with Session(engine) as session:
        carried = issue_comparison_ids(session, load_issue(session, "2026-W48"))
    assert carried == w48 and not set(carried) & set(w47)
    assert len(outbox(settings, "2026-W48")) == READERS and not outbox(settings, "2026-W47")


def test_a_composed_issue_that_never_started_is_missed_past_the_deadline(engine, settings,
                                                                         readers):
    publish(engine, berlin(2026, 11, 16), 2, "w47-")
    with session_scope(engine) as session:  # composed (by a preview or a crashed run), not sent
        compose_issue(session, settings, "2026-W47", now=MONDAY_W48)
    outcome = run(settings, engine, MONDAY_W48, berlin(2026, 11, 25, 9, 0))
    assert (outcome.result, outcome.recorded) == ("missed", True)
    stored = issue(engine, "2026-W47")
    assert stored.status == "missed" and stored.html  # frozen content kept, never sent
    assert delivery_count(engine) == 0


def test_a_paused_send_is_resumed_in_time_but_left_to_the_operator_past_the_deadline(
        engine, settings, readers):
    publish(engine, berlin(2026, 11, 16), 2, "w47-")
    with session_scope(engine) as session:
        stored = compose_issue(session, settings, "2026-W47", now=MONDAY_W48)
        session.flush()
        session.execute(update(Issue).where(Issue.id == stored.id)
                        .values(status="paused", status_reason="provider unavailable",
                                send_started_at=MONDAY_W48))
    late = run(settings, engine, MONDAY_W48, berlin(2026, 11, 24, 8, 0))
    assert (late.result, late.exit_code) == ("incomplete", 4)
    assert "paused: provider unavailable" in late.message
    assert "`digest send --week 2026-W47` resumes it" in late.message
    assert issue(engine, "2026-W47").status == "paused" and delivery_count(engine) == 0
    in_time = run(settings, engine, MONDAY_W48, berlin(2026, 11, 23, 12, 0))
    assert (in_time.result, in_time.exit_code) == ("sent", 0)
    assert len(outbox(settings, "2026-W47")) == READERS


def test_another_live_sender_means_being_sent_and_success(engine, settings, readers):
    publish(engine, berlin(2026, 11, 16), 2, "w47-")
    with session_scope(engine) as session:
        stored = compose_issue(session, settings, "2026-W47", now=MONDAY_W48)
        session.flush()
        assert ledger.acquire_issue(session, stored.id, sender="other-host:4242:abcd",
                                    now=MONDAY_W48, lease=dt.timedelta(hours=16)).acquired
    outcome = run(settings, engine, MONDAY_W48, MONDAY_W48 + dt.timedelta(seconds=2))
    assert (outcome.result, outcome.exit_code) == ("being-sent", 0)
    assert "already being sent by other-host:4242:abcd" in outcome.message
    assert delivery_count(engine) == 0
    # Past the deadline, with that sender still holding it, it is reported, not recorded missed.
    late = run(settings, engine, MONDAY_W48, berlin(2026, 11, 24, 0, 1))
    assert (late.result, late.exit_code) == ("being-sent", 0)
    assert issue(engine, "2026-W47").status == "sending" and delivery_count(engine) == 0


def test_a_send_whose_sender_died_is_left_to_the_operator_past_the_deadline(engine, settings,
                                                                            readers):
    publish(engine, berlin(2026, 11, 16), 1, "w47-")
    with session_scope(engine) as session:
        stored = compose_issue(session, settings, "2026-W47", now=MONDAY_W48)
        session.flush()
        ledger.acquire_issue(session, stored.id, sender="other-host:4242:abcd", now=MONDAY_W48,
                             lease=dt.timedelta(minutes=5))
    outcome = run(settings, engine, MONDAY_W48, berlin(2026, 11, 24, 9, 0))
    assert (outcome.result, outcome.exit_code) == ("incomplete", 4)
    assert outcome.message.startswith("sending, its sender gone; past its deadline")
    assert issue(engine, "2026-W47").status == "sending" and delivery_count(engine) == 0


# --- skipped weeks --------------------------------------------------------------------------------

def test_a_skipped_week_then_a_week_with_content_sends_only_the_new(engine, settings, readers):
    w46 = publish(engine, berlin(2026, 11, 9), 2, "w46-")
    first = run(settings, engine, berlin(2026, 11, 16, 9, 0))
    assert (first.result, first.edition) == ("sent", "2026-W46")
    quiet = run(settings, engine, MONDAY_W48)
    assert (quiet.result, quiet.exit_code, quiet.recorded) == ("skipped", 0, True)
    assert "no new comparisons were published 16–22 November 2026" in quiet.message
    assert issue(engine, "2026-W47").status == "skipped" and not outbox(settings, "2026-W47")
    w48 = publish(engine, berlin(2026, 11, 23), 3, "w48-")
    third = run(settings, engine, berlin(2026, 11, 30, 9, 0))
    assert (third.result, third.edition) == ("sent", "2026-W48")
    with Session(engine) as session:
        stored = load_issue(session, "2026-W48")
        assert issue_comparison_ids(session, stored) == w48
        # The email's links go through the click redirect; where they lead is stored with it.
        targets = " ".join(session.execute(select(IssueLink.url)
                                           .where(IssueLink.issue_id == stored.id)).scalars())
    for slug in ("w48-tool-0-vs-w48-tool-1", "w48-tool-4-vs-w48-tool-5"):
        assert f"/compare/{slug}" in targets
    assert "w46-tool" not in targets and not set(w46) & set(w48)
    assert len(outbox(settings, "2026-W48")) == READERS
    assert delivery_count(engine, "sent") == 2 * READERS
    skipped_again = run(settings, engine, MONDAY_W48, MONDAY_W48 + dt.timedelta(hours=1))
    assert (skipped_again.result, skipped_again.recorded) == ("skipped", False)


# --- nothing happens ------------------------------------------------------------------------------

def test_a_firing_before_its_time_does_nothing(engine, settings, readers):
    publish(engine, berlin(2026, 11, 16), 1, "w47-")
    outcome = run(settings, engine, MONDAY_W48, MONDAY_W48 - dt.timedelta(minutes=1))
    assert (outcome.result, outcome.exit_code) == ("too-early", 0)
    assert "nothing happens before Mon 2026-11-23 09:00 CET" in outcome.message
    assert issue(engine, "2026-W47") is None


def test_a_provider_configuration_error_records_nothing(engine, settings, readers):
    publish(engine, berlin(2026, 11, 16), 1, "w47-")

    def broken(_settings):
        raise ConfigurationError("provider 'postmark' needs an API key: set DIGEST_PROVIDER_TOKEN")

    with pytest.raises(ConfigurationError, match="DIGEST_PROVIDER_TOKEN"):
        run(settings, engine, MONDAY_W48, provider_factory=broken)
    assert issue(engine, "2026-W47") is None


def test_each_decision_is_logged(engine, settings, readers, caplog):
    caplog.set_level(logging.INFO, logger="schedules")
    run(settings, engine, MONDAY_W48, berlin(2026, 11, 25, 9, 0))
    line = next(r.getMessage() for r in caplog.records if r.name == "schedules.weekly")
    assert line.startswith("2026-W47: missed · nothing sent: not started by its deadline")
    assert ("fired for Mon 2026-11-23 09:00 CET, deadline Tue 2026-11-24 00:00 CET, "
            "decision missed") in line


def test_outcome_as_json(engine, settings, readers):
    publish(engine, berlin(2026, 11, 16), 1, "w47-")
    data = run(settings, engine, MONDAY_W48).as_dict()
    assert (data["issue"], data["result"], data["status"], data["sent"]) == (
        "2026-W47", "sent", "sent", READERS)
    assert data["scheduled_for"] == "2026-11-23T09:00:00+01:00"
    assert data["deadline"] == "2026-11-24T00:00:00+01:00"
    assert data["window"] == "16–22 November 2026" and data["exit_code"] == 0


# --- the job the scheduler stores, and the same by hand -------------------------------------------

@pytest.fixture
def env(settings, db_url, monkeypatch):
    """The environment a scheduler or cron process gets."""
    for name, value in {"DIGEST_DATABASE_URL": db_url, "DIGEST_OUTBOX_DIR": settings.outbox_dir,
                        "DIGEST_TIMEZONE": "Europe/Berlin", "DIGEST_BASE_URL": settings.base_url,
                        "DIGEST_SECRET_KEY": "test-secret-key-0123456789abcdef"}.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def test_the_stored_job_fires_for_an_explicit_time_from_the_environment(engine, settings, readers,
                                                                       env):
    publish(engine, berlin(2026, 11, 16), 2, "w47-")
    # The job runs now (2026 or later), long past W47's deadline.
    assert weekly.scheduled_fire(MONDAY_W48.isoformat()) == "missed"
    assert issue(engine, "2026-W47").status == "missed"


def test_the_stored_job_fires_for_the_schedules_latest_time(engine, settings, readers, env):
    env.setenv("DIGEST_SCHEDULE", "* * * * *")  # fired a moment ago, whatever the date
    env.setenv("DIGEST_SEND_DEADLINE", "hours")
    env.setenv("DIGEST_SEND_DEADLINE_HOURS", "240")
    before = last_complete_edition(utcnow(), BERLIN).key
    assert weekly.scheduled_fire() == "skipped"  # nothing was published that week
    after = last_complete_edition(utcnow(), BERLIN).key
    stored = [i for i in (issue(engine, before), issue(engine, after)) if i is not None]
    assert stored and stored[0].status == "skipped"


def test_a_bad_schedule_stops_the_job_with_one_line(engine, settings, env, caplog):
    env.setenv("DIGEST_SCHEDULE", "0 9 1 * mon")
    caplog.set_level(logging.ERROR, logger="schedules")
    assert weekly.scheduled_fire() == "error"
    assert any("DIGEST_SCHEDULE='0 9 1 * mon'" in r.getMessage() for r in caplog.records)


def test_by_hand_with_python_m(engine, settings, readers, env, capsys):
    publish(engine, berlin(2026, 11, 16), 1, "w47-")
    code = weekly.main(["--at", "2026-11-23T09:00:00+01:00", "--format", "json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 7 and (data["issue"], data["result"], data["recorded"]) == (
        "2026-W47", "missed", True)
    assert weekly.main(["--at", "2026-11-23T09:00:00+01:00"]) == 0
    assert "2026-W47: missed · already recorded as missed" in capsys.readouterr().out
    assert weekly.main(["--at", "next monday"]) == 1
    assert "--at 'next monday' is not an ISO 8601 date" in capsys.readouterr().err
