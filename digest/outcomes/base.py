"""The one event type every provider's webhook is normalised to, and the checks they share.

A provider module exposes `verify_and_parse(body, headers, *, secret, now)`: it checks
authenticity over the raw bytes first (nothing is parsed before that), then maps the provider's
own event names through a table to `ProviderEvent`s. Anything forged, stale or not JSON raises
`WebhookRejected` (the route answers 400 and changes nothing); a secret that cannot work raises
`ConfigurationError` (503, so the provider retries once the operator has fixed it).

One genuine event that cannot be read (an address that is a number, a list or an object; an
event that is not an object) does not fail its request: the provider would retry the whole
request forever, and the good events batched with it would never apply. It becomes a
`ProviderEvent` with `malformed` set (see `skipped`), which changes nothing and is counted.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["bounced", "complained", "unsubscribed", "other"]
TOLERANCE = 300.0  # seconds a signed timestamp may differ from our clock (Svix's default)


@dataclass(frozen=True, slots=True)
class ProviderEvent:
    provider: str
    event_id: str  # unique per provider: a replay carries the same id
    kind: Kind
    email: str | None
    issue_key: str | None = None
    # For bounces: permanent. A soft (temporary) bounce changes no subscriber; it is recorded
    # against its delivery and reported apart.
    hard: bool = False
    occurred_at: dt.datetime | None = None
    # A second id for the signed request itself, where the signature does not cover the event
    # (Mailgun signs only timestamp + token): seen once, any request carrying it is a replay.
    replay_key: str | None = None
    # Why the event could not be read, naming fields and types only (it is logged): such an
    # event is skipped and counted, never applied.
    malformed: str | None = None
    # The provider's id of the message the event is about, as our ledger stored it when the
    # provider accepted the message (`Delivery.provider_message_id`, see `message_key`): it
    # names the delivery, and so the issue, the event belongs to.
    message_id: str | None = None

    @property
    def actionable(self) -> bool:
        """Whether this event changes a subscriber: hard bounces, complaints, unsubscribes."""
        if not self.email or self.malformed:
            return False
        if self.kind == "bounced":
            return self.hard
        return self.kind in ("complained", "unsubscribed")


    @property
    def soft_bounce(self) -> bool:
        """A temporary failure (mailbox full, greylisted, deferred): recorded, not acted on."""
        return self.kind == "bounced" and not self.hard and bool(self.email) \
            and not self.malformed


def message_key(message_id: str | None) -> str | None:
    """A provider's message id in the one spelling the ledger and the webhooks share: without
    the angle brackets Mailgun's send answer puts around it."""
    if not message_id:
        return None
    key = message_id.strip().removeprefix("<").removesuffix(">").strip()
    return key or None


class WebhookRejected(Exception):
    """Not from the provider, or not readable: answered with 400, nothing is changed."""


class StaleWebhook(WebhookRejected):
    """Signed too long ago (or in the future): a captured request being replayed."""


class MalformedEvent(Exception):
    """One event of a genuine request cannot be read. The message names the field and the type
    found, never the value (it may be someone's address), because it goes to the log."""


def skipped(provider: str, reason: str, *, replay_key: str | None = None) -> ProviderEvent:
    """The stand-in for an event that could not be read: counted, logged, never applied."""
    return ProviderEvent(provider, "", "other", None, replay_key=replay_key, malformed=reason)


def address(value: object, field: str) -> str | None:
    """An address field: a string, or absent. Anything else makes the event malformed."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise MalformedEvent(f"{field} is {_kind_of(value)}, not a string")
    return value


def text(value: object) -> str | None:
    """A name looked up in a table (an event or bounce type, an issue key): a non-string reads
    as unknown, as an unknown name would."""
    return value if isinstance(value, str) else None


def _kind_of(value: object) -> str:
    return {dict: "an object", list: "a list", bool: "a boolean", int: "a number",
            float: "a number"}.get(type(value), type(value).__name__)


def check_timestamp(raw: object, now: float, tolerance: float = TOLERANCE) -> float:
    try:
        stamp = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise WebhookRejected(f"timestamp {raw!r} is not a number") from None
    if abs(now - stamp) > tolerance:
        raise StaleWebhook(f"timestamp is {now - stamp:+.0f} s from now (tolerance "
                           f"{tolerance:.0f} s)")
    return stamp


def load_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise WebhookRejected("body is not JSON") from None


def from_epoch(value: object) -> dt.datetime | None:
    try:
        return dt.datetime.fromtimestamp(float(value), dt.timezone.utc)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def from_iso(value: object) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def derived_id(*parts: object) -> str:
    """An event id for providers that send none: the same event always hashes the same."""
    joined = "\x1f".join("" if p is None else str(p) for p in parts)
    return "sha256:" + hashlib.sha256(joined.encode()).hexdigest()
