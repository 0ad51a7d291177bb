"""What one firing of the schedule may do, decided from plain values (no clock, no database).

A firing at `scheduled_for` sends the last week complete at that moment. That edition was *due*
at the schedule's first fire time after its week closed (for a weekly schedule, the firing
itself); its *deadline* is the end of that local day by default, or a number of hours after it.
A firing that starts before the deadline sends; one that starts at or after it records the week
as `missed` and never sends it late: a machine restored from a snapshot, or a scheduler that was
down for days, must not mail last week's news. A firing that starts before its own time (a clock
behind the scheduler's, a hand-given time in the future) is too early and does nothing.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from digest.edition.weeks import Edition, Window, last_complete_edition
from schedules.cron import DigestCronTrigger, first_fire_at_or_after, next_fire_times

UTC = dt.timezone.utc


def _utc(instant: dt.datetime) -> dt.datetime:
    if instant.tzinfo is None:
        raise ValueError(f"naive datetime {instant!r}: give a time zone")
    return instant.astimezone(UTC)


def end_of_local_day(instant: dt.datetime, tz: ZoneInfo) -> dt.datetime:
    """The next local midnight after `instant` (UTC); a day with a DST change is 23 or 25 hours."""
    day = _utc(instant).astimezone(tz).date() + dt.timedelta(days=1)
    midnight = dt.datetime.combine(day, dt.time(0, 0), tzinfo=tz)
    # Through UTC and back: a midnight that falls in a DST gap becomes the first real instant.
    return midnight.astimezone(UTC).astimezone(tz).astimezone(UTC)


@dataclass(frozen=True)
class DeadlineRule:
    """`end-of-day` (the default) or `hours` after the issue was due."""

    kind: str = "end-of-day"
    hours: float = 24.0

    def __post_init__(self) -> None:
        if self.kind not in ("end-of-day", "hours"):
            raise ValueError(f"unknown deadline rule {self.kind!r}")
        if self.kind == "hours" and not self.hours > 0:
            raise ValueError(f"a deadline of {self.hours} hours is not after the due time")

    @classmethod
    def from_settings(cls, settings) -> DeadlineRule:
        return cls(settings.send_deadline, settings.send_deadline_hours)

    def deadline(self, due: dt.datetime, tz: ZoneInfo) -> dt.datetime:
        if self.kind == "hours":
            return _utc(due) + dt.timedelta(hours=self.hours)
        return end_of_local_day(due, tz)

    def describe(self) -> str:
        if self.kind == "hours":
            return f"{self.hours:g} hours after it was due"
        return "the end of the day it was due"


class Decision(str, enum.Enum):
    SEND = "send"
    MISSED = "missed"
    TOO_EARLY = "too-early"


@dataclass(frozen=True)
class Firing:
    """One firing of the schedule and the edition it is for. Instants are UTC."""

    scheduled_for: dt.datetime
    edition: Edition
    window: Window
    due: dt.datetime
    deadline: dt.datetime
    tz: ZoneInfo

    @property
    def key(self) -> str:
        return self.edition.key

    def local(self, instant: dt.datetime) -> dt.datetime:
        return instant.astimezone(self.tz)

    def decide(self, now: dt.datetime) -> Decision:
        return decide(self, now)


def plan_firing(trigger: DigestCronTrigger, scheduled_for: dt.datetime,
                rule: DeadlineRule = DeadlineRule()) -> Firing:
    """The edition a firing at `scheduled_for` sends, when it was due, and its deadline.

    `due` is the schedule's first fire time once the week has closed, so a daily schedule's
    Tuesday firing does not give Monday's missed issue a second chance. A firing earlier than
    that (a cron line set before `DIGEST_SCHEDULE`) keeps the later due time: it is early, not
    late."""
    tz = trigger.timezone
    scheduled = _utc(scheduled_for)
    edition = last_complete_edition(scheduled, tz)
    window = edition.window(tz)
    fire = first_fire_at_or_after(trigger, window.end)
    due = _utc(fire) if fire is not None else scheduled
    return Firing(scheduled, edition, window, due, rule.deadline(due, tz), tz)


def decide(firing: Firing, now: dt.datetime) -> Decision:
    """Send, give the week up as missed, or do nothing yet."""
    at = _utc(now)
    if at < firing.scheduled_for:  # (and so before the week closed: it ended by scheduled_for)
        return Decision.TOO_EARLY
    if at >= firing.deadline:
        return Decision.MISSED
    return Decision.SEND


def missed_reason(firing: Firing, now: dt.datetime) -> str:
    """The reason stored on a missed issue: when it was due, its deadline, when the try came."""
    fmt = "%a %Y-%m-%d %H:%M %Z"
    return (f"not started by its deadline {firing.local(firing.deadline):{fmt}} (due "
            f"{firing.local(firing.due):{fmt}}); a firing at {firing.local(_utc(now)):{fmt}} "
            "came too late, and a week's issue is never sent late")


def upcoming_firings(trigger: DigestCronTrigger, start: dt.datetime, count: int,
                     rule: DeadlineRule = DeadlineRule()) -> list[Firing]:
    """The next `count` firings at or after `start`, each with the edition it would send."""
    return [plan_firing(trigger, at, rule) for at in next_fire_times(trigger, start, count)]
