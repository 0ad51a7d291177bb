"""The web routes against the real app (FastAPI TestClient), on SQLite and PostgreSQL: double
opt-in with the confirmation mail read back from the outbox, RFC 8058 one-click unsubscribe,
no enumeration, honeypot, rate limit, bad tokens, and the web copy of an issue."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import html
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from digest.errors import ConfigurationError
from digest.database.models import Issue
from digest.edition.personalize import NAME, UNSUBSCRIBE_URL, VIEW_URL
from digest.settings import load_settings
from digest.web.app import create_app
from subscribers import lifecycle
from subscribers.links import Links
from subscribers.models import Subscriber
from subscribers.tokens import Signer
from factories import SetClock

T0 = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.timezone.utc)


class Clock(SetClock):
    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def app(settings, engine, clock):
    return create_app(settings, engine, clock=clock)


@pytest.fixture
def client(app):
    with TestClient(app, follow_redirects=False) as client:
        yield client


class RowLinks:
    """Links for a subscriber id, bound to the address its row holds, as the app binds them
    (an id with no row gets links bound to an address nobody has)."""

    def __init__(self, links: Links, engine) -> None:
        self.links, self.engine = links, engine
        self.base_url, self.signer = links.base_url, links.signer

    def _address(self, subscriber_id: int) -> str:
        with Session(self.engine) as session:
            subscriber = session.get(Subscriber, subscriber_id)
            return subscriber.email if subscriber else "nobody@example.org"

    def confirm(self, subscriber_id: int) -> str:
        return self.links.confirm(subscriber_id, self._address(subscriber_id))

    def unsubscribe(self, subscriber_id: int, issue_id: int | None = None) -> str:
        return self.links.unsubscribe(subscriber_id, self._address(subscriber_id), issue_id)

    def view(self, issue_key: str, subscriber_id: int) -> str:
        return self.links.view(issue_key, subscriber_id, self._address(subscriber_id))


@pytest.fixture
def links(settings, clock, engine) -> RowLinks:
    """Links signed exactly as the app signs them (same key, same clock)."""
    return RowLinks(Links(settings.base_url, Signer(settings.signing_key(),
                                                    clock=lambda: clock().timestamp())), engine)


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def add(engine, email_: str, status: str, name: str | None = None) -> int:
    with Session(engine) as session:
        subscriber = Subscriber(email=email_, status=status, name=name, source="cli",
                                created_at=T0, updated_at=T0,
                                confirmed_at=T0 if status == "active" else None)
        session.add(subscriber)
        session.commit()
        return int(subscriber.id)


def row(engine, subscriber_id: int | None = None, email_: str | None = None) -> Subscriber | None:
    with Session(engine) as session:
        if subscriber_id is not None:
            return session.get(Subscriber, subscriber_id)
        return session.exec(select(Subscriber).where(Subscriber.email == email_)).first()


def outbox_messages(settings) -> list[email.message.EmailMessage]:
    folder = Path(settings.outbox_dir) / "confirm"
    if not folder.is_dir():
        return []
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
            for p in sorted(folder.glob("*.eml"), key=lambda p: p.stat().st_mtime_ns)]


def confirm_link(message) -> str:
    text = message.get_body(preferencelist=("plain",)).get_content()
    match = re.search(r"https://digest\.example\.test/confirm/\S+", text)
    assert match, text
    return match.group(0)


def form(client, email_: str, **extra: str):
    return client.post("/subscribe", data={"email": email_, "name": "", "website": "", **extra})


# --- double opt-in -------------------------------------------------------------------------------

def test_signup_confirmation_mail_and_confirm(client, settings, engine, clock):
    response = form(client, "  New.Reader@Example.org ", name="Ada <Lovelace> & Co")
    assert response.status_code == 200
    assert "Check your inbox" in response.text and "set-cookie" not in response.headers
    pending = row(engine, email_="new.reader@example.org")
    assert (pending.status, pending.name, pending.source) == ("pending", "Ada <Lovelace> & Co", "form")

    [message] = outbox_messages(settings)
    assert message["To"].addresses[0].addr_spec == "new.reader@example.org"
    assert message["Subject"] == "Confirm your subscription to Weekly AI Tool Verdicts"
    assert message["X-Digest-Issue"] == "confirm"
    assert message["List-Unsubscribe"] is None and message["Precedence"] is None, \
        "a confirmation is transactional mail, not bulk"
    assert message.get_content_type() == "multipart/alternative"
    body = message.get_body(preferencelist=("html",)).get_content()
    text = message.get_body(preferencelist=("plain",)).get_content()
    assert "Hi Ada &lt;Lovelace&gt; &amp; Co" in body and "<Lovelace>" not in body
    assert "Hi Ada <Lovelace> & Co" in text
    assert NAME not in body and NAME not in text
    assert 'name="color-scheme"' in body and "max-width:600px" in body.replace(" ", "")
    link = confirm_link(message)
    assert f'href="{link}"' in body
    assert settings.postal_address in body and settings.postal_address in text

    clock.advance(hours=1)
    confirmed = client.get(path_of(link))
    assert confirmed.status_code == 200 and "You're subscribed" in html.unescape(confirmed.text)
    active = row(engine, pending.id)
    assert (active.status, active.confirmed_at) == ("active", clock.now)
    again = client.get(path_of(link))
    assert again.status_code == 200, "a second click on the link is harmless"
    assert row(engine, pending.id).confirmed_at == clock.now


def test_json_signup(client, settings, engine):
    response = client.post("/subscribe", json={"email": "Json@Example.org", "name": "Jay"})
    assert response.status_code == 200
    assert response.json()["ok"] is True
    assert row(engine, email_="json@example.org").status == "pending"
    assert len(outbox_messages(settings)) == 1
    bad = client.post("/subscribe", json={"email": "nope"})
    assert bad.status_code == 400 and bad.json() == {"ok": False,
                                                     "error": "Please enter a valid email address."}
    assert client.post("/subscribe", json=["x"]).status_code == 400
    assert client.post("/subscribe", json={"email": 5}).status_code == 400
    assert client.post("/subscribe", content=b"{not json",
                       headers={"Content-Type": "application/json"}).status_code == 400


def test_invalid_address_shows_the_form_again(client, engine):
    response = form(client, "ann@", name="Ann")
    assert response.status_code == 400
    assert 'role="alert"' in response.text and 'aria-invalid="true"' in response.text
    assert 'value="ann@"' in response.text and 'value="Ann"' in response.text
    assert row(engine, email_="ann@") is None


def test_subscribe_response_is_byte_identical_for_known_and_unknown_addresses(client, engine,
                                                                               settings, clock):
    add(engine, "active@example.org", "active")
    add(engine, "bounced@example.org", "bounced")
    add(engine, "left@example.org", "unsubscribed")
    add(engine, "waiting@example.org", "pending")
    for post in (form, lambda c, e: c.post("/subscribe", json={"email": e})):
        answers = []
        for address in ("unknown@example.org", "active@example.org", "bounced@example.org",
                        "left@example.org", "waiting@example.org", "Unknown@Example.org"):
            clock.advance(minutes=3)  # stay under the rate limit
            answers.append(post(client, address))
        reference = answers[0]
        for answer in answers[1:]:
            assert answer.status_code == reference.status_code
            assert answer.content == reference.content
            assert sorted(answer.headers.items()) == sorted(reference.headers.items())
    # only the new, the unsubscribed and the pending addresses were mailed; active, bounced: never;
    # the fourth signup of the new address in a day got the same answer and no mail
    mailed = sorted(m["To"].addresses[0].addr_spec for m in outbox_messages(settings))
    assert mailed == sorted(["unknown@example.org"] * 3 + ["left@example.org"] * 2
                            + ["waiting@example.org"] * 2)
    assert row(engine, email_="bounced@example.org").status == "bounced"
    assert row(engine, email_="left@example.org").status == "pending", "resubscribe re-confirms"


def test_honeypot_looks_like_success_and_does_nothing(client, engine, settings):
    normal = form(client, "human@example.org")
    bot = form(client, "bot@example.org", website="http://spam.example")
    assert bot.status_code == 200 and bot.content == normal.content
    assert row(engine, email_="bot@example.org") is None
    assert len(outbox_messages(settings)) == 1


def test_rate_limit_per_client_with_the_injected_clock(app, engine, clock):
    with TestClient(app, client=("203.0.113.7", 4000)) as noisy, \
            TestClient(app, client=("198.51.100.2", 4000)) as other:
        for i in range(5):
            assert form(noisy, f"r{i}@example.org").status_code == 200
        limited = form(noisy, "r5@example.org")
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
        assert row(engine, email_="r5@example.org") is None
        assert form(other, "other@example.org").status_code == 200, "other clients unaffected"
        clock.advance(minutes=10, seconds=1)
        assert form(noisy, "r5@example.org").status_code == 200
        assert row(engine, email_="r5@example.org").status == "pending"


def test_rate_limit_counts_an_ipv6_slash_64_as_one_client(app, engine):
    """Rotating through the addresses of one IPv6 line does not escape the limit."""
    answers = []
    for i in range(1, 7):
        with TestClient(app, client=(f"2001:db8:5:6::{i:x}", 4000)) as rotating:
            answers.append(form(rotating, f"v6-{i}@example.org").status_code)
    assert answers == [200] * 5 + [429]
    assert row(engine, email_="v6-6@example.org") is None
    with TestClient(app, client=("2001:db8:5:7::1", 4000)) as neighbour:
        assert form(neighbour, "next@example.org").status_code == 200


def test_resubscribing_after_unsubscribe_goes_through_confirmation(client, engine, settings, links):
    subscriber_id = add(engine, "back@example.org", "active")
    assert client.post(path_of(links.unsubscribe(subscriber_id))).status_code == 200
    assert row(engine, subscriber_id).status == "unsubscribed"
    form(client, "back@example.org")
    assert row(engine, subscriber_id).status == "pending"
    [message] = outbox_messages(settings)
    client.get(path_of(confirm_link(message)))
    assert row(engine, subscriber_id).status == "active"


def test_a_confirmation_link_cannot_undo_a_later_unsubscribe(client, engine, links):
    subscriber_id = add(engine, "late@example.org", "pending")
    link = links.confirm(subscriber_id)
    with Session(engine) as session:
        subscriber = session.get(Subscriber, subscriber_id)
        lifecycle.unsubscribe(session, subscriber, at=T0)
        session.commit()
    response = client.get(path_of(link))
    assert response.status_code == 409
    assert row(engine, subscriber_id).status == "unsubscribed"


# --- unsubscribe -----------------------------------------------------------------------------------

def test_get_shows_one_button_and_never_unsubscribes(client, engine, links):
    subscriber_id = add(engine, "reader@example.org", "active")
    url = path_of(links.unsubscribe(subscriber_id))
    for _ in range(3):  # link scanners, previews, a curious reader
        page = client.get(url)
        assert page.status_code == 200
        assert page.text.count("<button") == 1 and page.text.count("<form") == 1
        assert re.search(r'<form method="post">', page.text), "the button posts to the same URL"
        assert "reader@example.org" in page.text
    client.head(url)
    assert row(engine, subscriber_id).status == "active"


def test_rfc8058_one_click_post_exactly_as_mailbox_providers_send_it(app, engine, links, clock):
    subscriber_id = add(engine, "oneclick@example.org", "active")
    url = path_of(links.unsubscribe(subscriber_id))
    clock.advance(days=2)
    with TestClient(app, follow_redirects=False) as provider:  # a fresh client: no cookies at all
        response = provider.post(url, content=b"List-Unsubscribe=One-Click",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert response.status_code == 200
        assert "location" not in response.headers and "set-cookie" not in response.headers
        assert not response.is_redirect
        assert "You're unsubscribed" in html.unescape(response.text)
        after = row(engine, subscriber_id)
        assert (after.status, after.unsubscribed_at) == ("unsubscribed", clock.now)

        clock.advance(minutes=5)
        repeat = provider.post(url, content=b"List-Unsubscribe=One-Click",
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert repeat.status_code == 200 and "set-cookie" not in repeat.headers
        assert row(engine, subscriber_id).unsubscribed_at == after.unsubscribed_at

        # the result page links to a prefilled signup form
        resubscribe = re.search(r'href="(https://digest\.example\.test/subscribe\?t=[^"]+)"',
                                response.text).group(1)
        prefilled = provider.get(path_of(resubscribe))
        assert 'value="oneclick@example.org"' in prefilled.text
        assert row(engine, subscriber_id).status == "unsubscribed", "showing the form changes nothing"


def test_the_page_button_unsubscribes(client, engine, links):
    subscriber_id = add(engine, "button@example.org", "active")
    url = path_of(links.unsubscribe(subscriber_id))
    response = client.post(url, data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200 and row(engine, subscriber_id).status == "unsubscribed"
    page = client.get(url)  # afterwards the page says so, offers to resubscribe, no button
    assert "Subscribe again" in page.text and "<button" not in page.text


def test_unsubscribe_never_downgrades_a_bounce(client, engine, links):
    subscriber_id = add(engine, "bounced@example.org", "bounced")
    response = client.post(path_of(links.unsubscribe(subscriber_id)),
                           content=b"List-Unsubscribe=One-Click",
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200
    assert row(engine, subscriber_id).status == "bounced"


def test_unsubscribing_an_erased_address_is_harmless(client, engine, links):
    subscriber_id = add(engine, "erased@example.org", "active")
    with Session(engine) as session:
        lifecycle.erase(session, "erased@example.org", at=T0)
        session.commit()
    response = client.post(path_of(links.unsubscribe(subscriber_id)))
    assert response.status_code == 200 and "not on the list" in response.text


# --- bad tokens ------------------------------------------------------------------------------------

def _forge(token: str) -> str:
    mac = token.rsplit(".", 1)[1]
    return token[: -len(mac)] + ("A" if mac[0] != "A" else "B") + mac[1:]


def test_bad_tokens_change_nothing_and_get_400_or_404(client, engine, links, clock):
    pending = add(engine, "pending@example.org", "pending")
    active = add(engine, "active@example.org", "active")
    confirm, unsubscribe = links.confirm(pending), links.unsubscribe(active)
    view = links.view("2026-W47", active)
    confirm_token = confirm.rsplit("/", 1)[1]
    unsubscribe_token = unsubscribe.rsplit("/", 1)[1]
    view_token = view.split("?t=")[1]
    stranger = Links(links.base_url, Signer(b"someone-else-entirely-0123456789"))
    attempts = [
        ("get", f"/confirm/{_forge(confirm_token)}"),
        ("get", f"/confirm/{confirm_token[:-4]}"),
        ("get", f"/confirm/{unsubscribe_token}"),  # another purpose, same subscriber
        ("get", f"/confirm/{view_token}"),
        ("get", path_of(stranger.confirm(pending, "pending@example.org"))),
        ("post", f"/u/{_forge(unsubscribe_token)}"),
        ("post", f"/u/{unsubscribe_token[:-3]}"),
        ("post", f"/u/{unsubscribe_token.split('.')[0]}"),
        ("post", f"/u/{confirm_token}"),
        ("post", f"/u/{view_token}"),
        ("post", "/u/not-a-token"),
        ("get", f"/u/{_forge(unsubscribe_token)}"),
        ("get", f"/issues/2026-W47?t={unsubscribe_token}"),
        ("get", f"/issues/2026-W47?t={_forge(view_token)}"),
        ("get", "/issues/2026-W47"),
    ]
    for method, url in attempts:
        response = client.request(method, url, content=b"List-Unsubscribe=One-Click",
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert response.status_code in (400, 404), (method, url, response.status_code)
        assert "does not work" in response.text or "not found" in response.text.lower()
    assert row(engine, pending).status == "pending"
    assert row(engine, active).status == "active"

    clock.advance(days=7, seconds=1)  # confirmation links expire after a week
    expired = client.get(path_of(confirm))
    assert expired.status_code == 400 and row(engine, pending).status == "pending"


def test_a_genuine_token_for_a_missing_subscriber_is_404(client, links):
    assert client.get(path_of(links.confirm(999_999))).status_code == 404


# --- links of someone who left ------------------------------------------------------------------

def _legacy_token(settings, purpose: str, subscriber_id: int, issued: dt.datetime) -> str:
    """A token as mail sent before tokens were bound to their reader carries it: an id and a
    time, signed (`<id>.<issued>.<MAC>`)."""
    import base64
    import hashlib
    import hmac

    key = hmac.new(settings.signing_key(), b"verdict-digest/token/" + purpose.encode(),
                   hashlib.sha256).digest()
    body = f"{subscriber_id}.{int(issued.timestamp()):x}"
    mac = hmac.new(key, body.encode(), hashlib.sha256).digest()[:20]
    return f"{body}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def _erase(engine, address: str) -> None:
    """What `digest subscribers remove` does."""
    with Session(engine) as session:
        lifecycle.erase(session, address, at=T0)
        session.commit()


def _acts_on_nobody(client, engine, newcomer: int, urls: dict[str, str]) -> None:
    """Every old link, used every way it can be, leaves the newcomer as they were and never shows
    their address."""
    before = row(engine, newcomer)
    for kind, url in urls.items():
        for method in ("get", "post"):
            if kind in ("confirm", "resubscribe") and method == "post":
                continue  # GET-only pages (a POST to /subscribe is a signup, tested elsewhere)
            response = client.request(method, url)
            assert "second@example.org" not in response.text, (kind, method, url)
            assert response.status_code in (200, 404, 405), (kind, method, response.status_code)
    after = row(engine, newcomer)
    assert (after.status, after.confirmed_at, after.unsubscribed_at) == (
        before.status, before.confirmed_at, before.unsubscribed_at)


def test_a_removed_readers_old_links_act_on_nobody(client, engine, settings, links, clock):
    """The probe's case: the newest reader is removed and someone else signs up. The removed
    reader's confirmation, unsubscribe, resubscribe and web-copy links do nothing to the
    newcomer, who gets an id of their own."""
    _issue(engine, "2026-W47", "sent")
    form(client, "first@example.org")
    first = row(engine, email_="first@example.org")
    urls = {"confirm": path_of(confirm_link(outbox_messages(settings)[0])),
            "unsubscribe": path_of(links.unsubscribe(first.id)),
            "view": path_of(links.view("2026-W47", first.id))}
    urls["resubscribe"] = "/subscribe?t=" + urls["unsubscribe"].removeprefix("/u/")
    _erase(engine, "first@example.org")

    clock.advance(minutes=5)
    form(client, "second@example.org")
    second = row(engine, email_="second@example.org")
    assert second.id > first.id, "an id is never given twice"
    _acts_on_nobody(client, engine, second.id, urls)
    assert row(engine, second.id).status == "pending"

    # the newcomer's own links work as usual
    assert client.get(path_of(confirm_link(outbox_messages(settings)[-1]))).status_code == 200
    assert row(engine, second.id).status == "active"


@pytest.mark.parametrize("newcomer_status", ["pending", "active"])
def test_old_links_act_on_nobody_even_if_their_id_were_given_again(client, engine, settings,
                                                                     links, clock,
                                                                     newcomer_status):
    """Bound tokens (and tokens from mail sent before binding) name their reader, not just an
    id: here a newcomer is given the removed reader's id on purpose, and nothing reaches them."""
    first = add(engine, "first@example.org", "pending")
    _issue(engine, "2026-W47", "sent")
    legacy = {"confirm": f"/confirm/{_legacy_token(settings, 'confirm', first, clock())}",
              "unsubscribe": f"/u/{_legacy_token(settings, 'unsubscribe', first, clock())}",
              "view": f"/issues/2026-W47?t={_legacy_token(settings, 'view', first, clock())}"}
    legacy["resubscribe"] = "/subscribe?t=" + legacy["unsubscribe"].removeprefix("/u/")
    bound = {"confirm": path_of(links.confirm(first)),
             "unsubscribe": path_of(links.unsubscribe(first)),
             "view": path_of(links.view("2026-W47", first))}
    bound["resubscribe"] = "/subscribe?t=" + bound["unsubscribe"].removeprefix("/u/")
    _erase(engine, "first@example.org")

    clock.advance(hours=1)
    with Session(engine) as session:
        session.add(Subscriber(id=first, email="second@example.org", status=newcomer_status,
                               source="form", created_at=clock(), updated_at=clock(),
                               confirmed_at=clock() if newcomer_status == "active" else None))
        session.commit()
    _acts_on_nobody(client, engine, first, legacy)
    _acts_on_nobody(client, engine, first, bound)


