"""The send loop: claim a batch -> build its recipients -> call the provider -> record outcomes.

The claim is committed first, then the start of the request (`claimed -> sending`) just before
the provider is called, and the outcome after. A crash therefore leaves batches claimed ahead
(or waiting out a 429) `claimed`, which the next sender sends normally, and only a request that
had started without an answer `uncertain` (never silently re-sent: an idempotent provider gets
the same batch key again and de-duplicates; for the others the rows wait for
`digest send --retry-uncertain`). The loop never renders: the issue was rendered once,
recipients get their values from `Links` (two HMACs, signed a batch at a time) and full-body
providers fill the split template themselves. Subscribers are read a batch at a time, never
the whole list. Time is injected (`clock`, `sleep`, `rng`) so tests never wait.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlmodel import Session, select

from digest.delivery import ledger
from digest.delivery.complaints import CUTOFF, CUTOFF_MIN, ComplaintCutoff, complaints
from digest.database import session_scope
from digest.errors import (DatabaseError, DigestError, PermanentProviderError,
                           TransientProviderError, UncertainProviderError, database_name,
                           database_reason)
from digest.database.models import Issue, IssueEdition
from digest.edition.personalize import (CLICK_READER, NAME, PREFERENCES_URL, UNSUBSCRIBE_URL,
                                        VIEW_URL, VOTE_URL)
from digest.delivery.plan import plan_deliveries
from digest.outcomes import totals as issue_totals
from digest.delivery.providers.base import Letter, Outcome, Provider, Recipient
from subscribers.links import Links
from subscribers.tokens import Signer

UTC = dt.timezone.utc


# --- policies ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter for a whole provider call that failed transiently."""

    attempts: int = 6  # calls of one batch before the send pauses ("provider unavailable")
    base: float = 1.0
    cap: float = 60.0
    max_wait: float = 900.0  # a Retry-After beyond this pauses the send instead of blocking it

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds before call `attempt + 1`: half the backoff fixed, half random (so parallel
        senders spread out), and never sooner than the provider's Retry-After."""
        backoff = min(self.cap, self.base * 2 ** max(attempt - 1, 0))
        wait = backoff / 2 + rng.uniform(0, backoff / 2)
        return max(wait, retry_after or 0.0)


@dataclass(frozen=True)
class SendPolicy:
    lease: dt.timedelta = dt.timedelta(minutes=5)
    retry: RetryPolicy = RetryPolicy()
    max_attempts: int = 5  # claims of one delivery before a per-recipient transient becomes final
    rate_limit: float = 0.0  # messages per second through this provider; 0 = unlimited
    breaker_threshold: float = 0.10  # pause when permanent rejections pass this share ...
    breaker_window: int = 1000  # ... of the last this-many recipients ...
    breaker_min_sample: int = 100  # ... once at least this many were seen
    complaint_cutoff: float = CUTOFF  # pause when the issue's spam complaints reach this share
    complaint_min: int = CUTOFF_MIN  # ... of its delivered messages, with at least this many
    complaint_every: float = 2.0  # seconds between looks at the complaints (one count each)
    uncertain_streak: int = 3  # batches in a row without an answer before the send pauses
    in_flight: int = 2  # batches claimed ahead: 2 overlaps the provider's answer with the ledger
    retry_uncertain: bool = False  # re-send uncertain batches with a non-idempotent provider
    claim_lease: dt.timedelta | None = None  # lease on each claimed batch; None: `lease`
    poll: float = 1.0  # seconds between looks at other workers' claims while waiting on them

    @property
    def batch_lease(self) -> dt.timedelta:
        """How long a claimed batch is ours: past it, another worker may declare it orphaned."""
        return self.claim_lease or self.lease


