"""The operator dashboard against the real app: who may see it (loopback; elsewhere only with
the password and a genuine session cookie), CSRF on pause/resume, pausing a live send, and the
numbers it shows."""

from __future__ import annotations

import datetime as dt
import re
import threading

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from digest.database.models import Issue
from digest.delivery import ledger
from digest.settings import load_settings
from digest.web.admin import PAUSED_BY_OPERATOR, SESSION_COOKIE
from digest.web.app import create_app
from browser_support import needs_chromium, served
from delivery_support import RecordingProvider, add_subscribers, make_issue
from subscribers import lifecycle
from subscribers.routes import RateLimiter
from factories import SetClock

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
LOOPBACK = ("127.0.0.1", 40000)
REMOTE = ("203.0.113.7", 40000)
PASSWORD = "correct horse battery staple"


@pytest.fixture
def launched():
    return []


def app_for(settings, engine, launched, **overrides):
    conf = load_settings(**{**settings.model_dump(), **overrides}) if overrides else settings
    limiter = RateLimiter(3, 900, clock=lambda: NOW.timestamp())
    return create_app(conf, engine, clock=SetClock(NOW), public=True,
                      admin_options={"launcher": launched.append, "login_limiter": limiter})


def client(app, address, **kw) -> TestClient:
    return TestClient(app, client=address, base_url="https://digest.example.test",
                      follow_redirects=False, **kw)


@pytest.fixture
def sending_issue(engine):
    with Session(engine, expire_on_commit=False) as session:
        issue = make_issue(session)
        add_subscribers(engine, 5)
        acquired = ledger.acquire_issue(session, issue.id, sender="host:1:abc", now=NOW,
                                        lease=dt.timedelta(minutes=5))
        assert acquired.acquired
        session.commit()
    return issue


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)


PATHS = ["/admin", "/admin/progress.json", "/admin/issues/2026-W47", "/admin/login"]


@pytest.mark.parametrize("path", PATHS)
def test_without_a_password_the_dashboard_does_not_exist_beyond_loopback(settings, engine,
                                                                         launched, path):
    with client(app_for(settings, engine, launched), REMOTE) as remote:
        assert remote.get(path).status_code == 404
        assert remote.post("/admin/pause", data={"issue": "2026-W47"}).status_code == 404
        assert remote.post("/admin/login", data={"password": "x"}).status_code == 404


def test_loopback_sees_the_dashboard_without_a_login(settings, engine, launched, sending_issue):
    with client(app_for(settings, engine, launched), LOOPBACK) as local:
        page = local.get("/admin")
        assert page.status_code == 200
        assert "Operator dashboard" in page.text and "2026-W47" in page.text
        assert local.get("/admin/progress.json").json()["send"]["status"] == "sending"


def test_with_a_password_remote_clients_must_log_in_and_forged_cookies_fail(settings, engine,
                                                                            launched):
    app = app_for(settings, engine, launched, admin_password=PASSWORD)
    with client(app, REMOTE) as remote:
        assert remote.get("/admin").headers["location"] == "/admin/login"
        assert remote.get("/admin/progress.json").status_code == 403
        for forged in ["", "x", "65f00000.abcdef0123456789.0123456789abcdef0123456789abcdef",
                       "ffffffff.00.00"]:
            remote.cookies.set(SESSION_COOKIE, forged, domain="digest.example.test",
                               path="/admin")
            assert remote.get("/admin").status_code == 303, forged
            assert remote.get("/admin/progress.json").status_code == 403
        remote.cookies.clear()
        form = remote.get("/admin/login")
        token = csrf_of(form.text)
        wrong = remote.post("/admin/login", data={"csrf": token, "password": "guess"})
        assert wrong.status_code == 401
        assert SESSION_COOKIE not in wrong.headers.get("set-cookie", "")
        right = remote.post("/admin/login", data={"csrf": token, "password": PASSWORD})
        assert right.status_code == 303
        cookie = right.headers["set-cookie"]
        for flag in ("HttpOnly", "Secure", "SameSite=strict", "Path=/admin"):
            assert flag.lower() in cookie.lower(), cookie
        assert remote.get("/admin").status_code == 200
        # A cookie whose signature was altered by one character is refused.
        genuine = remote.cookies.get(SESSION_COOKIE)
        remote.cookies.clear()
        altered = genuine[:-1] + ("0" if genuine[-1] != "0" else "1")
        remote.cookies.set(SESSION_COOKIE, altered, domain="digest.example.test", path="/admin")
        assert remote.get("/admin").status_code == 303


def test_login_attempts_are_rate_limited(settings, engine, launched):
    app = app_for(settings, engine, launched, admin_password=PASSWORD)
    with client(app, REMOTE) as remote:
        token = csrf_of(remote.get("/admin/login").text)
        codes = [remote.post("/admin/login", data={"csrf": token, "password": f"no{i}"}).status_code
                 for i in range(3)]
        assert codes == [401, 401, 401]
        # Even the right password waits now: guessing cannot go on.
        assert remote.post("/admin/login",
                           data={"csrf": token, "password": PASSWORD}).status_code == 429


