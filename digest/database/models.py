"""The tables of the issue pipeline: content (tools, reviews, comparisons) and editions
(issues, their comparisons, per-recipient deliveries, webhook events).

A tool is stored once and shared by every comparison that shows it; its reviews belong to the
tool, not to a page, because the same four scorecards appear on every page of that tool.
"""


import datetime as dt
from typing import List, Optional

from sqlalchemy import CheckConstraint, Column, ForeignKey, Index, Integer, Text, UniqueConstraint
from sqlmodel import Field, Relationship, SQLModel

from digest.database import UTCDateTime, utcnow
from subscribers.models import Subscriber  # noqa: F401  (delivery rows point at subscribers)

VERDICTS = ("ship", "skip")
ENTRIES = ("Free", "Paid", "Freemium")


def _ts(nullable: bool = True, index: bool = False) -> Column:
    return Column(UTCDateTime(), nullable=nullable, index=index)


class Tool(SQLModel, table=True):
    __tablename__ = "tools"
    __table_args__ = (
        CheckConstraint("panel_verdict IS NULL OR panel_verdict IN ('ship','skip')",
                        name="ck_tools_panel_verdict"),
        CheckConstraint("panel_ship >= 0 AND panel_skip >= 0", name="ck_tools_panel_counts"),
    )

    id: Optional[int] = Field(default=None, primary_key=True)
    slug: str = Field(max_length=200, unique=True, index=True)
    name: str = Field(max_length=200)
    category: str = Field(default="", max_length=200)
    tagline: str = Field(default="", sa_type=Text)
    description: str = Field(default="", sa_type=Text)
    pricing: str = Field(default="", sa_type=Text)
    entry: str = Field(default="", max_length=40)
    best_for: str = Field(default="", sa_type=Text)
    panel_verdict: Optional[str] = Field(default=None, max_length=10)
    panel_ship: int = 0
    panel_skip: int = 0
    community_votes: Optional[int] = None  # None = "no votes yet", distinct from 0 up-votes
    updated_at: dt.datetime = Field(default_factory=utcnow, sa_column=_ts(False))

    reviews: List["Review"] = Relationship(
        back_populates="tool",
        sa_relationship_kwargs={"order_by": "Review.position", "cascade": "all, delete-orphan",
                                "lazy": "selectin"},
    )


class Review(SQLModel, table=True):
    __tablename__ = "reviews"
    __table_args__ = (
        UniqueConstraint("tool_id", "reviewer", name="uq_reviews_tool_reviewer"),
        CheckConstraint("score IS NULL OR (score >= 0 AND score <= 100)", name="ck_reviews_score"),
        CheckConstraint("verdict IS NULL OR verdict IN ('ship','skip')", name="ck_reviews_verdict"),
    )

    id: Optional[int] = Field(default=None, primary_key=True)
    tool_id: int = Field(sa_column=Column(Integer, ForeignKey("tools.id", ondelete="CASCADE"),
                                          nullable=False, index=True))
    position: int = 0
    reviewer: str = Field(max_length=100)
    score: Optional[int] = None
    verdict: Optional[str] = Field(default=None, max_length=10)
    text: str = Field(default="", sa_type=Text)

    tool: Optional[Tool] = Relationship(back_populates="reviews")


