"""Who is asking: the client address behind trusted proxies, the local-operator rule, and the
guards built on them, through real Starlette requests (TestClient sets the socket's peer)."""

from __future__ import annotations

import ipaddress
import os

import pytest
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.testclient import TestClient

from digest.errors import ConfigurationError
from digest.settings import load_settings
from digest.web.access import (OperatorOnly, client_address, is_local_operator, parse_address,
                               parse_networks, require_operator)


@pytest.fixture
def base(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no .env from the developer's folder
    for key in [k for k in os.environ if k.startswith("DIGEST_")]:
        monkeypatch.delenv(key)
    return load_settings()


def whoami_app(settings) -> FastAPI:
    app = FastAPI()

    @app.get("/whoami")
    def whoami(request: Request) -> dict:
        address = client_address(request, settings)
        return {"client": None if address is None else str(address),
                "operator": is_local_operator(request, settings)}

    return app


def ask(settings, peer: str, headers: dict[str, str] | list[tuple[str, str]] | None = None):
    client = TestClient(whoami_app(settings), client=(peer, 40000))
    answer = client.get("/whoami", headers=headers)
    assert answer.status_code == 200
    data = answer.json()
    return data["client"], data["operator"]


# --- without trusted proxies (the default) -----------------------------------------------------

def test_the_socket_peer_is_the_client_by_default(base):
    assert base.trusted_proxies == ""
    assert ask(base, "203.0.113.5") == ("203.0.113.5", False)
    assert ask(base, "127.0.0.1") == ("127.0.0.1", True)
    assert ask(base, "::1") == ("::1", True)
    assert ask(base, "::ffff:127.0.0.1") == ("127.0.0.1", True)  # IPv4-mapped loopback
    assert ask(base, "testclient") == (None, False)  # not an address: nobody we can vouch for


def test_an_untrusted_forwarded_for_claiming_loopback_is_ignored(base):
    for headers in ({"X-Forwarded-For": "127.0.0.1"}, {"Forwarded": "for=127.0.0.1"},
                    {"X-Real-IP": "127.0.0.1"}, {"X-Forwarded-For": "::1, 127.0.0.1"}):
        assert ask(base, "198.51.100.9", headers) == ("198.51.100.9", False), headers


def test_a_loopback_peer_relaying_for_someone_is_not_an_operator(base):
    """A reverse proxy on this machine that nobody declared: its connection is loopback, but
    the request it relays is a visitor's."""
    for headers in ({"X-Forwarded-For": "203.0.113.5"}, {"Forwarded": 'for="203.0.113.5"'},
                    {"X-Real-IP": "203.0.113.5"}):
        client, operator = ask(base, "127.0.0.1", headers)
        assert (client, operator) == ("127.0.0.1", False), headers


# --- behind trusted proxies ----------------------------------------------------------------------

def test_forwarded_for_is_walked_from_the_right_past_trusted_hops(base):
    settings = base.model_copy(update={"trusted_proxies": "127.0.0.1, 10.0.0.0/8"})
    # The proxy appends what it saw; whatever the client wrote to the left is never believed.
    assert ask(settings, "127.0.0.1", {"X-Forwarded-For": "127.0.0.1, 203.0.113.5"}) == (
        "203.0.113.5", False)
    assert ask(settings, "127.0.0.1",
               {"X-Forwarded-For": "198.51.100.1, 203.0.113.5, 10.1.2.3"}) == ("203.0.113.5",
                                                                               False)
    assert ask(settings, "127.0.0.1", {"X-Forwarded-For": "203.0.113.5:4711"}) == (
        "203.0.113.5", False)
    # Several header lines read as one list, in order.
    assert ask(settings, "127.0.0.1", [("X-Forwarded-For", "127.0.0.1"),
                                       ("X-Forwarded-For", "203.0.113.7")]) == ("203.0.113.7",
                                                                               False)
    # A loopback client behind the trusted proxy (an operator on the proxy's machine).
    assert ask(settings, "127.0.0.1", {"X-Forwarded-For": "127.0.0.1"}) == ("127.0.0.1", True)
    # The peer is not a trusted proxy: its header is ignored.
    assert ask(settings, "192.0.2.1", {"X-Forwarded-For": "127.0.0.1"}) == ("192.0.2.1", False)


def test_rfc_7239_forwarded(base):
    settings = base.model_copy(update={"trusted_proxies": "127.0.0.1"})
    headers = {"Forwarded": 'for=198.51.100.1;proto=http, for="[2001:db8:cafe::17]:4711";'
                            'proto=https;by=127.0.0.1'}
    assert ask(settings, "127.0.0.1", headers) == ("2001:db8:cafe::17", False)
    assert ask(settings, "127.0.0.1", {"Forwarded": "For=127.0.0.1"}) == ("127.0.0.1", True)


def test_an_unreadable_or_contradicting_chain_leaves_the_client_unknown(base):
    settings = base.model_copy(update={"trusted_proxies": "127.0.0.1"})
    for headers in ({"X-Forwarded-For": "unknown"}, {"Forwarded": "for=_hidden"},
                    {"Forwarded": "proto=https"}, {"X-Forwarded-For": "127.0.0.1, not-an-ip"},
                    # Each header alone would say loopback or a visitor: which one the proxy
                    # wrote is unknowable, so neither is believed.
                    {"X-Forwarded-For": "203.0.113.5", "Forwarded": "for=127.0.0.1"}):
        assert ask(settings, "127.0.0.1", headers) == (None, False), headers
    # Unreadable hops left of the first untrusted one do not matter: they are never reached.
    assert ask(settings, "127.0.0.1", {"X-Forwarded-For": "garbage, 203.0.113.5"}) == (
        "203.0.113.5", False)
    # Both headers naming the same client are fine.
    assert ask(settings, "127.0.0.1", {"X-Forwarded-For": "203.0.113.5",
                                       "Forwarded": "for=203.0.113.5"}) == ("203.0.113.5", False)


def test_a_trusted_proxy_that_names_no_client_is_not_an_operator(base):
    settings = base.model_copy(update={"trusted_proxies": "127.0.0.1"})
    assert ask(settings, "127.0.0.1", {"X-Real-IP": "203.0.113.5"}) == ("127.0.0.1", False)
    assert ask(settings, "127.0.0.1") == ("127.0.0.1", True)  # a direct local request


def test_ipv6_proxies_and_clients(base):
    settings = base.model_copy(update={"trusted_proxies": "2001:db8:1::/48"})
    assert ask(settings, "2001:db8:1::7", {"X-Forwarded-For": "2001:db8:2::9"}) == (
        "2001:db8:2::9", False)
    assert ask(settings, "2001:db8:1::7", {"X-Forwarded-For": "[::1]:51000"}) == ("::1", True)


def test_trusted_proxies_setting_is_validated(base, monkeypatch):
    monkeypatch.setenv("DIGEST_TRUSTED_PROXIES", " 10.0.0.5 , 192.168.7.1/16,::1")
    assert load_settings().trusted_proxies == "10.0.0.5/32,192.168.0.0/16,::1/128"
    monkeypatch.setenv("DIGEST_TRUSTED_PROXIES", "10.0.0.5, proxy.internal")
    with pytest.raises(ConfigurationError, match="DIGEST_TRUSTED_PROXIES: 'proxy.internal'"):
        load_settings()
    with pytest.raises(ValueError, match="'10.0.0.0/33'"):
        parse_networks("10.0.0.0/33")


def test_parse_address_forms():
    assert parse_address("[::1]:80") == ipaddress.ip_address("::1")
    assert parse_address('"192.0.2.1:8080"') == ipaddress.ip_address("192.0.2.1")
    assert parse_address("fe80::1%eth0") == ipaddress.ip_address("fe80::1")
    assert parse_address("::ffff:10.0.0.1") == ipaddress.ip_address("10.0.0.1")
    assert parse_address("unknown") is None and parse_address(None) is None


# --- the guards ----------------------------------------------------------------------------------

def guarded_app(settings, *, public=False) -> FastAPI:
    app = FastAPI()
    router = APIRouter(dependencies=[Depends(require_operator(settings, public=public))])

    @router.get("/admin")
    def admin() -> dict:
        return {"ok": True}

    app.include_router(router)
    inner = FastAPI()

    @inner.get("/page")
    def page() -> dict:
        return {"ok": True}

    app.mount("/ops", OperatorOnly(inner, settings, public=public))
    return app


def test_require_operator_and_operator_only_answer_404_to_everyone_else(base):
    settings = base.model_copy(update={"trusted_proxies": "127.0.0.1"})
    app = guarded_app(settings)
    local = TestClient(app, client=("127.0.0.1", 5000))
    assert local.get("/admin").json() == {"ok": True}
    assert local.get("/ops/page").json() == {"ok": True}
    assert local.post("/ops/page").status_code == 405

    visitor = TestClient(app, client=("203.0.113.5", 5000))
    proxied = TestClient(app, client=("127.0.0.1", 5000),
                         headers={"X-Forwarded-For": "203.0.113.5"})
    for client in (visitor, proxied):
        assert client.get("/admin").status_code == 404
        assert client.get("/ops/page").status_code == 404
        assert client.post("/ops/page").status_code == 404  # not even a 405 gives it away


def test_public_opt_in_is_read_per_request(base):
    opened = {"value": False}
    app = guarded_app(base, public=lambda: opened["value"])
    visitor = TestClient(app, client=("203.0.113.5", 5000))
    assert visitor.get("/admin").status_code == visitor.get("/ops/page").status_code == 404
    opened["value"] = True
    assert visitor.get("/admin").status_code == visitor.get("/ops/page").status_code == 200
    assert TestClient(guarded_app(base, public=True),
                      client=("203.0.113.5", 5000)).get("/ops/page").status_code == 200
