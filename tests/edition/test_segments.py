"""Segments: which comparisons each preference set gets, one render per distinct selection, and
a plan that gives each reader their segment's edition (or records them skipped), set-wise."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlmodel import select

from digest.database.models import Delivery, DeliveryBatch, IssueEdition
from digest.delivery import ledger
from digest.delivery.plan import plan_deliveries
from digest.edition import segments
from digest.edition.compose import compose_issue
from factories import UTC, make_comparison, make_tool, store
from subscribers import lifecycle, preferences
from subscribers.preferences import Preferences

W47 = "2026-W47"
AFTER = dt.datetime(2026, 11, 24, 9, tzinfo=UTC)
MONDAY = dt.datetime(2026, 11, 17, 9, tzinfo=UTC)


def week(session) -> list:
    """Three comparisons: data tools (one ships), code review (nobody ships), developer tools."""
    def pair(n, category, verdicts):
        a = make_tool(f"t{n}a", category=category, verdict=verdicts[0],
                      scores=(80, 80, 80, 80) if verdicts[0] == "ship" else (40, 40, 40, 40))
        b = make_tool(f"t{n}b", category=category, verdict=verdicts[1],
                      scores=(80, 80, 80, 80) if verdicts[1] == "ship" else (40, 40, 40, 40))
        return make_comparison(a, b, published_at=MONDAY + dt.timedelta(hours=n))
    return store(session, [pair(1, "Data Infrastructure", ("ship", "skip")),
                           pair(2, "Code Review", ("skip", "skip")),
                           pair(3, "Developer Tools", ("ship", "ship"))])


def reader(session, email, categories=(), ship_only=False):
    subscriber = lifecycle.add(session, email, confirmed=True, at=MONDAY)
    preferences.store(session, subscriber, Preferences(tuple(categories), ship_only), at=MONDAY)
    return subscriber


def test_selection_follows_categories_and_ship_only(session):
    comparisons = week(session)
    titles = lambda cs: [c.tool_a.slug for c in cs]  # noqa: E731
    assert titles(segments.select_for(comparisons, Preferences())) == ["t1a", "t2a", "t3a"]
    assert titles(segments.select_for(comparisons, Preferences(("Data Infrastructure",)))) == ["t1a"]
    assert titles(segments.select_for(comparisons, Preferences((), True))) == ["t1a", "t3a"]
    assert titles(segments.select_for(comparisons, Preferences(("Code Review",), True))) == []
    assert titles(segments.select_for(comparisons, Preferences(("Gone Away",)))) == []


def test_one_edition_per_preference_set_and_one_render_per_selection(session, settings):
    week(session)
    reader(session, "all@example.com")
    reader(session, "all2@example.com")
    reader(session, "data@example.com", ["Data Infrastructure"])
    reader(session, "data2@example.com", ["data infrastructure"])  # same segment, other spelling
    reader(session, "datadev@example.com", ["Data Infrastructure", "Developer Tools"], True)
    reader(session, "ships@example.com", [], True)  # same comparisons as the line above
    reader(session, "review@example.com", ["Code Review"], True)  # nothing ships there
    issue = compose_issue(session, settings, W47, now=AFTER)
    made = segments.compose_segments(session, settings, issue, now=AFTER)
    editions = {e.segment: e for e in segments.editions_of(session, issue.id)}
    assert set(editions) == {"all", "data-infrastructure", "data-infrastructure+developer-tools:ship",
                             "all:ship", "code-review:ship"}
    assert made.added == 5
    assert made.renders == 2  # "all" shares the issue's render; two ship-only sets share one
    assert editions["all"].shared and editions["all"].html == ""  # the issue's own render
    assert editions["all:ship"].html == editions["data-infrastructure+developer-tools:ship"].html
    assert editions["code-review:ship"].empty and editions["code-review:ship"].html == ""
    data = editions["data-infrastructure"]
    assert data.comparisons == 1 and "T1A" in data.html.upper() and "T2A" not in data.html.upper()
    assert data.subject != issue.subject  # its own headline and counts
    again = segments.compose_segments(session, settings, issue, now=AFTER)
    assert again.added == 0 and again.renders == 0


def test_only_segments_with_active_readers_get_editions_spelled_as_their_first_reader(
        session, settings):
    week(session)
    gone = reader(session, "gone@example.com", ["Code Review"])
    lifecycle.unsubscribe(session, gone, at=MONDAY)
    left = reader(session, "left@example.com", ["DEVELOPER TOOLS"])  # first, but gone
    lifecycle.unsubscribe(session, left, at=MONDAY)
    reader(session, "dev@example.com", ["developer tools"])
    reader(session, "dev2@example.com", ["Developer Tools"])
    issue = compose_issue(session, settings, W47, now=AFTER)
    segments.compose_segments(session, settings, issue, now=AFTER)
    editions = {e.segment: e for e in segments.editions_of(session, issue.id)}
    assert set(editions) == {"developer-tools"}  # nobody active wants code review
    assert editions["developer-tools"].categories == "developer tools"
    assert editions["developer-tools"].comparisons == 1


def test_the_plan_gives_each_reader_their_edition_and_skips_empty_segments(session, settings):
    week(session)
    readers = [reader(session, f"all{i}@example.com") for i in range(5)]
    readers += [reader(session, f"data{i}@example.com", ["Data Infrastructure"]) for i in range(3)]
    lonely = reader(session, "review@example.com", ["Code Review"], True)
    issue = compose_issue(session, settings, W47, now=AFTER)
    segments.compose_segments(session, settings, issue, now=AFTER)
    plan_deliveries(session, issue.id, now=AFTER, batch_size=2)
    session.commit()
    editions = {e.id: e.segment for e in segments.editions_of(session, issue.id)}
    rows = session.exec(select(Delivery).order_by(Delivery.id)).all()
    by_reader = {r.subscriber_id: r for r in rows}
    assert by_reader[lonely.id].status == "skipped"
    assert by_reader[lonely.id].reason == "nothing in your categories this week"
    assert by_reader[readers[0].id].edition_id is None  # "all" readers get the issue's render
    assert editions[by_reader[readers[-1].id].edition_id] == "data-infrastructure"
    # Every batch is one edition's readers, so one request carries one body.
    for batch in session.exec(select(DeliveryBatch)).all():
        members = [r for r in rows if r.batch_no == batch.batch_no]
        assert len({r.edition_id for r in members}) == 1
        assert batch.status == ("done" if members[0].status == "skipped" else "pending")
    counts = ledger.counts(session, issue.id)
    assert counts["pending"] == 8 and counts["skipped"] == 1 and counts.total == 9


def test_a_reader_who_joins_later_with_new_preferences_gets_a_new_edition(session, settings):
    week(session)
    reader(session, "all@example.com")
    issue = compose_issue(session, settings, W47, now=AFTER)
    segments.compose_segments(session, settings, issue, now=AFTER)
    plan_deliveries(session, issue.id, now=AFTER)
    late = reader(session, "late@example.com", ["Developer Tools"])
    segments.compose_segments(session, settings, issue, now=AFTER)
    plan_deliveries(session, issue.id, now=AFTER)
    session.commit()
    row = session.exec(select(Delivery).where(Delivery.subscriber_id == late.id)).one()
    edition = session.get(IssueEdition, row.edition_id)
    assert edition.segment == "developer-tools" and row.status == "pending"
    assert len(session.exec(select(Delivery)).all()) == 2


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_planning_without_editions_keeps_the_issue_render(session, settings):
    week(session)
    reader(session, "a@example.com")
    issue = compose_issue(session, settings, W47, now=AFTER)
    plan_deliveries(session, issue.id, now=AFTER)
    session.commit()
    assert session.exec(select(Delivery)).one().edition_id is None
