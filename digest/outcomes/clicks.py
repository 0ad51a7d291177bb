"""Click counts without following people: signed link tokens, machine-click filtering, and
buffered counters.

A link in the email points at `{base}/r/{token}`, where the token names only the issue and the
link's number in it (`2026-W47.3.<mac>`): the same for every reader, so the issue is still
rendered once and a click cannot be tied to a person. The destination is the URL stored for that
link when the issue was composed, never anything taken from the request. With the opt-in
`per-subscriber` mode each recipient's copy also carries `?r=<reader token>` (one MAC per
recipient, bound to the issue and, like every subscriber token, to the reader's address), and
the reader is recorded for unique-reader counts while that address is still theirs.

Machines follow links too: mail security gateways open every link of a message seconds after
delivery, previews send HEAD requests. Those are counted apart, never mixed into the people.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from digest.database import session_scope, utcnow
from digest.database.models import Issue, IssueLink, LinkClick, LinkReader

log = logging.getLogger(__name__)

_MAC_BYTES = 12
_KEY_RE = re.compile(r"\d{4}-W\d{2}")

# User agents of link scanners, prefetchers and scripts (case-insensitive substrings). A person's
# browser never sends these; an empty user agent counts as a machine too.
SCANNER_AGENTS = re.compile(
    r"bot\b|bot/|crawler|spider|slurp|preview|scanner|proofpoint|urldefense|mimecast|barracuda|"
    r"safelinks|messagelabs|symantec|forcepoint|fortiguard|trendmicro|sophos|zscaler|"
    r"ironport|cisco|fireeye|checkpoint|existence discovery|headlesschrome|phantomjs|"
    r"python-requests|python-httpx|python-urllib|aiohttp|go-http-client|java/|okhttp|"
    r"libwww|curl/|wget/|httpclient|axios/|node-fetch|facebookexternalhit|whatsapp|"
    r"skypeuripreview|slackbot|discordbot|linkexpanding", re.I)

# Every link of one issue (or this many, when it has more) from one client within this many
# seconds: a scanner opening every link of the message at once, not a person reading. A person
# opening a few comparisons in new tabs stays under it.
BURST_SECONDS = 5.0
BURST_LINKS = 5


@dataclass(frozen=True, slots=True)
class Reader:
    """Whom a genuine reader token names: the id, and the `id.tag` it was bound to (None for a
    token from before they were bound, which is counted for nobody)."""

    subscriber_id: int
    holder: str | None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class ClickSigner:
    """MACs for link tokens and reader tokens, each under its own key derived from the
    project's secret, so neither can stand in for the other or for a subscriber token."""

    def __init__(self, key: bytes) -> None:
        self._link = hmac.new(key, b"verdict-digest/click/link", hashlib.sha256).digest()
        self._reader = hmac.new(key, b"verdict-digest/click/reader", hashlib.sha256).digest()
        self._client = hmac.new(key, b"verdict-digest/click/client", hashlib.sha256).digest()

    @staticmethod
    def _mac(key: bytes, body: str) -> str:
        return _b64(hmac.new(key, body.encode(), hashlib.sha256).digest()[:_MAC_BYTES])

    def link_token(self, issue_key: str, link_no: int) -> str:
        body = f"{issue_key}.{link_no}"
        return f"{body}.{self._mac(self._link, body)}"

    def verify_link(self, token: str) -> tuple[str, int] | None:
        """(issue key, link number) of a genuine token; None for anything else."""
        parts = token.split(".")
        if len(parts) != 3 or not _KEY_RE.fullmatch(parts[0]) or not parts[1].isdigit():
            return None
        body = f"{parts[0]}.{parts[1]}"
        if not hmac.compare_digest(parts[2].encode(), self._mac(self._link, body).encode()):
            return None
        return parts[0], int(parts[1])

    def reader_token(self, issue_key: str, holder: str) -> str:
        """A reader's token for one issue. `holder` is `Links.holders`' `7.<tag>`: the reader's
        id bound to their stored address, as every subscriber token is, so a token issued
        before the address changed (or before the id went to someone else) names nobody."""
        return self.reader_tokens(issue_key, [holder])[0]

    def reader_tokens(self, issue_key: str, holders: Sequence[str]) -> list[str]:
        """A batch's reader tokens (`7.<tag>.<mac>`): the HMAC key state is prepared once and
        copied per token."""
        base = hmac.new(self._reader, digestmod=hashlib.sha256)
        prefix = f"{issue_key}."
        out = []
        for holder in holders:
            mac = base.copy()
            mac.update((prefix + holder).encode())
            out.append(f"{holder}.{_b64(mac.digest()[:_MAC_BYTES])}")
        return out

    def verify_reader(self, issue_key: str, token: str) -> Reader | None:
        """The reader a genuine token of this issue names, or None. A token from before reader
        tokens were bound (`7.<mac>`) is genuine but names no holder: its click counts, for
        nobody."""
        parts = token.split(".")
        if len(parts) not in (2, 3) or not parts[0].isdigit() or not all(parts):
            return None
        body = f"{issue_key}.{'.'.join(parts[:-1])}"
        if not hmac.compare_digest(parts[-1].encode(), self._mac(self._reader, body).encode()):
            return None
        return Reader(int(parts[0]), ".".join(parts[:-1]) if len(parts) == 3 else None)

    def client_key(self, *parts: str) -> bytes:
        """A keyed digest of the client, held in memory for a few seconds and never stored."""
        return hmac.new(self._client, "\x1f".join(parts).encode(), hashlib.sha256).digest()[:16]


