"""`digest send` and `digest status`.

Exit codes a scheduler can act on: 0 when every recipient of the issue is in a final state
(sent, failed for a recorded reason, skipped) or the issue had nothing to send; 4 when anything
is left pending or uncertain or the send paused (the reason is printed and stored); 5 when
another sender is sending the same issue right now; 8 when the database failed (disk full,
read-only: one line naming it, `reports_errors`), after which running the same command again
resumes the send.

Without `--week` (how cron runs it) the send is a firing of the schedule (`schedules.weekly`):
past the week's deadline it records `missed` and sends nothing (exit 7 for the run that recorded
it), and a week another process is sending or has sent exits 0.

With any provider but `outbox`, `send` and `worker` run the offline preflight checks
(`digest.preflight.identity`) before composing or planning anything, and refuse with exit 6,
every failure listed with its setting and fix (a schedule firing records the week `blocked`).
`--test-to` and `--dry-run` send nobody on the list: they run with the failures shown as
warnings.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Optional

import typer
from rich.table import Table
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from sqlmodel import Session, select

from digest.cli.common import (FormatOption, OutputFormat, console, engine, err_console,
                               print_send_report, reports_errors, settings)
from digest.database import session_scope, utcnow
from digest.errors import DigestError

EXIT_INCOMPLETE = 4
EXIT_BUSY = 5

WeekOption = typer.Option(None, "--week", metavar="YYYY-Www",
                          help="the edition (ISO week); default: the last complete week")
LeaseOption = typer.Option(None, "--lease", metavar="SECONDS", min=0.1,
                           help="how long a claimed batch stays a worker's before others may "
                                "take it over as orphaned (default: 5 minutes)")


def build_provider(conf):
    """The configured provider (a seam the tests use to hand in their own)."""
    from digest.delivery.providers import build_provider as build

    return build(conf)


def _edition_key(week: str | None) -> str:
    from digest.edition.weeks import Edition, last_complete_edition

    if week:
        return Edition.parse(week).key
    return last_complete_edition(utcnow(), settings().tz).key


def _find_issue(session: Session, key: str):
    from digest.database.models import Issue

    return session.exec(select(Issue).where(Issue.key == key)).first()


def _issue_for_send(key: str):
    """The stored issue, composed first when this edition has none yet (or only a `blocked`
    record), and rendered again when it has not started sending and the identity settings it
    shows changed since."""
    from digest.edition.compose import compose_issue

    with session_scope(engine()) as session:
        issue = compose_issue(session, settings(), key, now=utcnow())
        session.expunge(issue)
    return issue


def _preflight(conf, *, refuse: bool) -> None:
    """The offline checks before a real send: refuse on a failure (exit 6), or print them."""
    from digest.preflight.identity import identity_checks, refuse_unless_ready

    if refuse:
        checks = refuse_unless_ready(conf)
    elif conf.sends_real_mail:
        checks = [c for c in identity_checks(conf) if c.status != "ok"]
    else:
        checks = []
    for check in checks:
        err_console.print(f"warning: {check.line()}", highlight=False, markup=False,
                          soft_wrap=True)


def _warn_unlinked(issue) -> None:
    """Cards without a "read the full comparison" link: worth knowing before the list gets them."""
    from digest.preflight.content import LINK_FIX, unlinked, week_comparisons

    with Session(engine()) as session:
        missing = unlinked(week_comparisons(session, settings(), issue.key))
    if missing:
        err_console.print(f"warning: {len(missing)} comparison(s) in {issue.key} have no link "
                          f"on their card: {', '.join(c.slug for c in missing)}; {LINK_FIX}",
                          highlight=False, markup=False, soft_wrap=True)


def exit_code(report) -> int:
    if report.busy:
        return EXIT_BUSY
    return 0 if report.complete else EXIT_INCOMPLETE


# --- output ---------------------------------------------------------------------------------------

# --- digest send ----------------------------------------------------------------------------------

@reports_errors
def send(week: Optional[str] = WeekOption,
         dry_run: bool = typer.Option(False, "--dry-run",
                                      help="plan and count only: nothing is sent or written"),
         test_to: Optional[str] = typer.Option(None, "--test-to", metavar="EMAIL",
                                               help="send one copy to this address, outside "
                                                    "the ledger"),
         retry_uncertain: bool = typer.Option(
             False, "--retry-uncertain",
             help="send again the deliveries whose request went out unanswered (after checking "
                  "the provider's log: some may arrive twice)"),
         workers: int = typer.Option(1, "--workers", min=1, metavar="N",
                                     help="processes sending together (PostgreSQL): this one "
                                          "plus N-1 `digest worker`s it starts"),
         lease: Optional[float] = LeaseOption,
         fmt: OutputFormat = FormatOption) -> None:
    """Compose the week's issue if needed, plan a delivery per active subscriber, and send;
    running it again resumes whatever is left."""
    if dry_run and test_to:
        raise DigestError("--dry-run and --test-to cannot be combined")
    if week is None and not (dry_run or test_to or retry_uncertain):
        # The firing runs the preflight itself: a refusal is recorded as `blocked`.
        # A crontab line: the schedule's deadline applies (`missed`, never late), and a week
        # another process is sending or has sent is success. See schedules.weekly.
        if workers > 1 or lease is not None:
            raise DigestError("--workers and --lease need --week: without it `digest send` is a "
                              "firing of the schedule (its deadline, exactly once) by one sender")
        from digest.cli.schedule import fire_for_cron

        fire_for_cron(fmt, provider_factory=lambda conf: build_provider(conf))
        return
    key = _edition_key(week)
    conf = settings()
    _preflight(conf, refuse=not (dry_run or test_to))  # before anything is composed
    if dry_run:
        _dry_run(key, fmt)
        return
    with build_provider(conf) as provider:  # a configuration error stops us before anything
        issue = _issue_for_send(key)
        if issue.status != "skipped":
            _warn_unlinked(issue)
        if issue.status == "skipped":
            if fmt is OutputFormat.json:
                sys.stdout.write(json.dumps({"issue": key, "status": "skipped", "complete": True,
                                             "reason": issue.status_reason}) + "\n")
            else:
                console.print(f"{key}: skipped, nothing to send ({issue.status_reason})",
                              highlight=False, markup=False, soft_wrap=True)
            return
        if test_to:
            _send_test(issue, provider, test_to)
            return
        from digest.delivery.send import send_issue
        from digest.delivery.workers import Helpers, effective_workers

        count, note = effective_workers(engine().dialect.name, workers)
        if note:
            err_console.print(note, highlight=False, markup=False, soft_wrap=True)
        helpers = Helpers(key, count - 1, claim_lease=lease, retry_uncertain=retry_uncertain)
        with _progress_bar(fmt) as bar:
            task = bar.add_task(f"sending {key}", total=None)
            report = send_issue(engine(), issue.id, provider, conf,
                                policy=_policy(conf, retry_uncertain, lease),
                                on_start=helpers.start if count > 1 else None,
                                progress=lambda done, total: bar.update(task, completed=done,
                                                                        total=total))
        helpers.wait()
    print_send_report(report, fmt, title=f"{key} via {provider.name}")
    code = exit_code(report)
    if code:
        raise typer.Exit(code)


def _policy(conf, retry_uncertain: bool, lease: float | None):
    import datetime as dt

    from digest.delivery.send import policy_from

    extra = {"claim_lease": dt.timedelta(seconds=lease)} if lease else {}
    return policy_from(conf, retry_uncertain=retry_uncertain, **extra)


# --- digest worker --------------------------------------------------------------------------------

@reports_errors
def worker(week: Optional[str] = WeekOption,
           retry_uncertain: bool = typer.Option(False, "--retry-uncertain",
                                                help="as for `digest send`"),
           lease: Optional[float] = LeaseOption,
           fmt: OutputFormat = FormatOption) -> None:
    """Join the running `digest send` of the week (PostgreSQL) and send batches of it until none
    is left. Exits 0 when it did its share or there was no running send to join; 4 when it
    paused the send (the circuit breaker, an unavailable provider)."""
    from digest.delivery.workers import join_send

    key = _edition_key(week)
    conf = settings()
    _preflight(conf, refuse=True)
    with Session(engine()) as session:
        issue = _find_issue(session, key)
    if issue is None:
        err_console.print(f"{key}: no such issue yet, nothing to join", highlight=False,
                          markup=False)
        return
    with build_provider(conf) as provider:
        result = join_send(engine(), issue.id, provider, conf,
                           policy=_policy(conf, retry_uncertain, lease))
    if fmt is OutputFormat.json:
        sys.stdout.write(json.dumps(result.as_dict(), indent=2, ensure_ascii=False) + "\n")
    else:
        console.print(f"{key}: worker sent {result.sent_now:,} · {result.report.message}",
                      highlight=False, markup=False, soft_wrap=True)
    if result.exit_code:
        raise typer.Exit(result.exit_code)


def _progress_bar(fmt: OutputFormat) -> Progress:
    # On stderr, so `--format json` leaves stdout to the summary alone.
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), console=err_console, transient=False,
                    disable=fmt is OutputFormat.json)


def _send_test(issue, provider, to: str) -> None:
    from digest.delivery.send import send_test_copy

    with Session(engine()) as session:
        outcome = send_test_copy(session, issue, provider, settings(), to)
    if outcome.status != "sent":
        raise DigestError(f"test copy to {to} not sent: {outcome.status} {outcome.reason}")
    console.print(f"test copy of {issue.key} sent to {to} via {provider.name}"
                  + (f" ({outcome.message_id})" if outcome.message_id else "")
                  + "; the ledger is unchanged", highlight=False, markup=False, soft_wrap=True)


def _dry_run(key: str, fmt: OutputFormat) -> None:
    """What a send would do now: counts only. Composing is tried and rolled back."""
    from digest.delivery import ledger
    from digest.delivery.plan import PLANNABLE_STATES, count_unplanned

    conf = settings()
    with Session(engine()) as session:
        issue = _find_issue(session, key)
        composed = issue is not None
        if issue is None:
            from digest.edition.compose import compose_issue

            issue = compose_issue(session, conf, key, now=utcnow())
            session.flush()
        status, reason = issue.status, issue.status_reason
        counts = ledger.counts(session, issue.id) if composed else ledger.Counts({}, {})
        to_plan = (count_unplanned(session, issue.id if composed else None)
                   if status in PLANNABLE_STATES else 0)
        lines = []
        if status in PLANNABLE_STATES and issue.html:
            from digest.edition.segments import compose_segments, segment_lines

            compose_segments(session, conf, issue, now=utcnow())
            lines = segment_lines(session, issue)
        session.rollback()  # nothing of the above is kept
    with build_provider(conf) as provider:
        limit = provider.batch_limit
    to_send = counts["pending"] + to_plan
    data = {"issue": key, "status": status if composed else f"{status} (not composed yet)",
            "reason": reason, "provider": conf.provider, "would_plan": to_plan,
            "would_send": to_send, "batches": math.ceil(to_send / limit) if to_send else 0,
            "batch_limit": limit, **{s: counts[s] for s in
                                     ("sent", "failed", "skipped", "uncertain", "pending")},
            "segments": [line.as_dict() for line in lines]}
    if fmt is OutputFormat.json:
        sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        return
    console.print(f"{key} ({data['status']}): would plan {to_plan:,} new deliveries and send "
                  f"{to_send:,} in {data['batches']:,} batch(es) of up to {limit:,} via "
                  f"{conf.provider}; already sent {counts['sent']:,}, failed {counts['failed']:,}, "
                  f"uncertain {counts['uncertain']:,}. Dry run: nothing was sent or written.",
                  highlight=False, markup=False, soft_wrap=True)
    if lines:
        table = Table(title="Segments (one render each; readers' preferences)")
        for column in ("segment", "readers", "comparisons", "HTML bytes"):
            table.add_column(column, justify="left" if column == "segment" else "right")
        for line in lines:
            table.add_row(line.segment, f"{line.readers:,}",
                          "nothing: skipped" if line.empty else f"{line.comparisons}",
                          "" if line.empty else f"{line.html_bytes:,}")
        console.print(table)


# --- digest status --------------------------------------------------------------------------------

@reports_errors
def status(week: Optional[str] = typer.Option(None, "--week", metavar="YYYY-Www",
                                              help="the edition; default: the newest issue"),
           fmt: OutputFormat = FormatOption) -> None:
    """Where an issue's deliveries stand: sent, failed (by reason), skipped, uncertain, pending."""
    from digest.database.models import Issue
    from digest.delivery.complaints import recent_history
    from digest.delivery.send import issue_report
    from digest.edition.compose import rendered_with
    from digest.edition.weeks import Edition

    with Session(engine()) as session:
        if week:
            key = Edition.parse(week).key
            issue = _find_issue(session, key)
            if issue is None:
                raise DigestError(f"no issue {key} yet (`digest send --week {key}` composes it)")
        else:
            issue = session.exec(select(Issue).order_by(Issue.window_start.desc(),
                                                        Issue.id.desc())).first()
            if issue is None:
                raise DigestError("no issue yet: `digest send` composes and sends the first")
        report = issue_report(session, issue)
        shown = rendered_with(issue)
        history = recent_history(session)
    warnings = [history.describe()] if history.too_high else []
    if fmt is OutputFormat.json:
        data = {**report.as_dict(), "rendered_with": shown, "warnings": warnings}
        sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        return
    print_send_report(report, fmt, title=f"{issue.key}")
    if shown:
        console.print(f"rendered with: DIGEST_BASE_URL={shown.get('base_url')} · DIGEST_FROM="
                      f"{shown.get('from')} · DIGEST_POSTAL_ADDRESS={shown.get('postal_address')}",
                      highlight=False, markup=False, soft_wrap=True)
    for warning in warnings:
        err_console.print(f"warning: {warning}", highlight=False, markup=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("send")(send)
    app.command("worker")(worker)
    app.command("status")(status)
