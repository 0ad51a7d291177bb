"""A send across 50 segments against the same send to one segment (a benchmark, not a test).

    .venv/bin/python bench/segments.py [--subscribers 1000000] [--segments 50] [--rounds 3]

Both runs plan, send and record N subscribers on SQLite through the SendGrid provider to a
SendGrid-style sink on 127.0.0.1 in its own process, each run in a fresh process of its own (so
its memory peak is its own), in the same invocation:

* one segment: every reader wants everything (one edition, the issue's own render);
* segments: readers spread evenly over SEGMENTS preference sets (category subsets, with and
  without ship-only) that each have content in the demo week.

The sink parses every request, counts the distinct recipients it received and the distinct
bodies (editions) they came in, and the run fails unless it got exactly N distinct recipients.
Renders of segment editions are counted in the sending process. Targets: at most SEGMENTS
renders, the segmented send within 1.2 x the single-segment time, peak RSS under 250 MB. The
CPU-time ratio is printed beside the wall-time one: on a shared machine it moves less.

A single pair of runs on a shared two-core machine swings by 0.3, so the bench runs `--rounds`
rounds (default 3), each side of a round in a fresh process with a fresh database, alternating
which side goes first (as `bench/send.py` does); the figure is the median ratio, and every
round's ratios are printed. The sink counts are checked on every run.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from send import (Measure, _database, _isolated, _issue, _max_rss_mb,  # noqa: E402
                  alternating_rounds)

RATIO_TARGET = 1.2
MEMORY_TARGET_MB = 250.0


class _Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        data = json.loads(body)
        if self.path == "/v3/mail/send":
            server = self.server
            for personalization in data["personalizations"]:
                for to in personalization["to"]:
                    server.recipients.add(to["email"])  # type: ignore[attr-defined]
            html = next(c["value"] for c in data["content"] if c["type"] == "text/html")
            server.bodies.add(hashlib.sha256(html.encode()).digest())  # type: ignore[attr-defined]
            self.send_response(202)
            self.send_header("X-Message-Id", "bench")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/counts":
            answer = json.dumps({"recipients": len(self.server.recipients),  # type: ignore
                                 "bodies": len(self.server.bodies)}).encode()  # type: ignore
            self.send_response(200)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)


def _serve(port_queue) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    server.recipients, server.bodies = set(), set()  # type: ignore[attr-defined]
    port_queue.put(server.server_address[1])
    server.serve_forever()


def _sink_counts(url: str) -> dict:
    import requests

    return requests.post(url + "/counts", data=b"{}", timeout=30).json()


def _spread(engine, settings, segments: int) -> list[str]:
    """Give readers `segments` preference sets round-robin (set-wise, by id), each chosen to have
    content in the demo week; returns their keys."""
    from sqlalchemy import text
    from sqlmodel import Session

    from digest.database.models import Issue
    from digest.edition.compose import issue_comparisons
    from digest.edition.segments import select_for
    from subscribers.preferences import SEPARATOR, Preferences

    with Session(engine) as session:
        issue = session.exec(text("SELECT id FROM issues")).first()
        comparisons = issue_comparisons(session, session.get(Issue, issue[0]))
        categories = sorted({t.category for c in comparisons for t in c.tools})
        chosen: list[Preferences] = []
        for size in range(1, len(categories) + 1):
            for names in itertools.combinations(categories, size):
                for ship_only in (False, True):
                    prefs = Preferences(tuple(names), ship_only)
                    if select_for(comparisons, prefs) and len(chosen) < segments:
                        chosen.append(prefs)
    if len(chosen) < segments:
        raise SystemExit(f"the demo week has content for only {len(chosen)} segments")
    with engine.begin() as conn:
        for k, prefs in enumerate(chosen):
            conn.execute(text("UPDATE subscribers SET categories = :c, ship_only = :s, "
                              "segment = :k WHERE id % :n = :r"),
                         {"c": SEPARATOR.join(prefs.categories), "s": prefs.ship_only,
                          "k": prefs.key, "n": segments, "r": k})
    return [p.key for p in chosen]


def run(n: int, segments: int, workdir: str) -> dict:
    """One send in this (fresh) process: planning, segment editions and sending included."""
    from digest.delivery.providers import build_provider
    from digest.delivery.send import send_issue
    from digest.edition import segments as segment_module
    from digest.settings import load_settings

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    sink = ctx.Process(target=_serve, args=(queue,), daemon=True)
    sink.start()
    url = f"http://127.0.0.1:{queue.get(timeout=30)}"
    try:
        db = Path(workdir) / f"segments-{segments}.db"
        engine = _database(db, n)
        settings = load_settings(database_url=f"sqlite:///{db}", provider="sendgrid",
                                 provider_url=url, provider_token="bench-token",
                                 secret_key="bench-secret-key-0123456789abcdef",
                                 base_url="https://digest.example.com", timezone="UTC",
                                 from_="Weekly AI Tool Verdicts <digest@verdicts.example.com>",
                                 postal_address="Verdict Digest, 12 Bench Street, Berlin")
        issue_id, _ = _issue(engine, settings)
        keys = _spread(engine, settings, segments) if segments > 1 else ["all"]
        renders = []
        real = segment_module.render_issue

        def counted(*args, **kwargs):
            renders.append(1)
            return real(*args, **kwargs)

        segment_module.render_issue = counted
        measure = Measure()
        with build_provider(settings) as provider:
            report = send_issue(engine, issue_id, provider, settings)
        result = measure.stop(report.sent)
        received = _sink_counts(url)
        engine.dispose()
        return {**result, "segments": len(keys), "renders": len(renders),
                "sink_recipients": received["recipients"], "sink_bodies": received["bodies"],
                "complete": report.complete, "peak_rss_mb": round(_max_rss_mb(), 1)}
    finally:
        sink.terminate()
        sink.join(10)


def _round(n: int, segments: int, workdir: str, segments_first: bool) -> dict:
    """One round: each side in a fresh process of its own, one after the other."""
    sides = [(segments, "many"), (1, "one")] if segments_first else [(1, "one"), (segments, "many")]
    result: dict = {"segments_first": segments_first}
    for count, name in sides:
        result[name] = _isolated(run, n, count, workdir)
    one, many = result["one"], result["many"]
    result["ratio"] = many["seconds"] / one["seconds"]
    # CPU per recipient does not stretch with other work on a shared machine the way wall time
    # does, so its ratio says what the segments themselves cost.
    result["cpu_ratio"] = many["cpu_us_per_recipient"] / one["cpu_us_per_recipient"]
    return result


def _checked(r: dict, n: int, segments: int) -> bool:
    """The sink got every reader exactly once, in no more bodies than renders allow."""
    return (r["sink_recipients"] == n and r["complete"] and r["renders"] <= segments
            and r["sink_bodies"] <= max(r["renders"], 1) + 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument("--segments", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds, each side in a fresh process, alternating which goes "
                             "first; the median ratio counts (default 3)")
    args = parser.parse_args()
    n, k = args.subscribers, args.segments
    print(f"{n:,} subscribers, SQLite, SendGrid-style sink, {args.rounds} rounds; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    checks_ok = True
    done: list[dict] = []

    def one_round(segments_first: bool) -> dict:
        nonlocal checks_ok
        with tempfile.TemporaryDirectory() as workdir:
            r = _round(n, k, workdir, segments_first)
        for name, side in (("one segment", r["one"]), (f"{k} segments", r["many"])):
            checks_ok &= _checked(side, n, k)
            print(f"  {name:<12} {side['seconds']:7.1f} s  {side['per_second']:>7,}/s  "
                  f"{side['cpu_us_per_recipient']:5.1f} us CPU/recipient  peak "
                  f"{side['peak_rss_mb']} MB  renders {side['renders']}  sink: "
                  f"{side['sink_recipients']:,} distinct recipients in {side['sink_bodies']} "
                  "distinct bodies", flush=True)
        print(f"round {len(done) + 1} ({'segments' if segments_first else 'one segment'} first): "
              f"ratio {r['ratio']:.3f}, CPU ratio {r['cpu_ratio']:.3f}; load average "
              f"{os.getloadavg()[0]:.2f}", flush=True)
        done.append(r)
        return r

    results, ratio = alternating_rounds(args.rounds, one_round)
    cpu_ratio = statistics.median(r["cpu_ratio"] for r in results)
    peak = max(max(r["one"]["peak_rss_mb"], r["many"]["peak_rss_mb"]) for r in results)
    renders = max(r["many"]["renders"] for r in results)
    ok = checks_ok and ratio <= RATIO_TARGET and peak < MEMORY_TARGET_MB
    each = ", ".join(f"{r['ratio']:.3f}" for r in results)
    print(f"median ratio {ratio:.3f} over {len(results)} rounds ({each}; target <= "
          f"{RATIO_TARGET}); "
          f"median CPU ratio {cpu_ratio:.3f}; renders {renders} (at most {k}); peak "
          f"{peak} MB (under {MEMORY_TARGET_MB:.0f}); load average {os.getloadavg()[0]:.2f}; "
          f"{'ok' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
