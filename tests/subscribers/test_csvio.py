"""CSV import (bad rows by line, duplicates, mixed case, never moving an address backwards) and
CSV/JSON export, on a real database."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import pytest
from sqlmodel import select

from digest.database import session_scope
from subscribers import csvio, lifecycle
from subscribers.models import Subscriber

T0 = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.timezone.utc)


def write(tmp_path, text: str, name: str = "list.csv", encoding: str = "utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def statuses(session) -> dict[str, str]:
    session.expire_all()
    return {s.email: s.status for s in session.exec(select(Subscriber))}


def test_bad_rows_are_reported_by_line_and_valid_rows_imported(session, tmp_path):
    path = write(tmp_path, (
        "email,name,status\n"            # 1
        "ann@example.org,Ann,active\n"   # 2
        "not-an-address,Bad,active\n"    # 3
        "bo@example.org,Bo,subscribed\n"  # 4: unknown status
        "\n"                              # 5: blank lines are skipped
        ",Nobody,active\n"                # 6: no address
        "cy@example.org,Cy,,extra\n"      # 7: too many fields
        'dee@example.org,"Dee, D.",pending\n'  # 8
        "eve@example.org\n"               # 9: short row, defaults
    ))
    report = csvio.import_csv(session, path, at=T0)
    session.commit()
    assert [(p.line, p.message.split(":")[0]) for p in report.errors] == [
        (3, "'not-an-address' is not a valid email address"),
        (4, "status 'subscribed' is not one of pending, active, unsubscribed, bounced, complained"),
        (6, "email address is empty"),
        (7, "4 fields but the header has 3 columns"),
    ]
    assert (report.created, report.updated, report.ok) == (3, 0, False)
    assert statuses(session) == {"ann@example.org": "active", "dee@example.org": "pending",
                                 "eve@example.org": "active"}
    dee = session.exec(select(Subscriber).where(Subscriber.email == "dee@example.org")).one()
    assert (dee.name, dee.source) == ("Dee, D.", "import")
    assert "3 invalid row(s)" not in report.summary() and "4 invalid row(s)" in report.summary()


def test_duplicates_and_mixed_case_become_one_subscriber(session, tmp_path):
    path = write(tmp_path, (
        "Email,Name,Status\n"
        "Ann@Example.org,Ann,active\n"
        "bo@example.org,,\n"
        "ANN@example.ORG,,unsubscribed\n"
        "ann@example.org,Annie,active\n"
    ))
    report = csvio.import_csv(session, path, at=T0)
    session.commit()
    assert report.errors == []
    assert [n.line for n in report.notes] == [4, 5]
    assert all("already appears on line 2" in n.message for n in report.notes)
    # duplicates merge towards the stronger status, so a later "unsubscribed" is never lost
    assert statuses(session) == {"ann@example.org": "unsubscribed", "bo@example.org": "active"}
    ann = session.exec(select(Subscriber).where(Subscriber.email == "ann@example.org")).one()
    assert (ann.name, ann.unsubscribed_at) == ("Ann", T0)


def test_import_never_moves_an_address_backwards(session, tmp_path):
    for email, status in [("bounced@example.org", "bounced"), ("left@example.org", "unsubscribed"),
                          ("complained@example.org", "complained"), ("new@example.org", "pending"),
                          ("fan@example.org", "active")]:
        session.add(Subscriber(email=email, status=status, created_at=T0, updated_at=T0))
    session.commit()
    path = write(tmp_path, (
        "email,name,status\n"
        "Bounced@example.org,,active\n"
        "left@example.org,,pending\n"
        "complained@example.org,,active\n"
        "new@example.org,,active\n"
        "fan@example.org,Fan,unsubscribed\n"
    ))
    later = T0 + dt.timedelta(days=1)
    report = csvio.import_csv(session, path, at=later)
    session.commit()
    assert statuses(session) == {
        "bounced@example.org": "bounced", "left@example.org": "unsubscribed",
        "complained@example.org": "complained", "new@example.org": "active",
        "fan@example.org": "unsubscribed"}
    assert (report.created, report.updated, report.unchanged) == (0, 2, 3)
    assert {n.line for n in report.notes} == {2, 3, 4}
    assert "stays bounced" in report.notes[0].message


def test_an_erased_address_is_not_re_added_by_an_old_list(session, tmp_path):
    session.add(Subscriber(email="gone@example.org", status="bounced", created_at=T0, updated_at=T0))
    session.commit()
    lifecycle.erase(session, "gone@example.org", at=T0)
    session.commit()
    report = csvio.import_csv(session, write(tmp_path, "email\nGONE@example.org\nok@example.org\n"),
                              at=T0)
    session.commit()
    assert statuses(session) == {"ok@example.org": "active"}
    assert report.notes[0].line == 2 and "suppressed" in report.notes[0].message


def test_a_file_that_cannot_be_read_imports_nothing(session, tmp_path):
    with pytest.raises(csvio.CsvFormatError, match=r"list.csv:1: no 'email' column \(found mail, name\)"):
        csvio.import_csv(session, write(tmp_path, "mail,name\nann@example.org,Ann\n"), at=T0)
    latin1 = write(tmp_path, "email,name\nann@example.org,Ann\nbo@example.org,Bj\u00f6rn\n",
                   encoding="latin-1")
    with pytest.raises(csvio.CsvFormatError, match=r"list.csv:3: not UTF-8 text \(byte 0xf6\)"):
        csvio.import_csv(session, latin1, at=T0)
    with pytest.raises(csvio.CsvFormatError, match="empty"):
        csvio.import_csv(session, write(tmp_path, ""), at=T0)
    with pytest.raises(csvio.CsvFormatError, match="cannot open"):
        csvio.import_csv(session, tmp_path / "missing.csv", at=T0)
    session.rollback()
    assert statuses(session) == {}


UNCLOSED = (
    "email,name,status\n"                # 1
    "ok1@example.com,Ann,active\n"       # 2
    "ok2@example.com,Bo,active\n"        # 3
    'ok3@example.com,"Unclosed,active\n'  # 4: the quote opened here never closes
    "ok4@example.com,x,active\n"         # 5
    "ok5@example.com,y,active\n"         # 6
)


def _refused(session, path) -> str:
    with pytest.raises(csvio.CsvFormatError) as info:
        csvio.import_csv(session, path, at=T0)
    session.rollback()
    assert statuses(session) == {}  # nothing at all, not even the rows before the damage
    return str(info.value)


def test_an_unclosed_quote_imports_nothing_and_names_the_lines(session, tmp_path):
    message = _refused(session, write(tmp_path, UNCLOSED))
    assert "list.csv: lines 4-6:" in message
    assert "'name'" in message and "quote" in message and "Nothing was imported" in message


def test_a_quote_closed_rows_later_names_the_swallowed_span(session, tmp_path):
    text = UNCLOSED + 'ok6@example.com,"Dee",active\n' + "ok7@example.com,z,active\n"
    # the quote of line 4 is closed by the first quote of line 7; line 7 goes on unquoted
    message = _refused(session, write(tmp_path, text))
    assert "lines 4-7:" in message and "line 8" not in message


def test_an_unclosed_quote_on_the_last_line_is_refused(session, tmp_path):
    for ending in ("\n", ""):
        text = 'email,name\nann@example.com,Ann\nbo@example.com,"Bo' + ending
        assert "line 3:" in _refused(session, write(tmp_path, text))


def test_an_unclosed_quote_over_thousands_of_rows_is_refused(session, tmp_path):
    rows = "".join(f"p{i}@example.com,Name {i},active\n" for i in range(8000))
    message = _refused(session, write(tmp_path, UNCLOSED + rows))
    assert "lines 4-" in message and "unclosed quote" in message


def test_a_name_with_a_line_break_is_refused(session, tmp_path):
    text = 'email,name,status\nann@example.com,Ann,active\nbo@example.com,"Bo\nBaker",active\n'
    message = _refused(session, write(tmp_path, text))
    assert "lines 3-4:" in message and "'name'" in message


def test_an_address_inside_a_name_or_a_list_of_addresses_is_an_invalid_row(session, tmp_path):
    path = write(tmp_path, (
        "email,name,status\n"
        "ann@example.com,Ann,active\n"                          # 2
        'bo@example.com,"Bo ok4@example.com,x,active",active\n'  # 3: an address in the name
        '"cy@example.com, dee@example.com",Cy,active\n'         # 4: two addresses
        "eve@example.com;fay@example.com,Eve,active\n"          # 5
    ))
    report = csvio.import_csv(session, path, at=T0)
    session.commit()
    assert [p.line for p in report.errors] == [3, 4, 5]
    assert "contains an email address" in report.errors[0].message
    assert statuses(session) == {"ann@example.com": "active"}


def test_import_leaves_committing_to_the_caller(engine, tmp_path):
    """One transaction: when the unit of work fails after the rows were written, none remain."""
    path = write(tmp_path, "email\n" + "".join(f"p{i}@example.org\n" for i in range(1200)))
    with pytest.raises(RuntimeError):
        with session_scope(engine) as session:
            assert csvio.import_csv(session, path, at=T0).created == 1200
            raise RuntimeError("crash after the import, before the commit")
    with session_scope(engine) as session:
        assert session.exec(select(Subscriber)).all() == []


def test_byte_order_mark_and_unknown_columns(session, tmp_path):
    path = write(tmp_path, "\ufeffemail,name,status,favourite_colour\nann@example.org,Ann,,blue\n")
    report = csvio.import_csv(session, path, at=T0)
    assert report.ok and report.created == 1 and report.ignored_columns == ["favourite_colour"]


# --- export ------------------------------------------------------------------------------------

def _seed(session) -> None:
    for i, (email, status, name) in enumerate([
            ("ann@example.org", "active", "Ann"), ("bo@example.org", "pending", None),
            ("evil@example.org", "active", "=HYPERLINK(\"http://x\")"),
            ("left@example.org", "unsubscribed", "Léa")]):
        session.add(Subscriber(email=email, status=status, name=name, source="form",
                               created_at=T0 + dt.timedelta(minutes=i),
                               updated_at=T0 + dt.timedelta(minutes=i)))
    session.commit()


def test_csv_export_round_trips_through_import(session, tmp_path):
    _seed(session)
    out = io.StringIO()
    assert csvio.export(session, out, fmt="csv") == 4
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["email"] for r in rows] == ["ann@example.org", "bo@example.org", "evil@example.org",
                                          "left@example.org"]
    assert rows[0]["created_at"] == "2026-11-20T09:00:00+00:00" and rows[1]["name"] == ""
    assert rows[2]["name"].startswith("'="), "spreadsheet formulas are neutralised"
    parsed = csvio.parse_csv(io.StringIO(out.getvalue()))
    assert parsed.errors == [] and parsed.ignored_columns == []
    assert {(r.email, r.name, r.status) for r in parsed.rows} == {
        ("ann@example.org", "Ann", "active"), ("bo@example.org", None, "pending"),
        ("evil@example.org", "=HYPERLINK(\"http://x\")", "active"),
        ("left@example.org", "Léa", "unsubscribed")}


def test_json_export_and_status_filter(session):
    _seed(session)
    out = io.StringIO()
    assert csvio.export(session, out, fmt="json", status="active") == 2
    data = json.loads(out.getvalue())
    assert [d["email"] for d in data] == ["ann@example.org", "evil@example.org"]
    assert data[0]["confirmed_at"] is None and data[0]["source"] == "form"
    empty = io.StringIO()
    assert csvio.export(session, empty, fmt="json", status="bounced") == 0
    assert json.loads(empty.getvalue()) == []


def test_export_writes_row_by_row(session):
    """Streaming: every row is written as it is read, not collected into one big string."""
    for i in range(7):
        session.add(Subscriber(email=f"s{i}@example.org", status="active", created_at=T0,
                               updated_at=T0))
    session.commit()

    class Recorder(io.StringIO):
        writes = 0

        def write(self, text):
            Recorder.writes += 1
            return super().write(text)

    rows = csvio.iter_subscribers(session, chunk=2)
    assert next(rows)["email"] == "s0@example.org"  # a generator: nothing read ahead of need
    out = Recorder()
    assert csvio.write_json(rows, out) == 6
    assert Recorder.writes >= 7


def test_export_refuses_unknown_status_and_format_before_writing(session):
    out = io.StringIO()
    with pytest.raises(csvio.SubscriberError, match="unknown status"):
        csvio.export(session, out, status="gone")
    with pytest.raises(csvio.SubscriberError, match="unknown export format"):
        csvio.export(session, out, fmt="xml")
    assert out.getvalue() == ""
