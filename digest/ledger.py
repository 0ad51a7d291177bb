"""The delivery ledger and the issue's send lock: every state change is one guarded UPDATE named
after its transition, so a row can only move along the allowed edges whatever else is running.

Deliveries::

    pending --claim--> claimed(lease, batch key) --record--> sent(provider id) | failed(reason)
                                                          \\-> pending (transient, retry later)
    claimed --orphaned (sender gone, lease over)--> uncertain --claim again, SAME batch key--> claimed
    pending|claimed (subscriber no longer active) --> skipped(reason)

Issues::

    ready | paused | sending(holder gone or lease over) --acquire--> sending(sender, lease)
    sending(us) --finish--> sent      sending(us) --pause--> paused(reason)

Functions take a session and leave committing to the caller: the send loop commits a claim
before the provider call and the outcome after it, so a crash anywhere leaves rows `claimed`,
which the next holder of the issue turns into `uncertain` instead of silently re-sending them.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import bindparam, case, func, literal, or_, select, text, update
from sqlmodel import Session

from digest.db import UTCDateTime
from digest.models import Delivery, Issue
from digest.providers.base import Outcome

D = Delivery.__table__.c
I = Issue.__table__.c  # noqa: E741
_DELIVERIES = Delivery.__table__
_ISSUES = Issue.__table__

# Where a recipient's row may end; anything else means the send is not finished.
FINAL_STATES = ("sent", "failed", "skipped")
OPEN_STATES = ("pending", "claimed", "uncertain")
# An answer may still arrive for a batch that was declared uncertain; it is recorded then.
_RECORDABLE = ("claimed", "uncertain")
# The issue states a sender may take over (a `sending` one only when its holder is gone).
ACQUIRABLE = ("ready", "paused", "sending")


def _aware(at: dt.datetime) -> dt.datetime:
    if at.tzinfo is None:
        raise ValueError(f"naive datetime {at!r}: give a time zone")
    return at


def new_batch_key(issue_key: str) -> str:
    """Unique per provider request; sent as the idempotency key where the provider takes one."""
    return f"{issue_key}-{uuid.uuid4().hex}"


# --- the issue lock -------------------------------------------------------------------------

@dataclass(frozen=True)
class Acquisition:
    """The result of trying to become the issue's one sender."""

    acquired: bool
    status: str  # the issue's status after the attempt
    holder: str | None = None  # who is sending, when someone else is
    lease_until: dt.datetime | None = None
    took_over_from: str | None = None  # a previous sender that died or let its lease run out
    reason: str = ""  # the issue's recorded reason (why it paused)

    @property
    def message(self) -> str:
        if self.acquired:
            return "sending"
        if self.status == "sending":
            until = self.lease_until.isoformat(timespec="seconds") if self.lease_until else "?"
            return f"already being sent by {self.holder} (lease until {until})"
        if self.status == "sent":
            return "already sent"
        if self.status == "skipped":
            return "skipped: nothing new to send" + (f" ({self.reason})" if self.reason else "")
        return f"cannot be sent: status is {self.status!r}" + (f" ({self.reason})" if self.reason else "")


def acquire_issue(session: Session, issue_id: int, *, sender: str, now: dt.datetime,
                  lease: dt.timedelta,
                  holder_gone: Callable[[str], bool] = lambda _holder: False) -> Acquisition:
    """Move the issue to `sending` under our name, unless another live sender holds it.

    A compare-and-set on (status, sender) read under a row lock (PostgreSQL `FOR UPDATE`; SQLite's
    immediate transaction already serialises writers), so of two senders started together
    exactly one wins and the other learns who is sending.
    """
    _aware(now)
    query = select(I.status, I.sender, I.sender_lease_until, I.status_reason).where(I.id == issue_id)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    row = session.execute(query).one_or_none()
    if row is None:
        raise LookupError(f"no issue with id {issue_id}")
    status, holder, until, reason = row
    if status not in ACQUIRABLE:
        return Acquisition(False, status, reason=reason)
    took_over = None
    if status == "sending" and holder is not None and holder != sender:
        if until is not None and until > now and not holder_gone(holder):
            return Acquisition(False, status, holder, until)
        took_over = holder
    guard = I.sender.is_(None) if holder is None else I.sender == holder
    lease_until = now + lease
    result = session.execute(
        update(_ISSUES)
        .where(I.id == issue_id, I.status == status, guard)
        .values(status="sending", status_reason="", sender=sender, sender_lease_until=lease_until,
                send_started_at=func.coalesce(I.send_started_at, literal(now, UTCDateTime()))))
    if result.rowcount != 1:  # someone changed it between our read and write
        fresh = session.execute(query).one()
        return Acquisition(False, fresh.status, fresh.sender, fresh.sender_lease_until)
    return Acquisition(True, "sending", lease_until=lease_until, took_over_from=took_over)


