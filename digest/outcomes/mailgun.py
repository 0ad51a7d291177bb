"""Mailgun webhooks: the signature travels in the JSON body, `signature: {timestamp, token,
signature}`, valid when `hex(HMAC-SHA256(signing key, timestamp + token))` matches.
DIGEST_WEBHOOK_SECRET holds the HTTP webhook signing key.

`failed` with `severity: permanent` is a hard bounce, except `reason: old` (gave up after
retrying temporary failures: not proof the address is dead); `severity: temporary` (and `old`)
is a soft bounce; failures because Mailgun already
suppresses the address say which list it is on. `message.headers.message-id` is the id the send answer gave (without its angle brackets).
The event id is `event-data.id`, the same on
every redelivery of one event. The signature covers only timestamp and token, not the event, so
each token is also remembered: a captured request replayed with altered event data is refused.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from digest.outcomes.base import (MalformedEvent, ProviderEvent, WebhookRejected, address,
                                  check_timestamp, derived_id, from_epoch, load_json,
                                  message_key, skipped, text)

PROVIDER = "mailgun"
SUPPRESSED = {"suppress-bounce": ("bounced", True), "suppress-complaint": ("complained", False),
              "suppress-unsubscribe": ("unsubscribed", False)}


def verify(payload: object, secret: str, now: float) -> dict:
    signature = payload.get("signature") if isinstance(payload, dict) else None
    if not isinstance(signature, dict):
        raise WebhookRejected("no signature object in the body")
    timestamp, token = str(signature.get("timestamp", "")), str(signature.get("token", ""))
    given = str(signature.get("signature", ""))
    expected = hmac.new(secret.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    if not token or not hmac.compare_digest(expected, given.lower()):
        raise WebhookRejected("signature does not match")
    check_timestamp(timestamp, now)
    return signature


def parse(payload: dict, signature: dict) -> list[ProviderEvent]:
    # Even an unreadable event keeps its request's token: the signature does not cover the
    # event, so an unremembered token could be replayed with other data.
    replay_key = f"token:{signature['token']}"
    try:
        return [_event(payload.get("event-data"), signature, replay_key)]
    except MalformedEvent as exc:
        return [skipped(PROVIDER, str(exc), replay_key=replay_key)]


def _event(data: object, signature: dict, replay_key: str) -> ProviderEvent:
    if not isinstance(data, dict):
        raise MalformedEvent("event-data is not a JSON object")
    name = text(data.get("event"))
    kind, hard = "other", False
    if name == "failed":
        reason = str(data.get("reason", ""))
        if reason in SUPPRESSED:
            kind, hard = SUPPRESSED[reason]
        else:
            kind, hard = "bounced", data.get("severity") == "permanent" and reason != "old"
    elif name == "complained":
        kind = "complained"
    elif name == "unsubscribed":
        kind = "unsubscribed"
    variables = data.get("user-variables") if isinstance(data.get("user-variables"), dict) else {}
    recipient = address(data.get("recipient"), "recipient")
    event_id = data.get("id") or derived_id(name, recipient, data.get("timestamp"),
                                            signature.get("token"))
    message = data.get("message") if isinstance(data.get("message"), dict) else {}
    headers = message.get("headers") if isinstance(message.get("headers"), dict) else {}
    return ProviderEvent(PROVIDER, str(event_id), kind, recipient, text(variables.get("issue")),
                         hard, from_epoch(data.get("timestamp")), replay_key=replay_key,
                         message_id=message_key(text(headers.get("message-id"))))


def verify_and_parse(body: bytes, headers: Mapping[str, str], *, secret: str,
                     now: float) -> list[ProviderEvent]:
    payload = load_json(body)  # the signature is inside the body, so it must be read first
    signature = verify(payload, secret, now)
    return parse(payload, signature)
