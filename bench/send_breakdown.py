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

Then the floor: the same duties a recipient needs under the project's rules, each done by the
fewest calls into C that can do it, with no glue around them (`floor_*`): the ledger row
inserted by one bare INSERT ... SELECT, the batch read by one bare join, the outcome written by
one bare UPDATE over the batch's id range with a commit per batch, four MACs (the binding and
three purposes) from prepared hash states, the personalizations encoded by the C JSON encoder,
and the post by `http.client`. No implementation of these rules in this process does less.

The budget: at 0.8 of the raw client's rate a recipient may take 1.25 x the raw client's
wall time per recipient, on two cores, and the sink's own CPU per recipient (read from its
process) comes out of that. So the send's CPU fits only within 2 x 1.25 x raw - sink, and that
is with every idle moment of both cores put to use.
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


def _process_cpu(pid: int) -> float:
    """User + system CPU seconds of another process of ours (Linux: /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
                # The sink's own CPU, read from its process: what the send must leave it.
                posts = 100
                before = _process_cpu(sink.process.pid)
                for _ in range(posts):
                    raw()
                figures["sink_cpu"] = round((_process_cpu(sink.process.pid) - before)
                                            / (posts * size) * 1e6, 2)
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
            if provider_name == "sendgrid":
                figures.update(floor(engine, issue_id, size))
            engine.dispose()
    finally:
        sink.stop()
    figures["send_total"] = round(figures["plan"] + figures["recipients_total"]
                                  + figures["encode"] + figures["post_requests"]
                                  + figures["ledger_and_loop"], 2)
    return figures


def floor(engine, issue_id: int, size: int) -> dict:
    """CPU microseconds per recipient of each duty done bare (see the module's docstring), on
    the send's own database file and connection settings, over all its subscribers."""
    import base64
    import hashlib
    import hmac
    import json

    pooled = engine.raw_connection()
    db = pooled.driver_connection
    try:
        db.execute("DELETE FROM deliveries WHERE issue_id = ?", (issue_id,))
        db.commit()
        n = db.execute("SELECT COUNT(*) FROM subscribers WHERE status = 'active'").fetchone()[0]
        now = "2026-11-30 08:00:00.000000"
        start = _cpu()
        db.execute("INSERT INTO deliveries (issue_id, subscriber_id, batch_no, status, attempts,"
                   " reason, updated_at) SELECT ?, id, 0, 'pending', 0, '', ? FROM subscribers"
                   " WHERE status = 'active' ORDER BY id", (issue_id, now))
        db.commit()
        insert = _cpu() - start
        lo, hi = db.execute("SELECT MIN(id), MAX(id) FROM deliveries WHERE issue_id = ?",
                            (issue_id,)).fetchone()
        read = record = macs = encode = 0.0
        key = os.urandom(32)
        inner = hashlib.sha256(bytes(b ^ 0x36 for b in key.ljust(64, b"\0")))
        outer = hashlib.sha256(bytes(b ^ 0x5C for b in key.ljust(64, b"\0")))
        b64 = base64.urlsafe_b64encode

        def mac(message: bytes) -> bytes:
            i = inner.copy()
            i.update(message)
            o = outer.copy()
            o.update(i.digest())
            return b64(o.digest()[:16])

        assert mac(b"x") == b64(hmac.digest(key, b"x", "sha256")[:16])
        for first in range(lo, hi + 1, size):
            t0 = _cpu()
            rows = db.execute("SELECT d.id, d.subscriber_id, s.email, s.name FROM deliveries d"
                              " JOIN subscribers s ON s.id = d.subscriber_id"
                              " WHERE d.id BETWEEN ? AND ?", (first, first + size - 1)).fetchall()
            t1 = _cpu()
            tokens = [(mac(b"%d.%s" % (r[1], r[2].encode())), mac(b"u%d.6e" % r[1]),
                       mac(b"v%d.6e" % r[1]), mac(b"p%d.6e" % r[1])) for r in rows]
            t2 = _cpu()
            body = json.dumps([{"to": [{"email": r[2], "name": r[3]}],
                                "substitutions": {"%%U%%": t[1].decode(), "%%V%%": t[2].decode(),
                                                  "%%P%%": t[3].decode()}}
                               for r, t in zip(rows, tokens)]).encode()
            t3 = _cpu()
            db.execute("UPDATE deliveries SET status = 'sent', provider_message_id = ?,"
                       " batch_key = ?, attempts = attempts + 1, updated_at = ?"
                       " WHERE id BETWEEN ? AND ?", ("m", "k", now, first, first + size - 1))
            db.commit()
            t4 = _cpu()
            read, macs, encode, record = (read + t1 - t0, macs + t2 - t1, encode + t3 - t2,
                                          record + t4 - t3)
        assert body and len(rows) <= size
    finally:
        pooled.close()
    per = 1e6 / n
    return {"floor_insert": round(insert * per, 2), "floor_read": round(read * per, 2),
            "floor_macs": round(macs * per, 2), "floor_encode": round(encode * per, 2),
            "floor_record": round(record * per, 2)}


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
    # At 0.8 of the raw rate (one recipient every raw/0.8 us of wall time) the sink and the send
    # together may use both cores' time and no more: send + sink <= 2 * raw / 0.8.
    budget = round(2 * raw / 0.8 - figures["sink_cpu"], 2)
    print(f"  with every idle moment of both cores used, a 0.8 ratio allows the send {budget} us "
          f"a recipient (2 x {raw} / 0.8 - the sink's {figures['sink_cpu']}); it takes "
          f"{figures['send_total']}")
    if "floor_insert" in figures:
        # The least a recipient costs under the project's rules: each duty at the cheaper of
        # the project's own figure and the bare one.
        least = {
            "ledger row in": figures["floor_insert"],
            "batch read": figures["floor_read"],
            "four MACs": min(figures["floor_macs"], figures["bind"] + figures["sign_unsubscribe"]
                             + figures["sign_vote"] + figures["sign_preferences"]),
            "encode": min(figures["floor_encode"], figures["encode"]),
            "post": figures["post_raw_http_client"],
            "ledger row out": figures["floor_record"],
        }
        print("  the least each duty costs: "
              + ", ".join(f"{k} {v:.2f}" for k, v in least.items())
              + f"; {sum(least.values()):.2f} us a recipient in all")
    print(f"load average at end {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
