"""A send across segments, on both databases: each reader gets their segment's edition, a
segment with nothing this week is recorded skipped with the reason, every request carries one
edition, and running the send again mails nobody twice (the worker path shares the same parts)."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from sqlmodel import select

from delivery_support import FakeClock, RecordingProvider
from digest.database.models import Delivery
from digest.delivery import ledger
from digest.delivery.send import SendPolicy, send_issue
from digest.edition.compose import compose_issue
from factories import UTC, make_comparison, make_tool, store
from subscribers import lifecycle, preferences
from subscribers.preferences import Preferences

MONDAY = dt.datetime(2026, 11, 17, 9, tzinfo=UTC)
AFTER = dt.datetime(2026, 11, 24, 9, tzinfo=UTC)


def week(session):
    def pair(n, category, ship):
        scores = (80, 80, 80, 80) if ship else (40, 40, 40, 40)
        return make_comparison(
            make_tool(f"{category[:4].lower()}-{n}a", category=category,
                      verdict="ship" if ship else "skip", scores=scores),
            make_tool(f"{category[:4].lower()}-{n}b", category=category, verdict="skip",
                      scores=(40, 40, 40, 40)),
            published_at=MONDAY + dt.timedelta(hours=n))
    store(session, [pair(1, "Data Infrastructure", True), pair(2, "Code Review", False),
                    pair(3, "Developer Tools", True)])


def readers(session, n, categories=(), ship_only=False, prefix="r"):
    made = []
    for i in range(n):
        subscriber = lifecycle.add(session, f"{prefix}{i}@example.com", confirmed=True, at=MONDAY)
        preferences.store(session, subscriber, Preferences(tuple(categories), ship_only),
                          at=MONDAY)
        made.append(subscriber)
    session.commit()
    return made


def send(engine, issue, provider, settings):
    clock = FakeClock()
    return send_issue(engine, issue.id, provider, settings, clock=clock, sleep=clock.sleep,
                      rng=random.Random(3), policy=SendPolicy(in_flight=1))


def test_each_segment_gets_its_edition_and_an_empty_one_is_skipped(engine, session, settings):
    week(session)
    everyone = readers(session, 7, prefix="all")
    data = readers(session, 4, ["Data Infrastructure"], prefix="data")
    review = readers(session, 3, ["Code Review"], True, prefix="review")  # nothing ships there
    issue = compose_issue(session, settings, "2026-W47", now=AFTER)
    session.commit()
    provider = RecordingProvider(batch_limit=3)
    report = send(engine, issue, provider, settings)
    assert report.complete
    counts = ledger.counts(session, issue.id)
    assert counts["sent"] == 11 and counts["skipped"] == 3
    session.commit()
    skipped = session.exec(select(Delivery).where(Delivery.status == "skipped")).all()
    assert {d.subscriber_id for d in skipped} == {r.id for r in review}
    assert {d.reason for d in skipped} == {"nothing in your categories this week"}
    got = {}
    for call, letter in zip(provider.calls, provider.letters):
        html = letter.html.fill({t: "" for t in letter.html.tokens})
        for address in call.emails:
            assert address not in got, "mailed twice"
            got[address] = html
    assert set(got) == {r.email for r in everyone + data}
    for reader in data:
        assert "DATA-1A" in got[reader.email].upper() and "CODE-2A" not in got[reader.email].upper()
    for reader in everyone:
        assert "CODE-2A" in got[reader.email].upper()
    # One edition per request: no batch mixes readers of two segments (prefixes all/dat/rev).
    for call in provider.calls:
        assert len({address[:3] for address in call.emails}) == 1, call.emails


def test_sending_again_mails_nobody_twice(engine, session, settings):
    week(session)
    readers(session, 5, prefix="all")
    readers(session, 5, ["Developer Tools"], prefix="dev")
    readers(session, 2, ["Code Review"], True, prefix="review")
    issue = compose_issue(session, settings, "2026-W47", now=AFTER)
    session.commit()
    first = RecordingProvider(batch_limit=4)
    send(engine, issue, first, settings)
    late = readers(session, 1, ["Developer Tools"], prefix="late")
    second = RecordingProvider(batch_limit=4)
    report = send(engine, issue, second, settings)
    sent_first = [a for c in first.calls for a in c.emails]
    sent_second = [a for c in second.calls for a in c.emails]
    assert len(sent_first) == len(set(sent_first)) == 10
    # The issue was finished, so nobody else is mailed, not even the reader who joined after.
    assert sent_second == [] and report.complete
    assert late[0].email not in sent_first


def test_batches_carry_one_edition_in_runs_of_ids_chunk_by_chunk(engine, session, settings):
    """Readers of three segments signed up in turn: each batch is a run of delivery ids of one
    edition in subscriber order, every edition's first chunk is numbered before any second
    chunk, and the empty segment's readers come last, skipped, in batches that are done."""
    from digest.database.models import DeliveryBatch, IssueEdition
    from digest.delivery.plan import plan_deliveries
    from digest.edition.segments import compose_segments

    week(session)
    for i in range(5):
        readers(session, 1, prefix=f"all{i}-")
        readers(session, 1, ["Data Infrastructure"], prefix=f"data{i}-")
        readers(session, 1, ["Code Review"], True, prefix=f"review{i}-")  # nothing ships there
    issue = compose_issue(session, settings, "2026-W47", now=AFTER)
    compose_segments(session, settings, issue, now=AFTER)
    plan_deliveries(session, issue.id, now=AFTER, batch_size=2)
    session.commit()
    segment_of = {e.id: e.segment for e in session.exec(
        select(IssueEdition).where(IssueEdition.issue_id == issue.id))}
    rows = session.exec(select(Delivery).where(Delivery.issue_id == issue.id)
                        .order_by(Delivery.id)).all()
    batches = session.exec(select(DeliveryBatch).where(DeliveryBatch.issue_id == issue.id)
                           .order_by(DeliveryBatch.batch_no)).all()
    assert [b.first_id for b in batches] == sorted(b.first_id for b in batches)
    chunks: dict[str, int] = {}
    order = []
    for batch in batches:
        members = [d for d in rows if d.batch_no == batch.batch_no]
        assert [d.id for d in members] == list(range(batch.first_id, batch.last_id + 1))
        assert len(members) == batch.size and batch.size <= 2
        assert [d.subscriber_id for d in members] == sorted(d.subscriber_id for d in members)
        edition = {d.edition_id for d in members}
        assert len(edition) == 1
        statuses = {d.status for d in members}
        assert len(statuses) == 1
        key = "skipped" if statuses == {"skipped"} else segment_of.get(edition.pop(), "all")
        chunks[key] = chunks.get(key, -1) + 1
        order.append((key == "skipped", chunks[key]))
        assert batch.status == ("done" if key == "skipped" else "pending")
    # Non-empty first, then chunk by chunk: every edition's k-th chunk before any (k+1)-th.
    assert order == sorted(order)
    assert {k for k in chunks} == {"all", "data-infrastructure", "skipped"}
    assert chunks["all"] == chunks["data-infrastructure"] == chunks["skipped"] == 2


