"""`digest serve`'s access log, captured from real requests to a real uvicorn server on
loopback: every line keeps the method, route, status and time, and no token."""

from __future__ import annotations

import logging
import re
import socket
import threading

import httpx
import uvicorn
from sqlmodel import Session

from digest.cli.serve import log_config
from digest.web.app import create_app
from subscribers import lifecycle
from subscribers.links import Links
from subscribers.storage import utcnow
from subscribers.tokens import Signer


class Lines(logging.Handler):
    """Keeps each access line as the server's own access handler formats it."""

    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__()
        self.setFormatter(formatter)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def test_the_access_log_keeps_method_route_status_and_time_and_no_token(settings, engine):
    with Session(engine) as session:
        reader = lifecycle.add(session, "reader@example.org", at=utcnow())
        session.commit()
        reader_id, address = int(reader.id), reader.email
    links = Links(settings.base_url, Signer(settings.signing_key()))
    tokens = {"confirm": links.confirm(reader_id, address).rsplit("/", 1)[1],
              "unsubscribe": links.unsubscribe(reader_id, address).rsplit("/", 1)[1],
              "view": links.view("2026-W47", reader_id, address).split("?t=")[1]}
    requests = [("GET", f"/confirm/{tokens['confirm']}", "/confirm/[token]"),
                ("GET", f"/u/{tokens['unsubscribe']}", "/u/[token]"),
                ("POST", f"/u/{tokens['unsubscribe']}", "/u/[token]"),
                ("GET", f"/subscribe?t={tokens['unsubscribe']}", "/subscribe?t=[token]"),
                ("GET", f"/issues/2026-W47?t={tokens['view']}&utm=x",
                 "/issues/2026-W47?t=[token]&utm=x"),
                ("GET", "/subscribe", "/subscribe")]

    config = uvicorn.Config(create_app(settings, engine), log_config=log_config(),
                            lifespan="off")  # configures logging as `digest serve` does
    access = logging.getLogger("uvicorn.access")
    lines = Lines(access.handlers[0].formatter)
    access.addHandler(lines)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()  # connections wait in the listening socket's queue until it serves
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            statuses = [client.request(method, path).status_code for method, path, _ in requests]
    finally:
        server.should_exit = True
        thread.join(30)
        access.removeHandler(lines)
        listener.close()

    assert statuses == [200, 200, 200, 200, 404, 200]  # no issue 2026-W47 stored
    assert len(lines.lines) == len(requests)
    for line, (method, _, logged), status in zip(lines.lines, requests, statuses):
        assert f'"{method} {logged} HTTP/1.1" {status}' in line, line
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", line), f"no time in {line!r}"
        for token in tokens.values():
            assert token not in line
            assert token.split(".")[-1] not in line  # not even the MAC
