"""The archive and the vote flow in headless Chromium at phone and desktop widths, against the
real app served by uvicorn on loopback: nothing scrolls sideways, the vote needs the button
press, and screenshots go to the artifacts folder."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlmodel import Session, select

from browser_support import NEEDS_CHROMIUM, served
from digest.database.models import Vote
from digest.edition.compose import compose_issue
from digest.edition.weeks import Edition
from digest.web.app import create_app
from factories import UTC, sample_comparisons, store
from subscribers import lifecycle
from subscribers.links import Links
from subscribers.tokens import Signer

pytestmark = NEEDS_CHROMIUM
NOW = dt.datetime(2026, 12, 1, 9, tzinfo=UTC)


@pytest.fixture
def site(engine, settings):
    """Two sent weeks and a reader, served by uvicorn on a free loopback port."""
    with Session(engine, expire_on_commit=False) as session:
        for n, week in enumerate((Edition(2026, 46), Edition(2026, 47))):
            start = week.window(settings.tz).start + dt.timedelta(days=1)
            store(session, sample_comparisons(3, start=start, prefix=f"w{n}-"))
            issue = compose_issue(session, settings, week.key, now=NOW)
            issue.status, issue.sent_at = "sent", week.window(settings.tz).end
            session.add(issue)
        reader = lifecycle.add(session, "reader@example.com", confirmed=True, at=NOW)
        session.commit()
    with served(lambda base: create_app(settings.model_copy(update={"base_url": base}), engine,
                                        clock=lambda: NOW)) as base:
        yield base, issue, reader


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("width", [375, 1280])
def test_archive_and_vote_flow(browser, site, settings, engine, artifacts_dir, width):
    base, issue, reader = site
    page = browser.new_page(viewport={"width": width, "height": 900})
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    try:
        page.goto(f"{base}/archive")
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        assert page.locator("ol.issues li").count() == 2
        page.screenshot(path=str(artifacts_dir / f"archive-{width}.png"), full_page=True)

        page.click(f"a[href$='/archive/{issue.key}']")
        page.wait_for_load_state("load")
        assert page.url.endswith(f"/archive/{issue.key}")
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        page.screenshot(path=str(artifacts_dir / f"archive-issue-{width}.png"), full_page=True)

        signer = Signer(settings.signing_key())
        vote_base = Links(base, signer).vote(issue.id, reader.id, reader.email)
        page.goto(f"{vote_base}/w1-tool-0/ship")
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        assert re.search("Would you ship", page.inner_text("h1"))
        page.screenshot(path=str(artifacts_dir / f"vote-confirm-{width}.png"), full_page=True)
        with Session(engine) as session:
            assert session.exec(select(Vote)).all() == []  # opening the link did nothing
        page.click("button[type=submit]")
        page.wait_for_load_state("load")
        assert "you said ship" in page.inner_text("h1").lower()
        page.screenshot(path=str(artifacts_dir / f"vote-done-{width}.png"), full_page=True)
        with Session(engine) as session:
            assert [(v.subscriber_id, v.ship) for v in session.exec(select(Vote))] == \
                [(reader.id, True)]
        assert all(url.startswith(base) for url in requests), requests
    finally:
        page.close()
