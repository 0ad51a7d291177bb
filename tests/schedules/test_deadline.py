"""Which edition a firing sends, when that edition was due, its deadline, and the decision:
send, missed, or too early. Pure: every instant is passed in."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from digest.errors import ConfigurationError
from digest.settings import load_settings
from schedules.cron import parse_schedule
from schedules.deadline import (DeadlineRule, Decision, decide, end_of_local_day, missed_reason,
                                plan_firing, upcoming_firings)

UTC = dt.timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
WEEKLY = parse_schedule("0 9 * * mon", BERLIN)
MONDAY_9 = dt.datetime(2026, 11, 23, 8, 0, tzinfo=UTC)  # Mon 23 Nov 09:00 CET


def berlin(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=BERLIN)


def test_a_monday_firing_sends_the_week_that_ended_and_is_due_that_day():
    firing = plan_firing(WEEKLY, MONDAY_9)
    assert firing.key == "2026-W47"
    assert firing.window.label() == "16–22 November 2026"
    assert firing.due == MONDAY_9 == firing.scheduled_for
    assert firing.deadline == berlin(2026, 11, 24, 0, 0).astimezone(UTC)


@pytest.mark.parametrize("now,decision", [
    (MONDAY_9, Decision.SEND),  # on time
    (MONDAY_9 + dt.timedelta(hours=10), Decision.SEND),  # late, within the deadline
    (berlin(2026, 11, 23, 23, 59, 59), Decision.SEND),
    (berlin(2026, 11, 24, 0, 0), Decision.MISSED),  # the deadline itself is too late
    (berlin(2026, 11, 26, 14, 0), Decision.MISSED),  # a scheduler down for days
    (berlin(2026, 12, 2, 9, 0), Decision.MISSED),  # a snapshot restored a week later
    (MONDAY_9 - dt.timedelta(seconds=1), Decision.TOO_EARLY),  # a clock behind the scheduler's
])
def test_decision_by_start_time(now, decision):
    assert decide(plan_firing(WEEKLY, MONDAY_9), now) is decision


def test_a_monday_midnight_schedule_sends_the_week_that_closed_at_that_instant():
    trigger = parse_schedule("0 0 * * mon", BERLIN)
    firing = plan_firing(trigger, berlin(2026, 11, 23, 0, 0))
    assert firing.key == "2026-W47" and firing.due == firing.window.end
    assert decide(firing, berlin(2026, 11, 23, 0, 0)) is Decision.SEND


def test_a_daily_schedule_gives_a_week_one_day():
    """Tuesday's firing of a daily schedule is for the same week as Monday's, which was due on
    Monday: if Monday's did not start it, Tuesday's records it missed instead of sending late."""
    daily = parse_schedule("0 9 * * *", BERLIN)
    tuesday = plan_firing(daily, berlin(2026, 11, 24, 9, 0))
    assert tuesday.key == "2026-W47"
    assert tuesday.due == MONDAY_9
    assert decide(tuesday, berlin(2026, 11, 24, 9, 0)) is Decision.MISSED


def test_a_cron_line_earlier_than_the_schedule_is_early_not_late():
    """A crontab firing at 07:00 while DIGEST_SCHEDULE says 09:00: the week is due at 09:00."""
    firing = plan_firing(WEEKLY, berlin(2026, 11, 23, 7, 0))
    assert firing.key == "2026-W47" and firing.due == MONDAY_9
    assert decide(firing, berlin(2026, 11, 23, 7, 0)) is Decision.SEND


def test_a_sunday_schedule_sends_the_last_complete_week():
    sunday = parse_schedule("0 18 * * 0", BERLIN)
    firing = plan_firing(sunday, berlin(2026, 11, 29, 18, 0))
    # On Sunday evening the week of 23-29 November is still open: the last complete is W47.
    assert firing.key == "2026-W47" and firing.due == berlin(2026, 11, 29, 18, 0)
    assert firing.deadline == berlin(2026, 11, 30, 0, 0)


def test_the_hours_rule_counts_real_hours_from_the_due_time():
    rule = DeadlineRule("hours", 6)
    firing = plan_firing(WEEKLY, MONDAY_9, rule)
    assert firing.deadline == MONDAY_9 + dt.timedelta(hours=6)
    assert decide(firing, MONDAY_9 + dt.timedelta(hours=5, minutes=59)) is Decision.SEND
    assert decide(firing, MONDAY_9 + dt.timedelta(hours=6)) is Decision.MISSED
    long = plan_firing(WEEKLY, MONDAY_9, DeadlineRule("hours", 72))
    assert decide(long, berlin(2026, 11, 26, 8, 59)) is Decision.SEND


def test_the_rule_comes_from_the_settings():
    assert DeadlineRule.from_settings(load_settings()) == DeadlineRule("end-of-day", 24.0)
    rule = DeadlineRule.from_settings(load_settings(send_deadline="hours", send_deadline_hours=2))
    assert rule == DeadlineRule("hours", 2.0) and rule.describe() == "2 hours after it was due"
    with pytest.raises(ValueError, match="unknown deadline rule"):
        DeadlineRule("tomorrow")
    with pytest.raises(ConfigurationError, match="DIGEST_SEND_DEADLINE: unknown deadline rule"):
        load_settings(send_deadline="tomorrow")


@pytest.mark.parametrize("zone,day,hours", [
    (BERLIN, dt.date(2026, 3, 29), 23),  # spring forward
    (BERLIN, dt.date(2026, 10, 25), 25),  # fall back
    (NEW_YORK, dt.date(2026, 3, 8), 23),
    (NEW_YORK, dt.date(2026, 11, 1), 25),
    (BERLIN, dt.date(2026, 11, 23), 24),
])
def test_end_of_day_on_dst_days(zone, day, hours):
    midnight = dt.datetime.combine(day, dt.time(0, 0), tzinfo=zone)
    end = end_of_local_day(midnight + dt.timedelta(minutes=1), zone)
    assert end.astimezone(zone).time() == dt.time(0, 0)
    assert end - midnight.astimezone(UTC) == dt.timedelta(hours=hours)


def test_end_of_day_where_midnight_does_not_exist():
    # Santiago de Chile moves its clocks forward at midnight: 00:00 on 6 September 2026 is skipped.
    zone = ZoneInfo("America/Santiago")
    end = end_of_local_day(dt.datetime(2026, 9, 5, 12, tzinfo=zone), zone)
    assert end.astimezone(zone) == dt.datetime(2026, 9, 6, 1, 0, tzinfo=zone)


def test_new_york_firing_on_the_autumn_change_day():
    trigger = parse_schedule("30 1 * * sun", NEW_YORK)
    firing = plan_firing(trigger, dt.datetime(2026, 11, 1, 5, 30, tzinfo=UTC))  # 01:30 EDT
    assert firing.key == "2026-W43"
    # The day has 25 hours: the deadline is 23.5 real hours after 01:30 EDT.
    assert firing.deadline - firing.due == dt.timedelta(hours=23, minutes=30)


def test_missed_reason_says_when_it_was_due_and_when_the_try_came():
    firing = plan_firing(WEEKLY, MONDAY_9)
    reason = missed_reason(firing, berlin(2026, 11, 26, 14, 5))
    assert "deadline Tue 2026-11-24 00:00 CET" in reason
    assert "due Mon 2026-11-23 09:00 CET" in reason
    assert "Thu 2026-11-26 14:05 CET" in reason and "never sent late" in reason


def test_upcoming_firings_name_their_editions_across_the_year_end():
    firings = upcoming_firings(WEEKLY, berlin(2026, 12, 20), 4)
    assert [(f.local(f.scheduled_for).date().isoformat(), f.key) for f in firings] == [
        ("2026-12-21", "2026-W51"), ("2026-12-28", "2026-W52"), ("2027-01-04", "2026-W53"),
        ("2027-01-11", "2027-W01")]