def test_tokens_from_mail_sent_before_binding_still_work_for_their_reader(client, engine,
                                                                         settings, clock):
    """Unsubscribe links in mail already sent keep working for the reader they were sent to."""
    reader = add(engine, "reader@example.org", "active")  # created at T0
    clock.advance(days=3)
    token = _legacy_token(settings, "unsubscribe", reader, clock())
    assert "reader@example.org" in client.get(f"/u/{token}").text
    assert client.post(f"/u/{token}").status_code == 200
    assert row(engine, reader).status == "unsubscribed"


def test_a_token_rebound_to_another_reader_is_refused(client, engine, links):
    ada = add(engine, "ada@example.org", "active")
    bob = add(engine, "bob@example.org", "active")
    subject, tag, issued, mac = links.unsubscribe(ada).rsplit("/", 1)[1].split(".")
    bob_tag = links.signer.bind_many([bob], ["bob@example.org"])[0].split(".")[1]
    for forged in (f"{bob}.{tag}.{issued}.{mac}", f"{bob}.{bob_tag}.{issued}.{mac}",
                   f"{subject}.{bob_tag}.{issued}.{mac}", f"{bob}.{issued}.{mac}"):
        assert client.post(f"/u/{forged}").status_code == 400
        assert "bob@example.org" not in client.get(f"/subscribe?t={forged}").text
    assert row(engine, ada).status == row(engine, bob).status == "active"


