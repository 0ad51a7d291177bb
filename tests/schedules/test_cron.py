"""DIGEST_SCHEDULE as a trigger: cron's day numbering, clear errors, and fire times across the
DST changes of Europe/Berlin and America/New_York, counted from instants the test passes in (no
clock is read, nothing sleeps)."""

from __future__ import annotations

import datetime as dt
import pickle
from zoneinfo import ZoneInfo

import pytest

from digest.errors import ConfigurationError
from schedules.cron import (cron_days, next_fire_times, parse_schedule, previous_fire_time,
                            schedule_trigger)

UTC = dt.timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def local(times: list[dt.datetime]) -> list[str]:
    """Fire times as the wall clock and offset people would read."""
    return [t.strftime("%a %Y-%m-%d %H:%M %z") for t in times]


def in_utc(times: list[dt.datetime]) -> list[str]:
    return [t.astimezone(UTC).strftime("%Y-%m-%d %H:%M") for t in times]


# --- reading the expression ---------------------------------------------------------------------

@pytest.mark.parametrize("field,days", [
    ("1", "mon"), ("0", "sun"), ("7", "sun"), ("1-5", "mon,tue,wed,thu,fri"),
    ("mon-fri", "mon,tue,wed,thu,fri"), ("sat,sun", "sat,sun"), ("0,6", "sat,sun"),
    ("*/2", "tue,thu,sat,sun"), ("1-5/2", "mon,wed,fri"), ("MON", "mon"), ("mon-sun", "*"),
    ("0-6", "*"), ("1-7", "*"), ("*", "*"), ("5/1", "fri,sat,sun"),
])
def test_day_of_week_follows_cron_numbering(field, days):
    # APScheduler 3.x counts Monday as 0: handing it `1` would fire on Tuesdays.
    assert cron_days(field) == days


def test_crontab_monday_fires_on_monday():
    trigger = parse_schedule("0 9 * * 1", BERLIN)
    fires = next_fire_times(trigger, utc(2026, 11, 18), 3)
    assert local(fires) == ["Mon 2026-11-23 09:00 +0100", "Mon 2026-11-30 09:00 +0100",
                            "Mon 2026-12-07 09:00 +0100"]
    assert [t.tzinfo for t in fires] == [BERLIN] * 3


def test_steps_on_names_are_kept():
    # APScheduler silently drops the step of `mon-fri/2` and `jan-dec/6`.
    days = next_fire_times(parse_schedule("0 9 * * mon-fri/2", BERLIN), utc(2026, 11, 23), 4)
    assert [t.strftime("%a") for t in days] == ["Mon", "Wed", "Fri", "Mon"]
    months = next_fire_times(parse_schedule("0 9 1 jan-dec/6 *", BERLIN), utc(2026, 2, 1), 3)
    assert [t.strftime("%Y-%m") for t in months] == ["2026-07", "2027-01", "2027-07"]


@pytest.mark.parametrize("expression,message", [
    ("0 9 * *", "expected 5 fields, got 4"),
    ("0 9 * * mon 2026", "expected 5 fields, got 6"),
    ("", "expected 5 fields, got 0"),
    ("0 25 * * mon", "hour: .*25"),
    ("61 9 * * *", "minute: .*61"),
    ("0 9 * 13 *", "month: .*13"),
    ("0 9 32 * *", "day of month: .*32"),
    ("0 9 * * 8", "day of week: cannot read '8'"),
    ("0 9 * * funday", "day of week: cannot read 'funday'"),
    ("0 9 * * xyz", "day of week: unknown day 'xyz'"),
    ("0 9 * * fri-mon", "day of week: the range 'fri-mon' runs backwards"),
    ("0 9 1 * mon", "both restricted"),
    ("0 0 30 2 *", "never fires"),
])
def test_a_bad_expression_names_the_setting_and_the_field(expression, message):
    with pytest.raises(ConfigurationError, match="DIGEST_SCHEDULE=") as caught:
        parse_schedule(expression, BERLIN)
    assert caught.match(message)
    assert "e.g. '0 9 * * mon'" in str(caught.value)


def test_the_configured_schedule_is_read_in_the_configured_zone():
    from digest.settings import load_settings

    trigger = schedule_trigger(load_settings(schedule="30 7 * * tue", timezone="America/New_York"))
    assert trigger.timezone == NEW_YORK and trigger.expression == "30 7 * * tue"
    assert local(next_fire_times(trigger, utc(2026, 11, 23), 1)) == ["Tue 2026-11-24 07:30 -0500"]


