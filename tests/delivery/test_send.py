"""The send loop against a real database and a recording provider, with a fake clock: retries,
Retry-After, the rate limit, the circuit breaker, bounces, resume and the CLI's exit codes."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import random
import threading
from pathlib import Path

import pytest
from sqlalchemy import delete, event, func, select, update
from typer.testing import CliRunner

from delivery_support import (START, FakeClock, RecordingProvider, add_subscribers, make_issue,
                              rate_limited, timeout)
from digest.delivery import ledger
from digest.database import session_scope
from digest.errors import PermanentProviderError, TransientProviderError, UncertainProviderError
from digest.database.models import Delivery, DeliveryBatch, Issue
from digest.edition.personalize import NAME, UNSUBSCRIBE_URL, VIEW_URL
from digest.delivery.providers.base import Outcome
from digest.delivery.send import (CircuitBreaker, RetryPolicy, SendPolicy, TokenBucket, links_for,
                         send_issue)
from subscribers.models import Subscriber
from subscribers.links import parse_issue_subject
from subscribers.tokens import Signer

NO_BREAKER = dict(breaker_min_sample=10**9)


@pytest.fixture
def clock():
    return FakeClock()


def run(engine, issue, provider, settings, clock, **policy):
    """One send with a fake clock. One batch at a time unless `in_flight` says otherwise, so
    counts of calls are exact; the pipeline has its own tests below."""
    policy.setdefault("in_flight", 1)
    return send_issue(engine, issue.id, provider, settings, clock=clock, sleep=clock.sleep,
                      rng=random.Random(7), policy=SendPolicy(**policy))


def states(session, issue) -> dict[str, int]:
    found = ledger.counts(session, issue.id).by_status
    session.commit()
    return found


def deliveries(session, issue) -> list[Delivery]:
    found = list(session.exec(select(Delivery).where(Delivery.issue_id == issue.id)
                              .order_by(Delivery.id)
                              .execution_options(populate_existing=True)).scalars())
    session.commit()
    return found


def issue_row(session, issue) -> Issue:
    found = session.exec(select(Issue).where(Issue.id == issue.id)
                         .execution_options(populate_existing=True)).scalars().one()
    session.commit()
    return found


# --- the happy path -----------------------------------------------------------------------------

def test_sends_everyone_once_in_batches_at_the_provider_limit(engine, session, settings, clock):
    add_subscribers(engine, 25)
    add_subscribers(engine, 3, status="unsubscribed", start=100)
    issue = make_issue(session)
    provider = RecordingProvider(batch_limit=10)

    report = run(engine, issue, provider, settings, clock)

    assert [len(c.emails) for c in provider.calls] == [10, 10, 5]
    sent_to = [e for c in provider.calls for e in c.emails]
    assert sorted(sent_to) == sorted(f"reader{i}@example.com" for i in range(1, 26))
    assert len({c.batch_key for c in provider.calls}) == 3
    assert report.complete and report.status == "sent" and report.sent == 25
    assert (report.failed, report.uncertain, report.pending, report.sent_now) == (0, 0, 0, 25)
    assert issue_row(session, issue).sent_at == START
    assert {d.provider_message_id for d in deliveries(session, issue)} == {
        f"pm-{d.id}" for d in deliveries(session, issue)}
    assert clock.sleeps == []


def test_recipients_carry_signed_links_a_name_and_a_fixed_message_id(engine, session, settings,
                                                                     clock):
    ids = add_subscribers(engine, 3)
    issue = make_issue(session)
    provider = RecordingProvider(batch_limit=10)
    run(engine, issue, provider, settings, clock)

    signer = Signer(settings.signing_key())
    rows = deliveries(session, issue)
    for recipient, sid, row in zip(provider.calls[0].recipients, ids, rows):
        unsubscribe = recipient.values[UNSUBSCRIBE_URL]
        assert unsubscribe.startswith("https://digest.example.test/u/")
        claim = signer.verify(unsubscribe.rsplit("/", 1)[1], "unsubscribe")
        # names the reader and the issue it came in, bound to this reader's address only
        assert parse_issue_subject(claim.subject) == (sid, issue.id)
        assert signer.held_by(claim, recipient.email, since=clock.now)
        assert not signer.held_by(claim, "someone.else@example.com", since=clock.now)
        view = recipient.values[VIEW_URL]
        assert view.startswith("https://digest.example.test/issues/2026-W47?t=")
        assert signer.verify_id(view.split("?t=")[1], "view") == sid
        assert recipient.values[NAME] == f"Reader {sid}"
        assert recipient.delivery_id == row.id
        assert recipient.message_id == f"digest.2026-W47.{row.id}.abc123de"
    letter = provider.letters[0]
    assert letter.tag == "2026-W47" and letter.list_id == (
        "Weekly AI Tool Verdicts <weekly-verdicts.digest.example.test>")
    html, text = letter.fill(provider.calls[0].recipients[0])
    assert "%%" not in html + text and "Reader 1" in text
    # tokens are stamped with the issue's time, so a rebuilt batch is the same request
    again = links_for(issue, settings)
    first = provider.calls[0].recipients[0]
    assert again.unsubscribe(ids[0], first.email, issue.id) == first.values[UNSUBSCRIBE_URL]


def test_no_per_subscriber_queries(engine, session, settings, clock):
    """Statements grow with the number of batches, not of subscribers: doubling the list (two
    batches more) adds a few statements per batch, never one per subscriber (the start of each
    request is one small write of its own, committed before the call)."""
    counted = []
    for extra, start in ((200, 1), (200, 1000)):
        add_subscribers(engine, extra, start=start)
        issue = make_issue(session, key=f"2026-W{47 + len(counted)}")
        seen: list[str] = []
        listener = lambda conn, cur, stmt, *a: seen.append(stmt)  # noqa: E731
        event.listen(engine, "before_cursor_execute", listener)
        try:
            report = run(engine, issue, RecordingProvider(batch_limit=100), settings, clock)
        finally:
            event.remove(engine, "before_cursor_execute", listener)
        assert report.sent == 200 * (len(counted) + 1)
        counted.append(len(seen))
    # Fixed per send: acquiring, the segment editions, planning, finishing; and two batches, each
    # started in a write of its own (and on SQLite, each looking up its segment before its rows).
    assert counted[0] < 55 + 2 * 4, counted
    assert counted[1] - counted[0] <= 2 * 11, counted


def test_outbox_messages_parse_with_unsubscribe_headers(engine, session, settings, clock):
    """The default provider end to end: .eml files with both parts and RFC 8058 headers."""
    from digest.delivery.providers.outbox import OutboxProvider

    add_subscribers(engine, 3)
    issue = make_issue(session)
    report = run(engine, issue, OutboxProvider(settings.outbox_dir), settings, clock)
    assert report.complete
    files = sorted((Path(settings.outbox_dir) / "2026-W47").glob("*.eml"))
    assert len(files) == 3
    msg = email.message_from_bytes(files[0].read_bytes(), policy=email.policy.default)
    assert msg.get_content_type() == "multipart/alternative"
    assert str(msg["List-Unsubscribe"]).strip().startswith("<https://digest.example.test/u/")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    first = deliveries(session, issue)[0]
    assert str(msg["Message-ID"]).strip() == f"<digest.2026-W47.{first.id}.abc123de@localhost>"


# --- retries --------------------------------------------------------------------------------------

def test_transient_failures_retry_with_backoff_and_the_same_batch_key(engine, session, settings,
                                                                      clock):
    add_subscribers(engine, 5)
    issue = make_issue(session)
    err = TransientProviderError("503 unavailable", status=503)
    provider = RecordingProvider(batch_limit=10, clock=clock, script=[err, err, err])

    report = run(engine, issue, provider, settings, clock,
                 retry=RetryPolicy(attempts=6, base=1.0, cap=60.0))

    assert report.complete and report.sent == 5
    assert len(provider.calls) == 4 and len({c.batch_key for c in provider.calls}) == 1
    # exponential with jitter: attempt n waits between half and all of base * 2**(n-1)
    assert len(clock.sleeps) == 3
    for n, slept in enumerate(clock.sleeps, start=1):
        assert 2 ** (n - 1) / 2 <= slept <= 2 ** (n - 1)
    assert [c.at - provider.calls[0].at for c in provider.calls[1:]] == pytest.approx(
        [sum(clock.sleeps[:i]) for i in range(1, 4)])


def test_429_retry_after_is_honoured(engine, session, settings, clock):
    add_subscribers(engine, 5)
    issue = make_issue(session)
    provider = RecordingProvider(batch_limit=10, clock=clock,
                                 script=[rate_limited(7.5), rate_limited(0.2)])
    report = run(engine, issue, provider, settings, clock)
    assert report.complete
    assert clock.sleeps[0] == 7.5  # never sooner than asked
    assert 0.2 <= clock.sleeps[1] <= 2.0  # the backoff when the provider asks for less
    assert provider.calls[1].at - provider.calls[0].at == 7.5


def test_the_provider_rate_headers_make_the_loop_wait_for_the_reset(engine, session, settings,
                                                                    clock):
    from digest.delivery.providers.http import RateLimit

    add_subscribers(engine, 20)
    issue = make_issue(session)
    provider = RecordingProvider(batch_limit=10, clock=clock)
    provider.last_rate_limit = RateLimit(limit=2, remaining=0, reset_after=3.0)
    report = run(engine, issue, provider, settings, clock)
    assert report.complete
    assert provider.calls[1].at - provider.calls[0].at == 3.0


def test_giving_up_pauses_and_leaves_the_batch_pending(engine, session, settings, clock):
    add_subscribers(engine, 15)
    issue = make_issue(session)
    down = TransientProviderError("502 bad gateway", status=502)
    provider = RecordingProvider(batch_limit=10, script=[None] + [down] * 3)

    report = run(engine, issue, provider, settings, clock, retry=RetryPolicy(attempts=3))

    assert not report.complete and report.status == "paused"
    assert "provider unavailable (after 3 attempts)" in report.reason
    assert states(session, issue) == {"sent": 10, "pending": 5}  # an answer: nothing went out
    resumed = run(engine, issue, RecordingProvider(batch_limit=10), settings, clock)
    assert resumed.complete and resumed.sent == 15 and resumed.sent_now == 5


def test_a_batch_is_sending_during_its_request_and_claimed_while_it_waits_out_a_429(
        engine, session, settings, clock):
    """The start of each request is committed before the call; a 429 answer puts the batch
    back to claimed for the wait (the provider took nothing), so a crash then is not in doubt."""
    add_subscribers(engine, 5)
    issue = make_issue(session)
    seen = []

    def during_call(index, recipients):
        seen.append(("call", states(session, issue)))
        return rate_limited(30) if index == 0 else None

    def sleep(seconds):
        seen.append(("wait", states(session, issue)))
        clock.sleep(seconds)

    provider = RecordingProvider(batch_limit=10, script=[during_call, during_call])
    report = send_issue(engine, issue.id, provider, settings, clock=clock, sleep=sleep,
                        rng=random.Random(7), policy=SendPolicy(in_flight=1))
    assert report.complete and report.sent == 5
    assert seen == [("call", {"sending": 5}), ("wait", {"claimed": 5}), ("call", {"sending": 5})]


def test_a_stop_during_a_429_wait_puts_the_batch_back_at_once(engine, session, settings):
    """Ctrl-C (here: from the progress callback, between transactions) while the provider
    thread waits out a Retry-After: the wait ends at once and the refused batch is pending
    again, unsent, instead of the stop waiting as long as the provider asked."""
    import time

    add_subscribers(engine, 30)
    issue = make_issue(session)
    refused = threading.Event()

    def leaves_the_list(index, recipients):  # so the third batch reports a skip on its claim
        with session_scope(engine) as s:
            s.execute(update(Subscriber).where(Subscriber.email == "reader25@example.com")
                      .values(status="unsubscribed"))

    def busy(index, recipients):
        refused.set()
        return rate_limited(20)

    def progress(done, total):
        if done == 11:  # the skip, counted after the third batch's claim was committed
            assert refused.wait(10)
            raise KeyboardInterrupt

    provider = RecordingProvider(batch_limit=10, script=[leaves_the_list, busy])
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        send_issue(engine, issue.id, provider, settings, progress=progress,
                   policy=SendPolicy(in_flight=2))  # the real clock and sleep
    assert time.monotonic() - started < 10
    assert len(provider.calls) == 2
    # Sent and recorded; refused and never sent (pending); claimed, never started (the next
    # run sends it normally).
    assert states(session, issue) == {"sent": 10, "pending": 10, "claimed": 10}
    assert issue_row(session, issue).status == "paused"


def test_a_retried_uncertain_batch_refused_until_giving_up_stays_uncertain(engine, session,
                                                                          settings, clock):
    """An earlier request of the batch may have been accepted, so 429s to its retry settle
    nothing: giving up leaves it uncertain under its key, never pending under a new one."""
    add_subscribers(engine, 10)
    issue = make_issue(session)
    first = RecordingProvider(batch_limit=10, script=[timeout()])
    assert run(engine, issue, first, settings, clock).uncertain == 10
    busy = RecordingProvider(batch_limit=10, script=[rate_limited(1)] * 3)
    report = run(engine, issue, busy, settings, clock, retry_uncertain=True,
                 retry=RetryPolicy(attempts=3))
    assert report.status == "paused" and "after 3 attempts" in report.reason
    assert (report.uncertain, report.pending) == (10, 0)
    assert {c.batch_key for c in busy.calls} == {first.calls[0].batch_key}


def test_a_long_retry_after_pauses_instead_of_blocking(engine, session, settings, clock):
    add_subscribers(engine, 5)
    issue = make_issue(session)
    provider = RecordingProvider(batch_limit=10, script=[rate_limited(3600)])
    report = run(engine, issue, provider, settings, clock, retry=RetryPolicy(max_wait=900))
    assert report.status == "paused" and "asked to wait 3600 s" in report.reason
    assert clock.sleeps == [] and states(session, issue) == {"pending": 5}


def test_per_recipient_transient_outcomes_are_retried_later(engine, session, settings, clock):
    add_subscribers(engine, 4)
    issue = make_issue(session)
    busy = [Outcome.sent("a"), Outcome.transient("postmark 429"), Outcome.sent("c"),
            Outcome.transient("postmark 429")]
    provider = RecordingProvider(batch_limit=10, clock=clock, script=[busy])
    report = run(engine, issue, provider, settings, clock)
    assert report.complete and report.sent == 4
    assert provider.calls[1].emails == ["reader2@example.com", "reader4@example.com"]
    assert provider.calls[1].at > provider.calls[0].at  # waited for the not-before time


def test_a_recipient_failing_transiently_every_time_ends_failed(engine, session, settings, clock):
    add_subscribers(engine, 2)
    issue = make_issue(session)
    always = lambda i, rs: [Outcome.transient("busy") if r.email.startswith("reader1@")  # noqa
                            else Outcome.sent("ok") for r in rs]
    provider = RecordingProvider(batch_limit=10, script=[always] * 10)
    report = run(engine, issue, provider, settings, clock, max_attempts=3)
    assert report.complete and report.sent == 1 and report.failed == 1
    assert report.failed_reasons == {"gave up after 3 attempts: busy": 1}
    assert len(provider.calls) == 3


# --- rate limit -------------------------------------------------------------------------------------

def test_rate_limit_spaces_the_calls(engine, session, settings, clock):
    add_subscribers(engine, 100)
    issue = make_issue(session)
    provider = RecordingProvider(batch_limit=10, clock=clock)
    report = run(engine, issue, provider, settings, clock, rate_limit=20.0)
    assert report.complete
    elapsed = provider.calls[-1].at - provider.calls[0].at
    assert elapsed == pytest.approx(4.0)  # 20 in the first second's burst, 80 more at 20/s
    sent = 0
    for call in provider.calls:  # never more than the burst plus rate x time
        sent += len(call.emails)
        assert sent <= 20 + 20 * (call.at - provider.calls[0].at) + 1e-9


def test_token_bucket_arithmetic():
    clock = FakeClock()
    bucket = TokenBucket(2.0, clock=clock, sleep=clock.sleep)
    assert bucket.take(2) == 0.0
    assert bucket.take(3) == pytest.approx(1.5)
    bucket.refund(2)
    clock.advance(10)
    assert bucket.wait_time(2) == 0.0
    assert TokenBucket(0, clock=clock, sleep=clock.sleep).take(10**6) == 0.0


# --- circuit breaker ----------------------------------------------------------------------------------

def test_breaker_counts_only_the_window():
    breaker = CircuitBreaker(threshold=0.10, window=100, min_sample=50)
    for _ in range(49):
        breaker.record(True)
    assert not breaker.tripped  # below the minimum sample
    breaker.record(True)
    assert breaker.tripped
    for _ in range(100):
        breaker.record(False)
    assert breaker.rate == 0.0 and not breaker.tripped


def test_breaker_pauses_the_send_and_a_rerun_resumes(engine, session, settings, clock):
    add_subscribers(engine, 300)
    issue = make_issue(session)
    wrong = {f"reader{i}@example.com": "postmark 300: invalid address" for i in range(1, 301, 3)}
    provider = RecordingProvider(batch_limit=50, reject=wrong)

    report = run(engine, issue, provider, settings, clock, breaker_threshold=0.10,
                 breaker_window=1000, breaker_min_sample=100)

    assert report.status == "paused" and not report.complete
    assert report.reason.startswith("circuit breaker: 34 of the last 100 recipients")
    assert len(provider.calls) == 2 and report.pending == 200
    assert report.failed_reasons == {"postmark 300: invalid address": 34}
    # the operator fixes the list (here: the provider stops rejecting) and runs send again
    fixed = RecordingProvider(batch_limit=50)
    resumed = run(engine, issue, fixed, settings, clock)
    assert resumed.complete and resumed.sent == 266 and resumed.failed == 34
    assert sum(len(c.emails) for c in fixed.calls) == 200  # failed ones are never retried


def test_inactive_recipients_are_marked_bounced(engine, session, settings, clock):
    add_subscribers(engine, 5)
    issue = make_issue(session)
    provider = RecordingProvider(batch_limit=10, inactive={"reader2@example.com"})
    report = run(engine, issue, provider, settings, clock, **NO_BREAKER)
    assert report.complete and report.failed_reasons == {"inactive recipient (406)": 1}
    found = session.exec(select(Subscriber.status, Subscriber.bounced_at)
                         .where(Subscriber.email == "reader2@example.com")).one()
    session.commit()
    assert (found.status, found.bounced_at) == ("bounced", START)
    next_week = make_issue(session, "2026-W48")
    nxt = RecordingProvider(batch_limit=10)
    run(engine, next_week, nxt, settings, clock)
    assert "reader2@example.com" not in nxt.calls[0].emails and len(nxt.calls[0].emails) == 4


def test_subscribers_who_left_after_planning_are_skipped(engine, session, settings, clock):
    add_subscribers(engine, 6)
    issue = make_issue(session)
    gone = RecordingProvider(batch_limit=3, script=[PermanentProviderError("401 bad token",
                                                                           status=401)])
    paused = run(engine, issue, gone, settings, clock)  # planned, then paused by the 401
    assert paused.status == "paused" and "401 bad token" in paused.reason
    assert states(session, issue) == {"pending": 6}
    session.execute(update(Subscriber).where(Subscriber.email.in_(
        ["reader2@example.com", "reader5@example.com"])).values(status="unsubscribed"))
    session.commit()
    provider = RecordingProvider(batch_limit=3)
    report = run(engine, issue, provider, settings, clock)
    assert report.complete and (report.sent, report.skipped) == (4, 2)
    assert "reader2@example.com" not in [e for c in provider.calls for e in c.emails]
    reasons = {d.reason for d in deliveries(session, issue) if d.status == "skipped"}
    assert reasons == {"subscriber unsubscribed"}


# --- uncertainty and resume ------------------------------------------------------------------------------

def test_no_answer_leaves_the_batch_uncertain_and_never_resends_it(engine, session, settings,
                                                                   clock):
    add_subscribers(engine, 30)
    issue = make_issue(session)
    provider = RecordingProvider(batch_limit=10, script=[None, UncertainProviderError("timed out")])

    report = run(engine, issue, provider, settings, clock)

    assert len(provider.calls) == 3  # the unanswered batch is not re-sent
    assert (report.sent, report.uncertain) == (20, 10) and not report.complete
    assert report.status == "paused" and "--retry-uncertain" in report.reason
    again = RecordingProvider(batch_limit=10)
    second = run(engine, issue, again, settings, clock)
    assert again.calls == [] and second.uncertain == 10 and not second.complete
    retried = RecordingProvider(batch_limit=10)
    final = run(engine, issue, retried, settings, clock, retry_uncertain=True)
    assert final.complete and final.sent == 30
    assert retried.calls[0].emails == [f"reader{i}@example.com" for i in range(11, 21)]


def test_an_idempotent_provider_retries_an_unanswered_batch_with_the_same_key(engine, session,
                                                                             settings, clock):
    add_subscribers(engine, 10)
    issue = make_issue(session)
    provider = RecordingProvider(batch_limit=10, idempotent=True,
                                 script=[UncertainProviderError("timed out")])
    report = run(engine, issue, provider, settings, clock)
    assert report.complete and report.sent == 10
    assert [c.batch_key for c in provider.calls] == [provider.calls[0].batch_key] * 2
    first, second = provider.calls
    assert [r.message_id for r in first.recipients] == [r.message_id for r in second.recipients]
    assert [dict(r.values) for r in first.recipients] == [dict(r.values) for r in second.recipients]


def test_without_an_answer_three_times_in_a_row_the_send_pauses(engine, session, settings, clock):
    add_subscribers(engine, 50)
    issue = make_issue(session)
    provider = RecordingProvider(batch_limit=10, script=[timeout()] * 5)
    report = run(engine, issue, provider, settings, clock)
    assert report.status == "paused" and "did not answer 3 batches in a row" in report.reason
    assert (report.uncertain, report.pending) == (30, 20)


def test_an_answered_batch_ends_a_streak_of_unanswered_ones(engine, session, settings, clock):
    """Two unanswered, one answered, two unanswered: never three in a row, so the send runs to
    its end (and leaves the four uncertain batches for --retry-uncertain)."""
    add_subscribers(engine, 50)
    issue = make_issue(session)
    provider = RecordingProvider(batch_limit=10,
                                 script=[timeout(), timeout(), None, timeout(), timeout()])
    report = run(engine, issue, provider, settings, clock)
    assert len(provider.calls) == 5
    assert (report.sent, report.uncertain, report.pending) == (10, 40, 0)
    assert "did not answer" not in report.reason and "--retry-uncertain" in report.reason


def test_claims_left_by_a_dead_sender_become_uncertain(engine, session, settings, clock):
    """What a kill -9 between claim and record leaves behind, and what each provider does: the
    batch whose request had started is in doubt; the one claimed ahead of it, never started, is
    sent normally."""
    add_subscribers(engine, 12)
    issue = make_issue(session)
    for flavour, idempotent in (("plain", False), ("idempotent", True)):
        with session_scope(engine) as s:
            ledger.acquire_issue(s, issue.id, sender="otherhost:4242:dead", now=START,
                                 lease=dt.timedelta(minutes=5))
            from digest.delivery.plan import plan_deliveries

            plan_deliveries(s, issue.id, now=START)
            out = ledger.claim_batch(s, issue.id, batch_key=f"{flavour}-batch", limit=5,
                                     now=START, lease_until=START + dt.timedelta(minutes=5))
            assert ledger.start_request(s, out, now=START)
            ledger.claim_batch(s, issue.id, batch_key=f"{flavour}-ahead", limit=5, now=START,
                               lease_until=START + dt.timedelta(minutes=5))
        clock.now = (START + dt.timedelta(minutes=6)).timestamp()  # the dead sender's lease is over
        provider = RecordingProvider(batch_limit=5, idempotent=idempotent)
        report = run(engine, issue, provider, settings, clock)
        assert all(c.batch_key != f"{flavour}-ahead" for c in provider.calls)
        if not idempotent:
            assert report.uncertain == 5 and report.sent == 7 and not report.complete
            assert all(c.batch_key != "plain-batch" for c in provider.calls)
            session.execute(update(Issue).where(Issue.id == issue.id).values(status="ready"))
            # Start over: a fresh plan for the idempotent round.
            session.execute(delete(Delivery))
            session.execute(delete(DeliveryBatch))
            session.commit()
        else:
            assert report.complete
            assert provider.calls[0].batch_key == "idempotent-batch"  # same key: de-duplicated
            assert len(provider.calls[0].emails) == 5


def test_a_live_sender_blocks_a_second_one(engine, session, settings, clock):
    add_subscribers(engine, 3)
    issue = make_issue(session)
    with session_scope(engine) as s:
        ledger.acquire_issue(s, issue.id, sender="elsewhere:1:live", now=START,
                             lease=dt.timedelta(minutes=5))
    provider = RecordingProvider()
    report = run(engine, issue, provider, settings, clock)
    assert report.busy and not report.complete and provider.calls == []
    assert report.message.startswith("already being sent by elsewhere:1:live")


def test_an_issue_already_sent_is_not_sent_again(engine, session, settings, clock):
    add_subscribers(engine, 3)
    issue = make_issue(session)
    assert run(engine, issue, RecordingProvider(), settings, clock).complete
    again = RecordingProvider()
    report = run(engine, issue, again, settings, clock)
    assert report.complete and report.message == "already sent" and again.calls == []


def test_losing_the_lease_stops_the_sender(engine, session, settings, clock):
    add_subscribers(engine, 30)
    issue = make_issue(session)

    def stolen(index, recipients):
        # this sender stalls past its lease, and another one takes the issue over meanwhile
        clock.advance(SendPolicy().lease.total_seconds() + 1)
        with session_scope(engine) as s:
            s.execute(update(Issue).where(Issue.id == issue.id).values(sender="thief:1:x"))
        return None

    provider = RecordingProvider(batch_limit=10, script=[stolen])
    report = run(engine, issue, provider, settings, clock)
    assert len(provider.calls) == 1 and "another sender took this issue over" in report.message
    assert states(session, issue) == {"sent": 10, "pending": 20}


def test_an_unexpected_error_pauses_and_leaves_the_claim_for_the_next_run(engine, session,
                                                                          settings, clock):
    add_subscribers(engine, 4)
    issue = make_issue(session)
    provider = RecordingProvider(batch_limit=10, script=[RuntimeError("disk full")])
    with pytest.raises(RuntimeError):
        run(engine, issue, provider, settings, clock)
    assert issue_row(session, issue).status_reason == "stopped by RuntimeError: disk full"
    assert states(session, issue) == {"sending": 4}  # the request had started: in doubt
    report = run(engine, issue, RecordingProvider(idempotent=True), settings, clock)
    assert report.complete


# --- the CLI ------------------------------------------------------------------------------------------

@pytest.fixture
def cli(settings, monkeypatch, db_url):
    """`digest` with this test's settings; returns (invoke, providers handed out)."""
    from digest.cli import app
    from digest.cli import common
    from digest.cli import send as send_command

    monkeypatch.setenv("DIGEST_DATABASE_URL", db_url)
    monkeypatch.setenv("DIGEST_OUTBOX_DIR", settings.outbox_dir)
    monkeypatch.setenv("DIGEST_BASE_URL", settings.base_url)
    monkeypatch.setenv("DIGEST_SECRET_KEY", "test-secret-key-0123456789abcdef")
    common.reset()
    handed: list = []

    def use(provider):
        monkeypatch.setattr(send_command, "build_provider", lambda conf: handed.append(provider)
                            or provider)

    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(app, list(args), catch_exceptions=False)

    yield invoke, use
    common.reset()


