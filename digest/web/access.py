"""Who is asking: the real client of a request, and whether it is an operator on this machine.

Operator pages (the preview, the admin pages) are decided per request, never by the address the
server listens on: behind a reverse proxy every request arrives from the proxy, often over
loopback, so "listening on 127.0.0.1" says nothing about the person at the other end.

The rule, used for every decision that depends on the client (operator pages, the signup rate
limit's key):

- The socket's peer is the client, unless the peer is one of `DIGEST_TRUSTED_PROXIES`
  (comma-separated IPs or CIDRs; none by default).
- From a trusted proxy, `X-Forwarded-For` (or RFC 7239 `Forwarded`) is walked from the right,
  past every hop that is itself a trusted proxy; the first untrusted address is the client. A
  proxy appends what it saw, so everything left of that point is the client's own claim and is
  never believed. When every hop is trusted, the leftmost one is the client.
- Headers from a peer that is not a trusted proxy are ignored: anyone can send them.
- An unreadable hop (`unknown`, an obfuscated name, garbage), or `X-Forwarded-For` and
  `Forwarded` naming different clients, leaves the client unknown (None).

A local operator is a loopback client, and only one that reached us directly or through trusted
proxies: a request that carries proxy headers nobody vouches for (a proxy on this machine that
was not declared in `DIGEST_TRUSTED_PROXIES`) is not one, whatever its peer address, because its
real sender is someone else.

Public API (the preview and the admin pages rely on it; keep it stable):
`client_address`, `is_local_operator`, `require_operator` (a FastAPI dependency for routers and
routes) and `OperatorOnly` (an ASGI wrapper for mounted apps).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from functools import lru_cache

from fastapi import HTTPException
from starlette.requests import HTTPConnection
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from digest.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Headers that say a request was relayed. X-Real-IP is never believed (it has no chain to walk),
# but its presence still means a proxy stands between us and the client.
_FORWARDING_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")


@lru_cache(maxsize=8)
def parse_networks(value: str) -> tuple[IPNetwork, ...]:
    """`DIGEST_TRUSTED_PROXIES` as networks: `10.0.0.5, 192.168.0.0/16, ::1`. A bare address is
    a network of one. Raises ValueError naming the entry that is not an address or a CIDR."""
    networks = []
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or a CIDR network "
                             "(e.g. 10.0.0.5 or 10.0.0.0/8)") from None
    return tuple(networks)


def parse_address(raw: str | None) -> IPAddress | None:
    """One address as headers and sockets spell it: `1.2.3.4`, `1.2.3.4:80`, `::1`,
    `[::1]:80`, optionally quoted. IPv4-mapped IPv6 (`::ffff:127.0.0.1`) becomes IPv4, so
    loopback and the trusted list read the same either way. None if it is not an address."""
    if raw is None:
        return None
    text = raw.strip().strip('"').strip()
    if text.startswith("["):  # [v6] or [v6]:port
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # v4:port (a bare v6 address has two colons or more)
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text.split("%")[0])  # drop a v6 zone id
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: IPAddress, networks: Sequence[IPNetwork]) -> bool:
    return any(address.version == net.version and address in net for net in networks)


def _x_forwarded_for(connection: HTTPConnection) -> list[str] | None:
    values = connection.headers.getlist("x-forwarded-for")
    if not values:
        return None
    return [hop.strip() for value in values for hop in value.split(",")]


def _forwarded(connection: HTTPConnection) -> list[str] | None:
    """The `for=` of each element of RFC 7239 `Forwarded`, in order; an element without one
    counts as an unreadable hop."""
    values = connection.headers.getlist("forwarded")
    if not values:
        return None
    hops = []
    for value in values:
        for element in _split_outside_quotes(value, ","):
            found = ""
            for pair in _split_outside_quotes(element, ";"):
                name, _, field = pair.partition("=")
                if name.strip().lower() == "for":
                    found = field.strip()
            hops.append(found)
    return hops


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts, current, quoted = [], [], False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _walk(peer: IPAddress, hops: list[str], networks: Sequence[IPNetwork]) -> IPAddress | None:
    """From the peer leftwards through the chain, past trusted hops."""
    current = peer
    for raw in reversed(hops):
        if not _trusted(current, networks):
            return current
        hop = parse_address(raw)
        if hop is None:
            return None  # a trusted proxy relayed for someone it could not name
        current = hop
    return current


def _resolve(connection: HTTPConnection, settings: Settings) -> tuple[IPAddress | None, bool]:
    """The client and whether every forwarding header present was honoured."""
    peer = parse_address(connection.client.host) if connection.client else None
    forwarded = any(name in connection.headers for name in _FORWARDING_HEADERS)
    if peer is None:
        return None, not forwarded
    networks = parse_networks(settings.trusted_proxies)
    if not _trusted(peer, networks):
        return peer, not forwarded
    chains = [c for c in (_x_forwarded_for(connection), _forwarded(connection)) if c is not None]
    if not chains:
        return peer, not forwarded  # only X-Real-IP (or nothing): the proxy named no client
    clients = {_walk(peer, chain, networks) for chain in chains}
    if len(clients) != 1:
        return None, False  # the two headers disagree: one of them is the client's invention
    return clients.pop(), True


def client_address(request: HTTPConnection, settings: Settings) -> IPAddress | None:
    """The real client of `request` per the trusted-proxy rule above, or None when it cannot
    be known (no peer address, an unreadable hop, contradicting headers)."""
    return _resolve(request, settings)[0]


def is_local_operator(request: HTTPConnection, settings: Settings) -> bool:
    """True when the client is a loopback address and no unvouched-for proxy relayed the
    request: someone on this machine, directly or through the declared proxies."""
    client, honoured = _resolve(request, settings)
    return client is not None and client.is_loopback and honoured


def allows(request: HTTPConnection, settings: Settings, *, public: bool = False) -> bool:
    """Whether an operator page answers this request: always when its public opt-in is set,
    otherwise only to a local operator."""
    return public or is_local_operator(request, settings)


PublicOptIn = bool | Callable[[], bool]


def _opted_in(public: PublicOptIn) -> bool:
    return bool(public() if callable(public) else public)


def require_operator(settings: Settings, *, public: PublicOptIn = False
                     ) -> Callable[[HTTPConnection], None]:
    """A FastAPI dependency that answers 404 (as if the page did not exist) unless the request
    comes from a local operator or the page's public opt-in (`public`, a flag or a function read
    per request) is set:

        router = APIRouter(dependencies=[Depends(require_operator(settings))])
    """

    def guard(request: HTTPConnection) -> None:
        if not allows(request, settings, public=_opted_in(public)):
            raise HTTPException(404, "Not Found")

    return guard


class OperatorOnly:
    """An ASGI wrapper for a mounted app: every request it does not allow gets a plain 404
    before the inner app routes it, so not even a 405 tells which paths exist.

        app.mount("/preview", OperatorOnly(preview_app, settings, public=settings.preview_public))
    """

    def __init__(self, app: ASGIApp, settings: Settings, *, public: PublicOptIn = False) -> None:
        self.app, self.settings, self.public = app, settings, public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and not allows(
                HTTPConnection(scope), self.settings, public=_opted_in(self.public)):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await PlainTextResponse("Not Found", status_code=404)(scope, receive, send)
            return
        await self.app(scope, receive, send)