# --- confirmation mails per address ---------------------------------------------------------------

def test_one_address_signed_up_from_many_clients_gets_a_few_mails(app, settings, engine, clock):
    """32 signups of one address from 32 clients (no rate limit applies): three confirmation
    mails, and 32 identical answers, so nobody learns whether a mail went out. A restart (a new
    app on the same database) does not reset the count; the next day does."""
    answers = []
    for i in range(32):
        with TestClient(app, client=(f"198.51.100.{i + 1}", 4000)) as someone:
            answers.append(form(someone, "target@example.org"))
    for answer in answers:
        assert (answer.status_code, answer.content) == (answers[0].status_code, answers[0].content)
        assert sorted(answer.headers.items()) == sorted(answers[0].headers.items())
    assert len(outbox_messages(settings)) == 3

    restarted = create_app(settings, engine, clock=clock)
    with TestClient(restarted, client=("203.0.113.9", 4000)) as someone:
        assert form(someone, "target@example.org").content == answers[0].content
    assert len(outbox_messages(settings)) == 3
    clock.advance(days=1)
    with TestClient(restarted, client=("203.0.113.9", 4000)) as someone:
        assert form(someone, "target@example.org").content == answers[0].content
    assert len(outbox_messages(settings)) == 4
    assert row(engine, email_="target@example.org").status == "pending"