def test_cli_send_completes_with_exit_0_and_status_agrees(cli, engine, session, settings):
    invoke, _ = cli
    add_subscribers(engine, 7)
    make_issue(session)
    result = invoke("send", "--week", "2026-W47")
    assert result.exit_code == 0, result.output
    assert "2026-W47: sent" in result.output
    assert len(list((Path(settings.outbox_dir) / "2026-W47").glob("*.eml"))) == 7
    status = invoke("status", "--week", "2026-W47", "--format", "json")
    data = json.loads(status.stdout)
    assert status.exit_code == 0
    assert (data["status"], data["sent"], data["total"], data["complete"]) == ("sent", 7, 7, True)
    again = invoke("send", "--week", "2026-W47", "--format", "json")
    assert again.exit_code == 0 and json.loads(again.stdout)["message"] == "already sent"


def _until_recorded(engine, issue, n: int) -> None:
    """Wait (bounded) until `n` deliveries of the issue have their answer recorded."""
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            done = conn.execute(select(func.count()).select_from(Delivery).where(
                Delivery.issue_id == issue.id, Delivery.status != "pending")).scalar_one()
        if done >= n:
            return
        time.sleep(0.005)
    raise AssertionError(f"{n} deliveries were never recorded")


def test_cli_exit_code_is_non_zero_when_paused_or_uncertain(cli, engine, session):
    invoke, use = cli
    add_subscribers(engine, 200)
    issue = make_issue(session)

    def after_the_breaker(index, recipients):
        # The second batch's call may start while the first one's answer trips the breaker (a
        # pipeline of two): it then answers 503 once the stop is recorded, and the stopping
        # send puts the batch back unsent instead of waiting to retry.
        _until_recorded(engine, issue, 100)
        return TransientProviderError("503 unavailable", status=503)

    use(RecordingProvider(batch_limit=100, script=[None, after_the_breaker],
                          reject={f"reader{i}@example.com": "300 invalid" for i in range(1, 60)}))
    paused = invoke("send", "--week", "2026-W47", "--format", "json")
    data = json.loads(paused.stdout)
    assert paused.exit_code == 4 and data["status"] == "paused"
    assert data["reason"].startswith("circuit breaker") and data["pending"] == 100
    use(RecordingProvider(batch_limit=100, script=[UncertainProviderError("timed out")]))
    uncertain = invoke("send", "--week", "2026-W47")
    assert uncertain.exit_code == 4 and "--retry-uncertain" in uncertain.output
    use(RecordingProvider(batch_limit=100))
    retried = invoke("send", "--week", "2026-W47", "--retry-uncertain")
    assert retried.exit_code == 0, retried.output
    assert states(session, issue) == {"sent": 141, "failed": 59}
    table = invoke("status")
    assert table.exit_code == 0 and "300 invalid" in table.output and "141" in table.output


