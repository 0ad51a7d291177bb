"""The public archive: `/archive` (sent issues, newest first, paged), `/archive/{key}` (one issue
as a web page), `/latest`, and Atom feeds (`/feed.xml`, `/feed/{category}.xml`).

Nothing here knows a reader: no token, no address, no name, so every response is the same for
everyone and carries an ETag and Last-Modified for a CDN (304 on a matching request). Bodies
are kept for a minute per process, which is what makes 200 requests a second cheap; a new vote
shows on the issue's page after at most that long.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from feedgen.feed import FeedGenerator
from sqlalchemy.engine import Engine
from sqlmodel import Session

from digest.database import utcnow
from digest.edition import archive
from digest.errors import DigestError
from digest.edition.weeks import Edition
from digest.settings import Settings
from digest.web.pages import environment, private_page, public_response

PAGE_SIZE = 20
FEED_SIZE = 20
CACHE_SECONDS = 60.0
# The web copy is the email's own HTML: images may come from anywhere, but no script may run
# and nothing may frame it.
ISSUE_CSP = "script-src 'none'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"


@dataclass(frozen=True)
class _Cached:
    body: bytes
    media_type: str
    last_modified: dt.datetime | None
    expires: float


class BodyCache:
    """A small per-process cache of rendered public bodies, by path, expiring by time."""

    def __init__(self, seconds: float, clock: Callable[[], float], size: int = 256) -> None:
        self._seconds, self._clock, self._size = seconds, clock, size
        self._items: OrderedDict[str, _Cached] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, make: Callable[[], tuple[bytes, str, dt.datetime | None] | None]
            ) -> _Cached | None:
        now = self._clock()
        with self._lock:
            hit = self._items.get(key)
            if hit is not None and hit.expires > now:
                self._items.move_to_end(key)
                return hit
        made = make()
        if made is None:
            return None
        entry = _Cached(*made, expires=now + self._seconds)
        with self._lock:
            self._items[key] = entry
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return entry


def create_router(settings: Settings, engine: Engine, *,
                  clock: Callable[[], dt.datetime] = utcnow) -> APIRouter:
    router = APIRouter(tags=["archive"])
    env = environment(settings)
    cache = BodyCache(CACHE_SECONDS, lambda: clock().timestamp())
    base = settings.base_url

    def not_found(what: str) -> Response:
        return private_page(env, "message.html.j2", 404, title="Not found", link=(
            "See all issues", f"{base}/archive"), paragraphs=[what])

    def send(request: Request, entry: _Cached | None, what: str, csp: str | None = None
             ) -> Response:
        if entry is None:
            return not_found(what)
        kwargs = {"csp": csp} if csp else {}
        return public_response(request, entry.body, entry.media_type,
                               last_modified=entry.last_modified, **kwargs)

    @router.get("/archive")
    def index(request: Request, page: int = 1) -> Response:
        page = max(1, page)

        def make():
            with Session(engine) as session:
                total = archive.count_sent(session)
                issues = archive.sent_issues(session, settings, offset=(page - 1) * PAGE_SIZE,
                                             limit=PAGE_SIZE)
            if page > 1 and not issues:
                return None
            pages = max(1, -(-total // PAGE_SIZE))
            body = env.get_template("archive.html.j2").render(
                title="All issues" if page == 1 else f"All issues, page {page}",
                issues=issues, page=page, pages=pages, base=base, total=total,
                canonical=f"{base}/archive" + (f"?page={page}" if page > 1 else ""),
                feed_url=f"{base}/feed.xml")
            newest = max((i.sent_at for i in issues), default=None)
            return body.encode("utf-8"), "text/html; charset=utf-8", newest

        return send(request, cache.get(f"/archive?page={page}", make),
                    f"There is no page {page} of the archive.")

    @router.get("/archive/{key}")
    def issue_page(request: Request, key: str) -> Response:
        try:
            edition = Edition.parse(key)
        except DigestError:
            return not_found("There is no issue under this address.")
        if edition.key != key:
            return RedirectResponse(f"{base}/archive/{edition.key}", status_code=301)

        def make():
            with Session(engine) as session:
                issue = archive.sent_issue(session, key)
                if issue is None:
                    return None
                html = archive.web_copy(session, settings, issue)
                sent_at = issue.sent_at or issue.created_at
            return html.encode("utf-8"), "text/html; charset=utf-8", sent_at

        return send(request, cache.get(f"/archive/{key}", make),
                    "There is no sent issue under this address.", csp=ISSUE_CSP)

    @router.get("/latest")
    def latest() -> Response:
        with Session(engine) as session:
            newest = archive.sent_issues(session, settings, limit=1)
        if not newest:
            return not_found("No issue has been sent yet.")
        return RedirectResponse(f"{base}/archive/{newest[0].key}", status_code=302,
                                headers={"Cache-Control": "public, max-age=60"})

    def feed(request: Request, path: str, category: tuple[str, str] | None) -> Response:
        def make():
            with Session(engine) as session:
                entries = archive.feed_entries(session, settings, limit=FEED_SIZE,
                                               category=category[1] if category else None)
            return atom(settings, entries, self_url=f"{base}{path}",
                        category=category[1] if category else None), \
                "application/atom+xml; charset=utf-8", \
                max((e.issue.sent_at for e in entries), default=None)

        return send(request, cache.get(path, make), "There is no such feed.")

    @router.get("/feed.xml")
    def main_feed(request: Request) -> Response:
        return feed(request, "/feed.xml", None)

    @router.get("/feed/{category}.xml")
    def category_feed(request: Request, category: str) -> Response:
        with Session(engine) as session:
            known = archive.categories(session)
        if category not in known:
            return not_found("There is no feed for this category.")
        return feed(request, f"/feed/{category}.xml", (category, known[category]))

    return router


def atom(settings: Settings, entries: list[archive.FeedEntry], *, self_url: str,
         category: str | None = None) -> bytes:
    """An Atom feed of sent issues: each entry links the issue's archive page and summarises
    its comparisons."""
    base = settings.base_url
    fg = FeedGenerator()
    fg.id(self_url)
    fg.title(settings.site_name + (f": {category}" if category else ""))
    fg.subtitle("The week's AI tool verdicts" + (f" in {category}" if category else ""))
    fg.link(href=f"{base}/archive", rel="alternate", type="text/html")
    fg.link(href=self_url, rel="self", type="application/atom+xml")
    fg.author({"name": settings.site_name})
    fg.language("en")
    fg.updated(max((e.issue.sent_at for e in entries),
                   default=dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)))
    for entry in reversed(entries):  # feedgen lists the last added first
        url = f"{base}/archive/{quote(entry.issue.key)}"
        item = fg.add_entry()
        item.id(url)
        item.title(entry.issue.subject or f"Issue {entry.issue.key}")
        item.link(href=url, rel="alternate", type="text/html")
        item.published(entry.issue.sent_at)
        item.updated(entry.issue.sent_at)
        item.summary("\n".join([entry.issue.preheader, "", *entry.comparisons]).strip())
    return fg.atom_str(pretty=True)