def test_the_trigger_pickles_for_the_job_store():
    trigger = parse_schedule("0 9 * * 1", BERLIN)
    again = pickle.loads(pickle.dumps(trigger))
    assert type(again) is type(trigger) and again.expression == "0 9 * * 1"
    assert again.same_schedule(trigger)
    assert not parse_schedule("0 10 * * 1", BERLIN).same_schedule(trigger)
    assert not parse_schedule("0 9 * * 1", NEW_YORK).same_schedule(trigger)
    start = utc(2026, 11, 18)
    assert next_fire_times(again, start, 2) == next_fire_times(trigger, start, 2)


# --- DST: Europe/Berlin (29 March and 25 October 2026) --------------------------------------------

def test_berlin_weekly_send_keeps_its_local_hour_across_both_changes():
    trigger = parse_schedule("0 9 * * mon", BERLIN)
    spring = next_fire_times(trigger, utc(2026, 3, 20), 3)
    assert local(spring) == ["Mon 2026-03-23 09:00 +0100", "Mon 2026-03-30 09:00 +0200",
                             "Mon 2026-04-06 09:00 +0200"]
    assert in_utc(spring) == ["2026-03-23 08:00", "2026-03-30 07:00", "2026-04-06 07:00"]
    autumn = next_fire_times(trigger, utc(2026, 10, 17), 3)
    assert local(autumn) == ["Mon 2026-10-19 09:00 +0200", "Mon 2026-10-26 09:00 +0100",
                             "Mon 2026-11-02 09:00 +0100"]
    assert in_utc(autumn) == ["2026-10-19 07:00", "2026-10-26 08:00", "2026-11-02 08:00"]


def test_berlin_a_time_in_the_spring_gap_fires_once_when_the_clock_reaches_it():
    # 02:30 does not exist on 29 March: it fires at the instant 02:30 became (03:30 CEST).
    fires = next_fire_times(parse_schedule("30 2 * * *", BERLIN), utc(2026, 3, 27, 12), 3)
    assert local(fires) == ["Sat 2026-03-28 02:30 +0100", "Sun 2026-03-29 03:30 +0200",
                            "Mon 2026-03-30 02:30 +0200"]


def test_berlin_a_time_in_the_repeated_hour_fires_once():
    # 02:30 happens twice on 25 October; APScheduler alone would fire in both passes.
    fires = next_fire_times(parse_schedule("30 2 * * *", BERLIN), utc(2026, 10, 23, 12), 3)
    assert local(fires) == ["Sat 2026-10-24 02:30 +0200", "Sun 2026-10-25 02:30 +0200",
                            "Mon 2026-10-26 02:30 +0100"]


def test_berlin_a_sunday_night_schedule_sends_the_week_that_just_closed():
    fires = next_fire_times(parse_schedule("0 0 * * mon", BERLIN), utc(2026, 3, 28), 2)
    assert local(fires) == ["Mon 2026-03-30 00:00 +0200", "Mon 2026-04-06 00:00 +0200"]
    assert in_utc(fires) == ["2026-03-29 22:00", "2026-04-05 22:00"]


# --- DST: America/New_York (8 March and 1 November 2026) ------------------------------------------

def test_new_york_weekly_send_keeps_its_local_hour_across_both_changes():
    trigger = parse_schedule("0 9 * * 1", NEW_YORK)
    spring = next_fire_times(trigger, utc(2026, 3, 1), 3)
    assert local(spring) == ["Mon 2026-03-02 09:00 -0500", "Mon 2026-03-09 09:00 -0400",
                             "Mon 2026-03-16 09:00 -0400"]
    assert in_utc(spring) == ["2026-03-02 14:00", "2026-03-09 13:00", "2026-03-16 13:00"]
    autumn = next_fire_times(trigger, utc(2026, 10, 25), 3)
    assert in_utc(autumn) == ["2026-10-26 13:00", "2026-11-02 14:00", "2026-11-09 14:00"]


def test_new_york_sunday_schedules_on_the_change_days():
    spring = next_fire_times(parse_schedule("30 2 * * sun", NEW_YORK), utc(2026, 3, 1, 12), 2)
    assert local(spring) == ["Sun 2026-03-08 03:30 -0400", "Sun 2026-03-15 02:30 -0400"]
    autumn = next_fire_times(parse_schedule("30 1 * * 0", NEW_YORK), utc(2026, 10, 26), 2)
    assert local(autumn) == ["Sun 2026-11-01 01:30 -0400", "Sun 2026-11-08 01:30 -0500"]


