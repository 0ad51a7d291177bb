"""Every benchmark behind one command, printed as one table (a benchmark, not a test).

    .venv/bin/python bench/run.py                                  # 10k and 100k, everything
    .venv/bin/python bench/run.py --sizes 1m --only claim,send-pg  # the PostgreSQL targets
    .venv/bin/python bench/run.py --sizes 10k --json               # quick, with JSON too

Rows (each size runs in fresh processes, so a memory peak is that scenario's own):

* render / personalise: compose the demo week's issue (Jinja2 -> MJML -> CSS inliner), median
  of 25; fill one subscriber's values into the split issue (best of 5 x 20,000).
* plan: `plan_deliveries` on PostgreSQL (INSERT ... SELECT of the deliveries, then of their
  batches of 1,000) for N active subscribers.
* claim: `claim_batch` on PostgreSQL with N ledger rows: median and 95th percentile of 50
  claims of a 1,000-recipient batch (SendGrid's; each released again, untimed), at the start
  of the send and with 90% of the ledger already sent (no VACUUM in between: the dead tuples a send leaves behind are part of the
  cost); the same with the claimed rows read in the same transaction, as a sender does; plus
  the plan of the claim's locking statement from EXPLAIN (ANALYZE, BUFFERS).
* send-sub: N through the SendGrid provider (substitution: the body once per 1,000) on SQLite,
  one process, and the ratio to a raw `http.client` posting the provider's own pre-built
  payloads over the same one connection (bench/send.py scenario 1).
* send-full: the same with the Postmark provider (500 complete messages a call) (bench/send.py
  scenario 2).
* send-smtp: N through the SMTP provider over 1 and 4 connections to an aiosmtpd sink, and the
  ratio to raw `smtplib` sending the project's own pre-built messages (bench/smtp.py).
* send-pg: N through the SendGrid provider on PostgreSQL with `--workers` processes (the holder
  plus `digest worker`s), wall time of `send_issue` from its start (planning the N deliveries
  included) to the issue `sent`; and the share of ledger updates that were heap-only.

Every sink counts the distinct recipients it accepted, and a row fails unless the count is
exactly the number sent: the figures never rest on the ledger's word.

PostgreSQL rows need `--database-url` (or DIGEST_TEST_DATABASE_URL); a throwaway database is
created on that server and dropped afterwards. The load average is printed with the figures:
other work on the machine moves them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import math
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

UTC = dt.timezone.utc
EDITION = "2026-W47"
COMPOSED_AT = dt.datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
SIZES = {"10k": 10_000, "100k": 100_000, "1m": 1_000_000}
BENCHES = ("render", "plan", "claim", "send-sub", "send-full", "send-smtp", "send-pg")
CLAIM_TARGET_MS = 5.0
PG_SEND_TARGET_S = 90.0


def _load(name: str):
    """bench/render.py and bench/send.py as modules `render` and `send` (bench/ is not a
    package; on sys.path, spawned processes can import them by name too)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module(name)


def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# --- render and personalise ------------------------------------------------------------------------

def render_figures() -> dict:
    render = _load("render")
    from sqlmodel import Session

    from digest.edition.compose import IssueTemplate, compose_issue
    from digest.database import make_engine, upgrade
    from digest.edition.select import load_edition
    from digest.edition.weeks import Edition

    settings = render.load_settings(base_url="https://digest.example.com", timezone="UTC")
    edition = Edition(2026, 47)
    window = edition.window(settings.tz)
    with tempfile.TemporaryDirectory() as folder:
        engine = make_engine(f"sqlite:///{folder}/render.db")
        upgrade(engine)
        with Session(engine, expire_on_commit=False) as session:
            render.store(session, render.sample_comparisons(
                12, start=window.start + dt.timedelta(hours=9)))
        with Session(engine) as session:
            load_edition(session, window)

            def compose() -> None:
                compose_issue(session, settings, edition.key, now=window.end)
                session.rollback()

            compose_ms = render._median_ms(compose)
            issue = compose_issue(session, settings, edition.key, now=window.end)
            template = IssueTemplate.of(issue)
            session.rollback()
        engine.dispose()
    import timeit

    n = 20_000
    fill = min(timeit.repeat(lambda: template.fill(render.VALUES), number=n, repeat=5)) / n
    return {"compose_ms": round(compose_ms, 1), "personalise_us": round(fill * 1e6, 2),
            "peak_rss_mb": round(_rss_mb(), 1)}


