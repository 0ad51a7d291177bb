"""SMTP throughput against an aiosmtpd sink in its own process (a benchmark, not a test).

    .venv/bin/python bench/smtp.py                          # N=5,000 over 1 and 4 connections
    .venv/bin/python bench/smtp.py -n 1000 --rounds 1       # quicker
    .venv/bin/python bench/smtp.py --no-pipelining          # the provider without PIPELINING
    .venv/bin/python bench/smtp.py --compare-pipelining     # both ways, interleaved

Each round runs, interleaved, for one connection and for K:

* project: `send_issue` of the demo week to N subscribers on SQLite (plan, claim, send,
  record) through the SMTP provider with that many connections;
* raw: plain `smtplib`, `sendmail` of the project's own messages (the same issue, spliced by
  the project beforehand, so the raw client pays nothing for building them) over one kept-open
  connection, or K threads with one connection each.

The sink (aiosmtpd, offering 8BITMIME and PIPELINING like a Postfix would) counts the distinct
envelope recipients it accepted; a run fails unless that count is exactly N. Targets: project
>= 80% of raw, both for one connection and for K; the message on the wire <= 45,000 bytes. Figures
are medians over the rounds; the load average is printed, since the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import smtplib
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import send as send_bench  # noqa: E402  (bench/send.py: the database and the demo issue)

TARGET_RATIO = 0.80
WIRE_TARGET = 45_000  # bytes, as bench/wire.py and tests/edition/test_wire_size.py count them


# --- the sink -------------------------------------------------------------------------------

class _Counting:
    def __init__(self) -> None:
        self.recipients: set[str] = set()
        self.messages = 0
        self.octets = 0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_DATA(self, server, session, envelope):
        self.recipients.update(envelope.rcpt_tos)
        self.messages += 1
        self.octets += len(envelope.original_content)
        return "250 2.0.0 queued"


def _serve(control) -> None:
    from aiosmtpd.controller import Controller

    handler = _Counting()
    port = _free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, enable_SMTPUTF8=True)
    controller.start()
    control.send(port)
    while True:
        command = control.recv()
        if command == "count":
            control.send((len(handler.recipients), handler.messages, handler.octets))
        elif command == "reset":
            handler.recipients.clear()
            handler.messages = handler.octets = 0
            control.send(True)
        else:
            controller.stop()
            return


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SmtpSink:
    def __init__(self) -> None:
        ctx = mp.get_context("spawn")
        self.control, theirs = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(theirs,), daemon=True)
        self.process.start()
        self.port = self.control.recv()

    def reset(self) -> None:
        self.control.send("reset")
        self.control.recv()

    def count(self) -> tuple[int, int, int]:
        self.control.send("count")
        return self.control.recv()

    def stop(self) -> None:
        self.control.send("stop")
        self.process.join(10)
        if self.process.is_alive():
            self.process.terminate()


# --- the two senders ----------------------------------------------------------------------------

def _settings(db: Path, port: int, connections: int):
    from digest.settings import load_settings

    return load_settings(database_url=f"sqlite:///{db}", provider="smtp",
                         smtp_url=f"smtp://127.0.0.1:{port}", smtp_connections=connections,
                         secret_key="bench-secret-key-0123456789abcdef",
                         base_url="https://digest.example.com", timezone="UTC")


def project(template_db: Path, workdir: Path, port: int, connections: int, n: int,
            pipelining: bool) -> dict:
    from digest.database import make_engine
    from digest.delivery.providers.smtp import SmtpProvider
    from digest.delivery.send import send_issue

    db = workdir / f"run-{connections}-{time.monotonic_ns()}.db"
    shutil.copy(template_db, db)
    settings = _settings(db, port, connections)
    engine = make_engine(f"sqlite:///{db}")
    issue_id = _issue_id(engine)
    measure = send_bench.Measure()
    with SmtpProvider.from_url(settings.smtp_url, connections=connections,
                               messages_per_connection=settings.smtp_messages_per_connection,
                               pipelining=pipelining) as provider:
        report = send_issue(engine, issue_id, provider, settings)
    result = measure.stop(n)
    engine.dispose()
    db.unlink()
    if not report.complete or report.sent != n:
        raise SystemExit(f"project send incomplete: {report.as_dict()}")
    return result


def _issue_id(engine) -> int:
    from sqlalchemy import text

    with engine.connect() as conn:
        return conn.execute(text("SELECT id FROM issues")).scalar_one()


def prebuilt(template_db: Path, port: int) -> tuple[str, list[tuple[str, bytes]]]:
    """The project's own messages for every subscriber, spliced before the clock starts."""
    from sqlalchemy import text

    from digest.database import make_engine
    from digest.delivery.mime import MessageTemplate
    from digest.delivery.send import issue_parts
    from email.utils import parseaddr

    engine = make_engine(f"sqlite:///{template_db}")
    settings = _settings(template_db, port, 1)
    parts = issue_parts(engine, _issue_id(engine), settings)
    letter, factory = parts.letter, parts.recipients
    with engine.connect() as conn:
        rows = [(i, sid, email, name) for i, (sid, email, name) in enumerate(conn.execute(text(
            "SELECT id, email, name FROM subscribers ORDER BY id")), 1)]
    engine.dispose()
    template = MessageTemplate(letter, eight_bit=True)
    messages = template.render_all(factory.batch(rows))
    return parseaddr(letter.from_addr)[1], [(r[2], m) for r, m in zip(rows, messages)]


