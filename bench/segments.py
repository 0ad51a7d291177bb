"""A send across 50 segments against the same send to one segment (a benchmark, not a test).

    .venv/bin/python bench/segments.py [--subscribers 1000000] [--segments 50]

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
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from send import Measure, _database, _isolated, _issue, _max_rss_mb  # noqa: E402

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument("--segments", type=int, default=50)
    args = parser.parse_args()
    print(f"{args.subscribers:,} subscribers, SQLite, SendGrid-style sink; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory() as workdir:
        one = _isolated(run, args.subscribers, 1, workdir)
        many = _isolated(run, args.subscribers, args.segments, workdir)
    ratio = many["seconds"] / one["seconds"]
    for name, r in (("one segment", one), (f"{args.segments} segments", many)):
        print(f"{name:<12} {r['seconds']:7.1f} s  {r['per_second']:>7,}/s  "
              f"{r['cpu_us_per_recipient']:5.1f} us CPU/recipient  peak {r['peak_rss_mb']} MB  "
              f"renders {r['renders']}  sink: {r['sink_recipients']:,} distinct recipients in "
              f"{r['sink_bodies']} distinct bodies")
    ok = (one["sink_recipients"] == many["sink_recipients"] == args.subscribers
          and many["renders"] <= args.segments and ratio <= RATIO_TARGET
          and max(one["peak_rss_mb"], many["peak_rss_mb"]) < MEMORY_TARGET_MB)
    # CPU per recipient does not stretch with other work on a shared machine the way wall time
    # does, so its ratio says what the segments themselves cost.
    cpu_ratio = many["cpu_us_per_recipient"] / one["cpu_us_per_recipient"]
    print(f"ratio {ratio:.3f} (target <= {RATIO_TARGET}; CPU ratio {cpu_ratio:.3f}); "
          f"renders {many['renders']} "
          f"(at most {args.segments}); load average {os.getloadavg()[0]:.2f}; "
          f"{'ok' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
