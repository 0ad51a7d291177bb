"""`digest subscribers add|import|export|list|remove|reactivate`: the operator's side of the
audience."""

from __future__ import annotations

import enum
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import typer

from digest.cli.common import (FormatOption, OutputFormat, console, emit, engine,
                                    err_console, reports_errors, settings)
from digest.errors import ContentImportError, DigestError

subscribers_app = typer.Typer(help="Manage the audience: add, import, export, list, remove.",
                              no_args_is_help=True)

LIST_COLUMNS = ["email", "name", "status", "categories", "ship_only", "source", "created_at"]


class ExportFormat(str, enum.Enum):
    csv = "csv"
    json = "json"


def _audience_errors(func: Callable) -> Callable:
    """The `subscribers` library raises its own errors (it knows nothing of `digest`); turn them
    into the project's, so `reports_errors` prints one line and exits with a code."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from subscribers.csvio import CsvFormatError
        from subscribers.lifecycle import SubscriberError

        try:
            return func(*args, **kwargs)
        except CsvFormatError as exc:
            raise ContentImportError(str(exc)) from None
        except SubscriberError as exc:
            raise DigestError(str(exc)) from None

    return wrapper


def _now():
    from digest.database import utcnow

    return utcnow()


def _status_option(help_text: str):
    return typer.Option(None, "--status", help=help_text + " (pending, active, unsubscribed, "
                                                          "bounced, complained)")


@reports_errors
@_audience_errors
def add(email: str = typer.Argument(..., help="the address to add"),
        name: Optional[str] = typer.Option(None, "--name", help="how to greet them"),
        confirmed: bool = typer.Option(False, "--confirmed",
                                       help="they already agreed: make them active now instead of "
                                            "mailing a confirmation link")) -> None:
    """Add one subscriber. Without --confirmed they are pending and get a confirmation email."""
    from digest.database import session_scope
    from subscribers import lifecycle

    with session_scope(engine()) as session:
        subscriber = lifecycle.add(session, email, name=name, confirmed=confirmed, source="cli",
                                   at=_now())
        address, sub_name, sub_id, status = (subscriber.email, subscriber.name, subscriber.id,
                                             subscriber.status)
    if status == "active":
        console.print(f"added {address} (active)", highlight=False)
        return
    from digest.delivery.confirmation import send_confirmation
    from subscribers.links import Links
    from subscribers.tokens import Signer

    cfg = settings()
    links = Links(cfg.base_url, Signer(cfg.signing_key(public=False)))
    try:
        send_confirmation(cfg, address, sub_name, links.confirm(int(sub_id), address))
    except DigestError as exc:
        raise DigestError(f"added {address} as pending, but the confirmation email failed: {exc}; "
                          "run the command again with the same address after fixing it, or use "
                          "--confirmed") from None
    console.print(f"added {address} (pending): confirmation email sent through "
                  f"{cfg.provider}", highlight=False)


@reports_errors
@_audience_errors
def import_(path: Path = typer.Argument(..., help="CSV with the columns email,name,status")
            ) -> None:
    """Import subscribers from a CSV file (columns email,name,status).

    An empty status means active. Invalid rows are listed by line and skipped; all valid rows
    are written in one transaction. Exit code 2 when some rows were invalid."""
    from digest.database import session_scope
    from subscribers.csvio import import_csv

    with session_scope(engine()) as session:
        report = import_csv(session, path, at=_now())
    for note in report.notes:
        err_console.print(f"note: {path}:{note.line}: {note.message}", highlight=False)
    if report.ignored_columns:
        err_console.print(f"note: ignored column(s): {', '.join(report.ignored_columns)}",
                          highlight=False)
    for problem in report.errors:
        err_console.print(f"[bold red]invalid:[/] {path}:{problem.line}: {problem.message}",
                          highlight=False)
    console.print(f"{path}: {report.summary()}", highlight=False)
    if not report.ok:
        raise typer.Exit(ContentImportError.exit_code)


@reports_errors
@_audience_errors
def export(fmt: ExportFormat = typer.Option(ExportFormat.csv, "--format", help="csv or json"),
           status: Optional[str] = _status_option("only this status")) -> None:
    """Write the list to stdout as CSV or JSON, streaming (never held in memory)."""
    from sqlmodel import Session

    from subscribers.csvio import export as export_rows

    with Session(engine()) as session:
        export_rows(session, sys.stdout, fmt=fmt.value, status=status)
    sys.stdout.flush()


@reports_errors
@_audience_errors
def list_(status: Optional[str] = _status_option("only this status"),
          fmt: OutputFormat = FormatOption) -> None:
    """Subscribers, oldest first."""
    from sqlmodel import Session

    from subscribers.csvio import iter_subscribers

    with Session(engine()) as session:
        rows = list(iter_subscribers(session, status=status))
    emit(rows, fmt, columns=LIST_COLUMNS,
         title=f"{len(rows)} subscriber(s){' with status ' + status if status else ''}")


@reports_errors
@_audience_errors
def remove(email: str = typer.Argument(..., help="the address to erase")) -> None:
    """Erase a person's data, keeping only a hashed suppression entry.

    Their row and delivery history go; only a hash of the address and the reason stay, so an
    address that bounced or complained cannot be re-added by accident."""
    from digest.database import session_scope
    from subscribers import lifecycle

    with session_scope(engine()) as session:
        suppression = lifecycle.erase(session, email, at=_now())
        reason = suppression.reason
    console.print(f"erased {lifecycle.normalize_email(email)}; kept only its hash on the "
                  f"suppression list (reason: {reason})", highlight=False)


@reports_errors
@_audience_errors
def reactivate(email: str = typer.Argument(..., help="the address to mail again")) -> None:
    """Operator override: make an address active again.

    Works even after a bounce, a complaint or an erasure. Only do this when you know the mailbox
    works and its owner wants the digest."""
    from digest.database import session_scope
    from subscribers import lifecycle

    with session_scope(engine()) as session:
        subscriber = lifecycle.reactivate(session, email, at=_now())
        address = subscriber.email
    console.print(f"reactivated {address} (active)", highlight=False)


def register(app: typer.Typer) -> None:
    subscribers_app.command("add")(add)
    subscribers_app.command("import")(import_)
    subscribers_app.command("export")(export)
    subscribers_app.command("list")(list_)
    subscribers_app.command("remove")(remove)
    subscribers_app.command("reactivate")(reactivate)
    app.add_typer(subscribers_app, name="subscribers")
