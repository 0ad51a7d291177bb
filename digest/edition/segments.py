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
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from digest.database.models import Comparison, Issue, IssueEdition
from digest.edition.compose import issue_comparisons
from digest.edition.render import render_issue
from digest.edition.summaries import tool_stats
from digest.edition.weeks import Edition, Window
from digest.outcomes.votes import tallies
from digest.settings import Settings
from subscribers.preferences import Preferences, parse_categories

NOTHING_THIS_WEEK = "nothing in your categories this week"

# The segments of active readers the issue has no edition for, with one reader's spelling of
# the categories (readers of one segment chose the same ones, whatever their case or order).
_NEW_SEGMENTS_SQL = text("""
SELECT s.segment, MIN(s.categories), MAX(CASE WHEN s.ship_only THEN 1 ELSE 0 END)
FROM subscribers s
WHERE s.status = 'active'
  AND NOT EXISTS (SELECT 1 FROM issue_editions e
                  WHERE e.issue_id = :issue_id AND e.segment = s.segment)
GROUP BY s.segment
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
    added: int  # editions made by this call
    renders: int  # of them, how many needed a render of their own


def compose_segments(session: Session, settings: Settings, issue: Issue, *,
                     now: dt.datetime) -> SegmentsMade:
    """Make the editions the issue's active readers need and it does not have yet (flushed; the
    caller commits). Safe to call again: existing editions never change, so a reader planned
    into one keeps it."""
    if not issue.html:
        return SegmentsMade(0, 0)
    wanted = [(segment, categories or "", bool(ship_only)) for segment, categories, ship_only in
              session.execute(_NEW_SEGMENTS_SQL, {"issue_id": issue.id}).all()]
    if not wanted:
        return SegmentsMade(0, 0)
    comparisons = issue_comparisons(session, issue)
    all_ids = tuple(c.id for c in comparisons)
    position = int(session.execute(text(
        "SELECT COALESCE(MAX(position), -1) + 1 FROM issue_editions WHERE issue_id = :i"),
        {"i": issue.id}).scalar_one())
    renders: dict[tuple[int, ...], tuple[str, str, str, str, int]] = {}
    rendered = 0
    votes = None
    added = 0
    for segment, categories, ship_only in sorted(wanted):
        preferences = Preferences(parse_categories(categories), ship_only)
        chosen = select_for(comparisons, preferences)
        ids = tuple(c.id for c in chosen)
        edition = IssueEdition(issue_id=issue.id, categories=categories, ship_only=ship_only,
                               segment=segment, position=position, created_at=now,
                               comparisons=len(chosen), empty=not chosen)
        if ids == all_ids:
            renders[ids] = (issue.subject, issue.preheader, issue.html, issue.text, len(ids))
        if chosen and ids not in renders:
            if votes is None:
                votes = tallies(session, (t.id for c in comparisons for t in c.tools))
            result = render_issue(chosen, edition=Edition.parse(issue.key),
                                  window=Window(issue.window_start, issue.window_end,
                                                settings.tz),
                                  settings=settings, votes=votes)
            renders[ids] = (result.subject, result.preheader, result.html, result.text,
                            result.shown)
            rendered += 1
        if chosen:
            edition.subject, edition.preheader, edition.html, edition.text, _ = renders[ids]
            edition.html_hash = hashlib.sha256(edition.html.encode("utf-8")).hexdigest()
        try:
            with session.begin_nested():
                session.add(edition)
                session.flush()
        except IntegrityError:
            continue  # a concurrent planner made this segment's edition first; theirs stands
        position += 1
        added += 1
    return SegmentsMade(added, rendered)


def editions_of(session: Session, issue_id: int) -> list[IssueEdition]:
    return list(session.exec(select(IssueEdition).where(IssueEdition.issue_id == issue_id)
                             .order_by(IssueEdition.position)).all())
