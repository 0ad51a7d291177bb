"""Planning: one pending delivery per active subscriber, set-wise, idempotent, never duplicated."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import event, func, select, text, update
from sqlmodel import Session

from delivery_support import START, add_subscribers, make_issue
from digest.database import make_engine, session_scope
from digest.database.models import Delivery, DeliveryBatch
from digest.delivery.plan import count_unplanned, plan_deliveries


def _planned(session: Session, issue_id: int) -> list[tuple[int, str]]:
    return [tuple(r) for r in session.execute(
        select(Delivery.subscriber_id, Delivery.status).where(Delivery.issue_id == issue_id)
        .order_by(Delivery.subscriber_id))]


def test_plans_every_active_subscriber_once_and_nobody_else(engine, session):
    active = add_subscribers(engine, 30)
    add_subscribers(engine, 5, status="pending", start=100)
    add_subscribers(engine, 4, status="unsubscribed", start=200)
    add_subscribers(engine, 3, status="bounced", start=300)
    issue = make_issue(session)

    assert count_unplanned(session, issue.id) == 30
    result = plan_deliveries(session, issue.id, now=START)
    session.commit()

    assert (result.added, result.planned) == (30, 30)
    assert _planned(session, issue.id) == [(sid, "pending") for sid in active]
    assert count_unplanned(session, issue.id) == 0


def test_planning_again_adds_only_newcomers_and_keeps_states(engine, session):
    add_subscribers(engine, 10)
    issue = make_issue(session)
    plan_deliveries(session, issue.id, now=START)
    session.execute(update(Delivery).where(Delivery.issue_id == issue.id)
                    .values(status="sent"))
    session.commit()

    again = plan_deliveries(session, issue.id, now=START)
    session.commit()
    assert (again.added, again.planned) == (0, 10)
    newcomers = add_subscribers(engine, 3, start=50)
    third = plan_deliveries(session, issue.id, now=START)
    session.commit()

    assert (third.added, third.planned) == (3, 13)
    rows = dict(_planned(session, issue.id))
    assert [rows[sid] for sid in newcomers] == ["pending"] * 3
    assert list(rows.values()).count("sent") == 10


def test_issues_are_planned_independently(engine, session):
    add_subscribers(engine, 7)
    first, second = make_issue(session, "2026-W47"), make_issue(session, "2026-W48")
    plan_deliveries(session, first.id, now=START)
    plan_deliveries(session, second.id, now=START)
    session.commit()
    assert len(_planned(session, first.id)) == len(_planned(session, second.id)) == 7


@pytest.mark.parametrize("status", ["sent", "skipped", "missed"])
def test_a_finished_issue_gains_no_deliveries(engine, session, status):
    add_subscribers(engine, 5)
    issue = make_issue(session, status=status)
    assert plan_deliveries(session, issue.id, now=START).added == 0
    session.commit()
    assert _planned(session, issue.id) == []


def test_plan_is_one_statement_whatever_the_list_size(engine, session):
    """Set-wise: the number of statements does not grow with the number of subscribers."""
    add_subscribers(engine, 2500)
    issue = make_issue(session)
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        plan_deliveries(session, issue.id, now=START)
        session.commit()
    finally:
        event.remove(engine, "before_cursor_execute", count)
    inserts = [s for s in statements if s.lstrip().upper().startswith("INSERT")]
    # The deliveries, then their batches: both INSERT ... SELECT, whatever the list size.
    assert len(inserts) == 2 and all("SELECT" in s.upper() for s in inserts)
    assert len(statements) <= 6
    assert session.execute(select(func.count()).select_from(Delivery)).scalar_one() == 2500


def test_concurrent_planners_never_duplicate(db_url, engine, session):
    """Two planners at once (threads, own connections): the unique constraint, NOT EXISTS and
    ON CONFLICT DO NOTHING leave exactly one row per subscriber on both backends."""
    add_subscribers(engine, 400)
    issue = make_issue(session)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def planner() -> None:
        eng = make_engine(db_url)
        try:
            barrier.wait()
            with session_scope(eng) as s:
                plan_deliveries(s, issue.id, now=START)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            eng.dispose()

    threads = [threading.Thread(target=planner) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    dupes = session.execute(text(
        "SELECT subscriber_id FROM deliveries GROUP BY issue_id, subscriber_id HAVING COUNT(*) > 1"
    )).all()
    assert dupes == []
    assert len(_planned(session, issue.id)) == 400


def test_count_unplanned_without_an_issue_counts_active_subscribers(engine, session):
    add_subscribers(engine, 4)
    add_subscribers(engine, 2, status="pending", start=10)
    assert count_unplanned(session, None) == 4


def test_deliveries_follow_subscriber_order(engine, session):
    """Delivery ids ascend with subscriber ids, so a batch reads subscribers in index order."""
    ids = add_subscribers(engine, 50)
    issue = make_issue(session)
    plan_deliveries(session, issue.id, now=START)
    session.commit()
    rows = session.execute(select(Delivery.id, Delivery.subscriber_id)
                           .where(Delivery.issue_id == issue.id).order_by(Delivery.id)).all()
    assert [r.subscriber_id for r in rows] == ids


def _batches(session: Session, issue_id: int) -> list[tuple[int, int, int, int, str]]:
    return [tuple(r) for r in session.execute(
        select(DeliveryBatch.batch_no, DeliveryBatch.first_id, DeliveryBatch.last_id,
               DeliveryBatch.size, DeliveryBatch.status)
        .where(DeliveryBatch.issue_id == issue_id).order_by(DeliveryBatch.batch_no))]


def test_deliveries_are_cut_into_batches_of_the_given_size(engine, session):
    add_subscribers(engine, 25)
    issue = make_issue(session)
    plan_deliveries(session, issue.id, now=START, batch_size=10)
    session.commit()
    ids = [r[0] for r in session.execute(select(Delivery.id, Delivery.batch_no)
                                         .where(Delivery.issue_id == issue.id)
                                         .order_by(Delivery.id))]
    nos = [r[0] for r in session.execute(select(Delivery.batch_no)
                                         .where(Delivery.issue_id == issue.id)
                                         .order_by(Delivery.id))]
    assert nos == [0] * 10 + [1] * 10 + [2] * 5
    assert _batches(session, issue.id) == [
        (0, ids[0], ids[9], 10, "pending"), (1, ids[10], ids[19], 10, "pending"),
        (2, ids[20], ids[24], 5, "pending")]
    session.commit()

    # Newcomers get batches of their own, numbered after the existing ones.
    add_subscribers(engine, 3, start=100)
    plan_deliveries(session, issue.id, now=START, batch_size=10)
    session.commit()
    got = _batches(session, issue.id)
    assert [(no, size) for no, _f, _l, size, _s in got] == [(0, 10), (1, 10), (2, 5), (3, 3)]
    assert plan_deliveries(session, issue.id, now=START, batch_size=10).added == 0
    assert len(_batches(session, issue.id)) == 4  # nothing new, no empty batch


def test_a_batch_size_below_one_is_refused(session):
    issue = make_issue(session)
    with pytest.raises(ValueError, match="batch_size"):
        plan_deliveries(session, issue.id, now=START, batch_size=0)