def renew_issue_lease(session: Session, issue_id: int, *, sender: str, now: dt.datetime,
                      lease: dt.timedelta) -> dt.datetime | None:
    """Extend our lease; None means we no longer hold the issue and must stop sending."""
    lease_until = _aware(now) + lease
    result = session.execute(
        update(_ISSUES).where(I.id == issue_id, I.status == "sending", I.sender == sender)
        .values(sender_lease_until=lease_until))
    return lease_until if result.rowcount == 1 else None


def pause_issue(session: Session, issue_id: int, *, sender: str, reason: str) -> bool:
    """sending(us) -> paused(reason): the send stops and says why; `digest send` resumes it."""
    result = session.execute(
        update(_ISSUES).where(I.id == issue_id, I.status == "sending", I.sender == sender)
        .values(status="paused", status_reason=reason, sender=None, sender_lease_until=None))
    return result.rowcount == 1


def finish_issue(session: Session, issue_id: int, *, sender: str, now: dt.datetime) -> bool:
    """sending(us) -> sent, only when no delivery is left open (checked in the same statement)."""
    open_rows = (select(literal(1)).select_from(_DELIVERIES)
                 .where(D.issue_id == issue_id, D.status.in_(OPEN_STATES)).exists())
    result = session.execute(
        update(_ISSUES)
        .where(I.id == issue_id, I.status == "sending", I.sender == sender, ~open_rows)
        .values(status="sent", status_reason="", sent_at=_aware(now), sender=None,
                sender_lease_until=None))
    return result.rowcount == 1


# --- workers joining a send ------------------------------------------------------------------
#
# One send, several processes: the first `digest send` acquires the issue (status `sending`,
# `sender` = its id, a lease it renews); a worker (`digest worker`) never takes the issue, it
# joins while the issue is `sending` under a live lease and only claims batches. Two independent
# `digest send` runs still exclude each other through `acquire_issue`.

@dataclass(frozen=True)
class Membership:
    """Whether a worker may claim batches of the issue now, and if not, why."""

    joined: bool
    status: str
    holder: str | None = None
    reason: str = ""

    @property
    def message(self) -> str:
        if self.joined:
            return f"joined the send held by {self.holder}"
        if self.status == "sending":
            return f"the send's holder {self.holder} has let its lease run out: nothing to join"
        return f"not being sent (status {self.status!r}): nothing to join" + (
            f" ({self.reason})" if self.reason else "")


def join_issue(session: Session, issue_id: int, *, now: dt.datetime) -> Membership:
    """A worker's check, at start and before each claim: the issue is `sending` and its holder's
    lease has not run out. Reads only; the holder alone renews or ends the send."""
    row = session.execute(select(I.status, I.sender, I.sender_lease_until, I.status_reason)
                          .where(I.id == issue_id)).one_or_none()
    if row is None:
        raise LookupError(f"no issue with id {issue_id}")
    status, holder, until, reason = row
    live = status == "sending" and holder is not None and until is not None and until > _aware(now)
    return Membership(live, status, holder, reason)


def pause_send(session: Session, issue_id: int, *, reason: str) -> bool:
    """sending(anyone) -> paused(reason): a worker that trips the circuit breaker stops the whole
    send, whoever holds it; the holder sees the pause at its next lease renewal."""
    result = session.execute(
        update(_ISSUES).where(I.id == issue_id, I.status == "sending")
        .values(status="paused", status_reason=reason, sender=None, sender_lease_until=None))
    return result.rowcount == 1


