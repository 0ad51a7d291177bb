"""Subscriber and suppression tables.

Timestamps use a small local aware-datetime type so this package needs nothing from `digest`.
"""


import datetime as dt
from typing import Optional

from sqlalchemy import Column, DateTime
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

STATUSES = ("pending", "active", "unsubscribed", "bounced", "complained")
SOURCES = ("form", "import", "cli")


class AwareDateTime(TypeDecorator):
    """Stored as UTC, always returned timezone-aware (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        value = value.astimezone(dt.timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _ts(nullable: bool = True) -> Column:
    return Column(AwareDateTime(), nullable=nullable)


class Subscriber(SQLModel, table=True):
    __tablename__ = "subscribers"

    id: Optional[int] = Field(default=None, primary_key=True)
    email: str = Field(max_length=320, unique=True, index=True)  # normalised: lower-cased
    name: Optional[str] = Field(default=None, max_length=200)
    status: str = Field(default="pending", max_length=20, index=True)
    source: str = Field(default="cli", max_length=20)
    created_at: dt.datetime = Field(default_factory=now, sa_column=_ts(False))
    updated_at: dt.datetime = Field(default_factory=now, sa_column=_ts(False))
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
    created_at: dt.datetime = Field(default_factory=now, sa_column=_ts(False))