def test_cli_reports_another_sender_with_its_own_exit_code(cli, engine, session):
    invoke, use = cli
    add_subscribers(engine, 2)
    issue = make_issue(session)
    with session_scope(engine) as s:
        ledger.acquire_issue(s, issue.id, sender="far:1:x", now=dt.datetime.now(dt.timezone.utc),
                             lease=dt.timedelta(minutes=5))
    use(RecordingProvider())
    result = invoke("send", "--week", "2026-W47")
    assert result.exit_code == 5 and "already being sent by far:1:x" in result.output


def test_cli_test_to_sends_one_copy_and_leaves_the_ledger_alone(cli, engine, session):
    invoke, use = cli
    add_subscribers(engine, 5)
    issue = make_issue(session)
    provider = RecordingProvider()
    use(provider)
    result = invoke("send", "--week", "2026-W47", "--test-to", "editor@example.com")
    assert result.exit_code == 0, result.output
    assert "the ledger is unchanged" in result.output
    assert [c.emails for c in provider.calls] == [["editor@example.com"]]
    assert provider.letters[0].subject == "[test] Verdicts 2026-W47"
    assert provider.calls[0].recipients[0].delivery_id is None
    assert states(session, issue) == {}
    assert issue_row(session, issue).status == "ready"


def test_cli_dry_run_counts_and_writes_nothing(cli, engine, session):
    invoke, use = cli
    add_subscribers(engine, 1234)
    issue = make_issue(session)
    provider = RecordingProvider(batch_limit=500)
    use(provider)
    result = invoke("send", "--week", "2026-W47", "--dry-run", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["would_plan"], data["would_send"], data["batches"]) == (1234, 1234, 3)
    assert provider.calls == [] and states(session, issue) == {}
    assert issue_row(session, issue).status == "ready"