# --- view in browser -------------------------------------------------------------------------------

def _issue(engine, key: str, status: str) -> None:
    document = (f'<!doctype html><html><body><p>Hello {NAME}</p><a href="{VIEW_URL}">web</a>'
                f'<a href="{UNSUBSCRIBE_URL}">Unsubscribe</a></body></html>')
    with Session(engine) as session:
        session.add(Issue(key=key, status=status, window_start=T0, window_end=T0, html=document,
                          text="text"))
        session.commit()


def test_issue_web_copy_is_personalised(client, engine, links):
    subscriber_id = add(engine, "viewer@example.org", "active", name="Vi <3")
    _issue(engine, "2026-W47", "sent")
    response = client.get(path_of(links.view("2026-W47", subscriber_id)))
    assert response.status_code == 200
    assert "Hello Vi &lt;3" in response.text
    with Session(engine) as session:
        issue_id = session.exec(select(Issue.id).where(Issue.key == "2026-W47")).one()
    # The web copy's unsubscribe link names its issue, as the mail's does.
    assert f'href="{links.unsubscribe(subscriber_id, issue_id)}"' in response.text
    assert f'href="{links.view("2026-W47", subscriber_id)}"' in response.text
    assert response.headers["referrer-policy"] == "no-referrer", "tokens must not leak onward"
    assert response.headers["cache-control"] == "no-store"
    # the unsubscribe link in the web copy works like the one in the mail
    unsubscribe = re.search(r'href="([^"]+/u/[^"]+)"', response.text).group(1)
    assert client.post(path_of(unsubscribe)).status_code == 200
    assert row(engine, subscriber_id).status == "unsubscribed"


