"""The `/admin` dashboard with a year of issues: ledger totals counted on every load (before)
against the finished issues' kept totals (after). A benchmark, not a test.

    .venv/bin/python bench/admin.py                          # 52 issues x 20,000 deliveries
    .venv/bin/python bench/admin.py --issues 52 --deliveries 20000 --rounds 7

A SQLite database (the schema by the real migrations) holds ISSUES sent issues, each mailed to
the same DELIVERIES readers in batches of 1,000 (the ledger as a finished send leaves it), 12
counted links per issue, and the outcomes a year brings: 2% of readers unsubscribed (half by a
link naming its issue, half by an older link that names none, so the report falls back to the
latest issue mailed), 0.5% hard-bounced and 1% soft-bounced deliveries per issue.

The real app (`create_app`, in process, asked from a loopback client) serves `/admin` with
`weeks=ISSUES` so every issue is on the page. Rounds alternate between the two modes and each
mode's median counts:

* before: the dashboard as it was: each issue's ledger counted on every load
  (`ledger.counts`) and the list-growth charts as four sums per week over every subscriber
  (the reference kept in tests/outcomes/test_report.py);
* totals only: the kept totals of sent issues (`issue_totals`, filled by the first load),
  growth still summed per week;
* after: kept totals and growth bucketed from the rows that changed in the weeks shown.

Each answer is checked: 200, one row per issue, and each issue's delivered count on the page.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the growth sums the dashboard ran before
sys.path.insert(0, str(ROOT / "tests" / "outcomes"))

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
SECRET = "bench-secret-key-0123456789abcdef"
BATCH = 1000
LINKS = 12


def seed(engine, issues: int, readers: int) -> None:
    from sqlalchemy import text

    from digest.edition.weeks import Edition

    first = Edition.at(NOW, UTC).shift(-issues)
    with engine.begin() as conn:
        conn.execute(text(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :n) "
            "INSERT INTO subscribers (email, name, status, source, created_at, updated_at, "
            "confirmed_at, confirmations_sent, categories, ship_only, segment) "
            "SELECT 'reader' || i || '@example.com', NULL, 'active', 'import', :t, :t, :t, 0, "
            "'', 0, 'all' FROM n"), {"n": readers, "t": NOW - dt.timedelta(days=400)})
        for k in range(issues):
            edition = first.shift(k + 1)
            sent = edition.window(UTC).end + dt.timedelta(hours=9)
            issue_id = conn.execute(text(
                "INSERT INTO issues (key, status, status_reason, window_start, window_end, "
                "subject, preheader, html, text, html_hash, created_at, send_started_at, "
                "sent_at, rendered_with) VALUES (:key, 'sent', '', :ws, :we, 's', '', '', '', "
                "'', :at, :at, :sent, '') RETURNING id"),
                {"key": edition.key, "ws": sent - dt.timedelta(days=7), "we": sent,
                 "at": sent - dt.timedelta(hours=1), "sent": sent}).scalar_one()
            conn.execute(text(
                "INSERT INTO deliveries (issue_id, subscriber_id, batch_no, status, attempts, "
                "provider_message_id, reason, updated_at) SELECT :issue, id, (id - 1) / :b, "
                "'sent', 1, 'msg-' || :issue || '-' || id, '', :sent FROM subscribers"),
                {"issue": issue_id, "b": BATCH, "sent": sent})
            conn.execute(text(
                "INSERT INTO delivery_batches (issue_id, batch_no, status, first_id, last_id, "
                "size, attempts, reason, updated_at) SELECT :issue, batch_no, 'done', MIN(id), "
                "MAX(id), COUNT(*), 1, '', :sent FROM deliveries WHERE issue_id = :issue "
                "GROUP BY batch_no"), {"issue": issue_id, "sent": sent})
            conn.execute(text(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :n) "
                "INSERT INTO issue_links (issue_id, link_no, kind, label, url) SELECT :issue, i, "
                "'comparison', 'Tool ' || i || ' vs Tool ' || (i + 1), "
                "'https://verdicts.example.test/compare/' || i FROM n"),
                {"n": LINKS, "issue": issue_id})
            conn.execute(text(
                "INSERT INTO link_clicks (issue_id, link_no, human, machine, updated_at) "
                "SELECT issue_id, link_no, 40 * link_no, link_no, :sent FROM issue_links "
                "WHERE issue_id = :issue"), {"issue": issue_id, "sent": sent})
            # Soft bounces (1% of the deliveries) and hard bounces (0.5%) reported by webhook.
            conn.execute(text(
                "INSERT INTO webhook_events (provider, event_id, kind, email_hash, issue_id, "
                "delivery_id, received_at) SELECT 'sendgrid', 'soft-' || id, 'soft_bounced', "
                "'h' || subscriber_id, issue_id, id, :sent FROM deliveries "
                "WHERE issue_id = :issue AND subscriber_id % 100 = :k % 100"),
                {"issue": issue_id, "sent": sent, "k": k})
            leaving = {"issue": issue_id, "sent": sent + dt.timedelta(days=1), "k": k}
            conn.execute(text(
                "UPDATE subscribers SET status = 'bounced', bounced_at = :sent, "
                "left_issue_id = :issue WHERE status = 'active' AND id % 200 = :k % 200 "
                "AND id <= :per"), {**leaving, "per": readers})
            # 2% unsubscribe over the year: half by a link naming the issue, half by an older
            # link (no issue: the report finds the latest issue mailed before the change).
            conn.execute(text(
                "UPDATE subscribers SET status = 'unsubscribed', unsubscribed_at = :sent, "
                "left_issue_id = CASE WHEN id % 2 = 0 THEN :issue END "
                "WHERE status = 'active' AND id % 2600 = :k % 2600 + 1000"), leaving)
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))


def measure(url: str, issues: int, readers: int, rounds: int) -> dict:
    import re

    from fastapi.testclient import TestClient
    from sqlalchemy import delete, func, select
    from sqlmodel import Session

    from digest.database import make_engine
    from digest.database.models import IssueTotals
    from digest.delivery import ledger
    from digest.outcomes import report, totals
    from digest.settings import load_settings
    from digest.web.app import create_app

    settings = load_settings(database_url=url, base_url="http://127.0.0.1:8000",
                             secret_key=SECRET)
    engine = make_engine(url)
    real = totals.ledger_totals

    def counted_every_time(session, rows):
        """What the report did before: every issue's ledger counted on every load."""
        return {i: totals.Totals.of(ledger.counts(session, i)) for i, _, _ in rows}

    from test_report import _growth_by_sums

    bucketed = report.list_growth

    def summed(session, *, now, tz, weeks):
        return [report.WeekGrowth(*row) for row in _growth_by_sums(session, now=now, tz=tz,
                                                                   weeks=weeks)]

    modes = {"before": (counted_every_time, summed), "totals only": (real, summed),
             "after": (real, bucketed)}
    app = create_app(settings, engine, clock=lambda: NOW, admin_options={"weeks": issues})

    def load(client) -> float:
        started = time.perf_counter()
        answer = client.get("/admin")
        elapsed = time.perf_counter() - started
        assert answer.status_code == 200, answer.status_code
        rows = re.findall(r'<tr><th scope="row"><a href="/admin/issues/([^"]+)">.*?'
                          r'</td><td>([\d,]+)</td>', answer.text)
        assert len(rows) == issues, f"{len(rows)} issue rows on the page, expected {issues}"
        assert {int(d.replace(",", "")) for _, d in rows} == {readers}, rows[:3]
        return elapsed

    with Session(engine) as session:
        session.execute(delete(IssueTotals))
        session.commit()
    timings: dict[str, list[float]] = {mode: [] for mode in modes}
    with TestClient(app, client=("127.0.0.1", 50000),
                    base_url="http://127.0.0.1:8000") as client:
        first = load(client)  # fills the kept totals
        with Session(engine) as session:
            kept = session.execute(select(func.count()).select_from(IssueTotals)).scalar_one()
        assert kept == issues, f"{kept} totals kept, expected {issues}"
        for _ in range(rounds):
            for mode, (totals_of, growth) in modes.items():
                report.ledger_totals, report.list_growth = totals_of, growth
                timings[mode].append(load(client))
        report.ledger_totals, report.list_growth = real, bucketed
    engine.dispose()
    return {"first": first, **{k: statistics.median(v) for k, v in timings.items()},
            "rounds": rounds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--issues", type=int, default=52)
    parser.add_argument("--deliveries", type=int, default=20_000, help="readers per issue")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    from digest.database import make_engine, upgrade

    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{os.path.join(folder, 'admin.db')}"
        engine = make_engine(url)
        upgrade(engine)
        started = time.perf_counter()
        seed(engine, args.issues, args.deliveries)
        engine.dispose()
        print(f"seeded {args.issues} issues x {args.deliveries:,} deliveries "
              f"({args.issues * args.deliveries:,} ledger rows) in "
              f"{time.perf_counter() - started:.1f} s", flush=True)
        figures = measure(url, args.issues, args.deliveries, args.rounds)
    load = os.getloadavg()
    print(f"/admin, {args.issues} issues on the page, median of {figures['rounds']} loads each "
          f"(load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}):")
    print(f"  before (ledger counted, growth summed): {1000 * figures['before']:8.1f} ms")
    print(f"  kept totals, growth summed:             {1000 * figures['totals only']:8.1f} ms")
    print(f"  after (kept totals, growth bucketed):   {1000 * figures['after']:8.1f} ms")
    print(f"  first load (fills the totals):          {1000 * figures['first']:8.1f} ms")
    print(f"  after / before:                         {figures['after'] / figures['before']:8.3f}")


if __name__ == "__main__":
    main()
