"""Import subscribers from CSV, export them as CSV or JSON.

Import reads and checks the whole file first (pure: `parse_csv`), then writes every valid row in
the caller's one transaction (`import_rows`), so a bad row is reported by its line number and a
database error leaves nothing half-written. A damaged file (a quote that runs over a line break,
usually an unclosed one that swallows the rows after it) imports nothing at all: which rows it
hid cannot be known, so the error names the lines it spans. Import only ever moves an address *forward*
(pending -> active -> unsubscribed -> bounced -> complained): an old list can never re-subscribe
someone who left, bounced or complained, nor re-add an erased address.

Export streams rows from the database in chunks and writes them as it goes, so a large list is
never held in memory.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sqlmodel import Session, col, select

from subscribers.lifecycle import (BOUNCE, COMPLAIN, CONFIRM, UNSUBSCRIBE, InvalidEmail,
                                   InvalidName, SubscriberError, apply, clean_name, email_hash,
                                   normalize_email)
from subscribers.models import STATUSES, Subscriber, Suppression
from subscribers.preferences import (SEPARATOR, InvalidPreferences, Preferences, parse_categories,
                                     parse_ship_only)
from subscribers.preferences import store as store_preferences

IMPORT_COLUMNS = ("email", "name", "status", "categories", "ship_only")
EXPORT_COLUMNS = ("email", "name", "status", "categories", "ship_only", "source", "created_at",
                  "updated_at", "confirmed_at", "unsubscribed_at", "bounced_at", "complained_at")
PREFERENCE_COLUMNS = ("categories", "ship_only")
# An operator importing a list vouches for it, unless a row's status says otherwise.
DEFAULT_STATUS = "active"
_RANK = {"pending": 0, "active": 1, "unsubscribed": 2, "bounced": 3, "complained": 4}
_FORWARD = {"active": CONFIRM, "unsubscribed": UNSUBSCRIBE, "bounced": BOUNCE,
            "complained": COMPLAIN}
_STAMP = {"active": "confirmed_at", "unsubscribed": "unsubscribed_at", "bounced": "bounced_at",
          "complained": "complained_at"}
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_CHUNK = 500
# An address inside a name: a shifted column, or a quote that ran on over the next row.
_ADDRESS_IN_TEXT = re.compile(r"[^\s@,;<>\"']+@[^\s@,;<>\"']+\.[^\W\d_]{2,}")
_DAMAGE_SHOWN = 5


class CsvFormatError(SubscriberError):
    """The file as a whole cannot be read (encoding, header, a damaged quote); nothing was
    imported."""


@dataclass(frozen=True)
class ImportRow:
    line: int
    email: str
    name: str | None
    status: str
    # None when the file has no preference columns: existing choices are then left alone.
    preferences: Preferences | None = None


@dataclass(frozen=True)
class RowProblem:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class ParsedCsv:
    rows: list[ImportRow] = field(default_factory=list)
    errors: list[RowProblem] = field(default_factory=list)  # invalid rows: not imported
    notes: list[RowProblem] = field(default_factory=list)  # duplicates merged, etc.
    ignored_columns: list[str] = field(default_factory=list)


@dataclass
class ImportReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[RowProblem] = field(default_factory=list)
    notes: list[RowProblem] = field(default_factory=list)  # kept, skipped, merged: imported fine
    ignored_columns: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        text = f"{self.created} added, {self.updated} updated, {self.unchanged} unchanged"
        if self.errors:
            text += f", {len(self.errors)} invalid row(s) not imported"
        return text


# --- import ------------------------------------------------------------------------------------

def _unescape_formula(value: str) -> str:
    """Undo the export's guard against spreadsheet formulas, so export -> import round-trips."""
    if value[:1] == "'" and value[1:2] and value[1:2] in _FORMULA_START:
        return value[1:]
    return value


