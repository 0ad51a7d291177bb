"""Renders an edition once: Jinja2 -> MJML -> responsive HTML -> inlined CSS, plus plain text.

The output carries the per-subscriber placeholder tokens of `digest.edition.personalize`, never a
subscriber's data, so one render serves the whole list. The HTML part is kept under Gmail's
clipping limit: when the comparisons do not all fit, the first ones are shown in full and the
rest are listed with links, and the email says so. The cut is found by measuring real renders.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from urllib.parse import urlsplit

import premailer
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup
from mjml import mjml2html

from digest.errors import DigestError
from digest.edition.minify import minify_email_html
from digest.outcomes.clicks import ClickSigner, redirect_path
from digest.edition.personalize import (CLICK_READER, NAME, PREFERENCES_URL, TOKENS,
                                        UNSUBSCRIBE_URL, VIEW_URL, VOTE_URL)
from digest.settings import Settings
from digest.database.models import Comparison, Tool
from digest.edition.summaries import (count_issue, fmt_score, headline, pick_quote, tool_stats,
                              trim_words, verdict_line)
from digest.edition.weeks import Edition, Window
from digest.outcomes.votes import Tally
from subscribers.preferences import category_slug

# Gmail clips an HTML part larger than this and hides everything after the cut, footer included.
BUDGET_BYTES = 102_400
# Room kept for what each token becomes per subscriber (a signed URL, an escaped name).
TOKEN_ALLOWANCE = {UNSUBSCRIBE_URL: 400, VIEW_URL: 400, VOTE_URL: 160, PREFERENCES_URL: 160,
                   NAME: 200, CLICK_READER: 40}
# The reader's vote and preference links recur per tool and per category; each is the base URL
# and a path with a token at most this long (`/vote/` + `<id>-<issue>.<tag>.<time>.<MAC>`), so
# with the base URL known their allowance is exact and a short base URL leaves room for cards.
LINK_TOKEN_MAX = 75


def token_allowance(base_url: str | None = None) -> dict[str, int]:
    if base_url is None:
        return TOKEN_ALLOWANCE
    per_link = len(base_url.encode("utf-8")) + LINK_TOKEN_MAX
    return {**TOKEN_ALLOWANCE, VOTE_URL: per_link, PREFERENCES_URL: per_link}

# Where the search for the cut starts when there are more comparisons than this (a card is
# about 3.5 KB, so about 26 fit).
FIRST_PROBE = 16
TAGLINE_LIMIT = 140
PRICING_LIMIT = 120
SUBJECT_LIMIT = 78
# Zero-width padding after the preheader, so mail apps do not pull body text into the preview.
# As characters, not entities: 7 bytes a unit in UTF-8 instead of 18.
_PREHEADER_PAD = Markup("\u034f\u200c\u00a0" * 24)

logging.getLogger("CSSUTILS").setLevel(logging.CRITICAL)  # cssutils warns about valid email CSS


class RenderError(DigestError):
    """The issue cannot be rendered within the size budget."""


def templates_root() -> Path:
    """`templates/` inside the package when installed from a wheel, else at the repository root."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "templates"
    return installed if (installed / "email").is_dir() else package.parent / "templates"


def template_dir() -> Path:
    """The email templates (MJML, text, CSS)."""
    return templates_root() / "email"


# --- view models: everything the templates show, computed here and nowhere else ---------------

@dataclass(frozen=True)
class ReviewView:
    reviewer: str
    score: str  # "82", or "—" when the page gave no score
    verdict: str  # "ship", "skip" or ""

    @property
    def label(self) -> str:
        """`Builder 82 ship`, as the plain-text part lists it."""
        return f"{self.reviewer} {self.score} {self.verdict}".rstrip()


