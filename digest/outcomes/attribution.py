"""Which delivery (and so which issue) a provider event is about.

The provider names its message: the id it gave when it accepted the message, which the ledger
stored on the delivery (`Delivery.provider_message_id`). That id is looked up among the
deliveries of the event's address only (the ledger's subscriber index; a reader has one row per
issue), not across the whole ledger, which has no index on a column written while sending.
When the id is missing or unknown, the issue the event's tag names is used, and last the rule
from before: the latest issue mailed to the address.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlmodel import Session

from digest.database.models import Delivery, Issue
from subscribers.lifecycle import InvalidEmail, normalize_email
from subscribers.models import Subscriber


@dataclass(frozen=True, slots=True)
class Attribution:
    issue_id: int | None
    delivery_id: int | None = None
    by: str = "none"  # message | tag | latest | none: how it was found (tests, logs)


def _subscriber_id(session: Session, email: str | None) -> int | None:
    if not email:
        return None
    try:
        normalized = normalize_email(email)
    except InvalidEmail:
        return None
    return session.execute(select(Subscriber.id).where(Subscriber.email == normalized)).scalar()


_CHUNK = 500  # values per IN (...)


def _normal(email: str | None) -> str | None:
    try:
        return normalize_email(email) if email else None
    except InvalidEmail:
        return None


def attribute_many(session: Session, wanted: Sequence[tuple[str | None, str | None, str | None]]
                   ) -> list[Attribution]:
    """`attribute` for a request's events, (email, message id, issue key) each: the addresses
    and the message ids are looked up in a few set-wise queries (SendGrid posts a thousand
    events at once); only an event whose message is unknown is looked up on its own."""
    S, D = Subscriber.__table__.c, Delivery.__table__.c
    emails = sorted({e for e in (_normal(w[0]) for w in wanted) if e})
    ids: dict[str, int] = {}
    for i in range(0, len(emails), _CHUNK):
        ids.update((email, subscriber_id) for email, subscriber_id in session.execute(
            select(S.email, S.id).where(S.email.in_(emails[i:i + _CHUNK]))))
    pairs = {(ids[e], m) for e, m in ((_normal(w[0]), w[1]) for w in wanted)
             if m and e in ids}
    found: dict[tuple[int, str], tuple[int, int]] = {}
    subscribers = sorted({s for s, _ in pairs})
    spellings = sorted({x for _, m in pairs for x in (m, f"<{m}>")})
    for i in range(0, len(subscribers), _CHUNK):
        for j in range(0, len(spellings), _CHUNK):
            for delivery_id, issue_id, subscriber_id, stored in session.execute(
                    select(D.id, D.issue_id, D.subscriber_id, D.provider_message_id)
                    .where(D.subscriber_id.in_(subscribers[i:i + _CHUNK]),
                           D.provider_message_id.in_(spellings[j:j + _CHUNK]))
                    .order_by(D.id)):
                key = (subscriber_id, stored.removeprefix("<").removesuffix(">"))
                found[key] = (delivery_id, issue_id)  # the newest of equal ids wins
    out = []
    for email, message_id, issue_key in wanted:
        subscriber_id = ids.get(_normal(email) or "")
        hit = found.get((subscriber_id, message_id or "")) if subscriber_id else None
        out.append(Attribution(hit[1], hit[0], "message") if hit
                   else attribute(session, email, None, issue_key))
    return out


def attribute(session: Session, email: str | None, message_id: str | None,
              issue_key: str | None) -> Attribution:
    """The delivery and issue an event about `email` belongs to (see the module's note)."""
    D = Delivery.__table__.c
    subscriber_id = _subscriber_id(session, email)
    if subscriber_id is not None and message_id:
        # The ledger keeps the id as the provider gave it: bare, or in angle brackets (Mailgun,
        # and our own Message-ID for SMTP and the outbox).
        found = session.execute(
            select(D.id, D.issue_id).where(D.subscriber_id == subscriber_id,
                                           D.provider_message_id.in_((message_id,
                                                                      f"<{message_id}>")))
            .order_by(D.id.desc()).limit(1)).first()
        if found is not None:
            return Attribution(found[1], found[0], "message")
    if issue_key:
        issue_id = session.execute(select(Issue.id).where(Issue.key == issue_key)).scalar()
        if issue_id is not None:
            delivery_id = None if subscriber_id is None else session.execute(
                select(D.id).where(D.issue_id == issue_id,
                                   D.subscriber_id == subscriber_id)).scalar()
            return Attribution(issue_id, delivery_id, "tag")
    if subscriber_id is None:
        return Attribution(None)
    latest = session.execute(
        select(D.id, D.issue_id).where(D.subscriber_id == subscriber_id, D.status == "sent")
        .order_by(D.id.desc()).limit(1)).first()
    return Attribution(latest[1], latest[0], "latest") if latest else Attribution(None)
