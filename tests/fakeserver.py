"""One loopback HTTP server for every provider test: it answers from a script and records
every request exactly as it arrived.

    def test_x(fake_server):
        fake_server.script(Reply(429, {"message": "slow down"}, headers={"Retry-After": "7"}),
                           Reply(200, [...]))
        ... point a provider at fake_server.url ...
        fake_server.requests[0].json()

A reply may be a `Reply`, or a function of the recorded request returning one (to answer the
way the real API does, e.g. one result per message). `Reply(hold=event)` answers only once the
event is set (a slow answer, without sleeping: the test sets the event, or teardown does);
`Reply(drop=True)` reads the request and closes the connection without a word.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

HOLD_LIMIT = 10.0  # seconds a held reply waits at most, so a forgotten event cannot hang a run


@dataclass
class Reply:
    status: int = 200
    body: Any = b""  # bytes, str, or anything JSON-serialisable
    headers: dict[str, str] = field(default_factory=dict)
    hold: threading.Event | None = None
    drop: bool = False

    def encoded(self) -> tuple[bytes, dict[str, str]]:
        headers = dict(self.headers)
        if isinstance(self.body, bytes):
            body = self.body
        elif isinstance(self.body, str):
            body = self.body.encode()
        else:
            body = json.dumps(self.body).encode()
            headers.setdefault("Content-Type", "application/json")
        return body, headers


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    peer: tuple[str, int]

    @property
    def route(self) -> str:
        return urlsplit(self.path).path

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> list[tuple[str, str]]:
        """Fields of a multipart/form-data or urlencoded body, in order, repeats kept."""
        content_type = self.header("content-type") or ""
        if content_type.startswith("application/x-www-form-urlencoded"):
            return parse_qsl(self.body.decode(), keep_blank_values=True)
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + self.body)
        if not message.is_multipart():
            raise AssertionError(f"not a form body: {content_type!r}")
        fields = []
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            # Form fields carry no charset of their own: HTML forms and requests send UTF-8.
            fields.append((name, part.get_payload(decode=True).decode("utf-8")))
        return fields

    def form_dict(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for name, value in self.form():
            out.setdefault(name, []).append(value)
        return out


class FakeServer:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._script: deque[Reply | Callable[[Recorded], Reply]] = deque()
        self.default: Reply | Callable[[Recorded], Reply] = Reply(200, {})
        self._holds: list[threading.Event] = []
        self._lock = threading.Lock()
        self.connections: set[tuple[str, int]] = set()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def script(self, *replies: Reply | Callable[[Recorded], Reply]) -> None:
        """Answer the next requests with these, in order; then with `default`."""
        with self._lock:
            self._script.extend(replies)

    def start(self) -> "FakeServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        for event in self._holds:
            event.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _next(self, recorded: Recorded) -> Reply:
        with self._lock:
            self.requests.append(recorded)
            self.connections.add(recorded.peer)
            reply = self._script.popleft() if self._script else self.default
        if callable(reply):
            reply = reply(recorded)
        if reply.hold is not None:
            self._holds.append(reply.hold)
        return reply

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the real APIs: the pool is exercised
            disable_nagle_algorithm = True  # else every answer waits ~40 ms for a delayed ACK

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                recorded = Recorded(self.command, self.path,
                                    {k.lower(): v for k, v in self.headers.items()}, body,
                                    self.client_address[:2])
                reply = server._next(recorded)
                if reply.hold is not None:
                    reply.hold.wait(HOLD_LIMIT)
                if reply.drop:
                    self.close_connection = True
                    return
                payload, headers = reply.encoded()
                try:
                    self.send_response(reply.status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up waiting: expected

            do_POST = do_GET = do_PUT = do_DELETE = _serve

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler


@pytest.fixture
def fake_server():
    server = FakeServer().start()
    try:
        yield server
    finally:
        server.stop()


# --- requests checked against a provider's published OpenAPI document -----------------------

_SPECS: dict[Path, Any] = {}


def validate_request(spec_path: Path, recorded: Recorded, *, host_url: str) -> None:
    """Validate method, path, parameters, security and body of a recorded request against the
    spec (openapi-core resolves every `$ref`). Skips the test when the spec file is missing."""
    if not spec_path.exists():
        pytest.skip(f"OpenAPI spec not found at {spec_path}")
    from openapi_core import Config, OpenAPI
    from openapi_core.datatypes import RequestParameters
    from werkzeug.datastructures import Headers, ImmutableMultiDict

    if spec_path not in _SPECS:
        if spec_path.suffix == ".json":
            document = json.loads(spec_path.read_text())
        else:
            import yaml

            loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
            document = yaml.load(spec_path.read_text(), Loader=loader)
        # The published document is taken as valid (checking it costs ~2 s); requests are not.
        _SPECS[spec_path] = OpenAPI.from_dict(document, config=Config(spec_validator_cls=None))

    @dataclass
    class _Request:
        host_url: str
        path: str
        method: str
        body: bytes
        content_type: str
        parameters: RequestParameters

    parts = urlsplit(recorded.path)
    request = _Request(host_url, parts.path, recorded.method.lower(), recorded.body,
                       (recorded.header("content-type") or "").lower(),
                       RequestParameters(header=Headers(list(recorded.headers.items())),
                                         query=ImmutableMultiDict(parse_qsl(parts.query)),
                                         cookie=ImmutableMultiDict()))
    _SPECS[spec_path].validate_request(request)
