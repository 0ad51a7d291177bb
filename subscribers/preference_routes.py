"""`/p/{token}`: the reader's own preference page, linked from every email's footer.

GET shows the categories as checkboxes (the ones the site has published lately, handed in by
the app, plus any the reader chose earlier), the ship-only choice, a save button and the global
unsubscribe. POST saves. `/p/{token}/drop/{category}` is "stop sending me {category}" from the
email: GET asks, POST applies, so link scanners change nothing. The token is signed for the
`preferences` purpose; no login.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlalchemy.engine import Engine
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from subscribers import lifecycle, preferences, storage
from subscribers.links import Links
from subscribers.models import Subscriber
from subscribers.preferences import InvalidPreferences, Preferences, category_slug
from subscribers.routes import PAGE_CSP, PRIVATE_HEADERS
from subscribers.tokens import BadToken

KnownCategories = Callable[[], Sequence[str]]
MAX_FORM_BYTES = 16 * 1024
_HEADERS = dict(PRIVATE_HEADERS, **{"Content-Security-Policy": PAGE_CSP})
# Who may change their preferences: a reader still on the list (a bounced or complained
# address gets nothing anyway, and an unsubscribed one resubscribes through the signup form).
_EDITABLE = ("active", "pending")


def create_router(*, sessions: Engine | Callable[[], Session], links: Links,
                  known_categories: KnownCategories, templates_dir: str | Path,
                  clock: Callable[[], dt.datetime] = storage.utcnow,
                  site_name: str = "Weekly digest", postal_address: str = "") -> APIRouter:
    if isinstance(sessions, Engine):
        engine = sessions
        new_session: Callable[[], Session] = lambda: Session(engine, expire_on_commit=False)
    else:
        new_session = sessions
    env = Environment(loader=FileSystemLoader(str(templates_dir)), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.globals.update(site_name=site_name, postal_address=postal_address,
                       subscribe_url=f"{links.base_url}/subscribe")
    router = APIRouter(tags=["preferences"])

    def page(template: str, status: int = 200, **context: Any) -> HTMLResponse:
        return HTMLResponse(env.get_template(template).render(**context), status_code=status,
                            headers=_HEADERS)

    def bad_link() -> HTMLResponse:
        return page("message.html.j2", 400, title="This link does not work", link=(
            "Go to the signup page", f"{links.base_url}/subscribe"), paragraphs=[
            "It may be incomplete (some mail apps break long links across lines), changed, or "
            "too old. Use the link in the newest email."])

    def reader(token: str, session: Session, *, lock: bool = False) -> Subscriber | None:
        try:
            claim = links.signer.verify(token, "preferences")
            subscriber = lifecycle.get(session, claim.subject_id, lock=lock)
        except BadToken:
            return None
        # The token must have been issued for the person who holds that id now.
        if subscriber is None or not links.signer.held_by(claim, subscriber.email,
                                                          since=subscriber.created_at):
            return None
        return subscriber if subscriber.status in _EDITABLE else None

    def choices(current: Preferences, known: Sequence[str]) -> list[tuple[str, str, bool]]:
        """(slug, name, ticked) for every category on offer, the reader's own included."""
        names = {category_slug(n): n for n in known}
        for name in current.categories:
            names.setdefault(category_slug(name), name)
        chosen = {category_slug(n) for n in current.categories}
        return [(slug, names[slug], slug in chosen)
                for slug in sorted(names, key=lambda s: names[s].casefold())]

    def form_page(token: str, subscriber: Subscriber, known: Sequence[str], *,
                  saved: bool = False, error: str | None = None,
                  status: int = 200) -> HTMLResponse:
        current = preferences.of(subscriber)
        return page("preferences.html.j2", status, title="Your email preferences",
                    email=subscriber.email, options=choices(current, known),
                    ship_only=current.ship_only, summary=current.describe(), saved=saved,
                    error=error, action=f"{links.base_url}/p/{token}",
                    unsubscribe_url=links.unsubscribe(subscriber.id, subscriber.email))

    # Each handler reads the categories on offer before it opens its own session: on SQLite a
    # transaction holds the write lock, and a second one inside it would wait for itself.

    @router.get("/p/{token}", response_class=HTMLResponse)
    def show(token: str) -> HTMLResponse:
        known = list(known_categories())
        with new_session() as session:
            subscriber = reader(token, session)
            if subscriber is None:
                return bad_link()
            return form_page(token, subscriber, known)

    @router.post("/p/{token}", response_class=HTMLResponse)
    async def save(token: str, request: Request) -> HTMLResponse:
        form = await _read_form(request)
        if form is None:
            return page("message.html.j2", 413, title="Too much", link=None,
                        paragraphs=["That form was larger than this page ever sends."])
        known = list(await run_in_threadpool(known_categories))
        return await run_in_threadpool(_save, token, form, known)

    def _save(token: str, form, known: Sequence[str]) -> HTMLResponse:
        with storage.unit_of_work(new_session) as session:
            subscriber = reader(token, session, lock=True)
            if subscriber is None:
                return bad_link()
            offered = {slug: name for slug, name, _ in choices(preferences.of(subscriber), known)}
            picked = [offered[s] for s in form.getlist("category") if s in offered]
            try:
                wanted = Preferences(preferences.parse_categories(picked),
                                     preferences.parse_ship_only(form.get("ship_only")))
            except InvalidPreferences as exc:
                return form_page(token, subscriber, known, error=str(exc), status=400)
            preferences.store(session, subscriber, wanted, at=clock())
            return form_page(token, subscriber, known, saved=True)

    def drop_target(session: Session, token: str, slug: str, known: Sequence[str]):
        subscriber = reader(token, session, lock=True)
        if subscriber is None:
            return None, None
        current = preferences.of(subscriber)
        names = {category_slug(n): n for n in (*known, *current.categories)}
        return subscriber, names.get(slug)

    @router.get("/p/{token}/drop/{slug}", response_class=HTMLResponse)
    def ask_drop(token: str, slug: str) -> HTMLResponse:
        known = list(known_categories())
        with new_session() as session:
            subscriber, name = drop_target(session, token, slug, known)
            if subscriber is None:
                return bad_link()
            if name is None:
                return form_page(token, subscriber, known, status=404,
                                 error="That category is not on offer any more.")
            return page("drop_category.html.j2", title=f"Stop sending {name}?", category=name,
                        action=f"{links.base_url}/p/{token}/drop/{slug}",
                        preferences_url=f"{links.base_url}/p/{token}")

    @router.post("/p/{token}/drop/{slug}", response_class=HTMLResponse)
    def drop(token: str, slug: str) -> HTMLResponse:
        known = list(known_categories())
        with storage.unit_of_work(new_session) as session:
            subscriber, name = drop_target(session, token, slug, known)
            if subscriber is None:
                return bad_link()
            if name is None:
                return form_page(token, subscriber, known, status=404,
                                 error="That category is not on offer any more.")
            try:
                wanted = preferences.without(preferences.of(subscriber), name, known)
            except InvalidPreferences as exc:
                return form_page(token, subscriber, known, error=str(exc), status=400)
            preferences.store(session, subscriber, wanted, at=clock())
            return form_page(token, subscriber, known, saved=True)

    return router


async def _read_form(request: Request):
    """The posted form, or None when it is larger than this page could send (checked from
    Content-Length and while reading, before parsing)."""
    from starlette.datastructures import FormData
    from urllib.parse import parse_qsl

    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_FORM_BYTES):
        return None
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_FORM_BYTES:
            return None
    return FormData(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
