"""`digest init`, `digest import`, `digest comparisons list`."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Optional

import typer

from digest.cli.common import (FormatOption, OutputFormat, console, emit, engine,
                                    reports_errors, settings)

comparisons_app = typer.Typer(help="Look at the stored comparisons.", no_args_is_help=True)


def _parse_when(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    from digest.errors import ContentImportError

    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ContentImportError(f"--published-at {value!r} is not an ISO 8601 date-time") from None
    if when.tzinfo is None:  # a bare local time means the configured zone
        when = when.replace(tzinfo=settings().tz)
    return when


@reports_errors
def init() -> None:
    """Create or upgrade the database to the latest schema (safe to run again)."""
    from digest.database import upgrade

    eng = engine(check_schema=False)
    revision = upgrade(eng)
    console.print(f"database ready at schema revision [bold]{revision}[/] "
                  f"({eng.url.render_as_string(hide_password=True)})", highlight=False)


@reports_errors
def import_(paths: list[Path] = typer.Argument(..., help="JSON files or comparison page text files"),
            published_at: Optional[str] = typer.Option(
                None, "--published-at", help="ISO date-time for page text (default: now)"),
            url: Optional[str] = typer.Option(
                None, "--url", help="the address of the one page imported: its card links "
                                    "there (page text may also start with a `url:` line)")
            ) -> None:
    """Import comparisons; all files in one transaction, so a bad file writes nothing."""
    from digest.content.importer import import_paths

    report = import_paths(engine(), paths, published_at=_parse_when(published_at), url=url)
    console.print(f"imported {len(report.created) + len(report.updated)} comparison(s) from "
                  f"{len(paths)} file(s): {len(report.created)} new, {len(report.updated)} updated; "
                  f"tools: {len(report.tools_created)} new, {len(report.tools_updated)} updated",
                  highlight=False)


def comparison_rows(session, *, week: str | None = None) -> list[dict]:
    from digest.content.store import list_comparisons
    from digest.edition.summaries import tool_stats

    start = end = None
    if week:
        from digest.edition.weeks import edition_window

        window = edition_window(week, settings().tz)
        start, end = window.start, window.end
    rows = []
    for c in list_comparisons(session, start=start, end=end):
        a, b = c.tools
        avg_a, avg_b = tool_stats(a).average, tool_stats(b).average
        rows.append({
            "slug": c.slug,
            "published_at": c.published_at.astimezone(settings().tz).isoformat(timespec="minutes"),
            "tool_a": a.name, "tool_b": b.name,
            "verdict_a": _panel(a), "verdict_b": _panel(b),
            "avg_a": None if avg_a is None else float(avg_a),
            "avg_b": None if avg_b is None else float(avg_b),
            "url": c.url,
        })
    return rows


def _panel(tool) -> str:
    if tool.panel_verdict is None:
        return "-"
    return f"{tool.panel_verdict} {tool.panel_ship}/{tool.panel_skip}"


def print_comparisons(rows: list[dict], fmt: OutputFormat, *, title: str) -> None:
    """JSON keeps every field; the table keeps what fits in 80 columns."""
    if fmt is OutputFormat.json:
        emit(rows, fmt, columns=[])
        return
    compact = [{**r, "published": r["published_at"][:16].replace("T", " "),
                "avg_a": "-" if r["avg_a"] is None else r["avg_a"],
                "avg_b": "-" if r["avg_b"] is None else r["avg_b"]} for r in rows]
    emit(compact, fmt, title=title,
         columns=["published", "tool_a", "verdict_a", "avg_a", "tool_b", "verdict_b", "avg_b"])


@reports_errors
def list_(week: Optional[str] = typer.Option(None, "--week", help="ISO week, e.g. 2026-W47"),
          fmt: OutputFormat = FormatOption) -> None:
    """Stored comparisons, newest first: tools, panel verdicts, average scores, date."""
    from sqlmodel import Session

    with Session(engine()) as session:
        rows = comparison_rows(session, week=week)
    print_comparisons(rows, fmt, title=f"Comparisons{' in ' + week if week else ''}")


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("import")(import_)
    comparisons_app.command("list")(list_)
    app.add_typer(comparisons_app, name="comparisons")
