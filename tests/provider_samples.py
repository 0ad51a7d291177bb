"""A small issue and its recipients, shared by the provider tests (written for them; the real
pipeline renders a full issue with the same placeholder tokens)."""

from __future__ import annotations

from digest.edition.personalize import NAME, UNSUBSCRIBE_URL, VIEW_URL
from digest.delivery.providers.base import Letter, Recipient

ISSUE = "2026-W47"

HTML = (f'<!doctype html><html><body><p>Hi {NAME},</p><p>This week: Ärger &amp; joy.</p>'
        f'<p><a href="{VIEW_URL}">View in browser</a> · '
        f'<a href="{UNSUBSCRIBE_URL}">Unsubscribe</a></p></body></html>')
TEXT = (f"Hi {NAME},\n\nThis week: Ärger & joy.\n\nView: {VIEW_URL}\n"
        f"Unsubscribe: {UNSUBSCRIBE_URL}\n")


def letter(**overrides) -> Letter:
    fields = dict(subject="Weekly verdicts: 2 new comparisons", html=HTML, text=TEXT,
                  from_addr="Weekly Verdicts <digest@verdicts.example>", tag=ISSUE,
                  list_id="Weekly Verdicts <weekly.verdicts.example>",
                  reply_to="editor@verdicts.example")
    fields.update(overrides)
    return Letter.from_documents(**fields)


def recipient(i: int, *, email: str | None = None, name: str | None = None) -> Recipient:
    address = email or f"reader{i}@inbox.example"
    return Recipient(
        email=address,
        name=name,
        values={UNSUBSCRIBE_URL: f"https://verdicts.example/u/tok{i}?a=1&b=2",
                VIEW_URL: f"https://verdicts.example/issues/{ISSUE}?t=v{i}",
                NAME: name or "reader"},
        delivery_id=1000 + i,
        message_id=f"m{i:04d}",
    )


def recipients(n: int) -> list[Recipient]:
    names = {1: "Ann & Bob <Co>", 2: "Zoë"}
    return [recipient(i, name=names.get(i)) for i in range(n)]


def settings_for(monkeypatch, tmp_path, **values):
    """Settings from these values only: no developer's `.env`, no stray DIGEST_* variables."""
    import os

    from digest.settings import load_settings

    monkeypatch.chdir(tmp_path)
    for key in list(os.environ):
        if key.startswith("DIGEST_") and key != "DIGEST_TEST_DATABASE_URL":
            monkeypatch.delenv(key)
    return load_settings(**values)
