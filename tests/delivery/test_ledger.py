"""The ledger's guarded transitions and the issue's send lock, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import and_, event, select, update
from sqlmodel import Session

from delivery_support import START, add_subscribers, make_issue
from digest.delivery import ledger
from digest.database import make_engine, session_scope
from digest.database.models import Delivery, DeliveryBatch, Issue
from digest.delivery.plan import plan_deliveries
from digest.delivery.providers.base import Outcome

LEASE = dt.timedelta(minutes=5)
LATER = START + dt.timedelta(minutes=1)


@pytest.fixture
def planned(engine, session):
    """An issue with 25 planned deliveries in one batch; returns the issue. Claims below take
    fewer, so they also exercise splitting a batch planned for a larger provider limit."""
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


def view(session: Session, issue_id: int) -> list[tuple]:
    """Per delivery, in id order: (state as `counts` reports it, its batch's key, the batch's
    reason, the batch's attempts)."""
    B, D = DeliveryBatch, Delivery
    found = session.execute(
        select(D.status, B.status, B.key, B.reason, B.attempts)
        .join(B, and_(B.issue_id == D.issue_id, B.batch_no == D.batch_no))
        .where(D.issue_id == issue_id).order_by(D.id)).all()
    session.commit()
    return [((b if d == "pending" and b in ("claimed", "sending", "uncertain") else d), key,
             reason, n)
            for d, b, key, reason, n in found]


def claim(session, issue, n=10, *, key=None, now=START, start=False):
    """Claim a batch; `start=True` also marks its request started, as a sender does just
    before the provider call."""
    got = ledger.claim_batch(session, issue.id, batch_key=key or ledger.new_batch_key(issue.key),
                             limit=n, now=now, lease_until=now + LEASE)
    if start:
        assert ledger.start_request(session, got, now=now)
    session.commit()
    return got


def in_parallel(db_url: str, target, n: int) -> None:
    """Run target(i, engine) for i in 0 .. n - 1 in threads started together, each with an
    engine of its own; wait for all, and fail with the first error any of them raised."""
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        eng = make_engine(db_url)
        try:
            barrier.wait()
            target(i, eng)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            eng.dispose()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []


def updates_of(engine, table: str):
    """Collects the UPDATE statements run against `table` while the block runs."""
    seen: list[str] = []

    def listener(conn, cur, stmt, *args):
        if stmt.lstrip().upper().startswith(f"UPDATE {table.upper()}"):
            seen.append(stmt)

    class _Watch:
        def __enter__(self):
            event.listen(engine, "before_cursor_execute", listener)
            return seen

        def __exit__(self, *exc):
            event.remove(engine, "before_cursor_execute", listener)

    return _Watch()


# --- claiming -----------------------------------------------------------------------------------

def test_claim_takes_the_next_pending_batches_in_id_order(session, planned):
    first = claim(session, planned, 10, key="k1")
    second = claim(session, planned, 10, key="k2")
    third = claim(session, planned, 10, key="k3")
    assert (first.size, second.size, third.size) == (10, 10, 5)
    assert claim(session, planned, 10) is None
    got = view(session, planned.id)
    assert [key for _s, key, _r, _n in got] == ["k1"] * 10 + ["k2"] * 10 + ["k3"] * 5
    assert {(state, n) for state, _k, _r, n in got} == {("claimed", 1)}
    # The deliveries themselves are untouched until their answer is recorded.
    assert {(r.status, r.attempts, r.batch_key) for r in rows(session, planned.id)} == {
        ("pending", 0, None)}
    leases = session.execute(select(DeliveryBatch.lease_until)
                             .where(DeliveryBatch.issue_id == planned.id)).scalars().all()
    session.commit()
    assert set(leases) == {START + LEASE}


def test_a_claim_writes_one_batch_row_whatever_the_batch_size(engine, session):
    add_subscribers(engine, 500)
    issue = make_issue(session)
    plan_deliveries(session, issue.id, now=START, batch_size=500)
    session.commit()
    with updates_of(engine, "deliveries") as ledger_writes, \
            updates_of(engine, "delivery_batches") as batch_writes:
        got = claim(session, issue, 500, key="all")
    assert got.size == 500 and (got.first_id, got.last_id) != (0, 0)
    assert ledger_writes == [] and len(batch_writes) == 1


@pytest.mark.parametrize("db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)],
                         indirect=True)
def test_the_claim_reads_the_batch_table_alone(engine, session):
    """EXPLAIN of the claim's locking statement: it never reads the ledger, so its cost does not
    grow with the deliveries already planned or sent (bench/run.py times it at a million)."""
    add_subscribers(engine, 3000)
    issue = make_issue(session)
    plan_deliveries(session, issue.id, now=START, batch_size=100)
    session.execute(update(Delivery).where(Delivery.id <= 2700).values(status="sent"))
    session.execute(update(DeliveryBatch).where(DeliveryBatch.last_id <= 2700)
                    .values(status="done"))
    session.commit()
    stmt = ledger.claim_statement("postgresql", issue.id, now=START)
    compiled = stmt.compile(dialect=engine.dialect)
    plan = session.connection().exec_driver_sql(
        "EXPLAIN (FORMAT JSON) " + str(compiled), compiled.params).scalar_one()
    session.rollback()

    def relations(node):
        yield node.get("Relation Name")
        for child in node.get("Plans", []):
            yield from relations(child)

    assert set(relations(plan[0]["Plan"])) - {None} == {"delivery_batches"}
    assert claim(session, issue, 100, key="next").first_id == 2701


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_on_sqlite_a_batch_is_read_and_written_through_its_id_range(engine, session):
    """Every ledger statement of one batch's round trip reaches the deliveries by primary key
    (EXPLAIN QUERY PLAN), never by walking the issue's rows: that walk made a million-recipient
    send five times slower."""
    add_subscribers(engine, 300)
    issue = make_issue(session)
    plan_deliveries(session, issue.id, now=START, batch_size=100)
    session.commit()
    seen: list[tuple[str, tuple]] = []

    def listener(conn, cur, stmt, params, context, executemany):
        if "deliveries" in stmt and stmt.lstrip().upper().startswith(("SELECT", "UPDATE")):
            seen.append((stmt, params if not executemany else params[0]))

    event.listen(engine, "before_cursor_execute", listener)
    try:
        got = claim(session, issue, 100, key="k")
        rows_ = ledger.batch_rows(session, got)
        session.commit()
        record(session, "k", [(r[0], Outcome.transient("busy")) for r in rows_[:2]]
               + [(r[0], Outcome.sent("m")) for r in rows_[2:]])
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert len(seen) >= 4
    with engine.connect() as conn:
        for stmt, params in seen:
            plan = " | ".join(row[3] for row in conn.exec_driver_sql(
                "EXPLAIN QUERY PLAN " + stmt, params))
            assert "SCAN deliveries" not in plan and "uq_deliveries" not in plan, (stmt, plan)
            assert "deliveries USING INTEGER PRIMARY KEY" in plan, (stmt, plan)


def test_claim_waits_for_a_delayed_retry(session, planned):
    claim(session, planned, 25, key="k")
    ids = [r.id for r in rows(session, planned.id)]
    record(session, "k", [(i, Outcome.transient("429")) for i in ids[:3]]
           + [(i, Outcome.sent("m")) for i in ids[3:]])  # the 3 retry at +10 s
    retry_at = LATER + dt.timedelta(seconds=10)
    assert ledger.next_retry_at(session, planned.id) == retry_at
    session.commit()
    assert claim(session, planned, 100, now=LATER) is None
    assert claim(session, planned, 100, now=retry_at - dt.timedelta(seconds=1)) is None
    again = claim(session, planned, 100, key="later", now=retry_at)
    assert [r[0] for r in ledger.batch_rows(session, again)] == ids[:3]
    session.commit()


def test_batch_rows_join_subscribers_in_delivery_order(session, planned):
    got_claim = claim(session, planned, 4, key="k")
    got = ledger.batch_rows(session, got_claim)
    session.commit()
    # (delivery id, subscriber id, email, name, status) tuples
    assert [r[2] for r in got] == [f"reader{i}@example.com" for i in range(1, 5)]
    assert [r[4] for r in got] == ["active"] * 4
    assert [r[0] for r in got] == sorted(r[0] for r in got)


def test_concurrent_claimers_never_share_a_batch(db_url, engine, session):
    """Claimers in parallel (PostgreSQL: SKIP LOCKED; SQLite: serialised writers) split the
    batches between them with no batch claimed twice."""
    add_subscribers(engine, 300)
    issue = make_issue(session)
    plan_deliveries(session, issue.id, now=START, batch_size=7)
    session.commit()
    claimed: dict[int, list[str]] = {}

    def worker(n: int, eng) -> None:
        keys = claimed.setdefault(n, [])
        while True:
            with session_scope(eng) as s:
                got = ledger.claim_batch(s, issue.id, batch_key=f"w{n}-{len(keys)}", limit=7,
                                         now=START, lease_until=START + LEASE)
            if got is None:
                return
            keys.append(got.batch_key)

    in_parallel(db_url, worker, 3)
    got = view(session, issue.id)
    assert {(state, n) for state, _k, _r, n in got} == {("claimed", 1)}  # none claimed twice
    keys = [k for ks in claimed.values() for k in ks]
    assert len(keys) == len(set(keys)) == 43  # 300 rows / 7
    assert sorted({key for _s, key, _r, _n in got}) == sorted(keys)


# --- recording ------------------------------------------------------------------------------------

def record(session, key, results, *, skipped=(), max_attempts=3, now=LATER, whole_batch=False):
    got = ledger.record_outcomes(session, key, results, now=now, skipped=skipped,
                                 retry_at=now + dt.timedelta(seconds=10), max_attempts=max_attempts,
                                 whole_batch=whole_batch)
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
    assert [(by_id[i].status, by_id[i].provider_message_id, by_id[i].batch_key)
            for i in ids[:2]] == [("sent", "m-0", "k"), ("sent", "m-1", "k")]
    assert by_id[ids[2]].reason == "invalid address (300)" and by_id[ids[2]].status == "failed"
    retry = by_id[ids[4]]
    assert (retry.status, retry.reason, retry.attempts) == ("pending", "busy", 1)
    assert (by_id[ids[5]].status, by_id[ids[5]].reason) == ("skipped", "subscriber unsubscribed")
    assert [by_id[i].attempts for i in ids] == [1, 1, 1, 1, 1, 0]
    # The batch waits for its retry under no key (the next request carries one row, not six).
    batch = session.execute(select(DeliveryBatch).where(DeliveryBatch.first_id == ids[0])
                            ).scalars().one()
    assert (batch.status, batch.key, batch.not_before, batch.reason) == (
        "pending", None, LATER + dt.timedelta(seconds=10), "busy")
    session.commit()


def test_one_outcome_object_for_the_whole_batch_is_recorded_like_equal_ones(session, planned):
    """A substitution provider answers a batch with one shared outcome object (the fast path);
    the rows end as they would with one object per recipient, transient ones included."""
    claim(session, planned, 10, key="k")
    ids = [r.id for r in rows(session, planned.id)][:10]
    busy = Outcome.transient("busy")
    got = record(session, "k", [(i, busy) for i in ids[:4]]
                 + [(i, Outcome.transient("busy")) for i in ids[4:]])
    assert (got.sent, got.retry) == (0, 10)
    claim(session, planned, 10, key="k2", now=LATER + dt.timedelta(seconds=11))
    shared = Outcome.sent("one-id")
    got = record(session, "k2", [(i, shared) for i in ids], whole_batch=True)
    assert got.sent == 10
    by_id = {r.id: r for r in rows(session, planned.id)}
    assert {(by_id[i].status, by_id[i].provider_message_id, by_id[i].attempts)
            for i in ids} == {("sent", "one-id", 2)}


def test_own_message_ids_are_written_set_wise_and_never_over_a_final_row(session, planned):
    """Full-body providers give each recipient its own id: written in one statement, the ids
    kept exactly (quotes, non-ASCII, none at all), a row already final left alone."""
    claim(session, planned, 5, key="k")
    ids = [r.id for r in rows(session, planned.id)][:5]
    session.execute(update(Delivery).where(Delivery.id == ids[4])
                    .values(status="skipped", reason="subscriber unsubscribed"))
    session.commit()
    mids = ['pm-"0"', "pm-é-1", None, "x" * 200, "pm-4"]
    got = record(session, "k", [(i, Outcome.sent(m)) for i, m in zip(ids, mids)])
    assert got.sent == 4
    by_id = {r.id: r for r in rows(session, planned.id)}
    assert [(by_id[i].status, by_id[i].provider_message_id, by_id[i].batch_key)
            for i in ids] == [("sent", m, "k") for m in mids[:4]] + [("skipped", None, None)]
    assert [by_id[i].attempts for i in ids] == [1, 1, 1, 1, 0]


def test_a_fully_answered_batch_is_done(session, planned):
    got = claim(session, planned, 25, key="k")
    ids = [r.id for r in rows(session, planned.id)]
    record(session, "k", [(i, Outcome.sent("one-id")) for i in ids[1:]],
           skipped=[(ids[0], "subscriber unsubscribed")], whole_batch=True)
    assert got.size == 25
    assert [s for s, *_ in view(session, planned.id)] == ["skipped"] + ["sent"] * 24
    batch = session.execute(select(DeliveryBatch)).scalars().one()
    assert (batch.status, batch.key, batch.lease_until) == ("done", "k", None)
    session.commit()
    assert claim(session, planned, 25) is None


def test_one_message_id_for_a_whole_batch_is_one_statement(engine, session, planned):
    claim(session, planned, 10, key="k")
    ids = [r.id for r in rows(session, planned.id)][:10]
    with updates_of(engine, "deliveries") as seen:
        record(session, "k", [(i, Outcome.sent("x-batch-1")) for i in ids])
    assert len(seen) == 1
    assert {r.provider_message_id for r in rows(session, planned.id)[:10]} == {"x-batch-1"}


def test_transient_too_often_becomes_final(session, planned):
    for attempt in range(1, 4):
        got = claim(session, planned, 1, key=f"k{attempt}",
                    now=START + dt.timedelta(minutes=attempt))
        assert got.size == 1
        target = rows(session, planned.id)[0]
        assert target.attempts == attempt - 1
        result = record(session, f"k{attempt}", [(target.id, Outcome.transient("503"))],
                        now=START + dt.timedelta(minutes=attempt), max_attempts=3)
    assert (result.retry, result.gave_up, result.failed) == (0, 1, 1)
    final = rows(session, planned.id)[0]
    assert (final.status, final.reason, final.attempts) == (
        "failed", "gave up after 3 attempts: 503", 3)


def test_record_never_reopens_a_final_row_or_touches_another_batch(session, planned):
    claim(session, planned, 2, key="mine")
    claim(session, planned, 2, key="other")
    ids = [r.id for r in rows(session, planned.id)]
    record(session, "mine", [(ids[0], Outcome.sent("a")), (ids[1], Outcome.rejected("bad"))])
    # a duplicate, late or confused answer
    late = record(session, "mine", [(ids[0], Outcome.rejected("late")),
                                    (ids[1], Outcome.sent("b"))])
    assert (late.sent, late.failed) == (0, 0)
    claim(session, planned, 2, key="mine-again")
    record(session, "mine-again", [(ids[2], Outcome.sent("c"))])  # not this batch's row
    by_id = {r.id: r for r in rows(session, planned.id)}
    assert (by_id[ids[0]].status, by_id[ids[0]].provider_message_id) == ("sent", "a")
    assert (by_id[ids[1]].status, by_id[ids[1]].reason) == ("failed", "bad")
    assert view(session, planned.id)[2][0] == "claimed"


def test_a_late_answer_for_an_uncertain_batch_is_still_recorded(session, planned):
    claim(session, planned, 3, key="k", start=True)
    assert ledger.release_orphans(session, planned.id, now=LATER, expired_only=False) == 1
    session.commit()
    assert [s for s, *_ in view(session, planned.id)[:3]] == ["uncertain"] * 3
    ids = [r.id for r in rows(session, planned.id)][:3]
    record(session, "k", [(i, Outcome.sent(f"m{i}")) for i in ids])
    assert [r.status for r in rows(session, planned.id)[:3]] == ["sent"] * 3


def test_some_recipients_in_doubt_move_to_an_uncertain_batch_of_their_own(session, planned):
    claim(session, planned, 4, key="smtp")
    ids = [r.id for r in rows(session, planned.id)][:4]
    got = record(session, "smtp", [(ids[0], Outcome.sent("a")),
                                   (ids[1], Outcome.uncertain("connection lost in DATA")),
                                   (ids[2], Outcome.uncertain("connection lost in DATA")),
                                   (ids[3], Outcome.sent("d"))])
    assert (got.sent, got.uncertain) == (2, 2)
    states = view(session, planned.id)[:4]
    assert [s for s, *_ in states] == ["sent", "uncertain", "uncertain", "sent"]
    doubt_key = states[1][1]
    assert doubt_key.startswith("smtp~") and states[2][1] == doubt_key
    again = ledger.claim_uncertain(session, planned.id, limit=10, now=LATER,
                                   lease_until=LATER + LEASE)
    session.commit()
    assert (again.batch_key, again.size) == (doubt_key, 2)
    assert [r[0] for r in ledger.batch_rows(session, again)] == ids[1:3]
    session.commit()


# --- uncertain ----------------------------------------------------------------------------------

def test_only_expired_claims_become_uncertain(session, planned):
    claim(session, planned, 5, key="old", now=START, start=True)
    claim(session, planned, 5, key="new", now=START + dt.timedelta(minutes=4), start=True)
    expired = START + LEASE + dt.timedelta(seconds=1)
    assert ledger.release_orphans(session, planned.id, now=expired) == 1
    session.commit()
    states = {(state, key) for state, key, _r, _n in view(session, planned.id) if key}
    assert states == {("uncertain", "old"), ("sending", "new")}
    assert ledger.claimed_elsewhere(session, planned.id) == (1, START + dt.timedelta(minutes=4)
                                                             + LEASE)
    assert ledger.release_orphans(session, planned.id, now=expired, expired_only=False) == 1
    session.commit()


def test_uncertain_batches_are_claimed_again_with_the_same_key(session, planned):
    claim(session, planned, 4, key="first", start=True)
    claim(session, planned, 4, key="second", start=True)
    ledger.release_orphans(session, planned.id, now=LATER, expired_only=False)
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
    assert {n for _s, key, _r, n in view(session, planned.id) if key} == {2}


def test_an_uncertain_batch_larger_than_the_limit_is_split_under_new_keys(session, planned):
    claim(session, planned, 10, key="big", start=True)
    ledger.release_orphans(session, planned.id, now=LATER, expired_only=False)
    session.commit()
    sizes, keys, members = [], [], []
    while (got := ledger.claim_uncertain(session, planned.id, limit=4, now=LATER,
                                         lease_until=LATER + LEASE)) is not None:
        assert got.batch_key.startswith("big~")
        sizes.append(got.size)
        keys.append(got.batch_key)
        members += [r[0] for r in ledger.batch_rows(session, got)]
        session.commit()
    session.commit()
    assert sizes == [4, 4, 2]
    assert len(set(keys)) == 3  # "big" itself is never reused for a smaller payload
    assert members == [r.id for r in rows(session, planned.id)][:10]
    # Each part is still in doubt: a sender dying before its retry starts leaves it uncertain.
    assert ledger.release_orphans(session, planned.id, now=LATER, expired_only=False) == 3
    session.commit()
    assert [s for s, *_ in view(session, planned.id)[:10]] == ["uncertain"] * 10


# --- the start of a request ----------------------------------------------------------------------

def test_a_claim_whose_request_never_started_goes_back_to_pending(session, planned):
    """What a dead sender leaves: its request out (uncertain) and the batch it had claimed
    ahead (never started: pending again, sent normally under a new key)."""
    out = claim(session, planned, 5, key="out", start=True)
    claim(session, planned, 5, key="ahead")
    assert ledger.claimed_elsewhere(session, planned.id)[0] == 2
    session.commit()
    assert [s for s, *_ in view(session, planned.id)[:10]] == ["sending"] * 5 + ["claimed"] * 5
    assert ledger.release_orphans(session, planned.id, now=LATER, expired_only=False) == 2
    session.commit()
    got = [(s, key) for s, key, _r, _n in view(session, planned.id)[:10]]
    assert got == [("uncertain", "out")] * 5 + [("pending", None)] * 5
    again = claim(session, planned, 5, now=LATER)
    assert (again.first_id, again.retry) == (out.last_id + 1, False)


def test_a_batch_backing_off_after_a_429_is_not_in_flight(session, planned):
    """The provider answered "not now": while the sender waits the batch is claimed, not
    sending, so a crash in the wait puts it back to pending; the next try starts it again."""
    got = claim(session, planned, 5, key="busy", start=True)
    assert ledger.back_off(session, got, now=LATER, reason="429") == 1
    session.commit()
    assert view(session, planned.id)[0][:3] == ("claimed", "busy", "429")
    assert ledger.start_request(session, got, now=LATER)  # the next try
    assert ledger.back_off(session, got, now=LATER, reason="429 again") == 1
    assert ledger.release_orphans(session, planned.id, now=LATER, expired_only=False) == 1
    session.commit()
    assert [(s, key) for s, key, *_ in view(session, planned.id)[:5]] == [("pending", None)] * 5


def test_a_retried_uncertain_batch_stays_in_doubt_until_answered(session, planned):
    """Claimed again from uncertain, a batch is in doubt before its retry starts, during a
    backoff after a 429 answer to the retry, and when released unsent: an earlier request under
    its key may have been accepted. Only an answer settles it."""
    claim(session, planned, 5, key="doubt", start=True)
    ledger.release_orphans(session, planned.id, now=LATER, expired_only=False)
    session.commit()
    for step in ("not started", "backing off", "released"):
        again = ledger.claim_uncertain(session, planned.id, limit=10, now=LATER,
                                       lease_until=LATER + LEASE)
        assert (again.batch_key, again.retry) == ("doubt", True)
        if step == "backing off":
            assert ledger.start_request(session, again, now=LATER)
            assert ledger.back_off(session, again, now=LATER, reason="429") == 1
        if step == "released":
            assert ledger.release_batch(session, "doubt", now=LATER, uncertain=True,
                                        reason="") == 1
        else:
            assert ledger.release_orphans(session, planned.id, now=LATER,
                                          expired_only=False) == 1
        session.commit()
        assert [(s, key) for s, key, *_ in view(session, planned.id)[:5]] == [
            ("uncertain", "doubt")] * 5, step
    again = ledger.claim_uncertain(session, planned.id, limit=10, now=LATER,
                                   lease_until=LATER + LEASE)
    assert ledger.start_request(session, again, now=LATER)
    ids = [r.id for r in rows(session, planned.id)][:5]
    assert record(session, "doubt", [(i, Outcome.sent(f"m{i}")) for i in ids]).sent == 5


def test_a_batch_taken_over_meanwhile_is_not_started_by_its_old_sender(session, planned):
    """A sender that stalled past its claim's lease finds the batch claimed again by someone
    else (same key, from uncertain): its start fails, so it never sends it."""
    mine = claim(session, planned, 5, key="stall", start=True)
    expired = START + LEASE + dt.timedelta(seconds=1)
    assert ledger.release_orphans(session, planned.id, now=expired) == 1
    theirs = ledger.claim_uncertain(session, planned.id, limit=10, now=expired,
                                    lease_until=expired + LEASE)
    session.commit()
    assert theirs.batch_key == mine.batch_key and theirs.attempts == mine.attempts + 1
    assert not ledger.start_request(session, mine, now=expired)
    assert ledger.back_off(session, mine, now=expired, reason="429") == 0
    assert ledger.start_request(session, theirs, now=expired)
    session.commit()


def test_release_puts_a_batch_back_or_marks_it_uncertain(session, planned):
    claim(session, planned, 3, key="a")
    claim(session, planned, 3, key="b")
    assert ledger.release_batch(session, "a", now=LATER, uncertain=False, reason="429") == 1
    assert ledger.release_batch(session, "b", now=LATER, uncertain=True, reason="timeout") == 1
    session.commit()
    got = [(s, key, reason) for s, key, reason, _n in view(session, planned.id)[:6]]
    assert got == [("pending", None, "429")] * 3 + [("uncertain", "b", "timeout")] * 3
    assert claim(session, planned, 3, key="a-again").size == 3  # released: claimable at once


# --- counts -----------------------------------------------------------------------------------------

def test_counts_group_states_and_failure_reasons(session, planned):
    claim(session, planned, 6, key="k")
    ids = [r.id for r in rows(session, planned.id)][:6]
    record(session, "k", [(ids[0], Outcome.sent("a")), (ids[1], Outcome.rejected("300 invalid")),
                          (ids[2], Outcome.rejected("300 invalid")),
                          (ids[3], Outcome.rejected("406 inactive"))],
           skipped=[(ids[4], "subscriber unsubscribed")])  # ids[5]: no answer, pending again
    assert claim(session, planned, 2, key="in-flight").size == 1  # ids[5], first in id order
    claim(session, planned, 3, key="lost")
    ledger.release_batch(session, "lost", now=LATER, uncertain=True, reason="timeout")
    session.commit()
    c = ledger.counts(session, planned.id)
    session.commit()
    assert c.by_status == {"sent": 1, "failed": 3, "skipped": 1, "claimed": 1, "uncertain": 3,
                           "pending": 16}
    assert c.failed_reasons == {"300 invalid": 2, "406 inactive": 1}
    assert list(c.failed_reasons) == ["300 invalid", "406 inactive"]  # most common first
    assert (c.total, c.open, c["uncertain"]) == (25, 20, 3)

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
    assert not ledger.finish_issue(session, planned.id, sender="again", now=LATER)  # batch open
    session.execute(update(DeliveryBatch).where(DeliveryBatch.issue_id == planned.id)
                    .values(status="done"))
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
    results: list[ledger.Acquisition] = []

    def contender(n: int, eng) -> None:
        with session_scope(eng) as s:
            results.append(ledger.acquire_issue(s, planned.id, sender=f"h:{n}:x", now=START,
                                                lease=LEASE))

    in_parallel(db_url, contender, 5)
    assert sum(r.acquired for r in results) == 1
    winner = next(r for r in results if r.acquired)
    assert all(r.holder is not None for r in results if not r.acquired)
    assert issue_row(session, planned).sender_lease_until == winner.lease_until
