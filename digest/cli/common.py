"""What every command shares: settings, the engine, output as a table or JSON, and turning the
project's errors into one clear line and an exit code."""

from __future__ import annotations

import enum
import functools
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from digest.errors import ConfigurationError, DatabaseError, DigestError, database_name

console = Console()
err_console = Console(stderr=True)


class OutputFormat(str, enum.Enum):
    table = "table"
    json = "json"


FormatOption = typer.Option(OutputFormat.table, "--format", help="table for people, json for scripts")


def settings():
    from digest.settings import get_settings

    return get_settings()


@functools.lru_cache(maxsize=1)
def _engine():
    from digest.database import make_engine

    return make_engine(settings().database_url)


_checked: set[int] = set()


def engine(*, check_schema: bool = True):
    """The process's engine; by default refuses a database `digest init` has not prepared."""
    eng = _engine()
    if check_schema and id(eng) not in _checked:
        from digest.database import require_schema

        require_schema(eng)
        _checked.add(id(eng))
    return eng


def reset() -> None:
    """Forget cached settings and engine (tests, and the demo switching databases)."""
    from digest.settings import get_settings

    if _engine.cache_info().currsize:
        _engine().dispose()
    _engine.cache_clear()
    _checked.clear()
    get_settings.cache_clear()


def database_label() -> str:
    """The configured database as an operator knows it, with any password hidden."""
    try:
        from sqlalchemy.engine import make_url

        return database_name(make_url(settings().database_url))
    except Exception:  # a broken setting is reported by whatever reads it first
        return ""


def reports_errors(func: Callable) -> Callable:
    """Let expected errors end the command with one line on stderr, not a traceback. A driver
    error from the database (disk full, read-only, unreachable) is one of them: one line naming
    the database and the reason, never the statement or its parameters, and its own exit code."""
    from sqlalchemy.exc import DBAPIError

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except ConfigurationError as exc:
            err_console.print(f"[bold red]configuration error:[/] {escape(str(exc))}",
                              highlight=False, soft_wrap=True)
            raise typer.Exit(ConfigurationError.exit_code)
        except DigestError as exc:
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False,
                              soft_wrap=True)
            raise typer.Exit(exc.exit_code)
        except DBAPIError as exc:
            error = DatabaseError.wrap(exc, database=database_label(),
                                       then="The failed step was rolled back: run the command "
                                            "again once the database accepts it")
            err_console.print(f"[bold red]error:[/] {escape(str(error))}",
                              highlight=False, soft_wrap=True)
            raise typer.Exit(DatabaseError.exit_code) from None

    return wrapper


def emit(rows: Sequence[dict[str, Any]], fmt: OutputFormat, *, columns: Sequence[str],
         title: str | None = None) -> None:
    """Print rows as JSON (every field) or as a table (the named columns)."""
    if fmt is OutputFormat.json:
        sys.stdout.write(json.dumps(list(rows), indent=2, default=str, ensure_ascii=False) + "\n")
        return
    table = Table(title=title, show_lines=False)
    for column in columns:
        table.add_column(column.replace("_", " "))
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    console.print(table)


def print_send_report(report, fmt: OutputFormat, *, title: str) -> None:
    """A send's ledger counts as a table (or JSON): shared by `send`, `status` and cron firings."""
    data = report.as_dict()
    if fmt is OutputFormat.json:
        sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        return
    table = Table(title=title, show_header=True)
    table.add_column("state")
    table.add_column("recipients", justify="right")
    for state in ("sent", "failed", "skipped", "uncertain", "pending", "claimed", "sending"):
        table.add_row(state, f"{data[state]:,}")
    table.add_row("total", f"{data['total']:,}", style="bold")
    console.print(table)
    if data["failed_reasons"]:
        reasons = Table(title="failed, by reason")
        reasons.add_column("reason")
        reasons.add_column("recipients", justify="right")
        for reason, n in data["failed_reasons"].items():
            reasons.add_row(reason, f"{n:,}")
        console.print(reasons)
    line = f"{data['issue']}: {data['status']}"
    if data["message"]:
        line += f" · {data['message']}"
    if data["reason"]:
        line += f" · {data['reason']}"
    console.print(line, highlight=False, markup=False, soft_wrap=True)
