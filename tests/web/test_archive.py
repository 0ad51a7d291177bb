"""The public archive and its Atom feeds, through the real app on both databases: only sent
issues, no reader data anywhere, paging, /latest, conditional GET, and feeds a feed reader parses."""

from __future__ import annotations

import datetime as dt
import re

import feedparser
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select  # noqa: F401

from digest.database.models import Issue
from digest.edition.compose import compose_issue
from digest.edition.weeks import Edition
from digest.web.app import create_app
from factories import UTC, SetClock, sample_comparisons, store
from subscribers import lifecycle
from subscribers.models import Subscriber

FIRST = Edition(2026, 40)


def week_start(edition: Edition) -> dt.datetime:
    return edition.window(dt.timezone.utc).start + dt.timedelta(days=1, hours=9)


def seed_issues(session: Session, settings, weeks: int, *, status: str = "sent",
                first: Edition = FIRST, per_week: int = 2) -> list[Issue]:
    issues = []
    for n in range(weeks):
        edition = first.shift(n)
        store(session, sample_comparisons(per_week, start=week_start(edition), prefix=f"{edition.key.lower()}-"))
        issue = compose_issue(session, settings, edition.key,
                              now=edition.window(settings.tz).end + dt.timedelta(hours=1))
        issue.status = status
        issue.sent_at = edition.window(settings.tz).end + dt.timedelta(hours=10)
        session.add(issue)
        session.commit()
        issues.append(issue)
    return issues


@pytest.fixture
def clock():
    return SetClock(dt.datetime(2027, 1, 10, 9, tzinfo=UTC))


@pytest.fixture
def client(settings, engine, clock):
    with TestClient(create_app(settings, engine, clock=clock), follow_redirects=False) as c:
        yield c


def test_archive_lists_only_sent_issues_newest_first(client, session, settings):
    sent = seed_issues(session, settings, 3)
    seed_issues(session, settings, 1, status="ready", first=FIRST.shift(5))
    seed_issues(session, settings, 1, status="paused", first=FIRST.shift(6))
    page = client.get("/archive")
    assert page.status_code == 200
    keys = re.findall(r'href="[^"]*/archive/(\d{4}-W\d\d)"', page.text)
    assert keys == [i.key for i in reversed(sent)]
    assert "2026-W45" not in page.text and "2026-W46" not in page.text
    assert '<link rel="canonical" href="https://digest.example.test/archive">' in page.text
    assert 'type="application/atom+xml"' in page.text
    assert "noindex" not in page.text  # the archive is meant to be found
    for key in ("2026-W45", "2026-W46"):  # a draft and an unfinished send are not public
        assert client.get(f"/archive/{key}").status_code == 404


def test_archive_pages_twenty_at_a_time(client, session, settings):
    seed_issues(session, settings, 23, per_week=1)
    first, second = client.get("/archive"), client.get("/archive?page=2")
    assert len(re.findall(r"<li>", first.text)) == 20
    assert len(re.findall(r"<li>", second.text)) == 3
    assert 'rel="next"' in first.text and 'rel="prev"' in second.text
    assert client.get("/archive?page=9").status_code == 404


def test_an_issue_page_is_the_issue_without_any_reader_in_it(client, session, settings, engine):
    issue = seed_issues(session, settings, 1)[0]
    ada = lifecycle.add(session, "ada.lovelace@example.com", name="Ada Lovelace",
                        confirmed=True, at=issue.sent_at)
    session.commit()
    page = client.get(f"/archive/{issue.key}")
    assert page.status_code == 200
    body = page.text
    assert "Week 40, 2026" in body and "Quillmark" in body
    # (the email's minify step may break a line inside the tag, where a space was)
    assert re.search(r'<link\s+rel="canonical" href="https://digest\.example\.test/archive/'
                     + re.escape(issue.key) + '">', body)
    # No placeholder, token, address or name: the page is the same for everybody.
    assert "%%" not in body
    assert "/u/" not in body and "/vote/" not in body and "?t=" not in body
    assert ada.email not in body and "Ada" not in body and "@" not in body.replace("@media", "")
    assert "Subscribe" in body and "/subscribe" in body
    assert "script" not in page.headers["content-security-policy"].replace("script-src 'none'", "")


def test_view_in_browser_in_the_email_is_the_archive_page(session, settings):
    issue = seed_issues(session, settings, 1)[0]
    assert f'href="https://digest.example.test/archive/{issue.key}"' in issue.html
    assert f"https://digest.example.test/archive/{issue.key}" in issue.text


