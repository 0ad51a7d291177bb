"""Everything a reader or an operator sees passes an axe-core audit in Chromium (0 critical, 0
serious; the rest listed in the warnings): the issue in light and dark at phone and desktop
widths, the confirmation email, and every page of the web app, served by uvicorn on loopback.
Also what axe cannot judge: nothing scrolls sideways, no word breaks in the middle at 320 px,
a Skip tool looks different from a Ship tool, the preview's week picker waits for its button.
Screenshots of the issue at 320, 375 and 800 px, light and dark, go to the artifacts folder.

A page added later gets its audit with one line: `assert_accessible(page, "name")` (tests/web/
axe.py), inside `site` below or a test of its own."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlmodel import Session

from axe import assert_accessible, audit
from browser_support import NEEDS_CHROMIUM, served
from digest.delivery.confirmation import render_confirmation
from digest.edition.compose import compose_issue
from digest.edition.render import render_issue
from digest.edition.weeks import Edition
from digest.settings import load_settings
from digest.web.app import create_app
from factories import UTC, make_comparison, make_tool, sample_comparisons, store
from subscribers import lifecycle
from subscribers.links import Links
from subscribers.tokens import Signer

pytestmark = NEEDS_CHROMIUM
EDITION = Edition(2026, 47)
NOW = dt.datetime(2026, 12, 1, 9, tzinfo=UTC)
SCHEMES = ("light", "dark")


@pytest.fixture(scope="module")
def conf():
    return load_settings(base_url="https://digest.example.com", timezone="Europe/Berlin",
                         postal_address="Verdict Digest, 1 Example Street, 10115 Berlin")


def _week() -> list:
    """A week like a real one (ship and skip tools) plus a tool with no verdict or scores."""
    odd = make_comparison(
        make_tool("odd", "Unscored Tool", verdict=None, ship=0, skip=0,
                  scores=(None, None, None, None)),
        make_tool("even", "Even Tool", verdict="skip", ship=1, skip=3),
        published_at=dt.datetime(2026, 11, 20, tzinfo=UTC),
        url="https://verdicts.example.com/compare/odd-vs-even")
    return [*sample_comparisons(7), odd]


@pytest.fixture(scope="module")
def issue_file(conf, artifacts_dir) -> Path:
    issue = render_issue(_week(), edition=EDITION, window=EDITION.window(conf.tz), settings=conf)
    path = artifacts_dir / "a11y-issue-2026-W47.html"
    path.write_text(issue.html, encoding="utf-8")
    return path


def _open(browser, url: str, width: int, scheme: str = "light"):
    page = browser.new_page(viewport={"width": width, "height": 900}, color_scheme=scheme)
    page.goto(url)
    return page


def _fits(page, width: int) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= width, "scrolls sideways"


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("width", [320, 375, 800])
def test_issue_passes_the_audit(browser, issue_file, artifacts_dir, width, scheme):
    page = _open(browser, issue_file.as_uri(), width, scheme)
    try:
        page.screenshot(path=str(artifacts_dir / f"issue-{width}-{scheme}.png"), full_page=True)
        _fits(page, width)
        assert_accessible(page, f"issue at {width} px, {scheme}")
        # Each stat label stays on one line: a word broken in the middle reads as two.
        lines = page.evaluate("""() => [...document.querySelectorAll('.stat')].map(cell => {
            const label = [...cell.childNodes].find(n => n.nodeType === 3 && n.data.trim());
            const range = document.createRange(); range.selectNodeContents(label);
            const tops = new Set([...range.getClientRects()].map(r => Math.round(r.top)));
            return [label.data.trim(), tops.size];
        })""")
        assert [label for label, _ in lines] == ["comparisons", "tools", "ship", "skip"]
        assert all(count == 1 for _, count in lines), lines
    finally:
        page.close()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_skip_and_ship_tools_differ_at_a_glance(browser, issue_file, scheme):
    """The box's left edge and the score bar take the verdict's colour, and the heading names
    the verdict: a reader does not have to find a small pill to tell Skip from Ship."""
    page = _open(browser, issue_file.as_uri(), 800, scheme)
    try:
        style = page.evaluate("""() => Object.fromEntries(['ship', 'skip', 'none'].map(v => {
            const box = document.querySelector('.box-' + v);
            const bar = box.querySelector('.bar td[class]');
            return [v, {edge: getComputedStyle(box).borderLeftColor,
                        width: getComputedStyle(box).borderLeftWidth,
                        bar: bar && getComputedStyle(bar).backgroundColor,
                        heading: box.querySelector('h3').innerText}];
        }))""")
        ship, skip, none = style["ship"], style["skip"], style["none"]
        assert ship["edge"] != skip["edge"] and ship["bar"] != skip["bar"]
        assert ship["width"] == skip["width"] == "4px" and none["width"] == "1px"
        assert skip["heading"].lower().endswith("skip") and ship["heading"].lower().endswith("ship")
        assert none["bar"] is None and "no verdict" in none["heading"].lower()
        if scheme == "light":
            assert (skip["edge"], skip["bar"]) == ("rgb(185, 28, 28)",) * 2
            assert (ship["edge"], ship["bar"]) == ("rgb(21, 128, 61)",) * 2
        # Eight links that each say which comparison they open.
        names = page.evaluate("""() => [...document.querySelectorAll('a')]
            .filter(a => a.textContent.startsWith('Read the full comparison'))
            .map(a => a.getAttribute('aria-label'))""")
        assert len(names) == 8 and len(set(names)) == 8
        assert "Read the full comparison: Unscored Tool vs Even Tool" in names
    finally:
        page.close()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_confirmation_email_passes_the_audit(browser, conf, artifacts_dir, scheme):
    mail = render_confirmation(conf, name=None, confirm_url="https://digest.example.com/confirm/x")
    path = artifacts_dir / "a11y-confirmation.html"
    path.write_text(mail.html, encoding="utf-8")
    page = _open(browser, path.as_uri(), 375, scheme)
    try:
        _fits(page, 375)
        assert_accessible(page, f"confirmation email, {scheme}")
    finally:
        page.close()


@pytest.fixture
def site(engine, settings):
    """A sent issue, a week before it with content, a pending and an active reader, and the
    web app on a loopback port."""
    with Session(engine, expire_on_commit=False) as session:
        start = EDITION.window(settings.tz).start + dt.timedelta(days=1)
        store(session, sample_comparisons(3, start=start))
        earlier = EDITION.shift(-1).window(settings.tz).start + dt.timedelta(days=1)
        store(session, sample_comparisons(2, start=earlier, prefix="w46-"))  # a week to pick
        issue = compose_issue(session, settings, EDITION.key, now=NOW)
        issue.status, issue.sent_at = "sent", EDITION.window(settings.tz).end
        session.add(issue)
        pending = lifecycle.add(session, "new@example.com", at=NOW)
        reader = lifecycle.add(session, "reader@example.com", confirmed=True, at=NOW)
        session.commit()
    with served(lambda base: create_app(settings.model_copy(update={"base_url": base}), engine,
                                        clock=lambda: NOW)) as base:
        links = Links(base, Signer(settings.signing_key(), clock=lambda: NOW.timestamp()))
        yield base, links, issue, pending, reader


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_web_page_passes_the_audit(browser, site, artifacts_dir, scheme):
    base, links, issue, pending, reader = site
    page = browser.new_page(viewport={"width": 375, "height": 900}, color_scheme=scheme)

    def check(name: str, *, status: int = 200, frames: bool = False) -> None:
        _fits(page, 375)
        assert page.locator("header").count() and page.locator("main").count() == 1, name
        page.screenshot(path=str(artifacts_dir / f"a11y-{name}-{scheme}.png"), full_page=True)
        assert_accessible(page, f"{name}, {scheme}", frames=frames)

    try:
        assert page.goto(f"{base}/subscribe").status == 200
        check("subscribe")
        page.fill("#email", "not an address")
        page.click("button[type=submit]")
        assert page.locator(".error").count() == 1
        check("subscribe-error")

        assert page.goto(links.confirm(pending.id, pending.email)).status == 200
        check("confirm")

        prefs = links.preferences(reader.id, reader.email)
        assert page.goto(prefs).status == 200
        check("preferences")
        page.click("button[type=submit]")
        page.wait_for_load_state("load")
        check("preferences-saved")
        assert page.goto(f"{prefs}/drop/developer-tools").status == 200
        check("drop-category")

        # "view in browser"
        assert page.goto(links.view(EDITION.key, reader.id, reader.email)).status == 200
        _fits(page, 375)
        assert_accessible(page, f"issue in the browser, {scheme}")

        assert page.goto(links.unsubscribe(reader.id, reader.email)).status == 200
        check("unsubscribe")
        page.click("button[type=submit]")
        page.wait_for_load_state("load")
        check("unsubscribed")

        assert page.goto(f"{base}/archive").status == 200
        check("archive-index")
        assert page.goto(f"{base}/archive/{EDITION.key}").status == 200
        _fits(page, 375)
        assert_accessible(page, f"archive issue, {scheme}")

        assert page.goto(f"{links.vote(issue.id, pending.id, pending.email)}/tool-0/ship").status == 200
        check("vote")

        assert page.goto(f"{base}/preview/week/{EDITION.key}").status == 200
        check("preview")

        assert page.goto(f"{base}/admin").status == 200
        check("admin")
        assert page.goto(f"{base}/admin/issues/{EDITION.key}").status == 200
        check("admin-issue")
    finally:
        page.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_preview_week_picker_waits_for_its_button(browser, site):
    base, *_ = site
    page = _open(browser, f"{base}/preview/week/{EDITION.key}", 375)
    try:
        assert page.locator("select[name=week][onchange]").count() == 0
        page.select_option("select[name=week]", EDITION.shift(-1).key)
        assert page.url.endswith(f"/week/{EDITION.key}")  # choosing alone goes nowhere
        page.click("header form button")
        page.wait_for_url(f"**/week/{EDITION.shift(-1).key}")
    finally:
        page.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_audit_catches_low_contrast(browser, site):
    """The check can fail: the subscribe page's muted note in a pale grey is a serious finding."""
    base, *_ = site
    page = _open(browser, f"{base}/subscribe", 375)
    try:
        assert not audit(page).failing
        page.evaluate("document.querySelector('.note').style.color = '#9ca3af'")
        found = audit(page, "subscribe with a pale note").failing
        assert [v.rule for v in found] == ["color-contrast"], found
        with pytest.raises(AssertionError, match="color-contrast"):
            assert_accessible(page)
    finally:
        page.close()
