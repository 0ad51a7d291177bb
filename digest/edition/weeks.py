"""Edition keys: an ISO week (`2026-W47`) in the digest's time zone, and its [start, end) window.

A window starts at local Monday midnight and ends at the next one, half-open, so consecutive
editions tile time with no gap and no overlap even across DST changes (such a week is 167 or 169
hours long, not 168).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from digest.errors import DigestError

_KEY_RE = re.compile(r"(\d{4})-W(\d{1,2})")
_UTC = dt.timezone.utc
# Not strftime's %B: that follows the process locale, and the email is written in English.
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")


class EditionKeyError(DigestError, ValueError):
    """A week key that is malformed or names a week that does not exist."""

    exit_code = 2


def weeks_in_year(year: int) -> int:
    """52 or 53: 28 December always falls in the last ISO week of its year."""
    return dt.date(year, 12, 28).isocalendar().week


def _local_midnight(day: dt.date, tz: ZoneInfo) -> dt.datetime:
    """The first instant of `day` in `tz`, even where midnight falls in a DST gap."""
    naive = dt.datetime.combine(day, dt.time(0, 0), tzinfo=tz)
    # A round trip through UTC moves a nonexistent local time to the first real instant after it.
    return naive.astimezone(_UTC).astimezone(tz)


@dataclass(frozen=True)
class Window:
    """The half-open interval [start, end) of an edition.

    `start` and `end` are UTC: Python subtracts and compares two datetimes that share a ZoneInfo
    by their wall clocks, which is wrong across a DST change. `tz` is kept for the local dates."""

    start: dt.datetime
    end: dt.datetime
    tz: ZoneInfo

    def __contains__(self, instant: dt.datetime) -> bool:
        if instant.tzinfo is None:
            raise ValueError(f"naive datetime {instant!r}: give a time zone")
        return self.start <= instant.astimezone(_UTC) < self.end

    @property
    def local_start(self) -> dt.datetime:
        return self.start.astimezone(self.tz)

    @property
    def local_end(self) -> dt.datetime:
        return self.end.astimezone(self.tz)

    @property
    def first_day(self) -> dt.date:
        return self.local_start.date()

    @property
    def last_day(self) -> dt.date:
        return self.local_end.date() - dt.timedelta(days=1)

    def label(self) -> str:
        """Dates for people: `16–22 November 2026`, `30 November – 6 December 2026`,
        `28 December 2026 – 3 January 2027`."""
        first, last = self.first_day, self.last_day
        m1, m2 = _MONTHS[first.month - 1], _MONTHS[last.month - 1]
        if first.year != last.year:
            return f"{first.day} {m1} {first.year} – {last.day} {m2} {last.year}"
        if first.month != last.month:
            return f"{first.day} {m1} – {last.day} {m2} {last.year}"
        return f"{first.day}–{last.day} {m2} {last.year}"


@dataclass(frozen=True, order=True)
class Edition:
    """One ISO week. Ordered chronologically; `key` is its canonical spelling."""

    year: int
    week: int

    def __post_init__(self) -> None:
        if not 1 <= self.year <= 9998:
            raise EditionKeyError(f"year {self.year} is out of range")
        last = weeks_in_year(self.year)
        if not 1 <= self.week <= last:
            raise EditionKeyError(f"{self.year}-W{self.week:02d} does not exist: "
                                  f"{self.year} has {last} ISO weeks (W01 to W{last})")

    @classmethod
    def parse(cls, text: str) -> Edition:
        """Read `2026-W47` (also `2026-w47`, `2026-W7`); anything else is refused by name."""
        raw = (text or "").strip()
        match = _KEY_RE.fullmatch(raw.upper())
        if not match:
            raise EditionKeyError(f"edition key {text!r} is not of the form YYYY-Www "
                                  f"(an ISO week, e.g. 2026-W47)")
        return cls(int(match.group(1)), int(match.group(2)))

    @classmethod
    def at(cls, instant: dt.datetime, tz: ZoneInfo) -> Edition:
        """The edition whose window contains `instant` (which must be timezone-aware)."""
        if instant.tzinfo is None:
            raise ValueError(f"naive datetime {instant!r}: give a time zone")
        iso = instant.astimezone(tz).isocalendar()
        return cls(iso.year, iso.week)

    @property
    def key(self) -> str:
        return f"{self.year}-W{self.week:02d}"

    def __str__(self) -> str:
        return self.key

    @property
    def monday(self) -> dt.date:
        return dt.date.fromisocalendar(self.year, self.week, 1)

    def window(self, tz: ZoneInfo) -> Window:
        monday = self.monday
        return Window(_local_midnight(monday, tz).astimezone(_UTC),
                      _local_midnight(monday + dt.timedelta(days=7), tz).astimezone(_UTC), tz)

    def shift(self, weeks: int) -> Edition:
        """The edition `weeks` later (or earlier, when negative)."""
        iso = (self.monday + dt.timedelta(weeks=weeks)).isocalendar()
        return Edition(iso.year, iso.week)


def parse_key(text: str) -> Edition:
    return Edition.parse(text)


def edition_window(key: str, tz: ZoneInfo) -> Window:
    return Edition.parse(key).window(tz)


def current_edition(now: dt.datetime, tz: ZoneInfo) -> Edition:
    """The edition in progress at `now`: its window contains `now`."""
    return Edition.at(now, tz)


def last_complete_edition(now: dt.datetime, tz: ZoneInfo) -> Edition:
    """The newest edition whose window has closed by `now` (what a Monday send delivers)."""
    return Edition.at(now, tz).shift(-1)
