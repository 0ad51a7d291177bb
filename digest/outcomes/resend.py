"""Resend webhooks, delivered by Svix: headers `svix-id`, `svix-timestamp` and
`svix-signature` (space-separated `v1,<base64>` entries, several during a key rotation). The
signature is HMAC-SHA256 over `id.timestamp.body` with the base64-decoded part of the
`whsec_...` secret (DIGEST_WEBHOOK_SECRET). Timestamps more than 5 minutes away are refused.

`email.bounced` with `bounce.type` `Permanent` is a hard bounce (Resend sends this event for
permanent rejections; a `Transient` type is kept as soft to be safe); `email.complained` is a
complaint; `email.delivery_delayed` (a temporary failure Resend keeps retrying) is a soft
bounce. `data.email_id` is the id the send answer gave. The svix-id is the same on every redelivery of one event.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from email.utils import parseaddr

from digest.errors import ConfigurationError
from digest.outcomes.base import (MalformedEvent, ProviderEvent, WebhookRejected, address,
                                  check_timestamp, from_iso, load_json, message_key, skipped,
                                  text)

PROVIDER = "resend"
PREFIX = "whsec_"


def signing_key(secret: str) -> bytes:
    if not secret.startswith(PREFIX):
        raise ConfigurationError("DIGEST_WEBHOOK_SECRET for Resend must be the endpoint's "
                                 "signing secret, starting with whsec_")
    try:
        return base64.b64decode(secret[len(PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationError("DIGEST_WEBHOOK_SECRET for Resend: the part after whsec_ is "
                                 "not base64") from None


def verify(body: bytes, headers: Mapping[str, str], secret: str, now: float) -> str:
    key = signing_key(secret)
    msg_id, timestamp = headers.get("svix-id"), headers.get("svix-timestamp")
    signatures = headers.get("svix-signature")
    if not msg_id or not timestamp or not signatures:
        raise WebhookRejected("missing svix-id, svix-timestamp or svix-signature")
    check_timestamp(timestamp, now)
    expected = base64.b64encode(hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body,
                                         hashlib.sha256).digest())
    for entry in signatures.split():
        version, _, value = entry.partition(",")
        if version == "v1" and hmac.compare_digest(expected, value.encode()):
            return msg_id
    raise WebhookRejected("signature does not match")


def _issue(data: dict) -> str | None:
    headers = data.get("headers")
    if isinstance(headers, list):  # [{name, value}], as Resend echoes custom headers
        for header in headers:
            if isinstance(header, dict) and str(header.get("name", "")).lower() == "x-digest-issue":
                return text(header.get("value"))
    if isinstance(headers, dict):
        for name, value in headers.items():
            if name.lower() == "x-digest-issue":
                return text(value)
    return None


def parse(body: bytes, event_id: str) -> list[ProviderEvent]:
    payload = load_json(body)
    try:
        return [_event(payload, event_id)]
    except MalformedEvent as exc:
        return [skipped(PROVIDER, str(exc))]


def _event(payload: object, event_id: str) -> ProviderEvent:
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), dict):
        raise MalformedEvent("expected {type, created_at, data} with data an object")
    data, name = payload["data"], text(payload.get("type"))
    kind, hard = "other", False
    if name == "email.bounced":
        bounce = data.get("bounce") if isinstance(data.get("bounce"), dict) else {}
        kind, hard = "bounced", str(bounce.get("type", "Permanent")).lower() == "permanent"
    elif name == "email.delivery_delayed":  # a temporary failure, still being retried
        kind, hard = "bounced", False
    elif name == "email.complained":
        kind = "complained"
    to = data.get("to")
    if isinstance(to, list):  # the recipients, one for our mail; a bare string is read too
        to = to[0] if to else None
    first = address(to, "to")
    email = parseaddr(first)[1] or None if first else None
    return ProviderEvent(PROVIDER, event_id, kind, email, _issue(data), hard,
                         from_iso(payload.get("created_at")),
                         message_id=message_key(text(data.get("email_id"))))


def verify_and_parse(body: bytes, headers: Mapping[str, str], *, secret: str,
                     now: float) -> list[ProviderEvent]:
    event_id = verify(body, headers, secret, now)
    return parse(body, event_id)
