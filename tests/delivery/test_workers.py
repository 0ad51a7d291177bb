"""Several workers on one send (digest/workers.py).

In-process, on both backends: who may join a send, that a worker never ends or takes the issue,
that a holder waits for another worker's claims and takes over the orphaned ones after their
lease (fake clock). With real processes on PostgreSQL: four workers (`digest send --workers 2`
plus two `digest worker`s) on a 20,000-subscriber issue through the Resend provider to a loopback
sink that de-duplicates by Idempotency-Key; one worker is killed with SIGKILL half-way, with a
request of its own processed and unanswered. Every subscriber ends `sent` exactly once, the
dead worker's batches are claimed again after their 2-second lease (the unanswered one is
replayed under its key), and the ledger agrees with the sink.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy import and_, func, select, text

from conftest import _truncate
from delivery_support import START, FakeClock, RecordingProvider, add_subscribers, make_issue
from digest.delivery import ledger
from digest.database import make_engine, session_scope
from digest.errors import DigestError
from digest.database.models import Delivery, DeliveryBatch, Issue
from digest.delivery.plan import plan_deliveries
from digest.delivery.send import RecipientFactory, Sender, SendPolicy, letter_for, links_for
from digest.delivery.workers import Worker, effective_workers, join_send, worker_command
from test_crash_resume import Sink, SinkHandler, child_env

pytestmark = pytest.mark.slow

LEASE = dt.timedelta(minutes=5)


# --- in-process: the protocol ---------------------------------------------------------------------

def _parts(settings, issue):
    letter = letter_for(issue, settings)
    return letter, RecipientFactory(letter, links_for(issue, settings), issue)


def _hold(engine, issue_id: int, holder: str, now: dt.datetime) -> None:
    """Another process's `digest send` holding the issue, with its deliveries planned."""
    with session_scope(engine) as session:
        assert ledger.acquire_issue(session, issue_id, sender=holder, now=now, lease=LEASE).acquired
        plan_deliveries(session, issue_id, now=now)


def _worker(engine, settings, issue, provider, clock, **policy) -> Worker:
    letter, factory = _parts(settings, issue)
    return Worker(engine, provider, letter=letter, recipients=factory,
                  policy=SendPolicy(**policy), clock=clock, sleep=clock.sleep)


def test_worker_joins_a_running_send_and_leaves_the_ending_to_its_holder(engine, session,
                                                                          settings):
    add_subscribers(engine, 35)
    issue = make_issue(session)
    clock = FakeClock()
    _hold(engine, issue.id, "elsewhere:1:holder", START)
    provider = RecordingProvider(batch_limit=10)

    report = _worker(engine, settings, issue, provider, clock).run(issue.id)

    assert report.counts["sent"] == 35 and report.sent_now == 35
    assert [len(c.emails) for c in provider.calls] == [10, 10, 10, 5]
    session.refresh(issue)
    # Still the holder's: only the holder finishes the send.
    assert issue.status == "sending" and issue.sender == "elsewhere:1:holder"


@pytest.mark.parametrize("status", ["ready", "paused", "sent"])
def test_worker_with_no_running_send_says_so_and_sends_nothing(engine, session, settings, status):
    add_subscribers(engine, 5)
    issue = make_issue(session, status=status)
    provider = RecordingProvider()
    worker = _worker(engine, settings, issue, provider, FakeClock())

    report = worker.run(issue.id)

    assert not worker.joined and provider.calls == []
    assert "nothing to join" in report.message and report.counts.total == 0


def test_worker_does_not_join_a_holder_whose_lease_ran_out(engine, session, settings):
    add_subscribers(engine, 5)
    issue = make_issue(session)
    _hold(engine, issue.id, "elsewhere:1:holder", START)
    clock = FakeClock(START + LEASE + dt.timedelta(seconds=1))
    provider = RecordingProvider()
    worker = _worker(engine, settings, issue, provider, clock)

    report = worker.run(issue.id)

    assert not worker.joined and provider.calls == []
    assert "lease run out" in report.message


def test_worker_stops_claiming_once_the_send_is_paused(engine, session, settings):
    add_subscribers(engine, 50)
    issue = make_issue(session)
    _hold(engine, issue.id, "elsewhere:1:holder", START)

    def pause_after_first(index, recipients):
        if index == 0:  # the holder's breaker tripped meanwhile
            with session_scope(engine) as s:
                assert ledger.pause_issue(s, issue.id, sender="elsewhere:1:holder",
                                          reason="circuit breaker")
        return None

    provider = RecordingProvider(batch_limit=10, script=[pause_after_first])
    report = _worker(engine, settings, issue, provider, FakeClock(), in_flight=1).run(issue.id)

    assert len(provider.calls) == 1  # the batch in flight is recorded, no new one is claimed
    assert report.counts["sent"] == 10 and report.counts["pending"] == 40
    assert report.status == "paused" and report.reason == "circuit breaker"


