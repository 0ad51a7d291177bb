"""Where a substitution send's CPU goes, per recipient (a benchmark, not a test).

    .venv/bin/python bench/send_breakdown.py                 # 100,000 subscribers, SendGrid
    .venv/bin/python bench/send_breakdown.py --provider postmark --subscribers 10000

Each stage of `bench/send.py`'s scenario is timed alone in this process (CPU time, user +
system, of this process only; the sink runs in its own process and is not counted), the
median of `--repeat` runs over one batch of the demo week's issue:

* plan: `plan_deliveries` for all subscribers (once per send; a set-wise INSERT ... SELECT);
* bind, sign x3: the holder tags and each purpose's tokens (`RecipientFactory.batch` total);
* encode: the provider's request body (`prepare`: chunks, the large shared parts not copied);
* post: `requests` posting it to the sink and reading the answer, against `http.client`
  posting the same bytes (what the raw client in bench/send.py pays);
* ledger: a whole send with a provider that answers at once, minus the signing: claim, read
  the batch, mark it started, record it, plus the loop around them.

Compare their sum with the raw client's time per recipient (the sink's own work, which the
send can overlap but not avoid): the send can reach the ratio only if its CPU per recipient
fits in 1.25 times that.
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import send as bench  # noqa: E402  (bench/send.py: the sink, the data, the settings)


def _cpu() -> float:
    return time.process_time()


def _timed(fn, repeat: int, per: int) -> float:
    """Median CPU microseconds per recipient of `fn()`, which handles `per` recipients."""
    fn()
    runs = []
    for _ in range(repeat):
        start = _cpu()
        fn()
        runs.append((_cpu() - start) / per * 1e6)
    return round(statistics.median(runs), 2)


def breakdown(provider_name: str, n: int, repeat: int) -> dict:
    from sqlalchemy import text

    from digest.delivery.plan import plan_deliveries
    from digest.delivery.providers import build_provider
    from digest.delivery.providers.base import Outcome, Provider
    from digest.delivery.send import issue_parts, policy_from, send_issue

    sink = bench.SinkProcess()
    figures: dict = {}
    try:
        with tempfile.TemporaryDirectory(prefix="digest-breakdown-") as tmp:
            db = Path(tmp) / "b.db"
            engine = bench._database(db, n)
            settings = bench._settings(db, provider_name, sink)
            issue_id, _ = bench._issue(engine, settings)
            parts = issue_parts(engine, issue_id, settings)
            letter, factory = parts.letter, parts.recipients
            with build_provider(settings) as provider:
                size = provider.batch_limit
                with engine.connect() as conn:
                    rows = conn.execute(text("SELECT id, email, name FROM subscribers "
                                             "ORDER BY id LIMIT :n"), {"n": size}).all()
                batch = [(i + 1, sid, email, name) for i, (sid, email, name) in enumerate(rows)]
                links = factory._links
                ids, emails = [r[1] for r in batch], [r[2] for r in batch]
                holders = links.holders(ids, emails)
                used = letter.html.tokens | letter.text.tokens
                figures["tokens_used"] = sorted(used)
                figures["bind"] = _timed(lambda: links.holders(ids, emails), repeat, size)
                figures["sign_unsubscribe"] = _timed(lambda: links.unsubscribe_many(holders),
                                                     repeat, size)
                figures["sign_vote"] = _timed(lambda: links.vote_many(issue_id, holders),
                                              repeat, size)
                figures["sign_preferences"] = _timed(lambda: links.preferences_many(holders),
                                                     repeat, size)
                figures["recipients_total"] = _timed(lambda: factory.batch(batch), repeat, size)
                recipients = factory.batch(batch)
                figures["encode"] = _timed(
                    lambda: provider.prepare(letter, recipients, batch_key="k"), repeat, size)
                call = provider.prepare(letter, recipients, batch_key="k")
                figures["post_requests"] = _timed(lambda: provider.post(call), repeat, size)
                body = bytes(call.body)
                headers = {**provider.session.headers, **call.headers,
                           "Content-Length": str(len(body))}
                conn = http.client.HTTPConnection("127.0.0.1", sink.port, timeout=120)
                conn.connect()
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

                def raw() -> None:
                    conn.request("POST", call.path, body=body, headers=headers)
                    conn.getresponse().read()

                figures["post_raw_http_client"] = _timed(raw, repeat, size)
                walls = []
                for _ in range(repeat):
                    start = time.perf_counter()
                    raw()
                    walls.append((time.perf_counter() - start) / size * 1e6)
                figures["raw_wall_per_recipient"] = round(statistics.median(walls), 2)
                conn.close()

            class Instant(Provider):
                """Answers at once: the send's own work without the wire."""

                name = provider_name
                batch_limit = size
                substitutes = True

                def send_batch(self, letter, recipients, *, batch_key):
                    return [Outcome.sent("x")] * len(recipients)

            import digest.delivery.send as send_module

            planned: list[float] = []

            def timed_plan(*args, **kwargs):  # the send's own plan, timed where it runs
                start = _cpu()
                try:
                    return plan_deliveries(*args, **kwargs)
                finally:
                    planned.append(_cpu() - start)

            send_module.plan_deliveries = timed_plan
            start = _cpu()
            report = send_issue(engine, issue_id, Instant(), settings,
                                policy=policy_from(settings, in_flight=1))
            whole = (_cpu() - start) / n * 1e6
            send_module.plan_deliveries = plan_deliveries
            if report.sent != n:
                raise SystemExit(f"the instant send sent {report.sent} of {n}")
            figures["plan"] = round(sum(planned) / n * 1e6, 2)
            whole -= figures["plan"]
            figures["ledger_and_loop"] = round(whole - figures["recipients_total"], 2)
            engine.dispose()
    finally:
        sink.stop()
    figures["send_total"] = round(figures["plan"] + figures["recipients_total"]
                                  + figures["encode"] + figures["post_requests"]
                                  + figures["ledger_and_loop"], 2)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--provider", default="sendgrid", choices=("sendgrid", "postmark"))
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args(argv)
    print(f"load average at start {os.getloadavg()}")
    figures = breakdown(args.provider, args.subscribers, args.repeat)
    for name, value in figures.items():
        print(f"  {name:24s} {value}" + ("" if name == "tokens_used" else " us/recipient"))
    raw = figures["raw_wall_per_recipient"]
    print(f"  the send's CPU fits the 0.8 ratio only at <= {raw * 1.25:.2f} us a recipient "
          f"(1.25 x the raw client's {raw} us); it needs {figures['send_total']}")
    print(f"load average at end {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
