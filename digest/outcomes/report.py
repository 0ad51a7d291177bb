"""What became of each issue, from data the project already holds: the ledger (delivered,
failed, uncertain; kept per finished issue by `totals`), subscribers' status changes (hard
bounced, complained, unsubscribed), the soft bounces providers reported, and the click
counters. Read-only, set-wise SQL (apart from filling the finished issues' totals once);
shared by `digest report` and the `/admin` dashboard.

A hard bounce, complaint or unsubscribe counts toward the issue it came by: the issue whose
link or List-Unsubscribe header was used (unsubscribe links name it), or the issue of the
message a provider's event names (by its message id). Where that is not known (links from before
they named an issue, changes made by hand) it goes to the latest issue mailed to the reader
before the change. Only the subscriber's current status counts, so an address the operator
reactivated no longer shows as bounced. Soft bounces change no subscriber: each delivery a
provider reported one for counts once, whatever the reader's status.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from sqlalchemy import and_, case, func, or_, select
from sqlmodel import Session

from digest.database.models import (Delivery, DeliveryBatch, Issue, IssueLink, LinkClick,
                                    LinkReader, WebhookEvent)
from digest.delivery import ledger
from digest.outcomes.totals import ledger_totals
from digest.edition.weeks import Edition
from subscribers.models import Subscriber

# Issues that went out, or are going out: the ones with outcomes.
REPORTED_STATES = ("sending", "paused", "sent")
RATE_WINDOW = dt.timedelta(seconds=60)  # the send rate is measured over this much recent time


def _rate(n: int, of: int) -> float:
    return round(n / of, 4) if of else 0.0


@dataclass
class LinkStat:
    link_no: int
    kind: str
    label: str
    url: str
    human: int = 0
    machine: int = 0
    readers: int = 0  # unique readers (per-subscriber mode only)


@dataclass
class IssueOutcome:
    key: str
    status: str
    reason: str
    sent_at: dt.datetime | None
    planned: int = 0
    delivered: int = 0  # accepted by the provider
    failed: int = 0
    uncertain: int = 0
    open: int = 0
    hard_bounced: int = 0  # the address is gone: the reader was taken off the list
    soft_bounced: int = 0  # deliveries that failed for now (mailbox full, deferred)
    complained: int = 0
    unsubscribed: int = 0
    clicks: int = 0  # people
    machine_clicks: int = 0
    readers: int = 0
    links: list[LinkStat] = field(default_factory=list)

    @property
    def rates(self) -> dict[str, float]:
        """Shares of the delivered messages."""
        d = self.delivered
        return {"hard_bounce_rate": _rate(self.hard_bounced, d),
                "soft_bounce_rate": _rate(self.soft_bounced, d),
                "complaint_rate": _rate(self.complained, d),
                "unsubscribe_rate": _rate(self.unsubscribed, d),
                "click_rate": _rate(self.clicks, d), "reader_rate": _rate(self.readers, d)}

    @property
    def top(self) -> LinkStat | None:
        return self.links[0] if self.links and self.links[0].human else None

    def as_dict(self) -> dict:
        data = {k: v for k, v in asdict(self).items() if k != "links"}
        data["sent_at"] = self.sent_at.isoformat() if self.sent_at else None
        data.update(self.rates)
        data["links"] = [asdict(link) for link in self.links]
        return data


def _attributed(session: Session, issue_ids: Sequence[int]) -> dict[tuple[int, str], int]:
    """{(issue id, status): subscribers} for bounced, complained and unsubscribed subscribers,
    each given to the issue they left by, or (not known) the latest issue mailed to them
    before their status changed."""
    S, D, I = Subscriber.__table__.c, Delivery.__table__.c, Issue.__table__.c  # noqa: E741
    changed_at = case((S.status == "bounced", S.bounced_at),
                      (S.status == "complained", S.complained_at), else_=S.unsubscribed_at)
    latest = (select(D.issue_id).join_from(Delivery.__table__, Issue.__table__, I.id == D.issue_id)
              .where(D.subscriber_id == S.id, D.status.in_(("sent", "failed")),
                     I.send_started_at <= changed_at)
              .order_by(I.send_started_at.desc(), I.id.desc()).limit(1)
              .correlate(Subscriber.__table__).scalar_subquery())
    issue = case((S.left_issue_id.is_not(None), S.left_issue_id), else_=latest)
    per_subscriber = (select(issue.label("issue_id"), S.status.label("status"))
                      .where(S.status.in_(("bounced", "complained", "unsubscribed")))
                      .subquery())
    rows = session.execute(
        select(per_subscriber.c.issue_id, per_subscriber.c.status, func.count())
        .where(per_subscriber.c.issue_id.in_(list(issue_ids)))
        .group_by(per_subscriber.c.issue_id, per_subscriber.c.status))
    return {(issue_id, status): int(n) for issue_id, status, n in rows}


def _soft_bounces(session: Session, issue_ids: Sequence[int]) -> dict[int, int]:
    """{issue id: deliveries with a soft bounce}: a delivery deferred three times counts once."""
    W = WebhookEvent.__table__.c
    return {issue_id: int(n) for issue_id, n in session.execute(
        select(W.issue_id, func.count(func.distinct(W.email_hash)))
        .where(W.issue_id.in_(list(issue_ids)), W.kind == "soft_bounced")
        .group_by(W.issue_id))}


def link_stats(session: Session, issue_ids: Sequence[int]) -> dict[int, list[LinkStat]]:
    """Each issue's links, most clicked by people first."""
    L, C = IssueLink.__table__.c, LinkClick.__table__.c
    R = LinkReader.__table__.c
    readers = (select(R.issue_id, R.link_no, func.count().label("n"))
               .where(R.issue_id.in_(list(issue_ids))).group_by(R.issue_id, R.link_no).subquery())
    rows = session.execute(
        select(L.issue_id, L.link_no, L.kind, L.label, L.url, func.coalesce(C.human, 0),
               func.coalesce(C.machine, 0), func.coalesce(readers.c.n, 0))
        .select_from(IssueLink.__table__
                     .outerjoin(LinkClick.__table__, and_(C.issue_id == L.issue_id,
                                                          C.link_no == L.link_no))
                     .outerjoin(readers, and_(readers.c.issue_id == L.issue_id,
                                              readers.c.link_no == L.link_no)))
        .where(L.issue_id.in_(list(issue_ids))))
    out: dict[int, list[LinkStat]] = {}
    for issue_id, no, kind, label, url, human, machine, n in rows:
        out.setdefault(issue_id, []).append(LinkStat(no, kind, label, url, int(human),
                                                     int(machine), int(n)))
    for links in out.values():
        links.sort(key=lambda s: (-s.human, -s.readers, s.link_no))
    return out