@dataclass(frozen=True)
class ToolView:
    slug: str
    name: str
    category: str
    tagline: str
    entry: str
    pricing: str
    verdict: str  # "ship", "skip" or "none"
    verdict_label: str
    split: str  # "4 ship · 0 skip", or ""
    average: str | None
    bar: int  # width of the bar, percent
    reviews: tuple[ReviewView, ...]
    has_scores: bool
    community: str  # "12 reader votes · 75% ship", or "No community votes yet"
    # The number of the earlier comparison in this issue that shows the tool in full, when this
    # is a repeat: the plain-text part then prints it short, with a pointer back.
    described_in: int | None = None


@dataclass(frozen=True)
class CardView:
    number: int
    title: str
    url: str | None
    verdict_line: str
    quote_text: str | None
    quote_by: str | None
    tools: tuple[ToolView, ToolView]


@dataclass(frozen=True)
class LinkView:
    title: str
    url: str | None
    verdict: str


def safe_url(url: str | None) -> str | None:
    """Only absolute http(s) links go into the email; anything else (javascript:, relative,
    empty) renders as plain text."""
    if not url:
        return None
    parts = urlsplit(url.strip())
    return url.strip() if parts.scheme in ("http", "https") and parts.netloc else None


def community_line(tool: Tool, tally: Tally | None) -> str:
    """Readers' votes when there are any; else the count the comparison page published."""
    if tally is not None and tally.votes:
        return tally.label()
    if tool.community_votes:
        return f"{tool.community_votes:,} community {'vote' if tool.community_votes == 1 else 'votes'}"
    return "No community votes yet"


def tool_view(tool: Tool, tally: Tally | None = None) -> ToolView:
    stats = tool_stats(tool)
    average = stats.average
    verdict = stats.verdict if stats.verdict in ("ship", "skip") else "none"
    return ToolView(
        slug=tool.slug,
        name=tool.name,
        category=tool.category,
        tagline=trim_words(tool.tagline, TAGLINE_LIMIT),
        entry=tool.entry,
        pricing=trim_words(tool.pricing, PRICING_LIMIT),
        verdict=verdict,
        verdict_label={"ship": "Ship", "skip": "Skip"}.get(verdict, "No verdict yet"),
        split=f"{stats.ship} ship · {stats.skip} skip" if stats.ship or stats.skip else "",
        average=fmt_score(average) if average is not None else None,
        bar=int(average.quantize(Decimal(1), ROUND_HALF_UP)) if average is not None else 0,
        reviews=tuple(ReviewView(r.reviewer, "—" if r.score is None else str(r.score),
                                 r.verdict or "") for r in tool.reviews),
        has_scores=average is not None,
        community=community_line(tool, tally),
    )


def card_view(comparison: Comparison, number: int,
              votes: Mapping[int, Tally] | None = None) -> CardView:
    a, b = comparison.tool_a, comparison.tool_b
    assert a is not None and b is not None
    quote = pick_quote(comparison)
    return CardView(
        number=number,
        title=f"{a.name} vs {b.name}",
        url=safe_url(comparison.url),
        verdict_line=verdict_line(comparison),
        quote_text=quote.text if quote else None,
        quote_by=f"{quote.reviewer} on {quote.tool}" if quote else None,
        tools=(tool_view(a, (votes or {}).get(a.id)), tool_view(b, (votes or {}).get(b.id))),
    )


def mark_repeats(cards: Sequence[CardView]) -> tuple[CardView, ...]:
    """The cards with each tool that an earlier card already shows marked with that card's
    number, and a quote an earlier card already prints left out. A week often compares one
    tool more than once (and picks the same reviewer's line for it); every reader pays the
    bytes of each repeat, and its tagline, pricing, scores or quote say nothing new the
    second time."""
    first: dict[str, int] = {}
    quoted: set[tuple[str, str | None]] = set()
    marked = []
    for card in cards:
        tools = tuple(replace(tool, described_in=first[tool.slug]) if tool.slug in first
                      else tool for tool in card.tools)
        for tool in card.tools:
            first.setdefault(tool.slug, card.number)
        quote = (card.quote_text, card.quote_by) if card.quote_text else None
        repeat = quote in quoted
        if quote:
            quoted.add(quote)
        if repeat or tools != card.tools:
            card = replace(card, tools=tools,
                           **({"quote_text": None, "quote_by": None} if repeat else {}))
        marked.append(card)
    return tuple(marked)


