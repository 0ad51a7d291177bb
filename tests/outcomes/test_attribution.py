"""Outcomes counted toward the issue they belong to: unsubscribe links name their issue,
provider events name their message (and so its delivery and issue), soft bounces are recorded
per delivery without touching the reader; and the finished issues' cached totals."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from delivery_support import RecordingProvider, add_subscribers, make_issue
from digest.database.models import Issue, IssueTotals, WebhookEvent
from digest.delivery import ledger
from digest.delivery.complaints import complaints
from digest.delivery.send import links_for, send_issue
from digest.edition.personalize import UNSUBSCRIBE_URL
from digest.outcomes import mailgun, postmark, resend, sendgrid
from digest.outcomes.attribution import attribute
from digest.outcomes.base import ProviderEvent, message_key
from digest.outcomes.record import record_events
from digest.outcomes.report import issue_outcomes
from digest.web.app import create_app
from subscribers.links import Links, parse_issue_subject
from subscribers.models import Subscriber
from subscribers.tokens import Signer

UTC = dt.timezone.utc
T47 = dt.datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
T48 = T47 + dt.timedelta(days=7)
LATER = T48 + dt.timedelta(days=2)


def _send(engine, settings, issue, at, provider=None):
    provider = provider or RecordingProvider(batch_limit=4)
    report = send_issue(engine, issue.id, provider, settings, clock=lambda: at.timestamp(),
                        sleep=lambda s: None)
    return report, provider


@pytest.fixture
def two_sent(engine, settings):
    """Six readers got W47 and W48; returns (w47, w48, {email: unsubscribe URL in W47})."""
    add_subscribers(engine, 6)
    with Session(engine, expire_on_commit=False) as session:
        w47 = make_issue(session, "2026-W47")
        w48 = make_issue(session, "2026-W48")
    report, provider = _send(engine, settings, w47, T47)
    assert report.sent == 6
    urls = {r.email: r.values[UNSUBSCRIBE_URL] for c in provider.calls for r in c.recipients}
    assert _send(engine, settings, w48, T48)[0].sent == 6
    return w47, w48, urls


def _message_of(engine, issue_id: int, email: str) -> str:
    """The provider's id for the message this reader got in that issue, as the ledger has it."""
    from digest.database.models import Delivery

    with Session(engine) as session:
        return session.exec(select(Delivery.provider_message_id)
                            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                            .where(Delivery.issue_id == issue_id,
                                   Subscriber.email == email)).one()


def _outcomes(engine) -> dict[str, object]:
    with Session(engine) as session:
        return {o.key: o for o in issue_outcomes(session)}


def _status(engine, email: str) -> str:
    with Session(engine) as session:
        return session.exec(select(Subscriber.status).where(Subscriber.email == email)).one()


# --- unsubscribe links name their issue ------------------------------------------------------------

def test_every_unsubscribe_link_of_a_send_names_its_issue_and_reader(engine, settings,
                                                                     two_sent):
    w47, _, urls = two_sent
    signer = Signer(settings.signing_key())
    with Session(engine) as session:
        ids = dict(session.exec(select(Subscriber.email, Subscriber.id)).all())
    for email, url in urls.items():
        claim = signer.verify(url.rsplit("/", 1)[1], "unsubscribe")
        assert parse_issue_subject(claim.subject) == (ids[email], w47.id)
        assert signer.held_by(claim, email, since=T47)
        assert not signer.held_by(claim, "someone.else@example.com", since=T47)


def test_batch_and_single_unsubscribe_links_are_the_same(settings):
    links = Links("https://digest.example.test", Signer(settings.signing_key(),
                                                        clock=lambda: T47.timestamp()))
    holders = links.holders([7, 8], ["a@example.com", "b@example.com"])
    assert links.unsubscribe_many(holders, 42) == [links.unsubscribe(7, "a@example.com", 42),
                                                   links.unsubscribe(8, "b@example.com", 42)]
    assert links.unsubscribe_many(holders) == [links.unsubscribe(7, "a@example.com"),
                                               links.unsubscribe(8, "b@example.com")]
    assert parse_issue_subject("7-42") == (7, 42) and parse_issue_subject("7") == (7, None)
    for bad in ("", "7-", "-42", "7-x", "x", "7-42-1"):
        with pytest.raises(ValueError):
            parse_issue_subject(bad)