# --- PostgreSQL: seeding, plan, claim ------------------------------------------------------------

class PgDatabase:
    """A throwaway database on the given server."""

    def __init__(self, base_url: str) -> None:
        from sqlalchemy import text

        from digest.database import make_engine, upgrade

        self.admin = make_engine(base_url, isolation_level="AUTOCOMMIT", pool_size=1)
        self.name = f"digest_bench_{uuid.uuid4().hex[:8]}"
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.name}"'))
        self.url = self.admin.url.set(database=self.name).render_as_string(hide_password=False)
        self.engine = make_engine(self.url)
        upgrade(self.engine)

    def drop(self) -> None:
        from sqlalchemy import text

        self.engine.dispose()
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        self.admin.dispose()


def _seed_pg(engine, n: int) -> None:
    from sqlalchemy import text

    with engine.begin() as conn:
        conn.execute(text("""
            INSERT INTO subscribers (email, name, status, source, created_at, updated_at,
                                     confirmed_at)
            SELECT 'reader' || i || '@example.com', 'Reader ' || i, 'active', 'import',
                   :at, :at, :at FROM generate_series(1, :n) AS i"""), {"n": n, "at": COMPOSED_AT})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE subscribers"))


def _compose_pg(engine, settings) -> int:
    from digest.edition.compose import compose_issue
    from digest.database import session_scope
    from digest.content.importer import import_paths

    import_paths(engine, [ROOT.parent / "digest" / "content" / "demo_content" / "comparisons.json"])
    with session_scope(engine) as session:
        issue = compose_issue(session, settings, EDITION, now=COMPOSED_AT)
        session.flush()
        return issue.id


def _claim_times(engine, issue_id: int, limit: int, runs: int = 50,
                 read_rows: bool = False) -> dict:
    """`ledger.claim_batch` exactly as a sender calls it, in its own transaction, commit
    included; with `read_rows`, also reading the claimed recipients as the sender does in the
    same transaction. Each claimed batch is released again, untimed, so every size gets the
    same number of claims of the same batch size."""
    from digest.delivery import ledger
    from digest.database import session_scope

    now = dt.datetime.now(UTC)
    with engine.connect() as conn:  # the pool's connection is made before the clock starts
        conn.exec_driver_sql("SELECT 1")
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        with session_scope(engine) as session:
            claim = ledger.claim_batch(session, issue_id, batch_key=f"bench-{uuid.uuid4().hex}",
                                       limit=limit, now=now, lease_until=now)
            if claim is not None and read_rows:
                ledger.batch_rows(session, claim)
        if claim is None:
            break
        times.append((time.perf_counter() - start) * 1000)
        with session_scope(engine) as session:
            ledger.release_batch(session, claim.batch_key, now=now, uncertain=False, reason="")
    if not times:
        return {"median_ms": float("nan"), "p95_ms": float("nan"), "claims": 0}
    times.sort()
    return {"median_ms": round(statistics.median(times), 2),
            "p95_ms": round(times[math.ceil(len(times) * 0.95) - 1], 2), "claims": len(times)}


def _explain_claim(engine, issue_id: int) -> list[str]:
    """The claim's locking statement exactly as `claim_batch` sends it, under EXPLAIN
    (ANALYZE, BUFFERS), rolled back."""
    from sqlmodel import Session

    from digest.delivery.ledger import claim_statement

    stmt = claim_statement("postgresql", issue_id, now=dt.datetime.now(UTC))
    with Session(engine) as session:
        compiled = stmt.compile(dialect=engine.dialect)
        conn = session.connection()
        sql = "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + str(compiled)
        rows = conn.exec_driver_sql(sql, compiled.params).scalars().all()
        session.rollback()
    return rows