def link_view(card: CardView) -> LinkView:
    """A comparison that did not fit, as one line: its title, link and who ships."""
    return LinkView(card.title, card.url, card.verdict_line.split(". ")[0].rstrip(".") + ".")


def subject_for(comparisons: Sequence[Comparison], edition: Edition) -> str:
    """Lead with the first matchup; fall back to a count when the names are too long."""
    n = len(comparisons)
    first = comparisons[0]
    assert first.tool_a is not None and first.tool_b is not None
    matchup = f"{first.tool_a.name} vs {first.tool_b.name}"
    subject = matchup if n == 1 else f"{matchup} + {n - 1} more verdict{'s' if n > 2 else ''}"
    if len(subject) <= SUBJECT_LIMIT:
        return subject
    return f"{n} new AI tool verdict{'s' if n != 1 else ''} · week {edition.week}"


# --- the pipeline -----------------------------------------------------------------------------

def _autoescape(name: str | None) -> bool:
    return bool(name) and not name.endswith(".txt.j2")


def wrap_text(text: str, width: int = 72, indent: str = "", first: str | None = None) -> str:
    """Plain-text paragraphs wrapped for reading. URLs and long words are never broken.

    Greedy, like `textwrap.fill(break_long_words=False)`, at a tenth of its cost."""
    lines: list[str] = []
    line, empty = (indent if first is None else first), True
    for word in str(text).split():
        if not empty and len(line) + 1 + len(word) > width:
            lines.append(line)
            line, empty = indent + word, False
        else:
            line, empty = (line + word) if empty else f"{line} {word}", False
    lines.append(line)
    return "\n".join(lines)


def wrap_items(items: Sequence[str], width: int = 72, indent: str = "", sep: str = " · ") -> str:
    """Items packed onto lines like words, so no item is split across two lines."""
    lines: list[str] = []
    line = ""
    for item in items:
        if line and len(indent) + len(line) + len(sep) + len(item) > width:
            lines.append(indent + line + sep.rstrip())
            line = item
        else:
            line = f"{line}{sep}{item}" if line else item
    lines.append(indent + line)
    return "\n".join(lines)


@functools.lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(str(template_dir())), autoescape=_autoescape,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                      keep_trailing_newline=True)
    env.filters["wrap"] = wrap_text
    env.filters["wrap_items"] = wrap_items
    return env


def _minify_css(css: str) -> str:
    """Comments, spaces around punctuation and each rule's last `;` go: the stylesheet is sent
    to every reader."""
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    css = re.sub(r"\s*([{};:,])\s*", r"\1", re.sub(r"\s+", " ", css)).strip()
    return css.replace(";}", "}")


@functools.lru_cache(maxsize=1)
def _head_css() -> tuple[str, str]:
    """head.css, minified, as (the look, its phone and dark-mode rules): two <style> blocks, so
    a mail app that throws away a block over a media query it dislikes keeps the look."""
    css = _minify_css((template_dir() / "head.css").read_text("utf-8"))
    cut = css.index("@media")
    return css[:cut], css[cut:]


class _Inliner(premailer.Premailer):
    """Premailer that turns a stylesheet into rules once per process, not once per render.

    Premailer caches the CSS parse but re-serialises every declaration through cssutils on each
    call, which costs more than the inlining itself. Our stylesheet is fixed, so the rules are
    too (the options that shape them never change either)."""

    _rules: dict[tuple[str, int], tuple[list, list]] = {}

    def _parse_style_rules(self, css_body, ruleset_index):
        key = (css_body, ruleset_index)
        if key not in self._rules:
            self._rules[key] = super()._parse_style_rules(css_body, ruleset_index)
        rules, leftover = self._rules[key]
        return list(rules), list(leftover)

    def _style_to_basic_html_attributes(self, element, style_content, force=False):
        """Off: it re-parses every inlined style to copy widths and colours into attributes,
        and the templates already write the few attributes old clients need."""