class TokenBucket:
    """Messages per second, with a one-second burst. Taking more than is available goes into
    debt and sleeps it off, so a batch larger than the rate still averages out right."""

    def __init__(self, rate: float, *, clock: Callable[[], float],
                 sleep: Callable[[float], None]) -> None:
        self.rate, self._clock, self._sleep = rate, clock, sleep
        self.capacity = max(rate, 1.0)
        self.tokens = self.capacity
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        self.tokens = min(self.capacity, self.tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def wait_time(self, n: int) -> float:
        """Seconds `take(n)` would sleep now."""
        if self.rate <= 0:
            return 0.0
        self._refill()
        return max(0.0, (n - self.tokens) / self.rate)

    def take(self, n: int) -> float:
        if self.rate <= 0:
            return 0.0
        self._refill()
        self.tokens -= n
        if self.tokens >= 0:
            return 0.0
        wait = -self.tokens / self.rate
        self._sleep(wait)
        return wait

    def refund(self, n: int) -> None:
        if self.rate > 0 and n > 0:
            self.tokens = min(self.capacity, self.tokens + n)


class CircuitBreaker:
    """Permanent rejections among the last `window` recipients; trips past `threshold` once
    `min_sample` were seen. A wrong list or a suspended account shows up as a wall of rejections:
    stopping early protects the sender's reputation."""

    def __init__(self, *, threshold: float, window: int, min_sample: int) -> None:
        self.threshold, self.min_sample = threshold, min_sample
        self._seen: deque[bool] = deque(maxlen=window)
        self._rejected = 0

    def record(self, rejected: bool) -> None:
        self.record_many((rejected,))

    def record_many(self, rejections: Iterable[bool]) -> None:
        self._seen.extend(rejections)
        self._rejected = sum(self._seen)

    @property
    def rate(self) -> float:
        return self._rejected / len(self._seen) if self._seen else 0.0

    @property
    def tripped(self) -> bool:
        return len(self._seen) >= self.min_sample and self.rate > self.threshold

    def describe(self) -> str:
        return (f"circuit breaker: {self._rejected} of the last {len(self._seen)} recipients were "
                f"rejected permanently ({self.rate:.0%} > {self.threshold:.0%}); check the list "
                "and the provider account, then run `digest send` again to resume")


# --- identity of a sender -----------------------------------------------------------------------

def sender_identity() -> str:
    """host:pid:nonce, so a later run on the same host can tell the holder has died."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def local_holder_gone(holder: str) -> bool:
    """True when the holder was a process on this host that no longer exists (killed, crashed).
    A holder elsewhere is only presumed gone once its lease runs out."""
    parts = holder.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def request_may_have_arrived(exc: TransientProviderError) -> bool:
    """Could the provider have accepted a call that failed this way? Providers say so by raising
    `UncertainProviderError` (a read timeout, a connection dropped after the request left, a
    garbled success); an HTTP answer such as 429 or 503, or a refused connection, says no."""
    return isinstance(exc, UncertainProviderError)


# --- what a batch is made of --------------------------------------------------------------------

def letter_for(issue: Issue, settings, edition: IssueEdition | None = None) -> Letter:
    """The parts every recipient of the issue (or of one segment's edition of it) shares:
    subject, split bodies, list headers."""
    domain = urlsplit(settings.base_url).hostname or "localhost"
    content = edition if edition is not None else issue
    return Letter.from_documents(
        subject=content.subject, html=content.html, text=content.text, from_addr=settings.from_,
        tag=issue.key, list_id=f"{settings.site_name} <{settings.list_id}.{domain}>",
        reply_to=settings.reply_to, unsubscribe_mailto=settings.unsubscribe_mailto)


def links_for(issue: Issue, settings) -> Links:
    """Links whose tokens are stamped with the issue's creation time, not the clock: a batch
    built again after a crash is then the very same request (an idempotency key covers a
    payload, and a token that changed by a second would change the payload)."""
    issued = issue.created_at.timestamp()
    return Links(settings.base_url, Signer(settings.signing_key(), clock=lambda: issued))


def click_signer(settings):
    """Signs readers' click tokens; used only by issues composed in per-subscriber mode."""
    from digest.outcomes.clicks import ClickSigner

    return ClickSigner(settings.signing_key())


class RecipientFactory:
    """Per-recipient values for one issue: only the tokens the issue uses (plus the unsubscribe
    URL the headers need), and a Message-ID fixed per delivery so a retry keeps it."""

    def __init__(self, letter: Letter, links: Links, issue: Issue, clicks=None) -> None:
        used = letter.html.tokens | letter.text.tokens
        self._links, self._key = links, issue.key
        self.issue_key = issue.key
        self._view, self._name = VIEW_URL in used, NAME in used
        self._vote, self._issue_id = VOTE_URL in used, issue.id
        self._preferences = PREFERENCES_URL in used
        # Per-subscriber click counting (opt-in) only: the reader's token on counted links.
        self._clicks = clicks if CLICK_READER in used else None
        self._id_suffix = issue.html_hash[:8] or str(issue.id)

    def message_id(self, delivery_id: int) -> str:
        return f"digest.{self._key}.{delivery_id}.{self._id_suffix}"

    def batch(self, rows: Sequence[tuple[int, int, str, str | None]]) -> list[Recipient]:
        """Recipients for (delivery id, subscriber id, email, name) rows: the links of the whole
        batch are bound to their readers' addresses and signed in one go, and each recipient is
        one dict and one plain object (the hot loop of a send: every call per recipient shows
        at a million)."""
        holders = self._links.holders([row[1] for row in rows], [row[2] for row in rows])
        values = [{UNSUBSCRIBE_URL: url}
                  for url in self._links.unsubscribe_many(holders, self._issue_id)]
        if self._view:
            for mine, url in zip(values, self._links.view_many(self._key, holders)):
                mine[VIEW_URL] = url
        if self._vote:
            for mine, url in zip(values, self._links.vote_many(self._issue_id, holders)):
                mine[VOTE_URL] = url
        if self._preferences:
            for mine, url in zip(values, self._links.preferences_many(holders)):
                mine[PREFERENCES_URL] = url
        if self._name:
            for mine, row in zip(values, rows):
                mine[NAME] = row[3] or ""
        if self._clicks is not None:
            readers = self._clicks.reader_tokens(self._key, holders)
            for mine, token in zip(values, readers):
                mine[CLICK_READER] = token
        prefix, suffix = f"digest.{self._key}.", f".{self._id_suffix}"
        return [Recipient(email, mine, name, delivery_id, f"{prefix}{delivery_id}{suffix}")
                for (delivery_id, _, email, name), mine in zip(rows, values)]

    def __call__(self, delivery_id: int | None, subscriber_id: int, email: str,
                 name: str | None) -> Recipient:
        values = {UNSUBSCRIBE_URL: self._links.unsubscribe(subscriber_id, email, self._issue_id)}
        if self._view:
            values[VIEW_URL] = self._links.view(self._key, subscriber_id, email)
        if self._vote:
            values[VOTE_URL] = self._links.vote(self._issue_id, subscriber_id, email)
        if self._preferences:
            values[PREFERENCES_URL] = self._links.preferences(subscriber_id, email)
        if self._name:
            values[NAME] = name or ""
        if self._clicks is not None:
            values[CLICK_READER] = self._clicks.reader_token(
                self._key, self._links.holders([subscriber_id], [email])[0])
        if delivery_id is None:
            return Recipient(email=email, values=values, name=name)
        return Recipient(email=email, values=values, name=name, delivery_id=delivery_id,
                         message_id=self.message_id(delivery_id))


# --- the report ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class SendReport:
    """Where an issue stands after a run (from the ledger, so it includes earlier runs)."""

    issue_key: str
    status: str
    reason: str
    counts: ledger.Counts
    message: str = ""
    sent_now: int = 0
    busy: bool = False  # another live sender holds the issue

    @property
    def sent(self) -> int:
        return self.counts["sent"]

    @property
    def failed(self) -> int:
        return self.counts["failed"]

    @property
    def skipped(self) -> int:
        return self.counts["skipped"]

    @property
    def uncertain(self) -> int:
        return self.counts["uncertain"]

    @property
    def pending(self) -> int:
        return self.counts["pending"]

    @property
    def claimed(self) -> int:
        return self.counts["claimed"]

    @property
    def sending(self) -> int:
        """In a batch whose request has started and not been answered yet."""
        return self.counts["sending"]

    @property
    def failed_reasons(self) -> dict[str, int]:
        return self.counts.failed_reasons

    @property
    def complete(self) -> bool:
        """Every recipient is in a final state: sent, failed for a recorded reason, or skipped."""
        return not self.busy and self.counts.open == 0 and self.status in ("sent", "skipped")

    def as_dict(self) -> dict:
        return {"issue": self.issue_key, "status": self.status, "reason": self.reason,
                "message": self.message, "complete": self.complete,
                "sent": self.sent, "failed": self.failed, "skipped": self.skipped,
                "uncertain": self.uncertain, "pending": self.pending, "claimed": self.claimed,
                "sending": self.sending,
                "total": self.counts.total, "sent_this_run": self.sent_now,
                "failed_reasons": dict(self.failed_reasons)}


def issue_report(session: Session, issue: Issue, *, message: str = "", sent_now: int = 0,
                 busy: bool = False) -> SendReport:
    session.refresh(issue)
    return SendReport(issue.key, issue.status, issue.status_reason,
                      ledger.counts(session, issue.id), message, sent_now, busy)


# --- the loop --------------------------------------------------------------------------------------

class LostLock(DigestError):
    """Another sender took the issue over (our lease ran out): stop without touching it."""

    exit_code = 6


class _Stop(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_NOT_CALLED = object()  # the send stopped before this batch's turn: it never left
_START_FIRST = 0.05  # seconds the ledger thread lets the next request's start go first, at most
_WRITE_FIRST = 1.0  # seconds the other threads let a request's body go out first, at most


@dataclass
class _Batch:
    claim: ledger.Claim
    rows: list[tuple[int, int, str, str | None]]  # (delivery id, subscriber id, email, name)
    skipped: list[tuple[int, str]]  # (delivery id, why): left the list since planning
    edition_id: int | None = None  # the segment edition its readers get (None: the issue's)
    recipients: list[Recipient] | None = None  # built off the ledger's thread
    prepared: object | None = None  # its request, encoded ahead by the provider (`prepare`)
    building: Future | None = None
    future: Future | None = None
    outcomes: list[Outcome] | None = None
    # Set once its request's start is committed, or it is sure never to start.
    started: threading.Event = field(default_factory=threading.Event)

    def go_first(self) -> None:
        """Let this batch's request leave before the ledger thread records the last answer and
        claims the next batch: first its start (on SQLite, with one writer, that small write
        would otherwise queue behind the recording), then its body, until it is all on the
        socket (the recording, the claim and the next build all run Python, and each chunk's
        write waited for the interpreter behind them while the provider waited for the rest).
        At most `_START_FIRST` and `_WRITE_FIRST`; a body that does not say is not waited for."""
        if not self.started.wait(_START_FIRST):
            return
        if self.written is not None:
            self.written.wait(_WRITE_FIRST)

    @property
    def written(self) -> threading.Event | None:
        """Its request body's `written` event, when the provider's body has one."""
        return getattr(getattr(self.prepared, "body", None), "written", None)


@dataclass
class _Progress:
    total: int = 0
    done: int = 0
    sent: int = 0


class Sender:
    """Sends one issue, once (make a new one per run). Collaborators come in through the
    constructor; `run` is the whole loop.

    With `in_flight=2` (the default) three threads overlap: the main thread records the
    previous batch and claims the next in one transaction, a builder signs the next batch's
    links, and a worker talks to the provider. The provider still sees one request at a time,
    every claim is committed before its call, and at most two batches are claimed at once. The
    provider thread marks a batch `sending` right before its request leaves, so a crash leaves at
    most the one request that was out uncertain (two when it strikes as an answer arrives, before
    it is recorded while the next request starts).
    """

    def __init__(self, engine: Engine, provider: Provider, *, letter: Letter,
                 recipients: RecipientFactory, policy: SendPolicy = SendPolicy(),
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None, sender_id: str | None = None,
                 holder_gone: Callable[[str], bool] = local_holder_gone,
                 progress: Callable[[int, int], None] | None = None,
                 on_start: Callable[[], None] | None = None,
                 parts: IssueParts | None = None) -> None:
        self.engine, self.provider, self.letter, self.recipients = engine, provider, letter, recipients
        # Segment editions: their letters and recipient factories, made on first use; and the
        # editions a plan needs, made just before it.
        self.parts = parts
        self.on_start = on_start  # called once we hold the issue (`--workers` starts its helpers)
        self.policy, self.clock, self.sleep = policy, clock, sleep
        self.rng = rng or random.Random()
        self.sender_id = sender_id or sender_identity()
        self.holder_gone, self.progress = holder_gone, progress
        self.bucket = TokenBucket(policy.rate_limit, clock=clock, sleep=self._sleep_quietly)
        self.breaker = CircuitBreaker(threshold=policy.breaker_threshold,
                                      window=policy.breaker_window,
                                      min_sample=policy.breaker_min_sample)
        self.complaints = ComplaintCutoff(policy.complaint_cutoff, policy.complaint_min)
        self._complaints_at: dt.datetime | None = None
        self._complaints_known = 0  # complaints when this run started (a resume goes on)
        self.batch_size = provider.batch_limit
        if policy.rate_limit > 0:
            # Keep one batch's rate-limit wait well inside the lease.
            fits = int(policy.rate_limit * policy.lease.total_seconds() / 4)
            self.batch_size = max(1, min(self.batch_size, fits))
        self._issue_id = 0
        self._acquired = False  # we became the issue's sender
        self._paused = False  # the pause after an unexpected error was written
        self._uncertain_streak = 0
        self._stats = _Progress()
        self._stopping = threading.Event()
        self._renewed_at: dt.datetime | None = None
        self._executor: ThreadPoolExecutor | None = None  # calls the provider
        self._builder: ThreadPoolExecutor | None = None  # signs the next batch's links
        self._in_flight: set[str] = set()  # batch keys we have claimed and not yet recorded
        self._in_flight_lock = threading.Lock()

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock(), UTC)

    # the public entry ------------------------------------------------------------------------

    def run(self, issue_id: int) -> SendReport:
        try:
            return self._run(issue_id)
        except DBAPIError as exc:
            raise self._database_error(exc) from exc

    def _run(self, issue_id: int) -> SendReport:
        self._issue_id = issue_id
        refused = self._enter(self.now())
        if refused is not None:
            return refused
        if self.on_start is not None:
            self.on_start()
        with Session(self.engine) as session:
            self._complaints_known = complaints(session, issue_id)
        if self.policy.in_flight > 1:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="digest-send")
            self._builder = ThreadPoolExecutor(1, thread_name_prefix="digest-build")
        try:
            stop = self._loop()
        except LostLock as exc:
            return self._report(message=str(exc))
        except BaseException as exc:
            # A request that had started stays `sending` (the next run makes it uncertain), a
            # batch claimed ahead stays `claimed` (sent normally next time); say why we stopped.
            self._stopping.set()
            self._shutdown()
            self._paused = self._pause_quietly(f"stopped by {_why(exc)}")
            raise
        finally:
            self._shutdown()
        return self._finish(stop)

    def _pause_quietly(self, reason: str) -> bool:
        """Record why the send stopped, if the database still takes the write. When it does not
        (the disk is full), the issue stays `sending` under this process: the next `digest send`
        on this host takes it over at once (the holder is gone), elsewhere once the lease runs
        out, and resumes from the ledger either way."""
        try:
            with session_scope(self.engine) as session:
                return ledger.pause_issue(session, self._issue_id, sender=self.sender_id,
                                          reason=reason)
        except SQLAlchemyError:
            return False  # the error that stopped us is the one worth reporting

    def _database_error(self, exc: DBAPIError) -> DatabaseError:
        """One line for the operator: which database, what it said, what the ledger holds."""
        key = self.recipients.issue_key
        return DatabaseError.wrap(
            exc, database=database_name(self.engine.url),
            doing=f"the send of {key} stopped",
            then=(f"{self._left_as()}. What the ledger recorded stands and nobody is mailed "
                  f"twice: run `digest send --week {key}` again once the database accepts writes"))

    def _left_as(self) -> str:
        """How the issue was left by a run that stopped on a database error."""
        key = self.recipients.issue_key
        if not self._acquired:
            return f"{key} was not changed"
        if self._paused:
            return f"{key} is paused"
        return (f"{key} may still show as being sent by this process (the pause could not be "
                "written); the next `digest send` on this host takes it over at once, on "
                "another once the lease runs out")

    def _enter(self, now: dt.datetime) -> SendReport | None:
        """Become the issue's sender (None), or say who is sending instead (the report)."""
        issue_id = self._issue_id
        with session_scope(self.engine) as session:
            acquired = ledger.acquire_issue(session, issue_id, sender=self.sender_id, now=now,
                                            lease=self.policy.lease, holder_gone=self.holder_gone)
            if acquired.acquired:
                # We hold the issue now, so no other sender is live: claims left are orphaned.
                ledger.release_orphans(session, issue_id, now=now, expired_only=False)
                if self.parts is not None:
                    self.parts.compose_segments(session, now=now)
                plan_deliveries(session, issue_id, now=now, batch_size=self.batch_size)
                counts = ledger.counts(session, issue_id)
                retrying = self.provider.idempotent or self.policy.retry_uncertain
                self._stats.total = counts["pending"] + (counts["uncertain"] if retrying else 0)
        self._acquired = acquired.acquired  # committed
        if not acquired.acquired:
            return self._report(message=acquired.message, busy=acquired.status == "sending")
        return None

    def _shutdown(self) -> None:
        if self._executor is not None:
            self._stopping.set()
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        if self._builder is not None:
            self._builder.shutdown(wait=True, cancel_futures=True)
            self._builder = None

    # the loop ----------------------------------------------------------------------------------

    def _loop(self) -> str | None:
        """Batches until nothing is claimable; returns why the send must pause, or None.

        Each step finishes the oldest batch in flight when it has to (the pipeline is full,
        nothing new could be claimed, or the send is stopping), then records it and claims the
        next batch in one transaction, and hands the new batch to the provider."""
        queue: deque[_Batch] = deque()
        stop: str | None = None
        claimable = True
        while True:
            finished = None
            if queue and (len(queue) >= self.policy.in_flight or not claimable or stop):
                finished = queue.popleft()
                stop = self._await(finished) or stop
                if queue:
                    queue[0].go_first()
                if finished.outcomes:
                    tally = _tally(finished.outcomes)
                    if len(tally) == 1:  # one answer for the whole batch: order is moot
                        status, n = next(iter(tally.items()))
                        if status in ("sent", "rejected"):
                            self.breaker.record_many([status == "rejected"] * n)
                    else:
                        self.breaker.record_many(o.status == "rejected"
                                                 for o in finished.outcomes
                                                 if o.status in ("sent", "rejected"))
                    if stop is None and self.breaker.tripped:
                        stop = self.breaker.describe()
                        self._stopping.set()
                if stop is None and finished.outcomes:
                    stop = self._complaint_cutoff(tally.get("sent", 0))
                    if stop is not None:
                        self._stopping.set()
            if stop is not None and not queue and finished is None:
                return stop
            claim_next = stop is None
            if claim_next:
                wait = self.bucket.wait_time(self.batch_size)
                if wait > 0:
                    self._heartbeat(extra=wait)
                self.bucket.take(self.batch_size)
            batch = self._step(finished, claim_next)
            if claim_next:
                self.bucket.refund(self.batch_size - (len(batch.rows) if batch else 0))
            if batch is not None:
                claimable = True
                self._submit(batch)
                queue.append(batch)
            elif claim_next:
                claimable = False
                if not queue and not self._wait_for_delayed() and not self._wait_for_others():
                    return None

    def _complaint_cutoff(self, unrecorded: int) -> str | None:
        """Spam complaints (they arrive by webhook while we send) past the cut-off pause the
        send, as the circuit breaker does for rejections. `unrecorded`: the finished batch's
        accepted messages, written with the next claim."""
        now = self.now()
        if (self._complaints_at is not None and (now - self._complaints_at).total_seconds()
                < self.policy.complaint_every):
            return None
        self._complaints_at = now
        with Session(self.engine) as session:
            return self.complaints.check(session, self._issue_id, known=self._complaints_known,
                                         unrecorded=unrecorded)

    def _step(self, finished: _Batch | None, claim_next: bool) -> _Batch | None:
        """One transaction: record the finished batch, renew our lease, claim the next batch and
        read its recipients (skipping anyone who left the list since planning)."""
        now = self.now()
        with session_scope(self.engine) as session:
            if finished is not None and finished.outcomes is not None:
                self._record(session, finished, now)  # kept even if our lease is gone
            if not claim_next:
                return None
            lost = not self._renew(session, now)
            claim = None if lost else self._claim(session, now)
            rows, skipped, edition_id = (self._read_batch(session, claim, now) if claim
                                         else ([], [], None))
        if lost:
            raise LostLock("another sender took this issue over; stopped")
        if claim is None:
            return None
        with self._in_flight_lock:
            self._in_flight.add(claim.batch_key)
        if skipped:
            self._advance(len(skipped), 0)
        return _Batch(claim, rows, skipped, edition_id)

    def _renew(self, session: Session, now: dt.datetime) -> bool:
        """Renew the issue lease every tenth of a lease (not every batch): a live sender never
        lets it run out, and a takeover is noticed within that time. False: we lost the issue."""
        if self._renewed_at is not None and now - self._renewed_at < self.policy.lease / 10:
            return True
        if ledger.renew_issue_lease(session, self._issue_id, sender=self.sender_id, now=now,
                                    lease=self.policy.lease) is None:
            return False
        self._renewed_at = now
        return True

    def _claim(self, session: Session, now: dt.datetime) -> ledger.Claim | None:
        """Uncertain batches first (again under their own key) when they may be retried, then
        the next pending ones."""
        lease_until = now + self.policy.batch_lease
        claim = None
        if self.provider.idempotent or self.policy.retry_uncertain:
            claim = ledger.claim_uncertain(session, self._issue_id, limit=self.batch_size,
                                           now=now, lease_until=lease_until)
        if claim is None:
            claim = ledger.claim_batch(session, self._issue_id, batch_key=self._batch_key(),
                                       limit=self.batch_size, now=now, lease_until=lease_until)
        return claim

    def _read_batch(self, session: Session, claim: ledger.Claim, now: dt.datetime):
        """The claimed batch's rows; anyone who left the list since planning is never mailed,
        and is recorded as skipped with the batch's answer."""
        rows = ledger.batch_rows(session, claim)
        active = [tuple(row[:4]) for row in rows if row[4] == "active"]
        skipped = [(row[0], f"subscriber {row[4]}") for row in rows if row[4] != "active"]
        # A batch is planned from one edition's readers (plan.py), so its first row says which.
        return active, skipped, (rows[0][5] if rows else None)

    def _record(self, session: Session, batch: _Batch, now: dt.datetime) -> None:
        with self._in_flight_lock:
            self._in_flight.discard(batch.claim.batch_key)
        outcomes = batch.outcomes or []
        retry_at = now + dt.timedelta(seconds=self.policy.retry.delay(2, None, self.rng))
        recorded = ledger.record_outcomes(
            session, batch.claim.batch_key,
            [(r.delivery_id, o) for r, o in zip(batch.recipients, outcomes)],
            now=now, retry_at=retry_at, max_attempts=self.policy.max_attempts,
            skipped=batch.skipped, whole_batch=True)
        if any(outcome.inactive for outcome in outcomes):
            for recipient, outcome in zip(batch.recipients, outcomes):
                if outcome.inactive:
                    _mark_bounced(session, recipient.email, at=now)
        self._advance(recorded.sent + recorded.failed, recorded.sent)

    def _submit(self, batch: _Batch) -> None:
        if self._executor is not None:
            batch.building = self._builder.submit(self._build, batch)
            batch.future = self._executor.submit(self._call_in_turn, batch)
            return
        batch.future = Future()
        try:
            batch.future.set_result(self._call_in_turn(batch))
        except BaseException as exc:  # handed to _await, as from a worker
            batch.future.set_exception(exc)

    def _call_in_turn(self, batch: _Batch):
        """The provider call for one batch, unless the send is stopping (it then never leaves)."""
        try:
            if self._stopping.is_set():
                return _NOT_CALLED
            # Signed and encoded by the builder thread while the ledger thread works and this
            # one waits on the previous answer: the three overlap, and this thread only posts.
            batch.recipients, batch.prepared = (batch.building.result()
                                                if batch.building is not None
                                                else self._build(batch))
            if not batch.recipients:
                return []
            self._respect_provider_rate()
            try:
                return self._call(batch.claim, batch.recipients, self._letter(batch),
                                  started=batch.started, prepared=batch.prepared)
            except (_Stop, LostLock):
                self._stopping.set()
                raise
        finally:
            batch.started.set()
            if batch.written is not None:  # a call that ended before writing it all
                batch.written.set()

    def _build(self, batch: _Batch) -> tuple[list[Recipient], object | None]:
        """A batch's recipients (links signed) and its request as the provider encodes it: all
        of a call's CPU work that does not need the wire."""
        recipients = self._factory(batch).batch(batch.rows)
        if not recipients:
            return recipients, None
        return recipients, self.provider.prepare(self._letter(batch), recipients,
                                                 batch_key=batch.claim.batch_key)

    def _await(self, batch: _Batch) -> str | None:
        """Wait for a batch's call; returns a reason to stop, if the call gave one."""
        try:
            result = batch.future.result()
        except _Stop as stop:
            return stop.reason
        if result is _NOT_CALLED:
            # Never started: back to pending, or uncertain still if it was claimed from there.
            self._release(batch.claim, uncertain=batch.claim.retry, reason="")
            return None
        if result is None:  # released as uncertain: nothing to record
            return None
        if len(result) != len(batch.recipients):
            raise DigestError(f"provider {self.provider.name} returned {len(result)} outcomes "
                              f"for {len(batch.recipients)} recipients (batch "
                              f"{batch.claim.batch_key})")
        batch.outcomes = result
        return None

    def _batch_key(self) -> str:
        return ledger.new_batch_key(self.recipients.issue_key)

    def _wait_for_others(self) -> bool:
        """Nothing left to claim, but other workers of this send still hold claimed batches:
        wait for them to be recorded, or for their lease to run out (the worker died), then
        they become `uncertain` and are claimed again here (same batch key where the provider
        de-duplicates). False when no claim is left: the send can end.

        A batch another worker is claiming at this very moment is still `pending` to us (its
        claim is not committed) yet was skipped as locked: that is a reason to look again
        shortly, not to end the send with deliveries open."""
        now = self.now()
        with session_scope(self.engine) as session:
            orphaned = ledger.release_orphans(session, self._issue_id, now=now, expired_only=True)
            claimed, first_expiry = ledger.claimed_elsewhere(session, self._issue_id)
            racing = 0 if claimed else ledger.due_batches(session, self._issue_id, now=now)
        if orphaned:
            return True
        if not claimed and not racing:
            return False
        until_expiry = (first_expiry - now).total_seconds() if first_expiry else self.policy.poll
        wait = max(0.01, min(self.policy.poll, until_expiry + 0.01, 0.05 if racing else 1e9))
        self._heartbeat(extra=wait)
        self._sleep_quietly(wait)
        return True

    def _wait_for_delayed(self) -> bool:
        """Sleep until the earliest delayed retry is due; False when none is waiting."""
        with Session(self.engine) as session:
            due = ledger.next_retry_at(session, self._issue_id)
        if due is None:
            return False
        wait = (due - self.now()).total_seconds()
        if wait > 0:
            self._heartbeat(extra=wait)
            self._sleep_quietly(wait)
        return True

    def _respect_provider_rate(self) -> None:
        """When the provider's rate headers say the window is used up, wait for its reset."""
        rate = getattr(self.provider, "last_rate_limit", None)
        reset_after = getattr(rate, "reset_after", None)
        if rate is None or not getattr(rate, "exhausted", False) or not reset_after:
            return
        wait = min(float(reset_after), self.policy.retry.max_wait)
        self._heartbeat(extra=wait)
        self._sleep_quietly(wait)

    def _letter(self, batch: _Batch) -> Letter:
        return self.letter if batch.edition_id is None else self.parts.of(batch.edition_id)[0]

    def _factory(self, batch: _Batch) -> RecipientFactory:
        return (self.recipients if batch.edition_id is None
                else self.parts.of(batch.edition_id)[1])

    def _call(self, claim: ledger.Claim, batch: list[Recipient], letter: Letter, *,
              started: threading.Event | None = None,
              prepared: object | None = None) -> list[Outcome] | None:
        """One provider call with retries. None: nothing to record (the batch was released as
        uncertain: no answer, no idempotency key; or it is no longer ours). Giving up releases
        the batch and stops the send.

        Each try is marked started (committed) before the request leaves. An answer that says
        nothing was taken (429, 503) moves the batch back to claimed for the wait, so a crash
        during a backoff leaves it to be sent normally; a request that may have arrived keeps
        it `sending` (in doubt) until it is answered or released."""
        attempt = 0
        in_doubt = claim.retry  # an earlier request for these recipients may have been accepted
        while True:
            attempt += 1
            if attempt > 1 and self._stopping.is_set():  # the send stopped during the wait
                self._release(claim, uncertain=in_doubt,
                              reason="the send stopped before this request left")
                return None
            if not self._start(claim):
                return None
            if started is not None:
                started.set()
            try:
                outcomes = self.provider.send_prepared(prepared, letter, batch,
                                                       batch_key=claim.batch_key)
            except PermanentProviderError as exc:
                self._release(claim, uncertain=in_doubt, reason=f"provider refused: {exc}")
                raise _Stop(f"the provider refused the send: {exc}") from exc
            except TransientProviderError as exc:
                maybe_sent = request_may_have_arrived(exc)
                in_doubt = in_doubt or maybe_sent
                if maybe_sent and not self.provider.idempotent:
                    # No answer and no idempotency key: a retry could deliver twice.
                    self._release(claim, uncertain=True, reason=f"no answer: {exc}")
                    self._uncertain_streak += 1
                    if self._uncertain_streak >= self.policy.uncertain_streak:
                        raise _Stop(f"the provider did not answer {self._uncertain_streak} batches "
                                    f"in a row ({exc})") from exc
                    return None
                wait = self.policy.retry.delay(attempt, exc.retry_after, self.rng)
                if attempt >= self.policy.retry.attempts or wait > self.policy.retry.max_wait:
                    self._release(claim, uncertain=in_doubt, reason=f"gave up: {exc}")
                    why = (f"asked to wait {wait:.0f} s" if wait > self.policy.retry.max_wait
                           else f"after {attempt} attempts")
                    raise _Stop(f"provider unavailable ({why}): {exc}") from exc
                if not in_doubt:
                    self._back_off(claim, reason=f"waiting {wait:.0f} s to try again: {exc}")
                self._heartbeat(extra=wait)
                self._wait_to_retry(wait)
            else:
                self._uncertain_streak = 0  # the streak is of batches in a row
                return outcomes

    def _wait_to_retry(self, seconds: float) -> None:
        """A backoff in the provider thread. A send that is stopping (the breaker tripped, an
        error, Ctrl-C) does not wait it out: the batch goes back unsent at once, instead of the
        stop waiting as long as a Retry-After asked. An injected sleep (tests) is used as is."""
        if self.sleep is time.sleep:
            self._stopping.wait(seconds)
        elif not self._stopping.is_set():
            self._sleep_quietly(seconds)

    def _start(self, claim: ledger.Claim) -> bool:
        """claimed -> sending, committed before the request leaves. False: the batch was taken
        over as orphaned (we stalled past its lease): it is not ours to send or record."""
        with session_scope(self.engine) as session:
            started = ledger.start_request(session, claim, now=self.now())
        if not started:
            with self._in_flight_lock:
                self._in_flight.discard(claim.batch_key)
        return started

    def _back_off(self, claim: ledger.Claim, *, reason: str) -> None:
        with session_scope(self.engine) as session:
            ledger.back_off(session, claim, now=self.now(), reason=reason)

    def _release(self, claim: ledger.Claim, *, uncertain: bool, reason: str) -> None:
        with self._in_flight_lock:
            self._in_flight.discard(claim.batch_key)
        with session_scope(self.engine) as session:
            ledger.release_batch(session, claim.batch_key, now=self.now(), uncertain=uncertain,
                                 reason=reason)

    def _heartbeat(self, *, extra: float = 0.0) -> None:
        """Renew our lease to cover a wait; losing it means another sender took over. The
        batches we hold are renewed too, so no other worker takes them for orphans meanwhile."""
        with session_scope(self.engine) as session:
            lease = self.policy.lease + dt.timedelta(seconds=extra)
            now = self.now()
            self._renew_claims(session, now, extra)
            if not self._keep_issue(session, now, lease):
                raise LostLock("another sender took this issue over; stopped")

    def _renew_claims(self, session: Session, now: dt.datetime, extra: float) -> None:
        with self._in_flight_lock:
            keys = sorted(self._in_flight)
        ledger.renew_claims(session, keys, lease_until=now + self.policy.batch_lease
                            + dt.timedelta(seconds=extra))

    def _keep_issue(self, session: Session, now: dt.datetime, lease: dt.timedelta) -> bool:
        """The holder renews the issue's lease (a worker only checks the send goes on)."""
        return ledger.renew_issue_lease(session, self._issue_id, sender=self.sender_id,
                                        now=now, lease=lease) is not None

    def _sleep_quietly(self, seconds: float) -> None:
        if seconds > 0:
            self.sleep(seconds)

    def _advance(self, done: int, sent: int) -> None:
        self._stats.done += done
        self._stats.sent += sent
        if self.progress is not None:
            self.progress(self._stats.done, max(self._stats.total, self._stats.done))

    # the end -----------------------------------------------------------------------------------

    def _finish(self, stop: str | None) -> SendReport:
        with session_scope(self.engine) as session:
            counts = ledger.counts(session, self._issue_id)
            if stop is None and counts.open == 0:
                finished_at = self.now()
                if ledger.finish_issue(session, self._issue_id, sender=self.sender_id,
                                       now=finished_at):
                    # The counts are final now: reports read them instead of the ledger.
                    issue_totals.store(session, self._issue_id, counts, sent_at=finished_at)
            else:
                if stop is None and counts["uncertain"]:
                    stop = (f"{counts['uncertain']} deliveries are uncertain: their request went "
                            "out and no answer came back. Check the provider's activity log, "
                            "then run `digest send --retry-uncertain` to send them again")
                elif stop is None:  # not expected; said plainly rather than as "0 uncertain"
                    stop = (f"{counts.open} deliveries are still open; run `digest send` again "
                            "to send them")
                ledger.pause_issue(session, self._issue_id, sender=self.sender_id, reason=stop)
        return self._report()

    def _report(self, *, message: str = "", busy: bool = False) -> SendReport:
        with Session(self.engine) as session:
            issue = session.get(Issue, self._issue_id)
            return issue_report(session, issue, message=message, sent_now=self._stats.sent,
                                busy=busy)


def _tally(outcomes: list[Outcome]) -> dict[str, int]:
    """Outcomes by status. A substituting provider answers a whole batch with one outcome
    object, counted in one C pass instead of a Python step per recipient."""
    if len(set(map(id, outcomes))) == 1:  # by identity: no Python __eq__ per outcome
        return {outcomes[0].status: len(outcomes)}
    tally: dict[str, int] = {}
    for outcome in outcomes:
        tally[outcome.status] = tally.get(outcome.status, 0) + 1
    return tally


def _why(exc: BaseException) -> str:
    """An exception as a stored reason: a database error by its driver's line alone (the SQL and
    its parameters hold addresses)."""
    if isinstance(exc, DBAPIError):
        return f"a database error: {database_reason(exc)}"
    return f"{type(exc).__name__}: {exc}"


def _mark_bounced(session: Session, email: str, *, at: dt.datetime) -> None:
    """The provider refused an address that bounced or complained before: stop planning it."""
    from subscribers.lifecycle import apply_provider_event

    apply_provider_event(session, email, "bounced", at=at)


# --- wiring ------------------------------------------------------------------------------------------

def policy_from(settings, **overrides) -> SendPolicy:
    return SendPolicy(rate_limit=settings.rate_limit, **overrides)


class IssueParts:
    """An issue's letter and recipient factory, and each segment edition's, each made once on
    first use (a send touches a handful of editions, each for many batches)."""

    def __init__(self, engine: Engine, issue: Issue, settings) -> None:
        self._engine, self._issue, self._settings = engine, issue, settings
        self.letter = letter_for(issue, settings)
        self._links = links_for(issue, settings)
        self._clicks = click_signer(settings)
        self.recipients = RecipientFactory(self.letter, self._links, issue, self._clicks)
        self._editions: dict[int, tuple[Letter, RecipientFactory]] = {}
        self._lock = threading.Lock()

    def of(self, edition_id: int) -> tuple[Letter, RecipientFactory]:
        with self._lock:
            made = self._editions.get(edition_id)
            if made is None:
                with Session(self._engine) as session:
                    edition = session.get(IssueEdition, edition_id)
                    if edition is None or edition.issue_id != self._issue.id or edition.empty:
                        raise DigestError(f"issue {self._issue.key} has no edition {edition_id}")
                    session.expunge(edition)
                letter = letter_for(self._issue, self._settings, edition)
                made = (letter, RecipientFactory(letter, self._links, self._issue, self._clicks))
                self._editions[edition_id] = made
            return made

    def compose_segments(self, session: Session, *, now: dt.datetime) -> None:
        from digest.edition.segments import compose_segments

        compose_segments(session, self._settings, self._issue, now=now)


def issue_parts(engine: Engine, issue_id: int, settings) -> IssueParts:
    """The issue's letters (rendered once each) and recipient factories, for any sender."""
    with Session(engine) as session:
        issue = session.get(Issue, issue_id)
        if issue is None:
            raise DigestError(f"no issue with id {issue_id}")
        session.expunge(issue)
    return IssueParts(engine, issue, settings)


def send_issue(engine: Engine, issue_id: int, provider: Provider, settings, *,
               policy: SendPolicy | None = None, clock: Callable[[], float] = time.time,
               sleep: Callable[[float], None] = time.sleep, rng: random.Random | None = None,
               progress: Callable[[int, int], None] | None = None,
               sender_id: str | None = None,
               holder_gone: Callable[[str], bool] = local_holder_gone,
               on_start: Callable[[], None] | None = None) -> SendReport:
    """Plan and send one issue through `provider`; resumes whatever an earlier run left."""
    parts = issue_parts(engine, issue_id, settings)
    sender = Sender(engine, provider, letter=parts.letter, recipients=parts.recipients, parts=parts,
                    policy=policy or policy_from(settings), clock=clock, sleep=sleep, rng=rng,
                    sender_id=sender_id, holder_gone=holder_gone, progress=progress,
                    on_start=on_start)
    return sender.run(issue_id)


def send_test_copy(session: Session, issue: Issue, provider: Provider, settings,
                   to: str) -> Outcome:
    """One copy of the issue to one address, outside the ledger (no plan, no lock, no rows).

    The links are those of the subscriber with that address when there is one, so the copy
    behaves like theirs; otherwise they point at no one.
    """
    from subscribers.models import Subscriber

    subscriber = session.exec(select(Subscriber).where(Subscriber.email == to.strip().lower())).first()
    letter = letter_for(issue, settings)
    letter = Letter(**{**{f: getattr(letter, f) for f in letter.__dataclass_fields__},
                       "subject": f"[test] {issue.subject}"})
    factory = RecipientFactory(letter, links_for(issue, settings), issue, click_signer(settings))
    # The links are bound to the address the row holds.
    recipient = factory(None, subscriber.id if subscriber else 0,
                        subscriber.email if subscriber else to.strip(),
                        subscriber.name if subscriber else None)
    outcomes = provider.send_batch(letter, [recipient], batch_key=f"test-{uuid.uuid4().hex}")
    return outcomes[0]


__all__ = ["CircuitBreaker", "LostLock", "RecipientFactory", "RetryPolicy", "SendPolicy",
           "SendReport", "Sender", "TokenBucket", "issue_report", "letter_for", "links_for",
           "local_holder_gone", "policy_from", "request_may_have_arrived", "send_issue",
           "send_test_copy", "sender_identity"]
