"""`GET /healthz` on the real app (served on 127.0.0.1), the doctor's check of it, and
`digest doctor` itself: ok/warn/fail with what it saw and the fix, exit 1 on a failure."""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading

import pytest
from fastapi.testclient import TestClient

from delivery_support import REAL_IDENTITY
from dnsserver import zone  # noqa: F401  (fixture)
from fakeserver import Reply, fake_server  # noqa: F401  (fixture)
from digest.cli import common
from digest.preflight.site import check_healthz
from digest.web.app import create_app

UTC = dt.timezone.utc


def test_healthz_answers_while_the_database_does(settings, engine):
    client = TestClient(create_app(settings, engine))
    answer = client.get("/healthz")
    assert (answer.status_code, answer.json()) == (200, {"status": "ok"})
    assert answer.headers["cache-control"] == "no-store"
    broken = create_app(settings, _unreachable_engine())
    down = TestClient(broken).get("/healthz")
    assert (down.status_code, down.json()) == (503, {"status": "unavailable"})


def _unreachable_engine():
    from digest.database import make_engine

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return make_engine(f"postgresql://nobody@127.0.0.1:{port}/none?connect_timeout=2")


@pytest.fixture
def served_app(settings, engine):
    """The real app on a loopback port, as `digest serve` runs it."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings, engine), log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


def test_doctor_reaches_the_served_app(settings, served_app):
    check = check_healthz(settings.model_copy(update={"base_url": served_app}))
    assert (check.name, check.status) == ("site.healthz", "ok")


def test_doctor_reports_an_app_that_does_not_answer(settings):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    check = check_healthz(settings.model_copy(update={"base_url": f"http://127.0.0.1:{port}"}))
    assert check.status == "fail" and "digest serve" in check.fix


def test_doctor_offline_fails_on_placeholders_and_names_the_fix(cli, monkeypatch):
    monkeypatch.setenv("DIGEST_PROVIDER", "postmark")
    monkeypatch.setenv("DIGEST_PROVIDER_TOKEN", "pm-token")
    common.reset()
    result = cli("doctor", "--offline", "--format", "json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    failed = {c["name"]: c for c in report["checks"] if c["status"] == "fail"}
    assert set(failed) == {"identity.from-domain", "identity.base-url",
                           "identity.postal-address"}
    assert failed["identity.from-domain"]["setting"] == "DIGEST_FROM"
    assert "localhost" in failed["identity.from-domain"]["saw"]
    assert failed["identity.base-url"]["fix"].startswith("set DIGEST_BASE_URL")
    warned = {c["name"] for c in report["checks"] if c["status"] == "warn"}
    assert "identity.webhook-credential" in warned

    table = cli("doctor", "--offline")
    assert table.exit_code == 1 and "3 failed" in table.out and "DIGEST_POSTAL_ADDRESS" in table.out


def test_doctor_offline_passes_with_a_real_identity(cli, monkeypatch):
    for key, value in {"DIGEST_PROVIDER": "postmark", "DIGEST_PROVIDER_TOKEN": "pm-token",
                       "DIGEST_WEBHOOK_SECRET": "hooks:pass", **REAL_IDENTITY}.items():
        monkeypatch.setenv(key, value)
    common.reset()
    result = cli("doctor", "--offline", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["failures"] == 0


def test_doctor_runs_every_check_against_loopback_servers(cli, monkeypatch, served_app, zone,
                                                          fake_server):
    """The whole doctor over the network, every server on 127.0.0.1: the provider's API, the
    DNS, and the served app. The base URL must be loopback to be reached here, so that one
    identity check fails (exit 1) while the network checks all pass."""
    fake_server.default = lambda request: Reply(200, {"object": "list", "data": [
        {"id": "d1", "name": "news.verdict-digest.net", "status": "verified",
         "capabilities": {"sending": "enabled"}}]})
    for key, value in {"DIGEST_PROVIDER": "resend", "DIGEST_PROVIDER_TOKEN": "re_full",
                       "DIGEST_PROVIDER_URL": fake_server.url,
                       "DIGEST_WEBHOOK_SECRET": "whsec_" + "A" * 32,
                       "DIGEST_DNS_RESOLVER": f"127.0.0.1:{zone.port}",
                       **REAL_IDENTITY, "DIGEST_BASE_URL": served_app}.items():
        monkeypatch.setenv(key, value)
    common.reset()
    result = cli("doctor", "--format", "json")
    assert result.exit_code == 1, result.output
    checks = {c["name"]: c["status"] for c in json.loads(result.stdout)["checks"]}
    assert {name for name, status in checks.items() if status != "ok"} == {"identity.base-url"}
    for name in ("provider.credentials", "provider.can-send", "dns.spf", "dns.dmarc",
                 "dns.dkim", "dns.bounce-domain", "site.healthz", "content.links",
                 "audience.complaints"):
        assert checks[name] == "ok", name
    assert [r.route for r in fake_server.requests] == ["/domains"]