def test_cli_refuses_a_malformed_week(cli):
    invoke, _ = cli
    result = invoke("send", "--week", "2026-47")
    assert result.exit_code == 2 and "YYYY-Www" in result.output


# --- the pipeline (two batches in flight) ------------------------------------------------------------

def test_pipelined_send_delivers_everyone_once(engine, session, settings, clock):
    add_subscribers(engine, 95)
    add_subscribers(engine, 5, status="unsubscribed", start=500)
    issue = make_issue(session)
    provider = RecordingProvider(batch_limit=10)
    report = run(engine, issue, provider, settings, clock, in_flight=2)
    sent_to = [e for c in provider.calls for e in c.emails]
    assert len(sent_to) == len(set(sent_to)) == 95
    assert report.complete and report.sent == 95 and report.sent_now == 95
    rows = deliveries(session, issue)
    assert {d.status for d in rows} == {"sent"}
    assert {d.provider_message_id for d in rows} == {f"pm-{d.id}" for d in rows}


def test_pipelined_stop_never_sends_the_batch_waiting_its_turn(engine, session, settings, clock):
    """A refusal of batch 1 stops the send; batch 2, already claimed behind it, goes back to
    pending without a call."""
    add_subscribers(engine, 40)
    issue = make_issue(session)
    second_claim = threading.Event()
    claims = []

    def watch(conn, cursor, statement, params, context, executemany):
        if "UPDATE delivery_batches SET status=" in statement and "attempts=(" in statement:
            claims.append(statement)
            if len(claims) == 2:
                second_claim.set()

    def refused(index, recipients):
        assert second_claim.wait(10)  # the next batch is claimed while this call is out
        return PermanentProviderError("401 bad token", status=401)

    event.listen(engine, "after_cursor_execute", watch)
    try:
        provider = RecordingProvider(batch_limit=10, script=[refused])
        report = run(engine, issue, provider, settings, clock, in_flight=2)
    finally:
        event.remove(engine, "after_cursor_execute", watch)
    assert len(provider.calls) == 1 and len(claims) == 2
    assert report.status == "paused" and "401 bad token" in report.reason
    assert states(session, issue) == {"pending": 40}


