"""The public web endpoints of the audience: signup, confirmation, one-click unsubscribe, and the
personalised web copy of an issue.

`create_router` receives every collaborator (sessions, links, the confirmation sender, the issue
loader, a clock), so this package stays free of `digest` and tests build it with real parts.

Rules these routes keep:
- `POST /subscribe` answers the same bytes whether or not the address is known, and sends mail
  after the response, so neither content nor timing tells an address apart.
- `GET /u/{token}` never changes anything: link scanners fetch every URL in a message. Only
  `POST /u/{token}` (the page's one button, or a mailbox provider's RFC 8058 one-click request)
  unsubscribes; it answers 200 with no redirect and no cookie, and repeating it is harmless.
- An unsubscribe link in an issue's mail names that issue (signed with the reader), and the
  unsubscribe is recorded with it (`Subscriber.left_issue_id`); links naming no issue still work.
- A token acts only on the reader it was issued for (`holder`): the row its id leads to must
  still hold the address the token is bound to, so a removed reader's links reach nobody else.
- Token pages send `Referrer-Policy: no-referrer` so a token in the URL never leaks to the sites
  an issue links to, and `Cache-Control: no-store`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from subscribers import lifecycle, storage
from subscribers.links import Links, parse_issue_subject
from subscribers.models import Subscriber
from subscribers.tokens import BadToken

log = logging.getLogger(__name__)

HONEYPOT_FIELD = "website"  # hidden from people; bots fill every field they find
SendConfirmation = Callable[[str, "str | None", str], None]
LoadIssueHtml = Callable[[str, int], "str | None"]
Clock = Callable[[], dt.datetime]
ClientKey = Callable[[Request], str]


def socket_peer(request: Request) -> str:
    """The default client key: the address the connection came from."""
    return request.client.host if request.client else "unknown"

# A page about one reader: never cached, never indexed, no referrer with its token leaves.
PRIVATE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
    "X-Content-Type-Options": "nosniff",
}
PAGE_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
             "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
# The web copy of an issue is the email's own HTML: its images may come from anywhere, but no
# script may run and nothing may frame it.
_ISSUE_CSP = "script-src 'none'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"


def network_key(host: str) -> str:
    """Whom a rate limit counts: an IPv4 address, or an IPv6 client's /64 (one subscriber line
    gets a whole /64 and can rotate through it freely). Anything else is kept as it is."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class RateLimiter:
    """At most `limit` requests per client in a sliding `window`, in memory (one process; enough
    to keep bots out), at a constant cost per request however many clients it tracks.

    The window is cut into `buckets` slices, each a dict of counts per client: a request reads
    its client's count in each live slice and adds one to the newest; a slice older than the
    window is dropped whole. Nothing ever walks the clients. Memory is bounded too: past
    `max_clients` distinct clients in a slice, further new clients share one count, so a flood
    of rotating addresses is limited as one client instead of growing the table."""

    OVERFLOW = "(too many clients)"

    def __init__(self, limit: int, window: float, clock: Callable[[], float], *,
                 buckets: int = 10, max_clients: int = 100_000) -> None:
        if limit < 1 or window <= 0 or buckets < 1 or max_clients < 1:
            raise ValueError("a rate limit needs limit >= 1, window > 0, buckets >= 1 and "
                             "max_clients >= 1")
        self.limit, self.window, self._clock = limit, window, clock
        self.max_clients = max_clients
        self._slice = window / buckets
        self._span = buckets  # slices counted: the current one and the buckets-1 before it
        self._slices: deque[tuple[int, dict[str, int]]] = deque()  # (slice number, counts)
        self._lock = threading.Lock()

    def hit(self, key: str) -> float | None:
        """Count one request of the client `key` (an address: IPv6 ones count by /64); None if
        allowed, else the seconds until the client may retry."""
        key = network_key(key)
        now = self._clock()
        number = int(now // self._slice)
        with self._lock:
            slices = self._slices
            while slices and slices[0][0] <= number - self._span:
                slices.popleft()  # at most `buckets` a call, each dropped once
            if slices and number < slices[-1][0]:
                number = slices[-1][0]  # the clock stepped back: count in the newest slice
            if not slices or slices[-1][0] != number:
                slices.append((number, {}))
            newest = slices[-1][1]
            if key not in newest and len(newest) >= self.max_clients:
                key = self.OVERFLOW
            per_slice = [(n, counts.get(key, 0)) for n, counts in slices]
            total = sum(count for _, count in per_slice)
            if total >= self.limit:
                # Retry when enough of the oldest slices have left the window.
                for n, count in per_slice:
                    total -= count
                    if total < self.limit:
                        return max((n + self._span) * self._slice - now, 1.0)
            newest[key] = newest.get(key, 0) + 1
            return None

    def tracked(self) -> int:
        """Client entries held now (for tests and monitoring)."""
        with self._lock:
            return sum(len(counts) for _, counts in self._slices)


class _BadInput(Exception):
    pass


def _session_factory(sessions: Engine | Callable[[], Session]) -> Callable[[], Session]:
    if isinstance(sessions, Engine):
        engine = sessions
        return lambda: Session(engine, expire_on_commit=False)
    return sessions


def create_router(*, sessions: Engine | Callable[[], Session], links: Links,
                  send_confirmation: SendConfirmation, load_issue_html: LoadIssueHtml,
                  templates_dir: str | Path, clock: Clock = storage.utcnow,
                  site_name: str = "Weekly digest", postal_address: str = "",
                  rate_limiter: RateLimiter | None = None,
                  client_key: ClientKey = socket_peer) -> APIRouter:
    """The audience's routes, wired to the collaborators given.

    `sessions` is an engine or a zero-argument session factory; `clock` returns aware datetimes
    and drives both the timestamps and the default rate limit (5 signups per client per 10 min).
    `client_key(request)` names the client the rate limit counts against: the socket's peer by
    default; an app behind a reverse proxy passes one that knows which proxies to believe.
    """
    new_session = _session_factory(sessions)
    limiter = rate_limiter or RateLimiter(5, 600.0, lambda: clock().timestamp())
    env = Environment(loader=FileSystemLoader(str(templates_dir)), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.globals.update(site_name=site_name, postal_address=postal_address,
                       subscribe_url=f"{links.base_url}/subscribe")
    router = APIRouter()

    def unit_of_work():
        return storage.unit_of_work(new_session)

    def holder(session: Session, token: str, purpose: str, *,
               lock: bool = False) -> Subscriber | None:
        """The subscriber a genuine token was issued for, or None when they are gone (their row
        removed, or the id now someone else's). BadToken for anything not genuine."""
        return holder_and_issue(session, token, purpose, lock=lock)[0]

    def holder_and_issue(session: Session, token: str, purpose: str, *,
                         lock: bool = False) -> tuple[Subscriber | None, int | None]:
        """`holder`, and the issue the token names: an unsubscribe link in an issue's mail
        names it (`7-42`); older links and the preference page's name none."""
        claim = links.signer.verify(token, purpose)
        if purpose == "unsubscribe":
            try:
                subscriber_id, issue_id = parse_issue_subject(claim.subject)
            except ValueError:
                raise BadToken("bad subject") from None
        else:
            subscriber_id, issue_id = claim.subject_id, None
        subscriber = lifecycle.get(session, subscriber_id, lock=lock)
        if subscriber is None or not links.signer.held_by(claim, subscriber.email,
                                                          since=subscriber.created_at):
            return None, None
        return subscriber, issue_id

    def page(template: str, status: int = 200, **context: Any) -> HTMLResponse:
        body = env.get_template(template).render(**context)
        headers = dict(PRIVATE_HEADERS, **{"Content-Security-Policy": PAGE_CSP})
        return HTMLResponse(body, status_code=status, headers=headers)

    def message(title: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("paragraphs", [])
        context.setdefault("link", None)
        return page("message.html.j2", status, title=title, **context)

    def bad_link() -> HTMLResponse:
        return message("This link does not work", 400, paragraphs=[
            "It may be incomplete (some mail apps break long links across lines), changed, or "
            "too old. Copy the whole link from the email, or sign up again."],
            link=("Go to the signup page", f"{links.base_url}/subscribe"))

    # --- signup -------------------------------------------------------------------------------

    def subscribe_form(*, status: int = 200, email: str = "", name: str = "",
                       error: str | None = None) -> HTMLResponse:
        return page("subscribe.html.j2", status, email=email, name=name, error=error,
                    honeypot=HONEYPOT_FIELD)

    @router.get("/subscribe", response_class=HTMLResponse)
    def subscribe_page(t: str | None = None) -> HTMLResponse:
        """The signup form; `?t=` (an unsubscribe token) fills in the address to resubscribe."""
        email = ""
        if t:
            with new_session() as session:
                try:
                    subscriber = holder(session, t, "unsubscribe")
                except BadToken:
                    subscriber = None
                email = subscriber.email if subscriber else ""
        return subscribe_form(email=email)

    def register(email: str, name: str | None) -> tuple[str, str | None, int] | None:
        """Create or renew the signup; the confirmation to send, if any (runs in a thread)."""
        for attempt in (1, 2):
            try:
                with unit_of_work() as session:
                    result = lifecycle.signup(session, email, name=name, source="form", at=clock())
                    if not result.send_confirmation or result.subscriber is None:
                        return None
                    subscriber = result.subscriber
                    return subscriber.email, subscriber.name, int(subscriber.id)
            except IntegrityError:
                if attempt == 2:  # two concurrent first signups of one address: the loser retries
                    raise
        return None

    def deliver_confirmation(email: str, name: str | None, subscriber_id: int) -> None:
        try:
            send_confirmation(email, name, links.confirm(subscriber_id, email))
        except Exception:  # after the response: nobody to tell but the log
            log.exception("confirmation mail to subscriber %s failed", subscriber_id)

    async def read_fields(request: Request) -> tuple[dict[str, str], bool]:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "application/json" or content_type.endswith("+json"):
            try:
                data = await request.json()
            except ValueError:
                raise _BadInput("the request body is not valid JSON") from None
            if not isinstance(data, dict):
                raise _BadInput("send a JSON object with an \"email\" field")
            fields = {}
            for key in ("email", "name", HONEYPOT_FIELD):
                value = data.get(key)
                if value is not None and not isinstance(value, str):
                    raise _BadInput(f"the field {key!r} must be a string")
                fields[key] = value or ""
            return fields, True
        wants_json = "application/json" in request.headers.get("accept", "")
        try:
            form = await request.form()
        except Exception:  # malformed multipart bodies
            raise _BadInput("the form could not be read") from None
        fields = {}
        for key in ("email", "name", HONEYPOT_FIELD):
            value = form.get(key)
            fields[key] = value if isinstance(value, str) else ""
        return fields, wants_json

    def accepted(as_json: bool) -> Response:
        """The one answer to every well-formed signup, whatever the address's history."""
        text = ("Almost done: if this address can receive our mail, a confirmation link is on "
                "its way. Open it to start your subscription.")
        if as_json:
            return JSONResponse({"ok": True, "message": text}, headers=PRIVATE_HEADERS)
        return message("Check your inbox", paragraphs=[
            text, "Nothing arrived within a few minutes? Look in the spam folder, or sign up "
                  "again."])

    def refused(as_json: bool, status: int, error: str, fields: dict[str, str] | None = None,
                retry_after: float | None = None) -> Response:
        headers = dict(PRIVATE_HEADERS)
        if retry_after is not None:
            headers["Retry-After"] = str(int(retry_after + 0.999))
        if as_json:
            return JSONResponse({"ok": False, "error": error}, status_code=status, headers=headers)
        if status == 429:
            response = message("Too many attempts", 429, paragraphs=[error])
        else:
            response = subscribe_form(status=status, email=(fields or {}).get("email", ""),
                                      name=(fields or {}).get("name", ""), error=error)
        response.headers.update(headers)
        return response

    @router.post("/subscribe")
    async def subscribe(request: Request, background: BackgroundTasks) -> Response:
        as_json = "json" in request.headers.get("content-type", "").lower()
        wait = limiter.hit(client_key(request))
        if wait is not None:
            return refused(as_json, 429, "Too many signup attempts from your network. Please try "
                                         "again in a few minutes.", retry_after=wait)
        try:
            fields, as_json = await read_fields(request)
        except _BadInput as exc:
            return refused(as_json, 400, str(exc))
        if fields[HONEYPOT_FIELD].strip():
            return accepted(as_json)  # a bot: look successful, do nothing
        try:
            email = lifecycle.normalize_email(fields["email"])
            name = lifecycle.clean_name(fields["name"])
        except lifecycle.InvalidEmail:
            return refused(as_json, 400, "Please enter a valid email address.", fields)
        except lifecycle.InvalidName as exc:
            return refused(as_json, 400, f"Please check your name: {exc}.", fields)
        pending = await run_in_threadpool(register, email, name)
        if pending is not None:
            background.add_task(deliver_confirmation, *pending)
        return accepted(as_json)

    # --- confirmation ----------------------------------------------------------------------------

    @router.get("/confirm/{token}", response_class=HTMLResponse)
    def confirm(token: str) -> HTMLResponse:
        with unit_of_work() as session:
            try:
                subscriber = holder(session, token, "confirm", lock=True)
            except BadToken:
                return bad_link()
            if subscriber is None:
                return message("We could not find this signup", 404, paragraphs=[
                    "The address may have been removed from the list since. You can sign up "
                    "again."], link=("Sign up", f"{links.base_url}/subscribe"))
            try:
                lifecycle.confirm(session, subscriber, at=clock())
            except lifecycle.ForbiddenTransition:
                return message("This confirmation link is no longer valid", 409, paragraphs=[
                    "The subscription changed after this link was sent. To subscribe, sign up "
                    "again and use the link in the new email."],
                    link=("Sign up", f"{links.base_url}/subscribe"))
        return message("You're subscribed", paragraphs=[
            f"Thanks for confirming. {site_name} arrives once a week; every issue has a "
            "one-click unsubscribe link at the bottom."])

    # --- unsubscribe -----------------------------------------------------------------------------

    def resubscribe_link(token: str) -> tuple[str, str]:
        return ("Changed your mind? Subscribe again", f"{links.base_url}/subscribe?t={token}")

    def not_on_list() -> HTMLResponse:
        return message("You're not on the list", paragraphs=[
            "This address is no longer on our list, so it will not receive any more email "
            "from us."])

    @router.get("/u/{token}", response_class=HTMLResponse)
    def unsubscribe_page(token: str) -> HTMLResponse:
        """A page with one button. Changes nothing: link scanners GET every link they see."""
        with new_session() as session:
            try:
                subscriber = holder(session, token, "unsubscribe")
            except BadToken:
                return bad_link()
            if subscriber is None:
                return not_on_list()
            if subscriber.status in ("pending", "active"):
                return page("unsubscribe.html.j2", email=subscriber.email)
            return unsubscribed(subscriber.status, token)

    def unsubscribed(status: str, token: str) -> HTMLResponse:
        if status == "unsubscribed":
            return message("You're unsubscribed", paragraphs=[
                f"You will not receive {site_name} any more."], link=resubscribe_link(token))
        return message("You will not receive any more email", paragraphs=[
            "This address is no longer sent anything from this list."])

    @router.post("/u/{token}", response_class=HTMLResponse)
    def unsubscribe(token: str) -> HTMLResponse:
        """RFC 8058 one-click and the page's button alike: the token in the URL is the authority,
        the body (`List-Unsubscribe=One-Click`) is not needed. 200, no redirect, no cookie."""
        with unit_of_work() as session:
            try:
                subscriber, issue_id = holder_and_issue(session, token, "unsubscribe", lock=True)
            except BadToken:
                return bad_link()
            if subscriber is None:
                return not_on_list()
            try:
                # Counted toward the issue whose link or List-Unsubscribe header was used.
                lifecycle.unsubscribe(session, subscriber, at=clock(), issue_id=issue_id)
            except lifecycle.ForbiddenTransition:
                pass  # bounced or complained: mailing already stopped, and must stay so
            status = subscriber.status
        return unsubscribed(status, token)

    # --- view in browser -------------------------------------------------------------------------

    @router.get("/issues/{key}", response_class=HTMLResponse)
    def view_issue(key: str, t: str | None = None) -> HTMLResponse:
        if not t:
            return bad_link()
        with new_session() as session:
            try:
                subscriber = holder(session, t, "view")
            except BadToken:
                return bad_link()
            subscriber_id = int(subscriber.id) if subscriber is not None else None
        html = load_issue_html(key, subscriber_id) if subscriber_id is not None else None
        if html is None:
            return message("Issue not found", 404, paragraphs=[
                "There is no issue under this address, or it is not available any more."])
        headers = dict(PRIVATE_HEADERS, **{"Content-Security-Policy": _ISSUE_CSP})
        return HTMLResponse(html, headers=headers)

    return router