def issue_outcomes(session: Session, *, keys: Sequence[str] | None = None,
                   last: int | None = None) -> list[IssueOutcome]:
    """Outcomes of the issues that went out (or the given ones), newest first. A sent issue
    seen for the first time gets its ledger totals kept (`totals`), which commits `session`."""
    query = select(Issue.id, Issue.key, Issue.status, Issue.status_reason, Issue.sent_at)
    if keys is not None:
        query = query.where(Issue.key.in_(list(keys)))
    else:
        query = query.where(Issue.status.in_(REPORTED_STATES))
    query = query.order_by(Issue.key.desc())
    if last:
        query = query.limit(last)
    issues = session.execute(query).all()
    if not issues:
        return []
    ids = [row[0] for row in issues]
    totals = ledger_totals(session, [(row[0], row[2], row[4]) for row in issues])
    attributed = _attributed(session, ids)
    soft = _soft_bounces(session, ids)
    links = link_stats(session, ids)
    R = LinkReader.__table__.c
    readers = dict(session.execute(
        select(R.issue_id, func.count(func.distinct(R.subscriber_id)))
        .where(R.issue_id.in_(ids)).group_by(R.issue_id)).all())
    out = []
    for issue_id, key, status, reason, sent_at in issues:
        counts = totals[issue_id]
        mine = links.get(issue_id, [])
        out.append(IssueOutcome(
            key=key, status=status, reason=reason, sent_at=sent_at, planned=counts.planned,
            delivered=counts.delivered, failed=counts.failed, uncertain=counts.uncertain,
            open=counts.open,
            hard_bounced=attributed.get((issue_id, "bounced"), 0),
            soft_bounced=soft.get(issue_id, 0),
            complained=attributed.get((issue_id, "complained"), 0),
            unsubscribed=attributed.get((issue_id, "unsubscribed"), 0),
            clicks=sum(s.human for s in mine), machine_clicks=sum(s.machine for s in mine),
            readers=int(readers.get(issue_id, 0)), links=mine))
    return out


def top_comparisons(session: Session, issue_key: str) -> list[LinkStat]:
    found = issue_outcomes(session, keys=[issue_key])
    return found[0].links if found else []


# --- a running send ------------------------------------------------------------------------------

@dataclass
class Progress:
    key: str
    status: str
    reason: str
    total: int
    done: int
    sent: int
    failed: int
    uncertain: int
    rate: float  # recipients per second over the last minute
    eta_seconds: float | None
    started_at: dt.datetime | None

    @property
    def percent(self) -> int:
        return int(100 * self.done / self.total) if self.total else 0

    def as_dict(self) -> dict:
        data = asdict(self)
        data["started_at"] = self.started_at.isoformat() if self.started_at else None
        data["percent"] = self.percent
        return data


