"""Webhooks through the real app (FastAPI + the router + the database): each provider's genuine
request is applied once; forged, stale and replayed ones change nothing."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlmodel import Session, select

from digest.database.models import WebhookEvent
from digest.web.webhooks import make_router
from subscribers import lifecycle
from subscribers.models import Subscriber

NOW = 1795424400.0  # 2026-11-23 09:00:00 UTC: the injected clock
EVENT_AT = "2026-11-23T08:59:00Z"
JOINED = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
READER = "reader@inbox.example"
OTHER = "other@inbox.example"


@pytest.fixture
def make_client(settings, engine):
    def build(secret: str) -> TestClient:
        configured = settings.model_copy(update={"webhook_secret": SecretStr(secret)})
        app = FastAPI()
        app.include_router(make_router(configured, engine, clock=lambda: NOW))
        return TestClient(app)

    with Session(engine) as session:
        for address in (READER, OTHER):
            lifecycle.add(session, address, confirmed=True, at=JOINED)
        session.commit()
    return build


def status_of(engine, email: str = READER) -> str:
    with Session(engine) as session:
        return session.exec(select(Subscriber.status).where(Subscriber.email == email)).one()


def stored_events(engine) -> list[tuple[str, str, str]]:
    with Session(engine) as session:
        return [(e.provider, e.event_id, e.kind) for e in session.exec(select(WebhookEvent))]


def reactivate_before(engine, event_time: str) -> None:
    """The operator brings the reader back, dated before the event: only de-duplication can
    stop a replay of that event from bouncing them again."""
    at = dt.datetime.fromisoformat(event_time.replace("Z", "+00:00")) - dt.timedelta(hours=1)
    with Session(engine) as session:
        lifecycle.reactivate(session, READER, at=at)
        session.commit()


# --- Postmark: basic auth --------------------------------------------------------------------

PM_SECRET = "hooks:s3cret-pass"


def pm_auth(credentials: str = PM_SECRET) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}


def pm_bounce(bounce_type: str = "HardBounce", bounce_id: int = 4242, email: str = READER):
    return {"RecordType": "Bounce", "ID": bounce_id, "Type": bounce_type, "TypeCode": 1,
            "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483", "Email": email,
            "BouncedAt": "2026-11-23T03:59:00.2735393-05:00", "Inactive": True,
            "Metadata": {"issue": "2026-W47"}, "MessageStream": "broadcast"}


def test_postmark_hard_bounce_applied_once(make_client, engine):
    client = make_client(PM_SECRET)
    body = json.dumps(pm_bounce()).encode()
    first = client.post("/webhooks/postmark", content=body, headers=pm_auth())
    assert first.status_code == 200 and first.json()["applied"] == 1
    assert status_of(engine) == "bounced"
    assert stored_events(engine) == [("postmark", "Bounce:4242", "bounced")]

    reactivate_before(engine, "2026-11-23T08:59:00Z")
    replay = client.post("/webhooks/postmark", content=body, headers=pm_auth())
    assert replay.status_code == 200 and replay.json()["duplicates"] == 1
    assert status_of(engine) == "active"
    assert len(stored_events(engine)) == 1


@pytest.mark.parametrize("headers", [{}, pm_auth("hooks:wrong"), pm_auth("hooks"),
                                     {"Authorization": "Basic %%%"},
                                     {"Authorization": "Bearer " + PM_SECRET}])
def test_postmark_forged_credentials_change_nothing(make_client, engine, headers):
    client = make_client(PM_SECRET)
    answer = client.post("/webhooks/postmark", content=json.dumps(pm_bounce()).encode(),
                         headers=headers)
    assert answer.status_code == 400
    assert status_of(engine) == "active" and stored_events(engine) == []


def test_postmark_soft_bounce_and_suppression_change(make_client, engine):
    client = make_client(PM_SECRET)
    soft = client.post("/webhooks/postmark", json=pm_bounce("SoftBounce"), headers=pm_auth())
    assert soft.json() == {"received": 1, "applied": 0, "duplicates": 0, "ignored": 0,
                           "malformed": 0, "soft_bounces": 1}
    assert status_of(engine) == "active"
    change = {"RecordType": "SubscriptionChange", "MessageID": "a8c1",
              "ChangedAt": "2026-11-23T08:59:00Z", "Recipient": OTHER, "Origin": "Recipient",
              "SuppressSending": True, "SuppressionReason": "ManualSuppression",
              "Tag": "2026-W47", "MessageStream": "broadcast"}
    assert client.post("/webhooks/postmark", json=change,
                       headers=pm_auth()).json()["applied"] == 1
    assert status_of(engine, OTHER) == "unsubscribed"
    complaint = dict(pm_bounce("SpamComplaint", 77), RecordType="SpamComplaint")
    assert client.post("/webhooks/postmark", json=complaint,
                       headers=pm_auth()).json()["applied"] == 1
    assert status_of(engine) == "complained"


# --- SendGrid: ECDSA ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sg_keys():
    private = ec.generate_private_key(ec.SECP256R1())
    der = private.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, base64.b64encode(der).decode()


def sg_signed(private, body: bytes, timestamp: float = NOW) -> dict[str, str]:
    stamp = str(int(timestamp))
    signature = private.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {"X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
            "Content-Type": "application/json"}


def sg_events(*events: dict) -> bytes:
    base = {"timestamp": int(NOW) - 60, "smtp-id": "<x@sg>", "sg_message_id": "sg.1",
            "issue": "2026-W47", "delivery": "1001"}
    return json.dumps([{**base, **e} for e in events]).encode()


def test_sendgrid_batch_applied_and_replay_ignored(make_client, engine, sg_keys):
    private, public = sg_keys
    client = make_client(public)
    body = sg_events(
        {"email": READER, "event": "bounce", "type": "bounce", "sg_event_id": "ev-1"},
        {"email": OTHER, "event": "bounce", "type": "blocked", "sg_event_id": "ev-2"},
        {"email": OTHER, "event": "delivered", "sg_event_id": "ev-3"})
    answer = client.post("/webhooks/sendgrid", content=body, headers=sg_signed(private, body))
    assert answer.status_code == 200
    assert answer.json() == {"received": 3, "applied": 1, "duplicates": 0, "ignored": 1,
                             "malformed": 0, "soft_bounces": 1}
    assert (status_of(engine), status_of(engine, OTHER)) == ("bounced", "active")

    reactivate_before(engine, "2026-11-23T08:59:00Z")
    replay = client.post("/webhooks/sendgrid", content=body, headers=sg_signed(private, body))
    # The bounce and the soft bounce were both stored: both are recognised.
    assert replay.status_code == 200 and replay.json()["duplicates"] == 2
    assert status_of(engine) == "active"


def test_sendgrid_complaint_and_unsubscribe(make_client, engine, sg_keys):
    private, public = sg_keys
    client = make_client(public)
    body = sg_events({"email": READER, "event": "spamreport", "sg_event_id": "ev-9"},
                     {"email": OTHER, "event": "group_unsubscribe", "sg_event_id": "ev-10"})
    assert client.post("/webhooks/sendgrid", content=body,
                       headers=sg_signed(private, body)).json()["applied"] == 2
    assert (status_of(engine), status_of(engine, OTHER)) == ("complained", "unsubscribed")


def test_sendgrid_forged_and_stale_change_nothing(make_client, engine, sg_keys):
    private, public = sg_keys
    client = make_client(public)
    body = sg_events({"email": READER, "event": "bounce", "sg_event_id": "ev-1"})
    tampered = body.replace(READER.encode(), OTHER.encode())
    stranger = ec.generate_private_key(ec.SECP256R1())
    for content, headers in [(tampered, sg_signed(private, body)),
                             (body, sg_signed(stranger, body)),
                             (body, {"Content-Type": "application/json"}),
                             (body, sg_signed(private, body, timestamp=NOW - 3600))]:
        answer = client.post("/webhooks/sendgrid", content=content, headers=headers)
        assert answer.status_code == 400, answer.text
    assert "timestamp" in answer.json()["detail"]
    assert status_of(engine) == status_of(engine, OTHER) == "active"
    assert stored_events(engine) == []


def test_sendgrid_unusable_key_is_503(make_client, engine):
    client = make_client("not-a-key")
    body = sg_events({"email": READER, "event": "bounce", "sg_event_id": "ev-1"})
    answer = client.post("/webhooks/sendgrid", content=body,
                         headers={"X-Twilio-Email-Event-Webhook-Signature": "AAAA",
                                  "X-Twilio-Email-Event-Webhook-Timestamp": str(int(NOW))})
    assert answer.status_code == 503 and status_of(engine) == "active"


# --- Mailgun: HMAC in the body ------------------------------------------------------------------

MG_KEY = "mg-signing-key-0123456789"


def mg_body(event: dict, *, key: str = MG_KEY, timestamp: float = NOW,
            token: str | None = None) -> bytes:
    """A signed Mailgun webhook; the token is random per request in reality, here derived."""
    stamp = str(int(timestamp))
    token = token or hashlib.sha256(json.dumps(event).encode()).hexdigest()[:50]
    signature = hmac.new(key.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    return json.dumps({"signature": {"timestamp": stamp, "token": token, "signature": signature},
                       "event-data": event}).encode()


def mg_failed(severity: str = "permanent", reason: str = "bounce", event_id: str = "mg-ev-1"):
    return {"event": "failed", "id": event_id, "timestamp": NOW - 60, "severity": severity,
            "reason": reason, "recipient": READER, "log-level": "error",
            "user-variables": {"issue": "2026-W47"},
            "delivery-status": {"code": 550, "message": "5.1.1 no such user"}}


def test_mailgun_permanent_failure_applied_once(make_client, engine):
    client = make_client(MG_KEY)
    body = mg_body(mg_failed())
    first = client.post("/webhooks/mailgun", content=body,
                        headers={"Content-Type": "application/json"})
    assert first.status_code == 200 and first.json()["applied"] == 1
    assert status_of(engine) == "bounced"
    stored = stored_events(engine)
    assert ("mailgun", "mg-ev-1", "bounced") in stored
    assert [kind for _, event_id, kind in stored if event_id.startswith("token:")] == ["request"]

    reactivate_before(engine, "2026-11-23T08:59:00Z")
    replay = client.post("/webhooks/mailgun", content=body,
                         headers={"Content-Type": "application/json"})
    assert replay.status_code == 200 and replay.json()["duplicates"] == 1
    assert status_of(engine) == "active"


def test_mailgun_temporary_and_retry_limit_failures_are_soft(make_client, engine):
    client = make_client(MG_KEY)
    for event in (mg_failed("temporary", "generic", "t-1"), mg_failed("permanent", "old", "t-2")):
        answer = client.post("/webhooks/mailgun", content=mg_body(event))
        assert answer.json()["soft_bounces"] == 1 and answer.json()["applied"] == 0
    assert status_of(engine) == "active"
    complained = {"event": "complained", "id": "c-1", "timestamp": NOW - 30, "recipient": OTHER}
    assert client.post("/webhooks/mailgun", content=mg_body(complained)).json()["applied"] == 1
    assert status_of(engine, OTHER) == "complained"


def test_mailgun_forged_and_stale_change_nothing(make_client, engine):
    client = make_client(MG_KEY)
    for body in (mg_body(mg_failed(), key="guessed-key"),
                 mg_body(mg_failed(), timestamp=NOW - 900),
                 mg_body(mg_failed(), timestamp=NOW + 900),
                 json.dumps({"event-data": mg_failed()}).encode(),
                 b"not json"):
        assert client.post("/webhooks/mailgun", content=body).status_code == 400
    assert status_of(engine) == "active" and stored_events(engine) == []


def test_mailgun_captured_request_cannot_be_replayed_with_other_data(make_client, engine):
    """Mailgun signs timestamp + token, not the event: the token is what makes a request
    single-use, so a genuine request's signature cannot carry a forged bounce."""
    client = make_client(MG_KEY)
    genuine = mg_body({"event": "delivered", "id": "d-1", "timestamp": NOW - 5,
                       "recipient": OTHER}, token="t" * 50)
    assert client.post("/webhooks/mailgun", content=genuine).json()["ignored"] == 1
    captured = json.loads(genuine)
    forged = json.dumps({"signature": captured["signature"],
                         "event-data": {**mg_failed(event_id="forged-1"), "recipient": OTHER}})
    answer = client.post("/webhooks/mailgun", content=forged)
    assert answer.status_code == 200 and answer.json()["duplicates"] == 1
    assert status_of(engine, OTHER) == "active"


