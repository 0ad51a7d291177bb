"""Plan an issue's deliveries: one ledger row per (issue, active subscriber), inserted set-wise,
with the reader's segment edition (`digest.edition.segments`), cut into batches of one provider
request each.

One `INSERT ... SELECT` does the whole list in the database, so planning a million subscribers
moves no rows through Python; a second, grouped `INSERT ... SELECT` writes one batch row per
`batch_size` deliveries (numbered from the row's rank, so batches are runs of delivery ids).
Sending then claims batch rows, never delivery rows (`ledger.py`). It is idempotent: `NOT EXISTS` skips subscribers already planned
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

from digest.database import UTCDateTime
from digest.edition.segments import NOTHING_THIS_WEEK

# An issue in one of these states may still gain deliveries (a subscriber who confirmed while a
# send was paused gets this week's issue when it resumes).
PLANNABLE_STATES = ("ready", "sending", "paused")

_PLANNABLE_SQL = ", ".join(f"'{state}'" for state in PLANNABLE_STATES)

# Each reader gets their segment's edition (joined on the segment it was made for; none made, or
# one that shares the issue's render: the issue's own, `edition_id` NULL). Each edition's readers
# are cut into chunks of `size` in subscriber order, and a batch is one chunk of one edition, so
# a provider request carries one body. Deliveries are numbered chunk by chunk, every edition's
# first chunk, then every edition's second, ...: readers are spread over segments without regard
# to their ids, so each edition's k-th chunk covers about the same stretch of subscriber ids, and
# the inserts land in a narrow window of the (issue, subscriber) and subscriber indexes that moves
# forward, instead of sweeping both indexes once per edition (numbered edition by edition, a
# million readers in 50 segments took 3.2 s more CPU to plan than in one; this way 1.8 s more).
# With one segment the order is subscriber order. Readers whose segment has nothing this week are
# recorded `skipped` at once, in batches of their own that are done, numbered after the rest.
_PLAN_SQL = text(f"""
INSERT INTO deliveries (issue_id, subscriber_id, edition_id, batch_no, status, attempts, reason,
                        updated_at)
SELECT :issue_id, x.sid, x.eid, :base + DENSE_RANK() OVER (ORDER BY x.empty, x.chunk, x.pos) - 1,
       CASE WHEN x.empty THEN 'skipped' ELSE 'pending' END, 0,
       CASE WHEN x.empty THEN :nothing ELSE '' END, :now
FROM (SELECT s.id AS sid, CASE WHEN e.shared THEN NULL ELSE e.id END AS eid,
             COALESCE(e.id, 0) AS pos, COALESCE(e.empty, FALSE) AS empty,
             (ROW_NUMBER() OVER (PARTITION BY e.id ORDER BY s.id) - 1) / :size AS chunk
      FROM subscribers s
      LEFT JOIN issue_editions e ON e.issue_id = :issue_id AND e.segment = s.segment
      WHERE s.status = 'active'
        AND NOT EXISTS (SELECT 1 FROM deliveries d
                        WHERE d.issue_id = :issue_id AND d.subscriber_id = s.id)
        AND EXISTS (SELECT 1 FROM issues i
                    WHERE i.id = :issue_id AND i.status IN ({_PLANNABLE_SQL}))) x
WHERE TRUE
ORDER BY x.empty, x.chunk, x.pos, x.sid
ON CONFLICT (issue_id, subscriber_id) DO NOTHING
""").bindparams(bindparam("now", type_=UTCDateTime()))

_BASE_SQL = text("""
SELECT COALESCE(MAX(batch_no), -1) + 1 FROM delivery_batches
WHERE issue_id = :issue_id AND batch_no >= 0
""")

# The new rows only: ids above the highest id before the insert, read by primary key.
_BATCHES_SQL = text("""
INSERT INTO delivery_batches (issue_id, batch_no, status, first_id, last_id, size, attempts,
                              reason, updated_at)
SELECT :issue_id, batch_no, CASE WHEN MIN(status) = 'skipped' THEN 'done' ELSE 'pending' END,
       MIN(id), MAX(id), COUNT(*), 0, '', :now
FROM deliveries
WHERE id > :after AND issue_id = :issue_id AND batch_no >= :base
GROUP BY batch_no
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


DEFAULT_BATCH_SIZE = 1000
ANALYZE_AFTER = 10_000  # rows added by one plan


def plan_deliveries(session: Session, issue_id: int, *, now: dt.datetime,
                    batch_size: int = DEFAULT_BATCH_SIZE) -> PlanResult:
    """Add a pending delivery for every active subscriber the issue does not have yet, in new
    batches of `batch_size` (the sender's provider limit; a sender with a smaller limit splits a
    batch when it claims it).

    The caller commits. Within a batch, delivery ids ascend with subscriber ids (with a single
    segment, across the whole list), so a batch reads subscribers in index order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    if session.get_bind().dialect.name == "postgresql":
        # Planners of one issue take turns (a sender already holds this lock when it plans), so
        # two never number their batches from the same base.
        session.execute(text("SELECT id FROM issues WHERE id = :i FOR UPDATE"), {"i": issue_id})
    base = int(session.execute(_BASE_SQL, {"issue_id": issue_id}).scalar_one())
    after = int(session.execute(text("SELECT COALESCE(MAX(id), 0) FROM deliveries")).scalar_one())
    params = {"issue_id": issue_id, "now": now, "base": base}
    result = session.execute(_PLAN_SQL, {**params, "size": batch_size,
                                         "nothing": NOTHING_THIS_WEEK})
    if result.rowcount:
        session.execute(_BATCHES_SQL, {**params, "after": after})
    if (result.rowcount or 0) >= ANALYZE_AFTER and session.get_bind().dialect.name == "postgresql":
        # The send reads these tables at once; statistics taken while they were nearly empty
        # would plan its statements for an empty ledger until autovacuum catches up.
        session.execute(text("ANALYZE deliveries"))
        session.execute(text("ANALYZE delivery_batches"))
    planned = session.execute(text("SELECT COUNT(*) FROM deliveries WHERE issue_id = :i"),
                              {"i": issue_id}).scalar_one()
    return PlanResult(added=max(result.rowcount or 0, 0), planned=int(planned))


def count_unplanned(session: Session, issue_id: int | None) -> int:
    """How many deliveries `plan_deliveries` would add now (for `--dry-run`; writes nothing)."""
    if issue_id is None:
        return int(session.execute(_ACTIVE_SQL).scalar_one())
    return int(session.execute(_UNPLANNED_SQL, {"issue_id": issue_id}).scalar_one())
