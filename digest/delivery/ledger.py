"""The delivery ledger and the issue's send lock: every state change is one guarded UPDATE named
after its transition, so a row can only move along the allowed edges whatever else is running.

Deliveries are planned into batches, one provider request each (`plan.py`). A batch moves::

    pending --claim--> claimed(lease, key) --start--> sending(started_at) --record--> done
                                                       | pending (some rows retry later)
    sending --back off (answered: nothing taken, e.g. 429)--> claimed
    claimed|sending --release--> pending (surely not sent) | uncertain (maybe sent)
    orphaned (sender gone, lease over): sending --> uncertain, claimed --> pending
    uncertain --claim again, SAME key--> claimed(started_at kept) --start--> sending ...

`started_at` is the mark of doubt: set when a request leaves, cleared when an answer says
nothing was taken, and kept while any request for these recipients may have been accepted (an
uncertain batch claimed again keeps it, so a crash before its retry starts leaves it uncertain,
never pending under a new key). The start is one small write per batch, committed before the
request leaves, so a sender that dies with batches claimed ahead or waiting out a 429 leaves
them to be sent normally, and only the request that was really out is in doubt.

and each of its deliveries is written once, by the record: pending -> sent(provider id) |
failed(reason) | skipped(reason) | pending (transient). Claims and leases live on the batch row
alone, so claiming 1,000 recipients writes one row, not 1,000.

Issues::

    ready | paused | sending(holder gone or lease over) --acquire--> sending(sender, lease)
    sending(us) --finish--> sent      sending(us) --pause--> paused(reason)

Functions take a session and leave committing to the caller: the send loop commits a claim,
then the start of its request just before the provider call, and the outcome after it, so a
crash anywhere leaves its batches `claimed` (never started: pending again) or `sending`
(started: the next holder of the issue turns them into `uncertain` instead of silently re-sending
them).
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter

from sqlalchemy import and_, bindparam, case, func, literal, or_, select, text, update
from sqlmodel import Session

from digest.database import UTCDateTime
from digest.database.models import Delivery, DeliveryBatch, Issue
from digest.delivery.providers.base import Outcome

D = Delivery.__table__.c
B = DeliveryBatch.__table__.c
I = Issue.__table__.c  # noqa: E741
_DELIVERIES = Delivery.__table__
_BATCHES = DeliveryBatch.__table__
_ISSUES = Issue.__table__

# Where a recipient's row may end; anything else means the send is not finished. `claimed`,
# `sending` and `uncertain` are the states of a pending row's batch, reported as the row's (see
# `counts`).
FINAL_STATES = ("sent", "failed", "skipped")
OPEN_STATES = ("pending", "claimed", "sending", "uncertain")
# Batches a sender holds: claimed, and sending once their request has started.
HELD = ("claimed", "sending")
# An answer may still arrive for a batch that was declared uncertain; it is recorded then.
_RECORDABLE = ("claimed", "sending", "uncertain")
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
    """sending(us) -> sent, only when every batch is done (checked in the same statement): a
    batch is done only once none of its deliveries is open."""
    open_rows = (select(literal(1)).select_from(_BATCHES)
                 .where(B.issue_id == issue_id, B.status != "done").exists())
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
    """(held batches, earliest claim lease) of the issue: what other workers still have in
    flight, and when the first of those claims may be declared orphaned."""
    n, first = session.execute(
        select(func.count(), func.min(B.lease_until))
        .where(B.issue_id == issue_id, B.status.in_(HELD))).one()
    return int(n), first


def due_batches(session: Session, issue_id: int, *, now: dt.datetime) -> int:
    """Pending batches that are due. Read without a lock, so a batch another claimer has locked
    but not yet committed still counts: a claim that found nothing while this is not 0 lost a
    race for the last batches, and the send is not over."""
    return int(session.execute(
        select(func.count()).where(B.issue_id == issue_id, B.status == "pending",
                                   or_(B.not_before.is_(None), B.not_before <= _aware(now)))
    ).scalar_one())


def renew_claims(session: Session, batch_keys: Sequence[str], *, lease_until: dt.datetime) -> int:
    """Extend the lease of our own claimed batches while we wait on the provider (a backoff), so
    no other worker declares them orphaned while we still own them."""
    if not batch_keys:
        return 0
    result = session.execute(
        update(_BATCHES).where(B.key.in_(list(batch_keys)), B.status.in_(HELD))
        .values(lease_until=lease_until))
    return result.rowcount or 0


# --- claiming -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Claim:
    """A batch we hold: its request key and where its deliveries are."""

    batch_key: str
    size: int  # open deliveries at most (the exact list is `batch_rows`)
    retry: bool = False  # an uncertain batch claimed again (same key where it fits): in doubt
    issue_id: int = 0
    batch_no: int = 0
    first_id: int = 0
    last_id: int = 0
    attempts: int = 0  # the batch's claims so far, this one included: tells a re-claim apart


def claim_statement(dialect: str, issue_id: int, *, status: str = "pending",
                    now: dt.datetime | None = None):
    """The locking SELECT of a claim: the first batch in `status` that is due (the benchmark
    EXPLAINs this very statement). It reads the small batch table, never the ledger, so its
    cost does not grow with the number of deliveries already sent."""
    query = (select(B.id, B.batch_no, B.first_id, B.last_id, B.size, B.key, B.attempts,
                    B.started_at)
             .where(B.issue_id == issue_id, B.status == status))
    if status == "pending" and now is not None:
        query = query.where(or_(B.not_before.is_(None), B.not_before <= now))
    query = query.order_by(B.first_id).limit(1)
    if dialect == "postgresql":
        # Concurrent claimers never wait on or share a batch; SQLite's immediate transaction
        # serialises them instead.
        query = query.with_for_update(skip_locked=True)
    return query


def claim_batch(session: Session, issue_id: int, *, batch_key: str, limit: int,
                now: dt.datetime, lease_until: dt.datetime) -> Claim | None:
    """pending -> claimed: the first due batch (a transient failure sets a not-before time),
    under a new request key. One batch row is written whatever the batch's size; a batch
    planned larger than `limit` (the provider changed) is split first."""
    _aware(now)
    return _claim(session, issue_id, "pending", limit=limit, now=now, lease_until=lease_until,
                  key=lambda _old: batch_key)


def claim_uncertain(session: Session, issue_id: int, *, limit: int, now: dt.datetime,
                    lease_until: dt.datetime) -> Claim | None:
    """uncertain -> claimed for a retry, one earlier batch at a time, keeping its batch key so a
    provider with idempotency keys recognises the request and does not send it twice.

    A batch larger than today's limit (the provider was changed) is split under new keys: with
    another provider the old key means nothing anyway, and a key that went out with the whole
    batch is never reused for a different payload.
    """
    _aware(now)
    return _claim(session, issue_id, "uncertain", limit=limit, now=now, lease_until=lease_until,
                  key=None)


def _claim(session: Session, issue_id: int, status: str, *, limit: int, now: dt.datetime,
           lease_until: dt.datetime, key: Callable[[str | None], str] | None) -> Claim | None:
    dialect = session.get_bind().dialect.name
    while True:
        row = session.execute(claim_statement(dialect, issue_id, status=status, now=now)
                              ).one_or_none()
        if row is None:
            return None
        first_id, last_id, size = row.first_id, row.last_id, row.size
        new_key = key(row.key) if key is not None else row.key
        if size > limit:
            ids = _open_ids(session, issue_id, row.batch_no, first_id, last_id)
            if not ids:
                _set_batch(session, row.id, status="done", now=now)
                continue
            if len(ids) > limit:
                rekey = status == "uncertain"
                _split_off(session, issue_id, row.batch_no, ids[limit:], limit=limit,
                           status=status, now=now, key_root=_root(row.key) if rekey else None,
                           started_at=(row.started_at or now) if rekey else None)
                ids = ids[:limit]
                if rekey:
                    new_key = f"{_root(row.key)}~{uuid.uuid4().hex[:8]}"
            first_id, last_id, size = ids[0], ids[-1], len(ids)
        if new_key is None:  # an uncertain batch from before keys: give it one now
            new_key = f"batch~{uuid.uuid4().hex[:8]}"
        # A pending batch has had no request in doubt; an uncertain one keeps its mark of doubt
        # through the claim, so it stays uncertain if this sender dies before the retry starts.
        started_at = None if status == "pending" else (row.started_at or now)
        session.execute(
            update(_BATCHES).where(B.id == row.id)
            .values(status="claimed", key=new_key, lease_until=lease_until, not_before=None,
                    attempts=B.attempts + 1, first_id=first_id, last_id=last_id, size=size,
                    started_at=started_at, updated_at=now))
        return Claim(new_key, size, retry=status == "uncertain", issue_id=issue_id,
                     batch_no=row.batch_no, first_id=first_id, last_id=last_id,
                     attempts=row.attempts + 1)


def _root(key: str | None) -> str:
    return (key or "batch").split("~")[0]


def _members(issue_id: int, batch_no: int, first_id: int, last_id: int) -> tuple:
    """A batch's deliveries: a primary-key range, narrowed to the batch (rows split off into
    another batch, or another issue's rows planned at the same time, may share the range).

    `issue_id + 0` keeps the issue test a filter: given a plain `issue_id = ?`, SQLite walks the
    (issue_id, subscriber_id) index through every delivery of the issue instead of the
    thousand ids in the range (a million-recipient send took eight times as long).
    """
    return (D.id >= first_id, D.id <= last_id, (D.issue_id + 0) == issue_id,
            D.batch_no == batch_no)


def _open_ids(session: Session, issue_id: int, batch_no: int, first_id: int,
              last_id: int) -> list[int]:
    return list(session.execute(
        select(D.id).where(*_members(issue_id, batch_no, first_id, last_id),
                           D.status == "pending").order_by(D.id)).scalars())


def _new_batch_no(session: Session) -> int:
    """A batch number no other batch has, without locking anything: minus the new batch's own
    primary key (planned batches count up from 0)."""
    if session.get_bind().dialect.name == "postgresql":
        return -int(session.execute(
            text("SELECT nextval(pg_get_serial_sequence('delivery_batches', 'id'))")).scalar_one())
    # SQLite: writers are serialised by the immediate transaction.
    return -(int(session.execute(select(func.coalesce(func.max(B.id), 0))).scalar_one()) + 1)


def _split_off(session: Session, issue_id: int, batch_no: int, ids: Sequence[int], *,
               limit: int, status: str, now: dt.datetime, key_root: str | None,
               reason: str = "", started_at: dt.datetime | None = None) -> None:
    """Move `ids` (open deliveries of one batch, in id order) into new batches of at most
    `limit`, each in `status`, each with a fresh key when `key_root` is given (and the batch's
    mark of doubt, `started_at`, when its recipients are in doubt)."""
    for start in range(0, len(ids), limit):
        chunk = ids[start:start + limit]
        number = _new_batch_no(session)
        values = dict(issue_id=issue_id, batch_no=number, status=status, first_id=chunk[0],
                      last_id=chunk[-1], size=len(chunk), attempts=0, reason=reason,
                      updated_at=now, started_at=started_at,
                      key=f"{key_root}~{uuid.uuid4().hex[:8]}" if key_root else None)
        if session.get_bind().dialect.name == "postgresql":
            values["id"] = -number
        session.execute(_BATCHES.insert().values(**values))
        session.execute(
            update(_DELIVERIES)
            .where(*_members(issue_id, batch_no, chunk[0], chunk[-1]), D.id.in_(chunk),
                   D.status == "pending")
            .values(batch_no=number).execution_options(synchronize_session=False))


def _set_batch(session: Session, batch_id: int, *, now: dt.datetime, **values) -> None:
    session.execute(update(_BATCHES).where(B.id == batch_id).values(updated_at=now, **values))


_ORPHAN_NEVER_STARTED = and_(B.status == "claimed", B.started_at.is_(None))


def release_orphans(session: Session, issue_id: int, *, now: dt.datetime,
                    expired_only: bool = True) -> int:
    """Batches whose sender is gone: `sending` (the request started, no answer was recorded) ->
    uncertain; `claimed` and never started -> pending, sent normally under a new key (a claimed
    batch that was uncertain before keeps its key and doubt: uncertain again). Returns the
    number of batches released.

    `expired_only=False` is for a sender that has just acquired the issue: no other sender is
    live then, so every claim left behind is orphaned, whatever its lease says.
    """
    _aware(now)
    conditions = [B.issue_id == issue_id, B.status.in_(HELD)]
    if expired_only:
        conditions.append(B.lease_until <= now)
    never_started = _ORPHAN_NEVER_STARTED
    result = session.execute(
        update(_BATCHES).where(*conditions)
        .values(status=case((never_started, "pending"), else_="uncertain"),
                key=case((never_started, None), else_=B.key),
                reason=case((never_started, "the sender stopped before the request started"),
                            else_="no answer recorded: the sender stopped while the request "
                                  "was in flight"),
                lease_until=None, updated_at=now))
    return result.rowcount or 0


def start_request(session: Session, claim: Claim, *, now: dt.datetime) -> bool:
    """claimed -> sending(started_at): committed just before the provider call, so a crash from
    here on leaves the batch in doubt, and one before it does not. Also sending -> sending for
    another try of a request in doubt under the same key. False: the batch is no longer ours
    (declared orphaned and claimed again meanwhile), and must not be sent by us."""
    _aware(now)
    result = session.execute(
        update(_BATCHES)
        .where(B.key == claim.batch_key, B.status.in_(HELD), B.attempts == claim.attempts)
        .values(status="sending", updated_at=now,
                started_at=func.coalesce(B.started_at, literal(now, UTCDateTime()))))
    return result.rowcount == 1


def back_off(session: Session, claim: Claim, *, now: dt.datetime, reason: str) -> int:
    """sending -> claimed: the provider answered that it took nothing (429, 503, a refused
    connection), so while we wait to try again the batch is not in flight: a crash now leaves
    it to be sent normally. Its mark of doubt is cleared, unless an earlier request for these
    recipients is still unanswered (`claim.retry`). Returns 1 or 0."""
    _aware(now)
    values: dict = dict(status="claimed", reason=reason, updated_at=now)
    if not claim.retry:
        values["started_at"] = None
    result = session.execute(
        update(_BATCHES).where(B.key == claim.batch_key, B.status == "sending",
                               B.attempts == claim.attempts).values(**values))
    return result.rowcount or 0


def release_batch(session: Session, batch_key: str, *, now: dt.datetime, uncertain: bool,
                  reason: str) -> int:
    """claimed|sending -> pending (the provider surely did not take any request for it) or ->
    uncertain (it may have: a timeout or dropped connection after the request left, or an
    earlier request of a batch claimed again from uncertain). Returns 1 or 0."""
    _aware(now)
    values: dict = dict(updated_at=now, reason=reason, lease_until=None)
    if uncertain:
        values.update(status="uncertain",
                      started_at=func.coalesce(B.started_at, literal(now, UTCDateTime())))
    else:
        values.update(status="pending", key=None, not_before=None, started_at=None)
    result = session.execute(
        update(_BATCHES).where(B.key == batch_key, B.status.in_(HELD)).values(**values))
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
    """The answer to one batch's request, in one transaction: each delivery pending -> sent |
    failed | skipped | pending (transient, retried after `retry_at`), then the batch -> done, or
    pending again while some of its deliveries wait for a retry.

    The batch row is locked first and must still be claimed or uncertain under `batch_key`, so
    an answer that arrives after another sender took the batch over still records the truth but
    never reopens a final row, and an answer for a batch that was since split records nothing.
    Rows with the same outcome are written by one statement (a substitution provider gives a
    whole batch one message id). `whole_batch` says the results cover every open row of the
    batch, so one outcome for all of them is written without listing the ids.
    """
    _aware(now)
    batch = _lock_batch(session, batch_key)
    recorded = Recorded()
    if batch is None:
        return recorded
    members = _members(batch.issue_id, batch.batch_no, batch.first_id, batch.last_id)
    is_open = (*members, D.status == "pending")
    groups: dict[tuple[str, str | None, str], list[int]] = defaultdict(list)
    outcomes = list(map(itemgetter(1), results))
    if outcomes and len(set(map(id, outcomes))) == 1:
        # One answer for the whole batch (a substitution provider): grouped in C passes.
        one = outcomes[0]
        groups[(one.status, one.message_id, one.reason)] = list(map(itemgetter(0), results))
    else:
        for delivery_id, outcome in results:
            groups[(outcome.status, outcome.message_id, outcome.reason)].append(delivery_id)
    skip_groups: dict[str, list[int]] = defaultdict(list)
    for delivery_id, reason in skipped:
        skip_groups[reason].append(delivery_id)
    # Skips first: the whole-batch write below must not sweep them up.
    for reason, ids in skip_groups.items():
        recorded.skipped += _write(session, is_open, ids, dict(
            status="skipped", reason=reason, updated_at=now))
    transient_ids: list[int] = []
    sent_one_each: list[tuple[int, str | None]] = []
    all_final = whole_batch and len(groups) == 1
    for (status, message_id, reason), ids in groups.items():
        if status == "sent" and len(ids) == 1:
            sent_one_each.append((ids[0], message_id))
            continue
        if status == "uncertain":
            # Only some recipients are in doubt (an SMTP connection lost during DATA): they
            # move to a batch of their own, uncertain under a key of their own, so a retry
            # never reuses this batch's key for a smaller payload.
            _split_off(session, batch.issue_id, batch.batch_no, sorted(ids), limit=len(ids),
                       status="uncertain", now=now, key_root=_root(batch_key), reason=reason,
                       started_at=batch.started_at or now)
            recorded.uncertain += len(ids)
            all_final = False
            continue
        if status == "transient":
            transient_ids.extend(ids)
            all_final = False
        values = _values_for(status, message_id, reason, batch_key=batch_key, now=now,
                             max_attempts=max_attempts)
        n = _write(session, is_open, None if all_final else ids, values)
        _count(recorded, status, reason, n)
    if sent_one_each:
        recorded.sent += _write_sent_each(session, batch, is_open, sent_one_each, batch_key, now)
    if transient_ids:
        # Rows that ran out of tries are failed now: count them.
        gave_up = int(session.execute(
            select(func.count()).where(*members, D.status == "failed",
                                       D.id.in_(transient_ids))).scalar_one())
        recorded.retry -= gave_up
        recorded.failed += gave_up
        recorded.gave_up = gave_up
    left = 0 if all_final else int(session.execute(
        select(func.count()).where(*is_open)).scalar_one())
    if left == 0:
        _set_batch(session, batch.id, status="done", lease_until=None, not_before=None,
                   reason="", now=now)
    else:
        # What is left waits for a retry under a new key (the payload is not the same).
        _set_batch(session, batch.id, status="pending", key=None, lease_until=None,
                   started_at=None, not_before=retry_at if recorded.retry else None,
                   reason=next((r for (s, _m, r) in groups if s == "transient"), ""), now=now)
    return recorded


def _lock_batch(session: Session, batch_key: str):
    query = (select(B.id, B.issue_id, B.batch_no, B.first_id, B.last_id, B.started_at)
             .where(B.key == batch_key, B.status.in_(_RECORDABLE)))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    return session.execute(query).one_or_none()


def _write(session: Session, is_open: tuple, ids: Sequence[int] | None, values: dict) -> int:
    """UPDATE the open rows of a batch (`ids` of them, or all when None); returns the count."""
    if ids is None:
        result = session.connection().execute(update(_DELIVERIES).where(*is_open).values(**values))
        return result.rowcount or 0
    n = 0
    for start in range(0, len(ids), 1000):
        result = session.execute(update(_DELIVERIES).where(D.id.in_(ids[start:start + 1000]),
                                                           *is_open)
                                 .values(**values).execution_options(synchronize_session=False))
        n += result.rowcount or 0
    return n


def _write_sent_each(session: Session, batch, is_open: tuple,
                     rows: list[tuple[int, str | None]], batch_key: str, now: dt.datetime) -> int:
    """Each recipient its own message id (Resend, Postmark): one statement on PostgreSQL
    instead of one per recipient (a pipeline of 100-1000 round trips was most of a PostgreSQL
    worker's time)."""
    if session.get_bind().dialect.name == "postgresql":
        result = session.connection().execute(_SENT_EACH_PG, {
            "ids": [i for i, _ in rows], "mids": [m for _, m in rows], "key": batch_key,
            "now": now, "issue_id": batch.issue_id, "batch_no": batch.batch_no})
        return result.rowcount or 0
    if sqlite3.sqlite_version_info >= (3, 33):  # UPDATE ... FROM
        # One statement over the batch as a JSON array: executemany ran the UPDATE once a
        # row, 13 us a recipient, most of a full-body send's ledger time.
        result = session.connection().execute(_SENT_EACH_SQLITE, {
            "rows": json.dumps(rows), "key": batch_key, "now": now,
            "issue_id": batch.issue_id, "batch_no": batch.batch_no,
            "first_id": batch.first_id, "last_id": batch.last_id})
        return result.rowcount or 0
    result = session.connection().execute(
        update(_DELIVERIES).where(D.id == bindparam("b_id"), *is_open)
        .values(status="sent", provider_message_id=bindparam("b_mid"), reason="",
                batch_key=batch_key, attempts=D.attempts + 1, updated_at=now),
        [{"b_id": i, "b_mid": m} for i, m in rows])
    return result.rowcount or 0


_SENT_EACH_PG = text("""
UPDATE deliveries AS d
SET status = 'sent', provider_message_id = v.mid, reason = '', batch_key = :key,
    attempts = d.attempts + 1, updated_at = :now
FROM unnest(CAST(:ids AS integer[]), CAST(:mids AS varchar[])) AS v(id, mid)
WHERE d.id = v.id AND d.issue_id = :issue_id AND d.batch_no = :batch_no AND d.status = 'pending'
""").bindparams(bindparam("now", type_=UTCDateTime()))


# The batch's members as `_members` narrows them (`issue_id + 0`: see there).
_SENT_EACH_SQLITE = text("""
UPDATE deliveries
SET status = 'sent', provider_message_id = v.mid, reason = '', batch_key = :key,
    attempts = deliveries.attempts + 1, updated_at = :now
FROM (SELECT json_extract(j.value, '$[0]') AS id, json_extract(j.value, '$[1]') AS mid
      FROM json_each(:rows) AS j) AS v
WHERE deliveries.id = v.id AND deliveries.id BETWEEN :first_id AND :last_id
  AND deliveries.issue_id + 0 = :issue_id AND deliveries.batch_no = :batch_no
  AND deliveries.status = 'pending'
""").bindparams(bindparam("now", type_=UTCDateTime()))


def _values_for(status: str, message_id: str | None, reason: str, *, batch_key: str,
                now: dt.datetime, max_attempts: int) -> dict:
    answered = dict(batch_key=batch_key, attempts=D.attempts + 1, updated_at=now)
    if status == "sent":
        return dict(status="sent", provider_message_id=message_id, reason="", **answered)
    if status == "rejected":
        return dict(status="failed", reason=reason or "rejected", **answered)
    if status == "skipped":
        return dict(status="skipped", reason=reason, updated_at=now)
    if status == "transient":
        # Back to the queue, unless this row has had all its tries.
        exhausted = D.attempts + 1 >= max_attempts
        return dict(
            status=case((exhausted, "failed"), else_="pending"),
            reason=case((exhausted, literal(f"gave up after {max_attempts} attempts: {reason}")),
                        else_=literal(reason)),
            **answered)
    raise ValueError(f"unknown outcome status {status!r}")


def _count(recorded: Recorded, status: str, reason: str, n: int) -> None:
    if status == "sent":
        recorded.sent += n
    elif status == "rejected":
        recorded.failed += n
        recorded.failed_reasons[reason] = recorded.failed_reasons.get(reason, 0) + n
    elif status == "skipped":
        recorded.skipped += n
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


# A delivery's state as reported: its own, or for a pending row in a claimed, sending or
# uncertain batch, the batch's.
_BATCH_OF = and_(B.issue_id == D.issue_id, B.batch_no == D.batch_no)
_STATE = case((and_(D.status == "pending", B.status.in_(_RECORDABLE)), B.status),
              else_=D.status)


def states_query(*columns):
    """SELECT `columns`, state FROM deliveries joined to their batches: each recipient's state
    as `counts` reports it (for reports and for checks that look at single rows)."""
    return select(*columns, _STATE.label("state")).select_from(_DELIVERIES.join(_BATCHES,
                                                                                _BATCH_OF))


def counts(session: Session, issue_id: int) -> Counts:
    """Per-recipient states (see `states_query`): the ledger grouped by (batch, state) first,
    then that small result joined to the batches. Joining row by row instead left the plan to
    statistics, which are stale in the middle of a send (a minute at a million rows).

    The ledger is read as the primary-key range of the issue's deliveries (its ends found in the
    (issue, subscriber) index alone), in table order: fetched through that index instead, rows
    planned segment by segment come in a scattered order, half as fast again at a million.
    (Batch ranges cannot bound it: a claim narrows its batch's range to the rows still open.)"""
    lo, hi = session.execute(select(func.min(D.id), func.max(D.id))
                             .where(D.issue_id == issue_id)).one()
    per_batch = (select(D.batch_no, D.status, func.count().label("n"))
                 .where(D.id.between(lo if lo is not None else 0, hi if hi is not None else -1),
                        (D.issue_id + 0) == issue_id)
                 .group_by(D.batch_no, D.status).subquery())
    state = case((and_(per_batch.c.status == "pending", B.status.in_(_RECORDABLE)), B.status),
                 else_=per_batch.c.status)
    by_status: dict[str, int] = {}
    for status, n in session.execute(
            select(state, func.sum(per_batch.c.n))
            .join_from(per_batch, _BATCHES, and_(B.issue_id == issue_id,
                                                 B.batch_no == per_batch.c.batch_no))
            .group_by(state)):
        by_status[status] = int(n)
    reasons: dict[str, int] = {}
    if by_status.get("failed"):
        reasons = {reason or "unknown": int(n) for reason, n in session.execute(
            select(D.reason, func.count()).where(D.issue_id == issue_id, D.status == "failed")
            .group_by(D.reason).order_by(func.count().desc()))}
    return Counts(by_status, reasons)


def next_retry_at(session: Session, issue_id: int) -> dt.datetime | None:
    """When the earliest delayed (transient) batch becomes due, if any pending one is waiting."""
    return session.execute(
        select(func.min(B.not_before)).where(B.issue_id == issue_id, B.status == "pending",
                                             B.not_before.is_not(None))).scalar_one_or_none()


# The segment a batch's readers were planned in (a batch is one edition's; a shared edition's
# rows carry no edition, and the subscriber index below is then not needed: see batch_rows).
_BATCH_SEGMENT_SQL = text("""
SELECT e.segment FROM issue_editions e
WHERE e.id = (SELECT deliveries.edition_id FROM deliveries
              WHERE deliveries.id BETWEEN :first AND :last AND deliveries.issue_id + 0 = :issue_id
                AND deliveries.batch_no = :batch_no
              LIMIT 1)
""")

# SQLite: the readers through the (segment, id) index that carries what a send needs, so one
# segment's readers are read from a few adjacent index pages, not a table page each. LEFT JOIN
# keeps the ledger the outer loop; a reader not found there has changed segment since the plan.
_SEGMENT_ROWS_SQL = text("""
SELECT deliveries.id, deliveries.subscriber_id, s.email, s.name, s.status, deliveries.edition_id
FROM deliveries
LEFT JOIN subscribers s INDEXED BY ix_subscribers_segment_read
       ON s.segment = :segment AND s.id = deliveries.subscriber_id
WHERE deliveries.id BETWEEN :first AND :last AND deliveries.issue_id + 0 = :issue_id
  AND deliveries.batch_no = :batch_no AND deliveries.status = 'pending'
ORDER BY deliveries.id
""")


def batch_rows(session: Session, claim: Claim):
    """The open rows of a claimed batch joined to their subscribers, in delivery-id order (the
    order is part of the request, so a retried batch is byte-for-byte the same request).

    A segment's readers are spread over the whole subscribers table, so on SQLite a segment
    edition's batch reads them through the (segment, id) index, which holds the columns read
    here: a batch of 1,000 then touches a few index pages instead of a table page per reader.
    """
    from subscribers.models import Subscriber

    params = {"first": claim.first_id, "last": claim.last_id, "issue_id": claim.issue_id,
              "batch_no": claim.batch_no}
    segment = None
    if session.get_bind().dialect.name == "sqlite":
        segment = session.execute(_BATCH_SEGMENT_SQL, params).scalar()
    if segment is not None:
        rows = session.connection().execute(_SEGMENT_ROWS_SQL,
                                            {**params, "segment": segment}).cursor.fetchall()
        moved = [row[1] for row in rows if row[4] is None]  # status is never NULL otherwise
        if not moved:
            return rows
        S = Subscriber.__table__.c
        found = {r[0]: tuple(r[1:]) for r in session.execute(
            select(S.id, S.email, S.name, S.status).where(S.id.in_(moved)))}
        # A reader deleted meanwhile took their delivery with them: nothing to send.
        return [row if row[4] is not None else (row[0], row[1], *found[row[1]], row[5])
                for row in rows if row[4] is not None or row[1] in found]
    S = Subscriber.__table__.c
    result = session.connection().execute(
        select(D.id, D.subscriber_id, S.email, S.name, S.status, D.edition_id)
        .join_from(_DELIVERIES, Subscriber.__table__, S.id == D.subscriber_id)
        .where(*_members(claim.issue_id, claim.batch_no, claim.first_id, claim.last_id),
               D.status == "pending")
        .order_by(D.id))
    # The driver's plain tuples: these columns need no type conversion, and building a Row per
    # recipient was a tenth of the ledger thread's time in a million-recipient send.
    return result.cursor.fetchall()


__all__ = [
    "ACQUIRABLE", "Acquisition", "Claim", "Counts", "FINAL_STATES", "HELD", "Membership",
    "OPEN_STATES", "Recorded", "acquire_issue", "back_off", "batch_rows", "claim_batch",
    "claim_uncertain", "claimed_elsewhere", "counts", "due_batches", "finish_issue",
    "join_issue", "new_batch_key", "next_retry_at", "pause_issue", "pause_send",
    "record_outcomes", "release_batch", "release_orphans", "renew_claims", "renew_issue_lease",
    "start_request", "states_query",
]
