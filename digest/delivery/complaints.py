"""Spam complaints per issue: which issue a complaint is about, the cut-off that pauses a send,
and the rate of recent issues.

Gmail and Yahoo's bulk-sender rules: complaints must stay under 0.3% of delivered mail (aim
under 0.1%). A complaint arrives by webhook (`digest.outcomes.record`) and is stored with the
issue it is about: the issue of the message it names (`digest.outcomes.attribution`), else the
one its tag names, else the last issue delivered to that address.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlmodel import Session

from digest.database.models import Delivery, Issue, WebhookEvent

CUTOFF = 0.003  # pause the send at this share of delivered messages ...
CUTOFF_MIN = 5  # ... once at least this many complained (a tiny list is not stopped by one)
HISTORY_WARN = 0.001  # warn when the last issues averaged over this
HISTORY_ISSUES = 4


def complaints(session: Session, issue_id: int) -> int:
    return session.execute(select(func.count()).select_from(WebhookEvent).where(
        WebhookEvent.issue_id == issue_id, WebhookEvent.kind == "complained")).scalar_one()


def delivered(session: Session, issue_id: int, *, at_most: int | None = None) -> int:
    """Sent deliveries of the issue; with `at_most`, counting stops there (cheap on a big list)."""
    query = select(Delivery.id).where(Delivery.issue_id == issue_id, Delivery.status == "sent")
    if at_most is not None:
        query = query.limit(at_most)
    return session.execute(select(func.count()).select_from(query.subquery())).scalar_one()


@dataclass(frozen=True)
class ComplaintCutoff:
    threshold: float = CUTOFF
    min_complaints: int = CUTOFF_MIN

    def check(self, session: Session, issue_id: int, *, known: int = 0,
              unrecorded: int = 0) -> str | None:
        """The reason to pause, or None. `known` is the count when this run started: a run
        the operator resumed after a pause trips again only when new complaints arrive. One
        indexed count per call while under the minimum; past it, deliveries are counted only
        up to the number that would keep the rate under the threshold. `unrecorded`: messages
        the provider accepted whose outcome is not written yet."""
        count = complaints(session, issue_id)
        if count < self.min_complaints or count <= known:
            return None
        enough = int(count / self.threshold) + 1  # this many delivered keep the rate under it
        sent = unrecorded + delivered(session, issue_id, at_most=max(0, enough - unrecorded))
        if sent >= enough:
            return None
        rate = count / sent if sent else 1.0
        return (f"complaint cut-off: {count} spam complaints for {sent:,} delivered messages "
                f"({rate:.2%} >= {self.threshold:.1%}, the mailbox providers' limit); look at "
                "what changed in this issue or list before `digest send` resumes it")


@dataclass(frozen=True)
class ComplaintHistory:
    issues: list[tuple[str, int, int]]  # (key, complaints, delivered), newest first

    @property
    def rate(self) -> float:
        sent = sum(d for _, _, d in self.issues)
        return sum(c for _, c, _ in self.issues) / sent if sent else 0.0

    @property
    def too_high(self) -> bool:
        return self.rate > HISTORY_WARN

    def describe(self) -> str:
        keys = ", ".join(k for k, _, _ in self.issues)
        return (f"the last {len(self.issues)} issue(s) ({keys}) drew {self.rate:.2%} spam "
                f"complaints (over {HISTORY_WARN:.1%}; mailbox providers block bulk senders "
                f"at {CUTOFF:.1%})")


def recent_history(session: Session, count: int = HISTORY_ISSUES) -> ComplaintHistory:
    """Complaints over delivered messages of the last `count` issues that went out."""
    rows = session.execute(select(Issue.id, Issue.key).where(Issue.send_started_at.is_not(None))
                           .order_by(Issue.window_start.desc(), Issue.id.desc()).limit(count)).all()
    return ComplaintHistory([(key, complaints(session, i), delivered(session, i))
                             for i, key in rows])
