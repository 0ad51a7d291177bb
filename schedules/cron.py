"""`DIGEST_SCHEDULE` (a five-field cron expression) as an APScheduler 3.x trigger in
`DIGEST_TIMEZONE`, and its fire times computed from an instant the caller passes in.

APScheduler 3.x reads a crontab differently from cron in ways that would move a weekly send to
the wrong day, skip it or fire it twice, so the expression is translated before APScheduler sees
it, and the fire times are computed here:

* day-of-week numbers: cron counts Sunday as 0 (and 7), APScheduler 3.x counts Monday as 0, so
  `0 9 * * 1` would fire on Tuesdays. Days are expanded here and handed over as names.
* steps on names (`mon-fri/2`, `jan-dec/3`) are silently dropped by APScheduler: days are expanded
  here and months become numbers, which it steps correctly.
* DST: APScheduler fires `30 2 * * *` in both passes of the repeated autumn hour, and across the
  spring change it can skip a whole week (`0 0 * * mon` in Berlin from 28 March 2026 comes out
  as 6 April). `DigestCronTrigger` matches the fields on the local wall clock instead: every
  wall-clock time fires at most once (in its first pass, as cron does for a job at a fixed
  hour), and a time the spring change skips fires at the instant it became.

A day-of-month and a day-of-week both restricted are refused: cron fires when either matches,
APScheduler only when both do, and guessing which one was meant could move the send by weeks.
"""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from digest.errors import ConfigurationError

UTC = dt.timezone.utc
_TICK = dt.timedelta(microseconds=1)
# The longest gap a valid expression can have: 29 February, skipped in 2100 (eight years).
_MAX_LOOKBACK = dt.timedelta(days=9 * 366)

FIELDS = ("minute", "hour", "day", "month", "day_of_week")
_FIELD_TITLES = {"minute": "minute", "hour": "hour", "day": "day of month", "month": "month",
                 "day_of_week": "day of week"}
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # cron numbering: sun = 0
_APS_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # the order APScheduler prints
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DOW_ITEM = re.compile(r"(?P<start>\*|[0-7]|[a-z]{3})(?:-(?P<end>[0-7]|[a-z]{3}))?"
                       r"(?:/(?P<step>\d+))?")
EXAMPLE = "0 9 * * mon"
# A fixed instant to check that an expression fires at all (`0 0 30 2 *` never does).
_REFERENCE = dt.datetime(2000, 1, 1, tzinfo=UTC)


def _utc(instant: dt.datetime) -> dt.datetime:
    if instant.tzinfo is None:
        raise ValueError(f"naive datetime {instant!r}: give a time zone")
    return instant.astimezone(UTC)


def _problem(expression: str, message: str) -> ConfigurationError:
    return ConfigurationError(f"DIGEST_SCHEDULE={expression!r} is not a usable cron expression: "
                              f"{message} (five fields: minute hour day-of-month month "
                              f"day-of-week, e.g. {EXAMPLE!r})")


def _day_number(token: str, *, is_end: bool) -> int:
    if token.isdigit():
        return int(token)
    if token not in _DAY_NAMES:
        raise ValueError(f"unknown day {token!r} (use 0-7 or sun, mon, ..., sat)")
    number = _DAY_NAMES.index(token)
    return 7 if number == 0 and is_end else number  # `mon-sun` means Monday to Sunday


def cron_days(field: str) -> str:
    """A cron day-of-week field as APScheduler day names (`1-5` -> `mon,tue,wed,thu,fri`).

    Expanding to a set keeps cron's numbering (0 and 7 are Sunday) and its steps (`*/2` is Sunday,
    Tuesday, Thursday, Saturday), both of which APScheduler 3.x reads differently."""
    days: set[int] = set()
    for item in field.lower().split(","):
        match = _DOW_ITEM.fullmatch(item)
        if not match:
            raise ValueError(f"cannot read {item!r}")
        start, end, step = match.group("start", "end", "step")
        if start == "*":
            if end is not None:
                raise ValueError(f"cannot read {item!r}")
            low, high = 0, 6
        else:
            low = _day_number(start, is_end=False)
            high = _day_number(end, is_end=True) if end else (7 if step else low)
        if low > high:
            raise ValueError(f"the range {item!r} runs backwards (cron ranges go from low to high)")
        stride = int(step) if step else 1
        if stride < 1:
            raise ValueError(f"the step in {item!r} must be 1 or more")
        days.update(d % 7 for d in range(low, high + 1, stride))
    if len(days) == 7:
        return "*"
    return ",".join(name for name in _APS_DAYS if _DAY_NAMES.index(name) in days)


def cron_months(field: str) -> str:
    """Month names as numbers, so APScheduler applies a step to them (`jan-dec/3`)."""
    return re.sub(r"[a-z]{3}", lambda m: str(_MONTHS.index(m.group()) + 1)
                  if m.group() in _MONTHS else m.group(), field.lower())


