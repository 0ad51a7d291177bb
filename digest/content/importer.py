"""Reads comparison files (JSON, or page text) and stores them all-or-nothing.

Every file of one call is parsed and validated before anything is written, and everything is
written in one transaction: a bad file anywhere means nothing from that call lands. That
includes a file whose review is the beginning of the one already stored (a copy cut short).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import TypeAdapter, ValidationError
from sqlalchemy.engine import Engine

from digest.content.comparison import ComparisonIn
from digest.database import session_scope
from digest.errors import ContentImportError
from digest.content.store import ShortenedReview, UpsertReport, upsert_comparisons

_MANY = TypeAdapter(list[ComparisonIn])


def _field_path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(document)"


def _json_line(text: str, loc: Sequence[int | str]) -> int | None:
    """Best effort: the line where the offending object of a list starts."""
    indexes = [p for p in loc if isinstance(p, int)]
    if not indexes or not text.lstrip().startswith("["):
        return None
    try:
        decoder, pos, count = json.JSONDecoder(), text.index("[") + 1, -1
        while pos < len(text):
            while text[pos] in " \t\r\n,":
                pos += 1
            count += 1
            if count == indexes[0]:
                return text.count("\n", 0, pos) + 1
            _, pos = decoder.raw_decode(text, pos)
    except (ValueError, IndexError):
        return None
    return None


def parse_json(text: str, source: str) -> list[ComparisonIn]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ContentImportError(f"invalid JSON: {exc.msg} (column {exc.colno})", path=source,
                                 line=exc.lineno) from None
    if not isinstance(data, (dict, list)):
        raise ContentImportError("expected a comparison object or a list of them", path=source,
                                 line=1)
    try:
        parsed = _MANY.validate_python(data if isinstance(data, list) else [data])
    except ValidationError as exc:
        # Report the first problem precisely, and how many more there are.
        errors = exc.errors()
        first = errors[0]
        loc = list(first["loc"]) if isinstance(data, list) else list(first["loc"])[1:]
        more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        value = first.get("input")
        if loc and loc[-1] == "tools" and first["type"] in ("too_short", "too_long"):
            first = {**first, "msg": f"a comparison needs exactly two tools, found {len(value)}"}
            value = None
        shown = f" (got {value!r})" if value is not None and not isinstance(value, (dict, list)) else ""
        raise ContentImportError(first["msg"].removeprefix("Value error, ") + shown + more,
                                 path=source, line=_json_line(text, loc),
                                 field=_field_path(loc)) from None
    return parsed


def parse_file(path: Path, *, published_at: dt.datetime | None = None) -> list[ComparisonIn]:
    """One file's comparisons: JSON if it looks like JSON, otherwise comparison page text."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ContentImportError("no such file", path=source) from None
    except UnicodeDecodeError as exc:
        raise ContentImportError(f"not UTF-8 text (byte {exc.start})", path=source) from None
    except OSError as exc:
        raise ContentImportError(exc.strerror or str(exc), path=source) from None
    if text.lstrip("\ufeff \t\r\n")[:1] in ("{", "["):
        items = parse_json(text.lstrip("\ufeff"), source)
        if published_at is not None:
            items = [i.model_copy(update={"published_at": i.published_at or published_at})
                     for i in items]
        return items
    from digest.content.pages import parse_page

    return [parse_page(text, source=source, published_at=published_at)]


def import_paths(engine: Engine, paths: Sequence[Path], *,
                 published_at: dt.datetime | None = None, url: str | None = None) -> UpsertReport:
    """Parse every file, then write everything in one transaction (or nothing). `url` is the
    address of the one comparison imported (`digest import page.txt --url URL`)."""
    if published_at is not None and published_at.tzinfo is None:
        raise ContentImportError("--published-at needs a time zone, e.g. 2026-11-18T10:00:00Z")
    if url is not None and len(paths) != 1:
        raise ContentImportError(f"--url is the address of one page, and {len(paths)} files "
                                 "were given (put a `url:` line at the top of each page "
                                 "instead)", field="url")
    items: list[ComparisonIn] = []
    origins: list[tuple[str, int | None]] = []  # per item: its file, its index in a list file
    for path in paths:
        found = parse_file(Path(path), published_at=published_at)
        origins.extend((str(path), i if len(found) > 1 else None) for i in range(len(found)))
        items.extend(found)
    if url is not None:
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ContentImportError(f"--url {url!r} is not an absolute http(s) address",
                                     field="url")
        if len(items) != 1:
            raise ContentImportError(f"--url is the address of one comparison, and the file "
                                     f"holds {len(items)}", path=str(paths[0]), field="url")
        items = [items[0].model_copy(update={"url": url.strip()})]
    try:
        with session_scope(engine) as session:
            return upsert_comparisons(session, items)
    except ShortenedReview as exc:
        source, index = origins[exc.item]
        field = exc.field if index is None else f"[{index}].{exc.field}"
        raise ContentImportError(exc.reason, path=source, field=field) from None
