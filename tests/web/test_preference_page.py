"""The preference page and "stop sending me {category}" through the real app, on both databases:
offered categories, save and reload, no change from GET, forged and foreign tokens."""

from __future__ import annotations

import datetime as dt
import html
import re

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from digest.web.app import create_app
from factories import UTC, sample_comparisons, store
from subscribers import lifecycle, preferences
from subscribers.links import Links
from subscribers.models import Subscriber
from subscribers.preferences import Preferences
from subscribers.tokens import Signer

NOW = dt.datetime(2026, 11, 24, 9, tzinfo=UTC)


@pytest.fixture
def client(settings, engine):
    with TestClient(create_app(settings, engine, clock=lambda: NOW), follow_redirects=False) as c:
        yield c


@pytest.fixture
def reader(session):
    store(session, sample_comparisons(4, start=NOW - dt.timedelta(days=3)))
    # An old comparison whose category has not been published for months is not offered.
    old = sample_comparisons(1, start=NOW - dt.timedelta(weeks=20), prefix="old-")
    old[0].tool_a.category = old[0].tool_b.category = "Retired Category"
    store(session, old)
    subscriber = lifecycle.add(session, "ada@example.com", confirmed=True, at=NOW)
    session.commit()
    return subscriber


@pytest.fixture
def links(settings) -> Links:
    return Links(settings.base_url, Signer(settings.signing_key()))


def path(url: str) -> str:
    return url.removeprefix("https://digest.example.test")


def stored(engine, subscriber_id: int) -> Preferences:
    with Session(engine) as session:
        return preferences.of(session.get(Subscriber, subscriber_id))


def test_the_page_offers_recent_categories_and_the_unsubscribe(client, reader, links):
    page = client.get(path(links.preferences(reader.id, reader.email)))
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    offered = re.findall(r'<label for="cat-([a-z0-9-]+)">', page.text)
    assert offered and "retired-category" not in offered
    assert 'name="ship_only"' in page.text and "/u/" in page.text
    assert re.search(r'<legend>Categories</legend>', page.text)


def test_save_then_reload_keeps_the_choices(client, reader, links, engine):
    url = path(links.preferences(reader.id, reader.email))
    offered = re.findall(r'<label for="cat-([a-z0-9-]+)">([^<]+)</label>', client.get(url).text)
    slug, name = offered[0][0], html.unescape(offered[0][1])
    answer = client.post(url, data={"category": [slug], "ship_only": "true"})
    assert answer.status_code == 200 and "Saved" in answer.text
    assert stored(engine, reader.id) == Preferences((name,), True)
    again = client.get(url).text
    assert f'id="cat-{slug}" name="category" value="{slug}" checked' in again
    assert 'id="ship-only" name="ship_only" value="true" checked' in again
    client.post(url, data={})  # nothing ticked: every category again
    assert stored(engine, reader.id) == Preferences()


def test_unknown_categories_in_a_post_are_ignored(client, reader, links, engine):
    client.post(path(links.preferences(reader.id, reader.email)), data={"category": ["<script>", "nope"]})
    assert stored(engine, reader.id) == Preferences()


def test_stop_sending_one_category_needs_a_post(client, reader, links, engine):
    base = path(links.preferences(reader.id, reader.email))
    offered = re.findall(r'<label for="cat-([a-z0-9-]+)">', client.get(base).text)
    ask = client.get(f"{base}/drop/{offered[0]}")
    assert ask.status_code == 200 and 'method="post"' in ask.text
    assert stored(engine, reader.id) == Preferences()  # the GET changed nothing
    done = client.post(f"{base}/drop/{offered[0]}")
    assert done.status_code == 200
    kept = {preferences.category_slug(c) for c in stored(engine, reader.id).categories}
    assert kept == set(offered) - {offered[0]}
    assert client.post(f"{base}/drop/not-a-category").status_code == 404


def test_forged_and_foreign_tokens_change_nothing(client, reader, links, settings, engine):
    signer = Signer(settings.signing_key())
    good = links.preferences(reader.id, reader.email).rsplit("/", 1)[1]
    for token in (good[:-2] + "xx", signer.sign("unsubscribe", reader.id, reader.email),
                  signer.sign("view", reader.id, reader.email),
                  signer.sign("preferences", reader.id, "someone.else@example.com"),
                  Signer(b"another-key-0123456789abc").sign("preferences", reader.id,
                                                           reader.email), "garbage"):
        assert client.get(f"/p/{token}").status_code == 400
        assert client.post(f"/p/{token}", data={"ship_only": "true"}).status_code == 400
        assert client.post(f"/p/{token}/drop/developer-tools").status_code == 400
    assert stored(engine, reader.id) == Preferences()


def test_an_oversized_form_is_refused_before_it_is_parsed(client, reader, links, engine):
    answer = client.post(path(links.preferences(reader.id, reader.email)), content=b"category=x&" * 4000,
                         headers={"content-type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 413
    assert stored(engine, reader.id) == Preferences()


def test_an_unsubscribed_reader_is_sent_to_the_signup_page(client, reader, links, session):
    lifecycle.unsubscribe(session, session.get(Subscriber, reader.id), at=NOW)
    session.commit()
    assert client.get(path(links.preferences(reader.id, reader.email))).status_code == 400
