"""Edition keys and windows, across year ends and DST changes in Berlin and New York."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from digest.errors import DigestError
from digest.edition.weeks import (Edition, EditionKeyError, _local_midnight, current_edition,
                          edition_window, last_complete_edition, parse_key, weeks_in_year)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
UTC = ZoneInfo("UTC")


@pytest.mark.parametrize("text, key", [
    ("2026-W47", "2026-W47"),
    ("2026-w47", "2026-W47"),
    (" 2026-W7 ", "2026-W07"),
    ("2026-W53", "2026-W53"),  # 2026 has 53 ISO weeks
    ("2025-W01", "2025-W01"),
])
def test_parse_valid_keys(text, key):
    assert parse_key(text).key == key
    assert str(Edition.parse(text)) == key


@pytest.mark.parametrize("text, message", [
    ("2026-47", "not of the form YYYY-Www"),
    ("26-W47", "not of the form YYYY-Www"),
    ("2026-W470", "not of the form YYYY-Www"),
    ("", "not of the form YYYY-Www"),
    ("2026-W00", "2026 has 53 ISO weeks"),
    ("2026-W54", "2026 has 53 ISO weeks"),
    ("2025-W53", "2025-W53 does not exist: 2025 has 52 ISO weeks"),
])
def test_parse_refuses_bad_keys_by_name(text, message):
    with pytest.raises(EditionKeyError, match=message) as info:
        parse_key(text)
    assert isinstance(info.value, DigestError)  # the CLI reports it as one line


@pytest.mark.parametrize("year, weeks", [(2020, 53), (2024, 52), (2025, 52), (2026, 53), (2027, 52)])
def test_weeks_in_year(year, weeks):
    assert weeks_in_year(year) == weeks


@pytest.mark.parametrize("key, tz, start, end, hours", [
    ("2026-W47", BERLIN, "2026-11-16T00:00:00+01:00", "2026-11-23T00:00:00+01:00", 168),
    # Berlin: summer time starts Sunday 29 March 2026 and ends Sunday 25 October 2026.
    ("2026-W13", BERLIN, "2026-03-23T00:00:00+01:00", "2026-03-30T00:00:00+02:00", 167),
    ("2026-W43", BERLIN, "2026-10-19T00:00:00+02:00", "2026-10-26T00:00:00+01:00", 169),
    # New York: DST starts Sunday 8 March 2026 and ends Sunday 1 November 2026.
    ("2026-W10", NEW_YORK, "2026-03-02T00:00:00-05:00", "2026-03-09T00:00:00-04:00", 167),
    ("2026-W44", NEW_YORK, "2026-10-26T00:00:00-04:00", "2026-11-02T00:00:00-05:00", 169),
    # Year ends: ISO weeks straddle 1 January.
    ("2026-W53", UTC, "2026-12-28T00:00:00+00:00", "2027-01-04T00:00:00+00:00", 168),
    ("2025-W01", BERLIN, "2024-12-30T00:00:00+01:00", "2025-01-06T00:00:00+01:00", 168),
])
def test_window_is_local_monday_to_monday(key, tz, start, end, hours):
    window = edition_window(key, tz)
    assert window.start == dt.datetime.fromisoformat(start)
    assert window.end == dt.datetime.fromisoformat(end)
    assert window.local_start.isoformat() == start and window.local_end.isoformat() == end
    assert (window.end - window.start) == dt.timedelta(hours=hours)


@pytest.mark.parametrize("tz", [BERLIN, NEW_YORK, UTC])
def test_consecutive_windows_tile_time_without_gaps(tz):
    edition = Edition(2025, 50)
    for _ in range(60):  # through both 2026 DST changes and the 53-week year end
        following = edition.shift(1)
        assert edition.window(tz).end == following.window(tz).start
        assert following > edition
        edition = following


@pytest.mark.parametrize("instant, tz, key", [
    # The last second of Sunday and the first of Monday, local time.
    ("2026-11-22T22:59:59+00:00", BERLIN, "2026-W47"),
    ("2026-11-22T23:00:00+00:00", BERLIN, "2026-W48"),
    ("2026-11-22T23:00:00+00:00", UTC, "2026-W47"),
    ("2026-11-23T04:59:59+00:00", NEW_YORK, "2026-W47"),
    ("2026-11-23T05:00:00+00:00", NEW_YORK, "2026-W48"),
    # Around the autumn change: Monday 26 October starts at 23:00 UTC in Berlin (CET again).
    ("2026-10-25T22:59:59+00:00", BERLIN, "2026-W43"),
    ("2026-10-25T23:00:00+00:00", BERLIN, "2026-W44"),
    # ...and in New York Monday 2 November starts at 05:00 UTC (EST again), 04:00 a week before.
    ("2026-11-02T04:59:59+00:00", NEW_YORK, "2026-W44"),
    ("2026-11-02T05:00:00+00:00", NEW_YORK, "2026-W45"),
    ("2026-10-26T04:00:00+00:00", NEW_YORK, "2026-W44"),
    # New Year's Eve in Berlin is already 2027 locally, and still ISO week 2026-W53.
    ("2026-12-31T23:30:00+00:00", BERLIN, "2026-W53"),
    ("2027-01-03T23:00:00+00:00", BERLIN, "2027-W01"),
])
def test_edition_at_instant(instant, tz, key):
    moment = dt.datetime.fromisoformat(instant)
    assert Edition.at(moment, tz).key == key
    assert current_edition(moment, tz).key == key
    assert moment in Edition.at(moment, tz).window(tz)


def test_last_complete_edition_is_the_week_before():
    monday_morning = dt.datetime(2026, 11, 23, 8, 0, tzinfo=BERLIN)
    assert last_complete_edition(monday_morning, BERLIN).key == "2026-W47"
    assert last_complete_edition(dt.datetime(2027, 1, 4, 9, tzinfo=BERLIN), BERLIN).key == "2026-W53"


def test_window_bounds_are_half_open():
    window = edition_window("2026-W47", BERLIN)
    assert window.start in window
    assert window.end not in window
    assert window.end - dt.timedelta(microseconds=1) in window
    with pytest.raises(ValueError, match="naive"):
        dt.datetime(2026, 11, 18) in window  # noqa: B015
    with pytest.raises(ValueError, match="naive"):
        Edition.at(dt.datetime(2026, 11, 18), BERLIN)


@pytest.mark.parametrize("key, label", [
    ("2026-W47", "16–22 November 2026"),
    ("2026-W49", "30 November – 6 December 2026"),
    ("2026-W53", "28 December 2026 – 3 January 2027"),
])
def test_window_label(key, label):
    assert edition_window(key, BERLIN).label() == label


def test_shift_crosses_years_both_ways():
    assert Edition(2026, 53).shift(1).key == "2027-W01"
    assert Edition(2027, 1).shift(-1).key == "2026-W53"
    assert Edition(2025, 1).shift(-1).key == "2024-W52"


def test_midnight_inside_a_dst_gap_starts_at_the_first_real_instant():
    # Cuba moves its clocks from 00:00 to 01:00: local midnight of 8 March 2026 never happens.
    havana = ZoneInfo("America/Havana")
    start = _local_midnight(dt.date(2026, 3, 8), havana)
    assert start.isoformat() == "2026-03-08T01:00:00-04:00"
    assert _local_midnight(dt.date(2026, 3, 7), havana).isoformat() == "2026-03-07T00:00:00-05:00"
