"""The double opt-in email: Jinja2 -> MJML -> inlined CSS, plus plain text, sent through the
configured provider as a transactional message (no list headers; tag `confirm`).

It uses the weekly issue's palette and type (its own small `templates/email/confirm.css`), so the
first mail a subscriber gets already looks like the digest.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from digest.errors import PermanentProviderError, TransientProviderError
from digest.edition.personalize import NAME
from digest.delivery.providers import Letter, Outcome, Provider, Recipient, build_provider
from digest.edition.render import environment, mjml_to_email, template_dir
from digest.settings import Settings
from subscribers.tokens import DEFAULT_MAX_AGE

TAG = "confirm"


@functools.lru_cache(maxsize=1)
def _inline_css() -> str:
    return (template_dir() / "confirm.css").read_text("utf-8")


@dataclass(frozen=True)
class ConfirmationMail:
    subject: str
    html: str  # may contain the %%NAME%% placeholder
    text: str
    values: dict[str, str]  # what fills the placeholders for this recipient


def render_confirmation(settings: Settings, *, name: str | None,
                        confirm_url: str) -> ConfirmationMail:
    """Subject, inlined HTML and text for one confirmation (~20 ms, mostly the CSS inliner)."""
    subject = f"Confirm your subscription to {settings.site_name}"
    max_age = DEFAULT_MAX_AGE["confirm"] or 0
    context = {
        "subject": subject,
        "preheader": "One click to start getting the weekly AI tool verdicts.",
        "site_name": settings.site_name,
        "site_host": urlsplit(settings.base_url).netloc,
        "postal_address": settings.postal_address,
        "confirm_url": confirm_url,
        "valid_days": int(max_age // 86400),
        "has_name": bool(name),
        "name_token": NAME,
    }
    env = environment()
    mjml_source = env.get_template("confirm.mjml.j2").render(context)
    html = mjml_to_email(mjml_source, inline_css=_inline_css())
    text = env.get_template("confirm.txt.j2").render(context)
    return ConfirmationMail(subject, html, text, {NAME: name} if name else {})


def send_confirmation(settings: Settings, email: str, name: str | None, confirm_url: str, *,
                      provider: Provider | None = None) -> Outcome:
    """Render and send one confirmation; raises a ProviderError unless the provider accepted it."""
    mail = render_confirmation(settings, name=name, confirm_url=confirm_url)
    letter = Letter.from_documents(subject=mail.subject, html=mail.html, text=mail.text,
                                   from_addr=settings.from_, tag=TAG, reply_to=settings.reply_to,
                                   bulk=False)
    recipient = Recipient(email=email, values=mail.values, name=name)
    owned = provider is None
    provider = provider or build_provider(settings)
    try:
        outcome = provider.send_batch(letter, [recipient], batch_key=f"{TAG}-{uuid.uuid4().hex}")[0]
    finally:
        if owned:
            provider.close()
    if outcome.status == "transient":
        raise TransientProviderError(f"confirmation to {email} not sent yet: {outcome.reason}")
    if outcome.status != "sent":
        raise PermanentProviderError(f"confirmation to {email} refused: {outcome.reason}")
    return outcome


def confirmation_sender(settings: Settings) -> Callable[[str, str | None, str], None]:
    """The `send_confirmation(email, name, confirm_url)` callable the web routes are given."""

    def send(email: str, name: str | None, confirm_url: str) -> None:
        send_confirmation(settings, email, name, confirm_url)

    return send
