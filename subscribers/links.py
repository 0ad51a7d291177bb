"""The public URLs that carry a subscriber's signed token. One place, so mail and web agree."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

from subscribers.tokens import Signer


@dataclass(frozen=True)
class Links:
    base_url: str
    signer: Signer

    def confirm(self, subscriber_id: int) -> str:
        return f"{self.base_url}/confirm/{self.signer.sign('confirm', subscriber_id)}"

    def unsubscribe(self, subscriber_id: int) -> str:
        return f"{self.base_url}/u/{self.signer.sign('unsubscribe', subscriber_id)}"

    def view(self, issue_key: str, subscriber_id: int) -> str:
        token = self.signer.sign("view", subscriber_id)
        return f"{self.base_url}/issues/{quote(issue_key, safe='')}?t={token}"

    def vote(self, issue_id: int, subscriber_id: int) -> str:
        """The base of a reader's vote links in one issue; `/{tool}/{ship|skip}` follows."""
        return f"{self.base_url}/vote/{self.signer.sign('vote', vote_subject(issue_id, subscriber_id))}"

    # The same links for a whole batch of recipients at once (what a send needs).

    def unsubscribe_many(self, subscriber_ids: Sequence[int]) -> list[str]:
        prefix = f"{self.base_url}/u/"
        return [prefix + token for token in self.signer.sign_many("unsubscribe", subscriber_ids)]

    def view_many(self, issue_key: str, subscriber_ids: Sequence[int]) -> list[str]:
        prefix = f"{self.base_url}/issues/{quote(issue_key, safe='')}?t="
        return [prefix + token for token in self.signer.sign_many("view", subscriber_ids)]

    def vote_many(self, issue_id: int, subscriber_ids: Sequence[int]) -> list[str]:
        prefix = f"{self.base_url}/vote/"
        subjects = [vote_subject(issue_id, sid) for sid in subscriber_ids]
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
