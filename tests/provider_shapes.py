"""The request shapes Resend and SendGrid accept, written down from their API references, so the
provider tests check every outgoing request from the repository alone.

These schemas hold only what our requests touch (required fields, types, limits, the property
names each API knows); the providers' full published OpenAPI documents stay outside the
repository and are checked in `tests/delivery/test_provider_specs.py` when they are available.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator

_TEXT: dict[str, Any] = {"type": "string"}
_STRING_MAP: dict[str, Any] = {"type": "object", "additionalProperties": _TEXT}

# POST /emails/batch: a JSON array of up to 100 emails; `attachments` and `tags` are not
# available in batch sends; `to` is one address or up to 50.
RESEND_BATCH: dict[str, Any] = {
    "type": "array",
    "minItems": 1,
    "maxItems": 100,
    "items": {
        "type": "object",
        "required": ["from", "to", "subject"],
        "additionalProperties": False,
        "properties": {
            "from": {"type": "string", "minLength": 3},
            "to": {"oneOf": [_TEXT, {"type": "array", "items": _TEXT, "minItems": 1,
                                     "maxItems": 50}]},
            "subject": _TEXT,
            "bcc": {"oneOf": [_TEXT, {"type": "array", "items": _TEXT}]},
            "cc": {"oneOf": [_TEXT, {"type": "array", "items": _TEXT}]},
            "reply_to": {"oneOf": [_TEXT, {"type": "array", "items": _TEXT}]},
            "html": _TEXT,
            "text": _TEXT,
            "headers": _STRING_MAP,
            "scheduled_at": _TEXT,
            "topic_id": _TEXT,
        },
        "anyOf": [{"required": ["html"]}, {"required": ["text"]}],
    },
}

_SENDGRID_ADDRESS: dict[str, Any] = {
    "type": "object",
    "required": ["email"],
    "additionalProperties": False,
    "properties": {"email": {"type": "string", "minLength": 3}, "name": _TEXT},
}

# POST /v3/mail/send: one message with up to 1,000 personalizations.
SENDGRID_MAIL_SEND: dict[str, Any] = {
    "type": "object",
    "required": ["personalizations", "from"],
    "additionalProperties": False,
    "properties": {
        "personalizations": {
            "type": "array",
            "minItems": 1,
            "maxItems": 1000,
            "items": {
                "type": "object",
                "required": ["to"],
                "additionalProperties": False,
                "properties": {
                    "to": {"type": "array", "items": _SENDGRID_ADDRESS, "minItems": 1},
                    "cc": {"type": "array", "items": _SENDGRID_ADDRESS},
                    "bcc": {"type": "array", "items": _SENDGRID_ADDRESS},
                    "from": _SENDGRID_ADDRESS,
                    "subject": _TEXT,
                    "headers": _STRING_MAP,
                    "substitutions": _STRING_MAP,
                    "dynamic_template_data": {"type": "object"},
                    "custom_args": _STRING_MAP,
                    "send_at": {"type": "integer"},
                },
            },
        },
        "from": _SENDGRID_ADDRESS,
        "reply_to": _SENDGRID_ADDRESS,
        "reply_to_list": {"type": "array", "items": _SENDGRID_ADDRESS},
        "subject": _TEXT,
        "content": {
            "type": "array",
            "minItems": 1,
            "items": {"type": "object", "required": ["type", "value"],
                      "properties": {"type": {"type": "string", "minLength": 1},
                                     "value": {"type": "string", "minLength": 1}}},
        },
        "attachments": {"type": "array"},
        "template_id": _TEXT,
        "headers": _STRING_MAP,
        "categories": {"type": "array", "items": _TEXT, "maxItems": 10},
        "custom_args": {"type": ["string", "object"]},
        "send_at": {"type": "integer"},
        "batch_id": _TEXT,
        "asm": {"type": "object"},
        "ip_pool_name": _TEXT,
        "mail_settings": {"type": "object"},
        "tracking_settings": {"type": "object"},
    },
}

_ROUTES = {
    "resend": ("POST", "/emails/batch", RESEND_BATCH),
    "sendgrid": ("POST", "/v3/mail/send", SENDGRID_MAIL_SEND),
}


def shape_problems(provider: str, recorded) -> list[str]:
    """What is wrong with a recorded request for this provider's send call; empty when none."""
    method, route, schema = _ROUTES[provider]
    problems = []
    if (recorded.method, recorded.route) != (method, route):
        problems.append(f"expected {method} {route}, got {recorded.method} {recorded.route}")
    if not (recorded.header("authorization") or "").startswith("Bearer "):
        problems.append("no bearer token in Authorization")
    if (recorded.header("content-type") or "").split(";")[0].strip() != "application/json":
        problems.append(f"content type {recorded.header('content-type')!r}, not application/json")
    key = recorded.header("idempotency-key")
    if key is not None and not 1 <= len(key) <= 256:
        problems.append(f"Idempotency-Key of {len(key)} characters (1-256)")
    try:
        body = recorded.json()
    except ValueError as exc:
        return problems + [f"body is not JSON: {exc}"]
    for error in Draft202012Validator(schema).iter_errors(body):
        where = "/".join(str(p) for p in error.absolute_path) or "(body)"
        problems.append(f"{where}: {error.message}")
    return problems


def check_shape(provider: str, recorded) -> None:
    problems = shape_problems(provider, recorded)
    assert not problems, f"{provider} request does not have the documented shape: " + "; ".join(
        problems[:5])