def plan_and_claim(base_url: str, n: int, want_claim: bool) -> dict:
    from sqlalchemy import text

    from digest.database import session_scope
    from digest.delivery.plan import plan_deliveries
    from digest.settings import load_settings

    db = PgDatabase(base_url)
    try:
        settings = load_settings(database_url=db.url, base_url="https://digest.example.com",
                                 secret_key="bench-secret-key-0123456789abcdef", timezone="UTC")
        _seed_pg(db.engine, n)
        issue_id = _compose_pg(db.engine, settings)
        batch = 1000  # SendGrid's
        start = time.perf_counter()
        with session_scope(db.engine) as session:
            planned = plan_deliveries(session, issue_id, now=COMPOSED_AT, batch_size=batch).added
        out: dict = {"plan_s": round(time.perf_counter() - start, 2), "planned": planned,
                     "batch": batch}
        if not want_claim:
            return out
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE deliveries"))  # autovacuum would, soon after a plan
            conn.execute(text("ANALYZE delivery_batches"))
        out["claim_fresh"] = _claim_times(db.engine, issue_id, batch)
        out["claim_read_fresh"] = _claim_times(db.engine, issue_id, batch, read_rows=True)
        # 90% of the ledger sent in id order, as a send leaves it (dead tuples and all): the
        # deliveries written sent and their batches done, no VACUUM in between.
        done_below = n * 9 // 10 // batch
        with db.engine.begin() as conn:
            conn.execute(text("""UPDATE delivery_batches SET status = 'done'
                                 WHERE issue_id = :i AND batch_no < :k"""),
                         {"i": issue_id, "k": done_below})
            conn.execute(text("""UPDATE deliveries SET status = 'sent' WHERE issue_id = :i
                                 AND batch_no < :k"""), {"i": issue_id, "k": done_below})
        out["explain_deep"] = _explain_claim(db.engine, issue_id)
        out["claim_deep"] = _claim_times(db.engine, issue_id, batch)
        out["claim_read_deep"] = _claim_times(db.engine, issue_id, batch, read_rows=True)
        with db.engine.connect() as conn:
            out["ledger_rows"] = conn.execute(text("SELECT count(*) FROM deliveries")).scalar_one()
        return out
    finally:
        db.drop()


# --- PostgreSQL: send with several workers ---------------------------------------------------------

def send_pg(base_url: str, n: int, workers: int) -> dict:
    send_bench = _load("send")
    from digest.delivery.providers import build_provider
    from digest.delivery.send import send_issue
    from digest.settings import load_settings
    from digest.delivery.workers import Helpers

    sink = send_bench.SinkProcess()
    db = PgDatabase(base_url)
    try:
        # The helpers are `digest worker`s, which run the preflight of a real send: the sender
        # identity must look like one (the sink is still on loopback; nothing leaves the host).
        env = {"DIGEST_DATABASE_URL": db.url, "DIGEST_PROVIDER": "sendgrid",
               "DIGEST_PROVIDER_URL": sink.url, "DIGEST_PROVIDER_TOKEN": "bench-token",
               "DIGEST_SECRET_KEY": "bench-secret-key-0123456789abcdef",
               "DIGEST_BASE_URL": "https://digest.verdict-digest.net", "DIGEST_TIMEZONE": "UTC",
               "DIGEST_FROM": "Weekly AI Tool Verdicts <digest@news.verdict-digest.net>",
               "DIGEST_POSTAL_ADDRESS": "Verdict Digest GmbH, Torstrasse 19, 10119 Berlin, "
                                        "Germany"}
        os.environ.update(env)  # the helpers inherit it
        settings = load_settings(database_url=db.url, provider="sendgrid", provider_url=sink.url,
                                 provider_token="bench-token", timezone="UTC",
                                 secret_key=env["DIGEST_SECRET_KEY"],
                                 base_url=env["DIGEST_BASE_URL"])  # the rest from env
        _seed_pg(db.engine, n)
        issue_id = _compose_pg(db.engine, settings)
        helpers = Helpers(EDITION, workers - 1)
        measure = send_bench.Measure()
        with build_provider(settings) as provider:
            report = send_issue(db.engine, issue_id, provider, settings,
                                on_start=helpers.start if workers > 1 else None)
        result = measure.stop(report.sent)
        codes = helpers.wait()
        if not report.complete or any(codes):
            raise SystemExit(f"send incomplete: {report.as_dict()} helpers {codes}")
        result.update(sink.check(n, "send-pg"))
        result.update(workers=workers, peak_rss_mb=round(_rss_mb(), 1),
                      holder_sent=report.sent_now, **_ledger_writes(db.engine))
        return result
    finally:
        db.drop()
        sink.stop()


