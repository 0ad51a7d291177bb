"""`digest schedule next|run`, the cron path of `digest send`, and the scheduler's wiring: the
job stored once in the project's database with its options, an overdue run fired once at start
and judged by its deadline, an interrupted send queued for resumption, and a real
`digest schedule run` process that stops cleanly on SIGTERM."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
from zoneinfo import ZoneInfo

import pytest
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED
from sqlalchemy import inspect, text
from sqlmodel import Session
from typer.testing import CliRunner

from delivery_support import add_subscribers, make_issue
from digest.delivery import ledger
from digest.edition.compose import load_issue
from digest.database import make_engine, session_scope, utcnow
from digest.settings import load_settings
from digest.edition.weeks import last_complete_edition
from factories import sample_comparisons, store
from schedules import runner
from schedules.cron import parse_schedule

UTC = dt.timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
EVENT_WAIT = 30.0  # bounded wait, in seconds, for the scheduler's worker thread
PROCESS_WAIT = 60.0  # bounded wait for a `digest schedule run` process


@pytest.fixture
def env(settings, db_url, monkeypatch):
    """A clean `digest` environment on this test's database; returns a setter for more."""
    from digest.cli import common

    values = {"DIGEST_DATABASE_URL": db_url, "DIGEST_OUTBOX_DIR": settings.outbox_dir,
              "DIGEST_TIMEZONE": "Europe/Berlin", "DIGEST_BASE_URL": settings.base_url,
              "DIGEST_SECRET_KEY": "test-secret-key-0123456789abcdef"}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    common.reset()
    def more(**values) -> None:
        for key, value in values.items():
            monkeypatch.setenv(f"DIGEST_{key.upper()}", str(value))

    yield more
    common.reset()


@pytest.fixture
def jobs_table(db_url):
    """APScheduler's table is not in the models: the truncation between tests leaves it, so each
    test here starts and ends without it."""
    engine = make_engine(db_url)

    def drop():
        with engine.begin() as conn:
            conn.execute(text(f"DROP TABLE IF EXISTS {runner.JOBS_TABLE}"))

    drop()
    yield engine
    drop()
    engine.dispose()


def invoke(*args):
    from digest.cli import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False)


# --- digest schedule next -------------------------------------------------------------------------

def test_next_lists_fire_times_across_the_spring_change_with_editions(env):
    result = invoke("schedule", "next", "--count", "3", "--after", "2026-03-20T00:00:00Z",
                    "--format", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["fires_at"], r["fires_at_utc"], r["edition"]) for r in rows] == [
        ("2026-03-23T09:00:00+01:00", "2026-03-23T08:00:00Z", "2026-W12"),
        ("2026-03-30T09:00:00+02:00", "2026-03-30T07:00:00Z", "2026-W13"),
        ("2026-04-06T09:00:00+02:00", "2026-04-06T07:00:00Z", "2026-W14")]
    assert rows[1]["window"] == "23–29 March 2026" and rows[1]["zone"] == "Europe/Berlin"
    assert rows[1]["window_start"] == "2026-03-23T00:00:00+01:00"
    assert rows[1]["window_end"] == "2026-03-30T00:00:00+02:00"
    assert rows[1]["deadline"] == "2026-03-31T00:00:00+02:00"


def test_next_as_a_table_in_new_york_across_the_autumn_change(env):
    env(timezone="America/New_York", schedule="30 8 * * 1", send_deadline="hours",
        send_deadline_hours="6")
    result = invoke("schedule", "next", "--count", "2", "--after", "2026-10-27T00:00:00-04:00")
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "'30 8 * * 1' in America/New_York" in out
    assert "Mon 2026-11-02 08:30 EST" in out and "Mon 2026-11-09 08:30 EST" in out
    assert "2026-W44" in out and "2026-W45" in out
    assert "Mon 02 Nov 14:30" in out  # six hours later
    assert "deadline: 6 hours after it was due" in out


def test_next_counts_from_now_by_default(env):
    result = invoke("schedule", "next", "--format", "json")
    rows = json.loads(result.stdout)
    assert len(rows) == 5
    first = dt.datetime.fromisoformat(rows[0]["fires_at"])
    assert utcnow() <= first <= utcnow() + dt.timedelta(days=7)
    assert first.astimezone(BERLIN).strftime("%a %H:%M") == "Mon 09:00"


