"""The rendered issue: well-formed HTML and readable text, every comparison present, nothing
left of the template languages, placeholders intact and fillable, escaping, and the size budget."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import replace
from html.parser import HTMLParser

import pytest

from digest.edition.personalize import (NAME, PREFERENCES_URL, SplitTemplate, UNSUBSCRIBE_URL,
                                        VIEW_URL, VOTE_URL)
from digest.edition.render import (BUDGET_BYTES, RenderError, card_view, largest_fitting,
                                   mark_repeats, measured_size, render_issue, safe_url)
from digest.settings import load_settings
from digest.edition.summaries import verdict_line
from digest.edition.weeks import Edition
from factories import UTC, make_comparison, make_tool, sample_comparisons

EDITION = Edition(2026, 47)
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}
# What a real subscriber's values look like: a signed token in the URL, an address with `&`.
LONG_UNSUBSCRIBE = "https://digest.example.test/u/" + "8412." + "6740b3f1." + "Qx" * 60
SUBSCRIBER = {UNSUBSCRIBE_URL: LONG_UNSUBSCRIBE,
              VIEW_URL: "https://digest.example.test/issues/2026-W47?for=8412&t=abc",
              VOTE_URL: "https://digest.example.test/vote/8412-3.6740b3f1.Qx&y",
              PREFERENCES_URL: "https://digest.example.test/p/8412.6740b3f1.Qx",
              NAME: "Zoë O'Brien & co"}


@pytest.fixture(scope="module")
def conf():
    # Plain links, so the destinations can be checked in the markup (tests/web/test_redirect.py
    # covers the counted ones).
    return load_settings(base_url="https://digest.example.test", timezone="Europe/Berlin",
                         postal_address="Verdict Digest, 1 Example Street, 10115 Berlin",
                         click_tracking="off")


def render(comparisons, conf):
    return render_issue(comparisons, edition=EDITION, window=EDITION.window(conf.tz), settings=conf)


class Document(HTMLParser):
    """Parses a page and insists that every element is closed in order (void ones excepted)."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.chunks: list[str] = []
        self._open: list[str] = []
        self._skip = 0
        self.feed(html)
        self.close()
        assert not self._open, f"unclosed elements: {self._open}"

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))
        if tag not in VOID:
            self._open.append(tag)
        if tag in ("style", "title"):
            self._skip += 1

    def handle_startendtag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        assert self._open and self._open[-1] == tag, f"</{tag}> closes <{self._open[-1:]}>"
        self._open.pop()
        if tag in ("style", "title"):
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip:
            self.chunks.append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.chunks).split())

    def hrefs(self) -> list[str]:
        return [a["href"] for tag, a in self.elements if tag == "a" and a.get("href")]

    def find(self, tag: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.elements if t == tag]


