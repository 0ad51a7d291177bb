"""The categories readers can choose from: those of tools in comparisons published lately."""

from __future__ import annotations

import datetime as dt

from sqlmodel import Session, select

from digest.database.models import Comparison, Tool

RECENT_WEEKS = 12


def recent_categories(session: Session, now: dt.datetime, weeks: int = RECENT_WEEKS) -> list[str]:
    """Category names of tools in comparisons published in the last `weeks` weeks, sorted."""
    since = now - dt.timedelta(weeks=weeks)
    names = session.exec(
        select(Tool.category).distinct()
        .join(Comparison, (Comparison.tool_a_id == Tool.id) | (Comparison.tool_b_id == Tool.id))
        .where(Comparison.published_at >= since, Tool.category != "")).all()
    return sorted(set(names), key=str.casefold)
