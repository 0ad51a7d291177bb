"""Which comparisons make an edition: the pure rule across week and DST boundaries, then the
query on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import Session

from digest.database.models import Issue, IssueComparison
from digest.edition.select import SENT_STATES, editions_with_content, load_edition, select_edition
from digest.edition.summaries import verdict_line
from digest.edition.weeks import Edition, edition_window
from factories import make_comparison, make_tool, store

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def cand(id_, slug, when):
    return SimpleNamespace(id=id_, slug=slug, published_at=dt.datetime.fromisoformat(when))


CASES = {
    "Berlin: first instant in, last instant of the week before out": (
        "2026-W47", BERLIN, set(),
        [cand(1, "before", "2026-11-15T22:59:59.999999+00:00"),
         cand(2, "first", "2026-11-15T23:00:00+00:00"),
         cand(3, "last", "2026-11-22T22:59:59.999999+00:00"),
         cand(4, "after", "2026-11-22T23:00:00+00:00")],
        ["first", "last"]),
    "Berlin: the week summer time ends is 169 hours long": (
        "2026-W43", BERLIN, set(),
        [cand(1, "monday", "2026-10-18T22:00:00+00:00"),  # Mon 00:00 CEST
         cand(2, "sunday-late", "2026-10-25T22:59:00+00:00"),  # Sun 23:59 CET
         cand(3, "next-monday", "2026-10-25T23:00:00+00:00")],  # Mon 00:00 CET
        ["monday", "sunday-late"]),
    "Berlin: the week summer time starts is 167 hours long": (
        "2026-W13", BERLIN, set(),
        [cand(1, "sunday-late", "2026-03-29T21:59:00+00:00"),  # Sun 23:59 CEST
         cand(2, "next-monday", "2026-03-29T22:00:00+00:00")],  # Mon 00:00 CEST
        ["sunday-late"]),
    "New York: autumn change, local midnight moves from 04:00 to 05:00 UTC": (
        "2026-W44", NEW_YORK, set(),
        [cand(1, "too-early", "2026-10-26T03:59:59+00:00"),
         cand(2, "monday", "2026-10-26T04:00:00+00:00"),
         cand(3, "sunday-late", "2026-11-02T04:59:59+00:00"),
         cand(4, "next-monday", "2026-11-02T05:00:00+00:00")],
        ["monday", "sunday-late"]),
    "New York: spring change": (
        "2026-W10", NEW_YORK, set(),
        [cand(1, "monday", "2026-03-02T05:00:00+00:00"),
         cand(2, "sunday-late", "2026-03-09T03:59:59+00:00"),
         cand(3, "next-monday", "2026-03-09T04:00:00+00:00")],
        ["monday", "sunday-late"]),
    "already sent comparisons stay out": (
        "2026-W47", BERLIN, {2},
        [cand(1, "kept", "2026-11-17T10:00:00+00:00"),
         cand(2, "sent", "2026-11-17T11:00:00+00:00")],
        ["kept"]),
    "ordered by publication, slug breaks ties, any input time zone": (
        "2026-W47", BERLIN, set(),
        [cand(1, "c", "2026-11-20T10:00:00+00:00"),
         cand(2, "b", "2026-11-18T11:00:00+01:00"),
         cand(3, "a", "2026-11-18T05:00:00-05:00"),
         cand(4, "z", "2026-11-16T00:30:00+01:00")],
        ["z", "a", "b", "c"]),
    "an empty week": ("2026-W47", BERLIN, set(), [], []),
}


@pytest.mark.parametrize("key, tz, sent, candidates, expected", CASES.values(), ids=CASES.keys())
def test_select_edition(key, tz, sent, candidates, expected):
    chosen = select_edition(candidates, sent, edition_window(key, tz))
    assert [c.slug for c in chosen] == expected


# --- the query ---------------------------------------------------------------------------------

UTC = dt.timezone.utc


def _comparison(i, when, **tool_kw):
    return make_comparison(make_tool(f"t{i}a", f"Tool {i}A", **tool_kw), make_tool(f"t{i}b", f"Tool {i}B"),
                           published_at=when, slug=f"pair-{i}")


def _issue(session, key, status, comparisons):
    window = edition_window(key, BERLIN)
    issue = Issue(key=key, status=status, window_start=window.start, window_end=window.end)
    session.add(issue)
    session.flush()
    session.add_all(IssueComparison(issue_id=issue.id, comparison_id=c.id, position=i)
                    for i, c in enumerate(comparisons))
    session.commit()


def test_load_edition_applies_window_and_sent_issues(engine):
    with Session(engine, expire_on_commit=False) as session:
        monday = dt.datetime(2026, 11, 15, 23, 0, tzinfo=UTC)  # Mon 16 Nov 00:00 Berlin
        rows = store(session, [
            _comparison(1, monday - dt.timedelta(seconds=1)),  # the week before
            _comparison(2, monday + dt.timedelta(days=3)),
            _comparison(3, monday),
            _comparison(4, monday + dt.timedelta(days=1), scores=(None, None)),
            _comparison(5, monday + dt.timedelta(days=2)),  # goes out in a sent issue
            _comparison(6, monday + dt.timedelta(days=4)),  # in a composed, unsent issue
            _comparison(7, monday + dt.timedelta(days=7)),  # the week after
        ])
        by_slug = {c.slug: c for c in rows}
        _issue(session, "2026-W46", "sent", [by_slug["pair-5"]])
        _issue(session, "2026-W45", "ready", [by_slug["pair-6"]])

    with Session(engine) as session:
        chosen = load_edition(session, edition_window("2026-W47", BERLIN))
        assert [c.slug for c in chosen] == ["pair-3", "pair-4", "pair-2", "pair-6"]
        # Tools and reviews arrive with the comparisons, ready for the summaries.
        assert all(len(c.tool_a.reviews) in (2, 4) for c in chosen)
        assert "Tool 4A is quote-only" in verdict_line(chosen[1])


@pytest.mark.parametrize("status", SENT_STATES)
def test_every_sent_state_excludes(engine, status):
    when = dt.datetime(2026, 11, 18, 12, tzinfo=UTC)
    with Session(engine, expire_on_commit=False) as session:
        (comparison,) = store(session, [_comparison(1, when)])
        _issue(session, "2026-W46", status, [comparison])
    with Session(engine) as session:
        assert load_edition(session, edition_window("2026-W47", BERLIN)) == []


def test_editions_with_content(engine):
    with Session(engine, expire_on_commit=False) as session:
        store(session, [_comparison(1, dt.datetime(2026, 11, 22, 22, 59, tzinfo=UTC)),  # Sun, Berlin
                        _comparison(2, dt.datetime(2026, 11, 22, 23, 0, tzinfo=UTC)),  # Mon, Berlin
                        _comparison(3, dt.datetime(2026, 11, 23, 23, 0, tzinfo=UTC))])
        _issue(session, "2026-W40", "sent", [])
        _issue(session, "2026-W41", "skipped", [])
    with Session(engine) as session:
        weeks = editions_with_content(session, BERLIN)
    assert [w.key for w in weeks] == ["2026-W40", "2026-W47", "2026-W48"]
    assert weeks == sorted(weeks) and isinstance(weeks[0], Edition)
