"""Plan an issue's deliveries: one ledger row per (issue, active subscriber), inserted set-wise.

One `INSERT ... SELECT` does the whole list in the database, so planning a million subscribers
moves no rows through Python. It is idempotent: `NOT EXISTS` skips subscribers already planned
and `ON CONFLICT DO NOTHING` covers a concurrent planner on PostgreSQL; the unique
(issue_id, subscriber_id) constraint makes a duplicate impossible either way. Rows are only
added while the issue can still be sent, so planning can never reopen a finished issue.
Suppressed addresses need no test here: the lifecycle never leaves an address both active and
on the suppression list (becoming active removes it).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import bindparam, text
from sqlmodel import Session

from digest.db import UTCDateTime

# An issue in one of these states may still gain deliveries (a subscriber who confirmed while a
# send was paused gets this week's issue when it resumes).
PLANNABLE_STATES = ("ready", "sending", "paused")

_PLANNABLE_SQL = ", ".join(f"'{state}'" for state in PLANNABLE_STATES)

_PLAN_SQL = text(f"""
INSERT INTO deliveries (issue_id, subscriber_id, status, attempts, reason, updated_at)
SELECT :issue_id, s.id, 'pending', 0, '', :now
FROM subscribers s
WHERE s.status = 'active'
  AND NOT EXISTS (SELECT 1 FROM deliveries d
                  WHERE d.issue_id = :issue_id AND d.subscriber_id = s.id)
  AND EXISTS (SELECT 1 FROM issues i
              WHERE i.id = :issue_id AND i.status IN ({_PLANNABLE_SQL}))
ORDER BY s.id
ON CONFLICT (issue_id, subscriber_id) DO NOTHING
""").bindparams(bindparam("now", type_=UTCDateTime()))

_UNPLANNED_SQL = text("""
SELECT COUNT(*) FROM subscribers s
WHERE s.status = 'active'
  AND NOT EXISTS (SELECT 1 FROM deliveries d
                  WHERE d.issue_id = :issue_id AND d.subscriber_id = s.id)
""")

_ACTIVE_SQL = text("SELECT COUNT(*) FROM subscribers WHERE status = 'active'")


@dataclass(frozen=True)
class PlanResult:
    added: int  # rows inserted by this call
    planned: int  # rows the issue has in total


def plan_deliveries(session: Session, issue_id: int, *, now: dt.datetime) -> PlanResult:
    """Add a pending delivery for every active subscriber the issue does not have yet.

    The caller commits. Inserting in subscriber-id order keeps delivery ids in the same order,
    so batches read subscribers sequentially.
    """
    result = session.execute(_PLAN_SQL, {"issue_id": issue_id, "now": now})
    planned = session.execute(text("SELECT COUNT(*) FROM deliveries WHERE issue_id = :i"),
                              {"i": issue_id}).scalar_one()
    return PlanResult(added=max(result.rowcount or 0, 0), planned=int(planned))


def count_unplanned(session: Session, issue_id: int | None) -> int:
    """How many deliveries `plan_deliveries` would add now (for `--dry-run`; writes nothing)."""
    if issue_id is None:
        return int(session.execute(_ACTIVE_SQL).scalar_one())
    return int(session.execute(_UNPLANNED_SQL, {"issue_id": issue_id}).scalar_one())
