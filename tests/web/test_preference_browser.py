"""The preference page in Chromium at 375 px, against the real app on loopback: tick, save,
reload, the choices are kept; it fits the screen and works without JavaScript."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlmodel import Session

from browser_support import NEEDS_CHROMIUM, served
from digest.web.app import create_app
from factories import UTC, sample_comparisons, store
from subscribers import lifecycle, preferences
from subscribers.links import Links
from subscribers.models import Subscriber
from subscribers.tokens import Signer

pytestmark = NEEDS_CHROMIUM
NOW = dt.datetime(2026, 11, 24, 9, tzinfo=UTC)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_save_reload_and_the_choices_are_kept(browser, engine, settings, artifacts_dir):
    with Session(engine, expire_on_commit=False) as session:
        store(session, sample_comparisons(4, start=NOW - dt.timedelta(days=3)))
        reader = lifecycle.add(session, "ada@example.com", confirmed=True, at=NOW)
        session.commit()
    page = browser.new_page(viewport={"width": 375, "height": 800}, java_script_enabled=False)
    make = lambda base: create_app(settings.model_copy(update={"base_url": base}),  # noqa: E731
                                   engine, clock=lambda: NOW)
    try:
        with served(make) as base:
            url = Links(base, Signer(settings.signing_key())).preferences(reader.id, reader.email)
            page.goto(url)
            assert page.evaluate("document.documentElement.scrollWidth") <= 375
            boxes = page.locator("input[name=category]")
            assert boxes.count() >= 3
            first = boxes.nth(0).get_attribute("value")
            page.locator(f"label[for=cat-{first}]").click()  # the label ticks its box
            page.keyboard.press("Tab")
            page.check("#ship-only")
            page.screenshot(path=str(artifacts_dir / "preferences-375.png"), full_page=True)
            page.click("button[type=submit]")
            page.wait_for_load_state("load")
            assert "Saved" in page.inner_text("main")
            page.goto(url)  # reload from scratch
            assert page.is_checked(f"#cat-{first}") and page.is_checked("#ship-only")
            assert sum(boxes.nth(i).is_checked() for i in range(boxes.count())) == 1
            page.screenshot(path=str(artifacts_dir / "preferences-saved-375.png"), full_page=True)
            with Session(engine) as session:
                stored = preferences.of(session.get(Subscriber, reader.id))
            assert stored.ship_only and len(stored.categories) == 1
    finally:
        page.close()