def test_worker_that_trips_the_breaker_pauses_the_whole_send(engine, session, settings):
    add_subscribers(engine, 200)
    issue = make_issue(session)
    _hold(engine, issue.id, "elsewhere:1:holder", START)
    provider = RecordingProvider(batch_limit=50,
                                 reject={f"reader{i}@example.com": "unknown address"
                                         for i in range(1, 201)})
    worker = _worker(engine, settings, issue, provider, FakeClock(), in_flight=1)

    report = worker.run(issue.id)

    assert worker.stop_reason and "circuit breaker" in worker.stop_reason
    assert report.status == "paused" and "circuit breaker" in report.reason
    with session_scope(engine) as s:  # the holder learns at its next renewal
        assert ledger.renew_issue_lease(s, issue.id, sender="elsewhere:1:holder", now=START,
                                        lease=LEASE) is None


def test_holder_waits_for_a_workers_claim_and_takes_it_over_after_its_lease(engine, session,
                                                                            settings):
    """A worker claimed a batch and died: the holder sends everything else, waits out the
    claim's lease (fake clock), and sends the orphaned batch again under the same key."""
    add_subscribers(engine, 30)
    issue = make_issue(session)
    clock = FakeClock()
    letter, factory = _parts(settings, issue)
    provider = RecordingProvider(batch_limit=10, idempotent=True, clock=clock)
    claim_lease = dt.timedelta(seconds=2)
    policy = SendPolicy(claim_lease=claim_lease, poll=0.5)
    dead_key = []

    def worker_claims_and_dies() -> None:  # runs once the holder holds the issue
        with session_scope(engine) as s:
            claim = ledger.claim_batch(s, issue.id, batch_key="2026-W47-deadworker", limit=10,
                                       now=START, lease_until=START + claim_lease)
            assert ledger.start_request(s, claim, now=START)  # its request went out
            dead_key.append(claim.batch_key)

    sender = Sender(engine, provider, letter=letter, recipients=factory, policy=policy,
                    clock=clock, sleep=clock.sleep, on_start=worker_claims_and_dies)
    report = sender.run(issue.id)

    assert report.complete and report.status == "sent" and report.sent == 30
    keys = [c.batch_key for c in provider.calls]
    assert keys.count("2026-W47-deadworker") == 1 and keys[-1] == "2026-W47-deadworker"
    # It waited about one lease for the claim, polling, and no longer.
    assert 2.0 <= sum(clock.sleeps) <= 2.0 + 0.5 + 0.05
    with session_scope(engine) as s:
        batch_attempts = s.execute(select(DeliveryBatch.attempts).where(
            DeliveryBatch.key == "2026-W47-deadworker")).scalars().all()
        answered = s.execute(select(Delivery.attempts).where(
            Delivery.batch_key == "2026-W47-deadworker")).scalars().all()
    # Claimed twice (the dead worker's claim, then ours), answered once.
    assert batch_attempts == [2] and answered == [1] * 10


def test_sqlite_sends_from_one_process(engine, settings):
    assert effective_workers("postgresql", 4) == (4, "")
    count, note = effective_workers("sqlite", 4)
    assert count == 1 and "one writer" in note
    assert effective_workers("sqlite", 1) == (1, "")
    with pytest.raises(DigestError, match="at least 1"):
        effective_workers("postgresql", 0)
    if engine.dialect.name == "sqlite":
        with pytest.raises(DigestError, match="needs PostgreSQL"):
            join_send(engine, 1, RecordingProvider(), settings)
    assert worker_command("2026-W47", claim_lease=2.0)[-2:] == ["--lease", "2"]


# --- real processes on PostgreSQL ------------------------------------------------------------------

SUBSCRIBERS = 20_000
KEY = "2026-W47"
VICTIM_TOKEN = "victim-token"
WAIT = 60.0  # every bounded wait below


class SlowSink(Sink):
    """The crash-test sink with a provider's latency, and a kill switch for one worker: the
    victim is told apart by its API token, and killed while a request of its own is processed
    and unanswered (so that batch went out, and only the same Idempotency-Key can save it)."""

    def __init__(self, latency: float) -> None:
        super().__init__()
        self.RequestHandlerClass = SlowHandler
        self.latency = latency
        self.victim: subprocess.Popen | None = None
        self.kill_after = 0  # requests from anyone before the victim's next one kills it
        self.by_token: dict[str, int] = {}


class SlowHandler(SinkHandler):
    server: SlowSink

    def do_POST(self) -> None:
        sink = self.server
        time.sleep(sink.latency)
        token = self.headers.get("Authorization", "").removeprefix("Bearer ")
        with sink.lock:
            sink.requests += 1
            sink.by_token[token] = sink.by_token.get(token, 0) + 1
            trigger = (token == VICTIM_TOKEN and sink.victim is not None
                       and sink.requests >= sink.kill_after and not sink.killed.is_set())
            if trigger:
                sink.killed.set()
        if trigger:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.resend(body)  # processed: delivered and remembered under its key ...
            os.kill(sink.victim.pid, signal.SIGKILL)  # ... and the answer never goes back
            return
        super().do_POST()


