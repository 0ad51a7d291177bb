"""Verdict lines and the headline summary, computed from the data alone.

Pure and deterministic: the same comparisons always give the same words, so a composed issue
can be reproduced and tested. Averages use `Decimal` and round half up, so 82.25 reads as 82.3
on every machine (binary floats would print 82.2).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Protocol

# Reviewers whose scores for one tool are at most this many points apart "broadly agree".
AGREE_SPREAD = 5
QUOTE_LIMIT = 180


class ReviewLike(Protocol):
    reviewer: str
    score: int | None
    verdict: str | None
    text: str


class ToolLike(Protocol):
    slug: str
    name: str
    panel_verdict: str | None
    panel_ship: int
    panel_skip: int
    reviews: Sequence[ReviewLike]


class ComparisonLike(Protocol):
    tool_a: ToolLike | None
    tool_b: ToolLike | None


# --- numbers ----------------------------------------------------------------------------------

def _shown(value: Decimal | int) -> Decimal:
    return Decimal(value).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


def fmt_score(value: Decimal | int) -> str:
    """`82`, `82.3`: one decimal at most, half up, no trailing `.0`."""
    text = str(_shown(value))
    return text[:-2] if text.endswith(".0") else text


@dataclass(frozen=True)
class ToolStats:
    """What the summaries need to know about one tool."""

    name: str
    verdict: str | None
    ship: int
    skip: int
    scores: tuple[tuple[str, int], ...]  # (reviewer, score), in the page's order

    @property
    def average(self) -> Decimal | None:
        if not self.scores:
            return None
        return Decimal(sum(s for _, s in self.scores)) / len(self.scores)

    @property
    def spread(self) -> int:
        """Points between the lowest and highest reviewer score (0 with fewer than two)."""
        if len(self.scores) < 2:
            return 0
        values = [s for _, s in self.scores]
        return max(values) - min(values)

    @property
    def low(self) -> tuple[str, int]:
        # min() keeps the first of equal scores, so ties resolve in the page's order.
        return min(self.scores, key=lambda item: item[1])

    @property
    def high(self) -> tuple[str, int]:
        return max(self.scores, key=lambda item: item[1])

    @property
    def split(self) -> str:
        """The panel's vote as ship–skip, e.g. `4–0`; empty when nobody voted."""
        return f"{self.ship}–{self.skip}" if self.ship or self.skip else ""


def tool_stats(tool: ToolLike) -> ToolStats:
    return ToolStats(
        name=tool.name,
        verdict=tool.panel_verdict,
        ship=tool.panel_ship or 0,
        skip=tool.panel_skip or 0,
        scores=tuple((r.reviewer, r.score) for r in tool.reviews if r.score is not None),
    )


def _pair(comparison: ComparisonLike) -> tuple[ToolStats, ToolStats]:
    if comparison.tool_a is None or comparison.tool_b is None:
        raise ValueError("a comparison needs both tools loaded")
    return tool_stats(comparison.tool_a), tool_stats(comparison.tool_b)


# --- the verdict line -------------------------------------------------------------------------

def _who_ships(a: ToolStats, b: ToolStats) -> str:
    splits = [s for s in (a.split, b.split) if s]
    tally = f" (panel {splits[0]} and {splits[1]})" if len(splits) == 2 else ""
    va, vb = a.verdict, b.verdict
    if va == vb == "ship":
        return f"Both ship{tally}."
    if va == vb == "skip":
        return f"Neither ships: the panel skips both{tally}."
    if {va, vb} == {"ship", "skip"}:
        winner, loser = (a, b) if va == "ship" else (b, a)
        w = f" {winner.split}" if winner.split else ""
        lo = f" {loser.split}" if loser.split else ""
        return f"Only {winner.name} ships{w}; the panel skips {loser.name}{lo}."
    if va is None and vb is None:
        return "No panel verdict yet for either tool."
    known, unknown = (a, b) if va is not None else (b, a)
    verb = "ships" if known.verdict == "ship" else "is a skip"
    k = f" ({known.split})" if known.split else ""
    return f"{known.name} {verb}{k}; {unknown.name} has no panel verdict yet."


def _averages(a: ToolStats, b: ToolStats) -> str:
    avg_a, avg_b = a.average, b.average
    if avg_a is None and avg_b is None:
        return "No reviewer scores were published for this pair: the quotes carry the verdict."
    if avg_a is None or avg_b is None:
        scored, other = (a, b) if avg_a is not None else (b, a)
        return (f"Only {scored.name} has reviewer scores (average {fmt_score(scored.average)}); "
                f"{other.name} is quote-only.")
    # Compare and subtract the numbers as printed, so the sentence adds up for the reader.
    shown_a, shown_b = _shown(avg_a), _shown(avg_b)
    if shown_a == shown_b:
        return f"They tie on average score at {fmt_score(shown_a)}."
    (hi, hi_avg), (lo, lo_avg) = sorted(((a, shown_a), (b, shown_b)), key=lambda p: p[1],
                                        reverse=True)
    gap = fmt_score(hi_avg - lo_avg)
    return (f"{hi.name} scores higher on average, {fmt_score(hi_avg)} to {fmt_score(lo_avg)} "
            f"(+{gap} {'point' if gap == '1' else 'points'}).")


