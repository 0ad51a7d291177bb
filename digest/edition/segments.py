"""Segments: readers with the same preferences get one edition, rendered once for all of them.

Before an issue is planned, every distinct preference set among active readers (categories,
ship-only) that the issue has no edition for yet gets one: the issue's comparisons that set
wants, rendered with its own headline, counts and summary. A set that wants every comparison
shares the issue's own render, sets that want the same comparisons share one render, and a set
that wants none of them gets an empty edition, whose readers the plan records as skipped.
Renders are therefore at most the distinct comparison selections, never the readers.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, select

from digest.database.models import Comparison, Issue, IssueEdition
from digest.edition.compose import issue_comparisons
from digest.edition.render import RenderedIssue, render_issue
from digest.edition.summaries import tool_stats
from digest.edition.weeks import Edition, Window
from digest.outcomes.votes import tallies
from digest.settings import Settings
from subscribers.preferences import Preferences, parse_categories

NOTHING_THIS_WEEK = "nothing in your categories this week"

# The segments of active readers the issue has no edition for, with the first active reader's
# spelling of the categories (readers of one segment chose the same ones, whatever their case or
# order, and the same ship-only choice). The distinct segments are found by skipping through the
# (segment, id) index, one seek a segment, and each segment's first active reader by another:
# grouping the whole subscribers table took 0.57 s a send at a million readers in 50 segments
# (0.42 s in one), this takes under a millisecond.
_NEW_SEGMENTS_SQL = text("""
WITH RECURSIVE segments(segment) AS (
    SELECT MIN(segment) FROM subscribers
    UNION ALL
    SELECT (SELECT MIN(s.segment) FROM subscribers s WHERE s.segment > g.segment)
    FROM segments g WHERE g.segment IS NOT NULL
)
SELECT g.segment, r.categories, r.ship_only
FROM segments g
JOIN subscribers r ON r.id = (SELECT s.id FROM subscribers s
                              WHERE s.segment = g.segment AND s.status = 'active'
                              ORDER BY s.segment, s.id LIMIT 1)
WHERE g.segment IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM issue_editions e
                  WHERE e.issue_id = :issue_id AND e.segment = g.segment)
""")


def ships(comparison: Comparison) -> bool:
    """At least one of its tools has a Ship verdict (what "ship verdicts only" keeps)."""
    return any(tool_stats(tool).verdict == "ship" for tool in comparison.tools)


def select_for(comparisons: Sequence[Comparison], preferences: Preferences) -> list[Comparison]:
    """The comparisons a segment gets, in the issue's order. Pure."""
    return [c for c in comparisons
            if preferences.wants([t.category for t in c.tools if t.category], ships(c))]


@dataclass(frozen=True)
class SegmentsMade:
    added: int  # segments this call made editions for (one a concurrent planner made stands)
    renders: int  # of them, how many needed a render of their own