def _ledger_writes(engine) -> dict:
    """How many of the ledger's row updates were heap-only (no index entry written at all);
    possible because the ledger has no index over a column a send changes."""
    from sqlalchemy import text

    engine.dispose()  # a backend hands in its counts when it exits
    time.sleep(1.0)
    with engine.connect() as conn:
        upd, hot = conn.execute(text(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
            "WHERE relname = 'deliveries'")).one()
    return {"ledger_updates": upd, "heap_only_share": round(hot / upd, 3) if upd else None}


# --- the runner ---------------------------------------------------------------------------------------

def send_sub(n: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="digest-bench-") as tmp:
        return _load("send").substitution(n, Path(tmp))


def send_smtp(n: int) -> dict:
    return _load("smtp").run(n, 4, 1, True)


def send_full(n: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="digest-bench-") as tmp:
        return _load("send").full_body(n, Path(tmp))


def _isolated(func, *args) -> dict:
    """Run one benchmark in a fresh process, so its memory peak is its own."""
    return _load("send")._isolated(func, *args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10k,100k", help="any of 10k,100k,1m")
    parser.add_argument("--only", default=",".join(BENCHES), help=f"any of {','.join(BENCHES)}")
    parser.add_argument("--workers", type=int, default=2, help="processes for send-pg")
    parser.add_argument("--database-url", default=os.environ.get("DIGEST_TEST_DATABASE_URL"),
                        help="PostgreSQL server for plan, claim and send-pg")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    sizes = [SIZES[s.strip().lower()] for s in args.sizes.split(",") if s.strip()]
    only = {b.strip() for b in args.only.split(",") if b.strip()}
    unknown = only - set(BENCHES)
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {BENCHES}")
    pg_needed = only & {"plan", "claim", "send-pg"}
    if pg_needed and not args.database_url:
        parser.error(f"{sorted(pg_needed)} need --database-url (PostgreSQL)")
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"{platform.platform()}; load average at start {_load_avg()}", flush=True)
    rows: list[tuple[str, str, str, str]] = []  # (benchmark, size, figure, note)
    figures: dict = {}

    def add(bench: str, size: str, figure: str, note: str = "") -> None:
        rows.append((bench, size, figure, note))
        print(f"  {bench:<10} {size:>9}  {figure}  {note}", flush=True)

    if "render" in only:
        r = _isolated(render_figures)
        figures["render"] = r
        add("render", "-", f"compose 12 comparisons {r['compose_ms']} ms", "target < 40 ms")
        add("personalise", "-", f"{r['personalise_us']} us a message", "target < 25 us")
    for n in sizes:
        label = f"{n:,}"
        at = {}
        if only & {"plan", "claim"}:
            r = _isolated(plan_and_claim, args.database_url, n, "claim" in only)
            at["plan_claim"] = r
            if "plan" in only:
                add("plan", label, f"{r['plan_s']} s ({n / max(r['plan_s'], 1e-9):,.0f} rows/s)",
                    "PostgreSQL, INSERT ... SELECT of deliveries, then of batches")
            if "claim" in only:
                for key in ("claim_fresh", "claim_deep", "claim_read_fresh", "claim_read_deep"):
                    c = r[key]
                    where = "start" if "fresh" in key else "90% sent"
                    what = "claim + read rows" if "read" in key else "claim"
                    ok = "ok" if c["median_ms"] < CLAIM_TARGET_MS else "OVER TARGET"
                    add("claim", label, f"{what} of {r['batch']:,} at {where:<8}: "
                        f"median {c['median_ms']} ms, p95 {c['p95_ms']} ms "
                        f"({c['claims']} claims)",
                        f"target < {CLAIM_TARGET_MS:.0f} ms: {ok}" if what == "claim" else
                        "the sender's whole claim transaction")
        if "send-sub" in only:
            r = _isolated(send_sub, n)
            at["send_sub"] = r
            p = r["provider"]
            add("send-sub", label, f"{p['seconds']} s, {p['per_second']:,}/s, "
                f"{p['cpu_us_per_recipient']} us CPU/recipient, peak {p['peak_rss_mb']} MB; "
                f"{r['ratio']:.0%} of the raw client", "SQLite, SendGrid-style, 1 process")
        if "send-full" in only:
            r = _isolated(send_full, n)
            at["send_full"] = r
            p = r["provider"]
            add("send-full", label, f"{p['seconds']} s, {p['per_second']:,}/s, "
                f"{p['cpu_us_per_recipient']} us CPU/recipient; {r['ratio']:.0%} of the raw "
                "client", "SQLite, Postmark-style, 1 process")
        if "send-smtp" in only:
            r = _isolated(send_smtp, min(n, 5_000))
            at["send_smtp"] = r
            for k in (1, 4):
                runs = r["runs"]
                p = statistics.median(x["per_second"] for x in runs[f"project_{k}"])
                q = statistics.median(x["per_second"] for x in runs[f"raw_{k}"])
                add("send-smtp", f"{r['n']:,}", f"{k} connection(s): {p:,.0f}/s, "
                    f"{p / q:.0%} of raw smtplib; {r['message_bytes_median']:,} bytes a message",
                    "aiosmtpd sink, SQLite")
        if "send-pg" in only:
            r = _isolated(send_pg, args.database_url, n, args.workers)
            at["send_pg"] = r
            target = (f"target < {PG_SEND_TARGET_S:.0f} s: "
                      f"{'ok' if r['seconds'] < PG_SEND_TARGET_S else 'OVER TARGET'}"
                      if n == 1_000_000 else "")
            add("send-pg", label, f"{r['seconds']} s, {r['per_second']:,}/s with {r['workers']} "
                f"workers, holder {r['cpu_us_per_recipient']} us CPU/recipient, holder peak "
                f"{r['peak_rss_mb']} MB; {r['heap_only_share']:.0%} of ledger updates "
                "heap-only", target)
        figures[label] = at
    print(f"\nload average at end {_load_avg()}")
    from rich.console import Console
    from rich.table import Table

    table = Table(title="digest benchmarks")
    for column in ("benchmark", "subscribers", "figure", "note"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    Console().print(table)
    for label, at in figures.items():
        plan = at.get("plan_claim", {}) if isinstance(at, dict) else {}
        if plan.get("explain_deep"):
            print(f"\nEXPLAIN (ANALYZE, BUFFERS) of a claim's locking statement at {label} "
                  "ledger rows, 90% sent:")
            print("\n".join("  " + line for line in plan["explain_deep"]))
    if args.json:
        print(json.dumps(figures, indent=2, default=str))
    return 0


if __name__ == "__main__":
    mp.set_start_method("spawn", force=True)
    sys.exit(main())
