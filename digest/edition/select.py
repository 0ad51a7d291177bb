"""Which comparisons make an edition: published inside its window and not already mailed.

The rule is a pure function over plain values so it can be tested across week and DST boundaries
without a database; `load_edition` is the thin query around it, two set-wise SELECTs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable
from typing import Protocol, TypeVar
from zoneinfo import ZoneInfo

from sqlmodel import Session, select

from digest.database.models import Comparison, Issue, IssueComparison
from digest.edition.weeks import Edition, Window

# An issue in one of these states may have reached readers, so its comparisons never come back.
# A `ready` issue of another week has not gone out; its comparisons stay eligible.
SENT_STATES = ("sending", "paused", "sent")


class Candidate(Protocol):
    id: int | None
    slug: str
    published_at: dt.datetime


C = TypeVar("C", bound=Candidate)


def select_edition(candidates: Iterable[C], sent_ids: Collection[int], window: Window) -> list[C]:
    """The edition's comparisons, oldest first (slug breaks ties, so the order is stable)."""
    chosen = [c for c in candidates if c.published_at in window and c.id not in sent_ids]
    return sorted(chosen, key=lambda c: (c.published_at, c.slug))


def load_edition(session: Session, window: Window) -> list[Comparison]:
    """Load the window's comparisons (tools and reviews eagerly) and apply `select_edition`."""
    in_window = (Comparison.published_at >= window.start, Comparison.published_at < window.end)
    candidates = session.exec(select(Comparison).where(*in_window)).all()
    if not candidates:
        return []
    sent_ids = set(session.exec(
        select(IssueComparison.comparison_id)
        .join(Issue, Issue.id == IssueComparison.issue_id)
        .join(Comparison, Comparison.id == IssueComparison.comparison_id)
        .where(Issue.status.in_(SENT_STATES), *in_window)
    ).all())
    return select_edition(candidates, sent_ids, window)


def editions_with_content(session: Session, tz: ZoneInfo) -> list[Edition]:
    """Every week that has comparisons or a composed (not skipped) issue, oldest first: what an
    operator can preview."""
    found = {Edition.at(stamp, tz) for stamp in session.exec(select(Comparison.published_at))}
    found.update(Edition.parse(key) for key in
                 session.exec(select(Issue.key).where(Issue.status != "skipped")))
    return sorted(found)