def test_an_unsubscribe_counts_toward_the_issue_whose_link_was_used(engine, settings,
                                                                    two_sent):
    """W48 went out after W47, yet the reader used W47's link (by the page's button and by a
    mailbox's one-click POST): both count toward W47, not toward the last issue mailed."""
    w47, w48, urls = two_sent
    app = create_app(settings, engine, clock=lambda: LATER)
    with TestClient(app, follow_redirects=False) as client:
        page = urls["reader1@example.com"].removeprefix(settings.base_url)
        assert client.get(page).status_code == 200  # the page with the button changes nothing
        assert _status(engine, "reader1@example.com") == "active"
        assert client.post(page).status_code == 200
        one_click = urls["reader2@example.com"].removeprefix(settings.base_url)
        answer = client.post(one_click, content=b"List-Unsubscribe=One-Click",
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert answer.status_code == 200 and "location" not in answer.headers
        # A link from before links named their issue still works, and falls back to the
        # latest issue mailed before the change.
        legacy = Links(settings.base_url, Signer(settings.signing_key())).unsubscribe(
            _id(engine, "reader3@example.com"), "reader3@example.com")
        assert client.post(legacy.removeprefix(settings.base_url)).status_code == 200
    with Session(engine) as session:
        left = dict(session.exec(select(Subscriber.email, Subscriber.left_issue_id)
                                 .where(Subscriber.status == "unsubscribed")).all())
    assert left == {"reader1@example.com": w47.id, "reader2@example.com": w47.id,
                    "reader3@example.com": None}
    outcomes = _outcomes(engine)
    assert outcomes["2026-W47"].unsubscribed == 2
    assert outcomes["2026-W48"].unsubscribed == 1  # reader3: the old rule


def test_an_unsubscribe_link_acts_only_for_its_reader(engine, settings, two_sent):
    """The issue in the subject changes nothing about whom the token may act on."""
    _, _, urls = two_sent
    with Session(engine) as session:
        row = session.exec(select(Subscriber)
                           .where(Subscriber.email == "reader4@example.com")).one()
        row.email = "new.owner@example.com"
        session.add(row)
        session.commit()
    app = create_app(settings, engine, clock=lambda: LATER)
    with TestClient(app, follow_redirects=False) as client:
        answer = client.post(urls["reader4@example.com"].removeprefix(settings.base_url))
        assert answer.status_code == 200 and "not on the list" in answer.text
        token = urls["reader5@example.com"].rsplit("/", 1)[1]
        subject, rest = token.split(".", 1)
        altered = f"{subject.split('-')[0]}-999999.{rest}"  # another issue, same MAC
        assert client.post(f"/u/{altered}").status_code == 400
    assert _status(engine, "new.owner@example.com") == "active"
    assert _status(engine, "reader5@example.com") == "active"


def _id(engine, email: str) -> int:
    with Session(engine) as session:
        return session.exec(select(Subscriber.id).where(Subscriber.email == email)).one()


# --- provider events name their message ------------------------------------------------------------

def test_bounces_and_complaints_count_toward_the_issue_of_the_message_they_name(engine,
                                                                               two_sent):
    w47, w48, _ = two_sent
    late = [ProviderEvent("postmark", "b-1", "bounced", "reader1@example.com", hard=True,
                          occurred_at=LATER,
                          message_id=_message_of(engine, w47.id, "reader1@example.com")),
            ProviderEvent("postmark", "c-1", "complained", "reader2@example.com",
                          occurred_at=LATER,
                          message_id=_message_of(engine, w47.id, "reader2@example.com")),
            # Names no message: the old rule, the latest issue mailed.
            ProviderEvent("postmark", "c-2", "complained", "reader3@example.com",
                          occurred_at=LATER)]
    assert record_events(engine, late, now=LATER).applied == 3
    with Session(engine) as session:
        assert complaints(session, w47.id) == 1 and complaints(session, w48.id) == 1
        stored = {e.event_id: (e.issue_id, e.delivery_id is not None)
                  for e in session.exec(select(WebhookEvent))}
        left = session.exec(select(Subscriber.left_issue_id)
                            .where(Subscriber.email == "reader1@example.com")).one()
    assert stored == {"b-1": (w47.id, True), "c-1": (w47.id, True), "c-2": (w48.id, True)}
    assert left == w47.id
    outcomes = _outcomes(engine)
    assert (outcomes["2026-W47"].hard_bounced, outcomes["2026-W47"].complained) == (1, 1)
    assert (outcomes["2026-W48"].hard_bounced, outcomes["2026-W48"].complained) == (0, 1)


def test_the_message_id_is_found_in_every_spelling_the_ledger_keeps(engine, two_sent):
    """Mailgun answers `<id@domain>` and echoes it bare; our own Message-ID has brackets."""
    from digest.database.models import Delivery

    w47, _, _ = two_sent
    with Session(engine) as session:
        row = session.exec(select(Delivery).join(Subscriber,
                                                 Subscriber.id == Delivery.subscriber_id)
                           .where(Delivery.issue_id == w47.id,
                                  Subscriber.email == "reader6@example.com")).one()
        row.provider_message_id = "<20261123090000.1.abc@mg.example.com>"
        session.add(row)
        session.commit()
        found = attribute(session, "Reader6@Example.com",
                          message_key("20261123090000.1.abc@mg.example.com"), None)
        assert (found.issue_id, found.delivery_id, found.by) == (w47.id, row.id, "message")
        assert attribute(session, "nobody@example.com", "x", None).issue_id is None
        assert attribute(session, None, None, "2026-W47").by == "tag"


# --- soft bounces, from every provider that reports them ---------------------------------------------

def _sendgrid(event: str, **fields) -> ProviderEvent:
    body = json.dumps([{"email": "reader1@example.com", "event": event, "timestamp": 1795424300,
                        "sg_event_id": f"sg-{event}-{fields.get('type', '')}",
                        "sg_message_id": "SGID47.filterdrecv-1.0", **fields}]).encode()
    return sendgrid.parse(body)[0]


def _postmark(bounce_type: str) -> ProviderEvent:
    body = json.dumps({"RecordType": "Bounce", "ID": sum(map(ord, bounce_type)),
                       "Type": bounce_type, "Email": "reader1@example.com",
                       "MessageID": "pm-uuid-1", "BouncedAt": "2026-11-23T08:59:00Z"}).encode()
    return postmark.parse(body)[0]


def _mailgun(severity: str, reason: str = "generic") -> ProviderEvent:
    payload = {"event-data": {"event": "failed", "id": f"mg-{severity}", "severity": severity,
                              "reason": reason, "recipient": "reader1@example.com",
                              "timestamp": 1795424300,
                              "message": {"headers": {"message-id": "mg.1@mg.example.com"}}}}
    return mailgun.parse(payload, {"token": f"t-{severity}"})[0]


def _resend(kind: str, **data) -> ProviderEvent:
    body = json.dumps({"type": kind, "created_at": "2026-11-23T08:59:00Z",
                       "data": {"email_id": "re-1", "to": ["reader1@example.com"],
                                **data}}).encode()
    return resend.parse(body, f"msg-{kind}-{len(data)}")[0]


@pytest.mark.parametrize("event, message_id", [
    (lambda: _sendgrid("deferred"), "SGID47"),
    (lambda: _sendgrid("bounce", type="blocked"), "SGID47"),
    (lambda: _postmark("SoftBounce"), "pm-uuid-1"),
    (lambda: _postmark("Transient"), "pm-uuid-1"),
    (lambda: _mailgun("temporary"), "mg.1@mg.example.com"),
    (lambda: _mailgun("permanent", "old"), "mg.1@mg.example.com"),
    (lambda: _resend("email.delivery_delayed"), "re-1"),
    (lambda: _resend("email.bounced", bounce={"type": "Transient"}), "re-1"),
], ids=["sendgrid-deferred", "sendgrid-blocked", "postmark-soft", "postmark-transient",
        "mailgun-temporary", "mailgun-old", "resend-delayed", "resend-transient"])
def test_providers_report_soft_bounces_with_their_message(event, message_id):
    found = event()
    assert (found.kind, found.hard, found.soft_bounce, found.actionable) == (
        "bounced", False, True, False)
    assert found.message_id == message_id


@pytest.mark.parametrize("event", [
    lambda: _sendgrid("bounce", type="bounce"), lambda: _postmark("HardBounce"),
    lambda: _mailgun("permanent"), lambda: _resend("email.bounced",
                                                   bounce={"type": "Permanent"})],
    ids=["sendgrid", "postmark", "mailgun", "resend"])
def test_providers_hard_bounces_stay_hard(event):
    found = event()
    assert (found.kind, found.hard, found.soft_bounce, found.actionable) == (
        "bounced", True, False, True)


def test_soft_bounces_are_recorded_per_delivery_and_keep_the_reader(engine, two_sent):
    w47, w48, _ = two_sent
    mid = _message_of(engine, w47.id, "reader1@example.com")
    soft = [ProviderEvent("mailgun", f"s-{i}", "bounced", "reader1@example.com", hard=False,
                          occurred_at=LATER, message_id=mid) for i in range(3)]
    soft.append(ProviderEvent("mailgun", "s-other", "bounced", "reader2@example.com",
                              occurred_at=LATER,
                              message_id=_message_of(engine, w48.id, "reader2@example.com")))
    recorded = record_events(engine, soft, now=LATER)
    assert (recorded.applied, recorded.soft_bounces, recorded.ignored) == (0, 4, 0)
    assert record_events(engine, soft, now=LATER).duplicates == 4  # replays: once each
    assert _status(engine, "reader1@example.com") == "active"  # still on the list
    hard = ProviderEvent("mailgun", "h-1", "bounced", "reader1@example.com", hard=True,
                         occurred_at=LATER, message_id=mid)
    assert record_events(engine, [hard], now=LATER).applied == 1
    assert _status(engine, "reader1@example.com") == "bounced"  # a hard bounce still removes
    outcomes = _outcomes(engine)
    w47_out, w48_out = outcomes["2026-W47"], outcomes["2026-W48"]
    # Three soft bounces of one delivery are one soft-bounced delivery.
    assert (w47_out.soft_bounced, w47_out.hard_bounced) == (1, 1)
    assert (w48_out.soft_bounced, w48_out.hard_bounced) == (1, 0)
    assert w47_out.rates["soft_bounce_rate"] == round(1 / 6, 4)
    assert w47_out.rates["hard_bounce_rate"] == round(1 / 6, 4)


def test_report_and_dashboard_show_hard_and_soft_bounces_apart(engine, settings, two_sent,
                                                             cli):
    w47, _, _ = two_sent
    record_events(engine, [
        ProviderEvent("resend", "soft-1", "bounced", "reader1@example.com", occurred_at=LATER,
                      message_id=_message_of(engine, w47.id, "reader1@example.com")),
        ProviderEvent("resend", "hard-1", "bounced", "reader2@example.com", hard=True,
                      occurred_at=LATER,
                      message_id=_message_of(engine, w47.id, "reader2@example.com"))],
        now=LATER)
    data = {d["key"]: d for d in json.loads(cli("report", "--format", "json").stdout)["issues"]}
    w = data["2026-W47"]
    assert (w["hard_bounced"], w["soft_bounced"]) == (1, 1)
    assert w["hard_bounce_rate"] == w["soft_bounce_rate"] == round(1 / 6, 4)
    rows = cli("report", "--format", "csv").stdout.splitlines()
    assert "hard_bounced,soft_bounced" in rows[0]
    table = cli("report", "--week", "2026-W47")
    assert "hard bounces" in table.out and "soft bounces" in table.out
    app = create_app(settings, engine, clock=lambda: LATER)
    with TestClient(app, client=("127.0.0.1", 50000),
                    base_url="https://digest.example.test") as client:
        page = client.get("/admin").text
        assert "Hard bounces" in page and "Soft bounces" in page
        detail = client.get("/admin/issues/2026-W47").text
        assert re.search(r"Soft bounces</dt><dd>1 \(16\.7%", detail), detail


# --- the finished issues' totals ----------------------------------------------------------------------

def test_a_finished_send_keeps_its_totals_and_reports_read_them(engine, two_sent, monkeypatch):
    w47, w48, _ = two_sent
    with Session(engine) as session:
        kept = {t.issue_id: (t.planned, t.delivered, t.failed)
                for t in session.exec(select(IssueTotals))}
    assert kept == {w47.id: (6, 6, 0), w48.id: (6, 6, 0)}

    def no_counting(session, issue_id):
        raise AssertionError("a finished issue's ledger was counted again")

    monkeypatch.setattr(ledger, "counts", no_counting)
    outcomes = _outcomes(engine)
    assert (outcomes["2026-W47"].planned, outcomes["2026-W47"].delivered) == (6, 6)


def test_outcomes_arriving_after_the_totals_were_kept_still_count(engine, two_sent):
    w47, _, _ = two_sent
    before = _outcomes(engine)["2026-W47"]
    assert (before.soft_bounced, before.complained) == (0, 0)
    record_events(engine, [
        ProviderEvent("sendgrid", "late-soft", "bounced", "reader3@example.com",
                      occurred_at=LATER,
                      message_id=_message_of(engine, w47.id, "reader3@example.com")),
        ProviderEvent("sendgrid", "late-spam", "complained", "reader4@example.com",
                      occurred_at=LATER,
                      message_id=_message_of(engine, w47.id, "reader4@example.com"))],
        now=LATER)
    after = _outcomes(engine)["2026-W47"]
    assert (after.soft_bounced, after.complained, after.delivered) == (1, 1, 6)


def test_totals_are_filled_for_issues_sent_before_the_table_and_renewed_on_a_new_send(
        engine, two_sent):
    w47, _, _ = two_sent
    with Session(engine) as session:
        session.delete(session.get(IssueTotals, w47.id))
        session.commit()
    assert _outcomes(engine)["2026-W47"].delivered == 6
    with Session(engine) as session:
        row = session.get(IssueTotals, w47.id)
        assert (row.planned, row.delivered) == (6, 6)
        # A stale row (the issue was sent again since) is not trusted.
        row.delivered = 1
        row.sent_at = T47 - dt.timedelta(days=30)
        session.add(row)
        session.commit()
    assert _outcomes(engine)["2026-W47"].delivered == 6
    with Session(engine) as session:
        assert session.get(IssueTotals, w47.id).delivered == 6
        issue = session.get(Issue, w47.id)
        issue.status = "sending"  # while an issue is not sent its ledger is counted live
        session.add(issue)
        session.commit()
    assert _outcomes(engine)["2026-W47"].delivered == 6


def test_links_for_a_send_and_the_web_copy_agree_on_the_unsubscribe_issue(engine, settings,
                                                                          two_sent):
    """The web copy's unsubscribe link names its issue too."""
    w47, _, urls = two_sent
    with Session(engine) as session:
        issue = session.get(Issue, w47.id)
        links = links_for(issue, settings)
    sid = _id(engine, "reader1@example.com")
    assert links.unsubscribe(sid, "reader1@example.com", w47.id) == urls["reader1@example.com"]


def test_a_soft_bounce_through_the_webhook_route_counts_for_the_message_it_names(
        engine, settings, two_sent):
    """Postmark's own request, end to end: verified, parsed, attributed, counted; the reader
    stays on the list."""
    import base64

    from fastapi import FastAPI
    from pydantic import SecretStr

    from digest.web.webhooks import make_router

    w47, _, _ = two_sent
    configured = settings.model_copy(update={"webhook_secret": SecretStr("hook:pass")})
    app = FastAPI()
    app.include_router(make_router(configured, engine, clock=lambda: LATER.timestamp()))
    auth = {"Authorization": "Basic " + base64.b64encode(b"hook:pass").decode()}
    body = {"RecordType": "Bounce", "ID": 901, "Type": "SoftBounce", "TypeCode": 4096,
            "Email": "reader5@example.com", "BouncedAt": "2026-12-02T09:00:00Z",
            "MessageID": _message_of(engine, w47.id, "reader5@example.com")}
    answer = TestClient(app).post("/webhooks/postmark", json=body, headers=auth)
    assert answer.status_code == 200 and answer.json()["soft_bounces"] == 1
    assert _status(engine, "reader5@example.com") == "active"
    outcomes = _outcomes(engine)
    assert (outcomes["2026-W47"].soft_bounced, outcomes["2026-W48"].soft_bounced) == (1, 0)


def test_the_resubscribe_form_reads_an_unsubscribe_link_that_names_its_issue(engine, settings,
                                                                            two_sent):
    _, _, urls = two_sent
    token = urls["reader6@example.com"].rsplit("/", 1)[1]
    app = create_app(settings, engine, clock=lambda: LATER)
    with TestClient(app, follow_redirects=False) as client:
        assert client.post(f"/u/{token}").status_code == 200
        form = client.get(f"/subscribe?t={token}")
    assert form.status_code == 200 and 'value="reader6@example.com"' in form.text


def test_a_request_s_events_are_attributed_in_a_few_queries(engine, two_sent):
    """A SendGrid batch of many events: the addresses and message ids are looked up set-wise,
    and the answers match one-by-one look-ups (an unknown message falls back on its own)."""
    from sqlalchemy import event as sa_event

    from digest.outcomes.attribution import attribute_many

    w47, w48, _ = two_sent
    wanted = [(f"Reader{i}@example.com", _message_of(engine, (w47, w48)[i % 2].id,
                                                      f"reader{i}@example.com"), None)
              for i in range(1, 7)]
    statements = []

    def count(*args):
        if args[2].lstrip().upper().startswith("SELECT"):
            statements.append(args[2])

    with Session(engine) as session:
        sa_event.listen(engine, "before_cursor_execute", count)
        try:
            batched = attribute_many(session, wanted)
        finally:
            sa_event.remove(engine, "before_cursor_execute", count)
        single = [attribute(session, *w) for w in wanted]
        unknown = attribute_many(session, [("reader1@example.com", "no-such-id", "2026-W48")])
    assert len(statements) <= 2, statements
    assert batched == single
    assert [a.issue_id for a in batched] == [w48.id, w47.id] * 3
    assert all(a.by == "message" for a in batched)
    assert (unknown[0].issue_id, unknown[0].by) == (w48.id, "tag")


def test_a_read_only_database_still_reports_without_keeping_totals(db_url, engine, two_sent):
    """`digest report` against a replica: the totals cannot be kept, the report is the same."""
    from sqlalchemy.engine import make_url

    from digest.database import make_engine

    w47, _, _ = two_sent
    with Session(engine) as session:
        session.delete(session.get(IssueTotals, w47.id))
        session.commit()
    if db_url.startswith("sqlite"):
        url = f"sqlite:///file:{db_url.removeprefix('sqlite:///')}?mode=ro&uri=true"
    else:
        url = make_url(db_url).update_query_dict(
            {"options": "-c default_transaction_read_only=on"}).render_as_string(
                hide_password=False)
    replica = make_engine(url)
    try:
        with Session(replica) as session:
            found = {o.key: o for o in issue_outcomes(session)}
            assert (found["2026-W47"].delivered, found["2026-W48"].delivered) == (6, 6)
            assert found["2026-W47"].unsubscribed == 0  # the queries after the refusal ran
    finally:
        replica.dispose()
    with Session(engine) as session:
        assert session.get(IssueTotals, w47.id) is None
