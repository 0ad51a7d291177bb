"""`digest votes export`: per-tool reader votes, for the site's comparison pages to show."""

from __future__ import annotations

import csv
import enum
import json
import sys

import typer

from digest.cli.common import engine, reports_errors

votes_app = typer.Typer(help="Readers' 'Would you ship it?' votes.", no_args_is_help=True)


class VotesFormat(str, enum.Enum):
    csv = "csv"
    json = "json"


FIELDS = ("tool", "name", "votes", "ship", "skip", "ship_share")


@reports_errors
def export(fmt: VotesFormat = typer.Option(VotesFormat.csv, "--format", help="csv or json")
           ) -> None:
    """Per-tool totals (votes, ship, skip, ship share in percent), most votes first. Votes of
    readers who were removed still count; nothing in the export names a reader."""
    from sqlmodel import Session

    from digest.outcomes.votes import export_totals

    with Session(engine()) as session:
        rows = [total.as_dict() for total in export_totals(session)]
    if fmt is VotesFormat.json:
        sys.stdout.write(json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
        return
    writer = csv.DictWriter(sys.stdout, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)


def register(app: typer.Typer) -> None:
    votes_app.command("export")(export)
    app.add_typer(votes_app, name="votes")