@pytest.mark.parametrize("schedule,message", [
    ("0 9 * * 1 *", "DIGEST_SCHEDULE: cron expression '0 9 * * 1 *' has 6 fields"),
    ("0 9 1 * mon", "DIGEST_SCHEDULE='0 9 1 * mon' is not a usable cron expression"),
    ("0 9 * * fri-mon", "the range 'fri-mon' runs backwards"),
])
def test_a_bad_schedule_is_refused_with_its_name(env, schedule, message):
    env(schedule=schedule)
    result = invoke("schedule", "next")
    assert result.exit_code == 3
    assert message in " ".join(result.output.split())


def test_next_refuses_a_time_without_a_zone(env):
    result = invoke("schedule", "next", "--after", "2026-03-20T00:00:00")
    assert result.exit_code == 1 and "has no time zone" in result.output
    assert invoke("schedule", "next", "--count", "0").exit_code == 2


# --- digest send without --week: a crontab line ---------------------------------------------------

def _this_weeks_content(engine):
    """Content and an issue key for the last complete week by the real clock (the CLI reads it)."""
    key = last_complete_edition(utcnow(), BERLIN).key
    window = last_complete_edition(utcnow(), BERLIN).window(BERLIN)
    with Session(engine, expire_on_commit=False) as session:
        store(session, sample_comparisons(2, start=window.start + dt.timedelta(days=2)))
    return key


def test_cron_send_sends_the_last_complete_week_and_again_is_a_no_op(env, engine, settings):
    env(schedule="* * * * *", send_deadline="hours", send_deadline_hours="240")
    key = _this_weeks_content(engine)
    add_subscribers(engine, 4)
    first = invoke("send", "--format", "json")
    assert first.exit_code == 0, first.output
    data = json.loads(first.stdout)
    assert (data["issue"], data["result"], data["status"], data["sent"]) == (key, "sent", "sent", 4)
    again = invoke("send")
    assert again.exit_code == 0 and f"{key}: already-sent · already sent at" in again.output