def test_pipelined_breaker_sends_at_most_one_more_batch(engine, session, settings, clock):
    add_subscribers(engine, 400)
    issue = make_issue(session)
    wrong = {f"reader{i}@example.com": "300 invalid" for i in range(1, 401, 2)}
    provider = RecordingProvider(batch_limit=50, reject=wrong)
    report = run(engine, issue, provider, settings, clock, in_flight=2, breaker_min_sample=100)
    assert report.status == "paused" and report.reason.startswith("circuit breaker")
    assert len(provider.calls) in (2, 3)  # tripped after two; the third may have been in flight
    assert report.pending == 400 - 50 * len(provider.calls)
    assert report.sent + report.failed == 50 * len(provider.calls)


def test_batch_links_equal_one_at_a_time_links(settings):
    from subscribers.links import Links

    signer = Signer(settings.signing_key(), clock=lambda: 1_764_000_000.7)
    links = Links(settings.base_url, signer)
    ids = [1, 7, 123_456, 10**9]
    emails = [f"r{i}@example.com" for i in ids]
    holders = links.holders(ids, emails)
    assert links.unsubscribe_many(holders) == [links.unsubscribe(i, e) for i, e in zip(ids, emails)]
    assert links.view_many("2026-W47", holders) == [
        links.view("2026-W47", i, e) for i, e in zip(ids, emails)]
    for purpose in ("confirm", "unsubscribe", "view"):
        assert signer.sign_many(purpose, holders) == [
            signer.sign(purpose, i, e) for i, e in zip(ids, emails)]
    assert signer.sign_many("confirm", []) == []
    with pytest.raises(ValueError):
        signer.sign_many("admin", holders)
    for token, email in zip(signer.sign_many("unsubscribe", holders), emails):
        assert signer.held_by(signer.verify(token, "unsubscribe"), email, since=0)