def parse_csv(lines: Iterable[str], *, source: str = "<csv>") -> ParsedCsv:
    """Check every row; return the valid ones (duplicates merged) and a problem per bad line."""
    reader = csv.reader(_each_line_ended(lines))
    try:
        header = next(reader)
    except StopIteration:
        raise CsvFormatError(f"{source}: the file is empty; expected a header line "
                             f"{','.join(IMPORT_COLUMNS)}") from None
    except csv.Error as exc:
        raise CsvFormatError(f"{source}:1: cannot read the header: {exc}") from None
    names = [h.strip().lstrip("\ufeff").lower() for h in header]
    if "email" not in names:
        raise CsvFormatError(f"{source}:1: no 'email' column (found {', '.join(names) or 'none'}); "
                             f"expected the columns {','.join(IMPORT_COLUMNS)}")
    for column in IMPORT_COLUMNS:
        if names.count(column) > 1:
            raise CsvFormatError(f"{source}:1: the column {column!r} appears twice")
    index = {name: i for i, name in enumerate(names) if name in IMPORT_COLUMNS}
    parsed = ParsedCsv(ignored_columns=[n for n in names if n not in IMPORT_COLUMNS
                                        and n not in EXPORT_COLUMNS])
    first_line: dict[str, int] = {}
    by_email: dict[str, ImportRow] = {}
    damage: list[str] = []
    while True:
        line = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            # e.g. a field over the csv module's size limit: a quote open for thousands of rows
            end = reader.line_num
            damage.append(f"{f'lines {line}-{end}' if end > line else f'line {line}'}: "
                          f"unreadable CSV: {exc}{' (an unclosed quote?)' if end > line else ''}")
            continue
        broken = next((i for i, c in enumerate(record) if "\n" in c or "\r" in c), None)
        if broken is not None:
            damage.append(_runaway_quote(line, reader.line_num, _column(names, broken)))
            continue
        if not record or all(not cell.strip() for cell in record):
            continue
        if len(record) > len(names):
            parsed.errors.append(RowProblem(
                line, f"{len(record)} fields but the header has {len(names)} columns"))
            continue

        def cell(column: str) -> str:
            i = index.get(column)
            return _unescape_formula(record[i].strip()) if i is not None and i < len(record) else ""

        try:
            email = normalize_email(cell("email"))
            name = clean_name(cell("name"))
        except (InvalidEmail, InvalidName) as exc:
            parsed.errors.append(RowProblem(line, str(exc)))
            continue
        if name and (found := _ADDRESS_IN_TEXT.search(name)):
            parsed.errors.append(RowProblem(
                line, f"the name {name!r} contains an email address ({found.group()}): is a "
                      "column shifted or a quote misplaced?"))
            continue
        status = cell("status").lower() or DEFAULT_STATUS
        if status not in STATUSES:
            parsed.errors.append(RowProblem(
                line, f"status {cell('status')!r} is not one of {', '.join(STATUSES)}"))
            continue
        wanted = None
        if any(column in index for column in PREFERENCE_COLUMNS):
            try:
                wanted = Preferences(parse_categories(cell("categories")),
                                     parse_ship_only(cell("ship_only")))
            except InvalidPreferences as exc:
                parsed.errors.append(RowProblem(line, str(exc)))
                continue
        row = ImportRow(line, email, name, status, wanted)
        if email in by_email:
            first = by_email[email]
            merged = ImportRow(first.line, email, first.name or name,
                               status if _RANK[status] > _RANK[first.status] else first.status,
                               first.preferences or wanted)
            by_email[email] = merged
            parsed.notes.append(RowProblem(
                line, f"{email} already appears on line {first_line[email]}; merged "
                      f"(status {merged.status})"))
            continue
        first_line[email] = line
        by_email[email] = row
    if damage:
        more = len(damage) - _DAMAGE_SHOWN
        raise CsvFormatError(
            f"{source}: " + "; ".join(damage[:_DAMAGE_SHOWN])
            + (f"; and {more} more damaged place(s)" if more > 0 else "")
            + ". A field may not run over a line break. Nothing was imported: fix the file and "
              "import it again")
    parsed.rows = list(by_email.values())
    return parsed


def _each_line_ended(lines: Iterable[str]) -> Iterator[str]:
    """The lines as given, the last one ended too: then a quote left open at the end of the file
    shows as a field holding a line break, like any other runaway quote."""
    for line in lines:
        yield line if line.endswith(("\n", "\r")) else line + "\n"


def _column(names: list[str], index: int) -> str:
    return repr(names[index]) if index < len(names) and names[index] else f"column {index + 1}"


def _runaway_quote(start: int, end: int, column: str) -> str:
    """Where a quoted field took in a line break: usually an unclosed quote."""
    if end > start:
        return (f"lines {start}-{end}: the {column} field opens a quote on line {start} that runs "
                f"on to line {end}, taking in the line(s) after it (an unclosed quote?)")
    return f"line {start}: the {column} field opens a quote that is never closed"


def _new_subscriber(row: ImportRow, at: dt.datetime) -> Subscriber:
    subscriber = Subscriber(email=row.email, name=row.name, status=row.status, source="import",
                            created_at=at, updated_at=at)
    if row.preferences is not None:
        subscriber.categories = SEPARATOR.join(row.preferences.categories)
        subscriber.ship_only = row.preferences.ship_only
        subscriber.segment = row.preferences.key
    if row.status in _STAMP:
        setattr(subscriber, _STAMP[row.status], at)
    return subscriber