def redirect_path(issue_key: str, link_no: int, signer: ClickSigner) -> str:
    return f"/r/{signer.link_token(issue_key, link_no)}"


# --- telling machines from people ---------------------------------------------------------------

def scanner_agent(user_agent: str | None) -> bool:
    return not user_agent or not user_agent.strip() or bool(SCANNER_AGENTS.search(user_agent))


class BurstDetector:
    """Remembers, for a few seconds and in memory only, which links of an issue each client
    (a keyed digest) followed. The click that completes every link of the issue (at most
    `BURST_LINKS` different ones) within `BURST_SECONDS` marks that client's clicks in the window
    as a machine's."""

    def __init__(self, *, seconds: float = BURST_SECONDS, links: int = BURST_LINKS,
                 limit: int = 50_000) -> None:
        self.seconds, self.links, self.limit = seconds, links, limit
        self._seen: collections.OrderedDict[tuple, list[tuple[float, int, bool]]] = \
            collections.OrderedDict()
        self._lock = threading.Lock()

    def observe(self, client: bytes, issue_id: int, link_no: int, now: float,
                links_in_issue: int) -> tuple[bool, list[int]]:
        """(this click is a machine's, the links of this client's earlier clicks to move from
        people to machines)."""
        needed = max(2, min(self.links, links_in_issue))
        key = (client, issue_id)
        with self._lock:
            self._expire(now)
            recent = [c for c in self._seen.pop(key, []) if now - c[0] <= self.seconds]
            recent.append((now, link_no, False))
            burst = len({c[1] for c in recent}) >= needed
            moved: list[int] = []
            if burst:
                moved = [n for _, n, machine in recent[:-1] if not machine]
                recent = [(t, n, True) for t, n, _ in recent]
            self._seen[key] = recent
        return burst, moved

    def _expire(self, now: float) -> None:
        while self._seen:
            key, clicks = next(iter(self._seen.items()))
            if now - clicks[-1][0] <= self.seconds and len(self._seen) <= self.limit:
                break
            self._seen.popitem(last=False)


# --- the counters ---------------------------------------------------------------------------------

Bind = Callable[[Sequence[int], Sequence[str]], list[str]]


@dataclass(frozen=True)
class StoredLinks:
    issue_id: int
    urls: dict[int, str]


class LinkCache:
    """Stored links per issue key. Links are frozen with the issue, so they are read once."""

    def __init__(self, engine: Engine, limit: int = 256) -> None:
        self.engine, self.limit = engine, limit
        self._cache: dict[str, StoredLinks] = {}
        self._lock = threading.Lock()

    def cached(self, issue_key: str) -> StoredLinks | None:
        """Without touching the database (None: not read yet, or no such issue)."""
        return self._cache.get(issue_key)

    def get(self, issue_key: str) -> StoredLinks | None:
        found = self._cache.get(issue_key)
        if found is not None:
            return found
        with session_scope(self.engine) as session:
            rows = session.execute(
                select(Issue.id, IssueLink.link_no, IssueLink.url)
                .join_from(Issue, IssueLink, IssueLink.issue_id == Issue.id)
                .where(Issue.key == issue_key)).all()
        if not rows:
            return None
        found = StoredLinks(rows[0][0], {no: url for _, no, url in rows})
        with self._lock:
            if len(self._cache) >= self.limit:
                self._cache.pop(next(iter(self._cache)))
            self._cache[issue_key] = found
        return found


