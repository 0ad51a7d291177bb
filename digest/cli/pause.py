"""`digest pause` and `digest resume`: stop a running send where it stands, and carry on.

Pausing moves the issue to `paused` with the reason; every sender of it (workers on other
hosts too) stops at its next lease renewal, leaving the ledger as it is. Resuming is a send of
that week: recipients already recorded are never mailed again.

Exit codes: 0 done; 1 nothing to pause or resume (the issue is not sending / not paused).
"""

from __future__ import annotations

from typing import Optional

import typer
from sqlmodel import select

from digest.cli.common import console, engine, reports_errors
from digest.database import session_scope
from digest.errors import DigestError

PAUSED_FROM_CLI = "paused by the operator (`digest pause`); run `digest resume` to carry on"


class NothingToDo(DigestError):
    exit_code = 1


def _issue(session, week: str | None, status: str):
    from digest.database.models import Issue
    from digest.edition.weeks import Edition

    query = select(Issue)
    if week:
        query = query.where(Issue.key == Edition.parse(week).key)
    else:
        query = query.where(Issue.status == status).order_by(Issue.key.desc())
    issue = session.exec(query).first()
    if issue is None:
        raise NothingToDo(f"no issue {Edition.parse(week).key}" if week
                          else f"no issue is {status}")
    return issue


@reports_errors
def pause(week: Optional[str] = typer.Option(None, "--week", metavar="YYYY-Www",
                                             help="default: the issue being sent"),
          reason: str = typer.Option(PAUSED_FROM_CLI, "--reason",
                                     help="recorded with the pause and shown by `digest status`")
          ) -> None:
    """Pause a running send; the ledger keeps every recipient's state."""
    from digest.delivery import ledger

    with session_scope(engine()) as session:
        issue = _issue(session, week, "sending")
        key = issue.key
        if not ledger.pause_send(session, issue.id, reason=reason):
            raise NothingToDo(f"{key} is not being sent (status {issue.status})")
    console.print(f"{key}: paused. Its senders stop at their next lease renewal; "
                  "`digest resume` carries on.", highlight=False, markup=False, soft_wrap=True)


@reports_errors
def resume(week: Optional[str] = typer.Option(None, "--week", metavar="YYYY-Www",
                                              help="default: the newest paused issue")) -> None:
    """Resume a paused send here, in the foreground (as `digest send --week` would)."""
    from digest.cli.common import OutputFormat
    from digest.cli.send import send

    with session_scope(engine()) as session:
        issue = _issue(session, week, "paused")
        key, status = issue.key, issue.status
    if status != "paused":
        raise NothingToDo(f"{key} is not paused (status {status})")
    send(week=key, dry_run=False, test_to=None, retry_uncertain=False, workers=1, lease=None,
         fmt=OutputFormat.table)


def register(app: typer.Typer) -> None:
    app.command("pause")(pause)
    app.command("resume")(resume)
