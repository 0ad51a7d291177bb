"""The built-in scheduler: APScheduler 3.x with its job stored in the project's database.

Choices, each on purpose:

* One job, id `digest-weekly-send`, referenced as `schedules.weekly:scheduled_fire` with no
  arguments, so the stored job pickles to a few hundred bytes and survives upgrades of this code.
  The job reads settings and the database from the environment each time it runs.
* `max_instances=1`, `coalesce=True`: one run at a time, and runs that piled up while the
  scheduler was down collapse into one.
* `misfire_grace_time=None` (no limit). APScheduler's default of one second silently drops a run
  that starts a little late (a busy machine, a resumed laptop), and a scheduler that was down
  would never mention the week it slept through. Here a late run always starts, and the job's
  deadline rule decides: within the deadline it sends, past it the week is recorded as `missed`,
  visibly, and nothing goes out late. The grace can be unlimited because lateness is judged by
  the deadline, not by APScheduler.
* The stored job is kept when it already matches `DIGEST_SCHEDULE`: its next run time survives a
  restart, so a run that fell due while the scheduler was stopped fires once at start and is
  judged (sent late within the deadline, or recorded `missed`). A changed schedule replaces it.
* Several schedulers may share the database (APScheduler 3.x does not coordinate them): each may
  fire the job, and the exactly-once rule in `schedules.weekly` lets one send.
* SIGTERM/SIGINT stop it cleanly: no new runs start and a running send is allowed to finish
  (give systemd a `TimeoutStopSec` that covers a send). A second signal exits at once: the ledger
  is built for that (as for `kill -9`), and a send cut short this way is resumed when the
  scheduler starts again before the week's deadline.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import select
import signal
import time
from collections.abc import Callable

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from sqlalchemy.engine import Engine
from sqlmodel import Session

from digest.edition.compose import load_issue
from digest.database import make_engine, require_schema, utcnow
from digest.delivery.send import local_holder_gone
from schedules.cron import DigestCronTrigger, previous_fire_time, schedule_trigger
from schedules.deadline import DeadlineRule, Decision, decide, plan_firing

log = logging.getLogger("schedules.runner")

JOB_ID = "digest-weekly-send"
RESUME_JOB_ID = "digest-weekly-resume"
JOB_FUNC = "schedules.weekly:scheduled_fire"
JOBS_TABLE = "apscheduler_jobs"  # created by APScheduler; the migrations leave it alone
MISFIRE_GRACE_TIME = None  # no limit: the deadline rule judges a late run (see above)
JOB_DEFAULTS = {"coalesce": True, "max_instances": 1, "misfire_grace_time": MISFIRE_GRACE_TIME}


def build_scheduler(settings) -> BackgroundScheduler:
    """A scheduler whose jobs live in the project's database, in `DIGEST_TIMEZONE`."""
    store = SQLAlchemyJobStore(engine=make_engine(settings.database_url), tablename=JOBS_TABLE)
    return BackgroundScheduler(jobstores={"default": store},
                               executors={"default": ThreadPoolExecutor(max_workers=1)},
                               job_defaults=dict(JOB_DEFAULTS), timezone=settings.tz)


def stop_scheduler(scheduler: BaseScheduler, *, wait: bool = True) -> None:
    """Shut down without losing a stored run.

    APScheduler 3.x processes its jobs once more after `shutdown` has stopped the executors: a
    run due at that moment fails to start ("cannot schedule new futures after shutdown") but its
    next run time is advanced in the store all the same, so it is never fired and never judged.
    Detaching the job store first leaves that last pass nothing to touch; the stored jobs stay
    in the table for the next start."""
    if not scheduler.running:
        return
    scheduler.pause()
    scheduler.remove_jobstore("default", shutdown=True)
    scheduler.shutdown(wait=wait)


def _matches(job, trigger: DigestCronTrigger) -> bool:
    return (trigger.same_schedule(job.trigger) and job.func_ref == JOB_FUNC
            and not job.args and not job.kwargs
            and all(getattr(job, name) == value for name, value in JOB_DEFAULTS.items()))


def ensure_job(scheduler: BaseScheduler, trigger: DigestCronTrigger) -> str:
    """Store the weekly job once: `kept` (unchanged, its next run time too), `added`, or
    `replaced` (the schedule or the job's options changed)."""
    try:
        existing = scheduler.get_job(JOB_ID)
    except Exception as exc:  # stored by a version of this code that can no longer read it
        log.warning("the stored job %s cannot be read (%s: %s): replacing it", JOB_ID,
                    type(exc).__name__, exc)
        scheduler.remove_job(JOB_ID)
        existing = False
    if existing and _matches(existing, trigger):
        return "kept"
    scheduler.add_job(JOB_FUNC, trigger=trigger, id=JOB_ID, name="weekly digest send",
                      replace_existing=True, **JOB_DEFAULTS)
    return "added" if existing is None else "replaced"


