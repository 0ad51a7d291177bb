"""Several processes sending one issue: the holder (`digest send --workers N`) and the workers
that join it (`digest worker`), coordinated by the database alone.

The protocol:

* `digest send` acquires the issue as before (`ledger.acquire_issue`: status `sending`, `sender`
  = its id, a lease it renews). A second independent `digest send` is still refused (exit 5).
  With `--workers N` it then starts N-1 `digest worker` processes on this host.
* `digest worker` never takes the issue. It joins only while the issue is `sending` under a live
  lease (`ledger.join_issue`); otherwise it says why and exits 0 (nothing to do is not an error).
  Before every claim it looks again, so a send the holder paused or finished stops its workers
  after the batches they have in flight are recorded.
* Everyone claims batches the same way (`ledger.claim_batch`: the next batch row planned for
  the issue, `FOR UPDATE SKIP LOCKED` on PostgreSQL), each claim with a lease of its own
  (`SendPolicy.batch_lease`), renewed while its worker waits on a backoff.
* A worker that runs out of work exits. The holder, once nothing is claimable, waits for the
  other workers' claimed batches: recorded, or orphaned when their lease runs out (a worker
  killed mid-batch). An orphaned batch whose request had started becomes `uncertain` and is
  claimed again with the same batch key (an idempotent provider de-duplicates it; with the
  others it waits for `--retry-uncertain`); one whose request never started is pending again. Then the holder ends the send (`finish_issue` checks nothing is open).
* A worker that trips the circuit breaker pauses the whole send (`ledger.pause_send`); the
  holder notices at its next lease renewal.
* If the holder dies, its workers finish the pending rows and exit when its lease runs out; the
  next `digest send` takes over as after any crash.

SQLite has one writer at a time: there one process sends (`effective_workers` downgrades
`--workers` with a message), its HTTP calls overlapped by the Sender's pipeline.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlmodel import Session

from digest.delivery import ledger
from digest.database import session_scope
from digest.errors import DigestError
from digest.delivery.providers.base import Provider
from digest.delivery.send import Sender, SendPolicy, SendReport, issue_parts, policy_from


def effective_workers(dialect: str, requested: int) -> tuple[int, str]:
    """How many processes will send, and a note when that is not what was asked."""
    if requested < 1:
        raise DigestError(f"--workers must be at least 1, not {requested}")
    if dialect != "postgresql" and requested > 1:
        return 1, (f"--workers {requested}: {dialect} has one writer at a time, so one process "
                   "sends (its provider calls still overlap); use PostgreSQL to send from several")
    return requested, ""


class Worker(Sender):
    """A Sender that joins the send another process holds, instead of acquiring the issue."""

    joined: bool = False
    left: str = ""  # why this worker stopped claiming (the send stopped), if it did
    stop_reason: str | None = None  # why it paused the send, if it did

    def _enter(self, now: dt.datetime) -> SendReport | None:
        with session_scope(self.engine) as session:
            membership = ledger.join_issue(session, self._issue_id, now=now)
            self.joined = membership.joined
            if membership.joined:
                ledger.release_orphans(session, self._issue_id, now=now, expired_only=True)
                counts = ledger.counts(session, self._issue_id)
                retrying = self.provider.idempotent or self.policy.retry_uncertain
                self._stats.total = counts["pending"] + (counts["uncertain"] if retrying else 0)
        if not membership.joined:
            return self._report(message=membership.message)
        return None

    def _renew(self, session: Session, now: dt.datetime) -> bool:
        """Checked before every claim (one primary-key read): a paused or finished send stops
        new claims at once; what is in flight is still recorded."""
        if not self.left:
            membership = ledger.join_issue(session, self._issue_id, now=now)
            if not membership.joined:
                self.left = membership.message
        return True

    def _claim(self, session: Session, now: dt.datetime) -> ledger.Claim | None:
        return None if self.left else super()._claim(session, now)

    def _keep_issue(self, session: Session, now: dt.datetime, lease: dt.timedelta) -> bool:
        return ledger.join_issue(session, self._issue_id, now=now).joined

    def _left_as(self) -> str:
        return ("this worker's batches are taken over by the send's holder once their lease "
                "runs out")

    def _wait_for_delayed(self) -> bool:
        return False if self.left else super()._wait_for_delayed()

    def _wait_for_others(self) -> bool:
        return False  # the holder waits for stragglers; a worker with nothing to claim leaves

    def _finish(self, stop: str | None) -> SendReport:
        if stop is not None:
            self.stop_reason = stop
            with session_scope(self.engine) as session:
                ledger.pause_send(session, self._issue_id, reason=stop)
        message = self.left or ("paused the send: " + stop if stop else "nothing left to claim")
        return self._report(message=message)


@dataclass(frozen=True)
class WorkerResult:
    report: SendReport
    joined: bool
    sent_now: int
    stop_reason: str | None

    @property
    def exit_code(self) -> int:
        """0 when the worker did its share or had nothing to join; 4 when it paused the send."""
        return 4 if self.stop_reason else 0

    def as_dict(self) -> dict:
        return {**self.report.as_dict(), "role": "worker", "joined": self.joined,
                "stop_reason": self.stop_reason}


def join_send(engine: Engine, issue_id: int, provider: Provider, settings, *,
              policy: SendPolicy | None = None,
              progress: Callable[[int, int], None] | None = None,
              **timing) -> WorkerResult:
    """Join the running send of `issue_id` and claim batches until none is left."""
    if engine.dialect.name != "postgresql":
        raise DigestError(f"`digest worker` needs PostgreSQL: with {engine.dialect.name} one "
                          "`digest send` does all the sending")
    parts = issue_parts(engine, issue_id, settings)
    worker = Worker(engine, provider, letter=parts.letter, recipients=parts.recipients,
                    parts=parts, policy=policy or policy_from(settings), progress=progress,
                    **timing)
    report = worker.run(issue_id)
    return WorkerResult(report, worker.joined, report.sent_now, worker.stop_reason)


# --- helper processes ---------------------------------------------------------------------------

def worker_command(edition_key: str, *, claim_lease: float | None = None,
                   retry_uncertain: bool = False) -> list[str]:
    """The command line of one helper: the same interpreter and environment as the holder."""
    cmd = [sys.executable, "-m", "digest.cli", "worker", "--week", edition_key,
           "--format", "json"]
    if claim_lease is not None:
        cmd += ["--lease", f"{claim_lease:g}"]
    if retry_uncertain:
        cmd.append("--retry-uncertain")
    return cmd


class Helpers:
    """The N-1 `digest worker` processes `digest send --workers N` starts once it holds the
    issue. Their output goes to a log each (stdout JSON, stderr errors) so the holder's terminal
    shows one progress bar; they exit by themselves when nothing is left to claim."""

    def __init__(self, edition_key: str, count: int, *, claim_lease: float | None = None,
                 retry_uncertain: bool = False, log_dir: str | None = None) -> None:
        self.cmd = worker_command(edition_key, claim_lease=claim_lease,
                                  retry_uncertain=retry_uncertain)
        self.count, self.log_dir = count, log_dir
        self.processes: list[subprocess.Popen] = []

    def start(self) -> None:
        for index in range(self.count):
            out = err = subprocess.DEVNULL
            if self.log_dir:
                os.makedirs(self.log_dir, exist_ok=True)
                out = open(os.path.join(self.log_dir, f"worker-{index + 1}.json"), "wb")
                err = open(os.path.join(self.log_dir, f"worker-{index + 1}.err"), "wb")
            self.processes.append(subprocess.Popen(self.cmd, stdout=out, stderr=err,
                                                   stdin=subprocess.DEVNULL))

    def wait(self, timeout: float = 120.0) -> list[int]:
        """Exit codes of the helpers (they stop on their own once nothing is claimable)."""
        codes = []
        for process in self.processes:
            try:
                codes.append(process.wait(timeout))
            except subprocess.TimeoutExpired:
                process.terminate()  # its claims expire and are taken over: nothing is lost
                codes.append(process.wait(10))
        return codes


__all__ = ["Helpers", "Worker", "WorkerResult", "effective_workers", "join_send",
           "worker_command"]
