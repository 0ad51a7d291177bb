"""The email and the preview site in headless Chromium: columns side by side at 800 px, stacked
at 375 px with nothing scrolling sideways; screenshots go to the artifacts folder."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from sqlmodel import Session

from browser_support import NEEDS_CHROMIUM, served
from digest.web.preview import create_app
from digest.edition.render import render_issue
from digest.edition.weeks import Edition
from factories import make_comparison, make_tool, sample_comparisons, store

pytestmark = NEEDS_CHROMIUM
EDITION = Edition(2026, 47)
UTC = dt.timezone.utc


def _comparisons():
    """Three ordinary cards and one with long, hostile, unbreakable text."""
    long_word = "Hyperconfigurable" * 4
    odd = make_comparison(
        make_tool("odd", f'<script>x</script> "{long_word}" & Co 🚀',
                  tagline="A tagline " * 12, scores=(None, None, None, None)),
        make_tool("even", "Even Tool", verdict="skip", ship=1, skip=3),
        published_at=dt.datetime(2026, 11, 20, tzinfo=UTC), url="https://x.test/" + "a" * 120)
    return [*sample_comparisons(3), odd]


@pytest.fixture(scope="module")
def email_file(artifacts_dir) -> Path:
    from digest.settings import load_settings

    conf = load_settings(base_url="https://digest.example.test", timezone="Europe/Berlin")
    issue = render_issue(_comparisons(), edition=EDITION, window=EDITION.window(conf.tz),
                         settings=conf)
    path = artifacts_dir / "email-2026-W47.html"
    path.write_text(issue.html, encoding="utf-8")
    return path


def _open(browser, url, width, **options):
    page = browser.new_page(viewport={"width": width, "height": 900}, **options)
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(url)
    return page, requests


def _boxes(page, selector):
    return [handle.bounding_box() for handle in page.query_selector_all(selector)]


@pytest.mark.parametrize("width, scheme", [(375, "light"), (800, "light"), (800, "dark")])
def test_email_layout(browser, email_file, artifacts_dir, width, scheme):
    page, requests = _open(browser, email_file.as_uri(), width, color_scheme=scheme)
    try:
        page.screenshot(path=str(artifacts_dir / f"email-{width}-{scheme}.png"), full_page=True)
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        firsts, seconds = _boxes(page, ".col:first-child .box"), _boxes(page, ".col:last-child .box")
        assert len(firsts) == len(seconds) == 4
        # Every tool's community line and vote links are readable (the pair's wrapper sets
        # font-size 0, so text outside a tool's box would take no space and show nothing).
        community = page.locator(".box p", has_text=re.compile(r"\bvotes?\b"))
        for selector, found in (("community line", community), ("vote link", page.locator(".vote a"))):
            assert found.count() >= 8
            for i in range(found.count()):
                assert found.nth(i).is_visible(), selector
                size = found.nth(i).evaluate("el => parseFloat(getComputedStyle(el).fontSize)")
                assert size >= 12, (selector, size)
        for a, b in zip(firsts, seconds):
            assert a["x"] >= 0 and b["x"] + b["width"] <= width
            if width == 375:
                assert b["y"] >= a["y"] + a["height"], "phone: the second tool goes below the first"
                assert a["width"] > 0.8 * 340  # and each takes the full column
            else:
                assert abs(a["y"] - b["y"]) < 1, "desktop: the tools sit side by side"
                assert b["x"] >= a["x"] + a["width"]
        card = page.query_selector(".pair")
        background = card.evaluate("el => getComputedStyle(el).backgroundColor")
        assert background == ("rgb(23, 27, 36)" if scheme == "dark" else "rgb(255, 255, 255)")
        assert all(url.startswith(("file:", "data:")) for url in requests), requests
    finally:
        page.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_preview_site_in_a_browser(browser, engine, settings, artifacts_dir):
    with Session(engine, expire_on_commit=False) as session:
        store(session, _comparisons())
    app = create_app(engine, settings, clock=lambda: dt.datetime(2026, 11, 25, tzinfo=UTC))
    with served(lambda _: app) as base:
        page, requests = _open(browser, f"{base}/week/2026-W47", 1300)
        page.wait_for_load_state("load")
        frames = page.query_selector_all("iframe")
        assert [f.evaluate("el => el.clientWidth") for f in frames] == [800, 375]
        phone = page.frames[2]
        assert phone.evaluate("document.documentElement.scrollWidth") <= 375
        assert "Quillmark vs Parsec Notes" in phone.content()
        page.screenshot(path=str(artifacts_dir / "preview-site.png"), full_page=False)
        assert all(u.startswith(f"{base}/") for u in requests), requests
        page.close()
