"""The composed web app: subscriber routes, webhooks and the operators' preview in one place."""

from __future__ import annotations

import datetime as dt

from fastapi.testclient import TestClient
from sqlmodel import Session

from digest.web.app import create_app
from factories import sample_comparisons, store

NOW = dt.datetime(2026, 11, 25, 12, tzinfo=dt.timezone.utc)


def _client(settings, engine, **kwargs) -> TestClient:
    return TestClient(create_app(settings, engine, clock=lambda: NOW, **kwargs),
                      follow_redirects=False)


def test_preview_is_mounted_locally(settings, engine):
    with Session(engine) as session:
        store(session, sample_comparisons(2, start=dt.datetime(2026, 11, 23, 9, tzinfo=dt.timezone.utc)))
        session.commit()
    client = _client(settings, engine)
    first = client.get("/preview/")
    assert first.status_code == 303 and first.headers["location"] == "/preview/week/2026-W48"
    page = client.get("/preview/week/2026-W48")
    assert page.status_code == 200
    assert 'src="/preview/week/2026-W48/email.html"' in page.text
    email = client.get("/preview/week/2026-W48/email.html")
    assert email.status_code == 200 and "Unsubscribe" in email.text


def test_public_app_hides_the_preview_unless_configured(settings, engine):
    assert _client(settings, engine, public=True).get("/preview/").status_code == 404
    opened = settings.model_copy(update={"preview_public": True})
    assert _client(opened, engine, public=True).get("/preview/").status_code == 303


def test_webhooks_are_mounted(settings, engine):
    client = _client(settings, engine)
    # No webhook secret configured: refused without touching anything, and says so.
    response = client.post("/webhooks/postmark", json={"RecordType": "Bounce"})
    assert response.status_code in (400, 401, 503)
    assert client.post("/webhooks/pigeon", json={}).status_code == 404
