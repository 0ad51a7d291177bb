"""SendGrid's signed Event Webhook: an ECDSA (P-256, SHA-256) signature over the timestamp
header followed by the raw body, checked with the account's verification key, which
DIGEST_WEBHOOK_SECRET holds as SendGrid shows it (base64 of the DER public key; PEM works too).

The body is a JSON array of events. `bounce` with `type: blocked` is a temporary refusal, and
`deferred` a delivery the receiving server put off: both soft bounces; other bounces are
permanent. `sg_message_id` names the message (its first part is the request's X-Message-Id). `dropped` carries why SendGrid would not even try: an address already
bounced, reported spam, or unsubscribed. Our `custom_args` come back as top-level fields.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from functools import lru_cache

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from digest.errors import ConfigurationError
from digest.outcomes.base import (MalformedEvent, ProviderEvent, WebhookRejected, address,
                                  check_timestamp, derived_id, from_epoch, load_json,
                                  message_key, skipped, text)

PROVIDER = "sendgrid"
SIGNATURE = "x-twilio-email-event-webhook-signature"
TIMESTAMP = "x-twilio-email-event-webhook-timestamp"
DROPPED = {"Bounced Address": ("bounced", True), "Invalid": ("bounced", True),
           "Spam Reporting Address": ("complained", False),
           "Unsubscribed Address": ("unsubscribed", False)}


@lru_cache(maxsize=4)
def public_key(secret: str) -> ec.EllipticCurvePublicKey:
    try:
        if "BEGIN PUBLIC KEY" in secret:
            key = serialization.load_pem_public_key(secret.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode(secret.strip(),
                                                                     validate=True))
    except (ValueError, binascii.Error, TypeError):
        raise ConfigurationError("DIGEST_WEBHOOK_SECRET for SendGrid must be the Event Webhook "
                                 "verification key (base64 DER, as SendGrid shows it)") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ConfigurationError("DIGEST_WEBHOOK_SECRET for SendGrid is not a P-256 ECDSA key")
    return key


def verify(body: bytes, headers: Mapping[str, str], secret: str, now: float) -> None:
    key = public_key(secret)
    signature, timestamp = headers.get(SIGNATURE), headers.get(TIMESTAMP)
    if not signature or not timestamp:
        raise WebhookRejected("missing signature or timestamp header")
    try:
        key.verify(base64.b64decode(signature, validate=True), timestamp.encode() + body,
                   ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, binascii.Error, ValueError):
        raise WebhookRejected("signature does not match") from None
    check_timestamp(timestamp, now)


def _event(item: object) -> ProviderEvent:
    if not isinstance(item, dict):
        raise MalformedEvent("the event is not a JSON object")
    name = text(item.get("event"))
    kind, hard = "other", False
    if name == "bounce":
        kind, hard = "bounced", item.get("type") != "blocked"
    elif name == "deferred":  # the receiving server said "try later": a soft bounce
        kind, hard = "bounced", False
    elif name == "dropped":
        kind, hard = DROPPED.get(str(item.get("reason", "")), ("other", False))
    elif name == "spamreport":
        kind = "complained"
    elif name in ("unsubscribe", "group_unsubscribe"):
        kind = "unsubscribed"
    event_id = item.get("sg_event_id") or derived_id(name, item.get("sg_message_id"),
                                                     item.get("email"), item.get("timestamp"))
    return ProviderEvent(PROVIDER, str(event_id), kind, address(item.get("email"), "email"),
                         text(item.get("issue")), hard, from_epoch(item.get("timestamp")),
                         message_id=_message_id(item.get("sg_message_id")))


def _message_id(value: object) -> str | None:
    """`sg_message_id` is the X-Message-Id of the send request, then `.filter…` parts that
    vary per recipient: the ledger stored the first part."""
    found = text(value)
    return message_key(found.split(".", 1)[0]) if found else None


def parse(body: bytes) -> list[ProviderEvent]:
    """Each event on its own: one that cannot be read is skipped, not the batch, which SendGrid
    would otherwise retry with the good events in it."""
    items = load_json(body)
    if not isinstance(items, list):
        raise WebhookRejected("expected a JSON array of events")
    events = []
    for position, item in enumerate(items, 1):
        try:
            events.append(_event(item))
        except MalformedEvent as exc:
            events.append(skipped(PROVIDER, f"event {position} of {len(items)}: {exc}"))
    return events


def verify_and_parse(body: bytes, headers: Mapping[str, str], *, secret: str,
                     now: float) -> list[ProviderEvent]:
    verify(body, headers, secret, now)
    return parse(body)
