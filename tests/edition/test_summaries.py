"""Verdict lines, the headline and the quote: exact words for every shape the data takes."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from digest.edition.summaries import (Quote, count_issue, fmt_score, headline, pick_quote, tool_stats,
                              trim_words, verdict_line)
from factories import UTC, make_comparison, make_tool

WHEN = dt.datetime(2026, 11, 17, 10, tzinfo=UTC)
NONE4 = (None, None, None, None)


def pair(a, b):
    return make_comparison(a, b, published_at=WHEN)


def tool(slug, name, **kw):
    return make_tool(slug, name, **kw)


VERDICT_CASES = {
    "both ship, one higher, disagreement": (
        tool("a", "Alpha", scores=(80, 82, 84, 86)),
        tool("b", "Beta", ship=3, skip=1, scores=(70, 75, 80, 85)),
        "Both ship (panel 4–0 and 3–1). Alpha scores higher on average, 83 to 77.5 "
        "(+5.5 points). Reviewers disagree most on Beta: Builder gives 70, Designer 85."),
    "only one ships": (
        tool("a", "Alpha", verdict="skip", ship=1, skip=3, scores=(50, 60, 55, 58)),
        tool("b", "Beta", scores=(90, 60, 88, 91)),
        "Only Beta ships 4–0; the panel skips Alpha 1–3. Beta scores higher on average, "
        "82.3 to 55.8 (+26.5 points). Reviewers disagree most on Beta: Skeptic gives 60, "
        "Designer 91."),
    "all skip": (
        tool("a", "Alpha", verdict="skip", ship=0, skip=4, scores=(40, 45, 42, 41)),
        tool("b", "Beta", verdict="skip", ship=1, skip=3, scores=(50, 52, 51, 49)),
        "Neither ships: the panel skips both (panel 0–4 and 1–3). Beta scores higher on "
        "average, 50.5 to 42 (+8.5 points). The reviewers broadly agree: no tool's scores "
        "are more than 5 points apart."),
    "tie on average": (
        tool("a", "Alpha", scores=(80, 80, 80, 80)),
        tool("b", "Beta", scores=(74, 86, 79, 81)),
        "Both ship (panel 4–0 and 4–0). They tie on average score at 80. Reviewers disagree "
        "most on Beta: Builder gives 74, Skeptic 86."),
    "tie in spread names the first tool": (
        tool("a", "Alpha", scores=(70, 80)),
        tool("b", "Beta", scores=(60, 70)),
        "Both ship (panel 4–0 and 4–0). Alpha scores higher on average, 75 to 65 "
        "(+10 points). Reviewers disagree most on Alpha: Builder gives 70, Skeptic 80."),
    "quote-only, no scores at all": (
        tool("a", "Alpha", scores=NONE4),
        tool("b", "Beta", verdict="skip", ship=0, skip=4, scores=NONE4),
        "Only Alpha ships 4–0; the panel skips Beta 0–4. No reviewer scores were published "
        "for this pair: the quotes carry the verdict."),
    "one side quote-only": (
        tool("a", "Alpha", scores=(None, None)),
        tool("b", "Beta", scores=(82, 83, 82, 82)),
        "Both ship (panel 4–0 and 4–0). Only Beta has reviewer scores (average 82.3); Alpha "
        "is quote-only. The reviewers broadly agree: no tool's scores are more than 5 points "
        "apart."),
    "one panel verdict missing": (
        tool("a", "Alpha", verdict=None, ship=0, skip=0, scores=(81,)),
        tool("b", "Beta", scores=(80,)),
        "Beta ships (4–0); Alpha has no panel verdict yet. Alpha scores higher on average, "
        "81 to 80 (+1 point)."),
    "no panel verdicts": (
        tool("a", "Alpha", verdict=None, ship=0, skip=0, scores=NONE4),
        tool("b", "Beta", verdict=None, ship=0, skip=0, scores=NONE4),
        "No panel verdict yet for either tool. No reviewer scores were published for this "
        "pair: the quotes carry the verdict."),
    "rounds half up and subtracts what it prints": (
        tool("a", "Alpha", scores=(82, 82, 82, 83)),  # 82.25
        tool("b", "Beta", scores=(80, 81, 81)),  # 80.666...
        "Both ship (panel 4–0 and 4–0). Alpha scores higher on average, 82.3 to 80.7 "
        "(+1.6 points). The reviewers broadly agree: no tool's scores are more than 5 points "
        "apart."),
    "averages equal once printed are a tie": (
        tool("a", "Alpha", scores=(82, 82, 82, 83)),  # 82.25 -> 82.3
        tool("b", "Beta", scores=(82, 82, 83)),  # 82.33 -> 82.3
        "Both ship (panel 4–0 and 4–0). They tie on average score at 82.3. The reviewers "
        "broadly agree: no tool's scores are more than 5 points apart."),
}


@pytest.mark.parametrize("a, b, expected", VERDICT_CASES.values(), ids=VERDICT_CASES.keys())
def test_verdict_line(a, b, expected):
    assert verdict_line(pair(a, b)) == expected


def test_verdict_line_is_deterministic_and_needs_both_tools():
    comparison = pair(tool("a", "Alpha"), tool("b", "Beta", scores=(60, 90, 75, 70)))
    assert len({verdict_line(comparison) for _ in range(5)}) == 1
    comparison.tool_b = None
    with pytest.raises(ValueError, match="both tools"):
        verdict_line(comparison)


HEADLINE_CASES = {
    "nothing": ([], "No new comparisons this week."),
    "one comparison, both ship": (
        [("a", "ship", "b", "ship")], "1 comparison this week covering 2 tools: the panel ships both."),
    "all ship": (
        [("a", "ship", "b", "ship"), ("c", "ship", "d", "ship")],
        "2 comparisons this week covering 4 tools: the panel ships all of them."),
    "all skip": (
        [("a", "skip", "b", "skip")],
        "1 comparison this week covering 2 tools, and the panel skips every one of them."),
    "mixed": (
        [("a", "ship", "b", "skip"), ("c", "ship", "d", "ship")],
        "2 comparisons this week covering 4 tools: 3 ship, 1 skip."),
    "a tool in two comparisons counts once": (
        [("a", "ship", "b", "skip"), ("a", "ship", "c", "skip")],
        "2 comparisons this week covering 3 tools: 1 ship, 2 skip."),
    "undecided tools": (
        [("a", "ship", "b", None), ("c", None, "d", "skip")],
        "2 comparisons this week covering 4 tools: 1 ship, 1 skip, 2 without a panel verdict yet."),
}


@pytest.mark.parametrize("rows, expected", HEADLINE_CASES.values(), ids=HEADLINE_CASES.keys())
def test_headline(rows, expected):
    made: dict[str, object] = {}

    def get(slug, verdict):
        return made.setdefault(slug, tool(slug, slug.upper(), verdict=verdict,
                                          ship=4 if verdict == "ship" else 0,
                                          skip=4 if verdict == "skip" else 0))

    comparisons = [pair(get(a, va), get(b, vb)) for a, va, b, vb in rows]
    assert headline(comparisons) == expected


def test_count_issue():
    a, b, c = tool("a", "A"), tool("b", "B", verdict="skip"), tool("c", "C", verdict=None)
    counts = count_issue([pair(a, b), pair(a, c)])
    assert (counts.comparisons, counts.tools, counts.ship, counts.skip, counts.undecided) == (2, 3, 1, 1, 1)


@pytest.mark.parametrize("value, text", [
    (82, "82"), (Decimal("82.25"), "82.3"), (Decimal("82.35"), "82.4"), (Decimal("82.05"), "82.1"),
    (Decimal("82.04"), "82"), (Decimal(0), "0"), (Decimal("99.95"), "100"),
])
def test_fmt_score_rounds_half_up(value, text):
    assert fmt_score(value) == text


def test_tool_stats_ignore_missing_scores():
    stats = tool_stats(tool("a", "A", scores=(90, None, 70, None)))
    assert stats.average == 80 and stats.spread == 20
    assert stats.low == ("Operator", 70) and stats.high == ("Builder", 90)
    assert tool_stats(tool("b", "B", scores=NONE4)).average is None


@pytest.mark.parametrize("text, limit, expected", [
    ("short enough", 20, "short enough"),
    ("one two three four five", 12, "one two…"),
    ("one two, three four", 10, "one two…"),  # no dangling comma before the ellipsis
    ("  spaced   out\n text  ", 40, "spaced out text"),
    ("Supercalifragilistic", 10, "Supercalif…"),  # one word longer than the limit
    ("ends at a sentence. And more words follow here", 20, "ends at a sentence…"),
])
def test_trim_words_cuts_at_a_word_boundary(text, limit, expected):
    assert trim_words(text, limit) == expected


QUOTE_TEXTS = ("Builder thinks this is the clearest pricing in the category by far. More.",
               "Skeptic worries the export format locks teams in for good. More text.",
               "Operator liked the setup, which took ten minutes end to end. More.",
               "Designer found the interface calm and the defaults sensible. More.")


@pytest.mark.parametrize("a, b, expected", [
    # Reviewers disagree on Beta: the lowest scorer there speaks.
    (dict(scores=(80, 81, 82, 83)), dict(scores=(90, 55, 88, 91)),
     Quote("Skeptic worries the export format locks teams in for good.", "Skeptic", "Beta")),
    # They agree: the top scorer of the better tool speaks.
    (dict(scores=(80, 81, 82, 83)), dict(scores=(70, 71, 72, 73)),
     Quote("Designer found the interface calm and the defaults sensible.", "Designer", "Alpha")),
    (dict(scores=(None, None)), dict(scores=(70, 74, 72, 73)),
     Quote("Skeptic worries the export format locks teams in for good.", "Skeptic", "Beta")),
    # Quote-only: the first review with text.
    (dict(scores=NONE4), dict(scores=NONE4),
     Quote("Builder thinks this is the clearest pricing in the category by far.", "Builder", "Alpha")),
])
def test_pick_quote(a, b, expected):
    comparison = pair(tool("a", "Alpha", texts=QUOTE_TEXTS, **a), tool("b", "Beta", texts=QUOTE_TEXTS, **b))
    assert pick_quote(comparison) == expected


def test_pick_quote_falls_back_when_the_wanted_review_has_no_text():
    a = tool("a", "Alpha", scores=(80, 81, 82, 83), texts=("", "", "", ""))
    b = tool("b", "Beta", scores=(70, 71, 72, 73), texts=("", "Only words here, from a skeptic of it.", "", ""))
    assert pick_quote(pair(a, b)) == Quote("Only words here, from a skeptic of it.", "Skeptic", "Beta")
    silent = tool("c", "Gamma", texts=("", "", "", ""))
    assert pick_quote(pair(silent, tool("d", "Delta", texts=("", "", "", "")))) is None


def test_long_quotes_are_cut_at_a_word_boundary():
    long_text = "word " * 80
    quote = pick_quote(pair(tool("a", "A", texts=(long_text,) * 4), tool("b", "B")), limit=50)
    assert quote is not None and quote.text.endswith("word…") and len(quote.text) <= 51