def test_cron_send_while_another_process_sends_exits_0(env, engine, session):
    env(schedule="* * * * *", send_deadline="hours", send_deadline_hours="240")
    add_subscribers(engine, 2)
    key = last_complete_edition(utcnow(), BERLIN).key
    issue = make_issue(session, key)
    with session_scope(engine) as s:
        ledger.acquire_issue(s, issue.id, sender="far:1:x", now=utcnow(),
                             lease=dt.timedelta(minutes=5))
    result = invoke("send", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["result"] == "being-sent" and "already being sent by far:1:x" in data["message"]
    explicit = invoke("send", "--week", key)  # the operator's own `--week` keeps its code
    assert explicit.exit_code == 5


def test_cron_send_past_the_deadline_records_missed_and_sends_nothing(env, engine, settings):
    # The week became due at Monday 00:00 (every minute fires); 3.6 seconds later it is too late.
    env(schedule="* * * * *", send_deadline="hours", send_deadline_hours="0.001")
    key = _this_weeks_content(engine)
    add_subscribers(engine, 3)
    result = invoke("send", "--format", "json")
    assert result.exit_code == 7, result.output
    data = json.loads(result.stdout)
    assert (data["issue"], data["result"], data["recorded"]) == (key, "missed", True)
    with Session(engine) as session:
        assert load_issue(session, key).status == "missed"
    assert not os.path.exists(settings.outbox_dir)
    again = invoke("send")
    assert again.exit_code == 0 and "already recorded as missed" in again.output
    explicit = invoke("send", "--week", key)  # not even by hand: a missed week stays missed
    assert explicit.exit_code == 4 and "cannot be sent: status is 'missed'" in explicit.output
    assert not os.path.exists(settings.outbox_dir)


def test_cron_send_refuses_options_that_need_a_week(env):
    result = invoke("send", "--workers", "2")
    assert result.exit_code == 1 and "--workers and --lease need --week" in result.output


# --- the scheduler's wiring -----------------------------------------------------------------------

def test_the_job_is_stored_once_with_its_options_and_kept_across_restarts(settings, jobs_table):
    trigger = parse_schedule(settings.schedule, settings.tz)
    first = runner.build_scheduler(settings)
    first.start(paused=True)
    try:
        assert runner.ensure_job(first, trigger) == "added"
        job = first.get_job(runner.JOB_ID)
        assert job.func_ref == "schedules.weekly:scheduled_fire"
        assert job.args == () and job.kwargs == {}
        assert (job.coalesce, job.max_instances, job.misfire_grace_time) == (True, 1, None)
        assert job.trigger.expression == "0 9 * * mon"
        assert str(job.trigger.timezone) == "Europe/Berlin"
        next_run = job.next_run_time
    finally:
        runner.stop_scheduler(first)
    assert runner.JOBS_TABLE in inspect(jobs_table).get_table_names()
    with jobs_table.connect() as conn:
        assert conn.execute(text(f"SELECT id FROM {runner.JOBS_TABLE}")).scalars().all() == [
            runner.JOB_ID]

    again = runner.build_scheduler(settings)
    again.start(paused=True)
    try:
        assert runner.ensure_job(again, trigger) == "kept"
        assert again.get_job(runner.JOB_ID).next_run_time == next_run
        changed = parse_schedule("0 7 * * tue", settings.tz)
        assert runner.ensure_job(again, changed) == "replaced"
        assert again.get_job(runner.JOB_ID).trigger.expression == "0 7 * * tue"
        assert len(again.get_jobs()) == 1
    finally:
        runner.stop_scheduler(again)

    with jobs_table.begin() as conn:  # a job stored by code that no longer exists
        conn.execute(text(f"UPDATE {runner.JOBS_TABLE} SET job_state = :junk"),
                     {"junk": b"not a pickle"})
    last = runner.build_scheduler(settings)
    last.start(paused=True)
    try:
        assert runner.ensure_job(last, trigger) == "replaced"
        assert last.get_job(runner.JOB_ID).trigger.expression == "0 9 * * mon"
    finally:
        runner.stop_scheduler(last)


def test_an_overdue_stored_run_fires_once_at_start_and_its_deadline_decides(env, settings,
                                                                          engine, jobs_table):
    """The scheduler was stopped over its run three days ago: on start APScheduler runs the
    job once (no misfire limit, runs coalesced), and the job records that week as missed."""
    due = (utcnow() - dt.timedelta(days=3)).astimezone(BERLIN)
    env(schedule=f"0 6 {due.day} {due.month} *")
    conf = load_settings()
    trigger = parse_schedule(conf.schedule, conf.tz)
    fired_at = due.replace(hour=6, minute=0, second=0, microsecond=0)
    first = runner.build_scheduler(conf)
    first.start(paused=True)
    runner.ensure_job(first, trigger)
    first.modify_job(runner.JOB_ID, next_run_time=fired_at - dt.timedelta(days=365))
    runner.stop_scheduler(first)

    done: queue.Queue = queue.Queue()
    scheduler = runner.build_scheduler(conf)
    scheduler.add_listener(done.put, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
    scheduler.start(paused=True)
    try:
        assert runner.ensure_job(scheduler, trigger) == "kept"
        scheduler.resume()
        event = done.get(timeout=EVENT_WAIT)
        assert event.exception is None and event.retval == "missed"
        assert done.empty()  # a year of missed runs, coalesced into one
        assert scheduler.get_job(runner.JOB_ID).next_run_time > utcnow()
    finally:
        runner.stop_scheduler(scheduler)
    key = last_complete_edition(fired_at, BERLIN).key
    with Session(engine) as session:
        stored = load_issue(session, key)
        assert stored.status == "missed" and "never sent late" in stored.status_reason


def test_a_send_cut_short_is_resumed_at_start_within_its_deadline(settings, engine, session,
                                                                  jobs_table):
    monday_noon = dt.datetime(2026, 11, 23, 12, 0, tzinfo=BERLIN)
    issue = make_issue(session, "2026-W47")
    with session_scope(engine) as s:  # a sender on this host that died (no such process)
        ledger.acquire_issue(s, issue.id, sender="gone:999999999:dead", now=monday_noon,
                             lease=dt.timedelta(minutes=5))
    scheduler = runner.build_scheduler(settings)
    scheduler.start(paused=True)
    try:
        assert runner.resume_interrupted(scheduler, settings, engine,
                                         monday_noon + dt.timedelta(minutes=10))
        job = scheduler.get_job(runner.RESUME_JOB_ID)
        assert job.func_ref == runner.JOB_FUNC
        assert job.kwargs == {"scheduled_for": "2026-11-23T09:00:00+01:00"}
        scheduler.remove_job(runner.RESUME_JOB_ID)
        # Past the deadline the operator decides; a paused send is never resumed on its own.
        assert not runner.resume_interrupted(scheduler, settings, engine,
                                             dt.datetime(2026, 11, 24, 1, 0, tzinfo=BERLIN))
        with session_scope(engine) as s:
            ledger.pause_issue(s, issue.id, sender="gone:999999999:dead", reason="breaker")
        assert not runner.resume_interrupted(scheduler, settings, engine,
                                             monday_noon + dt.timedelta(minutes=10))
    finally:
        runner.stop_scheduler(scheduler)


def test_schedule_run_refuses_an_uninitialised_database(env, tmp_path):
    env(database_url=f"sqlite:///{tmp_path / 'fresh.db'}")
    result = invoke("schedule", "run")
    output = " ".join(result.output.split())
    assert result.exit_code == 1 and "no database here" in output
    assert "run `digest init`" in output and not (tmp_path / "fresh.db").exists()


def test_signal_handlers_stop_first_and_exit_on_the_second(capfd):
    stop, exits = runner.StopRequest(), []
    restore = runner.install_signal_handlers(stop, exit_now=exits.append)
    try:
        assert not stop.wait(timeout=0)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(timeout=0) and stop.describe() == "SIGTERM" and exits == []
        os.kill(os.getpid(), signal.SIGINT)
        assert exits == [128 + signal.SIGINT]
        assert "SIGINT again: exiting now" in capfd.readouterr().err
    finally:
        restore()
        stop.close()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_run_stops_when_asked_and_leaves_its_job(settings, jobs_table, caplog):
    caplog.set_level(logging.INFO, logger="schedules")
    stop = runner.StopRequest()
    stop.set()  # asked before it even started: it starts, stores its job, and stops
    try:
        assert runner.run(settings, stop=stop, install_signals=False) == 0
    finally:
        stop.close()
    messages = [r.getMessage() for r in caplog.records if r.name == "schedules.runner"]
    assert messages[0].startswith("scheduler started: '0 9 * * mon' in Europe/Berlin")
    assert messages[-1] == "scheduler stopped"
    with jobs_table.connect() as conn:
        assert conn.execute(text(f"SELECT id FROM {runner.JOBS_TABLE}")).scalars().all() == [
            runner.JOB_ID]


# --- a real `digest schedule run` -----------------------------------------------------------------

def _lines(stream, into: queue.Queue) -> None:
    for line in stream:
        into.put(line)
    into.put(None)


def _wait_for(lines: queue.Queue, needle: str, seen: list[str]) -> None:
    deadline = dt.datetime.now() + dt.timedelta(seconds=PROCESS_WAIT)
    while dt.datetime.now() < deadline:
        try:
            line = lines.get(timeout=PROCESS_WAIT)
        except queue.Empty:
            break
        if line is None:
            raise AssertionError(f"exited before {needle!r}: {''.join(seen)}")
        seen.append(line)
        if needle in line:
            return
    raise AssertionError(f"no {needle!r} in time: {''.join(seen)}")


@pytest.mark.slow
def test_schedule_run_stops_cleanly_on_sigterm_and_keeps_its_job(env, db_url, settings,
                                                                jobs_table, tmp_path):
    digest = os.path.join(os.path.dirname(sys.executable), "digest")
    for attempt in ("added", "kept"):
        child = subprocess.Popen([digest, "schedule", "run"], env=dict(os.environ), cwd=tmp_path,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=_lines, args=(child.stderr, lines), daemon=True).start()
        seen: list[str] = []
        try:
            _wait_for(lines, "scheduler started", seen)
            assert f"job {runner.JOB_ID} {attempt}" in seen[-1]
            assert "'0 9 * * mon' in Europe/Berlin" in seen[-1] and "next run Mon" in seen[-1]
            child.send_signal(signal.SIGTERM)
            try:
                code = child.wait(timeout=PROCESS_WAIT)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"no exit after SIGTERM: {''.join(seen)}") from None
            assert code == 0, "".join(seen)
        finally:
            if child.poll() is None:
                child.kill()
        _wait_for(lines, "scheduler stopped", seen)
        log = "".join(seen)
        assert "SIGTERM received: stopping" in log and "Traceback" not in log
    with jobs_table.connect() as conn:
        assert conn.execute(text(f"SELECT COUNT(*) FROM {runner.JOBS_TABLE}")).scalar_one() == 1
