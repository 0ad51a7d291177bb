"""Composes an edition into its one `Issue` row, and fills that issue in per subscriber.

An issue is frozen once composed: the window, the comparisons, subject, preheader and the
rendered HTML and text never change afterwards, so every subscriber gets the same email and a
resumed send cannot pick up different content. Composing is idempotent per key and safe when two
processes race for the same key: the unique key decides, and the loser returns the winner's row.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from digest.errors import DigestError
from digest.database.models import Comparison, Issue, IssueComparison
from digest.edition.personalize import SplitTemplate
from digest.edition.render import render_issue
from digest.edition.select import load_edition
from digest.settings import Settings
from digest.edition.weeks import Edition
from digest.outcomes.votes import tallies


class EditionOpenError(DigestError):
    """The edition's week has not ended: composing now would freeze it too early."""


def load_issue(session: Session, key: str) -> Issue | None:
    return session.exec(select(Issue).where(Issue.key == key)).first()


def draft_issue(session: Session, settings: Settings, key: str, *,
                now: dt.datetime) -> tuple[Issue, list[Comparison]]:
    """The issue `key` would be if composed at `now`, not added to the session.

    Used by `compose_issue` and by the preview, which must never freeze an edition."""
    edition = Edition.parse(key)
    window = edition.window(settings.tz)
    comparisons = load_edition(session, window)
    issue = Issue(key=edition.key, window_start=window.start, window_end=window.end,
                  created_at=now)
    if not comparisons:
        issue.status = "skipped"
        issue.status_reason = f"no new comparisons were published {window.label()}"
        return issue, []
    votes = tallies(session, (t.id for c in comparisons for t in c.tools))
    rendered = render_issue(comparisons, edition=edition, window=window, settings=settings,
                            votes=votes)
    issue.status = "ready"
    issue.subject, issue.preheader = rendered.subject, rendered.preheader
    issue.html, issue.text = rendered.html, rendered.text
    issue.html_hash = hashlib.sha256(rendered.html.encode("utf-8")).hexdigest()
    if rendered.listed:
        issue.status_reason = (f"{rendered.shown} of {rendered.total} comparisons shown in full, "
                               f"{rendered.listed} listed as links (size budget)")
    return issue, comparisons


def compose_issue(session: Session, settings: Settings, key: str, *, now: dt.datetime,
                  allow_open: bool = False) -> Issue:
    """The issue for `key`: the stored one unchanged if it exists, else a new one, flushed
    (the caller commits). With no new comparisons the issue is recorded as `skipped` and
    nothing is rendered.

    A week still in progress at `now` is refused unless `allow_open`: once frozen, comparisons
    published later that week would belong to no issue at all."""
    edition = Edition.parse(key)
    existing = load_issue(session, edition.key)
    if existing is not None:
        return existing
    window = edition.window(settings.tz)
    if now < window.end and not allow_open:
        raise EditionOpenError(
            f"edition {edition.key} ({window.label()}) is still open until "
            f"{window.local_end:%Y-%m-%d %H:%M} {settings.timezone}; composing it now would leave "
            f"out what is published later that week (preview it instead)")
    issue, comparisons = draft_issue(session, settings, edition.key, now=now)
    try:
        with session.begin_nested():
            session.add(issue)
            session.flush()
            session.add_all(IssueComparison(issue_id=issue.id, comparison_id=c.id, position=i)
                            for i, c in enumerate(comparisons))
            session.flush()
    except IntegrityError:
        # Another process composed the same key between our check and our insert; theirs wins.
        winner = load_issue(session, edition.key)
        if winner is None:
            raise
        return winner
    return issue


def issue_comparison_ids(session: Session, issue: Issue) -> list[int]:
    """The comparisons an issue carries, in the order it shows them."""
    return list(session.exec(select(IssueComparison.comparison_id)
                             .where(IssueComparison.issue_id == issue.id)
                             .order_by(IssueComparison.position)).all())


@dataclass(frozen=True)
class IssueTemplate:
    """An issue's HTML and text split once at the placeholders; `fill` is the per-subscriber
    step of a send and costs microseconds."""

    html: SplitTemplate
    text: SplitTemplate

    @classmethod
    def of(cls, issue: Issue) -> IssueTemplate:
        if not issue.html:
            raise DigestError(f"issue {issue.key} has no rendered content (status {issue.status})")
        return cls(SplitTemplate(issue.html, escape_html=True),
                   SplitTemplate(issue.text, escape_html=False))

    def fill(self, values: Mapping[str, str]) -> tuple[str, str]:
        """(html, text) for one subscriber; `values` maps each token (`%%UNSUBSCRIBE_URL%%`, ...)
        to its value, unescaped (the HTML side escapes)."""
        return self.html.fill(values), self.text.fill(values)


def personalize(issue: Issue, values: Mapping[str, str]) -> tuple[str, str]:
    """One subscriber's (html, text). For a whole list, split once with `IssueTemplate.of`."""
    return IssueTemplate.of(issue).fill(values)
