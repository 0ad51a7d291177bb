"""`GET|HEAD /r/{token}`: count a click on a link of an issue, then send the reader on.

The destination is the URL stored for that link when the issue was composed; the request
supplies nothing but the signed token (no open redirect). A token that is forged, altered, or
names a link its issue does not have answers 404 and counts nothing. Machines (HEAD requests,
scanner user agents, a client opening several links of one issue within seconds) are counted
apart from people. Nothing about the client is stored: the burst check keeps a keyed digest of
address and user agent in memory for a few seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from sqlalchemy.engine import Engine
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.routing import Route

from digest.outcomes.clicks import (BurstDetector, ClickCounter, ClickSigner, LinkCache,
                                    scanner_agent)
from digest.settings import Settings
from digest.web.access import client_address
from subscribers.links import Links
from subscribers.tokens import Signer

_HEADERS = {"Cache-Control": "no-store", "X-Robots-Tag": "noindex"}


class ClickRedirect:
    """The redirect's state: the signer, the stored links, the counters, the burst memory."""

    def __init__(self, settings: Settings, engine: Engine, *, public: bool = False,
                 clock: Callable[[], float] = time.time, flush_interval: float = 1.0) -> None:
        self.settings = settings
        self.signer = ClickSigner(settings.signing_key(public=public))
        self.links = LinkCache(engine)
        binder = Links(settings.base_url, Signer(settings.signing_key(public=public)))
        self.counter = ClickCounter(engine, interval=flush_interval, clock=clock,
                                    bind=binder.holders)
        self.bursts = BurstDetector()
        self.clock = clock

    async def follow(self, request: Request) -> Response:
        """The endpoint: runs on the event loop (no thread hop); the database is touched only
        on the first click of an issue (its links, then cached) and by the deferred flush."""
        token = request.path_params["token"]
        found = self.signer.verify_link(token)
        stored = None
        if found:
            stored = self.links.cached(found[0]) or await run_in_threadpool(self.links.get,
                                                                            found[0])
        url = stored.urls.get(found[1]) if stored and found else None
        if url is None:
            return PlainTextResponse("Not found", status_code=404, headers=_HEADERS)
        issue_key, link_no = found
        reader = None
        given = request.query_params.get("r")
        if given:  # empty: a copy made for no reader (the preview)
            reader = self.signer.verify_reader(issue_key, given)
            if reader is None:
                return PlainTextResponse("Not found", status_code=404, headers=_HEADERS)
        agent = request.headers.get("user-agent")
        # A browser's speculative prefetch says so in a header: nobody clicked.
        prefetch = (request.headers.get("sec-purpose") or request.headers.get("purpose")
                    or request.headers.get("x-moz") or "").startswith("prefetch")
        machine = request.method == "HEAD" or prefetch or scanner_agent(agent)
        moved: list[int] = []
        if not machine:
            client = self.signer.client_key(str(client_address(request, self.settings)),
                                            agent or "",
                                            str(reader.subscriber_id if reader else ""))
            machine, moved = self.bursts.observe(client, stored.issue_id, link_no, self.clock(),
                                                 len(stored.urls))
        counter = self.counter
        for earlier in moved:  # counted as a person's a moment ago: a scanner's after all
            counter.add(stored.issue_id, earlier, human=-1, machine=1)
        per_reader = self.settings.click_tracking == "per-subscriber" and not machine
        counter.add(stored.issue_id, link_no, human=0 if machine else 1, machine=int(machine),
                    reader=reader if per_reader else None)
        task = BackgroundTask(counter.flush) if counter.due() else None
        return Response(status_code=302, headers={**_HEADERS, "Location": url}, background=task)


def make_router(redirect: ClickRedirect) -> APIRouter:
    """A plain Starlette route: the redirect needs no validation or dependency machinery, and
    at hundreds of clicks a second its per-request overhead is most of the cost."""
    router = APIRouter()
    router.routes.append(Route("/r/{token}", redirect.follow, methods=["GET", "HEAD"],
                               include_in_schema=False))
    return router
