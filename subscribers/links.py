"""The public URLs that carry a subscriber's signed token. One place, so mail and web agree.

Every link is bound to its subscriber's stored address (see `subscribers.tokens`), so it needs
the id and the address. `redact` is the other side of the same knowledge: which parts of a
request path are tokens, so logs never keep one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote, unquote_plus

from subscribers.tokens import Signer

REDACTED = "[token]"
# The path segment after `/u/`, `/confirm/` or `/vote/` is a token; so is the value of a `t`
# parameter, and of `r` (a reader's click token: opt-in per-subscriber click counts).
_TOKEN_ROUTES = frozenset({"u", "confirm", "vote"})
_TOKEN_PARAMS = frozenset({"t", "r"})
# Anything shaped like one of our tokens, wherever a future route puts it.
_TOKEN_SHAPE = re.compile(r"[^./]+(?:\.[^./]+)?\.[0-9a-f]{1,16}\.[\w-]{20,}")


@dataclass(frozen=True)
class Links:
    base_url: str
    signer: Signer

    def confirm(self, subscriber_id: int, email: str) -> str:
        return f"{self.base_url}/confirm/{self.signer.sign('confirm', subscriber_id, email)}"

    def unsubscribe(self, subscriber_id: int, email: str) -> str:
        return f"{self.base_url}/u/{self.signer.sign('unsubscribe', subscriber_id, email)}"

    def view(self, issue_key: str, subscriber_id: int, email: str) -> str:
        token = self.signer.sign("view", subscriber_id, email)
        return f"{self.base_url}/issues/{quote(issue_key, safe='')}?t={token}"

    def preferences(self, subscriber_id: int, email: str) -> str:
        """The reader's preference page; `/drop/{category}` after it stops one category."""
        return f"{self.base_url}/p/{self.signer.sign('preferences', subscriber_id, email)}"

    def vote(self, issue_id: int, subscriber_id: int, email: str) -> str:
        """The base of a reader's vote links in one issue; `/{tool}/{ship|skip}` follows."""
        token = self.signer.sign("vote", vote_subject(issue_id, subscriber_id), email)
        return f"{self.base_url}/vote/{token}"

    # The same links for a whole batch of recipients at once (what a send needs): bind the batch
    # once with `holders`, then make each kind of link from it.

    def holders(self, subscriber_ids: Sequence[int], emails: Sequence[str]) -> list[str]:
        return self.signer.bind_many(subscriber_ids, emails)

    def unsubscribe_many(self, holders: Sequence[str]) -> list[str]:
        prefix = f"{self.base_url}/u/"
        return [prefix + token for token in self.signer.sign_many("unsubscribe", holders)]

    def view_many(self, issue_key: str, holders: Sequence[str]) -> list[str]:
        prefix = f"{self.base_url}/issues/{quote(issue_key, safe='')}?t="
        return [prefix + token for token in self.signer.sign_many("view", holders)]

    def preferences_many(self, holders: Sequence[str]) -> list[str]:
        prefix = f"{self.base_url}/p/"
        return [prefix + token for token in self.signer.sign_many("preferences", holders)]

    def vote_many(self, issue_id: int, holders: Sequence[str]) -> list[str]:
        prefix = f"{self.base_url}/vote/"
        # `7.<tag>` -> `7-42.<tag>`: the vote subject, bound to the same reader
        suffix = f"-{issue_id}."
        subjects = [holder.replace(".", suffix, 1) for holder in holders]
        return [prefix + token for token in self.signer.sign_many("vote", subjects)]


def vote_subject(issue_id: int, subscriber_id: int) -> str:
    """A vote token names the reader and the issue whose links they used: `7-42`."""
    return f"{subscriber_id}-{issue_id}"


def parse_vote_subject(subject: str) -> tuple[int, int]:
    """(subscriber_id, issue_id) from a verified vote token's subject; ValueError otherwise."""
    subscriber, _, issue = subject.partition("-")
    if not (subscriber.isdigit() and issue.isdigit()):
        raise ValueError("not a vote subject")
    return int(subscriber), int(issue)


def redact(path: str) -> str:
    """A request path (with its query, as sent) fit for a log: every token replaced by
    `[token]`; the route, the other parameters and the shape kept.

    Decisions are made on the decoded text (the router decodes `%75` to `u` and `%2E` to `.`
    too), while what is kept is written as it came, so nothing decoded reaches the log."""
    raw_path, mark, query = path.partition("?")
    segments = raw_path.split("/")
    for i, segment in enumerate(segments):
        if (i > 0 and unquote(segments[i - 1]) in _TOKEN_ROUTES and segment) \
                or _TOKEN_SHAPE.fullmatch(unquote(segment)):
            segments[i] = REDACTED
    pairs = query.split("&") if mark else []
    for i, pair in enumerate(pairs):
        name, equals, value = pair.partition("=")
        if equals and (unquote_plus(name) in _TOKEN_PARAMS
                       or _TOKEN_SHAPE.fullmatch(unquote_plus(value))):
            pairs[i] = f"{name}={REDACTED}"
    return "/".join(segments) + (mark + "&".join(pairs) if mark else "")
