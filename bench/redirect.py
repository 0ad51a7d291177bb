"""Click redirect latency under a steady load on loopback, and the send's per-recipient cost
with counted links (a benchmark, not a test).

    .venv/bin/python bench/redirect.py                       # 200 requests/s for 20 s
    .venv/bin/python bench/redirect.py --rate 400 --seconds 10
    .venv/bin/python bench/redirect.py --recipients-only     # just the per-recipient part

Redirect: the real web app (`digest serve`'s app, uvicorn, one process) on 127.0.0.1 with a
SQLite database holding one composed issue of 12 comparisons. The load is open-loop: requests
are started on a fixed schedule (every 1/rate s) whatever the answers do, over a pool of
keep-alive connections, and each latency is measured from the request's scheduled start to the
answer's last byte, so a slow answer also delays (and is charged to) the ones queued behind it.
Every request is a GET of one of the issue's 12 links with a browser user agent; clicks are
counted as the app counts them (buffered, written at most once a second). Target: p99 < 20 ms
at 200 requests/s.

Per recipient: `RecipientFactory.batch` (signing each recipient's links) plus filling the HTML
and text for each recipient, as a full-body provider does, for the same issue composed with
DIGEST_CLICK_TRACKING=off, aggregate and per-subscriber, 1,000 recipients a run: the modes
take turns for 40 rounds and each step's best round counts. `off` is the cost before click
counting existed: aggregate must match it within noise (the links are the same for everyone
and are part of the body rendered once).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import multiprocessing as mp
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the test factories build realistic comparisons

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120 Safari/537.36"
SECRET = "bench-secret-key-0123456789abcdef"


def _settings(url: str, tracking: str):
    from digest.settings import load_settings

    return load_settings(database_url=url, base_url="http://127.0.0.1:8000",
                         secret_key=SECRET, click_tracking=tracking)


def _compose(url: str, tracking: str):
    from sqlmodel import Session

    from digest.database import make_engine, upgrade
    from digest.edition.compose import compose_issue
    from factories import sample_comparisons, store

    engine = make_engine(url)
    upgrade(engine)
    with Session(engine, expire_on_commit=False) as session:
        store(session, sample_comparisons(12))
        issue = compose_issue(session, _settings(url, tracking), "2026-W47", now=NOW)
        session.commit()
    return engine, issue


def _serve(url: str, sock: socket.socket) -> None:
    import uvicorn

    from digest.database import make_engine
    from digest.web.app import create_app

    app = create_app(_settings(url, "aggregate"), make_engine(url))
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[sock])


async def _load(port: int, paths: list[str], rate: float, seconds: float,
                connections: int) -> list[float]:
    """Open-loop GETs over `connections` keep-alive connections, written as raw HTTP/1.1 so the
    load generator spends little of the shared CPU (an HTTP client library cost more per
    request than the server did)."""
    loop = asyncio.get_running_loop()
    total = int(rate * seconds)
    requests = [(f"GET {p} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: {BROWSER}\r\n"
                 "Accept: text/html\r\n\r\n").encode() for p in paths]
    latencies: list[float] = []
    bad = 0
    state = {"next": 0}

    async def connection(start: float, warmup: bool) -> None:
        nonlocal bad
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            i = state["next"]
            if i >= (len(paths) if warmup else total):
                break
            state["next"] = i + 1
            scheduled = start + i / rate
            delay = scheduled - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(requests[i % len(requests)])
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if length:
                await reader.readexactly(length)
            if not warmup:
                latencies.append(loop.time() - scheduled)
                bad += head[9:12] != b"302"
        writer.close()

    await connection(loop.time(), True)  # the link cache and the first flush
    state["next"] = 0
    start = loop.time() + 0.2
    await asyncio.gather(*(connection(start, False) for _ in range(connections)))
    if bad:
        raise SystemExit(f"{bad} requests were not redirected")
    return latencies


def redirect_bench(rate: float, seconds: float, connections: int) -> dict:
    import re

    folder = tempfile.mkdtemp(prefix="digest-redirect-")
    url = f"sqlite:///{folder}/bench.db"
    engine, issue = _compose(url, "aggregate")
    found = re.findall(r'href="http://127\.0\.0\.1:8000(/r/[^"?]+)', issue.html)
    paths = list(dict.fromkeys(found))
    engine.dispose()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    port = sock.getsockname()[1]
    server = mp.get_context("fork").Process(target=_serve, args=(url, sock), daemon=True)
    server.start()
    try:
        time.sleep(1.0)  # the server process imports and starts
        latencies = asyncio.run(_load(port, paths, rate, seconds, connections))
    finally:
        server.terminate()
        server.join(5)
    ms = sorted(x * 1000 for x in latencies)

    def pct(p: float) -> float:
        return ms[min(len(ms) - 1, int(p / 100 * len(ms)))]

    from sqlalchemy import create_engine, text

    with create_engine(url).connect() as conn:
        counted = conn.execute(text("SELECT sum(human) + sum(machine) FROM link_clicks")).scalar()
    return {"requests": len(ms), "rate": rate, "links": len(paths), "p50_ms": pct(50),
            "p90_ms": pct(90), "p99_ms": pct(99), "max_ms": ms[-1], "counted": counted}


def recipients_bench(rounds: int = 40, n: int = 1000) -> dict:
    """The three modes take turns, round by round, in alternating order (the machine is shared:
    a busy moment then hits all three alike); each step's best round counts, which is the cost
    itself without the other processes' share of the CPU."""
    from digest.delivery.send import issue_parts

    modes = ("off", "aggregate", "per-subscriber")
    setups = {}
    for tracking in modes:
        folder = tempfile.mkdtemp(prefix="digest-recipients-")
        url = f"sqlite:///{folder}/bench.db"
        engine, issue = _compose(url, tracking)
        parts = issue_parts(engine, issue.id, _settings(url, tracking))
        setups[tracking] = (parts.letter, parts.recipients, len(issue.html.encode()))
        engine.dispose()
    rows = [(i, i, f"reader{i}@example.com", f"Reader {i}") for i in range(1, n + 1)]
    best = {t: [float("inf")] * 3 for t in modes}
    for round_no in range(rounds):
        for tracking in (modes if round_no % 2 else modes[::-1]):
            letter, factory, _size = setups[tracking]
            t0 = time.perf_counter()
            recipients = factory.batch(rows)
            t1 = time.perf_counter()
            for recipient in recipients:
                letter.html.fill(recipient.values)
            t2 = time.perf_counter()
            for recipient in recipients:
                letter.text.fill(recipient.values)
            t3 = time.perf_counter()
            for k, seconds in enumerate((t1 - t0, t2 - t1, t3 - t2)):
                best[tracking][k] = min(best[tracking][k], seconds / n * 1e6)
    return {t: {"us_per_recipient": round(sum(best[t]), 2), "steps": [round(x, 2) for x in best[t]],
                "html_bytes": setups[t][2]} for t in modes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--recipients-only", action="store_true")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    if not args.recipients_only:
        r = redirect_bench(args.rate, args.seconds, args.connections)
        print(f"redirect: {r['requests']} GETs at {r['rate']:.0f}/s over {r['links']} links: "
              f"p50 {r['p50_ms']:.2f} ms, p90 {r['p90_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, "
              f"max {r['max_ms']:.2f} ms; clicks counted {r['counted']}")
        print(f"  target p99 < 20 ms: {'met' if r['p99_ms'] < 20 else 'NOT met'}")
    for tracking, figures in recipients_bench().items():
        sign, html, text = figures["steps"]
        print(f"per recipient ({tracking}): {figures['us_per_recipient']:.2f} us = signing "
              f"{sign:.2f} + HTML fill {html:.2f} + text fill {text:.2f} (body "
              f"{figures['html_bytes']:,} bytes)")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