def test_a_reader_who_changes_segment_after_the_plan_still_gets_the_planned_edition(
        engine, session, settings):
    """A batch reads its readers through the (segment, id) index on SQLite; one who chose other
    categories since the plan is found by id instead and mailed once, with the edition planned,
    and one who unsubscribed since is not mailed at all."""
    from digest.delivery.plan import plan_deliveries
    from digest.edition.segments import compose_segments

    week(session)
    data = readers(session, 4, ["Data Infrastructure"], prefix="data")
    issue = compose_issue(session, settings, "2026-W47", now=AFTER)
    compose_segments(session, settings, issue, now=AFTER)
    plan_deliveries(session, issue.id, now=AFTER)
    session.commit()
    preferences.store(session, data[1], Preferences(("Code Review",), False), at=AFTER)
    lifecycle.unsubscribe(session, data[2], at=AFTER)
    session.commit()
    provider = RecordingProvider(batch_limit=10)
    report = send(engine, issue, provider, settings)
    assert report.complete
    mailed = [(address, letter.html.fill({t: "" for t in letter.html.tokens}).upper())
              for call, letter in zip(provider.calls, provider.letters) for address in call.emails]
    assert sorted(a for a, _ in mailed) == sorted([data[0].email, data[1].email, data[3].email])
    assert all("DATA-1A" in html and "CODE-2A" not in html for _, html in mailed)
    skipped = session.exec(select(Delivery).where(Delivery.status == "skipped")).all()
    assert [(d.subscriber_id, d.reason) for d in skipped] == [(data[2].id, "subscriber unsubscribed")]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # PostgreSQL keeps the plain join
def test_on_sqlite_a_segment_batch_reads_its_readers_through_the_segment_index(engine, session,
                                                                              settings):
    from sqlalchemy import event

    from digest.delivery.plan import plan_deliveries
    from digest.edition.segments import compose_segments

    week(session)
    readers(session, 3, ["Data Infrastructure"], prefix="data")
    issue = compose_issue(session, settings, "2026-W47", now=AFTER)
    compose_segments(session, settings, issue, now=AFTER)
    plan_deliveries(session, issue.id, now=AFTER)
    session.commit()
    seen: list[tuple[str, object]] = []

    def listener(conn, cur, stmt, params, context, executemany):
        if "subscribers" in stmt and "deliveries" in stmt:
            seen.append((stmt, params))

    event.listen(engine, "before_cursor_execute", listener)
    try:
        assert send(engine, issue, RecordingProvider(batch_limit=10), settings).complete
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    plans = []
    with engine.connect() as conn:
        for stmt, params in seen:
            plans.append(" | ".join(row[3] for row in conn.exec_driver_sql(
                "EXPLAIN QUERY PLAN " + stmt, params)))
    assert any("COVERING INDEX ix_subscribers_segment_read (segment=? AND id=?)" in plan
               for plan in plans), plans
