"""The weekly job: one firing of the schedule decides, records and (at most once) sends.

`fire` is what the built-in scheduler, a cron `digest send` and `python -m schedules.weekly` all
run. Any number of them may fire for the same week at the same moment, on one machine or many:
the database decides, not a lock file. The issue row is unique per week (`compose_issue` and the
`missed` insert both rely on that), and only one sender can move it to `sending` (the ledger's
guarded update, read `FOR UPDATE` on PostgreSQL). The others report that the issue is already
being sent or was sent, which is success: exit code 0.

Outcomes and exit codes (`FireOutcome.exit_code`):

* `sent` 0: this firing sent the issue and every recipient reached a final state;
* `already-sent`, `being-sent`, `skipped` (nothing new that week) 0;
* `missed` 7 when this firing recorded it (the week could not start by its deadline; nothing is
  sent, ever), 0 when an earlier firing already had;
* `too-early` 0: fired before its time (a clock behind, a time given by hand); nothing recorded;
* `incomplete` 4: the send paused or left deliveries uncertain; the reason is stored on the
  issue and `digest send --week W` resumes it;
* `blocked` 6: a real send refused by the preflight checks (`digest.preflight.identity`) before
  anything was composed. The week is recorded as `blocked` with every failure, so `digest
  status` says why; a later firing before the deadline sends it once the settings are fixed,
  and past the deadline it becomes `missed`, the block kept in its reason.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from digest.edition.compose import compose_issue, load_issue
from digest.database import make_engine, require_schema, session_scope, utcnow
from digest.errors import ConfigurationError, DigestError
from digest.database.models import Issue
from digest.delivery.providers.base import Provider
from digest.delivery.send import SendReport, policy_from, send_issue
from digest.preflight.identity import refuse_unless_ready
from digest.preflight.report import EXIT_PREFLIGHT, PreflightRefused, refusal_reason
from digest.settings import load_settings
from schedules.cron import previous_fire_time, schedule_trigger
from schedules.deadline import DeadlineRule, Decision, Firing, decide, missed_reason, plan_firing

log = logging.getLogger("schedules.weekly")

SENT = "sent"
INCOMPLETE = "incomplete"
ALREADY_SENT = "already-sent"
BEING_SENT = "being-sent"
SKIPPED = "skipped"
MISSED = "missed"
TOO_EARLY = "too-early"
BLOCKED = "blocked"

EXIT_OK = 0
EXIT_INCOMPLETE = 4  # as `digest send`: something is left; `digest send --week W` resumes
EXIT_MISSED = 7  # this firing gave the week up: worth a failed unit or a cron mail
EXIT_BLOCKED = EXIT_PREFLIGHT  # 6: the settings would send broken mail; fix them (digest doctor)


@dataclass(frozen=True)
class FireOutcome:
    """What one firing decided and did."""

    result: str
    firing: Firing
    message: str
    recorded: bool = False  # this firing wrote the outcome (sent, composed `skipped`, `missed`)
    report: SendReport | None = None

    @property
    def edition(self) -> str:
        return self.firing.key

    @property
    def exit_code(self) -> int:
        if self.result == INCOMPLETE:
            return EXIT_INCOMPLETE
        if self.result == BLOCKED:
            return EXIT_BLOCKED
        if self.result == MISSED and self.recorded:
            return EXIT_MISSED
        return EXIT_OK

    def line(self) -> str:
        """One line for a log or a terminal."""
        return f"{self.edition}: {self.result} · {self.message}"

    def as_dict(self) -> dict:
        f = self.firing
        data = {"issue": self.edition, "result": self.result, "message": self.message,
                "recorded": self.recorded, "exit_code": self.exit_code,
                "scheduled_for": f.local(f.scheduled_for).isoformat(),
                "due": f.local(f.due).isoformat(), "deadline": f.local(f.deadline).isoformat(),
                "window": f.window.label()}
        if self.report is not None:
            data = {**self.report.as_dict(), **data}
        return data


ProviderFactory = Callable[[object], Provider]


def _default_provider(settings) -> Provider:
    from digest.delivery.providers import build_provider

    return build_provider(settings)


# --- the firing -----------------------------------------------------------------------------------

def fire(settings, engine: Engine, *, scheduled_for: dt.datetime, now: dt.datetime,
         provider_factory: ProviderFactory = _default_provider,
         clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
         sender_id: str | None = None) -> FireOutcome:
    """Decide what the firing at `scheduled_for`, starting at `now`, may do, and do it."""
    firing = plan_firing(schedule_trigger(settings), scheduled_for,
                         DeadlineRule.from_settings(settings))
    decision = decide(firing, now)
    outcome = _carry_out(settings, engine, firing, decision, now=now,
                         provider_factory=provider_factory, clock=clock, sleep=sleep,
                         sender_id=sender_id)
    # A blocked week needs the operator before its deadline: an error in the journal/cron mail.
    level = logging.ERROR if outcome.result == BLOCKED else logging.INFO
    log.log(level, "%s (fired for %s, deadline %s, decision %s)", outcome.line(),
             _stamp(firing, firing.scheduled_for), _stamp(firing, firing.deadline),
             decision.value)
    return outcome


def _stamp(firing: Firing, instant: dt.datetime) -> str:
    return f"{firing.local(instant):%a %Y-%m-%d %H:%M %Z}"


def _carry_out(settings, engine: Engine, firing: Firing, decision: Decision, *,
               now: dt.datetime, provider_factory: ProviderFactory, clock, sleep,
               sender_id) -> FireOutcome:
    if decision is Decision.TOO_EARLY:
        return FireOutcome(TOO_EARLY, firing, f"too early: nothing happens before "
                                              f"{_stamp(firing, firing.scheduled_for)}")
    found = _stored(engine, firing.key)
    if found is not None and found.status in ("sent", "skipped", "missed"):
        return _as_found(found, firing, now)
    if decision is Decision.MISSED:
        recorded = False
        if found is None or (found.status in ("ready", "blocked")
                             and found.send_started_at is None):
            recorded = _record_missed(engine, firing, now)
        return _as_found(_stored(engine, firing.key), firing, now, recorded=recorded)
    # Decision.SEND: the preflight first (a refused send composes nothing and is recorded as
    # `blocked`, never left to become `missed` unexplained), then the provider, so a
    # configuration error changes nothing.
    try:
        for warning in refuse_unless_ready(settings):
            log.warning("%s: %s", firing.key, warning.line())
    except PreflightRefused as refused:
        reason = refusal_reason(refused.failures)
        recorded = _record_blocked(engine, firing, now, reason)
        return FireOutcome(BLOCKED, firing, reason, recorded=recorded)
    with provider_factory(settings) as provider:
        with session_scope(engine) as session:
            existed = load_issue(session, firing.key) is not None
            issue = compose_issue(session, settings, firing.key, now=now)
            issue_id, status = issue.id, issue.status
        if status in ("sent", "skipped", "missed"):
            found = _stored(engine, firing.key)
            return _as_found(found, firing, now, recorded=status == "skipped" and not existed)
        report = send_issue(engine, issue_id, provider, settings, policy=policy_from(settings),
                            clock=clock, sleep=sleep, sender_id=sender_id)
    return _classify(report, firing)


def _classify(report: SendReport, firing: Firing) -> FireOutcome:
    if report.busy or (report.status == "sending" and report.message):
        return FireOutcome(BEING_SENT, firing, report.message or "already being sent",
                           report=report)
    if report.message and report.status == "sent":  # another sender finished it first
        return FireOutcome(ALREADY_SENT, firing, report.message, report=report)
    if report.complete:
        return FireOutcome(SENT, firing, f"sent to {report.sent_now} recipients now "
                                         f"({report.sent} in all, {report.failed} failed)",
                           recorded=True, report=report)
    why = report.reason or report.message or f"status {report.status}"
    return FireOutcome(INCOMPLETE, firing, f"{report.status}: {why}", report=report)


# --- what is stored -------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Stored:
    status: str
    reason: str
    send_started_at: dt.datetime | None
    sent_at: dt.datetime | None
    sender: str | None
    lease_until: dt.datetime | None


def _stored(engine: Engine, key: str) -> _Stored | None:
    with Session(engine) as session:
        issue = load_issue(session, key)
        if issue is None:
            return None
        return _Stored(issue.status, issue.status_reason, issue.send_started_at, issue.sent_at,
                       issue.sender, issue.sender_lease_until)


def _as_found(found: _Stored | None, firing: Firing, now: dt.datetime, *,
              recorded: bool = False) -> FireOutcome:
    """The outcome for an issue this firing does not send (any more)."""
    if found is None:
        raise DigestError(f"the issue row of {firing.key} disappeared while this firing ran "
                          "(deleted by hand?)")
    key = firing.key
    if found.status == "sent":
        when = f" at {_stamp(firing, found.sent_at)}" if found.sent_at else ""
        return FireOutcome(ALREADY_SENT, firing, f"already sent{when}")
    if found.status == "skipped":
        return FireOutcome(SKIPPED, firing, f"skipped, nothing sent: {found.reason}",
                           recorded=recorded)
    if found.status == "missed":
        prefix = "nothing sent" if recorded else "already recorded as missed"
        return FireOutcome(MISSED, firing, f"{prefix}: {found.reason}", recorded=recorded)
    if found.status == "blocked":
        return FireOutcome(BLOCKED, firing, found.reason, recorded=recorded)
    if found.status == "sending" and found.lease_until is not None and found.lease_until > now:
        return FireOutcome(BEING_SENT, firing, f"already being sent by {found.sender}")
    # Started before its deadline and stopped (paused, or its sender died): past the deadline
    # the schedule does not resume it on its own; the operator decides.
    state = "paused" if found.status == "paused" else f"{found.status}, its sender gone"
    return FireOutcome(INCOMPLETE, firing, f"{state}{': ' + found.reason if found.reason else ''}; "
                       f"past its deadline the schedule leaves it to you: `digest send --week "
                       f"{key}` resumes it")


def _insert_week(session, firing: Firing, status: str, reason: str, now: dt.datetime) -> bool:
    """A new issue row for the week with `status` and no content; False when a concurrent
    firing inserted the week first (the unique key decides)."""
    try:
        with session.begin_nested():
            session.add(Issue(key=firing.key, status=status, status_reason=reason,
                              window_start=firing.window.start, window_end=firing.window.end,
                              created_at=now))
            session.flush()
    except IntegrityError:
        return False
    return True


def _record_missed(engine: Engine, firing: Firing, now: dt.datetime) -> bool:
    """Record the week as `missed`: a new row, or a composed issue that never started sending.
    True when this call wrote it (a concurrent firing may have won the unique key first)."""
    reason = missed_reason(firing, now)
    table = Issue.__table__
    with session_scope(engine) as session:
        issue = load_issue(session, firing.key)
        if issue is None:
            return _insert_week(session, firing, "missed", reason, now)
        if issue.status not in ("ready", "blocked") or issue.send_started_at is not None:
            return False
        if issue.status == "blocked":
            reason += f"; it was blocked: {issue.status_reason}"
        result = session.execute(
            update(table).where(table.c.id == issue.id, table.c.status == issue.status,
                                table.c.send_started_at.is_(None))
            .values(status="missed", status_reason=reason))
        return result.rowcount == 1


def _record_blocked(engine: Engine, firing: Firing, now: dt.datetime, reason: str) -> bool:
    """Record the week as `blocked` with the preflight's reasons: a new row (no content: nothing
    is composed with settings that failed), or an issue that has not started sending. An issue
    already sending or paused keeps its state (its deliveries exist); the firing still sends
    nothing. True when this call wrote it."""
    table = Issue.__table__
    with session_scope(engine) as session:
        issue = load_issue(session, firing.key)
        if issue is None:
            return _insert_week(session, firing, "blocked", reason, now)
        result = session.execute(
            update(table).where(table.c.id == issue.id,
                                table.c.status.in_(("ready", "blocked")),
                                table.c.send_started_at.is_(None))
            .values(status="blocked", status_reason=reason))
        return result.rowcount == 1


# --- the scheduler's job, and the same by hand ----------------------------------------------------

def parse_instant(text: str, name: str) -> dt.datetime:
    """An ISO 8601 instant with a zone (`2026-11-23T09:00:00+01:00`, `...Z`), or a clear error."""
    try:
        instant = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise DigestError(f"{name} {text!r} is not an ISO 8601 date and time "
                          "(e.g. 2026-11-23T09:00:00+01:00)") from None
    if instant.tzinfo is None:
        raise DigestError(f"{name} {text!r} has no time zone (add Z or an offset like +01:00)")
    return instant


def fire_from_environment(scheduled_for: dt.datetime | None = None) -> FireOutcome:
    """One firing with the settings and database of the environment, as a scheduler host or a
    cron line has them. Without `scheduled_for` it fires for the schedule's latest fire time: a
    run that starts late is then judged by the week it was meant for."""
    now = utcnow()
    settings = load_settings()
    at = scheduled_for or previous_fire_time(schedule_trigger(settings), now) or now
    engine = make_engine(settings.database_url)
    try:
        require_schema(engine)
        return fire(settings, engine, scheduled_for=at, now=now)
    finally:
        engine.dispose()


def scheduled_fire(scheduled_for: str | None = None) -> str:
    """The job the scheduler stores, by reference (`schedules.weekly:scheduled_fire`) and with
    at most a string argument, so it pickles and survives upgrades of this code. Expected
    failures become one log line instead of a traceback."""
    try:
        at = parse_instant(scheduled_for, "scheduled_for") if scheduled_for else None
        return fire_from_environment(at).result
    except (DigestError, ConfigurationError) as exc:
        log.error("the weekly send could not run: %s", exc)
        return "error"


def configure_logging() -> None:
    """Our decisions at INFO on stderr (journald, a terminal, a cron mail); other libraries'
    records only from WARNING up."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("schedules").setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    """`python -m schedules.weekly [--at ISO] [--format table|json]`: one firing by hand, as the
    scheduler would run it (for the schedule's latest fire time unless `--at` says otherwise)."""
    parser = argparse.ArgumentParser(prog="python -m schedules.weekly", description=main.__doc__)
    parser.add_argument("--at", help="the scheduled time to fire for (ISO 8601 with a zone)")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    args = parser.parse_args(argv)
    configure_logging()
    try:
        outcome = fire_from_environment(parse_instant(args.at, "--at") if args.at else None)
    except ConfigurationError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return ConfigurationError.exit_code
    except DigestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.format == "json":
        print(json.dumps(outcome.as_dict(), indent=2, ensure_ascii=False))
    else:
        print(outcome.line())
    return outcome.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