def test_new_york_hourly_fires_each_wall_clock_time_once_through_the_repeated_hour():
    fires = next_fire_times(parse_schedule("30 * * * *", NEW_YORK), utc(2026, 11, 1, 4), 4)
    assert local(fires) == ["Sun 2026-11-01 00:30 -0400", "Sun 2026-11-01 01:30 -0400",
                            "Sun 2026-11-01 02:30 -0500", "Sun 2026-11-01 03:30 -0500"]


# --- counting from an instant ---------------------------------------------------------------------

def test_fire_times_are_counted_from_the_given_instant_inclusive():
    trigger = parse_schedule("0 9 * * mon", BERLIN)
    exactly = utc(2026, 11, 23, 8)  # Monday 09:00 in Berlin
    assert next_fire_times(trigger, exactly, 1) == [exactly.astimezone(BERLIN)]
    after = exactly + dt.timedelta(seconds=1)
    assert in_utc(next_fire_times(trigger, after, 1)) == ["2026-11-30 08:00"]


@pytest.mark.parametrize("zone,at,expected", [
    (BERLIN, utc(2026, 3, 30, 7, 0), "2026-03-30 07:00"),  # the instant itself counts
    (BERLIN, utc(2026, 3, 30, 6, 59), "2026-03-23 08:00"),  # the one before, across the change
    (BERLIN, utc(2026, 10, 30), "2026-10-26 08:00"),
    (NEW_YORK, utc(2026, 11, 4), "2026-11-02 14:00"),
    (NEW_YORK, utc(2026, 3, 9, 12, 59), "2026-03-02 14:00"),
])
def test_previous_fire_time_across_dst(zone, at, expected):
    assert in_utc([previous_fire_time(parse_schedule("0 9 * * mon", zone), at)]) == [expected]


def test_previous_fire_time_of_a_rare_schedule():
    trigger = parse_schedule("0 0 29 2 *", ZoneInfo("UTC"))
    assert previous_fire_time(trigger, utc(2026, 11, 27)) == utc(2024, 2, 29)
    assert previous_fire_time(trigger, utc(2024, 2, 29)) == utc(2024, 2, 29)


# --- against a brute-force scan -------------------------------------------------------------------

EXPRESSIONS = [
    ("0 0 * * mon", lambda w: (w.weekday(), w.hour, w.minute) == (0, 0, 0)),
    ("0 9 * * 1", lambda w: (w.weekday(), w.hour, w.minute) == (0, 9, 0)),
    ("45 23 * * 0", lambda w: (w.weekday(), w.hour, w.minute) == (6, 23, 45)),
    ("15 9 * * 1-5", lambda w: w.weekday() < 5 and (w.hour, w.minute) == (9, 15)),
    ("0 */6 * * *", lambda w: w.hour % 6 == 0 and w.minute == 0),
]


@pytest.mark.parametrize("zone", [BERLIN, NEW_YORK], ids=str)
@pytest.mark.parametrize("start", [utc(2026, 3, 1), utc(2026, 10, 20)], ids=["spring", "autumn"])
@pytest.mark.parametrize("expression,matches", EXPRESSIONS, ids=[e for e, _ in EXPRESSIONS])
def test_fire_times_match_a_scan_of_every_quarter_hour(zone, start, expression, matches):
    """Every real quarter hour over three weeks around each change, in order: a fire time is the
    first instant whose local wall clock matches (these expressions avoid the skipped hour)."""
    expected, seen = [], set()
    for minute in range(0, 3 * 7 * 24 * 60, 15):  # every expression fires on a quarter hour
        instant = start + dt.timedelta(minutes=minute)
        wall = instant.astimezone(zone)
        key = wall.replace(tzinfo=None)
        if matches(wall) and key not in seen:
            seen.add(key)
            expected.append(instant)
    trigger = parse_schedule(expression, zone)
    assert next_fire_times(trigger, start, len(expected) + 1)[:-1] == expected
    second = dt.timedelta(seconds=1)
    assert [trigger.get_next_fire_time(None, t - second) for t in expected] == expected


def test_apscheduler_contract_after_a_previous_fire_time():
    """The scheduler passes the previous fire time and now: with now far later (a scheduler that
    was down), the next fire time is the one right after the previous, so it can catch up."""
    trigger = parse_schedule("0 9 * * mon", BERLIN)
    first, second = next_fire_times(trigger, utc(2026, 3, 20), 2)
    assert trigger.get_next_fire_time(first, utc(2026, 5, 1)) == second
    assert trigger.get_next_fire_time(first, second - dt.timedelta(days=3)) == second
