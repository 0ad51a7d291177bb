"""A subscriber's life: every status change is a named transition with the states it may start from.

    pending --confirm--> active --unsubscribe--> unsubscribed --resubscribe--> pending
    any of those --bounce--> bounced, --complain--> complained
    unsubscribed | bounced | complained --reactivate (operator only)--> active

A request that is already satisfied (confirming an active address, unsubscribing twice) changes
nothing and is not an error, so links and webhooks can be repeated. Anything else outside the
allowed-from states raises `ForbiddenTransition`: above all, nothing but an operator's explicit
`reactivate` brings a bounced or complained address back, because mailing it again hurts the
sender's reputation with every mailbox provider.

Functions take a session and leave committing to the caller (one unit of work per request or
command); they flush so that constraint errors surface where they happen.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Literal

from email_validator import EmailNotValidError, validate_email
from sqlmodel import Session, delete, select

from subscribers.models import SOURCES, Subscriber, Suppression

# Suppression reasons that block every way back except an operator's `reactivate`.
HARD_REASONS = frozenset({"bounced", "complained"})
NAME_MAX = 200
# Confirmation mails one address gets from signups in a day: enough for a lost mail or two,
# too few for anyone to flood a stranger's inbox by signing them up over and over.
CONFIRMATIONS_PER_DAY = 3
CONFIRMATION_WINDOW = dt.timedelta(days=1)


class SubscriberError(ValueError):
    """Base of the audience's expected errors; the message is fit to show an operator."""


class InvalidEmail(SubscriberError):
    pass


class InvalidName(SubscriberError):
    pass


class UnknownSubscriber(SubscriberError):
    pass


class AlreadySubscribed(SubscriberError):
    pass


class Suppressed(SubscriberError):
    """The address was erased earlier and its hash is kept so it is not re-added by accident."""


class ForbiddenTransition(SubscriberError):
    def __init__(self, transition: "Transition", subscriber: Subscriber) -> None:
        self.transition, self.status = transition, subscriber.status
        allowed = ", ".join(sorted(transition.allowed_from))
        hint = ""
        if subscriber.status in HARD_REASONS:
            hint = "; only an operator's `digest subscribers reactivate` can bring it back"
        super().__init__(
            f"cannot {transition.name} {subscriber.email}: status is {subscriber.status!r}, "
            f"{transition.name} is allowed from {allowed}{hint}")


# --- addresses -------------------------------------------------------------------------------

def normalize_email(raw: str) -> str:
    """The stored form: syntax-checked (no DNS lookups), trimmed and lower-cased as a whole.

    Lower-casing the local part too is what makes `Ann@X.org` and `ann@x.org` one subscriber;
    no mainstream mailbox provider treats local parts case-sensitively.
    """
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidEmail("email address is empty")
    try:
        result = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidEmail(f"{raw.strip()!r} is not a valid email address: {exc}") from None
    return result.normalized.lower()