def test_a_send_resumed_with_a_smaller_provider_limit_splits_the_planned_batches(
        engine, session, settings, clock):
    """Planned for batches of 10; the provider refuses the first call and the send pauses; it
    resumes with a provider that takes 4 at a time. The planned batches are split when claimed,
    and everyone gets the issue exactly once."""
    add_subscribers(engine, 25)
    issue = make_issue(session)
    first = RecordingProvider(batch_limit=10,
                              script=[PermanentProviderError("401 bad token", status=401)])
    paused = run(engine, issue, first, settings, clock)
    assert paused.status == "paused" and len(first.calls) == 1
    sizes = session.execute(select(DeliveryBatch.size).order_by(DeliveryBatch.first_id)
                            ).scalars().all()
    session.commit()
    assert sizes == [10, 10, 5]

    smaller = RecordingProvider(batch_limit=4)
    report = run(engine, issue, smaller, settings, clock)
    assert report.complete and report.sent == 25
    # Each planned batch is split on its own: 10 -> 4 + 4 + 2, 10 -> 4 + 4 + 2, 5 -> 4 + 1.
    assert [len(c.emails) for c in smaller.calls] == [4, 4, 2, 4, 4, 2, 4, 1]
    sent = [e for c in smaller.calls for e in c.emails]
    assert sent == [f"reader{i}@example.com" for i in range(1, 26)]
    assert len({c.batch_key for c in smaller.calls}) == 8


