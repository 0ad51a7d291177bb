"""The click redirect against the real app and a composed issue, on SQLite and PostgreSQL:
genuine links count and lead only to the stored URL; forged, altered and foreign tokens answer
404 and count nothing; machines are counted apart; `aggregate` stores nobody."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlmodel import Session, SQLModel

from digest.database.models import IssueLink, LinkClick, LinkReader
from digest.edition.compose import compose_issue
from digest.outcomes.clicks import ClickSigner
from digest.settings import load_settings
from digest.web.app import create_app
from factories import SetClock, sample_comparisons, store
from subscribers.links import Links
from subscribers.models import Subscriber
from subscribers.tokens import Signer

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120 Safari/537.36"


class Clock(SetClock):
    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@pytest.fixture
def issue(engine, settings):
    with Session(engine, expire_on_commit=False) as session:
        store(session, sample_comparisons(4))
        issue = compose_issue(session, settings, "2026-W47", now=NOW)
        session.commit()
    return issue


@pytest.fixture
def clock():
    return Clock(NOW)


@pytest.fixture
def client(engine, settings, clock):
    app = create_app(settings, engine, clock=clock, click_flush_interval=0)
    with TestClient(app, follow_redirects=False, headers={"User-Agent": BROWSER}) as client:
        yield client


def tracked(issue) -> list[str]:
    paths = re.findall(r'href="https://digest\.example\.test(/r/[^"?]+)[?"]', issue.html)
    return list(dict.fromkeys(paths))


def counts(engine) -> dict[int, tuple[int, int]]:
    with Session(engine) as session:
        return {c.link_no: (c.human, c.machine) for c in session.exec(select(LinkClick)).scalars()}


def test_links_in_the_email_go_through_the_redirect_to_the_stored_url(engine, issue, client):
    paths = tracked(issue)
    assert len(paths) == 4  # one per comparison, the same token for every reader
    assert "verdicts.example.test/compare" not in issue.html
    with Session(engine) as session:
        stored = {l.link_no: l.url for l in session.exec(select(IssueLink)).scalars()}
    for path in paths:
        answer = client.get(path)
        assert answer.status_code == 302
        link_no = int(path.split(".")[1])
        assert answer.headers["location"] == stored[link_no]
        assert answer.headers["cache-control"] == "no-store"
        assert "set-cookie" not in answer.headers
        client.app.state.clicks.bursts._seen.clear()  # one reader per link for this test
    assert counts(engine) == {n: (1, 0) for n in stored}


def test_forged_altered_and_foreign_tokens_are_404_and_count_nothing(engine, settings, issue,
                                                                     client):
    good = tracked(issue)[0].removeprefix("/r/")
    key, no, mac = good.split(".")
    other_key = ClickSigner(b"another-secret-key-of-32-bytes!!")
    ours = ClickSigner(settings.signing_key())
    bad = [
        f"{key}.{no}.{mac[:-1]}{'A' if mac[-1] != 'A' else 'B'}",  # altered MAC
        f"{key}.{int(no) + 1}.{mac}",  # another link under this link's MAC
        f"2026-W46.{no}.{mac}",  # another issue under this link's MAC
        other_key.link_token(key, int(no)),  # signed with someone else's secret
        ours.link_token("2026-W46", 1),  # genuine, for an issue that was never composed
        ours.link_token(key, 99),  # genuine, for a link the issue does not have
        f"{key}.{no}", "", "x" * 300, f"{key}.-1.{mac}",
    ]
    for token in bad:
        assert client.get(f"/r/{token}").status_code in (404, 405), token
        assert client.head(f"/r/{token}").status_code in (404, 405), token
    # The destination is never taken from the request.
    answer = client.get(f"/r/{good}?url=https://evil.example.com/&next=https://evil.example.com/")
    assert answer.headers["location"].startswith("https://verdicts.example.test/compare/")
    assert client.get(f"/r/{good}?r=1.forged").status_code == 404
    assert client.get("/r/https://evil.example.com").status_code == 404
    assert counts(engine) == {int(no): (1, 0)}


@pytest.mark.parametrize("agent", ["", "Mozilla/5.0 (compatible; Barracuda Sentinel)",
                                   "Proofpoint URL Defense", "python-requests/2.31",
                                   "Mozilla/5.0 (compatible; bingbot/2.0)",
                                   "Microsoft Office Existence Discovery"])
def test_scanner_agents_are_counted_apart(engine, issue, client, agent):
    path = tracked(issue)[0]
    assert client.get(path, headers={"User-Agent": agent}).status_code == 302
    assert counts(engine) == {1: (0, 1)}


def test_head_requests_and_prefetches_are_machines(engine, issue, client):
    assert client.head(tracked(issue)[1]).status_code == 302
    assert client.get(tracked(issue)[2], headers={"Sec-Purpose": "prefetch"}).status_code == 302
    assert counts(engine) == {2: (0, 1), 3: (0, 1)}


def test_every_link_at_once_is_a_scanner_and_earlier_clicks_move_over(engine, issue, client,
                                                                      clock):
    paths = tracked(issue)
    for path in paths[:3]:
        client.get(path)
        clock.advance(1)
    # Three comparisons opened in tabs a second apart: still a person.
    assert counts(engine) == {1: (1, 0), 2: (1, 0), 3: (1, 0)}
    clock.advance(-0.5)
    client.get(paths[3])  # the last one too, within seconds: a scanner opening every link
    assert counts(engine) == {1: (0, 1), 2: (0, 1), 3: (0, 1), 4: (0, 1)}
    clock.advance(30)
    client.get(paths[0])  # the same client later, one link: a person again
    assert counts(engine)[1] == (1, 1)


def test_a_reader_taking_their_time_counts_as_a_person(engine, issue, client, clock):
    paths = tracked(issue)
    for path in paths:
        client.get(path)
        clock.advance(45)
    assert counts(engine) == {n: (1, 0) for n in range(1, 5)}


def test_aggregate_mode_stores_no_subscriber_id_or_address(engine, settings, issue, client,
                                                           clock):
    """Every recipient gets the same links, and after clicks no table but the audience's and
    the ledger's holds a subscriber's id or address."""
    from digest.delivery.send import send_issue
    from delivery_support import RecordingProvider, add_subscribers

    ids = add_subscribers(engine, 12)
    provider = RecordingProvider(batch_limit=5)
    report = send_issue(engine, issue.id, provider, settings, clock=lambda: NOW.timestamp(),
                        sleep=lambda s: None)
    assert report.sent == 12
    bodies = {r.email: provider.letters[0].html.fill(r.values)
              for call in provider.calls for r in call.recipients}
    assert {tuple(re.findall(r"/r/[^\"]+", b)) for b in bodies.values()} == {
        tuple(re.findall(r"/r/[^\"]+", issue.html))}
    for path in tracked(issue):
        client.get(path)
        clock.advance(60)
    assert sum(h for h, _ in counts(engine).values()) == 4
    emails = {f"reader{i}@example.com" for i in range(1, 13)}
    allowed = {"subscribers", "deliveries", "suppressions"}
    with engine.connect() as conn:
        for table in SQLModel.metadata.sorted_tables:
            if table.name in allowed:
                continue
            for row in conn.execute(table.select()):
                for column, value in zip(table.columns, row):
                    if isinstance(value, str):
                        assert not any(e in value.lower() for e in emails), (table.name, column)
                    if "subscriber" in column.name:
                        pytest.fail(f"{table.name}.{column.name} holds {value!r}")
        assert conn.execute(select(LinkReader)).all() == []
    assert set(ids)  # the subscribers exist: the scan above had something to find


def test_off_leaves_links_plain_and_stores_none(engine, settings, tmp_path):
    plain = load_settings(**{**settings.model_dump(), "click_tracking": "off"})
    with Session(engine, expire_on_commit=False) as session:
        store(session, sample_comparisons(2))
        issue = compose_issue(session, plain, "2026-W47", now=NOW)
        session.commit()
        assert session.exec(select(IssueLink)).all() == []
    assert "/r/" not in issue.html
    assert "https://verdicts.example.test/compare/" in issue.html


def test_per_subscriber_mode_counts_unique_readers(engine, settings, clock):
    """Opt-in: each recipient's copy carries their reader token (filled per recipient like the
    unsubscribe link, the body still rendered once), and readers are counted once per link."""
    from delivery_support import RecordingProvider, add_subscribers
    from digest.delivery.send import send_issue

    conf = load_settings(**{**settings.model_dump(), "click_tracking": "per-subscriber"})
    with Session(engine, expire_on_commit=False) as session:
        store(session, sample_comparisons(3))
        issue = compose_issue(session, conf, "2026-W47", now=NOW)
        session.commit()
    assert issue.html.count("?r=%%CLICK_READER%%") == 3
    ids = add_subscribers(engine, 2)
    provider = RecordingProvider()
    assert send_issue(engine, issue.id, provider, conf, clock=lambda: NOW.timestamp(),
                      sleep=lambda s: None).sent == 2
    links = {}
    for r in provider.calls[0].recipients:
        body = provider.letters[0].html.fill(r.values)
        links[r.email] = re.findall(r'href="https://digest\.example\.test(/r/[^"]+)"', body)[0]
    assert len(set(links.values())) == 2  # one per reader
    app = create_app(conf, engine, clock=clock, click_flush_interval=0)
    signer = ClickSigner(conf.signing_key())
    with TestClient(app, follow_redirects=False, headers={"User-Agent": BROWSER}) as client:
        for email in ("reader1@example.com", "reader1@example.com", "reader2@example.com"):
            assert client.get(links[email].replace("&amp;", "&")).status_code == 302
            clock.advance(30)
        path = tracked(issue)[0]
        # a reader token of another issue
        other = signer.reader_token("2026-W46", Links(conf.base_url, Signer(
            conf.signing_key())).holders([ids[0]], ["reader1@example.com"])[0])
        assert client.get(f"{path}?r={other}").status_code == 404
    assert counts(engine) == {1: (3, 0)}
    with Session(engine) as session:
        readers = session.exec(select(LinkReader.subscriber_id)).scalars().all()
    assert sorted(readers) == sorted(ids)


def test_a_reader_token_from_before_the_address_changed_names_no_reader(engine, settings,
                                                                       clock):
    """Reader tokens are bound to the address, as every subscriber token is: once the reader's
    row holds another address (changed, or the id reused), the click still counts for people
    but is recorded for nobody. A token from before they were bound counts for nobody too."""
    from delivery_support import add_subscribers

    conf = load_settings(**{**settings.model_dump(), "click_tracking": "per-subscriber"})
    with Session(engine, expire_on_commit=False) as session:
        store(session, sample_comparisons(3))
        issue = compose_issue(session, conf, "2026-W47", now=NOW)
        session.commit()
    first, second = add_subscribers(engine, 2)
    signer = ClickSigner(conf.signing_key())
    holders = Links(conf.base_url, Signer(conf.signing_key())).holders(
        [first, second], ["reader1@example.com", "reader2@example.com"])
    tokens = signer.reader_tokens(issue.key, holders)
    with Session(engine) as session:
        row = session.get(Subscriber, first)
        row.email = "someone.else@example.com"
        session.add(row)
        session.commit()
    legacy_mac = hmac.new(hmac.new(conf.signing_key(), b"verdict-digest/click/reader",
                                   hashlib.sha256).digest(),
                          f"{issue.key}.{second}".encode(), hashlib.sha256).digest()[:12]
    legacy = f"{second}.{base64.urlsafe_b64encode(legacy_mac).rstrip(b'=').decode()}"
    path = tracked(issue)[0]
    app = create_app(conf, engine, clock=clock, click_flush_interval=0)
    with TestClient(app, follow_redirects=False, headers={"User-Agent": BROWSER}) as client:
        for token in (tokens[0], tokens[1], legacy):
            assert client.get(f"{path}?r={token}").status_code == 302
            clock.advance(30)
        forged = tokens[1].rsplit(".", 1)[0] + ".AAAAAAAAAAAAAAAA"
        assert client.get(f"{path}?r={forged}").status_code == 404
    assert counts(engine) == {1: (3, 0)}
    with Session(engine) as session:
        readers = session.exec(select(LinkReader.subscriber_id)).scalars().all()
    assert readers == [second]  # the first reader's address changed: no reader


def test_reader_tokens_stay_out_of_the_access_log(settings):
    """The link token names no one and stays readable; a reader's token is redacted."""
    from subscribers.links import redact

    signer = ClickSigner(settings.signing_key())
    link = signer.link_token("2026-W47", 3)
    logged = redact(f"/r/{link}?r={signer.reader_token('2026-W47', '12.AbCdEfGh')}")
    assert logged == f"/r/{link}?r=[token]"


def test_an_edition_of_some_comparisons_links_through_the_issue_s_stored_links(engine, settings,
                                                                             issue, client):
    """A segment's edition renders a subset of the issue's comparisons: its links are the
    issue's own (numbered by comparison, not by position), so each leads where it says."""
    from digest.edition.compose import issue_comparisons
    from digest.edition.render import render_issue
    from digest.edition.weeks import Edition

    with Session(engine) as session:
        comparisons = issue_comparisons(session, issue)
        subset = [comparisons[1], comparisons[3]]
        week = Edition.parse(issue.key)
        edition = render_issue(subset, edition=week, window=week.window(settings.tz),
                               settings=settings)
    paths = tracked(edition)
    assert len(paths) == 2 and set(paths) <= set(tracked(issue))
    for path, comparison in zip(paths, subset):
        assert client.get(path).headers["location"] == comparison.url