def compose_segments(session: Session, settings: Settings, issue: Issue, *,
                     now: dt.datetime) -> SegmentsMade:
    """Make the editions the issue's active readers need and it does not have yet (flushed; the
    caller commits). Safe to call again and from two planners at once: existing editions never
    change (a reader planned into one keeps it), and a segment made concurrently stands."""
    if not issue.html:
        return SegmentsMade(0, 0)
    wanted = [(segment, categories or "", bool(ship_only)) for segment, categories, ship_only in
              session.execute(_NEW_SEGMENTS_SQL, {"issue_id": issue.id}).all()]
    if not wanted:
        return SegmentsMade(0, 0)
    everything = all(segment == Preferences().key for segment, _, _ in wanted)
    comparisons = [] if everything else issue_comparisons(session, issue)
    renders: dict[tuple[int, ...], RenderedIssue] = {}
    votes = None
    rows = []
    for segment, categories, ship_only in sorted(wanted):
        preferences = Preferences(parse_categories(categories), ship_only)
        row = dict(issue_id=issue.id, segment=segment, categories=categories,
                   ship_only=ship_only, created_at=now, shared=False, empty=False,
                   comparisons=0, subject="", preheader="", html="", text="", html_hash="")
        chosen = comparisons if segment == Preferences().key else select_for(comparisons,
                                                                              preferences)
        ids = tuple(c.id for c in chosen)
        if segment == Preferences().key or len(ids) == len(comparisons):
            row.update(shared=True, comparisons=len(comparisons))  # the issue's own render
        elif not chosen:
            row.update(empty=True)
        else:
            if ids not in renders:
                if votes is None:
                    votes = tallies(session, (t.id for c in comparisons for t in c.tools))
                renders[ids] = render_issue(
                    chosen, edition=Edition.parse(issue.key), settings=settings, votes=votes,
                    window=Window(issue.window_start, issue.window_end, settings.tz))
            result = renders[ids]
            row.update(comparisons=len(chosen), subject=result.subject,
                       preheader=result.preheader, html=result.html, text=result.text,
                       html_hash=hashlib.sha256(result.html.encode("utf-8")).hexdigest())
        rows.append(row)
    # One statement; a segment another planner made meanwhile keeps theirs.
    insert = (pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert)
    session.execute(insert(IssueEdition.__table__).values(rows)
                    .on_conflict_do_nothing(index_elements=["issue_id", "segment"]))
    return SegmentsMade(len(rows), len(renders))


def editions_of(session: Session, issue_id: int) -> list[IssueEdition]:
    return list(session.exec(select(IssueEdition).where(IssueEdition.issue_id == issue_id)
                             .order_by(IssueEdition.id)).all())


def segment_issue(session: Session, settings: Settings, issue: Issue,
                  comparisons: Sequence[Comparison], preferences: Preferences) -> Issue | None:
    """What one segment's readers get of `issue`, as an unsaved issue (for the preview), or
    None when the segment has nothing in it."""
    chosen = select_for(comparisons, preferences)
    if not chosen:
        return None
    if preferences.key == Preferences().key or len(chosen) == len(comparisons):
        return issue
    result = render_issue(chosen, edition=Edition.parse(issue.key), settings=settings,
                          votes=tallies(session, (t.id for c in chosen for t in c.tools)),
                          window=Window(issue.window_start, issue.window_end, settings.tz))
    return Issue(key=issue.key, status=issue.status, status_reason=issue.status_reason,
                 window_start=issue.window_start, window_end=issue.window_end,
                 subject=result.subject, preheader=result.preheader, html=result.html,
                 text=result.text, created_at=issue.created_at)


@dataclass(frozen=True)
class SegmentLine:
    segment: str
    categories: str
    ship_only: bool
    readers: int
    comparisons: int
    empty: bool
    html_bytes: int

    def as_dict(self) -> dict[str, object]:
        return {"segment": self.segment, "categories": self.categories,
                "ship_only": self.ship_only, "readers": self.readers,
                "comparisons": self.comparisons, "empty": self.empty,
                "html_bytes": self.html_bytes}


_SEGMENT_READERS_SQL = text("""
SELECT e.id, COUNT(s.id) FROM issue_editions e
JOIN subscribers s ON s.segment = e.segment AND s.status = 'active'
WHERE e.issue_id = :issue_id
GROUP BY e.id
""")


def segment_lines(session: Session, issue: Issue) -> list[SegmentLine]:
    """Each edition of the issue with its active readers and its size (for `send --dry-run`)."""
    readers = dict(session.execute(_SEGMENT_READERS_SQL, {"issue_id": issue.id}).all())
    return [SegmentLine(e.segment, e.categories, e.ship_only, int(readers.get(e.id, 0)),
                        e.comparisons, e.empty,
                        len((issue.html if e.shared else e.html).encode("utf-8")))
            for e in editions_of(session, issue.id)]
