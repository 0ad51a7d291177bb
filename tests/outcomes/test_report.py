"""Outcomes per issue from the ledger, subscribers' status changes and the click counters, on
SQLite and PostgreSQL; `digest report` in its three formats; `digest pause` / `digest resume`."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import pytest
from sqlalchemy import insert
from sqlmodel import Session

from digest.database.models import Issue, IssueLink, LinkClick
from digest.delivery import ledger
from digest.delivery.send import send_issue
from digest.outcomes.report import issue_outcomes, list_growth, send_progress
from delivery_support import FakeClock, RecordingProvider, add_subscribers, make_issue
from subscribers import lifecycle

UTC = dt.timezone.utc
T47 = dt.datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
T48 = T47 + dt.timedelta(days=7)


def _send(engine, settings, issue, at, **provider):
    return send_issue(engine, issue.id, RecordingProvider(batch_limit=4, **provider), settings,
                      clock=lambda: at.timestamp(), sleep=lambda s: None)


def _links(engine, issue, counts):
    with engine.begin() as conn:
        conn.execute(insert(IssueLink.__table__), [
            {"issue_id": issue.id, "link_no": n, "kind": "comparison", "label": f"A{n} vs B{n}",
             "url": f"https://verdicts.example.test/compare/{n}"} for n in counts])
        conn.execute(insert(LinkClick.__table__), [
            {"issue_id": issue.id, "link_no": n, "human": h, "machine": m, "updated_at": T47}
            for n, (h, m) in counts.items()])


@pytest.fixture
def two_issues(engine, settings):
    """W47 to ten readers (reader3 refused as an earlier bounce), W48 a week later."""
    add_subscribers(engine, 10)
    with Session(engine, expire_on_commit=False) as session:
        w47 = make_issue(session, "2026-W47")
        w48 = make_issue(session, "2026-W48")
    assert _send(engine, settings, w47, T47, inactive={"reader3@example.com"}).sent == 9
    with Session(engine) as session:
        # After W47: reader1 complains, reader2 unsubscribes.
        lifecycle.apply_provider_event(session, "reader1@example.com", "complained",
                                       at=T47 + dt.timedelta(hours=2))
        lifecycle.apply_provider_event(session, "reader2@example.com", "unsubscribed",
                                       at=T47 + dt.timedelta(days=1))
        session.commit()
    assert _send(engine, settings, w48, T48).sent == 7
    with Session(engine) as session:
        # After W48: reader4 bounces, reader5 and reader6 unsubscribe.
        for email, kind in (("reader4@example.com", "bounced"),
                            ("reader5@example.com", "unsubscribed"),
                            ("reader6@example.com", "unsubscribed")):
            lifecycle.apply_provider_event(session, email, kind, at=T48 + dt.timedelta(hours=5))
        session.commit()
    _links(engine, w47, {1: (3, 4), 2: (5, 0), 3: (0, 2)})
    _links(engine, w48, {1: (1, 0)})
    return w47, w48


def test_outcomes_are_attributed_to_the_issue_that_preceded_them(engine, two_issues):
    with Session(engine) as session:
        w48, w47 = issue_outcomes(session)
    assert (w47.key, w47.planned, w47.delivered, w47.failed) == ("2026-W47", 10, 9, 1)
    assert (w47.hard_bounced, w47.complained, w47.unsubscribed) == (1, 1, 1)  # reader3, 1, 2
    assert (w48.key, w48.planned, w48.delivered) == ("2026-W48", 7, 7)
    assert (w48.hard_bounced, w48.complained, w48.unsubscribed) == (1, 0, 2)
    assert w47.rates["unsubscribe_rate"] == round(1 / 9, 4)
    assert w48.rates["unsubscribe_rate"] == round(2 / 7, 4)
    # Links ranked by people's clicks; machines never count toward them or the rates.
    assert [(l.link_no, l.human, l.machine) for l in w47.links] == [(2, 5, 0), (1, 3, 4),
                                                                     (3, 0, 2)]
    assert (w47.clicks, w47.machine_clicks, w47.top.label) == (8, 6, "A2 vs B2")
    assert w47.rates["click_rate"] == round(8 / 9, 4)


def test_a_reactivated_address_no_longer_counts_as_bounced(engine, two_issues):
    with Session(engine) as session:
        lifecycle.reactivate(session, "reader4@example.com", at=T48 + dt.timedelta(days=1))
        session.commit()
        w48 = issue_outcomes(session, keys=["2026-W48"])[0]
    assert w48.hard_bounced == 0


def test_list_growth_by_week(engine, two_issues, settings):
    with Session(engine) as session:
        weeks = list_growth(session, now=T48 + dt.timedelta(days=2), tz=settings.tz, weeks=3)
    # (Issue W47 went out on the Monday of week 48, when the readers signed up.)
    assert [w.week for w in weeks] == ["2026-W47", "2026-W48", "2026-W49"]
    before, first, second = weeks
    assert (first.signups, first.active, first.unsubscribes, first.bounces) == (10, 7, 1, 2)
    assert (second.signups, second.active, second.unsubscribes, second.bounces) == (0, 4, 2, 1)
    assert before.signups == 0 and before.active == 0


def test_progress_of_a_running_send(engine, settings):
    add_subscribers(engine, 20)
    with Session(engine, expire_on_commit=False) as session:
        issue = make_issue(session)
    clock = FakeClock(T47)

    def stop_midway(index, recipients):
        clock.advance(40)  # a sender notices a pause when it renews its lease (every 30 s)
        if index == 2:
            with Session(engine) as session:
                ledger.pause_send(session, issue.id, reason="paused by the operator")
                session.commit()
        return None

    report = send_issue(engine, issue.id, RecordingProvider(batch_limit=4,
                                                            script=[stop_midway] * 10),
                        settings, clock=clock, sleep=clock.sleep)
    assert report.status == "paused" and 0 < report.sent < 20
    with Session(engine) as session:
        fresh = session.get(Issue, issue.id)
        progress = send_progress(session, fresh, now=dt.datetime.fromtimestamp(clock(), UTC))
    assert (progress.status, progress.total, progress.sent) == ("paused", 20, report.sent)
    assert progress.reason == "paused by the operator"
    assert progress.rate > 0 and progress.eta_seconds is None


def test_report_command_formats(cli, engine, two_issues):
    as_json = cli("report", "--format", "json")
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)["issues"]
    assert [d["key"] for d in data] == ["2026-W48", "2026-W47"]
    assert data[1]["links"][0]["label"] == "A2 vs B2"
    as_csv = cli("report", "--format", "csv", "--last", "1")
    rows = list(csv.reader(io.StringIO(as_csv.stdout)))
    assert rows[0][:3] == ["row", "key", "status"] and rows[1][:2] == ["issue", "2026-W48"]
    assert ["link", "2026-W48", "1", "1"] == rows[4][:4]
    table = cli("report", "--week", "2026-W47")
    assert table.exit_code == 0 and "A2 vs B2" in table.out and "hard bounces" in table.out
    assert cli("report", "--week", "2026-W30").exit_code != 0


def test_pause_and_resume_commands(cli, engine, settings, monkeypatch):
    add_subscribers(engine, 3)
    with Session(engine, expire_on_commit=False) as session:
        issue = make_issue(session)
        assert ledger.acquire_issue(session, issue.id, sender="elsewhere:1:x", now=T47,
                                    lease=dt.timedelta(minutes=5)).acquired
        session.commit()
    assert cli("resume").exit_code == 1  # nothing is paused
    paused = cli("pause")
    assert paused.exit_code == 0 and "2026-W47: paused" in paused.out
    with Session(engine) as session:
        assert session.get(Issue, issue.id).status == "paused"
    assert cli("pause").exit_code == 1  # nothing is sending now
    provider = RecordingProvider(batch_limit=10)

    class Ctx:
        def __enter__(self):
            return provider

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr("digest.cli.send.build_provider", lambda conf: Ctx())
    resumed = cli("resume")
    assert resumed.exit_code == 0, resumed.output
    assert sorted(e for c in provider.calls for e in c.emails) == [
        f"reader{i}@example.com" for i in range(1, 4)]
    with Session(engine) as session:
        assert session.get(Issue, issue.id).status == "sent"


def _growth_by_sums(session, *, now, tz, weeks):
    """The week-by-week sums the dashboard first ran (four per week over every subscriber),
    kept as the reference the bucketed `list_growth` must agree with."""
    from sqlalchemy import and_, case, func, or_, select

    from digest.edition.weeks import Edition
    from subscribers.models import Subscriber

    S = Subscriber.__table__.c
    last = Edition.at(now, tz)
    editions = [last.shift(-i) for i in range(weeks - 1, -1, -1)]
    left = or_(S.unsubscribed_at.is_not(None), S.bounced_at.is_not(None),
               S.complained_at.is_not(None))
    columns = []
    for w in (e.window(tz) for e in editions):
        def within(col, w=w):
            return func.sum(case((and_(col >= w.start, col < w.end), 1), else_=0))
        gone_by_end = and_(S.status != "active", left,
                           func.coalesce(S.unsubscribed_at, S.bounced_at, S.complained_at) < w.end)
        active = func.sum(case((and_(S.confirmed_at.is_not(None), S.confirmed_at < w.end,
                                     ~gone_by_end), 1), else_=0))
        columns += [active, within(S.created_at), within(S.unsubscribed_at),
                    func.sum(case((or_(and_(S.bounced_at >= w.start, S.bounced_at < w.end),
                                       and_(S.complained_at >= w.start, S.complained_at < w.end)),
                                  1), else_=0))]
    values = [int(v or 0) for v in session.execute(select(*columns)).one()]
    return [(e.key, *values[i * 4:i * 4 + 4]) for i, e in enumerate(editions)]


def test_list_growth_agrees_with_counting_every_week_over_the_whole_list(engine, settings):
    """Random histories (joined long ago or lately, confirmed or not, left by any route, some
    before the chart, some in it, some back again): the bucketed count matches the sums."""
    import random

    from sqlalchemy import insert as sql_insert

    from subscribers.models import Subscriber

    rng = random.Random(47)
    now = T48 + dt.timedelta(days=3)
    span = dt.timedelta(weeks=20)

    def moment():
        return now - span * rng.random() if rng.random() < 0.8 else None

    rows = []
    for i in range(400):
        created = now - span * rng.random() * 1.3
        confirmed = created + dt.timedelta(hours=rng.randint(0, 200)) if rng.random() < 0.9 \
            else None
        stamps = {k: moment() if rng.random() < 0.3 else None
                  for k in ("unsubscribed_at", "bounced_at", "complained_at")}
        status = rng.choice(["active", "active", "pending", "unsubscribed", "bounced",
                             "complained"])
        if confirmed is not None and confirmed > now:
            confirmed = now
        rows.append({"email": f"g{i}@example.com", "status": status, "source": "import",
                     "created_at": created, "updated_at": created, "confirmed_at": confirmed,
                     **stamps})
    with engine.begin() as conn:
        conn.execute(sql_insert(Subscriber.__table__), rows)
    with Session(engine) as session:
        for weeks in (1, 6, 12, 30):
            bucketed = [(g.week, g.active, g.signups, g.unsubscribes, g.bounces)
                        for g in list_growth(session, now=now, tz=settings.tz, weeks=weeks)]
            assert bucketed == _growth_by_sums(session, now=now, tz=settings.tz, weeks=weeks)