def resume_interrupted(scheduler: BaseScheduler, settings, engine: Engine,
                       now: dt.datetime) -> bool:
    """Queue one run for the latest firing when its send was cut short (its process died or was
    stopped hard) and the deadline has not passed; the ledger resumes what is left."""
    trigger = schedule_trigger(settings)
    at = previous_fire_time(trigger, now)
    if at is None:
        return False
    firing = plan_firing(trigger, at, DeadlineRule.from_settings(settings))
    if decide(firing, now) is not Decision.SEND:
        return False
    with Session(engine) as session:
        issue = load_issue(session, firing.key)
        if issue is None:
            return False
        # A paused send is left alone: it paused for a reason (the breaker, the provider) that
        # an operator resolves before `digest send --week W` resumes it.
        cut_short = issue.status == "sending" and (
            issue.sender_lease_until is None or issue.sender_lease_until <= now
            or (issue.sender is not None and local_holder_gone(issue.sender)))
    if not cut_short:
        return False
    scheduler.add_job(JOB_FUNC, trigger="date", run_date=now, id=RESUME_JOB_ID,
                      name="resume the interrupted weekly send", replace_existing=True,
                      kwargs={"scheduled_for": at.isoformat()}, **JOB_DEFAULTS)
    log.info("%s was cut short (%s): resuming it now, before its deadline %s", firing.key,
             issue.status, f"{firing.local(firing.deadline):%Y-%m-%d %H:%M %Z}")
    return True


def describe_next(scheduler: BaseScheduler, settings, now: dt.datetime) -> str:
    job = scheduler.get_job(JOB_ID)
    if job is None or job.next_run_time is None:
        return "no run scheduled"
    firing = plan_firing(schedule_trigger(settings), job.next_run_time,
                         DeadlineRule.from_settings(settings))
    when = f"{firing.local(firing.scheduled_for):%a %Y-%m-%d %H:%M %Z}"
    if firing.scheduled_for <= now:
        when += " (overdue: runs now, and its deadline decides)"
    return (f"next run {when}: sends {firing.key} ({firing.window.label()}), deadline "
            f"{firing.local(firing.deadline):%a %Y-%m-%d %H:%M %Z}")


class StopRequest:
    """A stop a signal handler can ask for safely, and the main thread can wait for.

    Setting it writes a byte to a pipe and takes no lock (a handler calling
    `threading.Event.set`, or logging, could deadlock on a lock the interrupted main thread
    holds). The pipe is also the signal wake-up fd: a signal delivered to another thread (the
    scheduler's, a database pool's) would otherwise leave the main thread asleep in its wait,
    its Python handler pending, for ever."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self.signum: int | None = None

    @property
    def wakeup_fd(self) -> int:
        return self._write

    def set(self, signum: int = 0) -> None:
        if self.signum is None:
            self.signum = signum
        try:
            os.write(self._write, b"s")
        except BlockingIOError:  # already woken many times over
            pass

    def is_set(self) -> bool:
        return self.signum is not None

    def wait(self, timeout: float | None = None) -> bool:
        """Block until set (or `timeout` seconds pass); True when set."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            readable, _, _ = select.select([self._read], [], [], left)
            if readable:
                try:
                    os.read(self._read, 512)  # our byte, or the signal machinery's
                except BlockingIOError:
                    pass
            elif deadline is not None:
                break
        return self.is_set()

    def describe(self) -> str:
        return signal.Signals(self.signum).name if self.signum else "stop requested"

    def close(self) -> None:
        os.close(self._read)
        os.close(self._write)


def install_signal_handlers(stop: StopRequest, *,
                            exit_now: Callable[[int], None] = os._exit) -> Callable[[], None]:
    """SIGTERM and SIGINT ask `stop`; a second one exits at once (the ledger is built for
    that). Returns a function that puts the old handlers back."""

    def handler(signum: int, _frame) -> None:
        if stop.is_set():
            name = signal.Signals(signum).name
            os.write(2, f"{name} again: exiting now; a send in progress is resumed from the "
                        "ledger (claims in flight become uncertain, never re-sent "
                        "silently)\n".encode())
            exit_now(128 + signum)
            return
        stop.set(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    previous_fd = signal.set_wakeup_fd(stop.wakeup_fd, warn_on_full_buffer=False)

    def restore() -> None:
        signal.set_wakeup_fd(previous_fd)
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


def _nothing() -> None:
    pass


def run(settings, *, stop: StopRequest | None = None, install_signals: bool = True,
        clock: Callable[[], dt.datetime] = utcnow) -> int:
    """Run the scheduler in the foreground until `stop` is asked (by SIGTERM/SIGINT by
    default). Returns the process exit code: 0 after a clean stop."""
    trigger = schedule_trigger(settings)  # a bad DIGEST_SCHEDULE fails before anything starts
    stop = stop or StopRequest()
    engine = make_engine(settings.database_url)
    restore: Callable[[], None] = _nothing
    scheduler = None
    try:
        if install_signals:  # from the start: a stop asked for during start-up is honoured too
            restore = install_signal_handlers(stop)
        require_schema(engine)
        scheduler = build_scheduler(settings)
        scheduler.start(paused=True)
        how = ensure_job(scheduler, trigger)
        now = clock()
        log.info("scheduler started: %r in %s (job %s %s); %s", trigger.expression,
                 settings.timezone, JOB_ID, how, describe_next(scheduler, settings, now))
        resume_interrupted(scheduler, settings, engine, now)
        scheduler.resume()
        stop.wait()
        log.info("%s received: stopping; a running send finishes first (send the signal again "
                 "to exit at once)", stop.describe())
    finally:
        if scheduler is not None and scheduler.running:
            log.info("stopping: no new runs; waiting for a running send to finish")
            stop_scheduler(scheduler)
        restore()  # only now: a second signal while a send finishes exits at once
        engine.dispose()
    log.info("scheduler stopped")
    return 0