# MJML's own reset and layout blocks (and the head styles) stay as they are: inlining them would
# copy the same few declarations onto every table cell and cost kilobytes of the budget.
_MJML_STYLE = re.compile(r'<style type="text/css">')
_INDENT = re.compile(r"\n[ \t]+")
# What MJML writes for full-width columns and for Internet Explorer and Outlook 2003, none of it
# doing anything in a document whose columns are all 100% wide (their inline style already says
# so): dropped, as the issue is sent once per reader.
_MJML_COLUMN_CLASS = re.compile(r"mj-column-per-([\w-]+)")
_MJML_FULL_WIDTH = (
    '<style type="text/css">@media only screen and (min-width:480px) { .mj-column-per-100 '
    '{ width:100% !important; max-width:100%; }  }</style><style media="screen and '
    '(min-width:480px)">.moz-text-html .mj-column-per-100 { width:100% !important; '
    'max-width:100%; } </style>',
    '<!--[if lte mso 11]>\n<style type="text/css">\n.mj-outlook-group-fix { width:100% '
    '!important; }\n</style>\n<![endif]-->\n',
    ' class="mj-outlook-group-fix mj-column-per-100"',
    '<!--[if !mso]><!--><meta http-equiv="X-UA-Compatible" content="IE=edge"><!--<![endif]-->',
)
# mjml-python writes the head's raw <meta> and <link> elements XML-style (`<meta ... />`).
_SELF_CLOSED = re.compile(r"(<(?:meta|link)\b[^<>]*?)\s*/>")


def _drop_unused_mjml(html: str) -> str:
    """MJML's output without the blocks above (when every column is full width), and with
    HTML's void elements written the HTML way."""
    html = _SELF_CLOSED.sub(r"\1>", html)
    if set(_MJML_COLUMN_CLASS.findall(html)) != {"100"}:
        return html
    for block in _MJML_FULL_WIDTH:
        html = html.replace(block, "")
    return html


def mjml_to_email(mjml_source: str, *, inline_css: str | None = None,
                  media_css: str | None = None) -> str:
    """MJML -> responsive HTML, with `inline_css` (if any) inlined into the elements (premailer:
    no network, `!important` kept). The weekly issue inlines nothing: its look is in <head>
    once, which halves its size; the confirmation email inlines its own small stylesheet.
    `media_css` becomes the last <style> block of the head, after MJML's and mj-style's."""
    # Template indentation is only bytes in the email: a newline keeps the word break it made.
    html = _drop_unused_mjml(mjml2html(_INDENT.sub("\n", mjml_source), fonts={}))
    if media_css:
        head_end = html.index("</head>")
        html = f'{html[:head_end]}<style type="text/css">{media_css}</style>{html[head_end:]}'
    if inline_css is not None:
        html = _MJML_STYLE.sub('<style data-premailer="ignore" type="text/css">', html)
        html = _Inliner(
            css_text=[inline_css], strip_important=False, allow_network=False,
            allow_loading_external_files=False, disable_link_rewrites=True, base_url=None,
            remove_classes=False, disable_validation=True,
            cssutils_logging_level=logging.CRITICAL,
        ).transform(html, pretty_print=False)
    # lxml drops MJML's lower-case doctype; without one, mail clients render in quirks mode.
    html = html if html.lstrip()[:9].lower() == "<!doctype" else "<!doctype html>\n" + html
    return minify_email_html(html)


def measured_size(document: str, base_url: str | None = None) -> int:
    """Bytes of the HTML once every token is replaced by the longest value allowed for it
    (links under `base_url` at their exact longest, when it is given)."""
    allowance = token_allowance(base_url)
    size = len(document.encode("utf-8"))
    for token in TOKENS:
        size += document.count(token) * (allowance[token] - len(token))
    return size