def test_unknown_and_unsent_issues_are_404(client, engine, links):
    subscriber_id = add(engine, "viewer@example.org", "active")
    _issue(engine, "2026-W48", "ready")
    assert client.get(path_of(links.view("2026-W48", subscriber_id))).status_code == 404
    assert client.get(path_of(links.view("1999-W01", subscriber_id))).status_code == 404


# --- pages and settings ----------------------------------------------------------------------------

def test_signup_page_is_accessible_and_styled_like_the_email(client):
    page = client.get("/subscribe")
    assert page.status_code == 200
    text = page.text
    assert '<html lang="en">' in text and '<meta name="color-scheme" content="light dark">' in text
    assert '<label for="email">' in text and 'autocomplete="email"' in text
    assert 'tabindex="-1"' in text and 'aria-hidden="true"' in text, "the honeypot is hidden"
    assert "max-width: 600px" in text and "prefers-color-scheme: dark" in text
    assert "-apple-system" in text and "#4338ca" in text


def test_a_public_app_needs_a_real_secret(settings, engine):
    for secret in (None, "changeme", "short"):
        cfg = load_settings(database_url=settings.database_url, outbox_dir=settings.outbox_dir,
                            secret_key=secret)
        with pytest.raises(ConfigurationError, match="DIGEST_SECRET_KEY.*secrets.token_urlsafe"):
            create_app(cfg, engine, public=True)
        create_app(cfg, engine, public=False)  # local-only use keeps working without one
    real_mail = load_settings(database_url=settings.database_url, provider="postmark")
    with pytest.raises(ConfigurationError, match="sends real mail"):
        create_app(real_mail, engine)
