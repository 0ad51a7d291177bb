"""`digest schedule run` (the built-in scheduler, in the foreground) and `digest schedule next`
(the coming fire times in the configured zone, and the edition each would send).

`fire_for_cron` is what a `digest send` without `--week` runs: the firing of a crontab line, with
the same deadline and exactly-once rules as the built-in scheduler.
"""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer
from rich.table import Table

from digest.cli.common import (FormatOption, OutputFormat, console, engine, print_send_report,
                               reports_errors, settings)
from digest.database import utcnow

schedule_app = typer.Typer(help="The built-in scheduler: run it, or see when it fires next.",
                           no_args_is_help=True)

STAMP = "%a %Y-%m-%d %H:%M %Z"


@reports_errors
def run() -> None:
    """Run the scheduler in the foreground until SIGTERM or Ctrl-C; logs every decision.

    Fires at DIGEST_SCHEDULE in DIGEST_TIMEZONE; the job is stored in the database, and a run
    that fell due while it was stopped is judged by its deadline when it starts again."""
    from schedules.runner import run as run_scheduler
    from schedules.weekly import configure_logging

    conf = settings()
    engine()  # refuses a database `digest init` has not prepared, before anything starts
    configure_logging()
    code = run_scheduler(conf)
    if code:
        raise typer.Exit(code)


@reports_errors
def next_(count: int = typer.Option(5, "--count", min=1, max=520, help="how many fire times"),
          after: Optional[str] = typer.Option(None, "--after", metavar="ISO",
                                              help="count from this instant instead of now "
                                                   "(ISO 8601 with a zone)"),
          fmt: OutputFormat = FormatOption) -> None:
    """The next fire times of DIGEST_SCHEDULE, with dates in DIGEST_TIMEZONE, the edition each
    would send and the deadline after which that week is recorded as missed."""
    from schedules.cron import schedule_trigger
    from schedules.deadline import DeadlineRule, upcoming_firings
    from schedules.weekly import parse_instant

    conf = settings()
    trigger = schedule_trigger(conf)
    rule = DeadlineRule.from_settings(conf)
    start = parse_instant(after, "--after") if after else utcnow()
    firings = upcoming_firings(trigger, start, count, rule)
    rows = [{"fires_at": f.local(f.scheduled_for).isoformat(),
             "fires_at_utc": f.scheduled_for.isoformat().replace("+00:00", "Z"),
             "zone": conf.timezone, "edition": f.key, "window": f.window.label(),
             "window_start": f.window.local_start.isoformat(),
             "window_end": f.window.local_end.isoformat(),
             "deadline": f.local(f.deadline).isoformat()} for f in firings]
    if fmt is OutputFormat.json:
        sys.stdout.write(json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
        return
    table = Table(title=f"DIGEST_SCHEDULE {trigger.expression!r} in {conf.timezone}")
    table.add_column("fires at", no_wrap=True)
    table.add_column("sends", no_wrap=True)
    table.add_column("the week of")
    table.add_column("missed from", no_wrap=True)
    for f in firings:
        table.add_row(f"{f.local(f.scheduled_for):{STAMP}}", f.key, f.window.label(),
                      f"{f.local(f.deadline):%a %d %b %H:%M}")
    console.print(table)
    console.print(f"deadline: {rule.describe()}", highlight=False, markup=False)


def fire_for_cron(fmt: OutputFormat, provider_factory) -> None:
    """`digest send` without `--week`: fire now, for the last complete week, as a crontab line
    would. Past the week's deadline it records `missed` and sends nothing; another process
    already sending or done with the week is success (exit 0)."""
    from schedules.weekly import fire

    now = utcnow()
    outcome = fire(settings(), engine(), scheduled_for=now, now=now,
                   provider_factory=provider_factory)
    if fmt is OutputFormat.json:
        sys.stdout.write(json.dumps(outcome.as_dict(), indent=2, ensure_ascii=False) + "\n")
    else:
        if outcome.report is not None:
            print_send_report(outcome.report, fmt, title=f"{outcome.edition}")
        console.print(outcome.line(), highlight=False, markup=False, soft_wrap=True)
    if outcome.exit_code:
        raise typer.Exit(outcome.exit_code)


def register(app: typer.Typer) -> None:
    schedule_app.command("run")(run)
    schedule_app.command("next")(next_)
    app.add_typer(schedule_app, name="schedule")
