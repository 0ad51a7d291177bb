"""The complaint cut-off: spam complaints arriving through the real webhook route while an
issue is being sent pause the send once they reach 0.3% of its delivered messages (with at
least 5), like the rejection breaker; fewer, or a lower rate, do not. `digest status` and
`digest doctor` warn when the last four issues averaged over 0.1%."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlmodel import select
from sqlmodel import Session

from delivery_support import FakeClock, RecordingProvider, add_subscribers, make_issue
from digest.database.models import Issue, WebhookEvent
from digest.delivery import ledger
from digest.delivery.complaints import recent_history
from digest.delivery.send import SendPolicy, send_issue
from digest.web.webhooks import make_router
from subscribers.models import Subscriber

SECRET = "hooks:s3cret-pass"
KEY = "2026-W47"


@pytest.fixture
def webhooks(settings, engine):
    app = FastAPI()
    app.include_router(make_router(settings.model_copy(
        update={"webhook_secret": SecretStr(SECRET)}), engine, clock=lambda: 1795424400.0))
    return TestClient(app)


def complain(client: TestClient, emails, *, tag: str | None = KEY, first_id: int = 1) -> None:
    """Postmark's SpamComplaint webhook, one request per complaint, as Postmark sends them."""
    auth = {"Authorization": "Basic " + base64.b64encode(SECRET.encode()).decode()}
    for n, email in enumerate(emails, first_id):
        body = {"RecordType": "SpamComplaint", "ID": n, "Type": "SpamComplaint", "TypeCode": 512,
                "MessageID": f"m-{n}", "Email": email, "BouncedAt": "2026-11-23T09:05:00Z",
                "MessageStream": "broadcast", **({"Tag": tag} if tag else {})}
        answer = client.post("/webhooks/postmark", json=body, headers=auth)
        assert answer.status_code == 200 and answer.json()["applied"] == 1, answer.text


def sending(engine, settings, provider, clock) -> object:
    return send_issue(engine, issue_id(engine), provider, settings,
                      policy=SendPolicy(in_flight=1), clock=clock, sleep=clock.sleep)


def issue_id(engine) -> int:
    with Session(engine) as session:
        return session.exec(select(Issue.id).where(Issue.key == KEY)).one()


def during_call(index: int, clock: FakeClock, action):
    """Provider behaviour: each call takes 3 seconds; call `index` first runs `action`."""
    def behave(i, recipients):
        clock.advance(3)
        if i == index:
            action()
        return None  # the default: every recipient accepted
    return behave


def test_complaints_during_the_send_pause_it(engine, session, settings, webhooks):
    add_subscribers(engine, 1000)
    make_issue(session, KEY)
    clock = FakeClock()
    first_batch = [f"reader{i}@example.com" for i in range(1, 6)]
    provider = RecordingProvider(batch_limit=100, clock=clock)
    provider.script = [during_call(2, clock, lambda: complain(webhooks, first_batch))] * 10

    report = sending(engine, settings, provider, clock)

    assert report.status == "paused" and not report.complete
    assert report.reason.startswith("complaint cut-off: 5 spam complaints for 300 delivered")
    assert len(provider.calls) == 3 and report.sent == 300 and report.pending == 700
    sent_issue = issue_id(engine)
    with Session(engine) as s:
        stored = s.exec(select(WebhookEvent.issue_id).where(
            WebhookEvent.kind == "complained")).all()
        assert stored == [sent_issue] * 5
        assert set(s.exec(select(Subscriber.status).where(
            Subscriber.email.in_(first_batch))).all()) == {"complained"}

    # The operator looked and resumes: the same complaints do not stop it again.
    provider.script = []
    resumed = sending(engine, settings, provider, clock)
    assert resumed.complete and resumed.sent == 1000 and len(provider.calls) == 10


def test_a_complaint_without_a_tag_is_tied_to_the_last_issue_delivered(
        engine, session, settings, webhooks):
    add_subscribers(engine, 200)
    make_issue(session, KEY)
    clock = FakeClock()
    untagged = [f"reader{i}@example.com" for i in range(1, 6)]
    provider = RecordingProvider(batch_limit=100, clock=clock,
                                 script=[during_call(1, clock, lambda: complain(
                                     webhooks, untagged, tag=None))] * 2)
    report = sending(engine, settings, provider, clock)
    assert report.status == "paused" and "5 spam complaints for 200 delivered" in report.reason


def test_four_complaints_do_not_stop_a_small_list(engine, session, settings, webhooks):
    add_subscribers(engine, 300)
    make_issue(session, KEY)
    clock = FakeClock()
    provider = RecordingProvider(batch_limit=100, clock=clock, script=[during_call(
        1, clock, lambda: complain(webhooks, [f"reader{i}@example.com" for i in range(1, 5)]))] * 3)
    report = sending(engine, settings, provider, clock)
    assert report.complete and report.sent == 300


def test_five_complaints_under_the_rate_do_not_stop_it(engine, session, settings, webhooks):
    add_subscribers(engine, 2000)
    make_issue(session, KEY)
    clock = FakeClock()
    # During the last call: 5 of 2,000 delivered is 0.25%, under the 0.3% cut-off.
    provider = RecordingProvider(batch_limit=500, clock=clock, script=[during_call(
        3, clock, lambda: complain(webhooks, [f"reader{i}@example.com" for i in range(1, 6)]))] * 4)
    report = sending(engine, settings, provider, clock)
    assert report.complete and report.sent == 2000


def test_history_warns_over_a_tenth_of_a_percent(engine, session, settings, webhooks, cli):
    add_subscribers(engine, 500)
    for week in (44, 45):
        make_issue(session, f"2026-W{week}")
    clock = FakeClock()
    for week in (44, 45):
        with Session(engine) as s:
            issue = s.exec(select(Issue).where(Issue.key == f"2026-W{week}")).one()
        send_issue(engine, issue.id, RecordingProvider(batch_limit=500), settings,
                   clock=clock, sleep=clock.sleep)
    with Session(engine) as s:
        assert recent_history(s).rate == 0
    assert "warning" not in cli("status").err
    complain(webhooks, ["reader1@example.com", "reader2@example.com"], tag="2026-W45")
    with Session(engine) as s:
        history = recent_history(s)
    assert history.rate == pytest.approx(2 / 1000) and history.too_high
    status = cli("status")
    assert ("warning: the last 2 issue(s) (2026-W45, 2026-W44) drew 0.20% spam complaints"
            in status.err)
    doctor = cli("doctor", "--offline", "--format", "json")
    import json

    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert checks["audience.complaints"]["status"] == "warn"
