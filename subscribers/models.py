"""Subscriber and suppression tables.

Timestamps use the shared aware-datetime type (`subscribers.storage`), so this package needs
nothing from `digest`.
"""


import datetime as dt
from typing import Optional

from sqlalchemy import Column, Index, Integer, Text
from sqlmodel import Field, SQLModel

from subscribers.storage import UTCDateTime, utcnow

STATUSES = ("pending", "active", "unsubscribed", "bounced", "complained")
SOURCES = ("form", "import", "cli")


def _ts(nullable: bool = True) -> Column:
    return Column(UTCDateTime(), nullable=nullable)


class Subscriber(SQLModel, table=True):
    """One address on the list. Ids are never reused (AUTOINCREMENT on SQLite; PostgreSQL's
    sequence never goes back): a removed person's id must not name the next person to sign up."""

    __tablename__ = "subscribers"
    __table_args__ = (
        # A segment's readers in id order with what a send reads of them: a batch of one segment
        # edition reads a few adjacent pages of it, not a table page per reader (they are spread
        # over the whole table). See digest/delivery/ledger.py `batch_rows`.
        Index("ix_subscribers_segment_read", "segment", "id", "status", "email", "name"),
        {"sqlite_autoincrement": True},
    )

    id: Optional[int] = Field(default=None, primary_key=True)
    email: str = Field(max_length=320, unique=True, index=True)  # normalised: lower-cased
    name: Optional[str] = Field(default=None, max_length=200)
    status: str = Field(default="pending", max_length=20, index=True)
    source: str = Field(default="cli", max_length=20)
    created_at: dt.datetime = Field(default_factory=utcnow, sa_column=_ts(False))
    updated_at: dt.datetime = Field(default_factory=utcnow, sa_column=_ts(False))
    confirmed_at: Optional[dt.datetime] = Field(default=None, sa_column=_ts())
    unsubscribed_at: Optional[dt.datetime] = Field(default=None, sa_column=_ts())
    bounced_at: Optional[dt.datetime] = Field(default=None, sa_column=_ts())
    complained_at: Optional[dt.datetime] = Field(default=None, sa_column=_ts())
    # Confirmation mails sent since `confirmations_since` (a day's window, see lifecycle.signup):
    # stored on the row so the limit holds across restarts and processes.
    confirmations_sent: int = Field(default=0, sa_column=Column(Integer, nullable=False,
                                                                  server_default="0"))
    confirmations_since: Optional[dt.datetime] = Field(default=None, sa_column=_ts())
    # What the reader wants (subscribers.preferences): category names, `;`-separated in a
    # canonical order (empty = every category), and Ship verdicts only.
    categories: str = Field(default="", sa_type=Text)
    ship_only: bool = False
    # The segment those choices make (`Preferences.key`, e.g. `code-review+data-tools:ship`),
    # kept with them so the plan joins readers to their edition in SQL.
    segment: str = Field(default="all", sa_type=Text)
    # The issue whose mail the reader left the list by: the unsubscribe link or header they used,
    # the message that hard-bounced or was reported as spam. NULL when that is not known (a
    # link from before links named their issue, a change made by hand); reports then give the
    # change to the last issue mailed before it. No foreign key: this package knows no issues.
    left_issue_id: Optional[int] = Field(default=None, sa_column=Column(Integer, nullable=True))


class Suppression(SQLModel, table=True):
    """A hashed address that must not be re-added (erased after a bounce or complaint)."""

    __tablename__ = "suppressions"

    id: Optional[int] = Field(default=None, primary_key=True)
    email_hash: str = Field(max_length=64, unique=True, index=True)
    reason: str = Field(max_length=20)
    created_at: dt.datetime = Field(default_factory=utcnow, sa_column=_ts(False))