# --- Resend: Svix ---------------------------------------------------------------------------------

RS_KEY = b"resend-webhook-test-key-32-bytes"
RS_SECRET = "whsec_" + base64.b64encode(RS_KEY).decode()


def svix_headers(body: bytes, msg_id: str = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W",
                 timestamp: float = NOW, key: bytes = RS_KEY) -> dict[str, str]:
    stamp = str(int(timestamp))
    mac = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return {"svix-id": msg_id, "svix-timestamp": stamp,
            "svix-signature": "v1,bm90LXRoaXMtb25l v1," + base64.b64encode(mac).decode(),
            "Content-Type": "application/json"}


def rs_event(kind: str = "email.bounced", bounce_type: str = "Permanent",
             to: str = READER) -> bytes:
    data = {"email_id": "4ef9a417-02e9-4d39-ad75-9611e0fcc33c", "from": "digest@verdicts.example",
            "to": [to], "subject": "Weekly verdicts", "created_at": "2026-11-23T08:58:00Z",
            "headers": [{"name": "X-Digest-Issue", "value": "2026-W47"}]}
    if kind == "email.bounced":
        data["bounce"] = {"message": "The recipient's email provider sent a hard bounce message",
                          "subType": "General", "type": bounce_type}
    return json.dumps({"type": kind, "created_at": EVENT_AT, "data": data}).encode()