def raw(port: int, sender: str, messages: list[tuple[str, bytes]], connections: int) -> dict:
    """Plain smtplib: one kept-open connection per thread, `sendmail` per message."""
    errors: list[BaseException] = []

    def one(chunk: list[tuple[str, bytes]]) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=60) as conn:
                for rcpt, data in chunk:
                    conn.sendmail(sender, [rcpt], data, mail_options=["BODY=8BITMIME"])
        except BaseException as exc:  # reported below
            errors.append(exc)

    chunks = [messages[i::connections] for i in range(connections)]
    measure = send_bench.Measure()
    threads = [threading.Thread(target=one, args=(chunk,)) for chunk in chunks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result = measure.stop(len(messages))
    if errors:
        raise SystemExit(f"raw smtplib failed: {errors[0]!r}")
    return result


def _checked(sink: SmtpSink, n: int, what: str) -> dict:
    distinct, messages, octets = sink.count()
    if distinct != n or messages != n:
        raise SystemExit(f"{what}: the sink got {messages} messages for {distinct} distinct "
                         f"recipients, expected {n}")
    return {"sink_distinct": distinct, "sink_messages": messages,
            "wire_bytes_per_message": round(octets / messages)}


def run(n: int, connections: int, rounds: int, pipelining: bool,
        compare_pipelining: bool = False) -> dict:
    sink = SmtpSink()
    try:
        with tempfile.TemporaryDirectory(prefix="digest-bench-smtp-") as tmp:
            workdir = Path(tmp)
            template_db = workdir / "template.db"
            engine = send_bench._database(template_db, n)
            settings = _settings(template_db, sink.port, 1)
            send_bench._issue(engine, settings)
            engine.dispose()
            sender, messages = prebuilt(template_db, sink.port)
            sizes = sorted(len(m) for _, m in messages)
            figures: dict = {"n": n, "connections": connections, "rounds": rounds,
                             "pipelining": pipelining,
                             "message_bytes_median": sizes[len(sizes) // 2],
                             "runs": {}}
            for _ in range(rounds):
                for k in sorted({1, connections}):
                    sink.reset()
                    r = project(template_db, workdir, sink.port, k, n, pipelining)
                    r.update(_checked(sink, n, f"project, {k} connection(s)"))
                    figures["runs"].setdefault(f"project_{k}", []).append(r)
                    sink.reset()
                    r = raw(sink.port, sender, messages, k)
                    r.update(_checked(sink, n, f"raw smtplib, {k} connection(s)"))
                    figures["runs"].setdefault(f"raw_{k}", []).append(r)
                    if compare_pipelining:
                        sink.reset()
                        r = project(template_db, workdir, sink.port, k, n, not pipelining)
                        r.update(_checked(sink, n, f"project, {k} connection(s), pipelining "
                                          f"{'off' if pipelining else 'on'}"))
                        figures["runs"].setdefault(f"project_{k}_other_pipelining",
                                                   []).append(r)
            return figures
    finally:
        sink.stop()


def _median_rate(runs: list[dict]) -> float:
    return statistics.median(r["per_second"] for r in runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--recipients", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-pipelining", action="store_true",
                        help="the provider does not pipeline even though the sink offers it")
    parser.add_argument("--compare-pipelining", action="store_true",
                        help="also run the provider the other way in every round")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    print(f"load average at start {os.getloadavg()}", flush=True)
    figures = run(args.recipients, args.connections, args.rounds, not args.no_pipelining,
                  args.compare_pipelining)
    figures["load_average_end"] = os.getloadavg()
    ok = True
    size = figures["message_bytes_median"]
    print(f"message on the wire: {size:,} bytes (target <= {WIRE_TARGET:,}) "
          f"{'PASS' if size <= WIRE_TARGET else 'FAIL'}")
    for k in sorted({1, args.connections}):
        p, q = _median_rate(figures["runs"][f"project_{k}"]), \
            _median_rate(figures["runs"][f"raw_{k}"])
        ratio = p / q
        ok &= ratio >= TARGET_RATIO
        figures[f"ratio_{k}"] = round(ratio, 3)
        counts = {r["sink_distinct"] for r in figures["runs"][f"project_{k}"]}
        print(f"{k} connection(s): project {p:,.0f} msg/s, raw smtplib {q:,.0f} msg/s, "
              f"ratio {ratio:.0%} (target >= {TARGET_RATIO:.0%}) "
              f"{'PASS' if ratio >= TARGET_RATIO else 'FAIL'}; sink distinct recipients "
              f"{sorted(counts)} of {args.recipients:,}")
        other = figures["runs"].get(f"project_{k}_other_pipelining")
        if other:
            print(f"  the provider with pipelining {'off' if not args.no_pipelining else 'on'}: "
                  f"{_median_rate(other):,.0f} msg/s")
    print(f"load average at end {figures['load_average_end']}")
    if args.json:
        print(json.dumps(figures, indent=2))
    return 0 if ok and size <= WIRE_TARGET else 1


if __name__ == "__main__":
    mp.set_start_method("spawn", force=True)
    sys.exit(main())