def clean_name(raw: str | None) -> str | None:
    """Names are optional; blank means none. Control characters would break mail headers."""
    if raw is None:
        return None
    name = " ".join(raw.split())
    if not name:
        return None
    if len(name) > NAME_MAX:
        raise InvalidName(f"name is longer than {NAME_MAX} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InvalidName("name contains control characters")
    return name


def email_hash(email: str) -> str:
    """sha256 (hex) of the normalised address, unkeyed.

    Unkeyed on purpose: the suppression list must outlive a rotation of DIGEST_SECRET_KEY (a keyed
    hash would silently forget every erased bounce the day the key changes), and the same value
    can be matched against a provider's suppression export or a webhook's `email_hash`. The cost
    is that someone holding the table can test a guessed address; the table holds no names,
    dates of subscription or anything else, which is the data-minimisation the erasure asks for.
    """
    return hashlib.sha256(normalize_email(email).encode()).hexdigest()


def _aware(at: dt.datetime) -> dt.datetime:
    if at.tzinfo is None:
        raise ValueError(f"naive datetime {at!r}: give a time zone")
    return at


# --- transitions -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Transition:
    name: str
    target: str
    allowed_from: frozenset[str]
    settled: frozenset[str]  # already satisfied: no change, no error
    stamp: str | None  # the timestamp column this transition sets


CONFIRM = Transition("confirm", "active", frozenset({"pending"}), frozenset({"active"}),
                     "confirmed_at")
UNSUBSCRIBE = Transition("unsubscribe", "unsubscribed", frozenset({"pending", "active"}),
                         frozenset({"unsubscribed"}), "unsubscribed_at")
RESUBSCRIBE = Transition("resubscribe", "pending", frozenset({"unsubscribed"}),
                         frozenset({"pending", "active"}), None)
BOUNCE = Transition("bounce", "bounced", frozenset({"pending", "active", "unsubscribed"}),
                    frozenset({"bounced", "complained"}), "bounced_at")  # a complaint outranks it
COMPLAIN = Transition("complain", "complained",
                      frozenset({"pending", "active", "unsubscribed", "bounced"}),
                      frozenset({"complained"}), "complained_at")
REACTIVATE = Transition("reactivate", "active",
                        frozenset({"pending", "unsubscribed", "bounced", "complained"}),
                        frozenset({"active"}), "confirmed_at")


_LEAVING = frozenset({"unsubscribed", "bounced", "complained"})


def apply(session: Session, subscriber: Subscriber, transition: Transition, *,
          at: dt.datetime, issue_id: int | None = None) -> bool:
    """The one guarded status update. True if the status changed, False if already satisfied.

    A change that takes the reader off the list records `issue_id`, the issue whose mail it
    came by (None: not known), so reports count it toward that issue."""
    _aware(at)
    if subscriber.status in transition.settled:
        return False
    if subscriber.status not in transition.allowed_from:
        raise ForbiddenTransition(transition, subscriber)
    subscriber.status = transition.target
    if transition.target in _LEAVING:
        subscriber.left_issue_id = issue_id
    if transition.stamp:
        setattr(subscriber, transition.stamp, at)
    subscriber.updated_at = at
    session.add(subscriber)
    if transition.target == "active":
        # An active address must never also sit on the suppression list.
        digest_ = email_hash(subscriber.email)
        session.exec(delete(Suppression).where(Suppression.email_hash == digest_))
    session.flush()
    return True


def confirm(session: Session, subscriber: Subscriber, *, at: dt.datetime) -> bool:
    return apply(session, subscriber, CONFIRM, at=at)


def unsubscribe(session: Session, subscriber: Subscriber, *, at: dt.datetime,
                issue_id: int | None = None) -> bool:
    return apply(session, subscriber, UNSUBSCRIBE, at=at, issue_id=issue_id)


def resubscribe(session: Session, subscriber: Subscriber, *, at: dt.datetime) -> bool:
    return apply(session, subscriber, RESUBSCRIBE, at=at)


def mark_bounced(session: Session, subscriber: Subscriber, *, at: dt.datetime) -> bool:
    return apply(session, subscriber, BOUNCE, at=at)


def mark_complained(session: Session, subscriber: Subscriber, *, at: dt.datetime) -> bool:
    return apply(session, subscriber, COMPLAIN, at=at)


# --- look-ups ------------------------------------------------------------------------------------

def find(session: Session, email: str, *, lock: bool = False) -> Subscriber | None:
    """The subscriber for an address in any spelling; `lock` takes a row lock (PostgreSQL)."""
    query = select(Subscriber).where(Subscriber.email == normalize_email(email))
    if lock:
        query = query.with_for_update()
    return session.exec(query).first()


def get(session: Session, subscriber_id: int, *, lock: bool = False) -> Subscriber | None:
    query = select(Subscriber).where(Subscriber.id == subscriber_id)
    if lock:
        query = query.with_for_update()
    return session.exec(query).first()


def suppression_for(session: Session, email: str) -> Suppression | None:
    query = select(Suppression).where(Suppression.email_hash == email_hash(email))
    return session.exec(query).first()


# --- entering the list -------------------------------------------------------------------------

@dataclass(frozen=True)
class SignupResult:
    """What a form signup did. `send_confirmation` is False when no mail may or need go out;
    the web response is the same either way so nobody can learn whether an address is known."""

    subscriber: Subscriber | None
    send_confirmation: bool
    outcome: Literal["created", "pending", "resubscribed", "already_active", "blocked",
                     "throttled"]


def _check_source(source: str) -> None:
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")


def _count_confirmation(subscriber: Subscriber, at: dt.datetime, limit: int) -> bool:
    """Count one more confirmation mail for the address in its day's window; False (and no
    change) once `limit` went out in the window. The caller holds the row (`find(lock=True)`;
    SQLite transactions take the write lock at BEGIN), so concurrent signups count one by one."""
    since = subscriber.confirmations_since
    if since is None or at - since >= CONFIRMATION_WINDOW or at < since:
        subscriber.confirmations_since, subscriber.confirmations_sent = at, 0
    if subscriber.confirmations_sent >= limit:
        return False
    subscriber.confirmations_sent += 1
    return True


def signup(session: Session, email: str, *, name: str | None = None, source: str = "form",
           at: dt.datetime, confirmations_per_day: int = CONFIRMATIONS_PER_DAY) -> SignupResult:
    """A person asks to subscribe (double opt-in): new and unsubscribed addresses become `pending`
    and get a confirmation mail; a pending one gets it again, up to `confirmations_per_day`
    mails a day (then `throttled`: no mail, and the caller answers exactly as if one went out);
    active, bounced, complained and hard-suppressed ones change nothing and get no mail.

    An address erased at its owner's request may sign up again: the new confirmation is fresh
    consent, and confirming it lifts the suppression entry.
    """
    _aware(at)
    _check_source(source)
    address, name = normalize_email(email), clean_name(name)
    subscriber = find(session, address, lock=True)
    if subscriber is None:
        suppression = suppression_for(session, address)
        if suppression is not None and suppression.reason in HARD_REASONS:
            return SignupResult(None, False, "blocked")
        subscriber = Subscriber(email=address, name=name, status="pending", source=source,
                                created_at=at, updated_at=at, confirmations_since=at,
                                confirmations_sent=1)
        session.add(subscriber)
        session.flush()
        return SignupResult(subscriber, True, "created")
    if subscriber.status in HARD_REASONS:
        return SignupResult(subscriber, False, "blocked")
    if subscriber.status == "active":
        return SignupResult(subscriber, False, "already_active")
    if name and subscriber.name != name:
        subscriber.name = name
    mail = _count_confirmation(subscriber, at, confirmations_per_day)
    session.add(subscriber)
    if subscriber.status == "unsubscribed":
        resubscribe(session, subscriber, at=at)
        return SignupResult(subscriber, mail, "resubscribed" if mail else "throttled")
    session.flush()
    return SignupResult(subscriber, mail, "pending" if mail else "throttled")


def add(session: Session, email: str, *, name: str | None = None, confirmed: bool = False,
        source: str = "cli", at: dt.datetime) -> Subscriber:
    """An operator adds one address. Refuses known and suppressed addresses with a hint, because
    silently re-adding someone who left or bounced is exactly what must not happen."""
    _aware(at)
    _check_source(source)
    address, name = normalize_email(email), clean_name(name)
    existing = find(session, address)
    if existing is not None:
        if existing.status == "pending" and confirmed:
            confirm(session, existing, at=at)
            return existing
        raise AlreadySubscribed(
            f"{address} is already on the list (status {existing.status!r})"
            + ("; use `digest subscribers reactivate` to override"
               if existing.status not in ("pending", "active") else ""))
    suppression = suppression_for(session, address)
    if suppression is not None:
        raise Suppressed(f"{address} was erased earlier (reason {suppression.reason!r}) and is "
                         "suppressed; use `digest subscribers reactivate` to override")
    subscriber = Subscriber(email=address, name=name, status="active" if confirmed else "pending",
                            source=source, created_at=at, updated_at=at,
                            confirmed_at=at if confirmed else None)
    session.add(subscriber)
    session.flush()
    return subscriber


def reactivate(session: Session, email: str, *, at: dt.datetime) -> Subscriber:
    """The operator's explicit override: make an address active whatever happened before,
    including one that was erased and is only a suppression hash now."""
    _aware(at)
    address = normalize_email(email)
    subscriber = find(session, address, lock=True)
    if subscriber is None:
        if suppression_for(session, address) is None:
            raise UnknownSubscriber(f"{address} is not on the list and not suppressed; "
                                    "use `digest subscribers add` instead")
        subscriber = Subscriber(email=address, status="pending", source="cli",
                                created_at=at, updated_at=at)
        session.add(subscriber)
        session.flush()
    apply(session, subscriber, REACTIVATE, at=at)
    return subscriber


# --- leaving the list ---------------------------------------------------------------------------

_REASON_RANK = {"erased": 0, "unsubscribed": 1, "bounced": 2, "complained": 3}


def erase(session: Session, email: str, *, at: dt.datetime) -> Suppression:
    """Delete everything about a person (their row, and by cascade their delivery rows), keeping
    only the hash of the address and why, so an address that bounced is not re-added later."""
    _aware(at)
    address = normalize_email(email)
    subscriber = find(session, address, lock=True)
    if subscriber is None:
        raise UnknownSubscriber(f"{address} is not on the list")
    reason = subscriber.status if subscriber.status in _REASON_RANK else "erased"
    digest_ = email_hash(address)
    suppression = session.exec(select(Suppression).where(Suppression.email_hash == digest_)).first()
    if suppression is None:
        suppression = Suppression(email_hash=digest_, reason=reason, created_at=at)
    elif _REASON_RANK.get(reason, 0) > _REASON_RANK.get(suppression.reason, 0):
        suppression.reason = reason
    session.add(suppression)
    session.delete(subscriber)
    session.flush()
    return suppression


# --- provider events (webhooks) -----------------------------------------------------------------

EventKind = Literal["bounced", "complained", "unsubscribed"]
_EVENT_TRANSITIONS = {"bounced": BOUNCE, "complained": COMPLAIN, "unsubscribed": UNSUBSCRIBE}


def apply_provider_event(session: Session, email: str, kind: EventKind, *,
                         at: dt.datetime, issue_id: int | None = None) -> bool:
    """Record a provider's bounce, complaint or unsubscribe for an address; `issue_id` is the
    issue of the message the event is about, when known.

    True if a status changed. An unknown or unparsable address, a repeat, an event that is
    already outranked (an unsubscribe after a bounce), or one older than the subscriber's latest
    (re)activation (a late retry must not undo a fresh confirmation) all return False. The
    caller commits.
    """
    transition = _EVENT_TRANSITIONS.get(kind)
    if transition is None:
        raise ValueError(f"unknown provider event {kind!r}; expected bounced, complained or "
                         "unsubscribed")
    _aware(at)
    try:
        subscriber = find(session, email, lock=True)
    except InvalidEmail:
        return False
    if subscriber is None:
        return False
    if subscriber.status in transition.settled or subscriber.status not in transition.allowed_from:
        return False
    if subscriber.status == "active" and subscriber.confirmed_at and at < subscriber.confirmed_at:
        return False
    return apply(session, subscriber, transition, at=at, issue_id=issue_id)
