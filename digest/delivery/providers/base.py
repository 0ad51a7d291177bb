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
from dataclasses import dataclass
from email.utils import parseaddr
from typing import ClassVar, Literal

from digest.edition.personalize import SplitTemplate, UNSUBSCRIBE_URL

ISSUE_HEADER = "X-Digest-Issue"


class Recipient:
    """One addressee of a send and the values that fill its placeholders.

    A plain class with `__slots__` rather than a frozen dataclass: a send builds a million of
    these, and a frozen dataclass pays an `object.__setattr__` call per field (about 3 us a
    recipient, more than the rest of building one). Treat instances as read-only all the same:
    a provider may have encoded a batch already."""

    __slots__ = ("email", "values", "name", "delivery_id", "message_id")

    email: str
    values: Mapping[str, str]
    name: str | None
    delivery_id: int | None  # the ledger row; None for test copies and confirmations
    message_id: str

    def __init__(self, email: str, values: Mapping[str, str], name: str | None = None,
                 delivery_id: int | None = None, message_id: str | None = None) -> None:
        self.email = email
        self.values = values
        self.name = name
        self.delivery_id = delivery_id
        self.message_id = uuid.uuid4().hex if message_id is None else message_id

    def _fields(self) -> tuple:
        return (self.email, self.values, self.name, self.delivery_id, self.message_id)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._fields() == other._fields()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return (f"Recipient(email={self.email!r}, values={self.values!r}, name={self.name!r}, "
                f"delivery_id={self.delivery_id!r}, message_id={self.message_id!r})")

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
        if not self.bulk:
            return {ISSUE_HEADER: self.tag}
        return self._bulk_headers(self.list_unsubscribe(recipient))

    def list_unsubscribe(self, recipient: Recipient) -> str:
        """The `List-Unsubscribe` value: the one-click URL, then the mailbox if there is one."""
        url = recipient.unsubscribe_url()
        if not url:
            raise ValueError(f"bulk mail to {recipient.email} has no unsubscribe URL")
        return f"<{url}>{self._mailto_target()}"

    def batch_headers(self, recipients: Sequence[Recipient]
                      ) -> tuple[dict[str, str], dict[str, list[str]]]:
        """The headers of a batch: those every recipient shares, and those that differ, as one
        column of values per header name (in recipient order).

        The same split as comparing `headers()` of every recipient, without a dict per
        recipient: only `List-Unsubscribe` can differ, so only it is built per recipient."""
        if not recipients:
            return {}, {}
        if not self.bulk:
            return {ISSUE_HEADER: self.tag}, {}
        suffix = self._mailto_target()
        urls = [r.values.get(UNSUBSCRIBE_URL) for r in recipients]
        if not all(urls):
            missing = next(r for r, url in zip(recipients, urls) if not url)
            raise ValueError(f"bulk mail to {missing.email} has no unsubscribe URL")
        column = [f"<{url}>{suffix}" for url in urls]
        if column.count(column[0]) == len(column):  # one recipient, or the same link for all
            return self._bulk_headers(column[0]), {}
        shared = self._bulk_headers(column[0])
        del shared["List-Unsubscribe"]
        return shared, {"List-Unsubscribe": column}

    def _mailto_target(self) -> str:
        if self.unsubscribe_mailto:
            return f", <mailto:{self.unsubscribe_mailto}?subject=unsubscribe>"
        return ""

    def _bulk_headers(self, list_unsubscribe: str) -> dict[str, str]:
        headers = {ISSUE_HEADER: self.tag, "List-Unsubscribe": list_unsubscribe,
                   "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
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

    def prepare(self, letter: Letter, recipients: Sequence[Recipient], *,
                batch_key: str) -> object | None:
        """Whatever of a batch's request can be built before it is its turn to leave (the
        encoded payload), so a sender can build the next request while this one is on the
        wire. None: nothing to build ahead; `send_prepared` then does all of `send_batch`."""
        return None

    def send_prepared(self, prepared: object | None, letter: Letter,
                      recipients: Sequence[Recipient], *, batch_key: str) -> list[Outcome]:
        """`send_batch` with what `prepare` built for the same letter, recipients and key (a
        retry of the batch may send it again: it is the very same request)."""
        return self.send_batch(letter, recipients, batch_key=batch_key)

    def close(self) -> None:
        """Release connections."""

    def __enter__(self) -> "Provider":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