def test_pause_needs_the_csrf_token_and_a_same_site_origin(settings, engine, launched,
                                                          sending_issue):
    with client(app_for(settings, engine, launched), LOOPBACK) as local:
        token = csrf_of(local.get("/admin").text)
        assert local.post("/admin/pause", data={"issue": "2026-W47"}).status_code == 403
        assert local.post("/admin/pause", data={"issue": "2026-W47", "csrf": "0" * 64}
                          ).status_code == 403
        assert local.post("/admin/pause", data={"issue": "2026-W47", "csrf": token},
                          headers={"Origin": "https://evil.example.com"}).status_code == 403
        assert local.post("/admin/pause", data={"issue": "2026-W47", "csrf": token},
                          headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    with Session(engine) as session:
        assert session.get(Issue, sending_issue.id).status == "sending"
    # A token from another browser (another cookie) does not work either.
    with client(app_for(settings, engine, launched), LOOPBACK) as other:
        other.get("/admin")
        assert other.post("/admin/pause", data={"issue": "2026-W47", "csrf": token}
                          ).status_code == 403


def test_oversized_forms_are_refused_unread(settings, engine, launched, sending_issue):
    with client(app_for(settings, engine, launched), LOOPBACK) as local:
        token = csrf_of(local.get("/admin").text)
        big = local.post("/admin/pause", data={"issue": "2026-W47", "csrf": token,
                                               "pad": "x" * 5000})
        assert big.status_code == 413
    with Session(engine) as session:
        assert session.get(Issue, sending_issue.id).status == "sending"


def test_pause_then_resume(settings, engine, launched, sending_issue):
    with client(app_for(settings, engine, launched), LOOPBACK) as local:
        token = csrf_of(local.get("/admin").text)
        answer = local.post("/admin/pause", data={"issue": "2026-W47", "csrf": token},
                            headers={"Origin": "https://digest.example.test"})
        assert answer.status_code == 303 and answer.headers["location"] == "/admin?done=paused"
        with Session(engine) as session:
            issue = session.get(Issue, sending_issue.id)
            assert (issue.status, issue.status_reason) == ("paused", PAUSED_BY_OPERATOR)
        # The sender notices at its next lease renewal and stops.
        with Session(engine) as session:
            assert ledger.renew_issue_lease(session, sending_issue.id, sender="host:1:abc",
                                            now=NOW, lease=dt.timedelta(minutes=5)) is None
        page = local.get("/admin?done=paused").text
        assert "The send is paused." in page and "Resume the send" in page
        assert local.post("/admin/resume", data={"issue": "2026-W47", "csrf": token}
                          ).headers["location"] == "/admin?done=resumed"
        assert launched == ["2026-W47"]
        assert local.post("/admin/resume", data={"issue": "2026-W99", "csrf": token}
                          ).status_code == 404


def test_pages_are_not_framed_and_load_nothing_from_elsewhere(settings, engine, launched,
                                                             sending_issue):
    with client(app_for(settings, engine, launched), LOOPBACK) as local:
        page = local.get("/admin")
        assert page.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert not re.search(r'(src|href)="(https?:)?//', page.text)
        assert page.text.count("<svg") >= 2


# --- in a browser ---------------------------------------------------------------------------------

class GatedProvider(RecordingProvider):
    """Answers a batch only when the test lets it: the send proceeds step by step."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.gate = threading.Semaphore(0)

    def send_batch(self, letter, recipients, *, batch_key):
        assert self.gate.acquire(timeout=60), "the test never let this batch go"
        return super().send_batch(letter, recipients, batch_key=batch_key)


def _seed_history(engine, settings) -> None:
    """60 readers who joined over 12 weeks, 12 sent issues with counted links, some readers
    gone again."""
    from sqlalchemy import insert, update

    from digest.database.models import IssueLink, LinkClick
    from digest.delivery.send import send_issue
    from subscribers.models import Subscriber

    ids = add_subscribers(engine, 60)
    S = Subscriber.__table__
    with engine.begin() as conn:
        for i, sid in enumerate(ids):
            joined = SEED_START + dt.timedelta(days=7 * (i % 12), hours=i)
            conn.execute(update(S).where(S.c.id == sid).values(created_at=joined,
                                                               confirmed_at=joined))
    for week in range(12):
        key = f"2026-W{36 + week}"
        at = SEED_START + dt.timedelta(days=7 * week + 6)
        with Session(engine, expire_on_commit=False) as session:
            issue = make_issue(session, key)
        report = send_issue(engine, issue.id, RecordingProvider(batch_limit=20), settings,
                            clock=lambda at=at: at.timestamp(), sleep=lambda s: None)
        assert report.status == "sent"
        with engine.begin() as conn:
            conn.execute(insert(IssueLink.__table__), [
                {"issue_id": issue.id, "link_no": n, "kind": "comparison",
                 "label": f"Tool {n} vs Tool {n + 1}",
                 "url": f"https://verdicts.example.test/compare/{week}-{n}"} for n in range(1, 6)])
            conn.execute(insert(LinkClick.__table__), [
                {"issue_id": issue.id, "link_no": n, "human": (week * 3 + n * 7) % 23,
                 "machine": n % 3, "updated_at": at} for n in range(1, 6)])
        with Session(engine) as session:
            gone = ids[week * 2]
            email = f"reader{gone - ids[0] + 1}@example.com"
            lifecycle.apply_provider_event(session, email,
                                           "unsubscribed" if week % 3 else "bounced",
                                           at=at + dt.timedelta(hours=3))
            session.commit()


def _audit(browser, url: str, width: int, scheme: str = "light", html: str | None = None) -> None:
    """axe-core's WCAG A/AA rules on the page: contrast, landmarks, labels, names."""
    axe = pytest.importorskip("axe_playwright_python.sync_playwright")
    # The page's CSP forbids eval, which is how axe is injected: allowed for the audit only.
    page = browser.new_page(viewport={"width": width, "height": 900}, bypass_csp=True,
                            color_scheme=scheme)
    try:
        if html is not None:
            page.set_content(html)
        else:
            page.goto(url)
        results = axe.Axe().run(page, options={"runOnly": {"type": "tag", "values": [
            "wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]}})
        problems = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
                    for v in results.response["violations"]]
        assert problems == [], f"{url} at {width} px, {scheme}: {problems}"
    finally:
        page.close()


SEED_START = dt.datetime(2026, 8, 31, 9, 0, tzinfo=UTC)  # Monday of 2026-W36


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.browser
@needs_chromium
def test_dashboard_in_a_browser(browser, engine, settings, artifacts_dir):
    """12 sent issues and a running send at 1280 and 375 px: charts, nothing scrolling
    sideways, and the progress moving as batches are answered, without reloading the page."""
    from playwright.sync_api import expect

    from digest.delivery.send import send_issue

    _seed_history(engine, settings)
    with Session(engine, expire_on_commit=False) as session:
        running = make_issue(session, "2026-W48")
    provider = GatedProvider(batch_limit=5)
    resumed: list[str] = []
    sender = threading.Thread(target=send_issue, args=(engine, running.id, provider, settings),
                              daemon=True)
    sender.start()
    app = create_app(settings, engine, clock=lambda: dt.datetime.now(UTC),
                     admin_options={"launcher": resumed.append, "poll_ms": 150})
    with client(app_for(settings, engine, [], admin_password=PASSWORD), REMOTE) as remote:
        login_html = remote.get("/admin/login").text
        wrong = remote.post("/admin/login", data={"csrf": csrf_of(login_html), "password": "x"})
        assert wrong.status_code == 401 and "not right" in wrong.text
        login_error_html = wrong.text
    try:
        with served(lambda _: app) as base:
            for width in (1280, 375):
                page = browser.new_page(viewport={"width": width, "height": 900})
                requests: list[str] = []
                page.on("request", lambda request: requests.append(request.url))
                page.goto(f"{base}/admin")
                page.wait_for_selector("#progress")
                assert page.locator("svg.chart").count() >= 3
                assert page.locator("table.data tbody tr").count() >= 12 + 12
                assert page.evaluate("document.documentElement.scrollWidth") <= width
                done = page.locator('[data-field="done"]')
                before = int(done.inner_text().replace(",", ""))
                provider.gate.release()  # one more batch answered
                provider.gate.release()
                # The page's own script fetches the progress: no reload, no eval under its CSP.
                expect(done).not_to_have_text(str(before), timeout=15000)
                assert int(done.inner_text().replace(",", "")) > before
                assert page.locator('[data-field="status"]').inner_text() == "sending"
                page.screenshot(path=str(artifacts_dir / f"admin-{width}.png"), full_page=True)
                _audit(browser, f"{base}/admin", width)
                _audit(browser, f"{base}/admin", width, "dark")
                _audit(browser, f"{base}/admin/issues/2026-W40", width)
                _audit(browser, "login page", width, html=login_html)
                _audit(browser, "login page, wrong password", width, html=login_error_html)
                page.goto(f"{base}/admin/issues/2026-W40")
                assert page.locator("svg.chart").count() == 1
                assert page.evaluate("document.documentElement.scrollWidth") <= width
                page.screenshot(path=str(artifacts_dir / f"admin-issue-{width}.png"),
                                full_page=True)
                assert all(u.startswith(f"{base}/") for u in requests), requests
                page.close()
            # Pause and resume from the page itself: the CSRF cookie and token work in a browser.
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{base}/admin")
            page.get_by_role("button", name="Pause the send").click()
            page.wait_for_url("**/admin?done=paused")
            assert page.get_by_role("status").inner_text() == "The send is paused."
            assert page.locator('[data-field="status"]').inner_text() == "paused"
            page.get_by_role("button", name="Resume the send").click()
            page.wait_for_url("**/admin?done=resumed")
            assert resumed == ["2026-W48"]
            page.close()
    finally:
        for _ in range(20):
            provider.gate.release()
        sender.join(timeout=30)
    assert not sender.is_alive()
