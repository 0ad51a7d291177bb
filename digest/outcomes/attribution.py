"""Which delivery (and so which issue) a provider event is about.

The provider names its message: the id it gave when it accepted the message, which the ledger
stored on the delivery (`Delivery.provider_message_id`). That id is looked up among the
deliveries of the event's address only (the ledger's subscriber index; a reader has one row per
issue), not across the whole ledger, which has no index on a column written while sending.
When the id is missing or unknown, the issue the event's tag names is used, and last the rule
from before: the latest issue mailed to the address.
"""

from __future__ import annotations

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
