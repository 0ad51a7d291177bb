"""The double opt-in email: Jinja2 -> MJML -> inlined CSS, plus plain text, sent through the
configured provider as a transactional message (no list headers; tag `confirm`).

It uses the weekly issue's palette and type (its own small `templates/email/confirm.css`), so the
first mail a subscriber gets already looks like the digest.
"""

from __future__ import annotations

import functools
import logging
import re
import textwrap
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import premailer
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from mjml import mjml2html

from digest.errors import PermanentProviderError, TransientProviderError
from digest.personalize import NAME
from digest.providers import Letter, Outcome, Provider, Recipient, build_provider
from digest.settings import Settings
from subscribers.tokens import DEFAULT_MAX_AGE

TAG = "confirm"
logging.getLogger("CSSUTILS").setLevel(logging.CRITICAL)  # cssutils warns about valid email CSS


def templates_root() -> Path:
    """`templates/` inside the package when installed from a wheel, else at the repository root."""
    here = Path(__file__).resolve().parent
    installed = here / "templates"
    return installed if (installed / "email").is_dir() else here.parent / "templates"


def _wrap(text: str, width: int = 72) -> str:
    return textwrap.fill(" ".join(str(text).split()), width=width, break_long_words=False,
                         break_on_hyphens=False)


@functools.lru_cache(maxsize=1)
def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(str(templates_root() / "email")),
                      autoescape=lambda name: bool(name) and not name.endswith(".txt.j2"),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                      keep_trailing_newline=True)
    env.filters["wrap"] = _wrap
    return env


@functools.lru_cache(maxsize=1)
def _inline_css() -> str:
    return (templates_root() / "email" / "confirm.css").read_text("utf-8")


# MJML's own reset and layout blocks (and the dark-mode block) stay in <head> as they are; only
# confirm.css is inlined into the elements.
_STYLE_TAG = re.compile(r"<style(?= type=\"text/css\">| media=)")


def _inline(document: str) -> str:
    marked = _STYLE_TAG.sub('<style data-premailer="ignore"', document)
    out = premailer.transform(
        marked, css_text=[_inline_css()], strip_important=False, allow_network=False,
        allow_loading_external_files=False, disable_link_rewrites=True, base_url=None,
        remove_classes=False, disable_validation=True, cssutils_logging_level=logging.CRITICAL)
    # lxml drops MJML's lower-case doctype; without one, mail clients render in quirks mode.
    return out if out.lstrip()[:9].lower() == "<!doctype" else "<!doctype html>\n" + out


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
    env = _environment()
    mjml_source = env.get_template("confirm.mjml.j2").render(context)
    html = _inline(mjml2html(mjml_source, fonts={}))
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
