"""Builds Tool, Review and Comparison rows directly, for the tests of selection, summaries,
rendering and composing.

The content is invented for the tests (made-up tools and reviewer texts) and sized like real
comparison pages: a tagline of a line, four reviewers with a paragraph each, a pricing note.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlmodel import Session

from digest.database.models import Comparison, Review, Tool

UTC = dt.timezone.utc
REVIEWERS = ("Builder", "Skeptic", "Operator", "Designer")

_NAMES = ("Quillmark", "Parsec Notes", "Loomwright", "Tallyhand", "Driftcode", "Brightwell",
          "Cinder Docs", "Fathom Agent", "Harbor Sync", "Kestrel Voice", "Lumen Sheets",
          "Mosaic Test", "Nimbus Ops", "Orchard CRM", "Pylon Search", "Quartz Vision")
_CATEGORIES = ("Developer Tools", "Writing", "Productivity", "Data & Analytics", "Design")
_TEXT = ("The core idea is sound: it removes a chore that every team repeats each week, and it "
         "does so without asking anyone to change how they already work. Setup took under ten "
         "minutes, the defaults are sensible, and the first result was good enough to keep. "
         "Where it stumbles is the edge of its map: larger projects expose slow syncs, the "
         "export format is proprietary, and the pricing page hides the per-seat jump behind a "
         "sales call. For a small team trying it this quarter the trade is worth making; for a "
         "regulated company the audit story is not there yet.")


def make_tool(slug: str, name: str | None = None, *, verdict: str | None = "ship",
              ship: int = 4, skip: int = 0, scores: Sequence[int | None] = (82, 74, 88, 79),
              review_verdicts: Sequence[str | None] | None = None,
              texts: Sequence[str] | None = None, tagline: str | None = None,
              category: str = "Developer Tools", entry: str = "Paid",
              pricing: str = "From $12 per seat a month; a free tier covers one project",
              reviewers: Sequence[str] = REVIEWERS) -> Tool:
    """A tool with one review per score (None = a quote-only review without a score)."""
    if review_verdicts is None:
        review_verdicts = [None if s is None else ("ship" if s >= 60 else "skip") for s in scores]
    texts = texts or [_TEXT] * len(scores)
    name = name or slug.replace("-", " ").title()
    if tagline is None:
        tagline = f"{name} turns a weekly chore into a two-minute check"
    tool = Tool(slug=slug, name=name, category=category, tagline=tagline, description="",
                pricing=pricing, entry=entry, best_for="", panel_verdict=verdict,
                panel_ship=ship, panel_skip=skip)
    tool.reviews = [Review(position=i, reviewer=reviewers[i], score=score,
                           verdict=review_verdicts[i], text=texts[i])
                    for i, score in enumerate(scores)]
    return tool


def make_comparison(tool_a: Tool, tool_b: Tool, *, published_at: dt.datetime,
                    slug: str | None = None, url: str | None = None) -> Comparison:
    slug = slug or f"{tool_a.slug}-vs-{tool_b.slug}"
    if url is None:
        url = f"https://verdicts.example.test/compare/{slug}"
    return Comparison(slug=slug, url=url, tool_a=tool_a, tool_b=tool_b, published_at=published_at)


def sample_comparisons(n: int, *, start: dt.datetime = dt.datetime(2026, 11, 16, 9, tzinfo=UTC),
                       prefix: str = "") -> list[Comparison]:
    """`n` varied comparisons published an hour apart from `start`, each with two new tools.

    Varies verdicts (a skip every third tool), scores, entry and category, so the cards differ
    the way a real week's do."""
    comparisons = []
    for i in range(n):
        tools = []
        for side in (0, 1):
            k = 2 * i + side
            base = _NAMES[k % len(_NAMES)]
            name = base if k < len(_NAMES) else f"{base} {k // len(_NAMES) + 1}"
            skip = k % 3 == 2
            scores = [55 + (k * 7 + j * 11) % 40 for j in range(4)]
            tools.append(make_tool(
                f"{prefix}tool-{k}", name, verdict="skip" if skip else "ship",
                ship=1 if skip else 3 + k % 2, skip=3 if skip else 1 - k % 2, scores=scores,
                category=_CATEGORIES[k % len(_CATEGORIES)],
                entry=("Paid", "Free", "Freemium")[k % 3],
                tagline=f"{name} drafts, checks and files the routine work so your team can "
                        "ship the rest"))
        comparisons.append(make_comparison(tools[0], tools[1],
                                           published_at=start + dt.timedelta(hours=i)))
    return comparisons


def store(session: Session, comparisons: Sequence[Comparison]) -> list[Comparison]:
    """Insert comparisons (and their tools and reviews) and commit."""
    for comparison in comparisons:
        session.add(comparison)
    session.commit()
    return list(comparisons)


class SetClock:
    """A clock the test moves by hand (`clock.now = ...`): what the code under test reads as
    "now", a datetime or epoch seconds, whichever the code expects."""

    def __init__(self, now) -> None:
        self.now = now

    def __call__(self):
        return self.now
