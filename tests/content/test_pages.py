"""The comparison page-text parser: both page layouts, variations, errors with lines, fuzzing.

Runs on the repository's own fixture pages (`tests/fixtures/pages/`); the site's original pages
are checked separately in `test_seed_pages.py` when they are available."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from hypothesis import given, settings, strategies as st
from material import QUOTES_PAGE, SCORECARD_PAGE, fixture_text

from digest.content.comparison import ComparisonIn
from digest.errors import ContentImportError
from digest.content.pages import PERSONAS, looks_like_page, parse_page

PAGE_TEXTS = {p.name: fixture_text(p) for p in (SCORECARD_PAGE, QUOTES_PAGE)}


@pytest.fixture
def scorecard_text() -> str:
    return PAGE_TEXTS[SCORECARD_PAGE.name]


@pytest.fixture
def quotes_text() -> str:
    return PAGE_TEXTS[QUOTES_PAGE.name]


def _line_of(text: str, needle: str, nth: int = 0) -> int:
    """1-based line number of the nth occurrence of needle."""
    pos = -1
    for _ in range(nth + 1):
        pos = text.index(needle, pos + 1)
    return text.count("\n", 0, pos) + 1


def _error(text: str, source: str = "page.txt") -> ContentImportError:
    with pytest.raises(ContentImportError) as info:
        parse_page(text, source=source)
    assert info.value.path == source
    return info.value


# A page written for these tests in the scorecard layout (fictional tools), to vary freely.
OWN_SCORECARD = """\
Compare/Quillmate vs Inkwell Pro

AI tool comparison

Quillmate vs Inkwell Pro

Two writing assistants, side by side.

Q

Writing Tools

Quillmate

Drafts meeting notes from your calendar

Ship

75%

Panel ship

12 votes

Community

Freemium

Entry

Quillmate joins your calls and drafts the notes.

It files them by project afterwards.

I

Writing Tools

Inkwell Pro

Long-form editor with a style checker

Skip

25%

Panel ship

Community

Paid

Entry

Inkwell Pro is a desktop editor for long documents.

Decision
Quillmate
Inkwell Pro
Panel verdict
Ship · 3 ship / 1 skip
Skip · 1 ship / 3 skip
Community
12 votes
No community votes yet
Pricing
Free tier; $8 per seat a month
$20 a month, billed yearly
Best for
Teams who meet a lot
Solo authors of long texts
Category
Writing Tools
Writing Tools

Reviewer scorecard

Builder
71/100 · ship

Quillmate builder notes.

64/100 · skip

Inkwell builder notes, first paragraph.

Inkwell builder notes, second paragraph.

Skeptic
58/100 · skip

Quillmate skeptic notes.

40/100 · skip

Inkwell skeptic notes.

Founder
80/100 · ship

Quillmate founder notes.

66/100 · ship

Inkwell founder notes.

Futurist
77/100 · ship

Quillmate futurist notes.

45/100 · skip

Inkwell futurist notes.

Weekly AI Tool Verdicts

Get the next comparison in your inbox

Bookmarks

