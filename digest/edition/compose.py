"""Composes an edition into its one `Issue` row, and fills that issue in per subscriber.

An issue is frozen once it starts sending: the window, the comparisons, subject, preheader and
the rendered HTML and text never change afterwards, so every subscriber gets the same email and
a resumed send cannot pick up different content. Before that, an issue whose identity settings
(base URL, From, postal address) changed since it was rendered is rendered again with the same
comparisons, so a fix made after composing reaches the footer too. Composing is idempotent per
key and safe when two processes race for the same key: the unique key decides, and the loser
returns the winner's row.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import delete, exists, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from digest.errors import DigestError
from digest.database.models import Comparison, Delivery, Issue, IssueComparison, IssueLink
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


def identity_of(settings: Settings) -> str:
    """The settings an issue's HTML shows, as stored in `Issue.rendered_with`."""
    return json.dumps({"base_url": settings.base_url, "from": settings.from_,
                       "postal_address": settings.postal_address}, sort_keys=True)


def rendered_with(issue: Issue) -> dict[str, str]:
    """What `identity_of` stored for the issue ({} for an issue rendered before it was kept)."""
    try:
        return json.loads(issue.rendered_with) if issue.rendered_with else {}
    except ValueError:
        return {}


def _render_into(session: Session, issue: Issue, comparisons: list[Comparison],
                 edition: Edition, window, settings: Settings) -> list[IssueLink]:
    """Render into `issue`; returns where each counted link of it leads (not yet stored)."""
    votes = tallies(session, (t.id for c in comparisons for t in c.tools))
    rendered = render_issue(comparisons, edition=edition, window=window, settings=settings,
                            votes=votes)
    issue.status = "ready"
    issue.subject, issue.preheader = rendered.subject, rendered.preheader
    issue.html, issue.text = rendered.html, rendered.text
    issue.html_hash = hashlib.sha256(rendered.html.encode("utf-8")).hexdigest()
    issue.rendered_with = identity_of(settings)
    issue.status_reason = ""
    if rendered.listed:
        issue.status_reason = (f"{rendered.shown} of {rendered.total} comparisons shown in full, "
                               f"{rendered.listed} listed as links (size budget)")
    return [IssueLink(link_no=link.link_no, kind=link.kind, label=link.label, url=link.url)
            for link in rendered.links]


def _store_links(session: Session, issue_id: int, links: list[IssueLink]) -> None:
    """Where the issue's counted links lead: the click redirect reads it from here, never from
    the request. Replaced whole when the issue is rendered again before it is sent."""
    session.execute(delete(IssueLink).where(IssueLink.issue_id == issue_id))
    for link in links:
        link.issue_id = issue_id
    session.add_all(links)
    session.flush()


def draft_issue(session: Session, settings: Settings, key: str, *,
                now: dt.datetime) -> tuple[Issue, list[Comparison]]:
    """The issue `key` would be if composed at `now`, not added to the session.

    Used by `compose_issue` and by the preview, which must never freeze an edition."""
    issue, comparisons, _links = _draft(session, settings, key, now=now)
    return issue, comparisons


def _draft(session: Session, settings: Settings, key: str, *,
           now: dt.datetime) -> tuple[Issue, list[Comparison], list[IssueLink]]:
    edition = Edition.parse(key)
    window = edition.window(settings.tz)
    comparisons = load_edition(session, window)
    issue = Issue(key=edition.key, window_start=window.start, window_end=window.end,
                  created_at=now)
    if not comparisons:
        issue.status = "skipped"
        issue.status_reason = f"no new comparisons were published {window.label()}"
        return issue, [], []
    links = _render_into(session, issue, comparisons, edition, window, settings)
    return issue, comparisons, links


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
        if existing.status == "blocked":
            return _unblock(session, settings, existing, now=now)
        return refresh_identity(session, settings, existing)
    window = edition.window(settings.tz)
    if now < window.end and not allow_open:
        raise EditionOpenError(
            f"edition {edition.key} ({window.label()}) is still open until "
            f"{window.local_end:%Y-%m-%d %H:%M} {settings.timezone}; composing it now would leave "
            f"out what is published later that week (preview it instead)")
    issue, comparisons, links = _draft(session, settings, edition.key, now=now)
    try:
        with session.begin_nested():
            session.add(issue)
            session.flush()
            session.add_all(IssueComparison(issue_id=issue.id, comparison_id=c.id, position=i)
                            for i, c in enumerate(comparisons))
            session.flush()
            _store_links(session, issue.id, links)
    except IntegrityError:
        # Another process composed the same key between our check and our insert; theirs wins.
        winner = load_issue(session, edition.key)
        if winner is None:
            raise
        return winner
    return issue


def _not_started(session: Session, issue: Issue) -> bool:
    return (issue.send_started_at is None
            and not session.execute(select(exists().where(Delivery.issue_id == issue.id))).scalar())


def _guarded_write(session: Session, issue: Issue, values: dict) -> bool:
    """Write `values` only while the issue has still not started sending (a sender that took
    it meanwhile keeps the body it read: exactly-once needs one body)."""
    table = Issue.__table__
    result = session.execute(update(table).where(
        table.c.id == issue.id, table.c.send_started_at.is_(None),
        table.c.status.in_(("ready", "blocked"))).values(**values))
    return result.rowcount == 1


_RENDERED = ("status", "status_reason", "subject", "preheader", "html", "text", "html_hash",
             "rendered_with")


def refresh_identity(session: Session, settings: Settings, issue: Issue) -> Issue:
    """Render a composed issue again, with the same comparisons, when the identity settings it
    shows changed and it has not started sending; otherwise leave it as stored."""
    if (issue.status != "ready" or issue.rendered_with == identity_of(settings)
            or not _not_started(session, issue)):
        return issue
    ids = issue_comparison_ids(session, issue)
    if not ids:
        return issue
    by_id = {c.id: c for c in session.exec(select(Comparison).where(Comparison.id.in_(ids)))}
    comparisons = [by_id[i] for i in ids if i in by_id]
    edition = Edition.parse(issue.key)
    fresh = Issue(key=issue.key)
    links = _render_into(session, fresh, comparisons, edition, edition.window(settings.tz),
                         settings)
    values = {name: getattr(fresh, name) for name in _RENDERED}
    if _guarded_write(session, issue, values):
        _store_links(session, issue.id, links)
        session.refresh(issue)
    return issue


def _unblock(session: Session, settings: Settings, issue: Issue, *, now: dt.datetime) -> Issue:
    """A week a refused firing recorded as `blocked` (no content yet), composed now."""
    if not _not_started(session, issue):
        return issue
    draft, comparisons, links = _draft(session, settings, issue.key, now=now)
    values = {name: getattr(draft, name) for name in _RENDERED + ("window_start", "window_end")}
    values["created_at"] = now
    if _guarded_write(session, issue, values):
        session.add_all(IssueComparison(issue_id=issue.id, comparison_id=c.id, position=i)
                        for i, c in enumerate(comparisons))
        session.flush()
        _store_links(session, issue.id, links)
        session.refresh(issue)
    return issue


def issue_comparisons(session: Session, issue: Issue) -> list[Comparison]:
    """The comparisons an issue carried, in its order (tools and reviews loaded)."""
    return list(session.exec(
        select(Comparison).join(IssueComparison, IssueComparison.comparison_id == Comparison.id)
        .where(IssueComparison.issue_id == issue.id).order_by(IssueComparison.position)
    ).unique().all())


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