class DigestCronTrigger(CronTrigger):
    """APScheduler's cron trigger, its fire times computed on the local wall clock.

    APScheduler 3.x steps through local dates by adding wall-clock differences to UTC instants,
    which goes wrong across a DST change: from Saturday 28 March 2026 in Berlin it finds
    `0 0 * * mon` next on 6 April, skipping the Monday after the change. Here the fields are
    matched against the wall clock by a UTC trigger (UTC has no DST), and each match is then
    placed in the zone: a time in the spring-forward gap fires at the instant it became (02:30
    -> 03:30 CEST), and a time the autumn change repeats fires once, in its first pass.
    """

    expression: str = ""

    def __init__(self, expression: str, *, timezone: ZoneInfo, **fields: str) -> None:
        super().__init__(timezone=timezone, **fields)
        self.expression = expression

    def _wall_clock(self) -> CronTrigger:
        """The same fields in UTC, where wall-clock arithmetic is exact."""
        wall = CronTrigger.__new__(CronTrigger)
        wall.__setstate__({"version": 2, "timezone": UTC, "start_date": None, "end_date": None,
                           "fields": self.fields, "jitter": None})
        return wall

    def get_next_fire_time(self, previous_fire_time, now):
        """APScheduler's contract: the first fire time at or after `now`, or right after
        `previous_fire_time` when that is earlier (a scheduler catching up)."""
        start = _utc(now)
        if previous_fire_time is not None:
            start = min(start, _utc(previous_fire_time) + _TICK)
        return self.fire_at_or_after(start)

    def fire_at_or_after(self, start: dt.datetime) -> dt.datetime | None:
        start = _utc(start)
        wall_trigger = self._wall_clock()
        wall = start.astimezone(self.timezone).replace(tzinfo=UTC)  # local wall time, "as UTC"
        while True:
            match = wall_trigger.get_next_fire_time(None, wall)
            if match is None:
                return None
            # fold=0: a gap time means the instant it became; a repeated time its first pass.
            instant = _utc(match.replace(tzinfo=self.timezone, fold=0))
            if instant >= start:
                return instant.astimezone(self.timezone)
            # Only in the second pass of a repeated hour: that wall time has fired already.
            wall = match + dt.timedelta(seconds=1)

    def __getstate__(self):
        state = super().__getstate__()
        state["expression"] = self.expression
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self.expression = state.get("expression", "")

    def same_schedule(self, other: object) -> bool:
        """True when `other` fires at the same times (a stored job needs no rescheduling)."""
        return (isinstance(other, DigestCronTrigger) and str(other) == str(self)
                and str(other.timezone) == str(self.timezone))


def parse_schedule(expression: str, timezone: ZoneInfo | str) -> DigestCronTrigger:
    """The trigger for a cron expression, or a `ConfigurationError` naming DIGEST_SCHEDULE and
    the field that is wrong."""
    zone = ZoneInfo(timezone) if isinstance(timezone, str) else timezone
    text = " ".join((expression or "").split())
    values = text.split(" ") if text else []
    if len(values) != 5:
        raise _problem(text, f"expected 5 fields, got {len(values)}")
    fields = dict(zip(FIELDS, values))
    if fields["day"] != "*" and fields["day_of_week"] != "*":
        raise _problem(text, f"day of month ({fields['day']!r}) and day of week "
                             f"({fields['day_of_week']!r}) are both restricted; cron fires when "
                             "either matches and APScheduler only when both do, so restrict one "
                             "and leave the other as '*'")
    try:
        fields["day_of_week"] = cron_days(fields["day_of_week"])
    except ValueError as exc:
        raise _problem(text, f"day of week: {exc}") from None
    fields["month"] = cron_months(fields["month"])
    for name in FIELDS:  # one at a time, so the message can name the field that is wrong
        try:
            CronTrigger(timezone=zone, **{name: fields[name]})
        except ValueError as exc:
            raise _problem(text, f"{_FIELD_TITLES[name]}: {exc}") from None
    trigger = DigestCronTrigger(text, timezone=zone, **fields)
    first = trigger.fire_at_or_after(_REFERENCE)
    if first is None or _utc(first) - _REFERENCE > _MAX_LOOKBACK:
        raise _problem(text, "it never fires (no such date)")
    return trigger


def schedule_trigger(settings) -> DigestCronTrigger:
    """The configured schedule: `DIGEST_SCHEDULE` in `DIGEST_TIMEZONE`."""
    return parse_schedule(settings.schedule, settings.tz)


# --- fire times (pure: the instant to count from is always passed in) --------------------------

def next_fire_times(trigger: DigestCronTrigger, start: dt.datetime,
                    count: int) -> list[dt.datetime]:
    """The first `count` fire times at or after `start`, in the trigger's zone."""
    times: list[dt.datetime] = []
    fire = trigger.fire_at_or_after(start)
    while fire is not None and len(times) < count:
        times.append(fire)
        fire = trigger.fire_at_or_after(_utc(fire) + _TICK)
    return times


def first_fire_at_or_after(trigger: DigestCronTrigger,
                           start: dt.datetime) -> dt.datetime | None:
    return trigger.fire_at_or_after(start)


def previous_fire_time(trigger: DigestCronTrigger, at: dt.datetime) -> dt.datetime | None:
    """The latest fire time at or before `at` (None if there was none in nine years).

    APScheduler 3.x only counts forwards, so this looks back a doubling span until a fire time
    turns up, then walks forward to the last one not after `at`."""
    at_utc = _utc(at)
    span = dt.timedelta(minutes=1)
    while span <= _MAX_LOOKBACK:
        fire = first_fire_at_or_after(trigger, at_utc - span)
        if fire is not None and _utc(fire) <= at_utc:
            while True:
                later = first_fire_at_or_after(trigger, _utc(fire) + _TICK)
                if later is None or _utc(later) > at_utc:
                    return fire
                fire = later
        span *= 2
    return None
