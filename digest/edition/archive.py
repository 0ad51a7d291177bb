"""The sent issues as the public sees them: which ones, in what order, with which comparisons,
and the web copy of one (the same templates as the email, with nothing about any reader).

Only issues whose send finished (`sent`) appear: a draft, a paused send or a skipped week is not
public. Reads only; the routes in `digest.web.archive` add paging, caching and the feed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func
from sqlmodel import Session, select

from digest.content.comparison import slugify
from digest.database.models import Comparison, Issue, IssueComparison, Tool
from digest.edition.compose import issue_comparisons
from digest.edition.render import render_issue
from digest.edition.weeks import Edition, Window
from digest.outcomes.votes import tallies
from digest.settings import Settings

PUBLIC_STATES = ("sent",)


@dataclass(frozen=True)
class ArchivedIssue:
    key: str
    subject: str
    preheader: str
    window_label: str
    sent_at: dt.datetime


def _archived(issue: Issue, settings: Settings) -> ArchivedIssue:
    window = Window(issue.window_start, issue.window_end, settings.tz)
    return ArchivedIssue(issue.key, issue.subject, issue.preheader, window.label(),
                         issue.sent_at or issue.created_at)


def count_sent(session: Session) -> int:
    return session.exec(select(func.count()).select_from(Issue)
                        .where(Issue.status.in_(PUBLIC_STATES))).one()


def sent_issues(session: Session, settings: Settings, *, offset: int = 0,
                limit: int = 20) -> list[ArchivedIssue]:
    """Sent issues, newest week first."""
    rows = session.exec(select(Issue).where(Issue.status.in_(PUBLIC_STATES))
                        .order_by(Issue.window_start.desc()).offset(offset).limit(limit)).all()
    return [_archived(issue, settings) for issue in rows]


def sent_issue(session: Session, key: str) -> Issue | None:
    issue = session.exec(select(Issue).where(Issue.key == key)).first()
    return issue if issue is not None and issue.status in PUBLIC_STATES else None


def web_copy(session: Session, settings: Settings, issue: Issue) -> str:
    """The issue as a web page: the email's templates with every comparison in full, today's
    reader votes, and no token, address or name of anyone."""
    edition = Edition.parse(issue.key)
    comparisons = issue_comparisons(session, issue)
    votes = tallies(session, (t.id for c in comparisons for t in c.tools))
    window = Window(issue.window_start, issue.window_end, settings.tz)
    return render_issue(comparisons, edition=edition, window=window, settings=settings,
                        votes=votes, web=True).html


@dataclass(frozen=True)
class FeedEntry:
    issue: ArchivedIssue
    comparisons: tuple[str, ...]  # "A vs B: A ships." lines, in the issue's order


def categories(session: Session) -> dict[str, str]:
    """Category slug -> name, for every category a tool in a sent issue has."""
    names = session.exec(
        select(Tool.category).distinct()
        .join(Comparison, (Comparison.tool_a_id == Tool.id) | (Comparison.tool_b_id == Tool.id))
        .join(IssueComparison, IssueComparison.comparison_id == Comparison.id)
        .join(Issue, Issue.id == IssueComparison.issue_id)
        .where(Issue.status.in_(PUBLIC_STATES), Tool.category != "")).all()
    return {slugify(name): name for name in sorted(names)}


def feed_entries(session: Session, settings: Settings, *, category: str | None = None,
                 limit: int = 20) -> list[FeedEntry]:
    """The newest sent issues with their comparisons; with `category` (a name), only issues
    that carried a tool of it, listing only those comparisons."""
    from digest.edition.render import card_view, link_view

    issues = session.exec(select(Issue).where(Issue.status.in_(PUBLIC_STATES))
                          .order_by(Issue.window_start.desc())).all()
    out: list[FeedEntry] = []
    for issue in issues:
        comparisons: Sequence[Comparison] = issue_comparisons(session, issue)
        if category is not None:
            comparisons = [c for c in comparisons
                           if category in (c.tools[0].category, c.tools[1].category)]
            if not comparisons:
                continue
        lines = tuple(f"{view.title}: {view.verdict}" for view in
                      (link_view(card_view(c, i)) for i, c in enumerate(comparisons, 1)))
        out.append(FeedEntry(_archived(issue, settings), lines))
        if len(out) >= limit:
            break
    return out