def test_resend_bounce_applied_once(make_client, engine):
    client = make_client(RS_SECRET)
    body = rs_event()
    first = client.post("/webhooks/resend", content=body, headers=svix_headers(body))
    assert first.status_code == 200 and first.json()["applied"] == 1
    assert status_of(engine) == "bounced"

    reactivate_before(engine, EVENT_AT)
    replay = client.post("/webhooks/resend", content=body, headers=svix_headers(body))
    assert replay.status_code == 200 and replay.json()["duplicates"] == 1
    assert status_of(engine) == "active"


def test_resend_complaint_and_transient_bounce(make_client, engine):
    client = make_client(RS_SECRET)
    soft = rs_event(bounce_type="Transient")
    assert client.post("/webhooks/resend", content=soft,
                       headers=svix_headers(soft, "msg_soft")).json()["soft_bounces"] == 1
    complaint = rs_event("email.complained", to=f"Other Reader <{OTHER}>")
    assert client.post("/webhooks/resend", content=complaint,
                       headers=svix_headers(complaint, "msg_c")).json()["applied"] == 1
    assert (status_of(engine), status_of(engine, OTHER)) == ("active", "complained")


def test_resend_forged_and_stale_change_nothing(make_client, engine):
    client = make_client(RS_SECRET)
    body = rs_event()
    cases = [
        (body, svix_headers(body, key=b"another-key-another-key-32-bytes")),
        (body.replace(b"Permanent", b"Permanent "), svix_headers(body)),
        (body, svix_headers(body, timestamp=NOW - 301)),
        (body, svix_headers(body, timestamp=NOW + 301)),
        (body, {k: v for k, v in svix_headers(body).items() if k != "svix-id"}),
        (body, {**svix_headers(body), "svix-id": "msg_other"}),
    ]
    for content, headers in cases:
        answer = client.post("/webhooks/resend", content=content, headers=headers)
        assert answer.status_code == 400, answer.text
    assert status_of(engine) == "active" and stored_events(engine) == []