No bookmarks yet
"""


def _own_quotes(share_a: str = "75%", share_b: str = "25%", pairs: int = 4,
                community_a: str = "12 votes") -> str:
    """The same fictional comparison in the quote-only layout."""
    quotes = []
    for p in range(pairs):
        quotes += [f"“Quillmate review {p}.”", f"“Inkwell review {p}.”"]
    return "\n".join([
        "AI tool comparison", "Quillmate vs Inkwell Pro", "Two writing assistants, side by side.",
        "Writing Tools", "Quillmate", "Drafts meeting notes from your calendar",
        share_a, "Panel ship", community_a, "Community", "Freemium", "Entry",
        "Quillmate joins your calls and drafts the notes.",
        "Writing Tools", "Inkwell Pro", "Long-form editor with a style checker",
        share_b, "Panel ship", "—", "Community", "Paid", "Entry",
        "Inkwell Pro is a desktop editor for long documents.",
        "Reviewer scorecard", *quotes,
        "Weekly AI Tool Verdicts", "Get the next comparison in your inbox",
    ])


# -- the fixture pages -----------------------------------------------------------------------


def test_scorecard_page_tools(scorecard_text):
    page = parse_page(scorecard_text, source=SCORECARD_PAGE.name)
    assert page.slug == "murmur-notes-vs-draft-dash"
    assert page.url == "" and page.published_at is None
    a, b = page.tools
    # `&` in a name is kept in the name and dropped from the slug
    assert (a.name, a.slug, b.name, b.slug) == (
        "Murmur Notes", "murmur-notes", "Draft & Dash", "draft-dash")
    assert (a.category, b.category) == ("Productivity", "Writing")
    assert a.tagline == "Voice memos in, tidy meeting notes out 🎙️"
    assert b.tagline == "Writes your first pass & trims the second"
    assert a.best_for == "Teams that meet a lot & forget what they agreed"
    assert b.best_for == "Newsletter writers with a fixed weekly slot"
    assert (a.entry, b.entry) == ("Freemium", "Paid")
    assert a.pricing == "Free up to 5 hours a month; Pro $9/month per seat"
    assert b.pricing == "$24/month, or $240/year — no free tier"
    # the Decision table's counts, its "1,204 votes" and its "No community votes yet"
    assert (a.panel.verdict, a.panel.ship, a.panel.skip) == ("ship", 3, 1)
    assert (b.panel.verdict, b.panel.ship, b.panel.skip) == ("skip", 1, 3)
    assert (a.community.votes, b.community.votes) == (1204, None)
    assert a.description.startswith("Murmur Notes records a call or a voice memo")
    assert "\n\nThe free plan covers five hours" in a.description  # two paragraphs
    assert a.description.endswith("adds speaker labels.")
    assert b.description.startswith("Draft & Dash is a writing assistant")
    assert b.description.endswith("flags claims that need a source.")


def test_scorecard_page_reviews(scorecard_text):
    a, b = parse_page(scorecard_text).tools
    assert [(r.reviewer, r.score, r.verdict) for r in a.reviews] == [
        ("Builder", 84, "ship"), ("Skeptic", 58, "skip"), ("Founder", 79, "ship"),
        ("Futurist", 81, "ship")]
    assert [(r.reviewer, r.score, r.verdict) for r in b.reviews] == [
        ("Builder", 61, "skip"), ("Skeptic", 44, "skip"), ("Founder", 72, "ship"),
        ("Futurist", 55, "skip")]
    starts_ends = {
        (0, "Builder"): ("The core loop is right:", "change how it meets."),
        (0, "Futurist"): ("Meetings are turning into data,",
                          "rather than a transcription service."),
        (1, "Skeptic"): ("The drafting half competes", "than before. Skip."),
        (1, "Futurist"): ("Writing tools are heading toward", "overtaken by one that can."),
    }
    for (t, persona), (start, end) in starts_ends.items():
        review = next(r for r in (a, b)[t].reviews if r.reviewer == persona)
        assert review.text.startswith(start) and review.text.endswith(end)
        assert "\n" not in review.text
    assert "🎙️" in a.reviews[3].text
    # a review of two paragraphs keeps both, one blank line apart
    assert b.reviews[0].text.startswith("The trimming mode is genuinely good")
    assert "what it removed.\n\nThe drafting mode is the problem." in b.reviews[0].text
    # the newsletter and bookmark boilerplate after the last review is not part of it
    assert "Bookmark" not in b.reviews[-1].text and "Weekly" not in b.reviews[-1].text


def test_quote_only_page(quotes_text):
    page = parse_page(quotes_text, source=QUOTES_PAGE.name)
    assert page.slug == "murmur-notes-vs-owlet-transcribe"
    a, b = page.tools
    assert (a.name, b.name) == ("Murmur Notes", "Owlet Transcribe")
    assert (a.category, b.category) == ("Productivity", "Productivity")
    assert b.tagline == "Offline transcription for 40 languages, on your own laptop"
    assert (a.entry, b.entry) == ("Freemium", "Free")
    assert (a.pricing, b.pricing, a.best_for, b.best_for) == ("", "", "", "")
    # "75%" panel ship over 4 reviews of unknown verdict: ship, 3 / 1; "50%": no verdict, 2 / 2
    assert (a.panel.verdict, a.panel.ship, a.panel.skip) == ("ship", 3, 1)
    assert (b.panel.verdict, b.panel.ship, b.panel.skip) == (None, 2, 2)
    for tool in (a, b):
        assert tool.community.votes is None  # "—"
        assert [r.reviewer for r in tool.reviews] == list(PERSONAS)
        assert all(r.score is None and r.verdict is None for r in tool.reviews)
        for review in tool.reviews:
            assert review.text and review.text[0] not in "“”" and review.text[-1] not in "“”"
    assert b.reviews[0].text.startswith("Everything runs on the laptop: a 1.1 GB model")
    assert b.reviews[0].text.endswith("exactly the shape a script wants.")
    # markup and `&` inside a quote are text, kept as written (escaping is the renderer's job)
    assert "the <em>whole</em> pipeline kept going" in b.reviews[1].text
    assert "one garbled speaker, & no setting fixes it." in b.reviews[1].text
    assert b.reviews[3].text.startswith("Speech models small enough for a laptop")
    assert "eighteen months ago 🦉;" in b.reviews[3].text
    assert b.reviews[3].text.endswith("exactly this kind of model.")
    assert b.description.startswith("Owlet Transcribe is an open-source desktop app")


def test_both_pages_give_the_same_shared_tool(scorecard_text, quotes_text):
    first = parse_page(scorecard_text).tools[0]
    second = parse_page(quotes_text).tools[0]
    assert first.name == second.name == "Murmur Notes"
    shared = ("slug", "name", "category", "tagline", "description", "entry", "panel")
    assert first.model_dump(include=set(shared)) == second.model_dump(include=set(shared))
    assert ([(r.reviewer, r.text) for r in first.reviews]
            == [(r.reviewer, r.text) for r in second.reviews])
    # what only one layout carries
    assert (first.community.votes, second.community.votes) == (1204, None)
    assert (first.pricing, second.pricing) == ("Free up to 5 hours a month; Pro $9/month per seat",
                                               "")


def test_looks_like_page(scorecard_text, quotes_text):
    assert looks_like_page(scorecard_text) and looks_like_page(quotes_text)
    assert looks_like_page(OWN_SCORECARD) and looks_like_page(_own_quotes())
    assert not looks_like_page('{"slug": "a-vs-b", "tools": []}')
    assert not looks_like_page('\ufeff  [{"slug": "a-vs-b"}]')
    assert not looks_like_page("")
    assert not looks_like_page("just a note\nwith two lines")


# -- variations ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [SCORECARD_PAGE, QUOTES_PAGE], ids=["scorecard", "quotes"])
def test_layout_variations_parse_the_same(path):
    text = PAGE_TEXTS[path.name]
    expected = parse_page(text).model_dump()
    lines = text.split("\n")
    footer = lines.index("Weekly AI Tool Verdicts")
    variants = {
        "crlf": text.replace("\n", "\r\n"),
        "cr": text.replace("\n", "\r"),
        "blank lines": "\n\n".join(lines) + "\n\n\n",
        "indented": "\n".join("  " + line + " \t" for line in lines),
        "bom": "\ufeff" + text,
        "footer heading only": "\n".join(lines[:footer + 1]),
        "no kicker": "\n".join(line for line in lines if line != "AI tool comparison"
                               and not line.startswith("Compare/")),
        "breadcrumb": "Compare/Murmur Notes vs X\n\n" + text,
    }
    for name, variant in variants.items():
        assert parse_page(variant).model_dump() == expected, name


def test_own_scorecard_page_skip_verdicts_votes_and_paragraphs():
    page = parse_page(OWN_SCORECARD)
    a, b = page.tools
    assert page.slug == "quillmate-vs-inkwell-pro"
    assert (a.panel.verdict, a.panel.ship, a.panel.skip) == ("ship", 3, 1)
    assert (b.panel.verdict, b.panel.ship, b.panel.skip) == ("skip", 1, 3)
    assert (a.community.votes, b.community.votes) == (12, None)
    assert (a.entry, b.entry) == ("Freemium", "Paid")
    assert a.pricing == "Free tier; $8 per seat a month"
    assert (a.best_for, b.best_for) == ("Teams who meet a lot", "Solo authors of long texts")
    assert a.description == ("Quillmate joins your calls and drafts the notes.\n\n"
                             "It files them by project afterwards.")
    assert [(r.score, r.verdict) for r in b.reviews] == [
        (64, "skip"), (40, "skip"), (66, "ship"), (45, "skip")]
    assert b.reviews[0].text == ("Inkwell builder notes, first paragraph.\n\n"
                                 "Inkwell builder notes, second paragraph.")
    assert b.reviews[-1].text == "Inkwell futurist notes."


def test_bookmarks_panel_alone_is_cut_off():
    text = OWN_SCORECARD.replace("Weekly AI Tool Verdicts\n\nGet the next comparison in your inbox\n\n",
                                 "")
    assert "Weekly" not in text
    assert parse_page(text) == parse_page(OWN_SCORECARD)


def test_short_review_paragraph_is_text_not_a_reviewer():
    text = OWN_SCORECARD.replace("Quillmate skeptic notes.", "Not convinced")
    a, b = parse_page(text).tools
    assert (a.reviews[1].reviewer, a.reviews[1].text) == ("Skeptic", "Not convinced")
    assert [r.reviewer for r in b.reviews] == list(PERSONAS)


def test_quoted_scorecard_text_loses_its_quotes():
    text = OWN_SCORECARD.replace("Quillmate founder notes.", "“Quillmate founder notes.”")
    a, _ = parse_page(text).tools
    assert a.reviews[2].text == "Quillmate founder notes."


def test_without_decision_table_counts_come_from_review_verdicts():
    start = OWN_SCORECARD.index("Decision")
    text = OWN_SCORECARD[:start] + OWN_SCORECARD[OWN_SCORECARD.index("Reviewer scorecard"):]
    a, b = parse_page(text).tools
    # card badge for the verdict, the reviews' own verdicts for the counts
    assert (a.panel.verdict, a.panel.ship, a.panel.skip) == ("ship", 3, 1)
    assert (b.panel.verdict, b.panel.ship, b.panel.skip) == ("skip", 1, 3)
    assert (a.community.votes, b.community.votes) == (12, None)
    assert (a.pricing, a.best_for, a.category) == ("", "", "Writing Tools")


def test_decision_table_only_category_fills_a_missing_card_category():
    text = OWN_SCORECARD.replace("Q\n\nWriting Tools\n\nQuillmate\n", "Quillmate\n", 1)
    a, _ = parse_page(text).tools
    assert a.category == "Writing Tools"


@pytest.mark.parametrize(("share_a", "share_b", "pairs", "expect_a", "expect_b"), [
    ("75%", "25%", 4, ("ship", 3, 1), ("skip", 1, 3)),
    ("50%", "0%", 4, (None, 2, 2), ("skip", 0, 4)),
    ("50%", "100%", 4, (None, 2, 2), ("ship", 4, 0)),
    ("63%", "37%", 4, ("ship", 3, 1), ("skip", 1, 3)),  # 2.52 and 1.48 reviews, rounded
])
def test_quote_only_panel_derived_from_share(share_a, share_b, pairs, expect_a, expect_b):
    a, b = parse_page(_own_quotes(share_a, share_b, pairs)).tools
    assert (a.panel.verdict, a.panel.ship, a.panel.skip) == expect_a
    assert (b.panel.verdict, b.panel.ship, b.panel.skip) == expect_b
    assert [r.reviewer for r in a.reviews] == list(PERSONAS[:pairs])
    assert (a.community.votes, b.community.votes) == (12, None)
    assert a.reviews[0].text == "Quillmate review 0."
    assert b.reviews[-1].text == f"Inkwell review {pairs - 1}."


def test_panel_skip_share_is_the_complement():
    a, _ = parse_page(_own_quotes().replace("75%\nPanel ship", "25%\nPanel skip")).tools
    assert (a.panel.verdict, a.panel.ship, a.panel.skip) == ("ship", 3, 1)


def test_quote_only_with_persona_headings_and_multiline_quote():
    text = _own_quotes()
    for p, persona in enumerate(["Skeptic", "Builder", "Founder", "Futurist"]):
        text = text.replace(f"“Quillmate review {p}.”", f"{persona}\n“Quillmate review {p}.”")
    text = text.replace("“Inkwell review 1.”", "“Inkwell review 1,\n\ngoing on.”")
    a, b = parse_page(text).tools
    assert [r.reviewer for r in a.reviews] == ["Skeptic", "Builder", "Founder", "Futurist"]
    assert [r.reviewer for r in b.reviews] == ["Skeptic", "Builder", "Founder", "Futurist"]
    assert b.reviews[1].text == "Inkwell review 1,\n\ngoing on."


def test_quote_only_unknown_heading_is_refused():
    text = _own_quotes().replace("“Quillmate review 1.”", "Maker\n“Quillmate review 1.”")
    err = _error(text)
    assert err.line == _line_of(text, "Maker") and "quoted review" in str(err)


def test_published_at_passes_through():
    when = dt.datetime(2026, 11, 18, 10, tzinfo=dt.timezone.utc)
    assert parse_page(OWN_SCORECARD, published_at=when).published_at == when
    err = _error_with(lambda: parse_page(OWN_SCORECARD, source="p.txt",
                                         published_at=dt.datetime(2026, 11, 18)))
    assert err.field == "published_at" and "time zone" in str(err)


def _error_with(call) -> ContentImportError:
    with pytest.raises(ContentImportError) as info:
        call()
    return info.value


# -- errors name the line --------------------------------------------------------------------


def test_score_out_of_range(scorecard_text):
    text = scorecard_text.replace("58/100 · skip", "140/100 · skip")
    err = _error(text)
    assert err.line == _line_of(text, "140/100")
    assert "score 140 is out of range 0-100" in str(err)
    assert err.field == "tools[0].reviews[1].score"
    assert str(err).startswith(f"page.txt:{err.line}")


def test_unknown_review_verdict(scorecard_text):
    text = scorecard_text.replace("55/100 · skip", "55/100 · maybe")
    err = _error(text)
    assert err.line == _line_of(text, "55/100 · maybe")
    assert "unknown verdict 'maybe'" in str(err)


def test_unknown_panel_verdict():
    text = OWN_SCORECARD.replace("Skip · 1 ship / 3 skip", "Maybe · 2 ship / 2 skip")
    err = _error(text)
    assert err.line == _line_of(text, "Maybe · 2 ship")
    assert "unknown verdict 'maybe'" in str(err)


def test_panel_share_out_of_range():
    text = OWN_SCORECARD.replace("75%", "175%")
    err = _error(text)
    assert err.line == _line_of(text, "175%") and "out of range" in str(err)


def test_page_with_only_one_tool_card(quotes_text):
    lines = quotes_text.split("\n")
    second = lines.index("Owlet Transcribe")
    text = "\n".join(lines[:second - 1] + lines[lines.index("Reviewer scorecard"):])
    err = _error(text)
    assert err.line == _line_of(text, "Reviewer scorecard")
    assert "expected a card for 'Owlet Transcribe'" in str(err)


def test_title_with_only_one_tool():
    text = "AI tool comparison\nQuillmate\nDrafts meeting notes\nPaid\nEntry\n"
    err = _error(text)
    assert err.line == 2 and "expected a title 'A vs B'" in str(err)


@pytest.mark.parametrize(("text", "line"), [
    ("", 1),
    ("\n  \n\t\n", 1),
    ("Compare/Quillmate vs Inkwell Pro\n\nAI tool comparison\n", 4),
])
def test_empty_page(text, line):
    err = _error(text)
    assert err.line == line and "expected a title 'A vs B'" in str(err)


@pytest.mark.parametrize(("text", "line"), [
    ("lorem ipsum dolor\nsit amet", 1),
    ("\n\nAI tool comparison\n\n{\"slug\": \"a-vs-b\"}\n", 5),
    ("\x00\x01\x02 }{ ][", 1),
    ("cats vs dogs\nrandom words\nmore words", 3),
])
def test_garbage(text, line):
    assert _error(text).line == line


def test_decision_table_with_wrong_columns():
    text = OWN_SCORECARD.replace("Decision\nQuillmate\nInkwell Pro",
                                 "Decision\nInkwell Pro\nQuillmate")
    err = _error(text)
    assert err.line == _line_of(text, "Decision") + 1 and "column 1" in str(err)


def test_decision_table_unknown_row():
    text = OWN_SCORECARD.replace("Best for\n", "Best fit\n")
    err = _error(text)
    assert err.line == _line_of(text, "Best fit") and "unknown Decision row" in str(err)


def test_decision_table_bad_community_value():
    text = OWN_SCORECARD.replace("Community\n12 votes\n", "Community\nlots\n")
    err = _error(text)
    assert err.line == _line_of(text, "lots") and "community votes" in str(err)


def test_unpaired_quoted_review(quotes_text):
    lines = quotes_text.split("\n")
    last = max(i for i, line in enumerate(lines) if line.startswith("“"))
    text = "\n".join(lines[:last] + lines[last + 1:])
    err = _error(text)
    assert err.line == last  # the previous quote (0-based last-1), now without a partner
    assert "no partner" in str(err)


def test_missing_reviewer_name(scorecard_text):
    text = scorecard_text.replace("Skeptic\n58/100", "58/100")
    err = _error(text)
    assert err.line == _line_of(text, "58/100") and "expected a reviewer name" in str(err)


def test_missing_score_line(scorecard_text):
    text = scorecard_text.replace("44/100 · skip\n\nThe drafting half", "The drafting half")
    err = _error(text)
    assert err.line == _line_of(text, "Skeptic") and "two score lines" in str(err)
    text = scorecard_text.replace("Futurist\n81/100 · ship\n", "Futurist\n")
    err = _error(text)
    assert err.line == _line_of(text, "Futurist") + 2
    assert "after the reviewer 'Futurist'" in str(err)


def test_duplicate_reviewer(scorecard_text):
    text = scorecard_text.replace("Founder\n79/100", "Builder\n79/100")
    err = _error(text)
    assert err.line == _line_of(text, "Builder", 1) and "appears twice" in str(err)


def test_missing_scorecard_heading(quotes_text, scorecard_text):
    text = quotes_text.replace("Reviewer scorecard\n", "")
    err = _error(text)
    assert err.line == _line_of(text, "“") and "'Reviewer scorecard' heading" in str(err)
    lines = scorecard_text.split("\n")
    closing = lines.index("Weekly AI Tool Verdicts")
    text = "\n".join(lines[:lines.index("Decision")] + lines[closing:])
    err = _error(text)
    assert err.line == _line_of(text, "Weekly AI Tool Verdicts")
    assert "'Reviewer scorecard' heading after the tool cards" in str(err)


def test_card_without_entry(quotes_text):
    text = quotes_text.replace("Freemium\nEntry\n", "")
    err = _error(text)
    assert err.line == _line_of(text, "Murmur Notes records") and "expected the entry" in str(err)


def test_stray_text_in_quotes_section():
    text = _own_quotes().replace("“Inkwell review 2.”",
                                 "an unquoted sentence.\n“Inkwell review 2.”")
    err = _error(text)
    assert err.line == _line_of(text, "an unquoted sentence.") and "quoted review" in str(err)


def test_schema_errors_are_wrapped_with_field_and_line():
    # different names, same slug: the schema refuses, the error still names line and field
    text = _own_quotes().replace("Quillmate", "Ink-Well Pro!").replace(
        "Ink-Well Pro! vs Inkwell Pro", "Ink-Well Pro! vs Ink Well Pro")
    text = text.replace("\nInkwell Pro\n", "\nInk Well Pro\n")
    err = _error(text)
    assert err.field == "tools" and err.line == 2 and "two different tools" in str(err)
    long_name = "X" * 250
    text = _own_quotes().replace("Quillmate", long_name)
    err = _error(text)
    assert err.field.startswith("tools[0]") and err.line == _line_of(text, long_name, 1)


# -- a page must be whole ---------------------------------------------------------------------


def _last_line(text: str) -> int:
    """1-based number of the last line with text on it."""
    lines = re.split(r"\r\n|\r|\n", text)
    return max(no for no, line in enumerate(lines, 1) if line.strip())


@pytest.mark.parametrize("path", [SCORECARD_PAGE, QUOTES_PAGE], ids=["scorecard", "quotes"])
def test_a_page_cut_short_is_refused_where_it_ends(path):
    """A copy that stops early (30%, 35%, ... 95% of the page) never imports as a shorter page:
    it is refused naming the line where it ends, unless only closing boilerplate is missing."""
    text = PAGE_TEXTS[path.name]
    full = parse_page(text)
    closing = text.index("Weekly AI Tool Verdicts")
    for percent in range(30, 100, 5):
        cut = text[:len(text) * percent // 100]
        try:
            page = parse_page(cut, source="cut.txt")
        except ContentImportError as exc:
            assert exc.path == "cut.txt", percent
            assert exc.line == _last_line(cut), (percent, str(exc))
            assert "ends early" in exc.reason, (percent, str(exc))
            continue
        assert len(cut) > closing, f"the page cut at {percent}% was accepted"
        assert page == full, percent


def test_the_closing_section_is_what_tells_a_whole_page():
    text = OWN_SCORECARD[:OWN_SCORECARD.index("Weekly AI Tool Verdicts")]
    err = _error(text)
    assert err.line == _last_line(text) and "ends early" in str(err)
    assert "Weekly AI Tool Verdicts" in str(err)


def test_a_missing_reviewer_is_refused(scorecard_text):
    start = scorecard_text.index("Futurist\n")
    end = scorecard_text.index("Weekly AI Tool Verdicts")
    text = scorecard_text[:start] + scorecard_text[end:]
    err = _error(text)
    assert "expected 4 reviewers" in str(err) and "found 3" in str(err)
    assert err.line == _line_of(text, "Newsletter writers are a real market")


def test_quote_only_page_needs_four_pairs():
    for pairs in (0, 1, 3, 5):
        text = _own_quotes(pairs=pairs)
        err = _error(text)
        assert "4 reviewers" in str(err) or "more than 4" in str(err), (pairs, str(err))


def test_a_score_line_needs_its_verdict(scorecard_text):
    text = scorecard_text.replace("79/100 · ship", "79/100")
    err = _error(text)
    assert err.line == _line_of(text, "79/100") and "verdict" in str(err)


def test_a_review_needs_its_text(scorecard_text):
    text = scorecard_text.replace(
        scorecard_text[scorecard_text.index("Every video-call suite"):
                       scorecard_text.index("44/100 · skip")], "")
    err = _error(text)
    assert err.line == _line_of(text, "58/100 · skip") and "no text" in str(err)
    err = _error(_own_quotes().replace("“Inkwell review 2.”", "“ ”"))
    assert err.line == _line_of(_own_quotes(), "“Inkwell review 2.”") and "no text" in str(err)


# -- nothing but ContentImportError escapes --------------------------------------------------


def _total_lines(text: str) -> int:
    return len(re.split(r"\r\n|\r|\n", text))


def _parse_or_error(text: str) -> ComparisonIn | None:
    try:
        page = parse_page(text, source="fuzz.txt")
    except ContentImportError as exc:
        assert exc.path == "fuzz.txt" and exc.line is not None
        assert 1 <= exc.line <= _total_lines(text)
        return None
    assert isinstance(page, ComparisonIn) and len(page.tools) == 2
    return page


VOCABULARY = [
    "Compare/Alpha vs Beta", "AI tool comparison", "Alpha vs Beta", "Alpha", "Beta", "A",
    "Developer Tools", "A short tagline", "Ship", "Skip", "100%", "40%", "Panel ship",
    "Panel skip", "—", "12 votes", "Community", "Paid", "Free", "Entry", "A description.",
    "Decision", "Panel verdict", "Ship · 4 ship / 0 skip", "Skip · 1 ship / 3 skip",
    "No community votes yet", "Pricing", "Best for", "Category", "Reviewer scorecard",
    "Builder", "Skeptic", "82/100 · ship", "140/100 · skip", "61/100", "“A quoted review.”",
    "“An opened quote", "ends here.”", "Weekly AI Tool Verdicts", "Bookmarks", "", "\r",
]


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_arbitrary_text_only_raises_import_errors(text):
    _parse_or_error(text)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(VOCABULARY), st.text(max_size=12)), max_size=60))
def test_page_shaped_text_only_raises_import_errors(lines):
    _parse_or_error("\n".join(lines))


def _mutate(text: str, ops) -> str:
    lines = text.split("\n")
    for kind, i, j, extra in ops:
        if not lines:
            lines = [extra]
            continue
        i, j = i % len(lines), j % len(lines)
        if kind == "delete":
            del lines[i:i + 1 + j % 3]
        elif kind == "duplicate":
            lines[i:i] = lines[i:i + 1 + j % 3]
        elif kind == "swap":
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == "shuffle":
            block = lines[min(i, j):max(i, j) + 1]
            lines[min(i, j):max(i, j) + 1] = block[::2] + block[1::2]
        else:
            lines.insert(i, extra)
    return "\n".join(lines)


OPS = st.lists(st.tuples(st.sampled_from(["delete", "duplicate", "swap", "shuffle", "insert"]),
                         st.integers(0, 10_000), st.integers(0, 10_000),
                         st.one_of(st.sampled_from(VOCABULARY), st.text(max_size=30))),
               min_size=1, max_size=5)


@pytest.mark.parametrize("name", list(PAGE_TEXTS))
@settings(max_examples=100, deadline=None)
@given(ops=OPS)
def test_mutated_fixture_pages_only_raise_import_errors(name, ops):
    _parse_or_error(_mutate(PAGE_TEXTS[name], ops))


@settings(max_examples=100, deadline=None)
@given(ops=OPS)
def test_mutated_own_pages_only_raise_import_errors(ops):
    _parse_or_error(_mutate(OWN_SCORECARD, ops))
    _parse_or_error(_mutate(_own_quotes(), ops))
