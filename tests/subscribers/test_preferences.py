"""Preferences as values: parsing, canonical segment keys, what a segment wants, dropping one
category, and the CSV round trip."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from sqlmodel import select

from subscribers import preferences
from subscribers.csvio import export, import_csv
from subscribers.models import Subscriber
from subscribers.preferences import InvalidPreferences, Preferences

AT = dt.datetime(2026, 11, 20, 9, tzinfo=dt.timezone.utc)


def test_categories_parse_to_one_canonical_order():
    a = preferences.parse_categories(" Developer Tools ;code review;;Developer  tools")
    b = preferences.parse_categories(["Code Review", "Developer Tools"])
    assert a == ("code review", "Developer Tools")  # the first spelling of each is kept
    assert b == ("Code Review", "Developer Tools")
    assert Preferences(a).key == Preferences(b).key == "code-review+developer-tools"
    assert Preferences().key == "all" and Preferences((), True).key == "all:ship"


@pytest.mark.parametrize("bad", ["x" * 101, "bell\x07here", "🙂"])
def test_unusable_category_names_are_refused_with_the_field(bad):
    with pytest.raises(InvalidPreferences, match="categories"):
        preferences.parse_categories(bad)


@pytest.mark.parametrize("text, value", [("", False), ("true", True), ("No", False), ("1", True)])
def test_ship_only_reads_the_usual_spellings(text, value):
    assert preferences.parse_ship_only(text) is value
    with pytest.raises(InvalidPreferences, match="ship_only"):
        preferences.parse_ship_only("sometimes")


def test_what_a_segment_wants():
    everything = Preferences()
    data = Preferences(("Data Infrastructure",))
    data_ships = Preferences(("Data Infrastructure",), ship_only=True)
    assert everything.wants(["Code Review", "Developer Tools"], ships=False)
    assert data.wants(["data infrastructure", "Code Review"], ships=False)  # either tool counts
    assert not data.wants(["Code Review"], ships=True)
    assert not data_ships.wants(["Data Infrastructure"], ships=False)
    assert data_ships.wants(["Data Infrastructure"], ships=True)
    # A category that disappeared from the site simply matches nothing any more.
    assert not Preferences(("Gone Category",)).wants(["Code Review"], ships=True)


def test_the_cli_segment_form():
    assert Preferences.parse("Developer Tools,ship-only") == Preferences(("Developer Tools",), True)
    assert Preferences.parse("all") == Preferences()


def test_dropping_a_category_from_everything_keeps_the_rest():
    known = ["Code Review", "Data Infrastructure", "Developer Tools"]
    assert preferences.without(Preferences(), "Code Review", known) == \
        Preferences(("Data Infrastructure", "Developer Tools"))
    only = Preferences(("Code Review",))
    with pytest.raises(InvalidPreferences, match="unsubscribe"):
        preferences.without(only, "code review", known)


def test_csv_carries_preferences_both_ways(session, tmp_path):
    path = tmp_path / "list.csv"
    path.write_text("email,name,status,categories,ship_only\n"
                    "ada@example.com,Ada,active,Developer Tools;Code Review,true\n"
                    "bob@example.com,Bob,active,,\n", encoding="utf-8")
    report = import_csv(session, path, at=AT)
    session.commit()
    assert report.ok and report.created == 2
    ada = session.exec(select(Subscriber).where(Subscriber.email == "ada@example.com")).one()
    assert preferences.of(ada) == Preferences(("Code Review", "Developer Tools"), True)
    out = io.StringIO()
    export(session, out)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("email,name,status,categories,ship_only,")
    assert "ada@example.com,Ada,active,Code Review;Developer Tools,true," in lines[1]
    assert "bob@example.com,Bob,active,,false," in lines[2]
    # Round trip: importing the export changes nothing.
    path.write_text(out.getvalue(), encoding="utf-8")
    again = import_csv(session, path, at=AT)
    assert again.ok and again.created == 0 and again.updated == 0


def test_a_csv_without_preference_columns_leaves_choices_alone(session, tmp_path):
    path = tmp_path / "list.csv"
    path.write_text("email,categories\nada@example.com,Code Review\n", encoding="utf-8")
    import_csv(session, path, at=AT)
    path.write_text("email,name\nada@example.com,Ada\n", encoding="utf-8")
    import_csv(session, path, at=AT)
    session.commit()
    ada = session.exec(select(Subscriber)).one()
    assert preferences.of(ada).categories == ("Code Review",)


def test_a_bad_preference_cell_is_reported_by_line(session, tmp_path):
    path = tmp_path / "list.csv"
    path.write_text("email,ship_only\nada@example.com,perhaps\nbob@example.com,yes\n",
                    encoding="utf-8")
    report = import_csv(session, path, at=AT)
    assert [str(e) for e in report.errors] == [
        "line 2: ship_only: expected true or false, not 'perhaps'"]
    assert report.created == 1