def test_resend_secret_without_prefix_is_503(make_client, engine):
    client = make_client(base64.b64encode(RS_KEY).decode())
    body = rs_event()
    assert client.post("/webhooks/resend", content=body,
                       headers=svix_headers(body)).status_code == 503


# --- the route itself ---------------------------------------------------------------------------

def test_unknown_provider_and_missing_secret(settings, engine):
    app = FastAPI()
    app.include_router(make_router(settings, engine, clock=lambda: NOW))  # no webhook secret
    client = TestClient(app)
    assert client.post("/webhooks/mandrill", content=b"{}").status_code == 404
    assert client.post("/webhooks/postmark", json=pm_bounce(),
                       headers=pm_auth()).status_code == 503


def test_clock_may_be_a_datetime(settings, engine):
    configured = settings.model_copy(update={"webhook_secret": SecretStr(RS_SECRET)})
    app = FastAPI()
    app.include_router(make_router(configured, engine,
                                   clock=lambda: dt.datetime.fromtimestamp(NOW, dt.timezone.utc)))
    body = rs_event(to="nobody@inbox.example")
    answer = TestClient(app).post("/webhooks/resend", content=body, headers=svix_headers(body))
    assert answer.status_code == 200 and answer.json()["applied"] == 0  # unknown address


def test_concurrent_delivery_of_one_event_applies_it_once(make_client, engine):
    """Another delivery of the same event is mid-transaction: ours must wait for it and then
    count as a duplicate (on PostgreSQL through the unique index and a re-read)."""
    import threading
    import time

    from sqlalchemy import text

    from digest.outcomes.base import ProviderEvent
    from digest.outcomes.record import record_events

    make_client(PM_SECRET)  # seeds the subscribers
    at = dt.datetime.fromtimestamp(NOW, dt.timezone.utc)
    event = ProviderEvent("sendgrid", "ev-race", "bounced", READER, "2026-W47", True, at)
    other = Session(engine)
    other.add(WebhookEvent(provider="sendgrid", event_id="ev-race", kind="bounced",
                           received_at=at))
    other.flush()  # holds the row (and on SQLite the write lock) until it commits

    results = []
    worker = threading.Thread(target=lambda: results.append(record_events(engine, [event],
                                                                          now=at)))
    worker.start()
    if engine.dialect.name == "postgresql":  # wait until ours is blocked on the unique index
        with engine.connect() as conn:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not conn.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
                    ).scalar():
                conn.rollback()
                time.sleep(0.005)
    other.commit()
    other.close()
    worker.join(timeout=30)
    assert results and results[0].duplicates == 1 and results[0].applied == 0
    assert status_of(engine) == "active"