@dataclass(frozen=True)
class RenderedLink:
    """A link of the issue as the reader gets it (`href`) and where it leads (`url`)."""

    link_no: int
    kind: str  # "comparison" (a card's link) or "overflow" (listed, not shown in full)
    label: str
    url: str
    href: str


@dataclass(frozen=True)
class RenderedIssue:
    subject: str
    preheader: str
    html: str
    text: str
    shown: int  # comparisons shown in full
    total: int
    base_url: str | None = None  # what its links start with
    links: tuple[RenderedLink, ...] = ()

    @property
    def listed(self) -> int:
        return self.total - self.shown

    @property
    def html_bytes(self) -> int:
        return len(self.html.encode("utf-8"))

    @property
    def measured_bytes(self) -> int:
        return measured_size(self.html, self.base_url)


@dataclass(frozen=True)
class _Frame:
    """What stays the same whichever cut is tried."""

    context: dict
    cards: tuple[CardView, ...]
    links: tuple[LinkView, ...]


def _context(frame: _Frame, shown: int) -> dict:
    return dict(frame.context, cards=frame.cards[:shown], overflow=frame.links[shown:])


def _render_html(frame: _Frame, shown: int) -> str:
    look, media = _head_css()
    mjml = environment().get_template("digest.mjml.j2").render(_context(frame, shown),
                                                              head_css=look)
    return mjml_to_email(mjml, media_css=media)


def _render_text(frame: _Frame, shown: int) -> str:
    return environment().get_template("digest.txt.j2").render(_context(frame, shown))


def largest_fitting(total: int, size_of: Callable[[int], int], budget: int,
                    first: int = FIRST_PROBE) -> int:
    """The largest count in [0, total] whose render fits, given that size grows with the count.

    The first probe is all of them, or `first` when there are more (rendering 40 cards only to
    learn they do not fit costs more than the rest of the search). Card sizes grow almost
    linearly, so each later probe interpolates between the sizes known so far and usually lands
    next to the cut: about four renders for 40 comparisons. When the same end of the bracket
    moves twice in a row, interpolation is stalling and one bisection step follows, which bounds
    the worst case at about twice a binary search."""
    probe = min(total, first)
    sizes = {probe: size_of(probe)}
    if sizes[probe] <= budget:
        if probe == total:
            return total
        lo, hi = probe, total
        sizes[hi] = size_of(hi)
        if sizes[hi] <= budget:
            return total
    else:
        lo, hi = 0, probe
        sizes[lo] = size_of(lo)
        if sizes[lo] > budget:
            raise RenderError(f"the issue is {sizes[lo]:,} bytes even with no comparison shown "
                              f"in full (budget {budget:,}): too many comparisons for one email")
    moved_lo: bool | None = None
    bisect = False
    while hi - lo > 1:
        if bisect:
            guess = (lo + hi) // 2
        else:
            slope = (sizes[hi] - sizes[lo]) / (hi - lo)
            guess = lo + int((budget - sizes[lo]) / slope) if slope > 0 else (lo + hi) // 2
            guess = min(max(guess, lo + 1), hi - 1)
        sizes[guess] = size_of(guess)
        fits = sizes[guess] <= budget
        bisect = fits == moved_lo
        moved_lo = fits
        lo, hi = (guess, hi) if fits else (lo, guess)
    return lo


def issue_categories(comparisons: Sequence[Comparison]) -> list[tuple[str, str]]:
    """(slug, name) of the categories in an edition, for its "stop sending me" links."""
    names = {category_slug(t.category): t.category
             for c in comparisons for t in c.tools if t.category}
    return sorted(names.items(), key=lambda item: item[1].casefold())


def archive_url(settings: Settings, key: str) -> str:
    """The issue's public web copy: the same for every reader, so it needs no token."""
    return f"{settings.base_url}/archive/{key}"


