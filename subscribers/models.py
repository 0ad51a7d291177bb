"""Subscriber and suppression tables.

Timestamps use the shared aware-datetime type (`subscribers.storage`), so this package needs
nothing from `digest`.
"""


import datetime as dt
from typing import Optional

from sqlalchemy import Column
from sqlmodel import Field, SQLModel

from subscribers.storage import UTCDateTime, utcnow

STATUSES = ("pending", "active", "unsubscribed", "bounced", "complained")
SOURCES = ("form", "import", "cli")


def _ts(nullable: bool = True) -> Column:
    return Column(UTCDateTime(), nullable=nullable)


class Subscriber(SQLModel, table=True):
    __tablename__ = "subscribers"

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


class Suppression(SQLModel, table=True):
    """A hashed address that must not be re-added (erased after a bounce or complaint)."""

    __tablename__ = "suppressions"

    id: Optional[int] = Field(default=None, primary_key=True)
    email_hash: str = Field(max_length=64, unique=True, index=True)
    reason: str = Field(max_length=20)
    created_at: dt.datetime = Field(default_factory=utcnow, sa_column=_ts(False))
