"""`digest report`: what became of each issue (accepted, hard and soft bounces, complained,
unsubscribed, failed, uncertain, rates over accepted), its links ranked by clicks, and the trend over the
last issues. `--format json|csv` for scripts and spreadsheets."""

from __future__ import annotations

import csv
import enum
import json
import sys
from typing import Optional

import typer
from rich.table import Table
from sqlmodel import Session

from digest.cli.common import console, engine, reports_errors
from digest.errors import DigestError

TREND_COLUMNS = ("key", "status", "planned", "delivered", "failed", "uncertain", "hard_bounced",
                 "soft_bounced", "complained", "unsubscribed", "clicks", "machine_clicks",
                 "readers", "hard_bounce_rate", "soft_bounce_rate", "complaint_rate",
                 "unsubscribe_rate", "click_rate")
LINK_COLUMNS = ("key", "rank", "link_no", "kind", "label", "human", "machine", "readers", "url")


class ReportFormat(str, enum.Enum):
    table = "table"
    json = "json"
    csv = "csv"


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _rows(outcomes) -> list[dict]:
    return [o.as_dict() for o in outcomes]


@reports_errors
def report(week: Optional[str] = typer.Option(None, "--week", metavar="YYYY-Www",
                                              help="one issue in detail; default: the last "
                                                   "issues, newest first"),
           last: int = typer.Option(12, "--last", min=1, metavar="N",
                                    help="how many issues the trend covers"),
           fmt: ReportFormat = typer.Option(ReportFormat.table, "--format",
                                            help="table for people, json or csv for scripts")
           ) -> None:
    """Outcomes per issue and its links ranked by clicks by people."""
    from digest.edition.weeks import Edition
    from digest.outcomes.report import issue_outcomes

    with Session(engine()) as session:
        if week:
            key = Edition.parse(week).key
            outcomes = issue_outcomes(session, keys=[key])
            if not outcomes:
                raise DigestError(f"no issue {key}")
        else:
            outcomes = issue_outcomes(session, last=last)
    rows = _rows(outcomes)
    if fmt is ReportFormat.json:
        sys.stdout.write(json.dumps({"issues": rows}, indent=2, ensure_ascii=False) + "\n")
        return
    if fmt is ReportFormat.csv:
        # One table a spreadsheet reads: a row per issue, then a row per link (kind=link).
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(("row", *TREND_COLUMNS))
        for row in rows:
            writer.writerow(("issue", *(row[c] for c in TREND_COLUMNS)))
        writer.writerow(())
        writer.writerow(("row", *LINK_COLUMNS))
        for row in rows:
            for rank, link in enumerate(row["links"], 1):
                writer.writerow(("link", row["key"], rank, *(link[c] for c in LINK_COLUMNS[2:])))
        return
    if not rows:
        console.print("No issue has gone out yet.")
        return
    trend = Table(title="Issues (rates are shares of the messages accepted)")
    for column in ("issue", "status", "accepted", "failed", "uncertain", "hard bounces",
                   "soft bounces", "complained", "unsubscribed", "clicks", "machine clicks"):
        trend.add_column(column, justify="left" if column in ("issue", "status") else "right")
    for row in rows:
        trend.add_row(row["key"], row["status"], f"{row['delivered']:,}", f"{row['failed']:,}",
                      f"{row['uncertain']:,}",
                      f"{row['hard_bounced']:,} ({_pct(row['hard_bounce_rate'])})",
                      f"{row['soft_bounced']:,} ({_pct(row['soft_bounce_rate'])})",
                      f"{row['complained']:,} ({_pct(row['complaint_rate'])})",
                      f"{row['unsubscribed']:,} ({_pct(row['unsubscribe_rate'])})",
                      f"{row['clicks']:,} ({_pct(row['click_rate'])})",
                      f"{row['machine_clicks']:,}")
    console.print(trend)
    for row in rows if week else rows[:1]:
        links = Table(title=f"{row['key']}: comparisons by clicks")
        for column in ("#", "comparison", "shown as", "people", "machines"):
            numeric = column in ("people", "machines")
            links.add_column(column, justify="right" if numeric else "left")
        for rank, link in enumerate(row["links"], 1):
            links.add_row(str(rank), link["label"], "card" if link["kind"] == "comparison"
                          else "listed", f"{link['human']:,}", f"{link['machine']:,}")
        console.print(links)


def register(app: typer.Typer) -> None:
    app.command("report")(report)
