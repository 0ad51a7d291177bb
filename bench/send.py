"""Delivery throughput against loopback sinks (a benchmark, not a test).

    .venv/bin/python bench/send.py                          # both scenarios, full size
    .venv/bin/python bench/send.py --subscribers 100000 --full-body 20000   # quicker

Scenario 1: SUBSCRIBERS subscribers planned, sent and recorded on SQLite through the SendGrid
provider (substitutions: the body travels once per 1,000 recipients) to a SendGrid-style sink.
Targets at 1,000,000: under 60 s, peak memory under 250 MB.

Scenario 2: FULL_BODY subscribers through the Postmark provider (500 complete messages a call)
to a Postmark-style sink.

Both scenarios are compared with a raw client: `http.client` over one kept-open connection
(the provider's too: one call at a time), posting the provider's own batch payloads, built
with its own `build_request` before the clock starts, so the raw client pays nothing but the
wire and the sink. That is the ceiling; target: the provider at >= 80% of it. Building every
payload ahead would hold gigabytes, so the raw client posts the first `--raw-calls` of them.

Each scenario runs `--rounds` times (default 3), every round in a fresh process with a fresh
database, the send and the raw client alternating which goes first: the machine is shared, and
its load moves between the two halves of a round. The figure is the median ratio; every round
is printed. The first round (the send first) gives the memory figures.

The sinks are stdlib HTTP servers on 127.0.0.1 with Nagle off and keep-alive, each in its own
process so they do not share the sender's interpreter. They parse every body as JSON, as a real
API would, and count the distinct recipients they accepted: every run fails unless that count
is exactly the number it sent (the ledger is not trusted for it). Each scenario runs in a
fresh process; figures are for that process: recipients per second, CPU microseconds per
recipient (user + system, all threads), and peak resident memory (ru_maxrss).
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import multiprocessing as mp
import os
import resource
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
UTC = dt.timezone.utc
SUBSTITUTION_TARGET_S = 60.0
MEMORY_TARGET_MB = 250.0
RAW_TARGET = 0.80  # the provider against the raw client, both scenarios
EDITION = "2026-W47"
COMPOSED_AT = dt.datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


# --- the sinks -----------------------------------------------------------------------------------

class _Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one connection for the whole run, like a pool
    disable_nagle_algorithm = True  # without it, ~40 ms a request

    def log_message(self, *args) -> None:
        pass

    def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/_count":  # for the benchmark, never for a provider
            server = self.server
            counts = {"distinct": len(server.seen),  # type: ignore[attr-defined]
                      "recipients": server.recipients}  # type: ignore[attr-defined]
            body = json.dumps(counts).encode()
            self._answer(200, body, {"Content-Type": "application/json"})
        else:
            self._answer(404, b"{}", {"Content-Type": "application/json"})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server = self.server
        if self.path == "/_reset":
            with server.lock:  # type: ignore[attr-defined]
                server.seen.clear()  # type: ignore[attr-defined]
                server.recipients = 0  # type: ignore[attr-defined]
            self._answer(204, b"")
            return
        data = json.loads(body)
        if self.path == "/v3/mail/send":  # SendGrid: 202, no body, one id for the call
            addresses = [p["to"][0]["email"] for p in data["personalizations"]]
            self._count(addresses)
            self._answer(202, b"", {"X-Message-Id": uuid.uuid4().hex})
        elif self.path == "/email/batch":  # Postmark: one result per message, in order
            self._count([m["To"] for m in data])
            results = [{"ErrorCode": 0, "Message": "OK", "MessageID": str(uuid.uuid4()),
                        "To": m["To"], "SubmittedAt": "2026-11-30T08:00:00Z"} for m in data]
            self._answer(200, json.dumps(results).encode(), {"Content-Type": "application/json"})
        else:
            self._answer(404, b"{}", {"Content-Type": "application/json"})

    def _count(self, addresses: list[str]) -> None:
        server = self.server
        with server.lock:  # type: ignore[attr-defined]
            server.seen.update(addresses)  # type: ignore[attr-defined]
            server.recipients += len(addresses)  # type: ignore[attr-defined]


def _serve(port_queue) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    server.seen, server.recipients = set(), 0  # type: ignore[attr-defined]
    server.lock = threading.Lock()  # type: ignore[attr-defined]
    port_queue.put(server.server_address[1])
    server.serve_forever()


class SinkProcess:
    def __init__(self) -> None:
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        self.process = ctx.Process(target=_serve, args=(queue,), daemon=True)
        self.process.start()
        self.port = queue.get(timeout=30)
        self.url = f"http://127.0.0.1:{self.port}"

    def _call(self, method: str, path: str) -> bytes:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(method, path, body=b"" if method == "POST" else None)
            return conn.getresponse().read()
        finally:
            conn.close()

    def reset(self) -> None:
        self._call("POST", "/_reset")

    def count(self) -> dict:
        return json.loads(self._call("GET", "/_count"))

    def check(self, expected: int, what: str) -> dict:
        """The sink's own count of distinct recipients, which must be exactly `expected`."""
        got = self.count()
        if got["distinct"] != expected or got["recipients"] != expected:
            raise SystemExit(f"{what}: the sink accepted {got['recipients']} recipients, "
                             f"{got['distinct']} distinct; expected {expected}")
        return {"sink_distinct": got["distinct"]}

    def stop(self) -> None:
        self.process.terminate()
        self.process.join(10)


