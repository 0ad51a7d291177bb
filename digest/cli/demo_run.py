"""`digest demo`: the whole weekly pipeline on an embedded SQLite database, from a fresh checkout.

Everything lands in one folder (default `./digest-demo`): the database, the rendered issue, the
outbox of `.eml` files. The sample comparisons are moved into the current week so "this week's
issue" has content whenever the demo runs.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import digest
from digest.content.comparison import ComparisonIn
from digest.database import make_engine, session_scope, upgrade
from digest.settings import Settings, load_settings

DEMO_CONTENT = Path(digest.__file__).parent / "content" / "demo_content" / "comparisons.json"

# Made-up readers on reserved example domains (RFC 2606): nothing here can reach a real person.
DEMO_READERS = [
    ("ada@example.com", "Ada", "active"), ("grace@example.org", "Grace", "active"),
    ("linus@example.net", None, "active"), ("MARGARET@Example.com", "Margaret", "active"),
    ("alan@example.org", "Alan", "active"), ("katherine@example.com", "Katherine", "active"),
    ("edsger@example.net", "Edsger", "active"), ("barbara@example.org", "Barbara", "active"),
    ("frances@example.com", "Frances", "pending"), ("dennis@example.net", "Dennis", "unsubscribed"),
]


@dataclass
class DemoResult:
    folder: Path
    database_url: str
    week: str
    comparisons: int
    subscribers: dict[str, int]
    issue_status: str = ""
    subject: str = ""
    html_path: Path | None = None
    text_path: Path | None = None
    html_bytes: int = 0
    outbox: Path | None = None
    sent: int = 0
    steps: list[str] = field(default_factory=list)


def demo_settings(folder: Path) -> Settings:
    """The demo never reads the operator's database or provider: its own folder, the outbox."""
    return load_settings(database_url=f"sqlite:///{folder / 'digest.db'}", provider="outbox",
                         outbox_dir=str(folder / "outbox"))


def shifted_content(now: dt.datetime, tz) -> list[ComparisonIn]:
    """The sample comparisons, spread over the part of the current week that has passed."""
    from digest.edition.weeks import Edition

    items = [ComparisonIn.model_validate(d) for d in json.loads(DEMO_CONTENT.read_text("utf-8"))]
    start = Edition.at(now, tz).window(tz).start
    elapsed = max((now - start).total_seconds(), 60.0)
    step = elapsed / (len(items) + 1)
    return [item.model_copy(update={"published_at": start + dt.timedelta(seconds=step * (i + 1))})
            for i, item in enumerate(items)]


def run_demo(folder: Path, *, now: dt.datetime | None = None) -> DemoResult:
    from sqlalchemy import func
    from sqlmodel import select

    from digest.edition.compose import compose_issue
    from digest.edition.preview import sample_values
    from digest.delivery.providers import build_provider
    from digest.delivery.send import send_issue
    from digest.content.store import upsert_comparisons
    from digest.edition.weeks import Edition
    from subscribers import lifecycle
    from subscribers.models import Subscriber

    now = now or dt.datetime.now(dt.timezone.utc)
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    # A fresh start each run: only what the demo itself writes is removed.
    for name in ("digest.db", "digest.db-wal", "digest.db-shm", "issue.html", "issue.txt"):
        (folder / name).unlink(missing_ok=True)
    shutil.rmtree(folder / "outbox", ignore_errors=True)

    settings = demo_settings(folder)
    engine = make_engine(settings.database_url)
    upgrade(engine)
    week = Edition.at(now, settings.tz).key
    result = DemoResult(folder=folder, database_url=settings.database_url, week=week,
                        comparisons=0, subscribers={})
    with session_scope(engine) as session:
        report = upsert_comparisons(session, shifted_content(now, settings.tz))
        result.comparisons = len(report.created)
        for email, name, status in DEMO_READERS:
            sub = lifecycle.add(session, email, name=name, confirmed=status != "pending",
                                source="cli", at=now)
            if status == "unsubscribed":
                lifecycle.unsubscribe(session, sub, at=now)
        rows = session.exec(select(Subscriber.status, func.count()).group_by(Subscriber.status))
        result.subscribers = dict(rows.all())

    with session_scope(engine) as session:
        # The demo sends the week in progress; the scheduler waits for a week to end.
        issue = compose_issue(session, settings, week, now=now, allow_open=True)
        result.issue_status, result.subject = issue.status, issue.subject
        if issue.html:
            from digest.edition.compose import personalize

            html, text = personalize(issue, sample_values(settings, week))
            result.html_path, result.text_path = folder / "issue.html", folder / "issue.txt"
            result.html_path.write_text(html, encoding="utf-8")
            result.text_path.write_text(text, encoding="utf-8")
            result.html_bytes = len(issue.html.encode())
        issue_id = issue.id

    with build_provider(settings) as provider:
        report = send_issue(engine, issue_id, provider, settings)
    result.sent, result.issue_status = report.sent, report.status
    result.outbox = Path(settings.outbox_dir) / week
    engine.dispose()
    return result
