"""`POST /webhooks/{provider}`: size-check, verify, then hand the events to
`digest.outcomes.record`. The route stays thin.

The body is never read whole before its size is known to be bearable: a Content-Length over
`MAX_BODY` is refused before a byte is read, and a body without one (chunked) is counted while
it streams in and refused as soon as it passes the limit. Anyone can post here, signed or not,
so this bounds what one request can make the server hold.

Answers: 200 once the events are recorded (or were already: a replay is acknowledged and
ignored, so the provider stops resending; an event whose fields cannot be read is skipped and
counted as `malformed`); 400 for a forged, stale or unreadable request, with nothing changed;
404 for an unknown provider; 413 for a body over `MAX_BODY`; 503 when DIGEST_WEBHOOK_SECRET is
missing or unusable, and 5xx on a database failure, both of which the provider will retry.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool

from digest.errors import ConfigurationError
from digest.outcomes import mailgun, postmark, resend, sendgrid
from digest.outcomes.base import WebhookRejected
from digest.outcomes.record import record_events

log = logging.getLogger(__name__)

VERIFIERS = {"postmark": postmark.verify_and_parse, "sendgrid": sendgrid.verify_and_parse,
             "mailgun": mailgun.verify_and_parse, "resend": resend.verify_and_parse}
# The most one request may make us hold. SendGrid's batches of events are the largest bodies
# expected; Postmark, Mailgun and Resend post one event of a few KB.
MAX_BODY = 1024 * 1024


class BodyTooLarge(Exception):
    pass


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    """The body, or BodyTooLarge once it is known to exceed `limit`: from Content-Length before
    reading anything, otherwise after at most `limit` bytes and one more chunk."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large() -> JSONResponse:
    # The rest of the body is not read: ask the client to stop and close the connection.
    return JSONResponse({"detail": f"body over {MAX_BODY} bytes"}, status_code=413,
                        headers={"Connection": "close"})


def _seconds(value: float | dt.datetime) -> float:
    return value.timestamp() if isinstance(value, dt.datetime) else float(value)


def make_router(settings, engine: Engine,
                clock: Callable[[], float | dt.datetime] = time.time) -> APIRouter:
    """The webhook routes. `clock` gives now (epoch seconds or an aware datetime) for the
    timestamp checks, so tests never depend on the wall clock."""
    router = APIRouter(tags=["webhooks"])

    @router.post("/webhooks/{provider}")
    async def receive_webhook(provider: str, request: Request) -> JSONResponse:
        verify = VERIFIERS.get(provider)
        if verify is None:
            return JSONResponse({"detail": f"unknown provider {provider!r}"}, status_code=404)
        secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else ""
        if not secret:
            log.error("webhook from %s refused: DIGEST_WEBHOOK_SECRET is not set", provider)
            return JSONResponse({"detail": "webhook secret not configured"}, status_code=503)
        try:
            body = await read_body(request)
        except BodyTooLarge:
            log.warning("webhook from %s refused: body over %d bytes", provider, MAX_BODY)
            return _too_large()
        headers = {k.lower(): v for k, v in request.headers.items()}
        now = _seconds(clock())
        try:
            events = verify(body, headers, secret=secret, now=now)
        except WebhookRejected as exc:
            log.warning("webhook from %s refused: %s", provider, exc)
            return JSONResponse({"detail": str(exc)}, status_code=400)
        except ConfigurationError as exc:
            log.error("webhook from %s cannot be verified: %s", provider, exc)
            return JSONResponse({"detail": "webhook secret unusable"}, status_code=503)
        for event in events:
            if event.malformed:  # names fields and types only: no addresses in the log
                log.warning("webhook from %s: event skipped, %s", provider, event.malformed)
        result = await run_in_threadpool(
            record_events, engine, events,
            now=dt.datetime.fromtimestamp(now, dt.timezone.utc))
        return JSONResponse({"received": result.received, "applied": result.applied,
                             "duplicates": result.duplicates, "ignored": result.ignored,
                             "malformed": result.malformed,
                             "soft_bounces": result.soft_bounces})

    return router
