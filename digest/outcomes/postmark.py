"""Postmark webhooks. Postmark signs nothing: authenticity is the basic-auth user and password
put in the webhook URL, compared here in constant time with DIGEST_WEBHOOK_SECRET ("user:pass").
There is no timestamp to check; a replay is caught by its event id.

One JSON object per request. `RecordType` says what happened; for bounces `Type` says how bad:
only `HardBounce` and `BadEmailAddress` are permanent; `SoftBounce`, `Transient` and the other
temporary types are soft bounces. `MessageID` names the message the ledger recorded. `SubscriptionChange` reports Postmark's
own suppressions (`SuppressSending`, with `SuppressionReason`).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping

from digest.errors import ConfigurationError
from digest.outcomes.base import (MalformedEvent, ProviderEvent, WebhookRejected, address,
                                  derived_id, from_iso, load_json, message_key, skipped,
                                  text)

PROVIDER = "postmark"
HARD_BOUNCES = frozenset({"HardBounce", "BadEmailAddress"})
SOFT_BOUNCES = frozenset({"Transient", "SoftBounce", "DnsError", "Blocked", "DMARCPolicy"})
SUPPRESSION_KINDS = {"HardBounce": ("bounced", True), "SpamComplaint": ("complained", False),
                     "ManualSuppression": ("unsubscribed", False)}


def verify(headers: Mapping[str, str], secret: str) -> None:
    if ":" not in secret:
        raise ConfigurationError("DIGEST_WEBHOOK_SECRET for Postmark must be 'user:password', "
                                 "the credentials in the webhook URL")
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic" or not token:
        raise WebhookRejected("missing basic-auth credentials")
    try:
        given = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookRejected("malformed basic-auth credentials") from None
    if not hmac.compare_digest(given, secret.encode()):
        raise WebhookRejected("wrong basic-auth credentials")


def parse(body: bytes) -> list[ProviderEvent]:
    record = load_json(body)
    try:
        return [_event(record, body)]
    except MalformedEvent as exc:
        return [skipped(PROVIDER, str(exc))]


def _event(record: object, body: bytes) -> ProviderEvent:
    if not isinstance(record, dict):
        raise MalformedEvent("the body is not one JSON object")
    record_type = text(record.get("RecordType"))
    metadata = record.get("Metadata") if isinstance(record.get("Metadata"), dict) else {}
    issue = text(metadata.get("issue")) or text(record.get("Tag")) or None
    if record_type in ("Bounce", "SpamComplaint"):
        bounce_type = text(record.get("Type"))
        if record_type == "SpamComplaint" or bounce_type == "SpamComplaint":
            kind, hard = "complained", False
        elif bounce_type in HARD_BOUNCES:
            kind, hard = "bounced", True
        elif bounce_type in SOFT_BOUNCES:
            kind, hard = "bounced", False
        elif bounce_type == "Unsubscribe":
            kind, hard = "unsubscribed", False
        else:
            kind, hard = "other", False
        return ProviderEvent(PROVIDER, f"{record_type}:{record.get('ID')}"
                             if record.get("ID") is not None
                             else derived_id(record_type, body), kind,
                             address(record.get("Email"), "Email"), issue, hard,
                             from_iso(record.get("BouncedAt")),
                             message_id=message_key(text(record.get("MessageID"))))
    if record_type == "SubscriptionChange":
        kind, hard = "other", False
        if record.get("SuppressSending"):
            kind, hard = SUPPRESSION_KINDS.get(text(record.get("SuppressionReason")),
                                               ("other", False))
        event_id = derived_id(record_type, record.get("MessageID"), record.get("Recipient"),
                              record.get("ChangedAt"), record.get("SuppressSending"))
        return ProviderEvent(PROVIDER, event_id, kind, address(record.get("Recipient"),
                                                               "Recipient"),
                             issue, hard, from_iso(record.get("ChangedAt")),
                             message_id=message_key(text(record.get("MessageID"))))
    return ProviderEvent(PROVIDER, derived_id(record_type, body), "other",
                         text(record.get("Recipient")) or text(record.get("Email")), issue)


def verify_and_parse(body: bytes, headers: Mapping[str, str], *, secret: str,
                     now: float) -> list[ProviderEvent]:
    verify(headers, secret)
    return parse(body)
