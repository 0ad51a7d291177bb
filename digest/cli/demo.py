"""`digest demo`: run the weekly pipeline on sample content and say where to look."""

from __future__ import annotations

from pathlib import Path

import typer

from digest.cli.common import OutputFormat, console, reports_errors


@reports_errors
def demo(folder: Path = typer.Option(Path("digest-demo"), "--dir",
                                     help="where the demo database, issue and outbox go")) -> None:
    """Create a SQLite database, load sample comparisons and readers, render and send this
    week's issue into a local outbox of .eml files."""
    from digest.cli.demo_run import run_demo

    result = run_demo(folder)
    console.print(f"[bold]Demo database[/]  {result.database_url}", highlight=False)
    console.print(f"Loaded {result.comparisons} sample comparisons into {result.week} and "
                  f"{sum(result.subscribers.values())} readers "
                  f"({', '.join(f'{n} {s}' for s, n in sorted(result.subscribers.items()))}).",
                  highlight=False)
    from sqlmodel import Session

    from digest.cli.content import comparison_rows, print_comparisons
    from digest.database import make_engine

    engine = make_engine(result.database_url)
    with Session(engine) as session:
        rows = comparison_rows(session, week=result.week)
    engine.dispose()
    print_comparisons(list(reversed(rows)), OutputFormat.table,
                      title=f"Comparisons in {result.week}")
    console.print(f"Issue {result.week}: [bold]{result.subject}[/] ({result.issue_status}, "
                  f"{result.html_bytes:,} bytes of HTML, budget 102,400)", highlight=False)
    if result.html_path:
        console.print(f"Open the email in a browser:  {result.html_path.as_uri()}", highlight=False)
        console.print(f"Plain-text version:           {result.text_path}", highlight=False)
    console.print(f"Sent {result.sent} messages to the outbox: {result.outbox}/*.eml "
                  f"(index: {result.outbox}/index.jsonl)", highlight=False)
    env = f"DIGEST_DATABASE_URL={result.database_url}"
    console.print(f"Next: `{env} digest serve` for the web copy and the unsubscribe pages, or "
                  f"`{env} digest preview --serve` to see the issue at phone and desktop widths.",
                  highlight=False)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