# --- measuring -----------------------------------------------------------------------------------

def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class Measure:
    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), _cpu()

    def stop(self, n: int) -> dict:
        wall, cpu = time.perf_counter() - self.wall, _cpu() - self.cpu
        return {"recipients": n, "seconds": round(wall, 2), "per_second": round(n / wall),
                "cpu_us_per_recipient": round(cpu / n * 1e6, 1)}


# --- the data ----------------------------------------------------------------------------------------

def _database(path: Path, subscribers: int):
    from digest.database import make_engine, upgrade
    from sqlalchemy import text

    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    stamp = "2026-11-01 00:00:00.000000"
    with engine.begin() as conn:  # set-wise in SQLite: no rows through Python
        conn.execute(text("""
            WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count)
            INSERT INTO subscribers (email, name, status, source, created_at, updated_at,
                                     confirmed_at)
            SELECT 'reader' || i || '@example.com', 'Reader ' || i, 'active', 'import',
                   :stamp, :stamp, :stamp FROM n"""), {"count": subscribers, "stamp": stamp})
    return engine


def _issue(engine, settings) -> tuple[int, str]:
    """The demo week's issue as the real pipeline composes it (import -> select -> render)."""
    from digest.edition.compose import compose_issue
    from digest.database import session_scope
    from digest.content.importer import import_paths

    import_paths(engine, [ROOT / "digest" / "content" / "demo_content" / "comparisons.json"])
    with session_scope(engine) as session:
        issue = compose_issue(session, settings, EDITION, now=COMPOSED_AT)
        session.flush()
        if issue.status != "ready":
            raise SystemExit(f"the demo issue did not compose: {issue.status} {issue.status_reason}")
        return issue.id, issue.html


def _settings(db: Path, provider: str, sink: SinkProcess):
    from digest.settings import load_settings

    return load_settings(database_url=f"sqlite:///{db}", provider=provider,
                         provider_url=sink.url, provider_token="bench-token",
                         secret_key="bench-secret-key-0123456789abcdef",
                         base_url="https://digest.example.com", timezone="UTC")


def _send(engine, issue_id: int, settings) -> object:
    from digest.delivery.providers import build_provider
    from digest.delivery.send import send_issue

    with build_provider(settings) as provider:
        report = send_issue(engine, issue_id, provider, settings)
    if not report.complete:
        raise SystemExit(f"send incomplete: {report.as_dict()}")
    return report


# --- the raw client: the ceiling -------------------------------------------------------------

def prebuilt_calls(engine, issue_id: int, settings, provider, limit: int) -> list[tuple]:
    """The provider's own requests for the first `limit` batches of subscribers, built with
    its `build_request` (the same letter, links and batch size as the send): (path, headers,
    body bytes, recipients)."""
    from sqlalchemy import text

    from digest.delivery.send import issue_parts

    parts = issue_parts(engine, issue_id, settings)
    letter, factory = parts.letter, parts.recipients
    size = provider.batch_limit
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, email, name FROM subscribers ORDER BY id LIMIT :n"),
                            {"n": size * limit}).all()
    headers = {k: v for k, v in provider.session.headers.items()}
    calls = []
    for start in range(0, len(rows), size):
        chunk = [(start + i + 1, sid, email, name)
                 for i, (sid, email, name) in enumerate(rows[start:start + size])]
        call = provider.build_request(letter, factory.batch(chunk), f"raw-{start}")
        body = bytes(call.body)
        calls.append((call.path, {**headers, **call.headers, "Content-Type": "application/json",
                                  "Content-Length": str(len(body))}, body, len(chunk)))
    return calls