def claimed_elsewhere(session: Session, issue_id: int) -> tuple[int, dt.datetime | None]:
    """(claimed rows, earliest claim lease) of the issue: what other workers still have in flight,
    and when the first of those claims may be declared orphaned."""
    n, first = session.execute(
        select(func.count(), func.min(D.lease_until))
        .where(D.issue_id == issue_id, D.status == "claimed")).one()
    return int(n), first


def renew_claims(session: Session, batch_keys: Sequence[str], *, lease_until: dt.datetime) -> int:
    """Extend the lease of our own claimed batches while we wait on the provider (a backoff), so
    no other worker declares them orphaned while we still own them."""
    if not batch_keys:
        return 0
    result = session.execute(
        update(_DELIVERIES).where(D.batch_key.in_(list(batch_keys)), D.status == "claimed")
        .values(lease_until=lease_until).execution_options(synchronize_session=False))
    return result.rowcount or 0


# --- claiming -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Claim:
    batch_key: str
    size: int
    retry: bool = False  # an uncertain batch claimed again (same key where it fits)
    last_id: int = 0  # the highest delivery id claimed: where this claimer's next claim starts


def claim_statement(dialect: str, issue_id: int, *, batch_key: str, limit: int,
                    now: dt.datetime, lease_until: dt.datetime, after_id: int = 0):
    """The UPDATE that `claim_batch` runs (the benchmark EXPLAINs this very statement)."""
    due = select(D.id).where(D.issue_id == issue_id, D.status == "pending", D.id > after_id,
                             or_(D.lease_until.is_(None), D.lease_until <= now)
                             ).order_by(D.id).limit(limit)
    chosen = D.id.in_(due.scalar_subquery())
    if dialect == "postgresql":
        # A materialised CTE runs the locking SELECT exactly once; as a plain `IN (subquery)`
        # PostgreSQL may rescan it and claim more than `limit` rows. Joined (UPDATE ... FROM),
        # not `IN`: the planner then reaches each row by primary key instead of hashing a
        # sequential scan of the whole ledger.
        locked = due.with_for_update(skip_locked=True).cte("due").prefix_with("MATERIALIZED")
        chosen = D.id == locked.c.id
    return (update(_DELIVERIES)
            .where(chosen, D.status == "pending")
            .values(status="claimed", batch_key=batch_key, lease_until=lease_until,
                    attempts=D.attempts + 1, updated_at=now)
            .returning(D.id)
            .execution_options(synchronize_session=False))


def claim_batch(session: Session, issue_id: int, *, batch_key: str, limit: int,
                now: dt.datetime, lease_until: dt.datetime, after_id: int = 0) -> Claim | None:
    """pending -> claimed: the next `limit` deliveries in id order after `after_id` that are
    due (a transient failure sets a not-before time in `lease_until`).

    `after_id` is the claimer's cursor (`Claim.last_id` of its previous claim). Without it the
    planner, trusting statistics taken while every row was pending, walks the primary key past
    every row already sent: 1 s a claim at 90% of 1,000,000 sent. With it each claim starts
    where the last one ended. A claimer whose cursor finds nothing starts again from 0, which
    picks up rows a transient failure put back behind it.

    PostgreSQL locks the chosen rows with `FOR UPDATE SKIP LOCKED` so concurrent claimers never
    block on or share rows; on SQLite the immediate transaction does the same by serialising.
    """
    _aware(now)
    stmt = claim_statement(session.get_bind().dialect.name, issue_id, batch_key=batch_key,
                           limit=limit, now=now, lease_until=lease_until, after_id=after_id)
    ids = session.connection().execute(stmt).scalars().all()
    return Claim(batch_key, len(ids), last_id=max(ids)) if ids else None


