"""Readers' votes, end to end on both databases: the links in a sent email, a GET that changes
nothing, a POST that records, one vote per reader per tool, forged and foreign tokens, erasure
that keeps the totals, the rate limit, and the votes showing in later issues and the export."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from digest.database.models import Issue, Tool, Vote
from digest.delivery.providers import build_provider
from digest.delivery.send import send_issue
from digest.edition.compose import compose_issue
from digest.edition.weeks import Edition
from digest.outcomes.votes import export_totals
from digest.web.app import create_app
from factories import UTC, SetClock, make_comparison, make_tool, sample_comparisons, store
from subscribers import lifecycle
from subscribers.links import Links, issue_subject
from subscribers.tokens import Signer

W47 = Edition(2026, 47)
NOW = dt.datetime(2026, 11, 24, 9, tzinfo=UTC)


@pytest.fixture
def clock():
    return SetClock(NOW)


@pytest.fixture
def sent(settings, engine, session, clock):
    """Week 47 composed and sent to two readers through the outbox; their vote links."""
    store(session, sample_comparisons(2, start=dt.datetime(2026, 11, 17, 9, tzinfo=UTC)))
    ada = lifecycle.add(session, "ada@example.com", name="Ada", confirmed=True, at=NOW)
    bob = lifecycle.add(session, "bob@example.com", name="Bob", confirmed=True, at=NOW)
    issue = compose_issue(session, settings, W47.key, now=NOW)
    session.commit()
    send_issue(engine, issue.id, build_provider(settings), settings)
    links = {}
    for path in Path(settings.outbox_dir).rglob("*.eml"):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        html = message.get_body(("html",)).get_content()
        links[str(message["To"]).split("<")[-1].rstrip(">")] = sorted(
            set(re.findall(r'href="(https://digest\.example\.test/vote/[^"]+)"', html)))
    return issue, {"ada": ada, "bob": bob}, links


@pytest.fixture
def client(settings, engine, clock):
    with TestClient(create_app(settings, engine, clock=clock), follow_redirects=False) as c:
        yield c


def votes(engine) -> list[tuple[int | None, int, bool]]:
    with Session(engine) as session:
        return sorted(((v.subscriber_id, v.tool_id, v.ship) for v in session.exec(select(Vote))),
                      key=lambda row: (row[0] is None, row[0] or 0, row[1]))


def path(url: str) -> str:
    return url.removeprefix("https://digest.example.test")


def test_each_reader_gets_their_own_yes_and_no_links_for_every_tool(sent):
    issue, readers, links = sent
    assert set(links) == {"ada@example.com", "bob@example.com"}
    for reader_links in links.values():
        assert len(reader_links) == 8  # 2 comparisons x 2 tools x (ship, skip)
        assert sum(url.endswith("/ship") for url in reader_links) == 4
    assert not set(links["ada@example.com"]) & set(links["bob@example.com"])


def test_get_shows_the_question_and_changes_nothing(sent, client, engine):
    _, _, links = sent
    url = links["ada@example.com"][0]
    for target in (url, url.rsplit("/", 1)[0]):
        page = client.get(path(target))
        assert page.status_code == 200
        assert "Would you ship" in page.text and 'method="post"' in page.text
        assert page.headers["cache-control"] == "no-store"
    client.head(path(url))
    assert votes(engine) == []


def test_post_records_one_vote_and_a_second_replaces_it(sent, client, engine):
    issue, readers, links = sent
    ship = next(u for u in links["ada@example.com"] if u.endswith("/ship"))
    skip = ship.removesuffix("/ship") + "/skip"
    answer = client.post(path(ship))
    assert answer.status_code == 200 and "you said ship" in answer.text
    assert [(s, ship_) for s, _, ship_ in votes(engine)] == [(readers["ada"].id, True)]
    client.post(path(ship))  # the same answer again changes nothing
    client.post(path(skip))
    assert [(s, ship_) for s, _, ship_ in votes(engine)] == [(readers["ada"].id, False)]
    assert "You said <strong>skip</strong> before" in client.get(path(ship)).text


def test_forged_altered_and_foreign_tokens_change_nothing(sent, client, engine, settings,
                                                          session):
    issue, readers, links = sent
    good = next(u for u in links["ada@example.com"] if u.endswith("/ship"))
    token = path(good).split("/")[2]
    tool = path(good).split("/")[3]
    signer = Signer(settings.signing_key())
    other_key = Signer(b"another-secret-key-0123456789")
    ada = readers["ada"].email
    with Session(engine) as s:
        other_issue_tool = s.exec(select(Tool).where(Tool.slug.not_in(
            [tool]))).first().slug
    bad = [
        f"/vote/{token[:-2]}xx/{tool}/ship",  # altered signature
        f"/vote/{token.replace(str(readers['ada'].id) + '-', str(readers['bob'].id) + '-', 1)}"
        f"/{tool}/ship",  # another reader's id under Ada's signature
        "/vote/" + other_key.sign("vote", issue_subject(issue.id, readers["ada"].id), ada)
        + f"/{tool}/ship",
        f"/vote/{signer.sign('unsubscribe', readers['ada'].id, ada)}/{tool}/ship",  # wrong purpose
        f"/vote/{signer.sign('vote', readers['ada'].id, ada)}/{tool}/ship",  # no issue in it
        "/vote/" + signer.sign("vote", issue_subject(issue.id + 99, readers["ada"].id), ada)
        + f"/{tool}/ship",
        f"/vote/{token}/not-in-this-issue/ship",
        f"/vote/{token}/{tool}/maybe",
    ]
    for url in bad:
        assert client.get(url).status_code in (400, 404), url
        assert client.post(url).status_code in (400, 404, 405), url
    assert votes(engine) == []
    assert other_issue_tool  # there are other tools; the token only reaches its issue's


def test_a_tool_outside_the_issue_cannot_be_voted_on(sent, client, engine, session):
    _, _, links = sent
    store(session, [make_comparison(make_tool("elsewhere-a"), make_tool("elsewhere-b"),
                                    published_at=dt.datetime(2026, 11, 25, tzinfo=UTC))])
    token = path(links["ada@example.com"][0]).split("/")[2]
    assert client.post(f"/vote/{token}/elsewhere-a/ship").status_code == 400
    assert votes(engine) == []


def test_erasing_a_reader_keeps_the_totals_and_forgets_the_person(sent, client, engine,
                                                                  cli):
    _, readers, links = sent
    for who in ("ada@example.com", "bob@example.com"):
        client.post(path(next(u for u in links[who] if u.endswith("/ship"))))
    assert cli("subscribers", "remove", "ada@example.com").exit_code == 0
    rows = votes(engine)
    assert len(rows) == 2 and sorted(r[0] is None for r in rows) == [False, True]
    with Session(engine) as s:
        totals = export_totals(s)
    assert [(t.votes, t.ship, t.ship_share) for t in totals] == [(2, 2, 100)]
    exported = cli("votes", "export", "--format", "json")
    assert exported.exit_code == 0
    data = json.loads(exported.stdout)
    assert data[0]["votes"] == 2 and data[0]["ship_share"] == 100
    assert "ada" not in exported.stdout and "@" not in exported.stdout
    csv_out = cli("votes", "export")
    assert csv_out.stdout.splitlines()[0] == "tool,name,votes,ship,skip,ship_share"


def test_votes_are_rate_limited_per_client(sent, client, engine):
    _, _, links = sent
    url = path(links["ada@example.com"][0])
    answers = [client.post(url).status_code for _ in range(61)]
    assert answers[:60] == [200] * 60 and answers[60] == 429


def test_votes_show_in_later_issues_in_place_of_no_votes_yet(sent, client, engine, settings,
                                                             session):
    issue, _, links = sent
    ship = sorted(u for u in links["ada@example.com"] if u.endswith("/ship"))
    skip = sorted(u for u in links["bob@example.com"] if u.endswith("/skip"))
    client.post(path(ship[0]))
    client.post(path(skip[0].replace("/skip", "/ship")))
    tool_slug = path(ship[0]).split("/")[3]
    tool = session.exec(select(Tool).where(Tool.slug == tool_slug)).one()
    assert "No community votes yet" in issue.html
    # Next week carries the same tool again: it now shows the readers' votes.
    later = make_comparison(tool, make_tool("newcomer"), slug="again",
                            published_at=dt.datetime(2026, 11, 24, 12, tzinfo=UTC))
    session.add(later)
    session.commit()
    w48 = compose_issue(session, settings, "2026-W48", now=dt.datetime(2026, 12, 1, tzinfo=UTC))
    assert "2 reader votes · 100% ship" in w48.html
    assert "2 reader votes · 100% ship" in w48.text
    assert "No community votes yet" in w48.html  # the newcomer has none


def test_vote_links_of_a_legacy_web_copy_are_filled_too(sent, client, settings):
    issue, readers, _ = sent
    links = Links(settings.base_url, Signer(settings.signing_key()))
    view = path(links.view(issue.key, readers["ada"].id, readers["ada"].email))
    page = client.get(view)
    assert page.status_code == 200 and "%%" not in page.text and "/vote/" in page.text
