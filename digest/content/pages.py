"""Read a comparison page saved as plain text ("A vs B") into a validated `ComparisonIn`.

The site renders one page per comparison; copied as text it reads top to bottom as: an optional
`Compare/…` breadcrumb and "AI tool comparison" kicker, the title `A vs B`, an intro sentence,
one card per tool, an optional "Decision" table, the "Reviewer scorecard", then site boilerplate
(newsletter box, bookmarks) that carries nothing about the comparison and is cut off.

Two layouts of the scorecard exist, and both are read:

* scorecards: a reviewer persona line, then per tool `82/100 · ship` and a paragraph,
  first tool then second tool;
* quote-only: no names, scores or verdicts, only quoted paragraphs `“…”` alternating first and
  second tool, in the fixed persona order Builder, Skeptic, Founder, Futurist.

A page must be whole: both cards, four reviewers per tool (each scorecard line with its
verdict, each review with its text) and the closing newsletter box or bookmarks panel after the
reviews. A copy that stops early is refused naming the line where it ends, never imported as a
shorter comparison.

The parser is pure: text in, `ComparisonIn` out. Every failure is a `ContentImportError` naming
the source, the 1-based line of the problem and what was expected; nothing else escapes, so the
importer can report a bad file in one line and write nothing.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NoReturn
from urllib.parse import urlsplit

from pydantic import ValidationError

from digest.content.comparison import ComparisonIn, slugify
from digest.errors import ContentImportError

__all__ = ["PERSONAS", "looks_like_page", "parse_page"]

#: The panel's personas, in the order the site lists them; quote-only pages rely on it.
PERSONAS = ("Builder", "Skeptic", "Founder", "Futurist")
_PERSONA_KEYS = {p.casefold() for p in PERSONAS}

_KICKER = "ai tool comparison"
_DECISION = "decision"
_REVIEWS = {"reviewer scorecard", "reviewer scorecards"}
# Headings of the site boilerplate after the reviews (newsletter box, bookmarks panel); the
# first of them ends the comparison, and everything below it is ignored.
_FOOTER = {"weekly ai tool verdicts", "get the next comparison in your inbox", "bookmarks"}
_VERDICTS = {"ship", "skip"}
_PANEL_LABELS = {"panel ship", "panel skip"}
_CARD_LABELS = _PANEL_LABELS | {"community", "entry"}
_DECISION_ROWS = ("panel verdict", "community", "pricing", "best for", "category")
_NONE_VALUES = {"—", "–", "-", "n/a", "none"}
_NO_VOTES = {"no community votes yet", "no votes yet", "no community votes", "no votes"}
_OPEN_QUOTES = "“„«\""
_CLOSE_QUOTES = "”“»\""

_SEP = r"[·•|:,–—-]"
_SCORE = re.compile(r"([0-9]{1,9})\s*/\s*100(?:\s*" + _SEP + r"?\s*([^\W\d_]+))?")
_SHARE = re.compile(r"([0-9]{1,9})\s*%")
_VOTES = re.compile(r"([0-9][0-9,]{0,12})\s+(?:community\s+)?votes?", re.IGNORECASE)
_PANEL = re.compile(
    r"([^\W\d_]+)(?:\s*" + _SEP + r"\s*([0-9]{1,9})\s+ship\s*/\s*([0-9]{1,9})\s+skip)?",
    re.IGNORECASE,
)
_BREADCRUMB = re.compile(r"(?:home\s*/\s*)?compare\s*/", re.IGNORECASE)
_TITLE_SPLIT = re.compile(r" vs\.? ", re.IGNORECASE)


def _key(text: str) -> str:
    """Comparison key of a line: whitespace collapsed, case folded."""
    return " ".join(text.split()).casefold()


@dataclass(frozen=True)
class _Line:
    no: int
    text: str

    @cached_property
    def key(self) -> str:
        return _key(self.text)


@dataclass
class _Card:
    name: _Line
    category: _Line | None = None
    tagline: _Line | None = None
    badge: str | None = None
    share: int | None = None  # percent of the panel that said ship
    share_line: _Line | None = None
    votes: int | None = None
    community_line: _Line | None = None
    entry: _Line | None = None
    description: list[_Line] = field(default_factory=list)


@dataclass
class _Review:
    line: _Line  # where the review starts (persona, score or opening quote)
    reviewer: str
    score: int | None
    verdict: str | None
    text: str


def _score_match(text: str) -> re.Match[str] | None:
    return _SCORE.fullmatch(text)


def _structural(line: _Line) -> bool:
    """Lines that are part of a card's or the scorecard's furniture, never free text."""
    key = line.key
    return (key in _CARD_LABELS or key in _VERDICTS or _SHARE.fullmatch(key) is not None
            or _score_match(line.text) is not None)


def _is_logo(line: _Line) -> bool:
    """The one- or two-letter avatar the site shows when a tool has no logo image."""
    return 1 <= len(line.text) <= 2 and line.text.isalnum()


def _is_category(line: _Line) -> bool:
    """A category is a short label; a sentence (the intro, a description) is not one."""
    text = line.text
    return (len(text) <= 60 and not text.endswith((".", "?", "!", ":", "…"))
            and not _structural(line) and not _is_logo(line) and text[0] not in _OPEN_QUOTES)


def _is_name(line: _Line) -> bool:
    """A reviewer's name: a few words, not a sentence, not a score, not a quote."""
    text = line.text
    return (len(text) <= 40 and len(text.split()) <= 4
            and not text.endswith((".", "?", "!", ":", "…", ","))
            and text[0] not in _OPEN_QUOTES and _score_match(text) is None)


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] in _OPEN_QUOTES and text[-1] in _CLOSE_QUOTES:
        return text[1:-1].strip()
    return text


