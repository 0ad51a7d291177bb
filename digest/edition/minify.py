"""The last step of rendering an email: fewer bytes, short lines, the same rendering.

Only changes no mail client can see: spaces inside inline `style` declarations, and line
breaks in place of the space after a tag's name, before the end tag of a block (a space there
ends the block's last line and is dropped) or after a CSS rule, so lines stay near 300 octets.
8bit transfer allows 998 on a line (the rest is room for the values spliced in per reader); a
part with a longer line has to travel quoted-printable, a third larger. A break that adds
whitespace is made only when no element keeps its spaces as typed. Text, and everything
inside <pre>, <textarea> and <script>, reads exactly as it did; so does whitespace between
tags (between inline elements it is a visible space, and the templates leave almost none).
The one change in text: the escaper's `&#34;` and `&#39;` become the quotes they stand for,
which need no escaping outside a tag (five bytes each, and quotes are common in verdicts).
"""

from __future__ import annotations

import re

_LINE_TARGET = 300
_VERBATIM = re.compile(r"(<(pre|textarea|script|style)\b.*?</\2\s*>)", re.S | re.I)
_STYLE_ATTR = re.compile(r'(\sstyle=")([^"]*)(")')
_DECLARATION_GAP = re.compile(r"\s*([;:])\s*")
_TAG_GAP = re.compile(r"<[a-zA-Z][\w:-]*(\s)")
_BLOCK_END = re.compile(r"</(?:div|td|th|tr|table|tbody|thead|tfoot|p|h[1-6]|li|ul|ol|center"
                        r"|body|html)\s*>", re.I)
_MARKUP_TOKEN = re.compile(r"<[^>]*>|[^<]+|<")
_PRESERVED_SPACE = re.compile(r"white-space\s*:\s*(pre|break-spaces)", re.I)
_QUOTE_ENTITY = re.compile(r"&#(34|39);")
_QUOTES = {"34": '"', "39": "'"}


def minify_email_html(document: str) -> str:
    """The document with the changes above."""
    def style(m: re.Match) -> str:
        value = m.group(2)
        if any(c in value for c in "\"'(&\\"):  # strings, url(), escapes: leave as they are
            return m.group(0)
        return m.group(1) + _DECLARATION_GAP.sub(r"\1", value.strip()).rstrip(";") + m.group(3)

    spaces = _PRESERVED_SPACE.search(document) is None  # no element keeps its spaces as typed
    pieces = _VERBATIM.split(document)  # text, verbatim element, its tag name, text, ...
    out: list[str] = []
    column = 0  # characters on the line so far
    for i in range(0, len(pieces), 3):
        chunks = [_break_lines(_STYLE_ATTR.sub(style, pieces[i]), column, spaces=spaces)]
        if i + 1 < len(pieces):
            verbatim = pieces[i + 1]
            if pieces[i + 2].lower() == "style":  # CSS: a newline after a rule is whitespace
                verbatim = _break_after(verbatim, "}", column)
            chunks.append(verbatim)
        for chunk in chunks:
            out.append(chunk)
            newline = chunk.rfind("\n")
            column = len(chunk) - newline - 1 if newline >= 0 else column + len(chunk)
    return "".join(out)


def _break_after(css: str, mark: str, column: int) -> str:
    out, done, line_start = [], 0, -column
    at = css.find(mark)
    while at >= 0:
        newline = css.rfind("\n", done, at)
        if newline >= 0:
            line_start = max(line_start, newline + 1)
        if at - line_start > _LINE_TARGET and css[at + 1:at + 2] != "\n":
            out += [css[done:at + 1], "\n"]
            done = line_start = at + 1
        at = css.find(mark, at + 1)
    out.append(css[done:])
    return "".join(out)


def _break_lines(text: str, column: int, *, spaces: bool) -> str:
    """A newline in place of the space after a tag's name when the tag would pass the target,
    or (with `spaces`) before a block's end tag, so lines stay near the target. `column`:
    characters already on the line where `text` starts."""
    out: list[str] = []
    for m in _MARKUP_TOKEN.finditer(text):
        token = m.group(0)
        if token[0] != "<" and "&#" in token:
            token = _QUOTE_ENTITY.sub(lambda q: _QUOTES[q.group(1)], token)
        if column + len(token) > _LINE_TARGET:
            if spaces and _BLOCK_END.fullmatch(token):
                out.append("\n")  # ends a block's last line, where a space never shows
                column = 0
            elif token[0] == "<":
                gap = _TAG_GAP.match(token)
                if gap:
                    out += [token[:gap.start(1)], "\n"]
                    token, column = token[gap.start(1) + 1:], 0
        out.append(token)
        newline = token.rfind("\n")
        column = len(token) - newline - 1 if newline >= 0 else column + len(token)
    return "".join(out)
