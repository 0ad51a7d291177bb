"""Webhook bodies are size-checked before they are read: a declared length over the limit is
refused without reading a byte, a chunked body after at most the limit and one more chunk.

The app is driven through its ASGI interface with a `receive` that counts what the route pulls
from the client, which is exactly what a server would have had to hold."""

from __future__ import annotations

import asyncio
import datetime as dt
import base64
import json
import socket
import threading

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlmodel import Session, select

from digest.web.webhooks import MAX_BODY, make_router
from subscribers import lifecycle
from subscribers.models import Subscriber

NOW = 1795424400.0
SECRET = "hooks:s3cret-pass"
AUTH = "Basic " + base64.b64encode(SECRET.encode()).decode()
CHUNK = 64 * 1024


@pytest.fixture
def app(settings, engine) -> FastAPI:
    configured = settings.model_copy(update={"webhook_secret": SecretStr(SECRET)})
    app = FastAPI()
    app.include_router(make_router(configured, engine, clock=lambda: NOW))
    return app


class Upload:
    """The client's side of one request body: `total` bytes in `CHUNK`s, handed out only when
    the app asks for them, counted."""

    def __init__(self, total: int) -> None:
        self.total, self.consumed, self.calls = total, 0, 0

    async def receive(self) -> dict:
        self.calls += 1
        size = min(CHUNK, self.total - self.consumed)
        self.consumed += size
        return {"type": "http.request", "body": b"x" * size,
                "more_body": self.consumed < self.total}


def call(app: FastAPI, headers: dict[str, str], upload: Upload) -> tuple[int, dict]:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/webhooks/postmark",
             "raw_path": b"/webhooks/postmark", "query_string": b"", "root_path": "",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
             "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000)}
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, upload.receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body)


def test_a_declared_length_over_the_limit_is_refused_unread(app):
    upload = Upload(MAX_BODY + 1)
    status, answer = call(app, {"content-length": str(MAX_BODY + 1), "authorization": AUTH,
                                "content-type": "application/json"}, upload)
    assert status == 413 and "body over" in answer["detail"]
    assert upload.calls == 0 and upload.consumed == 0


def test_a_chunked_body_is_refused_after_the_limit_and_one_chunk(app):
    upload = Upload(3 * MAX_BODY)  # a client that would go on sending
    status, _ = call(app, {"transfer-encoding": "chunked", "authorization": AUTH,
                           "content-type": "application/json"}, upload)
    assert status == 413
    assert MAX_BODY < upload.consumed <= MAX_BODY + CHUNK


def test_an_unsigned_oversized_body_is_refused_the_same_way(app):
    upload = Upload(3 * MAX_BODY)
    status, _ = call(app, {"transfer-encoding": "chunked"}, upload)
    assert status == 413 and upload.consumed <= MAX_BODY + CHUNK


def test_bodies_within_the_limit_still_work_chunked_or_not(app, engine):
    with Session(engine) as session:
        lifecycle.add(session, "reader@example.com", confirmed=True,
                      at=dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc))
        session.commit()
    event = {"RecordType": "Bounce", "ID": 99, "Type": "HardBounce",
             "Email": "reader@example.com", "BouncedAt": "2026-11-23T08:59:00Z"}
    body = json.dumps(event).encode()
    client = TestClient(app)
    chunked = client.post("/webhooks/postmark", content=iter([body[:20], body[20:]]),
                          headers={"Authorization": AUTH})
    assert chunked.status_code == 200 and chunked.json()["applied"] == 1
    # Padding up to exactly the limit is still read (whitespace is valid JSON).
    padded = body + b" " * (MAX_BODY - len(body))
    assert client.post("/webhooks/postmark", content=padded,
                       headers={"Authorization": AUTH}).json()["duplicates"] == 1
    with Session(engine) as session:
        assert session.exec(select(Subscriber.status)).one() == "bounced"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_uvicorn_answers_413_before_the_body_arrives(app):
    """Over a real socket: the headers announce 200 MB, none of it is sent, and the answer
    comes anyway (the old code waited for the whole body)."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"POST /webhooks/postmark HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Type: application/json\r\n"
                         b"Content-Length: 209715200\r\n\r\n")
            answer = b""
            while b"\r\n\r\n" not in answer:
                data = conn.recv(4096)
                if not data:
                    break
                answer += data
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