class Comparison(SQLModel, table=True):
    __tablename__ = "comparisons"
    __table_args__ = (CheckConstraint("tool_a_id <> tool_b_id", name="ck_comparisons_two_tools"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    slug: str = Field(max_length=300, unique=True, index=True)
    url: str = Field(default="", sa_type=Text)
    tool_a_id: int = Field(foreign_key="tools.id", index=True)
    tool_b_id: int = Field(foreign_key="tools.id", index=True)
    published_at: dt.datetime = Field(sa_column=_ts(False, index=True))
    imported_at: dt.datetime = Field(default_factory=utcnow, sa_column=_ts(False))

    tool_a: Optional[Tool] = Relationship(sa_relationship_kwargs={
        "foreign_keys": "Comparison.tool_a_id", "lazy": "joined"})
    tool_b: Optional[Tool] = Relationship(sa_relationship_kwargs={
        "foreign_keys": "Comparison.tool_b_id", "lazy": "joined"})

    @property
    def tools(self) -> tuple[Tool, Tool]:
        assert self.tool_a is not None and self.tool_b is not None
        return self.tool_a, self.tool_b


# --- editions -----------------------------------------------------------------------------

# `blocked`: a schedule firing refused by the preflight checks (the reasons in status_reason);
# a later firing before the deadline sends it once the settings are fixed.
ISSUE_STATES = ("ready", "sending", "paused", "sent", "skipped", "missed", "blocked")


class Issue(SQLModel, table=True):
    """One edition, unique per key (`2026-W47`). Frozen once composed: window, comparisons,
    subject, and the rendered HTML/text with per-subscriber placeholders."""

    __tablename__ = "issues"

    id: Optional[int] = Field(default=None, primary_key=True)
    key: str = Field(max_length=20, unique=True, index=True)
    status: str = Field(default="ready", max_length=20, index=True)
    status_reason: str = Field(default="", sa_type=Text)
    window_start: dt.datetime = Field(sa_column=_ts(False))
    window_end: dt.datetime = Field(sa_column=_ts(False))
    subject: str = Field(default="", sa_type=Text)
    preheader: str = Field(default="", sa_type=Text)
    html: str = Field(default="", sa_type=Text)
    text: str = Field(default="", sa_type=Text)
    html_hash: str = Field(default="", max_length=64)
    created_at: dt.datetime = Field(default_factory=utcnow, sa_column=_ts(False))
    send_started_at: Optional[dt.datetime] = Field(default=None, sa_column=_ts())
    sent_at: Optional[dt.datetime] = Field(default=None, sa_column=_ts())
    sender: Optional[str] = Field(default=None, max_length=200)
    sender_lease_until: Optional[dt.datetime] = Field(default=None, sa_column=_ts())
    # JSON of the identity settings the HTML shows (base URL, From, postal address): an issue
    # not yet sending is rendered again when they change; `digest status` shows them.
    rendered_with: str = Field(default="", sa_type=Text)


class IssueComparison(SQLModel, table=True):
    """Which comparisons an issue carries, in order; used set-wise to exclude already-sent ones."""

    __tablename__ = "issue_comparisons"

    issue_id: int = Field(sa_column=Column(Integer, ForeignKey("issues.id", ondelete="CASCADE"),
                                           primary_key=True))
    comparison_id: int = Field(sa_column=Column(Integer, ForeignKey("comparisons.id"),
                                                primary_key=True, index=True))
    position: int = 0


class IssueEdition(SQLModel, table=True):
    """One segment's edition of an issue: readers with the same preferences (categories,
    ship-only) get the comparisons they asked for, rendered once for all of them.

    Made when the issue is planned, for each distinct preference set among active readers.
    `empty` marks a segment with nothing this week: its readers are recorded `skipped`. A segment
    whose comparisons are the whole issue shares the issue's own render (`shared`: nothing is
    copied, and its readers' deliveries point at the issue, as before segments)."""

    __tablename__ = "issue_editions"
    __table_args__ = (
        UniqueConstraint("issue_id", "segment", name="uq_issue_editions_segment"),
    )

    id: Optional[int] = Field(default=None, primary_key=True)
    issue_id: int = Field(sa_column=Column(Integer, ForeignKey("issues.id", ondelete="CASCADE"),
                                           nullable=False))
    segment: str = Field(default="all", sa_type=Text)  # `Preferences.key`: `developer-tools:ship`
    categories: str = Field(default="", sa_type=Text)  # the names, for people
    ship_only: bool = False
    shared: bool = False  # wants every comparison: its readers get the issue's own render
    empty: bool = False
    comparisons: int = 0  # how many of the issue's comparisons this edition carries
    subject: str = Field(default="", sa_type=Text)
    preheader: str = Field(default="", sa_type=Text)
    html: str = Field(default="", sa_type=Text)
    text: str = Field(default="", sa_type=Text)
    html_hash: str = Field(default="", max_length=64)
    created_at: dt.datetime = Field(default_factory=utcnow, sa_column=_ts(False))


class DeliveryBatch(SQLModel, table=True):
    """One provider request's worth of deliveries, fixed when the issue is planned.

    Claiming, leasing and declaring a request uncertain are writes to this one row, never to the
    recipients' rows: a claim costs the same for 1 or 1,000 recipients, and a recipient row is
    written once, with its outcome. `key` is the request's idempotency key while it is in flight
    or uncertain; `first_id`..`last_id` bound its deliveries so they are read by primary key.
    """

    __tablename__ = "delivery_batches"
    __table_args__ = (
        UniqueConstraint("issue_id", "batch_no", name="uq_delivery_batches_issue_no"),
        UniqueConstraint("key", name="uq_delivery_batches_key"),
        Index("ix_delivery_batches_issue_status_first", "issue_id", "status", "first_id"),
    )

    id: Optional[int] = Field(default=None, primary_key=True)
    issue_id: int = Field(sa_column=Column(Integer, ForeignKey("issues.id", ondelete="CASCADE"),
                                           nullable=False))
    batch_no: int
    # pending | claimed | sending | uncertain | done (see digest/delivery/ledger.py)
    status: str = Field(default="pending", max_length=20)
    key: Optional[str] = Field(default=None, max_length=80)
    first_id: int
    last_id: int
    size: int  # deliveries in the batch when it was made (an upper bound of the open ones)
    attempts: int = 0
    lease_until: Optional[dt.datetime] = Field(default=None, sa_column=_ts())
    not_before: Optional[dt.datetime] = Field(default=None, sa_column=_ts())
    # When the first request that may have reached these recipients left; NULL while none has
    # gone out unanswered. A batch claimed but never started goes back to pending after a crash.
    started_at: Optional[dt.datetime] = Field(default=None, sa_column=_ts())
    reason: str = Field(default="", sa_type=Text)
    updated_at: dt.datetime = Field(default_factory=utcnow, sa_column=_ts(False))


class Delivery(SQLModel, table=True):
    """The per-recipient ledger: one row per (issue, subscriber), planned into a batch before the
    provider call and written once after it, so nothing is lost and nothing goes out twice.

    No index covers a column that changes while sending (status, outcome): writing an outcome
    adds no entry to such an index, and on PostgreSQL it is a heap-only update (no index
    written at all) whenever the row's page has room for the new version.
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("issue_id", "subscriber_id", name="uq_deliveries_issue_subscriber"),
    )

    id: Optional[int] = Field(default=None, primary_key=True)
    issue_id: int = Field(sa_column=Column(Integer, ForeignKey("issues.id", ondelete="CASCADE"),
                                           nullable=False))
    subscriber_id: int = Field(sa_column=Column(Integer, ForeignKey("subscribers.id",
                                                                    ondelete="CASCADE"),
                                                nullable=False, index=True))
    batch_no: int = 0  # its DeliveryBatch within the issue
    # The segment's edition (`issue_editions.id`) this reader gets; None: the issue's own render
    # (deliveries planned before segments). No foreign key: see migration 0009.
    edition_id: Optional[int] = None
    status: str = Field(default="pending", max_length=20)  # pending | sent | failed | skipped
    batch_key: Optional[str] = Field(default=None, max_length=80)  # the request it went out in
    attempts: int = 0  # provider calls that answered for this recipient
    provider_message_id: Optional[str] = Field(default=None, max_length=300)
    reason: str = Field(default="", sa_type=Text)
    updated_at: dt.datetime = Field(default_factory=utcnow, sa_column=_ts(False))


class WebhookEvent(SQLModel, table=True):
    """Seen provider events, so a replayed webhook is acknowledged and ignored."""

    __tablename__ = "webhook_events"
    __table_args__ = (UniqueConstraint("provider", "event_id", name="uq_webhook_events"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    provider: str = Field(max_length=20)
    event_id: str = Field(max_length=300)
    kind: str = Field(default="", max_length=40)
    email_hash: str = Field(default="", max_length=64)
    # For complaints: the issue complained about (the complaint cut-off counts these); for
    # bounces, the issue of the message that bounced (reports count soft bounces from here).
    issue_id: Optional[int] = Field(default=None, sa_column=Column(
        Integer, ForeignKey("issues.id", ondelete="SET NULL"), nullable=True, index=True))
    # The delivery the event names (by the provider's message id), when it is known. No foreign
    # key: the event outlives nothing it needs from the row.
    delivery_id: Optional[int] = None
    received_at: dt.datetime = Field(default_factory=utcnow, sa_column=_ts(False))


class IssueTotals(SQLModel, table=True):
    """The ledger counts of a finished issue, written once when it is sent (or the first time a
    report sees it sent): a sent issue's ledger no longer changes, and counting its deliveries
    on every dashboard load is the dashboard's cost. `sent_at` is the issue's at that time: if
    it differs (the issue was sent again), the row is stale and is computed anew.

    Webhook outcomes (bounces, complaints, unsubscribes) are not here: they keep arriving
    after an issue is sent and are counted from their own small tables on each load."""

    __tablename__ = "issue_totals"

    issue_id: int = Field(sa_column=Column(Integer, ForeignKey("issues.id", ondelete="CASCADE"),
                                           primary_key=True, autoincrement=False))
    sent_at: dt.datetime = Field(sa_column=_ts(False))
    planned: int = 0
    delivered: int = 0
    failed: int = 0
    skipped: int = 0
    uncertain: int = 0
    open: int = 0
    computed_at: dt.datetime = Field(default_factory=utcnow, sa_column=_ts(False))


# --- readers' votes ------------------------------------------------------------------------

class Vote(SQLModel, table=True):
    """A reader's answer to "Would you ship it?" for one tool, from a link in an issue.

    One per (subscriber, tool): voting again changes the answer. When the subscriber is erased
    the row loses its subscriber (ON DELETE SET NULL) and stays as an anonymous vote, so the
    tool's totals are kept and nothing links them to the person any more."""

    __tablename__ = "votes"
    __table_args__ = (
        UniqueConstraint("subscriber_id", "tool_id", name="uq_votes_subscriber_tool"),
    )

    id: Optional[int] = Field(default=None, primary_key=True)
    tool_id: int = Field(sa_column=Column(Integer, ForeignKey("tools.id", ondelete="CASCADE"),
                                          nullable=False, index=True))
    subscriber_id: Optional[int] = Field(default=None, sa_column=Column(
        Integer, ForeignKey("subscribers.id", ondelete="SET NULL"), nullable=True))
    issue_id: Optional[int] = Field(default=None, sa_column=Column(
        Integer, ForeignKey("issues.id", ondelete="SET NULL"), nullable=True))
    ship: bool
    voted_at: dt.datetime = Field(default_factory=utcnow, sa_column=_ts(False))


# --- outcomes: the links of an issue and how often they were followed ----------------------------

class IssueLink(SQLModel, table=True):
    """A link of a composed issue, numbered in the issue: the only place the click redirect
    takes a destination from (never from the request)."""

    __tablename__ = "issue_links"

    issue_id: int = Field(sa_column=Column(Integer, ForeignKey("issues.id", ondelete="CASCADE"),
                                           primary_key=True))
    link_no: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    kind: str = Field(default="comparison", max_length=20)  # comparison (card) | overflow
    label: str = Field(default="", sa_type=Text)
    url: str = Field(sa_type=Text)


class LinkClick(SQLModel, table=True):
    """Counts per link, people and machines (link scanners, prefetchers) apart. No reader is
    named here in any mode."""

    __tablename__ = "link_clicks"

    issue_id: int = Field(sa_column=Column(Integer, ForeignKey("issues.id", ondelete="CASCADE"),
                                           primary_key=True))
    link_no: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    human: int = 0
    machine: int = 0
    updated_at: dt.datetime = Field(default_factory=utcnow, sa_column=_ts(False))


class LinkReader(SQLModel, table=True):
    """Who followed a link: written only with DIGEST_CLICK_TRACKING=per-subscriber (opt-in), for
    counts of unique readers. Erasing a subscriber erases their rows."""

    __tablename__ = "link_readers"

    issue_id: int = Field(sa_column=Column(Integer, ForeignKey("issues.id", ondelete="CASCADE"),
                                           primary_key=True))
    link_no: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    subscriber_id: int = Field(sa_column=Column(Integer, ForeignKey("subscribers.id",
                                                                    ondelete="CASCADE"),
                                                primary_key=True, index=True))
    first_at: dt.datetime = Field(default_factory=utcnow, sa_column=_ts(False))
