"""What the delivery tests share: rows made directly (an issue rendered with the placeholder
tokens, subscribers in bulk), a fake clock, and a real `Provider` subclass that records every
call and fails on demand (a fake transport in the manner of django-anymail's backend tests)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import insert
from sqlmodel import Session

from digest.errors import TransientProviderError, UncertainProviderError
from digest.database.models import Issue
from digest.edition.personalize import NAME, UNSUBSCRIBE_URL, VIEW_URL
from digest.delivery.providers.base import Letter, Outcome, Provider, Recipient
from subscribers.models import Subscriber

START = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.timezone.utc)

# An identity a real send accepts (the preflight refuses example.* and .test names). Only the
# offline checks ever see it: no test resolves or contacts this domain.
REAL_IDENTITY = {
    "DIGEST_FROM": "Weekly AI Tool Verdicts <digest@news.verdict-digest.net>",
    "DIGEST_BASE_URL": "https://digest.verdict-digest.net",
    "DIGEST_POSTAL_ADDRESS": "Verdict Digest GmbH, Torstrasse 19, 10119 Berlin, Germany",
}

HTML = (f"<html><body><p>Hi {NAME},</p><p>This week's verdicts.</p>"
        f"<a href=\"{VIEW_URL}\">view in browser</a> <a href=\"{UNSUBSCRIBE_URL}\">unsubscribe</a>"
        "</body></html>")
TEXT = f"Hi {NAME},\nThis week's verdicts.\nView: {VIEW_URL}\nUnsubscribe: {UNSUBSCRIBE_URL}\n"


def make_issue(session: Session, key: str = "2026-W47", *, status: str = "ready",
               html: str = HTML, text: str = TEXT) -> Issue:
    issue = Issue(key=key, status=status, window_start=START - dt.timedelta(days=7),
                  window_end=START, subject=f"Verdicts {key}", html=html, text=text,
                  html_hash="abc123def456", created_at=START)
    session.add(issue)
    session.commit()  # expire_on_commit=False keeps the id; no read keeps SQLite's lock open
    return issue


def add_subscribers(engine, n: int, *, status: str = "active", start: int = 1,
                    domain: str = "example.com") -> list[int]:
    """Insert `n` subscribers set-wise; returns their ids."""
    rows = [{"email": f"reader{i}@{domain}", "name": f"Reader {i}", "status": status,
             "source": "import", "created_at": START, "updated_at": START,
             "confirmed_at": START if status == "active" else None}
            for i in range(start, start + n)]
    with engine.begin() as conn:
        conn.execute(insert(Subscriber.__table__), rows)
        ids = conn.execute(Subscriber.__table__.select()
                           .with_only_columns(Subscriber.__table__.c.id)
                           .where(Subscriber.__table__.c.email.in_([r["email"] for r in rows]))
                           ).scalars().all()
    return sorted(ids)


class FakeClock:
    """Epoch seconds that move only when the code under test sleeps (or the test says so)."""

    def __init__(self, start: dt.datetime = START) -> None:
        self.now = start.timestamp()
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0, seconds
        self.sleeps.append(seconds)
        self.now += seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Call:
    batch_key: str
    emails: list[str]
    recipients: list[Recipient]
    at: float


Behaviour = Callable[[int, Sequence[Recipient]], "list[Outcome] | Exception | None"]


@dataclass
class RecordingProvider(Provider):
    """Accepts everything unless told otherwise; every call is kept in `calls`.

    `script` gives behaviours for the 1st, 2nd, ... call (an exception to raise, a list of
    outcomes, or None for the default); `reject` maps an address to a permanent reason, and
    `inactive` lists addresses refused as earlier bounces.
    """

    name = "recording"
    batch_limit: int = 10  # type: ignore[misc]
    idempotent: bool = False  # type: ignore[misc]
    clock: Callable[[], float] | None = None
    script: list = field(default_factory=list)
    reject: dict[str, str] = field(default_factory=dict)
    inactive: set[str] = field(default_factory=set)
    calls: list[Call] = field(default_factory=list)
    letters: list[Letter] = field(default_factory=list)

    def send_batch(self, letter: Letter, recipients: Sequence[Recipient], *,
                   batch_key: str) -> list[Outcome]:
        assert len(recipients) <= self.batch_limit
        index = len(self.calls)
        self.calls.append(Call(batch_key, [r.email for r in recipients], list(recipients),
                               self.clock() if self.clock else 0.0))
        self.letters.append(letter)
        action = self.script[index] if index < len(self.script) else None
        if callable(action):
            action = action(index, recipients)
        if isinstance(action, BaseException):
            raise action
        if action is not None:
            return list(action)
        out = []
        for r in recipients:
            if r.email in self.inactive:
                out.append(Outcome.rejected("inactive recipient (406)", inactive=True))
            elif r.email in self.reject:
                out.append(Outcome.rejected(self.reject[r.email]))
            else:
                out.append(Outcome.sent(f"pm-{r.delivery_id}"))
        return out


def timeout(message: str = "read timed out") -> UncertainProviderError:
    """What a provider raises when the request left and no answer came back."""
    return UncertainProviderError(message)


def rate_limited(retry_after: float) -> TransientProviderError:
    return TransientProviderError("429 too many requests", status=429, retry_after=retry_after)