def raw_client(sink: SinkProcess, calls: list[tuple]) -> dict:
    """`http.client` over one kept-open connection: post, read the answer, nothing else."""
    conn = http.client.HTTPConnection("127.0.0.1", sink.port, timeout=120)
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sent = sum(c[3] for c in calls)
    measure = Measure()
    for path, headers, body, _ in calls:
        conn.request("POST", path, body=body, headers=headers)
        answer = conn.getresponse()
        answer.read()
        if answer.status >= 300:
            raise SystemExit(f"raw client: {path} answered {answer.status}")
    result = measure.stop(sent)
    conn.close()
    return result


# --- the scenarios ------------------------------------------------------------------------------------

def _scenario(provider_name: str, n: int, workdir: Path, raw_calls: int,
              raw_first: bool = False) -> dict:
    """One round: the project's send and the raw client against the same sink, the raw client
    first when `raw_first` (rounds alternate, so a change in the machine's load between the two
    halves does not always favour the same side). The peak RSS is the send's own only when the
    send goes first (the raw client holds its pre-built payloads)."""
    from digest.delivery.providers import build_provider

    sink = SinkProcess()
    db = workdir / f"{provider_name}.db"
    try:
        started = time.perf_counter()
        engine = _database(db, n)
        settings = _settings(db, provider_name, sink)
        issue_id, html = _issue(engine, settings)
        print(f"  seeded {n:,} subscribers in {time.perf_counter() - started:.1f} s; "
              f"issue HTML {len(html.encode()):,} bytes", flush=True)

        def raw_round() -> dict:
            with build_provider(settings) as provider:
                calls = prebuilt_calls(engine, issue_id, settings, provider, raw_calls)
            sink.reset()
            raw = raw_client(sink, calls)
            raw.update(sink.check(raw["recipients"], "raw client"))
            sink.reset()
            return raw

        raw = raw_round() if raw_first else None
        rss_before = _max_rss_mb()
        measure = Measure()
        report = _send(engine, issue_id, settings)
        result = measure.stop(report.sent)
        result["peak_rss_mb"] = None if raw_first else round(_max_rss_mb(), 1)
        result["rss_before_send_mb"] = None if raw_first else round(rss_before, 1)
        result.update(sink.check(n, f"{provider_name} provider"))
        if raw is None:
            raw = raw_round()
        engine.dispose()
        return {"provider": result, "raw": raw, "raw_first": raw_first,
                "ratio": round(result["per_second"] / raw["per_second"], 3)}
    finally:
        sink.stop()
        db.unlink(missing_ok=True)


def substitution(n: int, workdir: Path, raw_calls: int = 100, raw_first: bool = False) -> dict:
    return _scenario("sendgrid", n, workdir, raw_calls, raw_first)


def full_body(n: int, workdir: Path, raw_calls: int = 10, raw_first: bool = False) -> dict:
    return _scenario("postmark", n, workdir, raw_calls, raw_first)


def alternating_rounds(count: int, one_round: Callable[[bool], dict]) -> tuple[list[dict], float]:
    """Run `one_round(second_first)` `count` times, the other side first in every second round
    (the machine is shared and its load moves between the two halves of a round, so it must
    not always favour the same side); returns the rounds and the median of their "ratio"."""
    if count < 1:
        raise SystemExit(f"--rounds must be at least 1, not {count}")
    results = [one_round(i % 2 == 1) for i in range(count)]
    return results, statistics.median(r["ratio"] for r in results)


def rounds(scenario, n: int, workdir: Path, raw_calls: int, count: int) -> dict:
    """`count` rounds, each in a fresh process, alternating which side goes first; the median
    ratio is the figure (the first round, send first, gives the peak memory)."""
    results, median = alternating_rounds(
        count, lambda raw_first: _isolated(scenario, n, workdir, raw_calls, raw_first))
    summary = dict(results[0])
    summary["rounds"] = [{"provider_per_second": r["provider"]["per_second"],
                          "raw_per_second": r["raw"]["per_second"], "ratio": r["ratio"],
                          "raw_first": r["raw_first"],
                          "provider_cpu_us": r["provider"]["cpu_us_per_recipient"],
                          "raw_cpu_us": r["raw"]["cpu_us_per_recipient"]} for r in results]
    summary["ratio"] = median
    return summary