def render_issue(comparisons: Sequence[Comparison], *, edition: Edition, window: Window,
                 settings: Settings, budget: int = BUDGET_BYTES,
                 votes: Mapping[int, Tally] | None = None, web: bool = False) -> RenderedIssue:
    """The edition's subject, preheader, HTML and text, with placeholder tokens, rendered once.

    `votes` are the tools' reader votes so far (by tool id). `web` renders the public archive
    copy instead: no per-reader placeholder at all (no unsubscribe or vote links, no name), a
    link to subscribe instead, and every comparison in full (a web page has no clipping limit)."""
    if not comparisons:
        raise RenderError(f"{edition.key} has no comparisons to render")
    counts = count_issue(comparisons)
    preheader = headline(comparisons)
    subject = subject_for(comparisons, edition)
    date_range = window.label()
    context = {
        "site_name": settings.site_name,
        "site_host": urlsplit(settings.base_url).netloc,
        "postal_address": settings.postal_address,
        "week_title": f"Week {edition.week}, {edition.year}",
        "date_range": date_range,
        # MJML copies the title into an aria-label without escaping double quotes.
        "title": f"{settings.site_name}: week {edition.week}, {date_range}".replace('"', "'"),
        "headline": preheader,
        "preheader_pad": _PREHEADER_PAD,
        "counts": counts,
        "total": len(comparisons),
        "web": web,
        "unsubscribe_url": None if web else UNSUBSCRIBE_URL,
        "vote_url": None if web else VOTE_URL,
        "preferences_url": None if web else PREFERENCES_URL,
        "issue_categories": issue_categories(comparisons),
        "view_url": None if web else archive_url(settings, edition.key),
        "subscribe_url": f"{settings.base_url}/subscribe",
        "canonical_url": archive_url(settings, edition.key),
        "archive_index_url": f"{settings.base_url}/archive",
    }
    if web:
        budget = 10 * 1024 * 1024
    cards = mark_repeats([card_view(c, i, votes) for i, c in enumerate(comparisons, 1)])
    # The public web copy links straight to the comparisons: only the email's clicks count.
    cards, targets = ((cards, {}) if web
                      else tracked_cards(cards, comparisons, edition.key, settings))
    frame = _Frame(context, cards, tuple(link_view(card) for card in cards))
    cache: dict[int, str] = {}

    def size_of(shown: int) -> int:
        cache[shown] = _render_html(frame, shown)
        return measured_size(cache[shown], settings.base_url)

    shown = largest_fitting(len(comparisons), size_of, budget)
    links = tuple(RenderedLink(targets[card.number][0],
                               "comparison" if card.number <= shown else "overflow",
                               card.title, targets[card.number][1], card.url)
                  for card in cards if card.number in targets and card.url)
    return RenderedIssue(subject, preheader, cache[shown], _render_text(frame, shown), shown,
                         len(comparisons), settings.base_url, links)


def tracked_cards(cards: tuple[CardView, ...], comparisons: Sequence[Comparison], issue_key: str,
                  settings: Settings) -> tuple[tuple[CardView, ...], dict[int, tuple[int, str]]]:
    """The cards with their links pointing at the click redirect (`/r/{token}`, the same token
    for every reader: the render stays once per issue), and {card number: (link number,
    destination)}. A comparison's link number is its id, whether it is shown in full or listed
    and in whichever segment's edition (a subset of the issue's comparisons) it appears, so
    the links stored with the issue serve every edition of it. `off`: the cards unchanged;
    `per-subscriber`: each link also carries the reader's token, a placeholder filled per
    recipient like the unsubscribe link."""
    if settings.click_tracking == "off":
        return cards, {}
    signer = ClickSigner(settings.signing_key())
    targets = {card.number: (comparison.id, card.url)
               for card, comparison in zip(cards, comparisons)
               if card.url and comparison.id is not None}  # unsaved: nothing to store it under
    reader = f"?r={CLICK_READER}" if settings.click_tracking == "per-subscriber" else ""
    return tuple(replace(card, url=settings.base_url + redirect_path(
        issue_key, targets[card.number][0], signer) + reader)
                 if card.number in targets else card for card in cards), targets