class ClickCounter:
    """Adds clicks up in memory and writes them as increments (`human = human + n`), at most
    once per `interval` seconds, so a burst of clicks is one small transaction and several
    server processes add up correctly. `flush()` writes what is pending (the app calls it at
    shutdown and before showing counts)."""

    def __init__(self, engine: Engine, *, interval: float = 1.0,
                 clock: Callable[[], float] = time.time, bind: Bind | None = None) -> None:
        self.engine, self.interval, self.clock = engine, interval, clock
        # `Links.holders`: how a reader is checked against the address a token was bound to.
        self.bind = bind
        self._pending: dict[tuple[int, int], list[int]] = {}
        self._readers: set[tuple[int, int, int, str]] = set()
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._last = clock()

    def add(self, issue_id: int, link_no: int, *, human: int = 0, machine: int = 0,
            reader: Reader | None = None) -> None:
        """Count a click; `reader` (per-subscriber mode) is recorded at the flush if the token's
        holder still is that reader (a token from before holders were bound is not)."""
        with self._lock:
            counts = self._pending.setdefault((issue_id, link_no), [0, 0])
            counts[0] += human
            counts[1] += machine
            if reader is not None and reader.holder is not None:
                self._readers.add((issue_id, link_no, reader.subscriber_id, reader.holder))

    def due(self) -> bool:
        return bool(self._pending or self._readers) and self.clock() - self._last >= self.interval

    def flush(self) -> int:
        """Write the pending increments; returns how many links were written."""
        with self._flush_lock:
            with self._lock:
                pending, self._pending = self._pending, {}
                readers, self._readers = self._readers, set()
                self._last = self.clock()
            if not pending and not readers:
                return 0
            try:
                self._write(pending, readers)
            except IntegrityError:
                # The issue was deleted meanwhile: its counts have nowhere to go.
                log.warning("dropped click counts of %d links: their issue is gone", len(pending))
                return 0
            except Exception:
                with self._lock:  # keep them for the next flush rather than lose them
                    for key, (h, m) in pending.items():
                        counts = self._pending.setdefault(key, [0, 0])
                        counts[0] += h
                        counts[1] += m
                    self._readers |= readers
                raise
            return len(pending)

    def _held(self, session, readers: set[tuple[int, int, int, str]]
              ) -> set[tuple[int, int, int]]:
        """The readers whose token was bound to the address their row holds now: one erased
        since, or whose address changed after the mail went out, is nobody."""
        from subscribers.models import Subscriber

        if self.bind is None:
            return set()
        ids = sorted({r[2] for r in readers})
        rows = session.execute(select(Subscriber.id, Subscriber.email)
                               .where(Subscriber.id.in_(ids))).all()
        current = dict(zip([r[0] for r in rows],
                           self.bind([r[0] for r in rows], [r[1] for r in rows])))
        return {(i, n, s) for i, n, s, holder in readers
                if s in current and hmac.compare_digest(holder.encode(), current[s].encode())}

    def _write(self, pending: dict[tuple[int, int], list[int]],
               readers: set[tuple[int, int, int, str]]) -> None:
        now = utcnow()
        table = LinkClick.__table__
        with session_scope(self.engine) as session:
            dialect = session.get_bind().dialect.name
            insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
            for (issue_id, link_no), (human, machine) in sorted(pending.items()):
                stmt = insert(table).values(issue_id=issue_id, link_no=link_no,
                                            human=max(human, 0), machine=machine, updated_at=now)
                stmt = stmt.on_conflict_do_update(
                    index_elements=["issue_id", "link_no"],
                    set_={"human": table.c.human + human, "machine": table.c.machine + machine,
                          "updated_at": now})
                session.execute(stmt)
            held = self._held(session, readers) if readers else set()
            if held:
                rtable = LinkReader.__table__
                stmt = insert(rtable).values([
                    {"issue_id": i, "link_no": n, "subscriber_id": s, "first_at": now}
                    for i, n, s in sorted(held)]).on_conflict_do_nothing()
                session.execute(stmt)


__all__ = ["BURST_LINKS", "BURST_SECONDS", "BurstDetector", "ClickCounter", "ClickSigner",
           "LinkCache", "Reader", "SCANNER_AGENTS", "StoredLinks", "redirect_path", "scanner_agent"]