# --- genuine events whose fields cannot be read ------------------------------------------------
# Signed as the provider signs, so they reach the parser: each is skipped and counted (no 500,
# which the provider would retry forever), the rest of the request applies, and the log names
# the field and its type but never the address.

def assert_logged_without_address(caplog, *expected: str) -> None:
    logged = " ".join(r.getMessage() for r in caplog.records)
    for text in expected:
        assert text in logged, logged
    assert READER not in logged and OTHER not in logged and "12345" not in logged


@pytest.mark.parametrize("email", [12345, [READER], {"address": READER}, True])
def test_postmark_address_that_is_not_a_string_is_skipped(make_client, engine, caplog, email):
    client = make_client(PM_SECRET)
    answer = client.post("/webhooks/postmark", json=pm_bounce(email=email), headers=pm_auth())
    assert answer.status_code == 200
    assert answer.json() == {"received": 1, "applied": 0, "duplicates": 0, "ignored": 0,
                             "malformed": 1, "soft_bounces": 0}
    assert status_of(engine) == "active" and stored_events(engine) == []
    assert_logged_without_address(caplog, "Email is")
    # The next genuine event is applied as usual.
    assert client.post("/webhooks/postmark", json=pm_bounce(bounce_id=5),
                       headers=pm_auth()).json()["applied"] == 1


