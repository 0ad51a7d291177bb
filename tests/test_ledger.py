"""The ledger's guarded transitions and the issue's send lock, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import select, update
from sqlmodel import Session

from delivery_support import START, add_subscribers, make_issue
from digest import ledger
from digest.db import make_engine, session_scope
from digest.models import Delivery, Issue
from digest.plan import plan_deliveries
from digest.providers.base import Outcome

LEASE = dt.timedelta(minutes=5)
LATER = START + dt.timedelta(minutes=1)


@pytest.fixture
def planned(engine, session):
    """An issue with 25 planned deliveries; returns the issue."""
    add_subscribers(engine, 25)
    issue = make_issue(session)
    plan_deliveries(session, issue.id, now=START)
    session.commit()
    return issue


def rows(session: Session, issue_id: int) -> list[Delivery]:
    found = list(session.exec(select(Delivery).where(Delivery.issue_id == issue_id)
                              .order_by(Delivery.id)
                              .execution_options(populate_existing=True)).scalars())
    session.commit()
    return found


def claim(session, issue, n=10, *, key=None, now=START):
    got = ledger.claim_batch(session, issue.id, batch_key=key or ledger.new_batch_key(issue.key),
                             limit=n, now=now, lease_until=now + LEASE)
    session.commit()
    return got


# --- claiming -----------------------------------------------------------------------------------

def test_claim_takes_the_next_pending_rows_in_id_order(session, planned):
    first = claim(session, planned, 10, key="k1")
    second = claim(session, planned, 10, key="k2")
    third = claim(session, planned, 10, key="k3")
    assert (first.size, second.size, third.size) == (10, 10, 5)
    assert claim(session, planned, 10) is None
    all_rows = rows(session, planned.id)
    assert [r.batch_key for r in all_rows] == ["k1"] * 10 + ["k2"] * 10 + ["k3"] * 5
    assert {r.status for r in all_rows} == {"claimed"}
    assert {r.attempts for r in all_rows} == {1}
    assert {r.lease_until for r in all_rows} == {START + LEASE}


def test_claim_waits_for_a_delayed_retry(session, planned):
    ids = [r.id for r in rows(session, planned.id)]
    session.execute(update(Delivery).where(Delivery.id.in_(ids[:3]))
                    .values(lease_until=START + dt.timedelta(seconds=30)))
    session.commit()
    got = claim(session, planned, 100, key="now")
    assert got.size == 22
    assert ledger.next_retry_at(session, planned.id) == START + dt.timedelta(seconds=30)
    session.commit()
    assert claim(session, planned, 100, now=START + dt.timedelta(seconds=29)) is None
    assert claim(session, planned, 100, key="later", now=START + dt.timedelta(seconds=30)).size == 3


def test_batch_rows_join_subscribers_in_delivery_order(session, planned):
    claim(session, planned, 4, key="k")
    got = ledger.batch_rows(session, "k")
    session.commit()
    # (delivery id, subscriber id, email, name, status) tuples
    assert [r[2] for r in got] == [f"reader{i}@example.com" for i in range(1, 5)]
    assert [r[4] for r in got] == ["active"] * 4
    assert [r[0] for r in got] == sorted(r[0] for r in got)


# --- recording ------------------------------------------------------------------------------------

def record(session, key, results, *, skipped=(), max_attempts=3, now=LATER):
    got = ledger.record_outcomes(session, key, results, now=now, skipped=skipped,
                                 retry_at=now + dt.timedelta(seconds=10), max_attempts=max_attempts)
    session.commit()
    return got


def test_record_each_kind_of_outcome(session, planned):
    claim(session, planned, 6, key="k")
    ids = [r.id for r in rows(session, planned.id)][:6]
    got = record(session, "k", [
        (ids[0], Outcome.sent("m-0")), (ids[1], Outcome.sent("m-1")),
        (ids[2], Outcome.rejected("invalid address (300)")),
        (ids[3], Outcome.rejected("invalid address (300)")),
        (ids[4], Outcome.transient("busy")),
    ], skipped=[(ids[5], "subscriber unsubscribed")])
    assert (got.sent, got.failed, got.skipped, got.retry) == (2, 2, 1, 1)
    assert got.failed_reasons == {"invalid address (300)": 2}
    by_id = {r.id: r for r in rows(session, planned.id)}
    assert [(by_id[i].status, by_id[i].provider_message_id) for i in ids[:2]] == [
        ("sent", "m-0"), ("sent", "m-1")]
    assert by_id[ids[2]].reason == "invalid address (300)" and by_id[ids[2]].status == "failed"
    retry = by_id[ids[4]]
    assert (retry.status, retry.batch_key, retry.lease_until, retry.reason) == (
        "pending", None, LATER + dt.timedelta(seconds=10), "busy")
    assert (by_id[ids[5]].status, by_id[ids[5]].reason) == ("skipped", "subscriber unsubscribed")
    assert all(by_id[i].lease_until is None for i in ids[:4])


def test_one_message_id_for_a_whole_batch_is_one_statement(engine, session, planned):
    claim(session, planned, 10, key="k")
    ids = [r.id for r in rows(session, planned.id)][:10]
    from sqlalchemy import event

    seen: list[str] = []
    listener = lambda conn, cur, stmt, *a: seen.append(stmt)  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        record(session, "k", [(i, Outcome.sent("x-batch-1")) for i in ids])
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert len([s for s in seen if s.lstrip().upper().startswith("UPDATE")]) == 1
    assert {r.provider_message_id for r in rows(session, planned.id)[:10]} == {"x-batch-1"}


def test_transient_too_often_becomes_final(session, planned):
    for attempt in range(1, 4):
        got = claim(session, planned, 1, key=f"k{attempt}",
                    now=START + dt.timedelta(minutes=attempt))
        assert got.size == 1
        target = rows(session, planned.id)[0]
        assert target.attempts == attempt
        result = record(session, f"k{attempt}", [(target.id, Outcome.transient("503"))],
                        now=START + dt.timedelta(minutes=attempt), max_attempts=3)
    assert (result.retry, result.gave_up, result.failed) == (0, 1, 1)
    final = rows(session, planned.id)[0]
    assert (final.status, final.reason) == ("failed", "gave up after 3 attempts: 503")


def test_record_never_reopens_a_final_row_or_touches_another_batch(session, planned):
    claim(session, planned, 2, key="mine")
    claim(session, planned, 2, key="other")
    ids = [r.id for r in rows(session, planned.id)]
    record(session, "mine", [(ids[0], Outcome.sent("a")), (ids[1], Outcome.rejected("bad"))])
    # a duplicate, late or confused answer
    record(session, "mine", [(ids[0], Outcome.rejected("late")), (ids[1], Outcome.sent("b"))])
    record(session, "mine", [(ids[2], Outcome.sent("c"))])  # not this batch's row
    by_id = {r.id: r for r in rows(session, planned.id)}
    assert (by_id[ids[0]].status, by_id[ids[0]].provider_message_id) == ("sent", "a")
    assert (by_id[ids[1]].status, by_id[ids[1]].reason) == ("failed", "bad")
    assert by_id[ids[2]].status == "claimed"


def test_a_late_answer_for_an_uncertain_batch_is_still_recorded(session, planned):
    claim(session, planned, 3, key="k")
    assert ledger.mark_uncertain(session, planned.id, now=LATER, expired_only=False) == 3
    session.commit()
    ids = [r.id for r in rows(session, planned.id)][:3]
    record(session, "k", [(i, Outcome.sent(f"m{i}")) for i in ids])
    assert [r.status for r in rows(session, planned.id)[:3]] == ["sent"] * 3


# --- uncertain ----------------------------------------------------------------------------------

def test_only_expired_claims_become_uncertain(session, planned):
    claim(session, planned, 5, key="old", now=START)
    claim(session, planned, 5, key="new", now=START + dt.timedelta(minutes=4))
    expired = START + LEASE + dt.timedelta(seconds=1)
    assert ledger.mark_uncertain(session, planned.id, now=expired) == 5
    session.commit()
    states = {(r.batch_key, r.status) for r in rows(session, planned.id) if r.batch_key}
    assert states == {("old", "uncertain"), ("new", "claimed")}
    assert ledger.mark_uncertain(session, planned.id, now=expired, expired_only=False) == 5
    session.commit()


def test_uncertain_batches_are_claimed_again_with_the_same_key(session, planned):
    claim(session, planned, 4, key="first")
    claim(session, planned, 4, key="second")
    ledger.mark_uncertain(session, planned.id, now=LATER, expired_only=False)
    session.commit()
    again = ledger.claim_uncertain(session, planned.id, limit=10, now=LATER,
                                   lease_until=LATER + LEASE)
    session.commit()
    assert (again.batch_key, again.size, again.retry) == ("first", 4, True)
    then = ledger.claim_uncertain(session, planned.id, limit=10, now=LATER,
                                  lease_until=LATER + LEASE)
    session.commit()
    assert (then.batch_key, then.size) == ("second", 4)
    assert ledger.claim_uncertain(session, planned.id, limit=10, now=LATER,
                                  lease_until=LATER + LEASE) is None
    session.commit()
    assert {r.attempts for r in rows(session, planned.id) if r.batch_key} == {2}


def test_an_uncertain_batch_larger_than_the_limit_is_split_under_new_keys(session, planned):
    claim(session, planned, 10, key="big")
    ledger.mark_uncertain(session, planned.id, now=LATER, expired_only=False)
    session.commit()
    sizes, keys = [], []
    while (got := ledger.claim_uncertain(session, planned.id, limit=4, now=LATER,
                                         lease_until=LATER + LEASE)) is not None:
        session.commit()
        assert got.batch_key.startswith("big~")
        sizes.append(got.size)
        keys.append(got.batch_key)
    session.commit()
    assert sizes == [4, 4, 2]
    assert len(set(keys)) == 3  # "big" itself is never reused for a smaller payload


def test_release_puts_a_batch_back_or_marks_it_uncertain(session, planned):
    claim(session, planned, 3, key="a")
    claim(session, planned, 3, key="b")
    ledger.release_batch(session, "a", now=LATER, uncertain=False, reason="429")
    ledger.release_batch(session, "b", now=LATER, uncertain=True, reason="timeout")
    session.commit()
    got = [(r.status, r.batch_key, r.reason) for r in rows(session, planned.id)[:6]]
    assert got == [("pending", None, "429")] * 3 + [("uncertain", "b", "timeout")] * 3


# --- counts -----------------------------------------------------------------------------------------

def test_counts_group_states_and_failure_reasons(session, planned):
    claim(session, planned, 6, key="k")
    ids = [r.id for r in rows(session, planned.id)][:6]
    record(session, "k", [(ids[0], Outcome.sent("a")), (ids[1], Outcome.rejected("300 invalid")),
                          (ids[2], Outcome.rejected("300 invalid")),
                          (ids[3], Outcome.rejected("406 inactive"))],
           skipped=[(ids[4], "subscriber unsubscribed")])
    c = ledger.counts(session, planned.id)
    session.commit()
    assert c.by_status == {"sent": 1, "failed": 3, "skipped": 1, "claimed": 1, "pending": 19}
    assert c.failed_reasons == {"300 invalid": 2, "406 inactive": 1}
    assert list(c.failed_reasons) == ["300 invalid", "406 inactive"]  # most common first
    assert (c.total, c.open, c["uncertain"]) == (25, 20, 0)


# --- the issue lock ------------------------------------------------------------------------------

def acquire(session, issue, sender, *, now=START, gone=lambda h: False):
    got = ledger.acquire_issue(session, issue.id, sender=sender, now=now, lease=LEASE,
                               holder_gone=gone)
    session.commit()
    return got


def issue_row(session, issue) -> Issue:
    found = session.exec(select(Issue).where(Issue.id == issue.id)
                         .execution_options(populate_existing=True)).scalars().one()
    session.commit()
    return found


def test_one_sender_at_a_time(session, planned):
    first = acquire(session, planned, "host:1:a")
    second = acquire(session, planned, "host:2:b", now=LATER)
    assert first.acquired and not second.acquired
    assert second.status == "sending" and second.holder == "host:1:a"
    assert second.message.startswith("already being sent by host:1:a")
    row = issue_row(session, planned)
    assert (row.status, row.sender, row.sender_lease_until, row.send_started_at) == (
        "sending", "host:1:a", START + LEASE, START)
    assert acquire(session, planned, "host:1:a", now=LATER).acquired  # the holder itself may


def test_an_expired_or_dead_holder_is_taken_over(session, planned):
    acquire(session, planned, "host:1:a")
    later = START + LEASE + dt.timedelta(seconds=1)
    taken = acquire(session, planned, "host:2:b", now=later)
    assert taken.acquired and taken.took_over_from == "host:1:a"
    dead = acquire(session, planned, "host:3:c", now=later, gone=lambda h: h == "host:2:b")
    assert dead.acquired and dead.took_over_from == "host:2:b"
    assert issue_row(session, planned).send_started_at == START  # the first start is kept


def test_lease_renewal_pause_and_finish_are_guarded_by_the_holder(session, planned):
    acquire(session, planned, "me")
    assert ledger.renew_issue_lease(session, planned.id, sender="me", now=LATER,
                                    lease=LEASE) == LATER + LEASE
    assert ledger.renew_issue_lease(session, planned.id, sender="you", now=LATER,
                                    lease=LEASE) is None
    assert not ledger.pause_issue(session, planned.id, sender="you", reason="x")
    assert not ledger.finish_issue(session, planned.id, sender="me", now=LATER)  # 25 pending
    session.commit()
    assert ledger.pause_issue(session, planned.id, sender="me", reason="breaker tripped")
    session.commit()
    row = issue_row(session, planned)
    assert (row.status, row.status_reason, row.sender) == ("paused", "breaker tripped", None)
    resumed = acquire(session, planned, "again", now=LATER)
    assert resumed.acquired and issue_row(session, planned).status_reason == ""
    session.execute(update(Delivery).where(Delivery.issue_id == planned.id).values(status="sent"))
    assert ledger.finish_issue(session, planned.id, sender="again", now=LATER)
    session.commit()
    done = acquire(session, planned, "late", now=LATER)
    assert not done.acquired and done.message == "already sent"
    assert issue_row(session, planned).sent_at == LATER


def test_a_skipped_issue_cannot_be_sent(session):
    issue = make_issue(session, status="skipped")
    got = acquire(session, issue, "me")
    assert not got.acquired and got.message.startswith("skipped")


def test_racing_senders_exactly_one_wins(db_url, session, planned):
    barrier = threading.Barrier(5)
    results: list[ledger.Acquisition] = []
    errors: list[BaseException] = []

    def contender(n: int) -> None:
        eng = make_engine(db_url)
        try:
            barrier.wait()
            with session_scope(eng) as s:
                results.append(ledger.acquire_issue(s, planned.id, sender=f"h:{n}:x", now=START,
                                                    lease=LEASE))
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)
        finally:
            eng.dispose()

    threads = [threading.Thread(target=contender, args=(n,)) for n in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sum(r.acquired for r in results) == 1
    winner = next(r for r in results if r.acquired)
    assert all(r.holder is not None for r in results if not r.acquired)
    assert issue_row(session, planned).sender_lease_until == winner.lease_until


def test_concurrent_claimers_never_share_a_row(db_url, engine, session):
    """Claimers in parallel (PostgreSQL: SKIP LOCKED; SQLite: serialised writers) split the
    deliveries between them with no row claimed twice."""
    add_subscribers(engine, 300)
    issue = make_issue(session)
    plan_deliveries(session, issue.id, now=START)
    session.commit()
    claimed: dict[int, list[str]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def worker(n: int) -> None:
        eng = make_engine(db_url)
        keys = claimed.setdefault(n, [])
        try:
            barrier.wait()
            while True:
                with session_scope(eng) as s:
                    got = ledger.claim_batch(s, issue.id, batch_key=f"w{n}-{len(keys)}", limit=7,
                                             now=START, lease_until=START + LEASE)
                if got is None:
                    return
                keys.append(got.batch_key)
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)
        finally:
            eng.dispose()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    all_rows = rows(session, issue.id)
    assert {r.status for r in all_rows} == {"claimed"}
    assert {r.attempts for r in all_rows} == {1}  # nobody claimed a row twice
    keys = [k for ks in claimed.values() for k in ks]
    assert len(keys) == len(set(keys)) == 43  # 300 rows / 7
