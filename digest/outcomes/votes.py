"""Readers' answers to "Would you ship it?": one vote per reader per tool, and the totals.

A vote arrives from a signed link in an issue (see `digest.web.votes`); the totals feed the
"community votes" line of later issues and the archive, and `digest votes export`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import case, func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from digest.database.models import Tool, Vote


@dataclass(frozen=True)
class Tally:
    votes: int
    ship: int

    @property
    def skip(self) -> int:
        return self.votes - self.ship

    @property
    def ship_share(self) -> int:
        """Percent of votes that said ship, rounded half up."""
        return (200 * self.ship + self.votes) // (2 * self.votes) if self.votes else 0

    def label(self) -> str:
        """`12 reader votes · 75% ship`: how an issue and the archive show it."""
        noun = "reader vote" if self.votes == 1 else "reader votes"
        return f"{self.votes} {noun} · {self.ship_share}% ship"


def tallies(session: Session, tool_ids: Iterable[int]) -> dict[int, Tally]:
    """Totals for these tools, in one grouped query; tools nobody voted on are absent."""
    ids = sorted(set(tool_ids))
    if not ids:
        return {}
    rows = session.exec(
        select(Vote.tool_id, func.count(), func.sum(case((Vote.ship, 1), else_=0)))
        .where(Vote.tool_id.in_(ids)).group_by(Vote.tool_id)).all()
    return {tool_id: Tally(int(n), int(ship or 0)) for tool_id, n, ship in rows}


def record_vote(session: Session, *, subscriber_id: int, tool_id: int, issue_id: int,
                ship: bool, now: dt.datetime) -> bool:
    """Record or change this reader's vote on this tool; True when anything changed.

    The unique (subscriber, tool) pair decides a race between two clicks: the loser re-reads
    and updates the winner's row."""
    for _ in range(2):
        vote = session.exec(select(Vote).where(Vote.subscriber_id == subscriber_id,
                                               Vote.tool_id == tool_id)).first()
        if vote is not None:
            if vote.ship == ship:
                return False
            vote.ship, vote.issue_id, vote.voted_at = ship, issue_id, now
            session.add(vote)
            session.flush()
            return True
        try:
            with session.begin_nested():
                session.add(Vote(subscriber_id=subscriber_id, tool_id=tool_id,
                                 issue_id=issue_id, ship=ship, voted_at=now))
                session.flush()
            return True
        except IntegrityError:
            continue
    raise RuntimeError("vote kept racing a concurrent vote by the same reader")


def reader_vote(session: Session, subscriber_id: int, tool_id: int) -> bool | None:
    """This reader's current answer on this tool (True ship, False skip), or None."""
    return session.exec(select(Vote.ship).where(Vote.subscriber_id == subscriber_id,
                                                Vote.tool_id == tool_id)).first()


@dataclass(frozen=True)
class ToolTotal:
    slug: str
    name: str
    votes: int
    ship: int
    skip: int
    ship_share: int

    def as_dict(self) -> dict[str, object]:
        return {"tool": self.slug, "name": self.name, "votes": self.votes, "ship": self.ship,
                "skip": self.skip, "ship_share": self.ship_share}


def export_totals(session: Session) -> list[ToolTotal]:
    """Per-tool totals for the site to display, most votes first. Votes of erased readers
    count (their rows have no subscriber any more); nothing here names a reader."""
    counts = tallies(session, session.exec(select(Vote.tool_id).distinct()).all())
    if not counts:
        return []
    tools = session.exec(select(Tool.id, Tool.slug, Tool.name)
                         .where(Tool.id.in_(list(counts)))).all()
    out = [ToolTotal(slug, name, counts[tid].votes, counts[tid].ship, counts[tid].skip,
                     counts[tid].ship_share) for tid, slug, name in tools]
    return sorted(out, key=lambda t: (-t.votes, t.slug))