@pytest.mark.parametrize("db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)],
                         indirect=True)
def test_the_last_batch_being_claimed_elsewhere_does_not_end_the_send(db_url, engine, session,
                                                                      settings, clock):
    """PostgreSQL: another worker has locked the last batch and not yet committed its claim, so
    this sender's claim skips it. The sender must look again, not end the send with deliveries
    open (it used to pause with an 'uncertain' message and nothing uncertain)."""
    # PostgreSQL only: row locks and SKIP LOCKED are its own; SQLite serialises claims.
    from digest.database import make_engine

    add_subscribers(engine, 20)
    issue = make_issue(session)
    other = make_engine(db_url)
    held = other.connect()
    sleeps_while_locked: list[float] = []

    def first_call(index, recipients):
        # The other worker starts claiming the last batch while our first call is out.
        tx = held.begin()
        row = held.execute(ledger.claim_statement("postgresql", issue.id, now=START)).one()
        first_call.tx, first_call.batch = tx, row
        return None

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if getattr(first_call, "tx", None) is not None:
            sleeps_while_locked.append(seconds)
            if len(sleeps_while_locked) == 3:  # the other worker gives the batch up
                first_call.tx.rollback()
                first_call.tx = None

    provider = RecordingProvider(batch_limit=10, script=[first_call])
    try:
        report = send_issue(engine, issue.id, provider, settings, clock=clock, sleep=sleep,
                            rng=random.Random(7), policy=SendPolicy(in_flight=1))
    finally:
        held.close()
        other.dispose()
    assert report.complete and report.sent == 20, report.as_dict()
    assert len(provider.calls) == 2
    assert sleeps_while_locked == [0.05] * 3  # it looked again shortly, three times