def claim_uncertain(session: Session, issue_id: int, *, limit: int, now: dt.datetime,
                    lease_until: dt.datetime) -> Claim | None:
    """uncertain -> claimed for a retry, one earlier batch at a time, keeping its batch key so a
    provider with idempotency keys recognises the request and does not send it twice.

    A batch larger than today's limit (the provider was changed) is split under new keys: with
    another provider the old key means nothing anyway.
    """
    _aware(now)
    first = session.execute(
        select(D.batch_key, func.count()).where(D.issue_id == issue_id, D.status == "uncertain")
        .group_by(D.batch_key).order_by(func.min(D.id)).limit(1)).one_or_none()
    if first is None:
        return None
    old_key, size = first
    values = dict(status="claimed", lease_until=lease_until, attempts=D.attempts + 1,
                  updated_at=now)
    if old_key is not None and size <= limit:
        result = session.execute(
            update(_DELIVERIES)
            .where(D.issue_id == issue_id, D.status == "uncertain", D.batch_key == old_key)
            .values(**values).execution_options(synchronize_session=False))
        # Several workers may pick the same uncertain batch; the one whose UPDATE waited on the
        # other's row locks finds nothing left and must not read the winner's rows as its own.
        return Claim(old_key, result.rowcount, retry=True) if result.rowcount else None
    # Split: a chunk goes out under a fresh key, and the rest is re-keyed too, so a key that
    # went out with the whole batch is never reused for a different payload.
    root = (old_key or "batch").split("~")[0]
    key, rest_key = (f"{root}~{uuid.uuid4().hex[:8]}" for _ in range(2))
    same = D.batch_key.is_(None) if old_key is None else D.batch_key == old_key
    part = select(D.id).where(D.issue_id == issue_id, D.status == "uncertain", same
                              ).order_by(D.id).limit(limit)
    result = session.execute(
        update(_DELIVERIES).where(D.id.in_(part.scalar_subquery()), D.status == "uncertain")
        .values(batch_key=key, **values).execution_options(synchronize_session=False))
    session.execute(update(_DELIVERIES).where(D.issue_id == issue_id, D.status == "uncertain", same)
                    .values(batch_key=rest_key).execution_options(synchronize_session=False))
    return Claim(key, result.rowcount, retry=True) if result.rowcount else None


def mark_uncertain(session: Session, issue_id: int, *, now: dt.datetime,
                   expired_only: bool = True) -> int:
    """claimed -> uncertain: the request of these batches may have gone out with no answer seen.

    `expired_only=False` is for a sender that has just acquired the issue: no other sender is
    live then, so every claim left behind is orphaned, whatever its lease says.
    """
    _aware(now)
    conditions = [D.issue_id == issue_id, D.status == "claimed"]
    if expired_only:
        conditions.append(D.lease_until <= now)
    result = session.execute(
        update(_DELIVERIES).where(*conditions)
        .values(status="uncertain", lease_until=None, updated_at=now,
                reason="no answer recorded: the sender stopped while the request was in flight")
        .execution_options(synchronize_session=False))
    return result.rowcount or 0


def release_batch(session: Session, batch_key: str, *, now: dt.datetime, uncertain: bool,
                  reason: str) -> int:
    """claimed -> pending (the provider surely did not take the request) or -> uncertain (it
    may have: a timeout or dropped connection after the request left)."""
    _aware(now)
    values: dict = dict(updated_at=now, reason=reason, lease_until=None)
    if uncertain:
        values["status"] = "uncertain"
    else:
        values.update(status="pending", batch_key=None)
    result = session.execute(
        update(_DELIVERIES).where(D.batch_key == batch_key, D.status == "claimed")
        .values(**values).execution_options(synchronize_session=False))
    return result.rowcount or 0


# --- recording ------------------------------------------------------------------------------

@dataclass
class Recorded:
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    retry: int = 0  # transient: back to pending
    uncertain: int = 0  # some recipients of the batch may or may not have been sent
    gave_up: int = 0  # transient too often: failed
    failed_reasons: dict[str, int] = field(default_factory=dict)


