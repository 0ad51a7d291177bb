"""The operator dashboard at `/admin`: issues and their outcomes, a running send's progress,
list growth, clicks per issue and per link, and pause/resume for a send.

Who may see it is decided per request: a client on loopback always; anyone else only when
`DIGEST_ADMIN_PASSWORD` is set and they have logged in (a signed, HttpOnly, Secure,
SameSite=Strict cookie; attempts rate-limited per client). Without the password every route
answers 404 beyond loopback, as if it did not exist. Pause and resume are POSTs that need a
token tied to the browser's cookie, a same-site Origin, and SameSite cookies.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import subprocess
import sys
from collections.abc import Callable
from urllib.parse import parse_qsl, urlsplit

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from digest.database import session_scope, utcnow
from digest.database.models import Issue
from digest.delivery import ledger
from digest.edition.render import templates_root
from digest.outcomes import report
from digest.settings import Settings
from digest.web import charts
from digest.web.access import client_address, is_local_operator
from digest.web.redirect import ClickRedirect
from subscribers.routes import RateLimiter

SESSION_COOKIE = "digest_admin"
CSRF_COOKIE = "digest_admin_csrf"
SESSION_AGE = 12 * 3600
FORM_LIMIT = 4096  # bytes: the forms here carry a token, an issue key or a password
LOGIN_ATTEMPTS = (5, 900.0)  # per client, per this many seconds
PAUSED_BY_OPERATOR = ("paused by the operator from the dashboard; resume it there or with "
                      "`digest resume`")


def launch_resume(issue_key: str) -> None:
    """Resume a paused send in its own process (`digest send --week KEY`), so it outlives the
    request and follows every rule of a send (the ledger, leases, the breaker)."""
    subprocess.Popen([sys.executable, "-c", "from digest.cli import app; app()", "send",
                      "--week", issue_key], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True)


class _Keys:
    def __init__(self, secret: bytes, password: str) -> None:
        self.session = hmac.new(secret, b"verdict-digest/admin/session", hashlib.sha256).digest()
        self.csrf = hmac.new(secret, b"verdict-digest/admin/csrf", hashlib.sha256).digest()
        # Sessions name the password they were opened with: changing it logs everyone out.
        tag = hmac.new(self.session, password.encode(), hashlib.sha256)
        self.password_tag = tag.hexdigest()[:16]
        self.password_digest = hashlib.sha256(password.encode()).digest()

    def session_cookie(self, now: float) -> str:
        body = f"{int(now):x}.{secrets.token_hex(8)}"
        return f"{body}.{self._mac(body)}"

    def _mac(self, body: str) -> str:
        return hmac.new(self.session, f"{body}.{self.password_tag}".encode(),
                        hashlib.sha256).hexdigest()[:32]

    def valid_session(self, cookie: str | None, now: float) -> bool:
        if not cookie or cookie.count(".") != 2:
            return False
        issued, nonce, mac = cookie.split(".")
        if not hmac.compare_digest(mac.encode(), self._mac(f"{issued}.{nonce}").encode()):
            return False
        try:
            return 0 <= now - int(issued, 16) <= SESSION_AGE
        except ValueError:
            return False

    def csrf_token(self, cookie: str) -> str:
        return hmac.new(self.csrf, cookie.encode(), hashlib.sha256).hexdigest()

    def password_ok(self, given: str) -> bool:
        return hmac.compare_digest(hashlib.sha256(given.encode()).digest(), self.password_digest)


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(str(templates_root() / "web")),
                      autoescape=select_autoescape(["j2", "html"]), trim_blocks=True,
                      lstrip_blocks=True)
    env.filters["pct"] = lambda v: f"{100 * v:.1f}%"
    env.filters["num"] = lambda v: f"{v:,}"
    return env


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(seconds)
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def create_admin(settings: Settings, engine: Engine, *, clicks: ClickRedirect | None = None,
                 clock: Callable[[], dt.datetime] = utcnow,
                 launcher: Callable[[str], None] = launch_resume,
                 login_limiter: RateLimiter | None = None, weeks: int = 12,
                 poll_ms: int = 3000) -> APIRouter:
    """The /admin routes. `launcher` starts a resumed send (a process of its own by default);
    `poll_ms` is how often the page asks for the send's progress."""
    router = APIRouter(prefix="/admin", include_in_schema=False)
    env = _environment()
    password = settings.admin_password.get_secret_value() if settings.admin_password else ""
    keys = _Keys(settings.signing_key(), password)
    limiter = login_limiter or RateLimiter(*LOGIN_ATTEMPTS, clock=lambda: clock().timestamp())

    def now_ts() -> float:
        return clock().timestamp()

    def allowed(request: Request) -> bool:
        if is_local_operator(request, settings):
            return True
        return bool(password) and keys.valid_session(request.cookies.get(SESSION_COOKIE),
                                                     now_ts())

    def gate(request: Request, *, page: bool = False) -> Response | None:
        """None when the request may go on; else the answer it gets."""
        if allowed(request):
            return None
        if not password:
            raise HTTPException(404)
        if page:
            return RedirectResponse("/admin/login", status_code=303)
        raise HTTPException(403, "log in first")

    def secure(request: Request) -> bool:
        """Secure cookies over HTTPS; an operator on loopback may use plain HTTP."""
        return request.url.scheme == "https"

    def csrf_cookie(request: Request) -> tuple[str, bool]:
        """The browser's CSRF cookie (its session cookie when logged in), and whether it is new."""
        session = request.cookies.get(SESSION_COOKIE)
        if session and keys.valid_session(session, now_ts()):
            return session, False
        mine = request.cookies.get(CSRF_COOKIE)
        if mine and len(mine) == 32:
            return mine, False
        return secrets.token_hex(16), True

    def same_origin(request: Request) -> bool:
        """A browser names the page a POST came from; it must be this site."""
        fetch_site = request.headers.get("sec-fetch-site")
        if fetch_site and fetch_site not in ("same-origin", "none"):
            return False
        origin = request.headers.get("origin") or request.headers.get("referer")
        if not origin:
            return True  # not a browser that says; the token still has to match
        given = urlsplit(origin)
        ours = {urlsplit(settings.base_url).netloc, request.headers.get("host", "")}
        return given.netloc in ours

    def check_csrf(request: Request, token: str) -> None:
        cookie, new = csrf_cookie(request)
        if new or not same_origin(request) or not hmac.compare_digest(
                token.encode(), keys.csrf_token(cookie).encode()):
            raise HTTPException(403, "this form has expired or came from another site; "
                                     "reload the dashboard and try again")

    def render(request: Request, name: str, status: int = 200, **context) -> HTMLResponse:
        cookie, new = csrf_cookie(request)
        html = env.get_template(name).render(
            site_name=settings.site_name, postal_address=settings.postal_address,
            csrf=keys.csrf_token(cookie), logged_in=bool(request.cookies.get(SESSION_COOKIE)),
            **context)
        response = HTMLResponse(html, status_code=status, headers={
            "Cache-Control": "no-store", "X-Frame-Options": "DENY",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                       "script-src 'unsafe-inline'; connect-src 'self'; "
                                       "img-src 'self' data:; form-action 'self'; "
                                       "frame-ancestors 'none'; base-uri 'none'",
            "Referrer-Policy": "same-origin"})
        if new:
            response.set_cookie(CSRF_COOKIE, cookie, httponly=True, secure=secure(request),
                                samesite="strict", path="/admin")
        return response

    def progress_view(session: Session) -> dict | None:
        issue = report.current_send(session)
        if issue is None:
            return None
        p = report.send_progress(session, issue, now=clock())
        data = p.as_dict()
        data["eta"] = _duration(p.eta_seconds)
        return data

    # --- pages -----------------------------------------------------------------------------------

    @router.get("", response_class=HTMLResponse)
    def dashboard(request: Request, done: str | None = None) -> Response:
        if (answer := gate(request, page=True)) is not None:
            return answer
        if clicks is not None:
            clicks.counter.flush()
        with Session(engine) as session:
            outcomes = report.issue_outcomes(session, last=weeks)
            growth = report.list_growth(session, now=clock(), tz=settings.tz, weeks=weeks)
            progress = progress_view(session)
        labels = [g.week for g in growth]
        growth_chart = charts.bar_chart(
            labels, [charts.Series("signups", [g.signups for g in growth], charts.PALETTE[0]),
                     charts.Series("unsubscribes", [g.unsubscribes for g in growth],
                                   charts.PALETTE[1]),
                     charts.Series("bounces and complaints", [g.bounces for g in growth],
                                   charts.PALETTE[3])],
            title="Signups, unsubscribes and bounces per week",
            description="Per week: " + "; ".join(
                f"{g.week}: {g.signups} signups, {g.unsubscribes} unsubscribes, {g.bounces} "
                "bounces" for g in growth))
        active_chart = charts.bar_chart(
            labels, [charts.Series("active subscribers", [g.active for g in growth],
                                   charts.PALETTE[2])],
            title="Active subscribers at the end of each week",
            description="; ".join(f"{g.week}: {g.active}" for g in growth))
        chronological = list(reversed(outcomes))
        clicks_chart = charts.bar_chart(
            [o.key for o in chronological],
            [charts.Series("clicks by people", [o.clicks for o in chronological],
                           charts.PALETTE[0]),
             charts.Series("machine clicks", [o.machine_clicks for o in chronological],
                           charts.PALETTE[1])],
            title="Clicks per issue",
            description="; ".join(f"{o.key}: {o.clicks} by people, {o.machine_clicks} by "
                                  "machines" for o in chronological)) if outcomes else None
        return render(request, "admin.html.j2", title="Dashboard", outcomes=outcomes,
                      growth=growth, growth_chart=growth_chart, active_chart=active_chart,
                      clicks_chart=clicks_chart, progress=progress, done=done, poll_ms=poll_ms,
                      tracking=settings.click_tracking)

    @router.get("/issues/{key}", response_class=HTMLResponse)
    def issue_page(request: Request, key: str) -> Response:
        if (answer := gate(request, page=True)) is not None:
            return answer
        if clicks is not None:
            clicks.counter.flush()
        with Session(engine) as session:
            found = report.issue_outcomes(session, keys=[key])
        if not found:
            raise HTTPException(404)
        outcome = found[0]
        chart = charts.hbar_chart(
            [(link.label, link.human, link.machine) for link in outcome.links],
            title=f"Clicks per comparison in {outcome.key}",
            description="; ".join(f"{l.label}: {l.human} by people, {l.machine} by machines"
                                  for l in outcome.links)) if outcome.links else None
        return render(request, "admin_issue.html.j2", title=f"Issue {outcome.key}",
                      outcome=outcome, chart=chart, tracking=settings.click_tracking)

    @router.get("/progress.json")
    def progress_json(request: Request) -> JSONResponse:
        gate(request)
        with Session(engine) as session:
            progress = progress_view(session)
        return JSONResponse({"send": progress}, headers={"Cache-Control": "no-store"})

    # --- pause and resume ------------------------------------------------------------------------

    async def _form(request: Request) -> dict[str, str]:
        """The posted form, refused (413) past 4 KB before more of it is read."""
        length = request.headers.get("content-length", "")
        if length and (not length.isdigit() or int(length) > FORM_LIMIT):
            raise HTTPException(413)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > FORM_LIMIT:
                raise HTTPException(413)
        return dict(parse_qsl(body.decode("utf-8", "replace")))

    async def operator_form(request: Request) -> str:
        """A pause/resume post from the dashboard: the operator checked, its CSRF token checked;
        the issue key it names."""
        gate(request)
        form = await _form(request)
        check_csrf(request, form.get("csrf", ""))
        return form.get("issue", "")

    def named_issue(session: Session, key: str) -> Issue:
        issue = session.exec(select(Issue).where(Issue.key == key)).first()
        if issue is None:
            raise HTTPException(404)
        return issue

    @router.post("/pause")
    async def pause(request: Request) -> Response:
        key = await operator_form(request)
        with session_scope(engine) as session:
            issue = named_issue(session, key)
            paused = ledger.pause_send(session, issue.id, reason=PAUSED_BY_OPERATOR)
        return RedirectResponse(f"/admin?done={'paused' if paused else 'not-sending'}",
                                status_code=303)

    @router.post("/resume")
    async def resume(request: Request) -> Response:
        key = await operator_form(request)
        with Session(engine) as session:
            issue = named_issue(session, key)
            status = issue.status
        if status != "paused":
            return RedirectResponse("/admin?done=not-paused", status_code=303)
        launcher(issue.key)
        return RedirectResponse("/admin?done=resumed", status_code=303)

    # --- login (only beyond loopback, only with a password) -------------------------------------

    @router.get("/login", response_class=HTMLResponse)
    def login_page(request: Request) -> Response:
        if not password:  # loopback needs no login; elsewhere there is nothing here
            if is_local_operator(request, settings):
                return RedirectResponse("/admin", status_code=303)
            raise HTTPException(404)
        return render(request, "admin_login.html.j2", title="Operator login", error=None)

    @router.post("/login")
    async def login(request: Request) -> Response:
        if not password:
            raise HTTPException(404)
        wait = limiter.hit(str(client_address(request, settings)))
        if wait is not None:
            return render(request, "admin_login.html.j2", status=429, title="Operator login",
                          error=f"Too many attempts. Try again in {int(wait // 60) + 1} min.")
        form = await _form(request)
        check_csrf(request, form.get("csrf", ""))
        if not keys.password_ok(form.get("password", "")):
            return render(request, "admin_login.html.j2", status=401, title="Operator login",
                          error="That password is not right.")
        response = RedirectResponse("/admin", status_code=303)
        response.set_cookie(SESSION_COOKIE, keys.session_cookie(now_ts()), max_age=SESSION_AGE,
                            httponly=True, secure=True, samesite="strict", path="/admin")
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        gate(request)
        form = await _form(request)
        check_csrf(request, form.get("csrf", ""))
        response = RedirectResponse("/admin/login" if password else "/admin", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/admin", secure=True, httponly=True,
                               samesite="strict")
        return response

    return router


__all__ = ["PAUSED_BY_OPERATOR", "create_admin", "launch_resume"]
