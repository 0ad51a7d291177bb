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

    def unsubscribe(self, subscriber_id: int, email: str, issue_id: int | None = None) -> str:
        """The reader's unsubscribe link; with `issue_id` (every issue's mail), the link names
        the issue it came in, so the unsubscribe counts toward that issue."""
        subject = subscriber_id if issue_id is None else issue_subject(issue_id, subscriber_id)
        return f"{self.base_url}/u/{self.signer.sign('unsubscribe', subject, email)}"

    def view(self, issue_key: str, subscriber_id: int, email: str) -> str:
        token = self.signer.sign("view", subscriber_id, email)
        return f"{self.base_url}/issues/{quote(issue_key, safe='')}?t={token}"

    def preferences(self, subscriber_id: int, email: str) -> str:
        """The reader's preference page; `/drop/{category}` after it stops one category."""
        return f"{self.base_url}/p/{self.signer.sign('preferences', subscriber_id, email)}"

    def vote(self, issue_id: int, subscriber_id: int, email: str) -> str:
        """The base of a reader's vote links in one issue; `/{tool}/{ship|skip}` follows."""
        token = self.signer.sign("vote", issue_subject(issue_id, subscriber_id), email)
        return f"{self.base_url}/vote/{token}"

    # The same links for a whole batch of recipients at once (what a send needs): bind the batch
    # once with `holders`, then make each kind of link from it.

    def holders(self, subscriber_ids: Sequence[int], emails: Sequence[str]) -> list[str]:
        return self.signer.bind_many(subscriber_ids, emails)

    def unsubscribe_many(self, holders: Sequence[str], issue_id: int | None = None) -> list[str]:
        prefix = f"{self.base_url}/u/"
        subjects = holders if issue_id is None else _with_issue(holders, issue_id)
        return [prefix + token for token in self.signer.sign_many("unsubscribe", subjects)]

    def view_many(self, issue_key: str, holders: Sequence[str]) -> list[str]:
        prefix = f"{self.base_url}/issues/{quote(issue_key, safe='')}?t="
        return [prefix + token for token in self.signer.sign_many("view", holders)]

    def preferences_many(self, holders: Sequence[str]) -> list[str]:
        prefix = f"{self.base_url}/p/"
        return [prefix + token for token in self.signer.sign_many("preferences", holders)]

    def vote_many(self, issue_id: int, holders: Sequence[str]) -> list[str]:
        prefix = f"{self.base_url}/vote/"
        return [prefix + token for token in self.signer.sign_many("vote",
                                                                  _with_issue(holders, issue_id))]


def _with_issue(holders: Sequence[str], issue_id: int) -> list[str]:
    """`7.<tag>` -> `7-42.<tag>`: the issue's subject, bound to the same reader. One string
    replace per recipient: a send makes these a million times."""
    suffix = f"-{issue_id}."
    return [holder.replace(".", suffix, 1) for holder in holders]


def issue_subject(issue_id: int, subscriber_id: int) -> str:
    """A token about one reader and one issue names both: `7-42` (reader 7, issue 42)."""
    return f"{subscriber_id}-{issue_id}"


def parse_vote_subject(subject: str) -> tuple[int, int]:
    """(subscriber_id, issue_id) from a verified vote token's subject; ValueError otherwise."""
    subscriber_id, issue_id = parse_issue_subject(subject)
    if issue_id is None:
        raise ValueError("not a vote subject")
    return subscriber_id, issue_id


def parse_issue_subject(subject: str) -> tuple[int, int | None]:
    """(subscriber_id, issue_id) from a verified token's subject: `7-42`, or `7` for a token
    that names no issue (unsubscribe links from before they did, the preference page's).
    ValueError for anything else."""
    subscriber, dash, issue = subject.partition("-")
    if not subscriber.isdigit() or (dash and not issue.isdigit()):
        raise ValueError("not a subscriber subject")
    return int(subscriber), int(issue) if dash else None


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
