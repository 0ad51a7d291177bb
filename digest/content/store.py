"""Writes imported comparisons to the content store, and reads them back for listings.

Upserts by slug: re-importing a comparison or a tool updates it in place. A value the input does
not know (a quote-only page has no scores, no community line, no "best for") never erases one the
store already knows for the same tool, so importing both page variants of a tool keeps the most
complete record. A re-import that would replace a stored review with the beginning of itself
(the mark of a copy cut short) is refused: `ShortenedReview`, and the caller writes nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlmodel import Session, select

from digest.content.comparison import ComparisonIn, ToolIn
from digest.database import utcnow
from digest.database.models import Comparison, Review, Tool
from digest.errors import ContentImportError

_TEXT_FIELDS = ("name", "category", "tagline", "description", "pricing", "entry", "best_for")


@dataclass
class UpsertReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    tools_created: list[str] = field(default_factory=list)
    tools_updated: list[str] = field(default_factory=list)


class ShortenedReview(ContentImportError):
    """The input would cut a stored review down to its own beginning. `item` is the index of the
    comparison in the input, `field` the review's text within it."""

    def __init__(self, message: str, *, item: int, field: str) -> None:
        super().__init__(message, field=field)
        self.item = item


def _words(text: str) -> str:
    return " ".join(text.split())


def _refuse_shortened(tool: Tool, incoming: ToolIn, *, item: int, position: int) -> None:
    """A shorter review that is the start of the stored one is a truncated copy, not an edit
    anyone makes on purpose often enough to risk losing the rest silently."""
    stored = {r.reviewer.lower(): r for r in tool.reviews}
    for j, review in enumerate(incoming.reviews):
        row = stored.get(review.reviewer.lower())
        if row is None or not review.text:
            continue
        new, old = _words(review.text), _words(row.text)
        if len(new) < len(old) and old.startswith(new):
            raise ShortenedReview(
                f"{review.reviewer}'s review of {tool.name} would shrink from {len(old)} to "
                f"{len(new)} characters, and the new text is the beginning of the stored one: "
                "the input looks cut short, so nothing was imported",
                item=item, field=f"tools[{position}].reviews[{j}].text")


def _merge_reviews(tool: Tool, incoming: ToolIn) -> None:
    existing = {r.reviewer.lower(): r for r in tool.reviews}
    keep: list[Review] = []
    for position, review in enumerate(incoming.reviews):
        row = existing.pop(review.reviewer.lower(), None)
        if row is None:
            row = Review(reviewer=review.reviewer)
        same_text = row.text == review.text
        row.position = position
        row.reviewer = review.reviewer
        # A quote-only page repeats a known review without its score: keep the score we know.
        if review.score is not None or not same_text:
            row.score = review.score
        if review.verdict is not None or not same_text:
            row.verdict = review.verdict
        row.text = review.text or row.text
        keep.append(row)
    # Reviewers the input does not mention are kept (a page may show fewer), after the given ones.
    for offset, row in enumerate(sorted(existing.values(), key=lambda r: r.position)):
        row.position = len(keep) + offset
        keep.append(row)
    tool.reviews = keep


def _apply_tool(tool: Tool, data: ToolIn) -> None:
    for name in _TEXT_FIELDS:
        value = getattr(data, name)
        if value or not getattr(tool, name):
            setattr(tool, name, value)
    if data.panel.ship + data.panel.skip > 0 or data.panel.verdict is not None:
        tool.panel_verdict = data.panel.verdict
        tool.panel_ship, tool.panel_skip = data.panel.ship, data.panel.skip
    if data.community.votes is not None:
        tool.community_votes = data.community.votes
    _merge_reviews(tool, data)
    tool.updated_at = utcnow()


def upsert_comparisons(session: Session, items: Iterable[ComparisonIn], *,
                       default_published_at: dt.datetime | None = None) -> UpsertReport:
    """Insert or update comparisons and their tools. The caller owns the transaction."""
    report = UpsertReport()
    tools: dict[str, Tool] = {}
    seen_comparisons: dict[str, Comparison] = {}

    def tool_for(data: ToolIn, item: int, position: int) -> Tool:
        tool = tools.get(data.slug)
        if tool is None:
            tool = session.exec(select(Tool).where(Tool.slug == data.slug)).first()
            if tool is None:
                tool = Tool(slug=data.slug, name=data.name)
                session.add(tool)
                report.tools_created.append(data.slug)
            else:
                report.tools_updated.append(data.slug)
            tools[data.slug] = tool
        _refuse_shortened(tool, data, item=item, position=position)
        _apply_tool(tool, data)
        return tool

    for index, item in enumerate(items):
        tool_a, tool_b = tool_for(item.tools[0], index, 0), tool_for(item.tools[1], index, 1)
        session.flush()
        comparison = seen_comparisons.get(item.slug) or session.exec(
            select(Comparison).where(Comparison.slug == item.slug)).first()
        if comparison is None:
            comparison = Comparison(slug=item.slug, tool_a_id=tool_a.id, tool_b_id=tool_b.id,
                                    published_at=item.published_at or default_published_at or utcnow())
            session.add(comparison)
            report.created.append(item.slug)
        else:
            if item.slug not in report.created and item.slug not in report.updated:
                report.updated.append(item.slug)
            comparison.tool_a_id, comparison.tool_b_id = tool_a.id, tool_b.id
            # Page text carries no date: without an explicit one, a re-import keeps the original.
            if item.published_at is not None or default_published_at is not None:
                comparison.published_at = item.published_at or default_published_at
        comparison.url = item.url or comparison.url
        comparison.imported_at = utcnow()
        seen_comparisons[item.slug] = comparison
    session.flush()
    return report


def list_comparisons(session: Session, *, start: dt.datetime | None = None,
                     end: dt.datetime | None = None) -> Sequence[Comparison]:
    """Comparisons newest first, optionally within [start, end)."""
    query = select(Comparison).order_by(Comparison.published_at.desc(), Comparison.id.desc())
    if start is not None:
        query = query.where(Comparison.published_at >= start)
    if end is not None:
        query = query.where(Comparison.published_at < end)
    return session.exec(query).unique().all()


def tool_to_input(tool: Tool) -> ToolIn:
    return ToolIn(
        slug=tool.slug, name=tool.name, category=tool.category, tagline=tool.tagline,
        description=tool.description, pricing=tool.pricing, entry=tool.entry,
        best_for=tool.best_for,
        panel={"verdict": tool.panel_verdict, "ship": tool.panel_ship, "skip": tool.panel_skip},
        community={"votes": tool.community_votes},
        reviews=[{"reviewer": r.reviewer, "score": r.score, "verdict": r.verdict, "text": r.text}
                 for r in tool.reviews],
    )


def comparison_to_input(comparison: Comparison) -> ComparisonIn:
    """The stored comparison in the import schema: what `digest import` would read back."""
    a, b = comparison.tools
    return ComparisonIn(slug=comparison.slug, url=comparison.url,
                        published_at=comparison.published_at,
                        tools=[tool_to_input(a), tool_to_input(b)])