@pytest.fixture
def pg(pg_url):
    engine = make_engine(pg_url)
    _truncate(engine)
    yield pg_url, engine
    engine.dispose()


def _bulk_subscribers(engine, n: int) -> None:
    with engine.begin() as conn:  # set-wise: 20,000 rows in one statement
        conn.execute(text("""
            INSERT INTO subscribers (email, name, status, source, created_at, updated_at,
                                     confirmed_at)
            SELECT 'reader' || i || '@example.com', 'Reader ' || i, 'active', 'import',
                   :at, :at, :at FROM generate_series(1, :n) AS i"""), {"n": n, "at": START})


def _cli(env, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "digest.cli", *args], env=env,
                            cwd=env["_CWD"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {WAIT:.0f} s waiting for {what}")
        time.sleep(0.05)


@pytest.mark.postgres
def test_four_workers_one_killed_every_subscriber_sent_exactly_once(pg, tmp_path):
    url, engine = pg
    _bulk_subscribers(engine, SUBSCRIBERS)
    with session_scope(engine) as session:
        issue = make_issue(session, KEY)
    sink = SlowSink(latency=0.03)  # ~30 ms a call: 200 calls keep four workers busy for seconds
    serving = threading.Thread(target=sink.serve_forever, daemon=True)
    serving.start()
    try:
        env = child_env(url, "resend", sink, tmp_path) | {"_CWD": str(tmp_path)}
        holder = _cli(env, "send", "--week", KEY, "--workers", "2", "--lease", "2",
                      "--format", "json")

        def sending() -> bool:
            with engine.connect() as conn:
                return conn.execute(select(Issue.status).where(Issue.id == issue.id)
                                    ).scalar_one() == "sending"

        _until(sending, "the holder to acquire the issue")
        worker = _cli(env, "worker", "--week", KEY, "--lease", "2", "--format", "json")
        victim = _cli(env | {"DIGEST_PROVIDER_TOKEN": VICTIM_TOKEN}, "worker", "--week", KEY,
                      "--lease", "2", "--format", "json")
        with sink.lock:
            sink.victim, sink.kill_after = victim, SUBSCRIBERS // 100 // 2  # half the calls
        started = time.monotonic()

        victim_out, victim_err = victim.communicate(timeout=WAIT)
        worker_out, worker_err = worker.communicate(timeout=WAIT)
        holder_out, holder_err = holder.communicate(timeout=WAIT)
        took = time.monotonic() - started
    finally:
        sink.shutdown()
        sink.server_close()

    assert sink.killed.is_set() and victim.returncode == -signal.SIGKILL, victim_err.decode()
    assert worker.returncode == 0, worker_err.decode()
    assert holder.returncode == 0, holder_err.decode()
    report = json.loads(holder_out)
    assert report["status"] == "sent" and report["complete"], report
    assert report["sent"] == SUBSCRIBERS and report["uncertain"] == report["pending"] == 0
    joined = json.loads(worker_out)
    assert joined["joined"] and joined["sent_this_run"] > 0, joined
    # Four processes sent: the holder, its helper (same token), the worker, the victim.
    assert sink.by_token[VICTIM_TOKEN] >= 1 and sink.by_token["loopback-token"] >= 3

    # Every subscriber got it exactly once; the sink saw the victim's unanswered call again,
    # under the same key, and answered it from its idempotency cache.
    expected = {f"reader{i}@example.com" for i in range(1, SUBSCRIBERS + 1)}
    copies = sink.copies(issue.subject)
    assert set(copies) == expected
    assert set(copies.values()) == {1}
    assert sink.replayed >= 1
    with engine.connect() as conn:
        by_status = dict(conn.execute(select(Delivery.status, func.count())
                                      .where(Delivery.issue_id == issue.id)
                                      .group_by(Delivery.status)).all())
        reclaimed = conn.execute(
            select(func.count()).select_from(Delivery).join(DeliveryBatch, and_(
                DeliveryBatch.issue_id == Delivery.issue_id,
                DeliveryBatch.batch_no == Delivery.batch_no))
            .where(Delivery.issue_id == issue.id, DeliveryBatch.attempts > 1)).scalar_one()
    assert by_status == {"sent": SUBSCRIBERS} == {"sent": sum(copies.values())}
    # The dead worker's batches (one or two: it keeps two in flight) were claimed again: the
    # one whose request was out under its key, the one claimed ahead as a pending batch.
    assert reclaimed in (100, 200), reclaimed
    assert took < WAIT
