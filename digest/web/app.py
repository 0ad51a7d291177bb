"""The web app (`digest serve`): composes the audience's routes with this project's settings,
signer, provider and stored issues. The one place where the web side is wired."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, select

from digest.content.categories import recent_categories
from digest.delivery.confirmation import confirmation_sender
from digest.edition.render import templates_root
from digest.database.models import Issue
from digest.edition.personalize import (CLICK_READER, NAME, PREFERENCES_URL, UNSUBSCRIBE_URL,
                                        VIEW_URL, VOTE_URL,
                                        SplitTemplate)
from digest.settings import Settings
from digest.web.access import OperatorOnly, client_address, require_operator
from digest.web.archive import create_router as create_archive_router
from digest.web.votes import create_router as create_vote_router
from digest.web.redirect import ClickRedirect, make_router as make_redirect_router
from digest.web.webhooks import make_router as make_webhook_router
from subscribers.links import Links
from subscribers.models import Subscriber
from subscribers.preference_routes import create_router as create_preferences_router
from subscribers.routes import RateLimiter, create_router
from subscribers.storage import utcnow
from subscribers.tokens import Signer

# Issues still being prepared are not shown: nobody has a link to them yet, and an unsent draft
# is not public.
HIDDEN_ISSUE_STATES = frozenset({"ready", "skipped"})


def issue_loader(engine: Engine, links: Links,
                 clicks: ClickRedirect | None = None) -> Callable[[str, int], str | None]:
    """`load_issue_html(key, subscriber_id)`: the stored issue HTML with this reader's links."""

    def load(key: str, subscriber_id: int) -> str | None:
        with Session(engine) as session:
            issue = session.exec(select(Issue).where(Issue.key == key)).first()
            if issue is None or not issue.html or issue.status in HIDDEN_ISSUE_STATES:
                return None
            subscriber = session.get(Subscriber, subscriber_id)
            if subscriber is None:
                return None
            html, name, issue_id = issue.html, subscriber.name or "", issue.id
            address = subscriber.email
        values = {UNSUBSCRIBE_URL: links.unsubscribe(subscriber_id, address, issue_id),
                  VIEW_URL: links.view(key, subscriber_id, address),
                  VOTE_URL: links.vote(issue_id, subscriber_id, address),
                  PREFERENCES_URL: links.preferences(subscriber_id, address), NAME: name,
                  CLICK_READER: clicks.signer.reader_token(
                      key, links.holders([subscriber_id], [address])[0]) if clicks else ""}
        return SplitTemplate(html, escape_html=True).fill(values)

    return load


def rate_limit_key(settings: Settings) -> Callable[[Request], str]:
    """The rate limits' client key (signups, votes): the real client behind the trusted
    proxies, so one proxy's address does not put every visitor in one bucket, and a forged
    X-Forwarded-For does not buy a fresh one."""

    def key(request: Request) -> str:
        address = client_address(request, settings)
        return str(address) if address is not None else "unknown"

    return key


def known_categories(engine: Engine, clock: Callable[[], dt.datetime]
                     ) -> Callable[[], list[str]]:
    """What the preference page offers: the categories published in the last 12 weeks."""

    def load() -> list[str]:
        with Session(engine) as session:
            return recent_categories(session, clock())

    return load


def create_app(settings: Settings, engine: Engine, *, public: bool = False,
               clock: Callable[[], dt.datetime] = utcnow,
               rate_limiter: RateLimiter | None = None,
               click_flush_interval: float = 1.0, admin_options: dict | None = None) -> FastAPI:
    """The FastAPI app. `public` (listening beyond localhost) makes a real secret mandatory:
    `settings.signing_key` raises ConfigurationError here, before anything is served; it does
    not decide who sees operator pages, each request does (`digest.web.access`). `clock`
    drives timestamps, token ages and the signup rate limit (tests pass a fake one)."""
    signer = Signer(settings.signing_key(public=public), clock=lambda: clock().timestamp())
    links = Links(settings.base_url, signer)
    client_key = rate_limit_key(settings)
    clicks = ClickRedirect(settings, engine, public=public, flush_interval=click_flush_interval,
                           clock=lambda: clock().timestamp())

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        clicks.counter.flush()  # clicks still held in memory are written before exit

    app = FastAPI(title=settings.site_name, docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    app.include_router(make_redirect_router(clicks))
    app.include_router(create_router(
        sessions=engine,
        links=links,
        send_confirmation=confirmation_sender(settings),
        load_issue_html=issue_loader(engine, links, clicks),
        templates_dir=templates_root() / "web",
        clock=clock,
        site_name=settings.site_name,
        postal_address=settings.postal_address,
        rate_limiter=rate_limiter,
        client_key=client_key,
    ))
    app.include_router(make_webhook_router(settings, engine,
                                           clock=lambda: clock().timestamp()))
    app.include_router(create_preferences_router(
        sessions=engine, links=links, templates_dir=templates_root() / "web", clock=clock,
        known_categories=known_categories(engine, clock), site_name=settings.site_name,
        postal_address=settings.postal_address))
    app.include_router(create_archive_router(settings, engine, clock=clock))
    app.include_router(create_vote_router(settings, engine, signer, clock=clock,
                                          client_key=client_key))
    # Operators' preview shows unsent content: decided per request (digest.web.access), so a
    # reverse proxy's loopback connection does not make a visitor an operator. Everyone else
    # gets 404 unless DIGEST_PREVIEW_PUBLIC=true.
    from digest.web.preview import create_app as create_preview

    preview_guard = require_operator(settings, public=settings.preview_public)

    @app.get("/preview", include_in_schema=False, dependencies=[Depends(preview_guard)])
    def preview_root() -> RedirectResponse:
        return RedirectResponse("/preview/", status_code=307)

    app.mount("/preview", OperatorOnly(create_preview(engine, settings, clock=clock,
                                                      root="/preview"),
                                       settings, public=settings.preview_public))
    app.add_api_route("/healthz", healthz(engine), methods=["GET"], include_in_schema=False)

    from digest.web.admin import create_admin

    app.include_router(create_admin(settings, engine, clicks=clicks, clock=clock,
                                    **(admin_options or {})))
    app.state.settings, app.state.engine, app.state.links = settings, engine, links
    app.state.clicks = clicks
    return app


def healthz(engine: Engine) -> Callable[[], JSONResponse]:
    """`GET /healthz` for `digest doctor` and load balancers: 200 when the database answers,
    503 otherwise. Says nothing else about the setup."""

    def check() -> JSONResponse:
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError:
            return JSONResponse({"status": "unavailable"}, status_code=503,
                                headers={"Cache-Control": "no-store"})
        return JSONResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})

    return check
