"""What the project's own web pages share: the templates of `templates/web/` (one base with the
audience's pages), their security headers, and conditional GET for pages a CDN may cache."""

from __future__ import annotations

import datetime as dt
import hashlib
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from digest.edition.render import templates_root
from digest.settings import Settings
from subscribers.routes import PAGE_CSP, PRIVATE_HEADERS  # one policy for every page

# Public pages: the same for every visitor, so a CDN may keep them for a few minutes.
PUBLIC_CACHE = "public, max-age=300"


def environment(settings: Settings) -> Environment:
    env = Environment(loader=FileSystemLoader(str(templates_root() / "web")), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.globals.update(site_name=settings.site_name, postal_address=settings.postal_address,
                       subscribe_url=f"{settings.base_url}/subscribe")
    return env


def private_page(env: Environment, template: str, status: int = 200,
                 **context: Any) -> HTMLResponse:
    """A page about one reader (a vote, a confirmation): never cached, never indexed."""
    body = env.get_template(template).render(**context)
    return HTMLResponse(body, status_code=status,
                        headers=dict(PRIVATE_HEADERS, **{"Content-Security-Policy": PAGE_CSP}))


def public_response(request: Request, body: bytes, media_type: str, *,
                    last_modified: dt.datetime | None, csp: str = PAGE_CSP) -> Response:
    """A public page with an ETag and Last-Modified, answering 304 when the client (or a CDN)
    already has this version."""
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": PUBLIC_CACHE, "X-Content-Type-Options": "nosniff",
               "Content-Security-Policy": csp, "Referrer-Policy": "strict-origin-when-cross-origin"}
    if last_modified is not None:
        headers["Last-Modified"] = format_datetime(last_modified.astimezone(dt.timezone.utc),
                                                   usegmt=True)
    if _not_modified(request, etag, last_modified):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


def _not_modified(request: Request, etag: str, last_modified: dt.datetime | None) -> bool:
    match = request.headers.get("if-none-match")
    if match is not None:  # RFC 9110: If-None-Match wins over If-Modified-Since
        tags = {t.strip().removeprefix("W/") for t in match.split(",")}
        return etag in tags or "*" in tags
    since = request.headers.get("if-modified-since")
    if since and last_modified is not None:
        try:
            return last_modified.replace(microsecond=0) <= parsedate_to_datetime(since)
        except (TypeError, ValueError):
            return False
    return False
