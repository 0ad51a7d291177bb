"""The ledger counts of finished issues, kept once instead of counted on every report.

A dashboard of a year of issues would otherwise group a million deliveries on each load. A sent
issue's ledger no longer changes (it is sent only once no delivery is open), so its counts are
written when the send finishes (`store`, from the sender) or, for issues finished before this
table existed, the first time a report sees them (`ledger_totals`). A row is trusted only while
the issue is `sent` with the same `sent_at` it was written for; anything else is counted live.

What keeps arriving after an issue is sent (bounces, complaints, unsubscribes, clicks) is not
cached: `report` counts it on every load from its own small, indexed tables.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

from digest.database import utcnow
from digest.database.models import IssueTotals
from digest.delivery import ledger

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Totals:
    planned: int
    delivered: int
    failed: int
    skipped: int
    uncertain: int
    open: int
    cached: bool = False

    @classmethod
    def of(cls, counts: ledger.Counts) -> "Totals":
        return cls(counts.total, counts["sent"], counts["failed"], counts["skipped"],
                   counts["uncertain"], counts.open)


def _row(issue_id: int, totals: Totals, sent_at: dt.datetime) -> IssueTotals:
    return IssueTotals(issue_id=issue_id, sent_at=sent_at, planned=totals.planned,
                       delivered=totals.delivered, failed=totals.failed, skipped=totals.skipped,
                       uncertain=totals.uncertain, open=totals.open, computed_at=utcnow())


def store(session: Session, issue_id: int, counts: ledger.Counts, *,
          sent_at: dt.datetime) -> None:
    """Keep a just-finished issue's counts (the sender has them in hand; the caller commits)."""
    session.merge(_row(issue_id, Totals.of(counts), sent_at))


def _same(a: dt.datetime, b: dt.datetime) -> bool:
    if a.tzinfo is None:
        a = a.replace(tzinfo=dt.timezone.utc)
    if b.tzinfo is None:
        b = b.replace(tzinfo=dt.timezone.utc)
    return a == b


def ledger_totals(session: Session,
                  issues: Sequence[tuple[int, str, dt.datetime | None]]) -> dict[int, Totals]:
    """{issue id: totals} for (id, status, sent_at) rows: cached for sent issues, counted for
    the rest. Sent issues without a valid row get one (committed here; a database that refuses
    the write, such as a read-only replica, only loses the cache)."""
    sent = {i: at for i, status, at in issues if status == "sent" and at is not None}
    kept = {row.issue_id: row for row in session.execute(
        select(IssueTotals).where(IssueTotals.issue_id.in_(list(sent)))).scalars()} \
        if sent else {}
    out: dict[int, Totals] = {}
    fresh: list[IssueTotals] = []
    for issue_id, _status, _at in issues:
        row = kept.get(issue_id)
        if row is not None and _same(row.sent_at, sent[issue_id]):
            out[issue_id] = Totals(row.planned, row.delivered, row.failed, row.skipped,
                                   row.uncertain, row.open, cached=True)
            continue
        out[issue_id] = Totals.of(ledger.counts(session, issue_id))
        if issue_id in sent:
            fresh.append(_row(issue_id, out[issue_id], sent[issue_id]))
    if fresh:
        try:
            for row in fresh:
                session.merge(row)
            session.commit()
        except DBAPIError as exc:
            session.rollback()
            log.info("issue totals not cached (%s): counted again next time",
                     type(exc.orig).__name__)
    return out
