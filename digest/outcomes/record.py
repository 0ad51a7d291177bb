"""Recording verified provider events: de-duplicate, then apply each to its subscriber.

Every actionable event is written to `webhook_events` (unique per provider and event id) in the
same transaction as the subscriber's status change, so a replay, or two deliveries of the same
event racing each other, can change a subscriber at most once. Each is stored with the delivery
and issue it is about (`attribution`: by the provider's message id), and a subscriber taken off
the list by it records that issue. Soft bounces are stored the same way (kind `soft_bounced`)
and change no subscriber; deliveries and opens are not stored. Where the signature does not
cover the event (Mailgun) the request's token is stored for every request, so a captured one
cannot be replayed with other data.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from digest.database import session_scope
from digest.database.models import WebhookEvent
from digest.outcomes.attribution import Attribution, attribute_many
from digest.outcomes.base import ProviderEvent
from subscribers.lifecycle import InvalidEmail, apply_provider_event, email_hash

log = logging.getLogger(__name__)

_EVENT_ID_MAX = 300  # the column's width
_CHUNK = 500  # ids per IN (...) look-up


@dataclass(frozen=True)
class Recorded:
    received: int
    applied: int  # events new to us that changed a subscriber
    duplicates: int  # replays, ignored
    ignored: int  # neither actionable nor a soft bounce (deliveries, opens, ...): not stored
    malformed: int = 0  # genuine but unreadable (an address that is not a string): skipped
    soft_bounces: int = 0  # new soft bounces recorded against their delivery


def _email_hash(email: str) -> str:
    try:
        return email_hash(email)
    except InvalidEmail:
        return hashlib.sha256(email.strip().lower().encode()).hexdigest()


def _fit(event_id: str) -> str:
    """Ids longer than the column are stored as their digest: still unique, still stable."""
    if len(event_id) <= _EVENT_ID_MAX:
        return event_id
    return "sha256:" + hashlib.sha256(event_id.encode()).hexdigest()


def _stored(event: ProviderEvent) -> bool:
    """Whether the event itself is kept: it acts on a subscriber, or is a soft bounce."""
    return event.actionable or event.soft_bounce


def _kind(event: ProviderEvent) -> str:
    return "soft_bounced" if event.soft_bounce else event.kind


def _keys(event: ProviderEvent) -> list[str]:
    """The ids under which an event is remembered: its own (when it is stored) and its
    request's replay key (always, where the provider needs one)."""
    keys = [_fit(event.event_id)] if _stored(event) else []
    if event.replay_key:
        keys.append(_fit(event.replay_key))
    return keys


def record_events(engine: Engine, events: Sequence[ProviderEvent], *,
                  now: dt.datetime) -> Recorded:
    """Store and apply the events not seen before, all in one transaction."""
    malformed = sum(1 for e in events if e.malformed)
    candidates = [e for e in events if _keys(e)]
    ignored = sum(1 for e in events if not _stored(e) and not e.malformed and not _keys(e))
    if not candidates:
        return Recorded(len(events), 0, 0, ignored, malformed)
    provider = candidates[0].provider
    for attempt in (1, 2):
        try:
            with session_scope(engine) as session:
                wanted = sorted({k for e in candidates for k in _keys(e)})
                seen: set[str] = set()
                for i in range(0, len(wanted), _CHUNK):
                    chunk = wanted[i:i + _CHUNK]
                    seen.update(session.exec(select(WebhookEvent.event_id).where(
                        WebhookEvent.provider == provider,
                        WebhookEvent.event_id.in_(chunk))))  # type: ignore[attr-defined]
                fresh: list[ProviderEvent] = []
                duplicates = 0
                for event in candidates:
                    keys = _keys(event)
                    if seen.intersection(keys):
                        if not event.malformed:  # a malformed one is counted as such
                            duplicates += 1
                        continue
                    seen.update(keys)  # a repeat within this request is a duplicate too
                    fresh.append(event)
                # Stored with the delivery and issue it is about: complaints per issue feed
                # the complaint cut-off, and every kind the report.
                stored_ones = [e for e in fresh if _stored(e)]
                found = iter(attribute_many(session, [(e.email, e.message_id, e.issue_key)
                                                      for e in stored_ones]))
                new: list[tuple[ProviderEvent, Attribution]] = [
                    (e, next(found) if _stored(e) else Attribution(None)) for e in fresh]
                for event, about in new:
                    keys = _keys(event)
                    for key in keys:
                        stored = key == keys[0] and _stored(event)
                        session.add(WebhookEvent(provider=provider, event_id=key,
                                                 kind=_kind(event) if stored else "request",
                                                 email_hash=_email_hash(event.email or ""),
                                                 issue_id=about.issue_id if stored else None,
                                                 delivery_id=about.delivery_id if stored
                                                 else None,
                                                 received_at=now))
                # A concurrent delivery of the same event fails here, before anything changes.
                session.flush()
                applied = sum(
                    bool(apply_provider_event(session, event.email, event.kind,
                                              at=event.occurred_at or now,
                                              issue_id=about.issue_id))
                    for event, about in new if event.actionable)
            soft = sum(1 for e, _ in new if e.soft_bounce)
            ignored_now = sum(1 for e, _ in new if not _stored(e) and not e.malformed)
            return Recorded(len(events), applied, duplicates, ignored + ignored_now, malformed,
                            soft)
        except IntegrityError:
            if attempt == 2:
                raise
            log.info("webhook events raced a concurrent delivery; re-reading")
    raise AssertionError("unreachable")
