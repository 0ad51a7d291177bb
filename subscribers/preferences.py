"""What a reader wants: the categories they read (none chosen = all) and whether they want every
comparison or only those where a tool's panel verdict is Ship.

Readers with the same preferences form a segment (`Preferences.key`); the sender renders each
segment's edition once. Categories are stored as their names, `;`-separated in a canonical order,
so equal choices give equal keys whatever order they were ticked or typed in.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from sqlmodel import Session

from subscribers.models import Subscriber

SEPARATOR = ";"
CATEGORY_MAX = 100
CATEGORIES_MAX = 50
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class InvalidPreferences(ValueError):
    """A category list or ship-only value that cannot be stored; the message names the field."""


def category_slug(name: str) -> str:
    """`Data Infrastructure` -> `data-infrastructure`: the category in a URL."""
    ascii_text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")


def parse_categories(values: str | Iterable[str]) -> tuple[str, ...]:
    """Names from `Developer Tools;Code Review` (or a list): trimmed, duplicates (ignoring case)
    dropped, sorted; empty means all categories."""
    items = values.split(SEPARATOR) if isinstance(values, str) else list(values)
    seen: dict[str, str] = {}
    for raw in items:
        name = " ".join(str(raw).split())
        if not name:
            continue
        if _CONTROL.search(name) or len(name) > CATEGORY_MAX:
            raise InvalidPreferences(f"categories: {name[:40]!r} is not a category name "
                                     f"(at most {CATEGORY_MAX} characters, one line)")
        if not category_slug(name):
            raise InvalidPreferences(f"categories: {name!r} has no letters or digits")
        seen.setdefault(name.casefold(), name)
    if len(seen) > CATEGORIES_MAX:
        raise InvalidPreferences(f"categories: at most {CATEGORIES_MAX} may be chosen")
    return tuple(sorted(seen.values(), key=str.casefold))


def parse_ship_only(value: str | bool | None) -> bool:
    if isinstance(value, bool):
        return value
    text = (value or "").strip().lower()
    if text in ("", "0", "false", "no", "off"):
        return False
    if text in ("1", "true", "yes", "on"):
        return True
    raise InvalidPreferences(f"ship_only: expected true or false, not {value!r}")


@dataclass(frozen=True)
class Preferences:
    categories: tuple[str, ...] = ()  # empty: every category
    ship_only: bool = False

    @property
    def key(self) -> str:
        """The segment: `all`, or the category slugs joined by `+`, then `:ship` when ship-only.
        Equal preferences give equal keys."""
        cats = "+".join(sorted({category_slug(c) for c in self.categories})) or "all"
        return cats + (":ship" if self.ship_only else "")

    def describe(self) -> str:
        what = ", ".join(self.categories) if self.categories else "every category"
        return what + (" (ship verdicts only)" if self.ship_only else "")

    def wants(self, categories: Iterable[str], ships: bool) -> bool:
        """Whether a comparison whose tools have these categories (and a Ship verdict or not)
        belongs in this reader's edition."""
        if self.ship_only and not ships:
            return False
        if not self.categories:
            return True
        chosen = {category_slug(c) for c in self.categories}
        return any(category_slug(c) in chosen for c in categories)

    @classmethod
    def parse(cls, text: str) -> Preferences:
        """From the CLI's `--segment "Developer Tools,ship-only"` form (`,` or `;` between)."""
        parts = [p.strip() for p in re.split(r"[;,]", text) if p.strip()]
        ship_only = any(p.lower() in ("ship-only", "ship only", "ship") for p in parts)
        names = [p for p in parts if p.lower() not in ("ship-only", "ship only", "ship", "all")]
        return cls(parse_categories(names), ship_only)


def of(subscriber: Subscriber) -> Preferences:
    return Preferences(parse_categories(subscriber.categories or ""), bool(subscriber.ship_only))


def store(session: Session, subscriber: Subscriber, preferences: Preferences, *,
          at: dt.datetime) -> bool:
    """Save a reader's choices; True when anything changed."""
    text = SEPARATOR.join(preferences.categories)
    if ((subscriber.categories or "") == text and bool(subscriber.ship_only) == preferences.ship_only
            and subscriber.segment == preferences.key):
        return False
    subscriber.categories, subscriber.ship_only = text, preferences.ship_only
    subscriber.segment = preferences.key
    subscriber.updated_at = at
    session.add(subscriber)
    session.flush()
    return True


def without(preferences: Preferences, category: str, known: Iterable[str]) -> Preferences:
    """The preferences after "stop sending me {category}": a reader who had every category now
    has every known one but this."""
    slug = category_slug(category)
    current = preferences.categories or tuple(known)
    kept = tuple(c for c in current if category_slug(c) != slug)
    if not kept:
        # No category left would read as "every category": the opposite of what was asked.
        raise InvalidPreferences("categories: that is the only category left; unsubscribe "
                                 "instead to stop every email")
    return Preferences(parse_categories(kept), preferences.ship_only)
