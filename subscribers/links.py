"""The public URLs that carry a subscriber's signed token. One place, so mail and web agree."""

from __future__ import annotations

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