def import_rows(session: Session, rows: list[ImportRow], *, at: dt.datetime,
                report: ImportReport | None = None) -> ImportReport:
    """Write parsed rows in the caller's transaction, a chunk of look-ups at a time."""
    report = report or ImportReport()
    for start in range(0, len(rows), _CHUNK):
        chunk = rows[start:start + _CHUNK]
        emails = [r.email for r in chunk]
        existing = {s.email: s for s in session.exec(
            select(Subscriber).where(col(Subscriber.email).in_(emails)).with_for_update())}
        hashes = {email_hash(e): e for e in emails if e not in existing}
        suppressed = {}
        if hashes:
            query = select(Suppression).where(col(Suppression.email_hash).in_(list(hashes)))
            suppressed = {hashes[s.email_hash]: s.reason for s in session.exec(query)}
        for row in chunk:
            subscriber = existing.get(row.email)
            if subscriber is None:
                if row.email in suppressed:
                    report.unchanged += 1
                    report.notes.append(RowProblem(
                        row.line, f"{row.email} was erased earlier (reason "
                                  f"{suppressed[row.email]!r}) and is suppressed; not re-added"))
                    continue
                session.add(_new_subscriber(row, at))
                report.created += 1
                continue
            changed = False
            if row.name and subscriber.name != row.name:
                subscriber.name, subscriber.updated_at, changed = row.name, at, True
                session.add(subscriber)
            if row.preferences is not None:
                changed = store_preferences(session, subscriber, row.preferences, at=at) or changed
            if _RANK[row.status] > _RANK[subscriber.status]:
                changed = apply(session, subscriber, _FORWARD[row.status], at=at) or changed
            elif row.status != subscriber.status:
                report.notes.append(RowProblem(
                    row.line, f"{row.email} stays {subscriber.status} (import never moves an "
                              f"address back to {row.status}; an operator can reactivate)"))
            if changed:
                report.updated += 1
            else:
                report.unchanged += 1
        session.flush()
    return report


def _utf8_lines(handle: IO[bytes], source: str) -> Iterator[str]:
    """Decode line by line, so a stray Latin-1 byte is reported on its own line."""
    for number, raw in enumerate(handle, start=1):
        if number == 1:
            raw = raw.removeprefix(b"\xef\xbb\xbf")
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CsvFormatError(f"{source}:{number}: not UTF-8 text (byte {raw[exc.start]:#04x}); "
                                 "save the file as UTF-8 and import it again") from None


def import_csv(session: Session, path: str | Path, *, at: dt.datetime) -> ImportReport:
    """Parse the whole file, then import its valid rows in the caller's transaction."""
    path = Path(path)
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise CsvFormatError(f"{path}: cannot open: {exc.strerror or exc}") from None
    with handle:
        parsed = parse_csv(_utf8_lines(handle, str(path)), source=str(path))
    report = ImportReport(errors=parsed.errors, notes=list(parsed.notes),
                          ignored_columns=parsed.ignored_columns)
    return import_rows(session, parsed.rows, at=at, report=report)


# --- export ------------------------------------------------------------------------------------

def _check_status(status: str | None) -> None:
    if status is not None and status not in STATUSES:
        raise SubscriberError(f"unknown status {status!r}; choose one of {', '.join(STATUSES)}")


def iter_subscribers(session: Session, *, status: str | None = None,
                     chunk: int = _CHUNK) -> Iterator[dict[str, Any]]:
    """Rows as plain dicts, fetched `chunk` at a time (a server-side cursor on PostgreSQL)."""
    _check_status(status)
    columns = [getattr(Subscriber, c) for c in EXPORT_COLUMNS]
    query = select(*columns).order_by(Subscriber.id).execution_options(yield_per=chunk)
    if status is not None:
        query = query.where(Subscriber.status == status)
    for record in session.exec(query):
        yield {name: (value.isoformat() if isinstance(value, dt.datetime) else value)
               for name, value in zip(EXPORT_COLUMNS, record)}


def _formula_safe(value: Any) -> Any:
    """Spreadsheets run cells starting with = + - @ as formulas; names come from a public form."""
    if isinstance(value, bool):
        return "true" if value else "false"  # what the import reads back
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def write_csv(rows: Iterable[dict[str, Any]], out: IO[str]) -> int:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    count = 0
    for row in rows:
        writer.writerow(["" if row[c] is None else _formula_safe(row[c]) for c in EXPORT_COLUMNS])
        count += 1
    return count


def write_json(rows: Iterable[dict[str, Any]], out: IO[str]) -> int:
    """A JSON array written element by element."""
    count = 0
    out.write("[")
    for row in rows:
        out.write(("," if count else "") + "\n  " + json.dumps(row, ensure_ascii=False))
        count += 1
    out.write("\n]\n" if count else "]\n")
    return count


def export(session: Session, out: IO[str], *, fmt: str = "csv", status: str | None = None) -> int:
    """Stream the list to `out` as CSV or JSON; returns the number of subscribers written."""
    writers = {"csv": write_csv, "json": write_json}
    if fmt not in writers:
        raise SubscriberError(f"unknown export format {fmt!r}; choose csv or json")
    _check_status(status)  # before the first byte is written
    return writers[fmt](iter_subscribers(session, status=status), out)