def _split_lines(text: str) -> tuple[list[_Line], int]:
    """Non-blank lines with their 1-based numbers (CRLF, CR and LF all end a line)."""
    raw = re.split(r"\r\n|\r|\n", text.removeprefix("\ufeff"))
    lines = [_Line(no, s) for no, part in enumerate(raw, 1) if (s := part.strip())]
    return lines, len(raw)


def _field(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _Parser:
    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.lines, self.last = _split_lines(text)
        self.where: dict[tuple[Any, ...], int] = {}

    def fail(self, message: str, line: _Line | int | None, field: str | None = None) -> NoReturn:
        number = line.no if isinstance(line, _Line) else line
        raise ContentImportError(message, path=self.source, line=number, field=field)

    # -- page layout -------------------------------------------------------------------------

    def parse(self, published_at: dt.datetime | None) -> ComparisonIn:
        lines = self.lines
        i = 0
        while i < len(lines) and (lines[i].key == _KICKER or _BREADCRUMB.match(lines[i].text)):
            i += 1
        if i == len(lines):
            empty = "the page is empty" if not lines else "the page ends here"
            self.fail(f"expected a title 'A vs B', but {empty}", self.last if lines else 1)
        title = lines[i]
        end = next((j for j in range(i + 1, len(lines)) if lines[j].key in _FOOTER), len(lines))
        body = lines[i + 1:end]
        stop = lines[end] if end < len(lines) else None
        names = self._title(title, body)
        if stop is None:
            last = lines[-1]
            self.fail(f"the page ends early, after {_snip(last.text, 40)!r}: a whole page goes "
                      "on after the reviews to the 'Weekly AI Tool Verdicts' box or the "
                      "'Bookmarks' panel; copy it down to there", last)

        decision_at = reviews_at = None
        for j, line in enumerate(body):
            if line.key == _DECISION:
                if decision_at is not None:
                    self.fail("the 'Decision' table appears twice", line)
                if reviews_at is not None:
                    self.fail("expected the 'Decision' table before the 'Reviewer scorecard'", line)
                decision_at = j
            elif line.key in _REVIEWS:
                if reviews_at is not None:
                    self.fail("the 'Reviewer scorecard' appears twice", line)
                reviews_at = j
        cards_end = min(x for x in (decision_at, reviews_at, len(body)) if x is not None)
        boundary = body[cards_end] if cards_end < len(body) else stop
        cards = self._cards(body[:cards_end], names, boundary)

        rows: dict[str, tuple[_Line, _Line]] = {}
        if decision_at is not None:
            table = body[decision_at + 1:reviews_at if reviews_at is not None else len(body)]
            rows = self._decision(body[decision_at], table, names)
        if reviews_at is None:
            quoted = next((x for x in cards[1].description if x.text[0] in _OPEN_QUOTES), None)
            if quoted is not None:
                self.fail("expected the 'Reviewer scorecard' heading before the first quoted "
                          "review", quoted)
            self.fail("expected the 'Reviewer scorecard' heading after the tool cards",
                      stop or self.last)
        reviews = self._reviews(body[reviews_at], body[reviews_at + 1:], names)

        tools = [self._tool(t, cards[t], rows, reviews[t]) for t in (0, 1)]
        self.where[("slug",)] = self.where[("tools",)] = title.no
        data = {
            "slug": f"{tools[0]['slug']}-vs-{tools[1]['slug']}",
            "url": "",
            "published_at": published_at,
            "tools": tools,
        }
        try:
            return ComparisonIn.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = tuple(first["loc"])
            line = next((self.where[loc[:n]] for n in range(len(loc), 0, -1)
                         if loc[:n] in self.where), None)
            message = first["msg"].removeprefix("Value error, ")
            name = _field(loc) or "page"
            self.fail(f"invalid {name}: {message}", line, field=_field(loc) or None)

    def _title(self, title: _Line, body: list[_Line]) -> tuple[str, str]:
        """Split `A vs B`; with several ` vs `, pick the split whose names head the two cards."""
        text = " ".join(title.text.split())
        cuts = [m for m in _TITLE_SPLIT.finditer(text) if m.start() > 0 and m.end() < len(text)]
        if not cuts:
            self.fail(f"expected a title 'A vs B', found {_snip(title.text)!r}", title)
        keys = {line.key for line in body}
        pairs = [(text[:m.start()].strip(), text[m.end():].strip()) for m in cuts]
        a, b = next((p for p in pairs if _key(p[0]) in keys and _key(p[1]) in keys), pairs[0])
        if _key(a) == _key(b):
            self.fail(f"a comparison needs two different tools, the title names {a!r} twice", title)
        return a, b

    # -- tool cards --------------------------------------------------------------------------

    def _cards(self, region: list[_Line], names: tuple[str, str],
               boundary: _Line | None) -> tuple[_Card, _Card]:
        """Cut the region after the title into intro, card A and card B, anchored on the names."""
        where = boundary.no if boundary else self.last

        def find(name: str, after: int) -> int:
            key = _key(name)
            j = next((j for j in range(after, len(region)) if region[j].key == key), None)
            if j is None:
                other = names[1] if name == names[0] else None
                at = find(other, 0) if other and _key(other) in {x.key for x in region} else None
                if at is not None:
                    self.fail(f"expected a card for {name!r} (a line with its name) before the "
                              f"card of {other!r}", region[start(at, -1)[0]])
                self.fail(f"expected a card for {name!r} (a line with its name) before this line",
                          where)
            return j

        def start(j: int, floor: int) -> tuple[int, _Line | None]:
            category = None
            if j - 1 > floor and _is_category(region[j - 1]):
                j -= 1
                category = region[j]
            if j - 1 > floor and _is_logo(region[j - 1]):
                j -= 1
            return j, category

        a_name = find(names[0], 0)
        b_name = find(names[1], a_name + 1)
        a_start, a_category = start(a_name, -1)
        b_start, b_category = start(b_name, a_name)
        card_a = self._card(region[a_start:b_start], a_name - a_start, a_category)
        card_b = self._card(region[b_start:], b_name - b_start, b_category)
        return card_a, card_b

    def _card(self, lines: list[_Line], at: int, category: _Line | None) -> _Card:
        card = _Card(name=lines[at], category=category)
        name = card.name.text
        n = len(lines)
        k = at + 1
        labelled = k + 1 < n and lines[k + 1].key in _CARD_LABELS  # then lines[k] is a value
        if k < n and not _structural(lines[k]) and not labelled:
            card.tagline = lines[k]
            k += 1
        seen: set[str] = set()

        def once(label: str, line: _Line) -> None:
            if label in seen:
                self.fail(f"{label!r} appears twice in the card of {name!r}", line)
            seen.add(label)

        while k < n:
            cur = lines[k]
            nxt = lines[k + 1] if k + 1 < n else None
            if cur.key in _VERDICTS:
                once("verdict", cur)
                card.badge = cur.key
                k += 1
            elif cur.key in _PANEL_LABELS:
                self.fail(f"expected the panel share (like '75%') before {cur.text!r}", cur)
            elif nxt is not None and nxt.key in _PANEL_LABELS:
                once("panel share", cur)
                card.share = self._share(cur)
                if nxt.key == "panel skip":
                    card.share = 100 - card.share
                card.share_line = cur
                k += 2
            elif cur.key == "community":
                once("community", cur)
                card.community_line = cur
                k += 1
            elif nxt is not None and nxt.key == "community":
                once("community", cur)
                card.votes = self._votes(cur)
                card.community_line = cur
                k += 2
            elif cur.key == "entry":
                self.fail(f"expected the entry (like 'Paid' or 'Free') before 'Entry' "
                          f"in the card of {name!r}", cur)
            elif nxt is not None and nxt.key == "entry":
                once("entry", cur)
                card.entry = cur
                k += 2
            else:
                break
        rest = lines[k:]
        row = next((x for x in rest if x.key in ("panel verdict", "pricing", "best for")), None)
        if row is not None:
            self.fail(f"expected the 'Decision' heading before the Decision row {row.text!r}", row)
        if any(x.key in _CARD_LABELS for x in rest):
            self.fail(f"unexpected line {_snip(rest[0].text)!r} in the card of {name!r} (expected "
                      "a verdict, the panel share, community votes, the entry or the description)",
                      rest[0])
        if card.entry is None:
            # "Entry" closes the card's furniture: without it, where the description starts
            # would be a guess.
            self.fail(f"expected the entry (like 'Paid', then a line 'Entry') in the card of "
                      f"{name!r}", rest[0] if rest else lines[-1])
        score = next((x for x in rest if _score_match(x.text)), None)
        if score is not None:
            self.fail("expected the 'Reviewer scorecard' heading before the first score line",
                      score)
        card.description = rest
        return card

    def _share(self, line: _Line) -> int:
        match = _SHARE.fullmatch(line.key)
        if match is None:
            self.fail(f"expected the panel share (like '75%'), found {_snip(line.text)!r}", line)
        share = int(match.group(1))
        if share > 100:
            self.fail(f"panel share {share}% is out of range 0-100", line)
        return share

    def _votes(self, line: _Line) -> int | None:
        """`12 votes` -> 12; `—` / `No community votes yet` / a bare `75%` share -> None
        (a share without a count tells how the vote went, not how many voted)."""
        key = line.key
        if key in _NONE_VALUES or key in _NO_VOTES or _SHARE.fullmatch(key):
            return None
        match = _VOTES.fullmatch(key)
        if match is None:
            self.fail("expected community votes like '12 votes', 'No community votes yet' or '—', "
                      f"found {_snip(line.text)!r}", line)
        return int(match.group(1).replace(",", ""))

    # -- decision table ----------------------------------------------------------------------

    def _decision(self, head: _Line, table: list[_Line],
                  names: tuple[str, str]) -> dict[str, tuple[_Line, _Line]]:
        """Rows of the Decision table by label: (value line of A, value line of B)."""
        rows: dict[str, tuple[_Line, _Line]] = {}
        for t, name in enumerate(names):
            if t >= len(table) or table[t].key != _key(name):
                found = f", found {_snip(table[t].text)!r}" if t < len(table) else ""
                self.fail(f"expected the Decision table's column {t + 1} to be {name!r}{found}",
                          table[t] if t < len(table) else head)
        k = 2
        while k < len(table):
            label = table[k]
            if label.key not in _DECISION_ROWS:
                known = ", ".join(r.capitalize() for r in _DECISION_ROWS)
                self.fail(f"unknown Decision row {_snip(label.text)!r} (expected one of: {known})",
                          label)
            if label.key in rows:
                self.fail(f"the Decision row {label.text!r} appears twice", label)
            if k + 2 >= len(table):
                missing = names[0] if k + 1 >= len(table) else names[1]
                self.fail(f"expected a value for {missing!r} in the Decision row {label.text!r}",
                          table[-1])
            for value_line in table[k + 1:k + 3]:
                if value_line.key in _DECISION_ROWS:
                    self.fail(f"expected a value in the Decision row {label.text!r}, "
                              f"found the row {value_line.text!r}", value_line)
            rows[label.key] = (table[k + 1], table[k + 2])
            k += 3
        return rows

    def _panel_cell(self, line: _Line) -> tuple[str | None, int | None, int | None]:
        """`Ship · 4 ship / 0 skip` -> ("ship", 4, 0); `Skip` -> ("skip", None, None)."""
        key, text = line.key, line.text
        if key in _NONE_VALUES:
            return None, None, None
        match = _PANEL.fullmatch(key)
        if match is None:
            self.fail("expected a panel verdict like 'Ship · 4 ship / 0 skip', "
                      f"found {_snip(text)!r}", line)
        verdict = match.group(1)
        if verdict not in _VERDICTS:
            self.fail(f"unknown verdict {verdict!r} (expected ship or skip)", line)
        if match.group(2) is None:
            return verdict, None, None
        return verdict, int(match.group(2)), int(match.group(3))

    # -- reviews -----------------------------------------------------------------------------

    def _reviews(self, heading: _Line, lines: list[_Line],
                 names: tuple[str, str]) -> tuple[list[_Review], list[_Review]]:
        if any(_score_match(line.text) for line in lines):
            pairs = self._scorecards(lines, names)
        else:
            pairs = self._quotes(lines, names)
        seen: dict[str, _Line] = {}
        for first, _ in pairs:
            persona = first.reviewer.casefold()
            if persona in seen:
                self.fail(f"reviewer {first.reviewer!r} appears twice", first.line)
            seen[persona] = first.line
        if len(pairs) != len(PERSONAS):
            # The site's panel always has four reviewers; fewer means reviews went missing.
            at = pairs[len(PERSONAS)][0].line if len(pairs) > len(PERSONAS) else (
                lines[-1] if lines else heading)
            self.fail(f"expected {len(PERSONAS)} reviewers for each tool "
                      f"({', '.join(PERSONAS)}), found {len(pairs)}", at)
        for pair in pairs:
            for review in pair:
                if not review.text:
                    self.fail(f"the review by {review.reviewer!r} has no text", review.line)
        return [a for a, _ in pairs], [b for _, b in pairs]

    def _scorecards(self, lines: list[_Line],
                    names: tuple[str, str]) -> list[tuple[_Review, _Review]]:
        """Persona line, then per tool `NN/100 · verdict` and its paragraph(s), A then B.

        The first tool's paragraphs run to the next score line; the second tool's run to the
        next reviewer: a short name directly above a score line, or a known persona's name
        (so a missing score line is reported under the right reviewer)."""
        n = len(lines)

        def is_score(j: int) -> bool:
            return j < n and _score_match(lines[j].text) is not None

        def is_head(j: int) -> bool:
            return _is_name(lines[j]) and (lines[j].key in _PERSONA_KEYS or is_score(j + 1))

        if not is_head(0):
            first = next(j for j in range(n) if is_score(j))
            if not any(is_head(j) for j in range(first)):
                self.fail("expected a reviewer name (like 'Builder') before the score line "
                          f"{lines[first].text!r}", lines[first])
            self.fail(f"unexpected text before the first reviewer: {_snip(lines[0].text)!r}",
                      lines[0])
        pairs = []
        j = 0
        while j < n:
            head = lines[j]
            persona = head.text
            if not is_score(j + 1):
                self.fail("expected a score line like '82/100 · ship' after the reviewer "
                          f"{persona!r}", lines[j + 1] if j + 1 < n else head)
            first = j + 1
            j = first + 1
            while j < n and not is_score(j):
                if lines[j].key in _PERSONA_KEYS and is_score(j + 1):
                    break
                j += 1
            if not is_score(j):
                self.fail(f"expected two score lines under the reviewer {persona!r} ({names[0]!r}, "
                          f"then {names[1]!r}), found one", head)
            second = j
            j += 1
            while j < n and not is_head(j):
                if is_score(j):
                    self.fail(f"expected a reviewer name before this score line: {persona!r} "
                              "already has two", lines[j])
                j += 1
            pair = []
            for t, (s, e) in enumerate(((first, second), (second, j))):
                score, verdict = self._score(lines[s], t, len(pairs))
                if s + 1 == e:
                    self.fail(f"the review by {persona!r} of {names[t]!r} has no text after its "
                              "score line", lines[s])
                text = "\n\n".join(line.text for line in lines[s + 1:e])
                pair.append(_Review(head if t == 0 else lines[s], persona, score, verdict,
                                    _unquote(text)))
            pairs.append((pair[0], pair[1]))
        return pairs

    def _score(self, line: _Line, tool: int, index: int) -> tuple[int, str]:
        match = _score_match(line.text)
        assert match is not None
        score = int(match.group(1))
        field = f"tools[{tool}].reviews[{index}]"
        if score > 100:
            self.fail(f"score {score} is out of range 0-100", line, field=field + ".score")
        verdict = match.group(2)
        if verdict is None:
            self.fail(f"expected the verdict after the score, like '{score}/100 · ship'", line,
                      field=field + ".verdict")
        verdict = verdict.casefold()
        if verdict not in _VERDICTS:
            self.fail(f"unknown verdict {match.group(2)!r} (expected ship or skip)", line,
                      field=field + ".verdict")
        return score, verdict

    def _quotes(self, lines: list[_Line], names: tuple[str, str]) -> list[tuple[_Review, _Review]]:
        """Quoted paragraphs alternate A, B; personas come from the site's fixed order, unless
        a known persona's name heads the pair."""
        quotes: list[tuple[_Line, str, _Line | None]] = []
        heading: _Line | None = None
        k = 0
        while k < len(lines):
            line = lines[k]
            if line.text[0] in _OPEN_QUOTES:
                start, parts = line, [line.text]
                closed = len(line.text) >= 2 and line.text[-1] in _CLOSE_QUOTES
                while (not closed and k + 1 < len(lines)
                       and lines[k + 1].text[0] not in _OPEN_QUOTES):
                    k += 1
                    parts.append(lines[k].text)
                    closed = lines[k].text[-1] in _CLOSE_QUOTES
                if not closed:
                    self.fail("expected the quoted review opened on this line to end with ”", start)
                text = "\n\n".join(parts)
                quotes.append((start, text[1:-1].strip(), heading))
                heading = None
            elif (len(quotes) % 2 == 0 and heading is None and line.key in _PERSONA_KEYS
                  and k + 1 < len(lines) and lines[k + 1].text[0] in _OPEN_QUOTES):
                heading = line
            else:
                self.fail(f"expected a quoted review “…”, found {_snip(line.text)!r}", line)
            k += 1
        if len(quotes) % 2:
            self.fail(f"expected quoted reviews in pairs ({names[0]!r} then {names[1]!r}); "
                      "this one has no partner", quotes[-1][0])
        pairs = []
        for p in range(0, len(quotes), 2):
            (a_line, a_text, head), (b_line, b_text, _) = quotes[p], quotes[p + 1]
            if head is not None:
                persona = head.text
            elif p // 2 < len(PERSONAS):
                persona = PERSONAS[p // 2]
            else:
                self.fail(f"found more than {len(PERSONAS)} pairs of quoted reviews without "
                          "reviewer names", a_line)
            pairs.append((_Review(head or a_line, persona, None, None, a_text),
                          _Review(b_line, persona, None, None, b_text)))
        return pairs

    # -- assembly ----------------------------------------------------------------------------

    def _tool(self, t: int, card: _Card, rows: dict[str, tuple[_Line, _Line]],
              reviews: list[_Review]) -> dict[str, Any]:
        name = card.name.text
        at = ("tools", t)
        self.where[at] = self.where[at + ("name",)] = self.where[at + ("slug",)] = card.name.no

        def cell(row: str) -> tuple[str, int | None]:
            if row not in rows:
                return "", None
            value = rows[row][t]
            return ("" if value.key in _NONE_VALUES else value.text), value.no

        if card.category is not None:
            category, category_no = card.category.text, card.category.no
        else:
            category, category_no = cell("category")
        pricing, pricing_no = cell("pricing")
        best_for, best_for_no = cell("best for")
        for key, no in (("category", category_no), ("pricing", pricing_no),
                        ("best_for", best_for_no),
                        ("tagline", card.tagline.no if card.tagline else None),
                        ("entry", card.entry.no if card.entry else None),
                        ("description", card.description[0].no if card.description else None),
                        ("community", card.community_line.no if card.community_line else None),
                        ("panel", card.share_line.no if card.share_line else None)):
            if no is not None:
                self.where[at + (key,)] = no

        votes = card.votes
        if "community" in rows:
            votes = self._votes(rows["community"][t])
            self.where[at + ("community",)] = rows["community"][t].no

        panel_verdict = panel_ship = panel_skip = None
        if "panel verdict" in rows:
            cell_line = rows["panel verdict"][t]
            panel_verdict, panel_ship, panel_skip = self._panel_cell(cell_line)
            self.where[at + ("panel",)] = cell_line.no
        panel = _panel(panel_verdict, panel_ship, panel_skip, card.badge, card.share, reviews)

        review_dicts = []
        for j, review in enumerate(reviews):
            self.where[at + ("reviews", j)] = review.line.no
            review_dicts.append({"reviewer": review.reviewer, "score": review.score,
                                 "verdict": review.verdict, "text": review.text})
        if reviews:
            self.where[at + ("reviews",)] = reviews[0].line.no
        return {
            "slug": slugify(name),
            "name": name,
            "category": category,
            "tagline": card.tagline.text if card.tagline else "",
            "description": "\n\n".join(line.text for line in card.description),
            "pricing": pricing,
            "entry": card.entry.text if card.entry else "",
            "best_for": best_for,
            "panel": panel,
            "community": {"votes": votes},
            "reviews": review_dicts,
        }


def _panel(verdict: str | None, ship: int | None, skip: int | None, badge: str | None,
           share: int | None, reviews: list[_Review]) -> dict[str, Any]:
    """The panel as honestly as the page allows.

    Counts: the Decision table's `N ship / M skip` when present; else, when every review carries
    a verdict, those verdicts counted; else, with a ship share from the card, the number of
    reviews times the share rounded half up (`100%` of 4 reviews -> 4 ship / 0 skip, `50%` of 3
    -> 2 / 1); else 0 / 0. Verdict: the Decision table's, else the card's badge, else the share's
    majority (over 50% ship, under 50% skip, exactly 50% unknown), else the counted verdicts'
    majority when they were counted, else unknown.
    """
    counted = False
    if ship is None or skip is None:
        verdicts = [r.verdict for r in reviews]
        if verdicts and all(v is not None for v in verdicts):
            ship, skip, counted = verdicts.count("ship"), verdicts.count("skip"), True
        elif share is not None and reviews:
            ship = (len(reviews) * share * 2 + 100) // 200
            skip = len(reviews) - ship
        else:
            ship = skip = 0
    if verdict is None:
        verdict = badge
    if verdict is None and share is not None and share != 50:
        verdict = "ship" if share > 50 else "skip"
    if verdict is None and counted and ship != skip:
        verdict = "ship" if ship > skip else "skip"
    return {"verdict": verdict, "ship": ship, "skip": skip}


def _snip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


_URL_LINE = re.compile(r"url:\s*(\S*)\s*", re.IGNORECASE)


def page_url(text: str, source: str) -> tuple[str, str]:
    """(url, text without it): an optional first line `url: https://...` names the page's
    address (the copied text of a page does not carry it). The line is blanked, not removed,
    so the parser's line numbers stay those of the file."""
    lines = re.split(r"(\r\n|\r|\n)", text.removeprefix("\ufeff"))
    for index in range(0, len(lines), 2):
        if not lines[index].strip():
            continue
        match = _URL_LINE.fullmatch(lines[index].strip())
        if match is None:
            return "", text
        url = match.group(1)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ContentImportError(f"url {url!r} is not an absolute http(s) address",
                                     path=source, line=index // 2 + 1, field="url")
        lines[index] = ""
        return url, "".join(lines)
    return "", text


def parse_page(text: str, *, source: str = "<text>",
               published_at: dt.datetime | None = None) -> ComparisonIn:
    """Parse one comparison page's text. The page carries no date: `published_at` is the
    importer's to choose; its address may be given on a first `url:` line. Raises
    `ContentImportError` (with `path=source` and the line)."""
    if not isinstance(text, str):
        raise ContentImportError("expected the page as text", path=source)
    url, text = page_url(text, source)
    parsed = _Parser(text, source).parse(published_at)
    return parsed.model_copy(update={"url": url}) if url else parsed


def looks_like_page(text: str) -> bool:
    """A cheap sniff so the importer can tell page text from JSON without parsing either:
    not starting like JSON, and an `A vs B` title or the scorecard heading near the top."""
    head = text[:20_000].lstrip("\ufeff \t\r\n")
    if not head or head[0] in "{[":
        return False
    lines = [_Line(0, s) for part in re.split(r"\r\n|\r|\n", head) if (s := part.strip())]
    for line in lines[:6]:
        if line.key == _KICKER or _BREADCRUMB.match(line.text):
            return True
        text_ = " ".join(line.text.split())
        if any(m.start() > 0 and m.end() < len(text_) for m in _TITLE_SPLIT.finditer(text_)):
            return True
    return any(line.key in _REVIEWS for line in lines)
