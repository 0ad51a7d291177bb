"""What every table and unit of work of the project shares, kept in the lowest package so both
`subscribers` and `digest` (which depends on it) use the one copy: aware UTC timestamps and
the commit-or-roll-back unit of work."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import DateTime
from sqlalchemy.types import TypeDecorator
from sqlmodel import Session


class UTCDateTime(TypeDecorator):
    """Timezone-aware datetimes on every backend: stored as UTC, always returned aware.

    SQLite keeps no zone, so without this a value read back would be naive and compare wrongly
    against aware ones.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: give a time zone")
        value = value.astimezone(dt.timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@contextmanager
def unit_of_work(new_session: Callable[[], Session]) -> Iterator[Session]:
    """A session that commits on success and rolls back everything on any error."""
    with new_session() as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
