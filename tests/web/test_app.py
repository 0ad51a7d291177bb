"""The composed web app: subscriber routes, webhooks and the operators' preview in one place."""

from __future__ import annotations

import datetime as dt
import socket
import threading

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from digest.web.app import create_app
from factories import sample_comparisons, store

NOW = dt.datetime(2026, 11, 25, 12, tzinfo=dt.timezone.utc)


LOCAL = ("127.0.0.1", 50000)
VISITOR = ("203.0.113.5", 1234)


def _client(settings, engine, *, client=LOCAL, headers=None, **kwargs) -> TestClient:
    return TestClient(create_app(settings, engine, clock=lambda: NOW, **kwargs),
                      follow_redirects=False, client=client, headers=headers)


def _store_week(engine) -> None:
    with Session(engine) as session:
        store(session, sample_comparisons(2, start=dt.datetime(2026, 11, 23, 9, tzinfo=dt.timezone.utc)))
        session.commit()


def test_preview_is_mounted_locally(settings, engine):
    _store_week(engine)
    client = _client(settings, engine)
    first = client.get("/preview/")
    assert first.status_code == 303 and first.headers["location"] == "/preview/week/2026-W48"
    page = client.get("/preview/week/2026-W48")
    assert page.status_code == 200
    assert 'src="/preview/week/2026-W48/email.html"' in page.text
    email = client.get("/preview/week/2026-W48/email.html")
    assert email.status_code == 200 and "Unsubscribe" in email.text


PREVIEW_PATHS = ("/preview", "/preview/", "/preview/week/2026-W48",
                 "/preview/week/2026-W48/email.html", "/preview/week/2026-W48/email.txt")


def test_preview_is_decided_per_request_not_by_the_listening_address(settings, engine):
    """Listening on 0.0.0.0 (`public`) with an operator on the machine: allowed. A visitor,
    directly or through the reverse proxy, gets 404 whatever address the app listens on."""
    _store_week(engine)
    proxied = settings.model_copy(update={"trusted_proxies": "127.0.0.1"})
    for public in (False, True):
        assert _client(settings, engine, public=public).get("/preview/").status_code == 303
        assert _client(settings, engine, public=public,
                       client=("::1", 50000)).get("/preview/").status_code == 303
        visitors = [
            _client(settings, engine, public=public, client=VISITOR),
            # the reverse proxy on loopback relays a visitor's request
            _client(proxied, engine, public=public,
                    headers={"X-Forwarded-For": "203.0.113.5"}),
            _client(proxied, engine, public=public,
                    headers={"Forwarded": "for=203.0.113.5;proto=https"}),
            # a proxy nobody declared: its loopback connection vouches for no one
            _client(settings, engine, public=public,
                    headers={"X-Forwarded-For": "203.0.113.5"}),
            # a visitor claiming to be local: the header is not from a trusted proxy
            _client(proxied, engine, public=public, client=VISITOR,
                    headers={"X-Forwarded-For": "127.0.0.1"}),
        ]
        for visitor in visitors:
            for path in PREVIEW_PATHS:
                answer = visitor.get(path)
                assert answer.status_code == 404, (public, path, answer.status_code)
                assert "Quill" not in answer.text and "2026-W48" not in answer.text
    # The operator on the proxy's machine, through the proxy.
    through_proxy = _client(proxied, engine, public=True, headers={"X-Forwarded-For": "127.0.0.1"})
    assert through_proxy.get("/preview").status_code == 307
    assert through_proxy.get("/preview/week/2026-W48").status_code == 200


def test_preview_public_opt_in_opens_it_to_everyone(settings, engine):
    opened = settings.model_copy(update={"preview_public": True})
    assert _client(opened, engine, public=True, client=VISITOR).get("/preview/").status_code == 303


def test_signup_rate_limit_counts_the_real_client_behind_a_trusted_proxy(settings, engine):
    """Two visitors behind one proxy are two clients; a visitor cannot buy a fresh allowance
    by writing X-Forwarded-For itself."""
    proxied = settings.model_copy(update={"trusted_proxies": "127.0.0.1"})
    app = create_app(proxied, engine, clock=lambda: NOW)

    def signup(client: TestClient, i: int, forwarded_for: str | None = None) -> int:
        headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
        return client.post("/subscribe", data={"email": f"r{i}@example.com", "name": "",
                                               "website": ""}, headers=headers).status_code

    proxy = TestClient(app, client=LOCAL)
    assert [signup(proxy, i, "203.0.113.5") for i in range(6)] == [200] * 5 + [429]
    assert signup(proxy, 6, "198.51.100.2") == 200  # another visitor behind the same proxy

    direct = TestClient(app, client=("192.0.2.200", 1234))
    assert [signup(direct, 10 + i, f"192.0.2.{i}") for i in range(6)] == [200] * 5 + [429]


def test_webhooks_are_mounted(settings, engine):
    client = _client(settings, engine)
    # No webhook secret configured: refused without touching anything, and says so.
    response = client.post("/webhooks/postmark", json={"RecordType": "Bounce"})
    assert response.status_code in (400, 401, 503)
    assert client.post("/webhooks/pigeon", json={}).status_code == 404


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_preview_guard_under_uvicorn_on_loopback(settings, engine):
    """The real server, as `digest serve --host 0.0.0.0` builds the app (bound to loopback here:
    nothing but 127.0.0.1 receives traffic): the peer comes from a real socket."""
    import uvicorn

    _store_week(engine)
    proxied = settings.model_copy(update={"trusted_proxies": "127.0.0.1"})
    app = create_app(proxied, engine, clock=lambda: NOW, public=True)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()  # connections queue until the server thread accepts them: no waiting
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off",
                                           proxy_headers=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            assert http.get("/preview/week/2026-W48").status_code == 200
            assert http.get("/preview/week/2026-W48",
                            headers={"X-Forwarded-For": "203.0.113.5"}).status_code == 404
            assert http.get("/preview/week/2026-W48",
                            headers={"X-Forwarded-For": "127.0.0.1"}).status_code == 200
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