def record_outcomes(session: Session, batch_key: str, results: Sequence[tuple[int, Outcome]], *,
                    now: dt.datetime, retry_at: dt.datetime, max_attempts: int,
                    skipped: Iterable[tuple[int, str]] = (), whole_batch: bool = False
                    ) -> Recorded:
    """claimed -> sent | failed | pending (transient) | uncertain | skipped, for one batch, in
    one transaction.

    Every update is guarded by the batch key and a recordable state, so an answer that arrives
    after another sender took the batch over still records the truth but never reopens a final
    row. Rows with the same outcome are written by one statement (a substitution provider gives a
    whole batch one message id); per-recipient message ids go in one executemany.
    `whole_batch` says the results cover every open row of the batch, so one outcome for all of
    them is written by batch key alone, without listing the ids.
    """
    _aware(now)
    groups: dict[tuple[str, str | None, str], list[int]] = defaultdict(list)
    for delivery_id, outcome in results:
        groups[(outcome.status, outcome.message_id, outcome.reason)].append(delivery_id)
    for delivery_id, reason in skipped:
        groups[("skipped", None, reason)].append(delivery_id)
    recorded = Recorded()
    transient_ids: list[int] = []
    sent_one_each: list[dict] = []
    # `or_` rather than IN: an expanding IN cannot go into an executemany.
    guard = (D.batch_key == batch_key, or_(*(D.status == state for state in _RECORDABLE)))
    for (status, message_id, reason), ids in groups.items():
        _count(recorded, status, reason, len(ids))
        if status == "sent" and len(ids) == 1:
            sent_one_each.append({"b_id": ids[0], "b_mid": message_id})
            continue
        if status == "transient":
            transient_ids.extend(ids)
        values = _values_for(status, message_id, reason, now=now, retry_at=retry_at,
                             max_attempts=max_attempts, batch_key_root=batch_key.split("~")[0])
        if whole_batch and len(groups) == 1:
            session.connection().execute(update(_DELIVERIES).where(*guard).values(**values))
            continue
        for start in range(0, len(ids), 1000):
            session.execute(update(_DELIVERIES).where(D.id.in_(ids[start:start + 1000]), *guard)
                            .values(**values).execution_options(synchronize_session=False))
    if sent_one_each and session.get_bind().dialect.name == "postgresql":
        # One statement for the batch instead of one per recipient (a pipeline of 100-1000
        # round trips was most of a PostgreSQL worker's time).
        session.connection().execute(_SENT_EACH_PG, {
            "ids": [row["b_id"] for row in sent_one_each],
            "mids": [row["b_mid"] for row in sent_one_each], "key": batch_key, "now": now})
    elif sent_one_each:
        session.connection().execute(
            update(_DELIVERIES).where(D.id == bindparam("b_id"), *guard)
            .values(status="sent", provider_message_id=bindparam("b_mid"), reason="",
                    lease_until=None, updated_at=now),
            sent_one_each)
    if transient_ids:
        # Rows that ran out of tries keep their batch key (the others drop it): count them.
        gave_up = int(session.execute(
            select(func.count()).select_from(_DELIVERIES)
            .where(D.batch_key == batch_key, D.status == "failed",
                   D.id.in_(transient_ids))).scalar_one())
        recorded.retry -= gave_up
        recorded.failed += gave_up
        recorded.gave_up = gave_up
    return recorded


_SENT_EACH_PG = text("""
UPDATE deliveries AS d
SET status = 'sent', provider_message_id = v.mid, reason = '', lease_until = NULL, updated_at = :now
FROM unnest(CAST(:ids AS integer[]), CAST(:mids AS varchar[])) AS v(id, mid)
WHERE d.id = v.id AND d.batch_key = :key AND d.status IN ('claimed', 'uncertain')
""").bindparams(bindparam("now", type_=UTCDateTime()))


