"""The one provider interface every delivery backend implements.

A provider receives a `Letter` (the issue, rendered once, split at its placeholders) and a batch of
`Recipient`s (each with its own placeholder values), and returns one `Outcome` per recipient, in
order. Providers that substitute per-recipient values themselves (SendGrid, Mailgun) send the body
once per batch; the others fill each message locally with `Letter.fill`, which costs microseconds.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import ClassVar, Literal

from digest.personalize import SplitTemplate, UNSUBSCRIBE_URL

ISSUE_HEADER = "X-Digest-Issue"


@dataclass(frozen=True, slots=True)
class Recipient:
    email: str
    values: Mapping[str, str]
    name: str | None = None
    delivery_id: int | None = None  # the ledger row; None for test copies and confirmations
    message_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def unsubscribe_url(self) -> str | None:
        return self.values.get(UNSUBSCRIBE_URL)


@dataclass(frozen=True)
class Letter:
    """What every recipient of one send shares."""

    subject: str
    html: SplitTemplate
    text: SplitTemplate
    from_addr: str
    tag: str  # the issue key (or "confirm"): travels as a header/metadata so webhooks can be matched
    list_id: str | None = None
    reply_to: str | None = None
    unsubscribe_mailto: str | None = None
    bulk: bool = True  # newsletter: one-click unsubscribe headers; False for confirmation mail

    @classmethod
    def from_documents(cls, *, subject: str, html: str, text: str, **kwargs) -> "Letter":
        return cls(subject=subject, html=SplitTemplate(html, escape_html=True),
                   text=SplitTemplate(text, escape_html=False), **kwargs)

    @property
    def from_domain(self) -> str:
        return parseaddr(self.from_addr)[1].rpartition("@")[2] or "localhost"

    def message_id_header(self, recipient: Recipient) -> str:
        return f"<{recipient.message_id}@{self.from_domain}>"

    def headers(self, recipient: Recipient) -> dict[str, str]:
        """Headers for one recipient: RFC 2369/8058 unsubscribe, List-Id, the issue tag."""
        headers = {ISSUE_HEADER: self.tag}
        if self.bulk:
            url = recipient.unsubscribe_url()
            if not url:
                raise ValueError(f"bulk mail to {recipient.email} has no unsubscribe URL")
            targets = [f"<{url}>"]
            if self.unsubscribe_mailto:
                targets.append(f"<mailto:{self.unsubscribe_mailto}?subject=unsubscribe>")
            headers["List-Unsubscribe"] = ", ".join(targets)
            headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
            if self.list_id:
                headers["List-Id"] = self.list_id
            headers["Precedence"] = "bulk"
        return headers

    def fill(self, recipient: Recipient) -> tuple[str, str]:
        return self.html.fill(recipient.values), self.text.fill(recipient.values)


Status = Literal["sent", "rejected", "transient", "uncertain"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """One recipient's result: `sent` (accepted, with the provider's id), `rejected` (permanent,
    never retried), `transient` (retry later) or `uncertain` (the message went out and no answer
    came back, e.g. an SMTP connection lost during DATA: it may have been delivered)."""

    status: Status
    message_id: str | None = None
    reason: str = ""
    inactive: bool = False  # the provider refused because the address bounced/complained before

    @classmethod
    def sent(cls, message_id: str | None) -> "Outcome":
        return cls("sent", message_id)

    @classmethod
    def rejected(cls, reason: str, *, inactive: bool = False) -> "Outcome":
        return cls("rejected", None, reason, inactive)

    @classmethod
    def transient(cls, reason: str) -> "Outcome":
        return cls("transient", None, reason)

    @classmethod
    def uncertain(cls, reason: str) -> "Outcome":
        return cls("uncertain", None, reason)


class Provider(ABC):
    """A delivery backend. Subclasses declare their limits and capabilities as class attributes."""

    name: ClassVar[str]
    batch_limit: ClassVar[int]
    substitutes: ClassVar[bool] = False  # fills per-recipient values itself: body sent once a batch
    idempotent: ClassVar[bool] = False  # accepts an idempotency key: an uncertain batch may be retried

    @abstractmethod
    def send_batch(self, letter: Letter, recipients: Sequence[Recipient], *,
                   batch_key: str) -> list[Outcome]:
        """Send one batch (at most `batch_limit` recipients); one outcome per recipient, in order.

        Raises TransientProviderError when the whole call should be retried, and
        PermanentProviderError when no retry can help (credentials, a suspended account)."""

    def close(self) -> None:
        """Release connections."""

    def __enter__(self) -> "Provider":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