def test_latest_redirects_to_the_newest_sent_issue(client, session, settings):
    assert client.get("/latest").status_code == 404
    sent = seed_issues(session, settings, 2)
    seed_issues(session, settings, 1, status="ready", first=FIRST.shift(4))
    answer = client.get("/latest")
    assert answer.status_code == 302
    assert answer.headers["location"] == f"https://digest.example.test/archive/{sent[-1].key}"


def test_an_unknown_or_malformed_key_is_404_and_a_loose_one_is_redirected(client, session,
                                                                           settings):
    seed_issues(session, settings, 1)
    assert client.get("/archive/2031-W02").status_code == 404
    assert client.get("/archive/not-a-week").status_code == 404
    loose = client.get("/archive/2026-w40")
    assert loose.status_code == 301 and loose.headers["location"].endswith("/archive/2026-W40")


@pytest.mark.parametrize("path", ["/archive", "/archive/2026-W40", "/feed.xml"])
def test_public_pages_answer_304_to_a_client_that_has_them(client, session, settings, path):
    seed_issues(session, settings, 1)
    first = client.get(path)
    assert first.status_code == 200
    assert first.headers["cache-control"].startswith("public")
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    assert client.get(path, headers={"If-None-Match": etag}).status_code == 304
    assert client.get(path, headers={"If-Modified-Since": modified}).status_code == 304
    assert client.get(path, headers={"If-None-Match": '"other"'}).status_code == 200


def test_the_feed_is_valid_atom_with_each_issue(client, session, settings):
    sent = seed_issues(session, settings, 3)
    seed_issues(session, settings, 1, status="ready", first=FIRST.shift(7))
    answer = client.get("/feed.xml")
    assert answer.headers["content-type"].startswith("application/atom+xml")
    feed = feedparser.parse(answer.content)
    assert not feed.bozo, feed.get("bozo_exception")
    assert feed.version == "atom10"
    assert [e.link for e in feed.entries] == [
        f"https://digest.example.test/archive/{i.key}" for i in reversed(sent)]
    newest = feed.entries[0]
    assert newest.title == sent[-1].subject
    assert " vs " in newest.summary and sent[-1].preheader in newest.summary
    assert any(link.rel == "self" and link.href.endswith("/feed.xml") for link in feed.feed.links)


def test_category_feeds_carry_only_their_comparisons(client, session, settings):
    issue = seed_issues(session, settings, 2, per_week=3)[-1]
    feed = feedparser.parse(client.get("/feed/developer-tools.xml").content)
    assert not feed.bozo and feed.entries
    for entry in feed.entries:
        assert entry.link.startswith("https://digest.example.test/archive/")
    everything = feedparser.parse(client.get("/feed.xml").content)
    lines = lambda e: [ln for ln in e.summary.splitlines() if " vs " in ln]  # noqa: E731
    assert sum(len(lines(e)) for e in feed.entries) < sum(len(lines(e)) for e in everything.entries)
    assert client.get("/feed/no-such-category.xml").status_code == 404
    assert issue.key in client.get("/feed.xml").text


def test_a_new_vote_shows_on_the_page_within_the_cache_time(client, session, settings, clock):
    issue = seed_issues(session, settings, 1)[0]
    assert "No community votes yet" in client.get(f"/archive/{issue.key}").text
    from digest.database.models import Comparison, IssueComparison
    from digest.outcomes.votes import record_vote

    reader = lifecycle.add(session, "reader@example.com", confirmed=True, at=clock())
    comparison = session.exec(select(Comparison).join(IssueComparison).where(
        IssueComparison.issue_id == issue.id)).first()
    session.commit()
    record_vote(session, subscriber_id=reader.id, tool_id=comparison.tool_a_id,
                issue_id=issue.id, ship=True, now=clock())
    session.commit()
    assert "1 reader vote · 100% ship" not in client.get(f"/archive/{issue.key}").text
    clock.now += dt.timedelta(minutes=2)
    assert "1 reader vote · 100% ship" in client.get(f"/archive/{issue.key}").text


def test_subscribers_are_untouched_by_archive_traffic(client, session, settings):
    seed_issues(session, settings, 1)
    before = session.exec(select(Subscriber)).all()
    session.commit()  # SQLite: a read holds the write lock until the transaction ends
    for path in ("/archive", "/archive/2026-W40", "/latest", "/feed.xml"):
        client.get(path)
        client.head(path)
    assert session.exec(select(Subscriber)).all() == before