def _values_for(status: str, message_id: str | None, reason: str, *, now: dt.datetime,
                retry_at: dt.datetime, max_attempts: int, batch_key_root: str = "") -> dict:
    if status == "sent":
        return dict(status="sent", provider_message_id=message_id, reason="", lease_until=None,
                    updated_at=now)
    if status == "rejected":
        return dict(status="failed", reason=reason or "rejected", lease_until=None, updated_at=now)
    if status == "skipped":
        return dict(status="skipped", reason=reason, lease_until=None, updated_at=now)
    if status == "uncertain":
        # Only some recipients of the batch are in doubt (an SMTP connection lost during DATA):
        # they get a key of their own, so a retry never reuses the batch's key for a smaller payload.
        return dict(status="uncertain", reason=reason, lease_until=None, updated_at=now,
                    batch_key=f"{(batch_key_root or 'batch')}~{uuid.uuid4().hex[:8]}")
    if status == "transient":
        # Back to the queue with a not-before time, unless this row has had all its tries.
        exhausted = D.attempts >= max_attempts
        return dict(
            status=case((exhausted, "failed"), else_="pending"),
            reason=case((exhausted, literal(f"gave up after {max_attempts} attempts: {reason}")),
                        else_=literal(reason)),
            batch_key=case((exhausted, D.batch_key), else_=None),
            lease_until=case((exhausted, None), else_=literal(retry_at, UTCDateTime())),
            updated_at=now)
    raise ValueError(f"unknown outcome status {status!r}")


def _count(recorded: Recorded, status: str, reason: str, n: int) -> None:
    if status == "sent":
        recorded.sent += n
    elif status == "rejected":
        recorded.failed += n
        recorded.failed_reasons[reason] = recorded.failed_reasons.get(reason, 0) + n
    elif status == "skipped":
        recorded.skipped += n
    elif status == "uncertain":
        recorded.uncertain += n
    else:
        recorded.retry += n


# --- reading --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Counts:
    """Where an issue's deliveries stand."""

    by_status: dict[str, int]
    failed_reasons: dict[str, int]

    def __getitem__(self, status: str) -> int:
        return self.by_status.get(status, 0)

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    @property
    def open(self) -> int:
        return sum(self[s] for s in OPEN_STATES)


def counts(session: Session, issue_id: int) -> Counts:
    """Two grouped SELECTs over the (issue_id, status, id) index: fine at a million rows."""
    by_status = {status: int(n) for status, n in session.execute(
        select(D.status, func.count()).where(D.issue_id == issue_id).group_by(D.status))}
    reasons: dict[str, int] = {}
    if by_status.get("failed"):
        reasons = {reason or "unknown": int(n) for reason, n in session.execute(
            select(D.reason, func.count()).where(D.issue_id == issue_id, D.status == "failed")
            .group_by(D.reason).order_by(func.count().desc()))}
    return Counts(by_status, reasons)


def next_retry_at(session: Session, issue_id: int) -> dt.datetime | None:
    """When the earliest delayed (transient) delivery becomes due, if any pending one is waiting."""
    return session.execute(
        select(func.min(D.lease_until)).where(D.issue_id == issue_id, D.status == "pending",
                                              D.lease_until.is_not(None))).scalar_one_or_none()


def batch_rows(session: Session, batch_key: str):
    """The claimed rows of one batch joined to their subscribers, in delivery-id order (the
    order is part of the request, so a retried batch is byte-for-byte the same request)."""
    from subscribers.models import Subscriber

    S = Subscriber.__table__.c
    result = session.connection().execute(
        select(D.id, D.subscriber_id, S.email, S.name, S.status)
        .join_from(_DELIVERIES, Subscriber.__table__, S.id == D.subscriber_id)
        .where(D.batch_key == batch_key, D.status == "claimed")
        .order_by(D.id))
    # The driver's plain tuples: these columns need no type conversion, and building a Row per
    # recipient was a tenth of the ledger thread's time in a million-recipient send.
    return result.cursor.fetchall()


__all__ = [
    "ACQUIRABLE", "Acquisition", "Claim", "Counts", "FINAL_STATES", "Membership", "OPEN_STATES",
    "Recorded", "acquire_issue", "batch_rows", "claim_batch", "claim_uncertain",
    "claimed_elsewhere", "counts", "finish_issue", "join_issue", "mark_uncertain",
    "new_batch_key", "next_retry_at", "pause_issue", "pause_send", "record_outcomes",
    "release_batch", "renew_claims", "renew_issue_lease",
]
