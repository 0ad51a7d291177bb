"""`digest doctor`: is this setup ready to send real mail? Every check prints ok, warn or fail,
what it saw and the fix. Exit 0 when nothing fails, 1 otherwise.

The identity checks are the same ones `digest send` runs before a real send (and refuses on);
the provider, DNS and web-app checks use the network, read-only, and send nothing.
"""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer
from rich.table import Table

from digest.cli.common import FormatOption, OutputFormat, console, reports_errors, settings

STYLES = {"ok": "green", "warn": "yellow", "fail": "bold red"}


@reports_errors
def doctor(offline: bool = typer.Option(False, "--offline",
                                        help="only the checks that need no network"),
           week: Optional[str] = typer.Option(None, "--week", metavar="YYYY-Www",
                                              help="the edition whose links to check; default: "
                                                   "the last complete week"),
           fmt: OutputFormat = FormatOption) -> None:
    """Check settings, provider, DNS, the web app and the week's content before a real send."""
    from digest.database import utcnow
    from digest.edition.weeks import Edition
    from digest.preflight.checkup import run_checks

    conf = settings()
    report = run_checks(conf, _engine_or_none(), now=utcnow(), network=not offline,
                        week=Edition.parse(week).key if week else None)
    if fmt is OutputFormat.json:
        sys.stdout.write(json.dumps(report.as_dict(), indent=2, ensure_ascii=False) + "\n")
    else:
        table = Table(title=f"digest doctor · provider {conf.provider}", show_lines=True)
        for column in ("", "check", "saw", "fix"):
            table.add_column(column, overflow="fold")
        for check in report.checks:
            saw = f"{check.setting}: {check.saw}" if check.setting else check.saw
            table.add_row(f"[{STYLES[check.status]}]{check.status}[/]", check.name, saw,
                          check.fix if check.status != "ok" else "")
        console.print(table)
        console.print(f"{len(report.failures)} failed, {len(report.warnings)} warning(s), "
                      f"{len(report.checks)} checks", highlight=False)
    if report.exit_code:
        raise typer.Exit(report.exit_code)


def _engine_or_none():
    """The database, when `digest init` has prepared one (the content checks need it)."""
    from digest.cli.common import engine
    from digest.errors import DigestError

    try:
        return engine()
    except DigestError:
        return None


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