def test_postmark_other_fields_of_the_wrong_type(make_client, engine):
    client = make_client(PM_SECRET)
    odd_type = dict(pm_bounce(), Type=["HardBounce"])  # not a bounce type we know: soft
    assert client.post("/webhooks/postmark", json=odd_type,
                       headers=pm_auth()).json()["ignored"] == 1
    change = {"RecordType": "SubscriptionChange", "MessageID": "a8c1", "Recipient": [OTHER],
              "SuppressSending": True, "SuppressionReason": ["ManualSuppression"]}
    assert client.post("/webhooks/postmark", json=change,
                       headers=pm_auth()).json()["malformed"] == 1
    assert client.post("/webhooks/postmark", json=[pm_bounce()],
                       headers=pm_auth()).json()["malformed"] == 1
    assert status_of(engine) == status_of(engine, OTHER) == "active"


def test_sendgrid_malformed_events_do_not_fail_the_batch(make_client, engine, sg_keys, caplog):
    private, public = sg_keys
    client = make_client(public)
    body = sg_events(
        {"email": READER, "event": "bounce", "type": "bounce", "sg_event_id": "ok-1"},
        {"email": {}, "event": "bounce", "sg_event_id": "bad-1"},
        {"email": [OTHER], "event": "spamreport", "sg_event_id": "bad-2"},
        {"email": 12345, "event": "unsubscribe", "sg_event_id": "bad-3"},
        {"email": OTHER, "event": "group_unsubscribe", "sg_event_id": "ok-2"})
    items = json.loads(body)
    items.insert(2, "not an event")
    body = json.dumps(items).encode()
    answer = client.post("/webhooks/sendgrid", content=body, headers=sg_signed(private, body))
    assert answer.status_code == 200
    assert answer.json() == {"received": 6, "applied": 2, "duplicates": 0, "ignored": 0,
                             "malformed": 4, "soft_bounces": 0}
    assert (status_of(engine), status_of(engine, OTHER)) == ("bounced", "unsubscribed")
    assert sorted(e[1] for e in stored_events(engine)) == ["ok-1", "ok-2"]
    assert_logged_without_address(caplog, "event 2 of 6: email is an object",
                                  "event 3 of 6: the event is not a JSON object",
                                  "event 4 of 6: email is a list",
                                  "event 5 of 6: email is a number")
    # SendGrid's retry of the same batch: the good events are duplicates, nothing changes.
    again = client.post("/webhooks/sendgrid", content=body, headers=sg_signed(private, body))
    assert again.json() == {"received": 6, "applied": 0, "duplicates": 2, "ignored": 0,
                            "malformed": 4, "soft_bounces": 0}


def test_mailgun_malformed_event_still_uses_up_its_token(make_client, engine, caplog):
    client = make_client(MG_KEY)
    body = mg_body({**mg_failed(), "recipient": 12345}, token="m" * 50)
    answer = client.post("/webhooks/mailgun", content=body)
    assert answer.status_code == 200 and answer.json()["malformed"] == 1
    assert status_of(engine) == "active"
    assert_logged_without_address(caplog, "recipient is a number")
    # The captured signature cannot carry a readable forged event afterwards.
    captured = json.loads(body)
    forged = json.dumps({"signature": captured["signature"], "event-data": mg_failed("permanent",
                                                                                   "bounce", "f")})
    assert client.post("/webhooks/mailgun", content=forged).json()["duplicates"] == 1
    assert status_of(engine) == "active"
    no_data = mg_body({"event": "failed"}, token="n" * 50).replace(b'{"event": "failed"}', b"[]")
    assert client.post("/webhooks/mailgun", content=no_data).json()["malformed"] == 1


@pytest.mark.parametrize("to", [[5], {}, 12345, [[READER]]])
def test_resend_recipient_that_is_not_a_string_is_skipped(make_client, engine, caplog, to):
    client = make_client(RS_SECRET)
    payload = json.loads(rs_event())
    payload["data"]["to"] = to
    body = json.dumps(payload).encode()
    answer = client.post("/webhooks/resend", content=body, headers=svix_headers(body))
    assert answer.status_code == 200
    assert answer.json() == {"received": 1, "applied": 0, "duplicates": 0, "ignored": 0,
                             "malformed": 1, "soft_bounces": 0}
    assert status_of(engine) == "active" and stored_events(engine) == []
    assert_logged_without_address(caplog, "to is")