def _most_disputed(a: ToolStats, b: ToolStats) -> ToolStats | None:
    """The tool whose reviewer scores spread widest, when they spread beyond AGREE_SPREAD
    (on equal spreads, the first tool)."""
    widest = a if a.spread >= b.spread else b
    return widest if widest.spread > AGREE_SPREAD else None


def _disagreement(a: ToolStats, b: ToolStats) -> str:
    if len(a.scores) < 2 and len(b.scores) < 2:
        return ""
    disputed = _most_disputed(a, b)
    if disputed is None:
        return (f"The reviewers broadly agree: no tool's scores are more than {AGREE_SPREAD} "
                "points apart.")
    (low_name, low), (high_name, high) = disputed.low, disputed.high
    return (f"Reviewers disagree most on {disputed.name}: {low_name} gives {low}, "
            f"{high_name} {high}.")


def verdict_line(comparison: ComparisonLike) -> str:
    """One line: who ships and the panel split, which tool averages higher and by how much,
    and where the reviewers disagree most."""
    a, b = _pair(comparison)
    parts = [_who_ships(a, b), _averages(a, b), _disagreement(a, b)]
    return " ".join(p for p in parts if p)


# --- the headline -----------------------------------------------------------------------------

def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


@dataclass(frozen=True)
class IssueCounts:
    comparisons: int
    tools: int
    ship: int
    skip: int

    @property
    def undecided(self) -> int:
        return self.tools - self.ship - self.skip


def count_issue(comparisons: Sequence[ComparisonLike]) -> IssueCounts:
    """Comparisons, distinct tools (a tool in two comparisons counts once), ships and skips."""
    tools: dict[str, ToolLike] = {}
    for comparison in comparisons:
        for tool in (comparison.tool_a, comparison.tool_b):
            if tool is None:
                raise ValueError("a comparison needs both tools loaded")
            tools.setdefault(tool.slug, tool)
    verdicts = [t.panel_verdict for t in tools.values()]
    return IssueCounts(len(comparisons), len(tools), verdicts.count("ship"), verdicts.count("skip"))


def headline(comparisons: Sequence[ComparisonLike]) -> str:
    """The issue in one sentence: how many comparisons and tools, how many ship and skip."""
    if not comparisons:
        return "No new comparisons this week."
    n = count_issue(comparisons)
    lead = f"{_count(n.comparisons, 'comparison')} this week covering {_count(n.tools, 'tool')}"
    if n.skip == n.tools:
        return f"{lead}, and the panel skips every one of them."
    if n.ship == n.tools:
        return f"{lead}: the panel ships {'both' if n.tools == 2 else 'all of them'}."
    counts = [f"{n.ship} ship", f"{n.skip} skip"]
    if n.undecided:
        counts.append(f"{n.undecided} without a panel verdict yet")
    return f"{lead}: {', '.join(counts)}."


# --- the quote --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Quote:
    text: str
    reviewer: str
    tool: str


_SPACE = re.compile(r"\s+")
_TRAILING = ",;:–—-([{\"'“‘ "


def trim_words(text: str, limit: int = QUOTE_LIMIT) -> str:
    """Shorten at a word boundary and mark the cut with an ellipsis; never cuts inside a word
    unless a single word is longer than the whole limit."""
    text = _SPACE.sub(" ", text).strip()
    if len(text) <= limit:
        return text
    cut = text[: limit + 1]
    space = cut.rfind(" ")
    cut = cut[:space] if space > 0 else text[:limit]
    return cut.rstrip(_TRAILING).rstrip(".") + "…"


def _first_sentence(text: str, limit: int) -> str:
    """The opening sentence when it fits on its own, else the text cut at a word boundary."""
    text = _SPACE.sub(" ", text).strip().strip("“”\"")
    match = re.match(r"(.+?[.!?])(?:\s|$)", text)
    if match and 40 <= len(match.group(1)) <= limit:
        return match.group(1)
    return trim_words(text, limit)


def pick_quote(comparison: ComparisonLike, limit: int = QUOTE_LIMIT) -> Quote | None:
    """One short quote for the card, chosen by a fixed rule so the issue is reproducible:
    the lowest scorer on the most disputed tool when reviewers disagree, else the highest
    scorer on the tool that averages higher, else the first review with any text."""
    a, b = _pair(comparison)
    tool_a, tool_b = comparison.tool_a, comparison.tool_b
    assert tool_a is not None and tool_b is not None
    preferred: list[tuple[ToolLike, str | None]] = []
    disputed = _most_disputed(a, b)
    if disputed is not None:
        preferred.append((tool_a if disputed is a else tool_b, disputed.low[0]))
    elif a.average is not None or b.average is not None:
        b_better = a.average is None or (b.average is not None and b.average > a.average)
        preferred.append((tool_b, b.high[0]) if b_better else (tool_a, a.high[0]))
    for tool, reviewer in [*preferred, (tool_a, None), (tool_b, None)]:
        for review in tool.reviews:
            if reviewer in (None, review.reviewer) and review.text.strip():
                return Quote(_first_sentence(review.text, limit), review.reviewer, tool.name)
    return None