def _run_into(queue, scenario, args) -> None:
    try:
        queue.put(scenario(*args))
    except BaseException as exc:
        queue.put({"error": f"{type(exc).__name__}: {exc}"})
        raise


def _isolated(scenario, *args) -> dict:
    """Run a scenario in a fresh process, so its memory peak is its own."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_run_into, args=(queue, scenario, args))
    process.start()
    result = queue.get()
    process.join()
    if "error" in result:
        raise SystemExit(f"{scenario.__name__} failed: {result['error']}")
    return result


def _print(r: dict, what: str) -> bool:
    p, q = r["provider"], r["raw"]
    passed = r["ratio"] >= RAW_TARGET
    print(f"  provider: {p['per_second']:,} recipients/s, {p['cpu_us_per_recipient']} us "
          f"CPU/recipient, {p['seconds']} s, peak RSS {p['peak_rss_mb']} MB (before the send "
          f"{p['rss_before_send_mb']} MB); sink counted {p['sink_distinct']:,} distinct")
    print(f"  raw client, {what}: {q['per_second']:,} recipients/s over {q['recipients']:,}, "
          f"{q['cpu_us_per_recipient']} us CPU/recipient; sink counted {q['sink_distinct']:,} "
          "distinct")
    for i, one in enumerate(r.get("rounds", [])):
        print(f"  round {i + 1} ({'raw' if one['raw_first'] else 'send'} first): provider "
              f"{one['provider_per_second']:,}/s ({one['provider_cpu_us']} us CPU), raw "
              f"{one['raw_per_second']:,}/s ({one['raw_cpu_us']} us CPU), ratio {one['ratio']:.2f}")
    print(f"  ratio {r['ratio']:.0%}{' (median of the rounds)' if r.get('rounds') else ''} "
          f"(target >= {RAW_TARGET:.0%}) {'PASS' if passed else 'FAIL'}", flush=True)
    return passed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=1_000_000,
                        help="scenario 1 size (substitution provider); 0 skips it")
    parser.add_argument("--full-body", type=int, default=100_000,
                        help="scenario 2 size (full-body provider); 0 skips it")
    parser.add_argument("--raw-calls", type=int, default=0,
                        help="calls the raw client posts (default: 100 SendGrid, 10 Postmark)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds per scenario, each in a fresh process, alternating which "
                             "side goes first; the median ratio counts (default 3)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args(argv)
    figures: dict = {"load_average_start": os.getloadavg()}
    print(f"load average at start {figures['load_average_start']}", flush=True)
    ok = True
    with tempfile.TemporaryDirectory(prefix="digest-bench-") as tmp:
        workdir = Path(tmp)
        if args.full_body:
            print(f"scenario 2: {args.full_body:,} recipients, full-body provider (Postmark-style)",
                  flush=True)
            r = rounds(full_body, args.full_body, workdir, args.raw_calls or 10, args.rounds)
            figures["full_body"] = r
            ok &= _print(r, "the provider's own 500-message calls")
        if args.subscribers:
            print(f"scenario 1: {args.subscribers:,} subscribers, substitution provider "
                  "(SendGrid-style), SQLite", flush=True)
            r = rounds(substitution, args.subscribers, workdir, args.raw_calls or 100,
                       args.rounds)
            figures["substitution"] = r
            ok &= _print(r, "the provider's own 1,000-recipient calls")
            p = r["provider"]
            scale = 1_000_000 / args.subscribers
            time_ok = p["seconds"] * scale < SUBSTITUTION_TARGET_S if scale <= 1 else None
            mem_ok = p["peak_rss_mb"] < MEMORY_TARGET_MB
            if args.subscribers == 1_000_000:
                print(f"  time target < {SUBSTITUTION_TARGET_S:.0f} s "
                      f"{'PASS' if time_ok else 'FAIL'}; memory target < {MEMORY_TARGET_MB:.0f} "
                      f"MB {'PASS' if mem_ok else 'FAIL'}")
                ok &= bool(time_ok) and mem_ok
            else:
                print(f"  (time and memory targets apply at 1,000,000; at this rate 1,000,000 "
                      f"would take about {1_000_000 / p['per_second']:.0f} s)")
    figures["load_average_end"] = os.getloadavg()
    print(f"load average at end {figures['load_average_end']}")
    if args.json:
        print(json.dumps(figures, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
