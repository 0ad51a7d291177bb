"""Per-subscriber values filled into an issue rendered once.

The composed HTML and text carry placeholder tokens (no spaces or braces, so the CSS inliner
leaves them intact inside `href`s). `SplitTemplate` splits the document once at the tokens and
joins the pieces per subscriber: ~20 us a message instead of ~220 us for repeated str.replace
on a 100 KB body.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping

# The tokens a composed issue may contain. Values are URL-safe or escaped before joining.
UNSUBSCRIBE_URL = "%%UNSUBSCRIBE_URL%%"
# Issues rendered before the public archive carried a per-reader "view in browser" link; new ones
# link the archive page, the same for everyone, and carry the reader's vote links instead.
VIEW_URL = "%%VIEW_URL%%"
VOTE_URL = "%%VOTE_URL%%"  # `{base}/vote/{token}`; the tool and the answer follow in the path
PREFERENCES_URL = "%%PREFERENCES_URL%%"  # `{base}/p/{token}`; `/drop/{category}` may follow
NAME = "%%NAME%%"
# The reader's click token (`?r=` on counted links): only with DIGEST_CLICK_TRACKING=per-subscriber.
CLICK_READER = "%%CLICK_READER%%"
TOKENS = (UNSUBSCRIBE_URL, VIEW_URL, VOTE_URL, PREFERENCES_URL, NAME, CLICK_READER)
_TOKEN_RE = re.compile("(" + "|".join(re.escape(t) for t in TOKENS) + ")")


class SplitTemplate:
    """A document split once at its placeholder tokens."""

    __slots__ = ("_parts", "_slots", "escape_html")

    def __init__(self, document: str, *, escape_html: bool) -> None:
        pieces = _TOKEN_RE.split(document)
        self._parts: list[str] = pieces[0::2]
        self._slots: list[str] = pieces[1::2]
        self.escape_html = escape_html

    @property
    def tokens(self) -> set[str]:
        return set(self._slots)

    def fill(self, values: Mapping[str, str]) -> str:
        """Join the pieces with this subscriber's values; every token must have one."""
        parts, slots = self._parts, self._slots
        if self.escape_html:
            values = {k: html.escape(v, quote=True) for k, v in values.items()}
        out = [parts[0]]
        for slot, part in zip(slots, parts[1:]):
            out.append(values[slot])
            out.append(part)
        return "".join(out)