def current_send(session: Session) -> Issue | None:
    """The issue being sent, or else the newest paused one (a send waiting to be resumed)."""
    for status in ("sending", "paused"):
        issue = session.execute(select(Issue).where(Issue.status == status)
                                .order_by(Issue.key.desc()).limit(1)).scalars().first()
        if issue is not None:
            return issue
    return None


def send_progress(session: Session, issue: Issue, *, now: dt.datetime) -> Progress:
    counts = ledger.counts(session, issue.id)
    done = counts["sent"] + counts["failed"] + counts["skipped"]
    B = DeliveryBatch.__table__.c
    recent = session.execute(
        select(func.coalesce(func.sum(B.size), 0))
        .where(B.issue_id == issue.id, B.status == "done",
               B.updated_at > now - RATE_WINDOW, B.updated_at <= now)).scalar_one()
    rate = int(recent) / RATE_WINDOW.total_seconds()
    remaining = counts.open
    eta = remaining / rate if rate > 0 and issue.status == "sending" else None
    return Progress(issue.key, issue.status, issue.status_reason, counts.total, done,
                    counts["sent"], counts["failed"], counts["uncertain"], round(rate, 2),
                    round(eta, 1) if eta is not None else None, issue.send_started_at)


# --- the list ------------------------------------------------------------------------------------

@dataclass
class WeekGrowth:
    week: str
    active: int  # at the end of the week
    signups: int
    unsubscribes: int
    bounces: int  # bounces and complaints


def list_growth(session: Session, *, now: dt.datetime, tz, weeks: int = 12) -> list[WeekGrowth]:
    """The last `weeks` weeks (the current one included), from the timestamps each subscriber
    keeps, so it is the list as it stands: someone who unsubscribed and came back counts once,
    from their latest change.

    One count of the readers active through every week, then one read of the rows that
    changed within the weeks shown, bucketed here: the cost follows the changes, not weeks x
    the whole list (a year's chart once made 208 sums over every subscriber)."""
    S = Subscriber.__table__.c
    last = Edition.at(now, tz)
    editions = [last.shift(-i) for i in range(weeks - 1, -1, -1)]
    windows = [e.window(tz) for e in editions]
    starts, ends = [w.start for w in windows], [w.end for w in windows]
    first, final = starts[0], ends[-1]
    left = or_(S.unsubscribed_at.is_not(None), S.bounced_at.is_not(None),
               S.complained_at.is_not(None))
    # When the reader left, for a reader who is not active now (None: still on the list).
    gone = case((and_(S.status != "active", left),
                 func.coalesce(S.unsubscribed_at, S.bounced_at, S.complained_at)), else_=None)
    confirmed_early = and_(S.confirmed_at.is_not(None), S.confirmed_at < ends[0])
    stays = or_(gone.is_(None), gone >= final)
    steady = session.execute(select(func.count()).where(confirmed_early, stays)).scalar_one()

    def within(col):
        return and_(col >= first, col < final)

    changed = session.execute(
        select(S.created_at, S.confirmed_at, S.unsubscribed_at, S.bounced_at, S.complained_at,
               gone.label("gone"))
        .where(or_(within(S.created_at), within(S.unsubscribed_at), within(S.bounced_at),
                   within(S.complained_at),
                   and_(S.confirmed_at.is_not(None), S.confirmed_at < final,
                        ~and_(confirmed_early, stays))))).all()

    def week_of(at: dt.datetime | None) -> int | None:
        if at is None or at < first or at >= final:
            return None
        i = bisect.bisect_right(starts, at) - 1
        return i if at < ends[i] else None

    def first_end_after(at: dt.datetime) -> int:
        """The first week whose end is after `at` (len(ends): none)."""
        return bisect.bisect_right(ends, at)

    signups, unsubscribes, bounces = [0] * weeks, [0] * weeks, [0] * weeks
    delta = [0] * (weeks + 1)  # active readers: +1 from the week they count, -1 once gone
    for created, confirmed, unsubscribed, bounced, complained, left_at in changed:
        if (w := week_of(created)) is not None:
            signups[w] += 1
        if (w := week_of(unsubscribed)) is not None:
            unsubscribes[w] += 1
        for w in {week_of(bounced), week_of(complained)} - {None}:
            bounces[w] += 1
        if confirmed is None or confirmed >= final:
            continue
        begin = first_end_after(confirmed)
        stop = weeks if left_at is None else max(begin, min(weeks, first_end_after(left_at)))
        if confirmed < ends[0] and (left_at is None or left_at >= final):
            continue  # counted in `steady`
        delta[begin] += 1
        delta[stop] -= 1
    out, active = [], steady
    for i, edition in enumerate(editions):
        active += delta[i]
        out.append(WeekGrowth(edition.key, active, signups[i], unsubscribes[i], bounces[i]))
    return out


__all__ = ["IssueOutcome", "LinkStat", "Progress", "WeekGrowth", "current_send", "issue_outcomes",
           "link_stats", "list_growth", "send_progress", "top_comparisons"]
