"""Delivery throughput against loopback sinks (a benchmark, not a test).

    .venv/bin/python bench/send.py                          # both scenarios, full size
    .venv/bin/python bench/send.py --subscribers 100000 --full-body 20000   # quicker

Scenario 1: SUBSCRIBERS subscribers planned, sent and recorded on SQLite through the SendGrid
provider (substitutions: the body travels once per 1,000 recipients) to a SendGrid-style sink.
Targets at 1,000,000: under 60 s, peak memory under 250 MB.

Scenario 2: FULL_BODY subscribers through the Postmark provider (500 complete messages a call)
to a Postmark-style sink, against plain `requests` posting the same bytes (the first batch the
provider sent, captured by the sink) to the same sink. Target: at least 80% of that rate.

The sinks are stdlib HTTP servers on 127.0.0.1 with Nagle off and keep-alive, each in its own
process so they do not share the sender's interpreter. They parse every body as JSON, as a real
API would. Each scenario runs in a fresh process; figures are for that process: recipients per
second, CPU microseconds per recipient (user + system, all threads), and peak resident memory
(ru_maxrss).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UTC = dt.timezone.utc
SUBSTITUTION_TARGET_S = 60.0
MEMORY_TARGET_MB = 250.0
FULL_BODY_TARGET = 0.80
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

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        capture = self.server.capture  # type: ignore[attr-defined]
        if capture and not os.path.exists(capture):
            Path(capture + ".tmp").write_bytes(body)
            os.replace(capture + ".tmp", capture)
        data = json.loads(body)
        if self.path == "/v3/mail/send":  # SendGrid: 202, no body, one id for the call
            count = len(data["personalizations"])
            self.server.recipients += count  # type: ignore[attr-defined]
            self._answer(202, b"", {"X-Message-Id": uuid.uuid4().hex})
        elif self.path == "/email/batch":  # Postmark: one result per message, in order
            self.server.recipients += len(data)  # type: ignore[attr-defined]
            results = [{"ErrorCode": 0, "Message": "OK", "MessageID": str(uuid.uuid4()),
                        "To": m["To"], "SubmittedAt": "2026-11-30T08:00:00Z"} for m in data]
            self._answer(200, json.dumps(results).encode(), {"Content-Type": "application/json"})
        else:
            self._answer(404, b"{}", {"Content-Type": "application/json"})


def _serve(port_queue, capture: str | None) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    server.capture, server.recipients = capture, 0  # type: ignore[attr-defined]
    port_queue.put(server.server_address[1])
    server.serve_forever()


class SinkProcess:
    def __init__(self, capture: str | None = None) -> None:
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        self.process = ctx.Process(target=_serve, args=(queue, capture), daemon=True)
        self.process.start()
        self.url = f"http://127.0.0.1:{queue.get(timeout=30)}"

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


# --- the scenarios ------------------------------------------------------------------------------------

def substitution(n: int, workdir: Path) -> dict:
    sink = SinkProcess()
    try:
        db = workdir / "substitution.db"
        started = time.perf_counter()
        engine = _database(db, n)
        settings = _settings(db, "sendgrid", sink)
        issue_id, html = _issue(engine, settings)
        print(f"  seeded {n:,} subscribers in {time.perf_counter() - started:.1f} s; "
              f"issue HTML {len(html.encode()):,} bytes", flush=True)
        rss_before = _max_rss_mb()
        measure = Measure()
        report = _send(engine, issue_id, settings)
        result = measure.stop(report.sent)
        result["peak_rss_mb"] = round(_max_rss_mb(), 1)
        result["rss_before_send_mb"] = round(rss_before, 1)
        engine.dispose()
        return result
    finally:
        sink.stop()


def full_body(n: int, workdir: Path) -> dict:
    import requests

    capture = str(workdir / "first-batch.json")
    sink = SinkProcess(capture)
    try:
        db = workdir / "full-body.db"
        engine = _database(db, n)
        settings = _settings(db, "postmark", sink)
        issue_id, html = _issue(engine, settings)
        measure = Measure()
        report = _send(engine, issue_id, settings)
        provider_result = measure.stop(report.sent)
        engine.dispose()

        body = Path(capture).read_bytes()
        per_call = len(json.loads(body))
        calls = math.ceil(n / per_call)
        with requests.Session() as session:
            session.headers.update({"Content-Type": "application/json",
                                    "X-Postmark-Server-Token": "bench-token"})
            measure = Measure()
            for _ in range(calls):
                answer = session.post(sink.url + "/email/batch", data=body, timeout=(5, 60))
                answer.raise_for_status()
                answer.json()
            plain = measure.stop(calls * per_call)
        return {"provider": provider_result, "plain_requests": plain,
                "request_bytes": len(body), "messages_per_call": per_call,
                "ratio": round(provider_result["per_second"] / plain["per_second"], 3)}
    finally:
        sink.stop()


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=1_000_000,
                        help="scenario 1 size (substitution provider); 0 skips it")
    parser.add_argument("--full-body", type=int, default=100_000,
                        help="scenario 2 size (full-body provider); 0 skips it")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args(argv)
    figures: dict = {}
    ok = True
    with tempfile.TemporaryDirectory(prefix="digest-bench-") as tmp:
        workdir = Path(tmp)
        if args.full_body:
            print(f"scenario 2: {args.full_body:,} recipients, full-body provider (Postmark-style)",
                  flush=True)
            r = _isolated(full_body, args.full_body, workdir)
            figures["full_body"] = r
            p, q = r["provider"], r["plain_requests"]
            passed = r["ratio"] >= FULL_BODY_TARGET
            ok &= passed
            print(f"  provider: {p['per_second']:,} recipients/s, {p['cpu_us_per_recipient']} us "
                  f"CPU/recipient, {p['seconds']} s")
            print(f"  plain requests, same {r['request_bytes']:,}-byte calls of "
                  f"{r['messages_per_call']}: {q['per_second']:,} recipients/s, "
                  f"{q['cpu_us_per_recipient']} us CPU/recipient")
            print(f"  ratio {r['ratio']:.0%} (target >= {FULL_BODY_TARGET:.0%}) "
                  f"{'PASS' if passed else 'FAIL'}", flush=True)
        if args.subscribers:
            print(f"scenario 1: {args.subscribers:,} subscribers, substitution provider "
                  "(SendGrid-style), SQLite", flush=True)
            r = _isolated(substitution, args.subscribers, workdir)
            figures["substitution"] = r
            scale = 1_000_000 / args.subscribers
            time_ok = r["seconds"] * scale < SUBSTITUTION_TARGET_S if scale <= 1 else None
            mem_ok = r["peak_rss_mb"] < MEMORY_TARGET_MB
            print(f"  planned, sent and recorded in {r['seconds']} s: {r['per_second']:,} "
                  f"recipients/s, {r['cpu_us_per_recipient']} us CPU/recipient, peak RSS "
                  f"{r['peak_rss_mb']} MB (before the send {r['rss_before_send_mb']} MB)")
            if args.subscribers == 1_000_000:
                print(f"  time target < {SUBSTITUTION_TARGET_S:.0f} s "
                      f"{'PASS' if time_ok else 'FAIL'}; memory target < {MEMORY_TARGET_MB:.0f} "
                      f"MB {'PASS' if mem_ok else 'FAIL'}")
                ok &= bool(time_ok) and mem_ok
            else:
                print(f"  (targets apply at 1,000,000; at this rate 1,000,000 would take about "
                      f"{1_000_000 / r['per_second']:.0f} s)")
    if args.json:
        print(json.dumps(figures, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