def squash(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("n", [1, 6, 12, 40])
def test_issue_renders_every_comparison_under_budget(conf, n):
    comparisons = sample_comparisons(n)
    issue = render(comparisons, conf)
    doc = Document(issue.html)
    text = squash(issue.text)

    assert issue.measured_bytes <= BUDGET_BYTES
    html, plain = SplitTemplate(issue.html, escape_html=True).fill(SUBSCRIBER), \
        SplitTemplate(issue.text, escape_html=False).fill(SUBSCRIBER)
    assert len(html.encode()) <= BUDGET_BYTES  # still under once real values are in
    if n <= 12:
        assert issue.shown == n and issue.listed == 0  # a dozen fit in full
        assert "listed with links" not in doc.text
    for i, comparison in enumerate(comparisons):
        names = (comparison.tool_a.name, comparison.tool_b.name)
        for part in (doc.text, text):
            assert f"{names[0]} vs {names[1]}" in part
        if i < issue.shown:
            for part in (doc.text, text):
                assert verdict_line(comparison) in part
                assert names[0] in part and names[1] in part
        else:
            assert comparison.url in doc.hrefs() and comparison.url in text
    for part in (html, plain):
        assert "%%" not in part
        for leftover in ("{{", "{%", "{#", "<mj-", "</mj-"):  # Jinja or MJML left unrendered
            assert leftover not in part
    assert LONG_UNSUBSCRIBE in doc.hrefs() or LONG_UNSUBSCRIBE in Document(html).hrefs()
    assert f"Unsubscribe: {LONG_UNSUBSCRIBE}" in plain


def test_forty_comparisons_show_the_ones_that_fit_and_list_the_rest(conf):
    issue = render(sample_comparisons(40), conf)
    assert 6 <= issue.shown < 40 and issue.listed == 40 - issue.shown
    notice = (f"This issue shows {issue.shown} of 40 comparisons in full. "
              f"The other {issue.listed} are listed with links at the end")
    assert notice in Document(issue.html).text
    assert notice in squash(issue.text)
    assert f"{issue.listed} more verdicts this week" in Document(issue.html).text
    assert f"{issue.listed} more verdicts this week" in issue.text
    # The cut is the largest that fits: one more card in full would not.
    one_more = render_issue(sample_comparisons(issue.shown + 1), edition=EDITION,
                            window=EDITION.window(conf.tz), settings=conf,
                            budget=issue.measured_bytes)
    assert one_more.shown == issue.shown


def test_placeholders_survive_the_inliner_inside_href(conf):
    issue = render(sample_comparisons(2), conf)
    doc = Document(issue.html)
    assert doc.hrefs().count(UNSUBSCRIBE_URL) == 1
    # "View in browser" is the public archive page, the same for everyone: no placeholder.
    assert doc.hrefs().count(f"{conf.base_url}/archive/2026-W47") == 2  # top and footer
    assert VIEW_URL not in issue.html
    # Each tool asks "Would you ship it?" with the reader's own vote links.
    assert doc.hrefs().count(f"{VOTE_URL}/tool-0/ship") == 1
    assert doc.hrefs().count(f"{VOTE_URL}/tool-1/skip") == 1
    assert 'href="%%UNSUBSCRIBE_URL%%"' in issue.html
    filled = Document(SplitTemplate(issue.html, escape_html=True).fill(SUBSCRIBER))
    assert SUBSCRIBER[UNSUBSCRIBE_URL] in filled.hrefs()
    # the `&` came back intact through escaping
    assert SUBSCRIBER[VOTE_URL] + "/tool-0/ship" in filled.hrefs()


def test_email_conventions(conf):
    issue = render(sample_comparisons(3), conf)
    doc = Document(issue.html)
    assert issue.html.lower().startswith("<!doctype html>")
    assert doc.find("html")[0]["lang"] == "en"
    metas = {m.get("name"): m.get("content") for m in doc.find("meta")}
    assert metas["color-scheme"] == "light dark"
    assert metas["viewport"].startswith("width=device-width")
    assert re.search(r"@media \(prefers-color-scheme:\s*dark\)", issue.html)
    assert "!important" in issue.html  # dark mode beats the header's inline colours
    assert "max-width:600px" in issue.html
    preheader = next(d for d in doc.find("div") if d.get("class") == "preheader")
    assert "display:none" in preheader["style"] and "color" not in preheader["style"]
    assert issue.preheader in doc.text
    assert doc.find("title")
    assert all(img.get("alt") is not None for img in doc.find("img"))
    assert not doc.find("link") and not doc.find("script") and "@import" not in issue.html
    assert not re.search(r'src="https?:', issue.html)  # nothing to fetch from the network
    # The score bars only draw the average printed above each: screen readers skip them.
    bars = [t for t in doc.find("table") if t.get("class") == "bar"]
    assert len(bars) == 6 and all(b.get("aria-hidden") == "true" for b in bars)
    assert doc.text.count("/ 100 average") == 6
    # The look is in <head> once: an element's inline style is the exception, not the rule.
    body = issue.html[issue.html.index("<body"):]
    assert body.count(' style="') < 40, "styles inlined per element again"
    assert conf.postal_address in doc.text and conf.postal_address in issue.text
    assert "16–22 November 2026" in doc.text and "Week 47, 2026" in doc.text


def test_plain_text_is_written_for_reading(conf):
    issue = render(sample_comparisons(3), conf)
    lines = issue.text.splitlines()
    assert lines[0] == conf.site_name
    assert "<" not in issue.text.replace("<script>", "")
    assert "1. Quillmark vs Parsec Notes" in lines
    for line in lines:
        assert len(line) <= 76 or "http" in line, line
    assert "Average " in issue.text and "Full comparison: https://" in issue.text


NASTY_NAME = '<script>alert("x")</script> & Co 🚀'
NASTY_TAGLINE = '"Best" & \'only\' <b>bold</b> tool 🎉'
NASTY_REVIEW = '<img src=x onerror=alert(1)> “Quoted” & fair, with an emoji 🤖 inside a sentence.'
NASTY_URL = 'https://verdicts.example.test/compare/a?x=1&y="2"'


def test_hostile_text_comes_out_escaped_and_intact(conf):
    a = make_tool("evil", NASTY_NAME, tagline=NASTY_TAGLINE, category="A & B <i>",
                  pricing="$5 & up <u>", texts=(NASTY_REVIEW,) * 4, scores=(90, 40, 85, 88))
    b = make_tool("plain", "Plain Tool")
    comparison = make_comparison(a, b, published_at=dt.datetime(2026, 11, 18, tzinfo=UTC),
                                 url=NASTY_URL, slug="evil-vs-plain")
    issue = render([comparison], conf)
    doc = Document(issue.html)

    assert not doc.find("script") and not doc.find("img") and not doc.find("u") and not doc.find("i")
    assert [t for t, _ in doc.elements].count("b") == [t for t, _ in Document(
        render([make_comparison(make_tool("x", "X"), make_tool("y", "Y"),
                                published_at=dt.datetime(2026, 11, 18, tzinfo=UTC))], conf).html
    ).elements].count("b")  # no <b> smuggled in by the tagline
    for raw in (NASTY_NAME, NASTY_TAGLINE, "$5 & up <u>", "A & B <i>",
                "“Quoted” & fair, with an emoji 🤖 inside a sentence."):
        assert raw in doc.text, raw
        assert raw in squash(issue.text), raw
    assert NASTY_URL in doc.hrefs() and NASTY_URL in issue.text
    assert "&lt;script&gt;" in issue.html and "<script>" not in issue.html
    assert NASTY_NAME in issue.subject  # the subject is plain text; headers encode it
    for part in (issue.html, issue.text):
        assert "🚀" in part and "🎉" in part and "🤖" in part


def test_unsafe_links_are_not_linked(conf):
    comparison = make_comparison(make_tool("a", "A"), make_tool("b", "B"),
                                 published_at=dt.datetime(2026, 11, 18, tzinfo=UTC),
                                 url="javascript:alert(1)")
    issue = render([comparison], conf)
    assert "javascript:" not in issue.html and "javascript:" not in issue.text
    assert safe_url(" https://x.test/a ") == "https://x.test/a"
    assert safe_url("/relative") is None and safe_url("") is None and safe_url(None) is None


def test_quote_only_tools_render_without_scores(conf):
    none4 = (None, None, None, None)
    comparison = make_comparison(make_tool("a", "A", scores=none4), make_tool("b", "B", scores=none4),
                                 published_at=dt.datetime(2026, 11, 18, tzinfo=UTC))
    issue = render([comparison], conf)
    doc = Document(issue.html)
    assert doc.text.count("Quote-only review: no scores published.") == 2
    assert not [t for t in doc.find("table") if t.get("class") == "bar"]
    assert issue.text.count("Quote-only review: no scores published.") == 2


@pytest.mark.parametrize("sizes, budget, expected, probes", [
    ([10, 20, 30, 40], 100, 3, 1),  # everything fits: one render
    ([10, 20, 30, 40], 25, 1, 4),
    ([10, 20, 30, 40], 10, 0, 3),
    # Sizes that grow almost linearly (as cards do): the interpolated guess lands next to the cut.
    (list(range(1000, 1000 + 41 * 7000, 7000)), 102_400, 14, 4),
    ([1000 + 7000 * k + (k * 37) % 500 for k in range(41)], 102_400, 14, 4),
    # Far from linear: interpolation stalls, bisection takes over.
    ([10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 90], 15, 5, 6),
    ([0] * 30 + [1000] * 11, 500, 29, 9),
    # Many comparisons: the search starts at 16 instead of rendering all 40 first.
    ([1000 + 7000 * k for k in range(41)], 102_400, 14, 4),
    ([1000 + 5000 * k for k in range(41)], 102_400, 20, 5),
    ([1000 + 2000 * k for k in range(41)], 102_400, 40, 2),
])
def test_largest_fitting_finds_the_cut_in_few_measurements(sizes, budget, expected, probes):
    measured: list[int] = []

    def size_of(count):
        measured.append(count)
        return sizes[count]

    assert largest_fitting(len(sizes) - 1, size_of, budget) == expected
    assert len(measured) == len(set(measured)) <= probes


def test_largest_fitting_refuses_when_nothing_fits():
    with pytest.raises(RenderError, match="even with no comparison shown in full"):
        largest_fitting(3, lambda count: 500 + count, 100)


def test_measured_size_counts_placeholders_at_their_longest():
    assert measured_size("abc") == 3
    assert measured_size(f"<a href=\"{UNSUBSCRIBE_URL}\">") > len(f"<a href=\"{UNSUBSCRIBE_URL}\">") + 300


def test_nothing_to_render_is_an_error(conf):
    with pytest.raises(RenderError, match="no comparisons"):
        render([], conf)


def test_reader_link_allowance_covers_the_longest_real_link():
    """Vote and preference links are allowed the base URL plus LINK_TOKEN_MAX: the longest
    links the signer can make (ids at their largest) must fit, for any base URL."""
    from digest.edition.personalize import PREFERENCES_URL, VOTE_URL
    from digest.edition.render import token_allowance
    from subscribers.links import Links
    from subscribers.tokens import Signer

    for base in ("https://a.example", "https://newsletter.example.com/" + "deep/" * 10):
        links = Links(base, Signer(b"k" * 32, clock=lambda: 2**32 - 1))
        allowance = token_allowance(base)
        vote = links.vote(2**31 - 1, 2**31 - 1, "someone.with.a.long.address@example.com")
        prefs = links.preferences(2**31 - 1, "someone.with.a.long.address@example.com")
        assert len(vote) <= allowance[VOTE_URL] and len(prefs) <= allowance[PREFERENCES_URL]
    document = f'<a href="{VOTE_URL}/tool/ship">'
    assert measured_size(document, "https://a.example") < measured_size(document)


def _section(text: str, heading: str) -> str:
    """The plain-text part from `heading` up to the next comparison's heading (or the end)."""
    start = text.index(heading)
    following = re.search(r"\n\n\n\d+\. ", text[start:])
    return text[start:start + following.start()] if following else text[start:]


def test_a_repeated_tool_is_printed_short_with_a_pointer_back(conf):
    """A tool compared twice in one week is described in full once; the second time the
    plain-text part gives its verdict, average and vote link and points back, and the card
    keeps its verdict, average and vote buttons with a pointer instead of the details."""
    first = make_tool("quillmark", "Quillmark", tagline="Notes that write their own outline",
                      pricing="Nine dollars a month, billed yearly")
    other = make_tool("parsec", "Parsec Notes", verdict="skip", ship=1, skip=3,
                      scores=(52, 41, 58, 49), tagline="A notebook for the whole team")
    third = make_tool("ledgerly", "Ledgerly", tagline="Receipts read and filed for you")
    day = dt.datetime(2026, 11, 18, tzinfo=UTC)
    issue = render([make_comparison(first, other, published_at=day),
                    make_comparison(third, first, published_at=day + dt.timedelta(hours=1))],
                   conf)

    full, again = _section(issue.text, "1. Quillmark"), _section(issue.text, "2. Ledgerly")
    # The first appearance keeps everything.
    assert "Notes that write their own outline" in full and "Pricing: Nine dollars" in full
    assert "Builder 82 ship" in full and "No community votes yet" in full
    # The repeat: name and verdict line, its average, the pointer, and its own vote link.
    lines = again.splitlines()
    at = lines.index("Quillmark: SHIP (panel 4 ship · 0 skip)")
    assert lines[at + 1] == "Average 80.8/100 (described under 1 above)"
    assert lines[at + 2] == f"Would you ship it? {VOTE_URL}/quillmark"
    assert "Notes that write their own outline" not in again and "Nine dollars" not in again
    assert issue.text.count("Notes that write their own outline") == 1
    # The other tool in the second comparison is new, so it is printed in full.
    assert "Receipts read and filed for you" in again and "Pricing: " in again

    doc = Document(issue.html)
    assert doc.text.count("Notes that write their own outline") == 1
    assert doc.text.count("Nine dollars a month, billed yearly") == 1
    assert "Described under comparison 1 above." in doc.text
    # Both cards still offer the vote, each link named by what it does (label in name).
    for answer, verdict in (("Yes", "ship"), ("No", "skip")):
        links = [attrs for tag, attrs in doc.elements if tag == "a"
                 and attrs.get("href") == f"{VOTE_URL}/quillmark/{verdict}"]
        assert len(links) == 2
        assert all(a["aria-label"] == f"{answer}, {verdict} Quillmark" for a in links)


def test_a_quote_printed_once_is_not_printed_again():
    """The demo week picks the same reviewer's line for a tool in two comparisons: the second
    card leaves it out, and a card with a quote of its own keeps it."""
    day = dt.datetime(2026, 11, 18, tzinfo=UTC)
    a, b, c = make_tool("quillmark", "Quillmark"), make_tool("parsec"), make_tool("ledgerly")
    cards = [replace(card_view(comparison, number), quote_text=text, quote_by="Skeptic on Quillmark")
             for number, (comparison, text) in enumerate([
                 (make_comparison(a, b, published_at=day), "Outlines are the easy part."),
                 (make_comparison(b, a, published_at=day), "Outlines are the easy part."),
                 (make_comparison(c, a, published_at=day), "A different line.")], 1)]
    marked = mark_repeats(cards)
    assert [card.quote_text for card in marked] == ["Outlines are the easy part.", None,
                                                    "A different line."]
    assert marked[1].quote_by is None
    assert [[tool.described_in for tool in card.tools] for card in marked] == [
        [None, None], [1, 1], [None, 1]]
