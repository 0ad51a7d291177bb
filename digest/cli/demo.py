"""`digest demo`: run the weekly pipeline on sample content and say where to look."""

from __future__ import annotations

import shutil
import sys
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
    digest = command_name()
    console.print(f"Next: `{env} {digest} serve` for the web copy and the unsubscribe pages, or "
                  f"`{env} {digest} preview --serve` to see the issue at phone and desktop "
                  "widths.", highlight=False)


def command_name(argv0: str | None = None, path_lookup=shutil.which) -> str:
    """How to type this command again from here: `digest` when that name on PATH is this very
    script, else the script's path (`.venv/bin/digest` right after the README's set-up, where
    the virtual environment is not activated)."""
    script = Path(argv0 or sys.argv[0]).resolve()
    on_path = path_lookup("digest")
    if on_path and Path(on_path).resolve() == script:
        return "digest"
    if script.name != "digest":
        return "digest"  # run in-process (tests) or as `python -m`: nothing better to print
    try:
        return str(script.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(script)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
