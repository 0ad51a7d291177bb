"""The default provider: one RFC 5322 `.eml` file per recipient plus a JSON-lines index.

The files are spliced from the issue's message encoded once (`digest.delivery.mime`), the
bytes an SMTP server offering 8BITMIME would receive.

Lets operators run the whole pipeline, and inspect exactly what would be sent, without an account.
Files are written atomically (temp file + rename) so a crash never leaves half a message.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formataddr, formatdate
from pathlib import Path

from digest.delivery.mime import MessageTemplate
from digest.delivery.providers.base import Letter, Outcome, Provider, Recipient


def build_mime(letter: Letter, recipient: Recipient) -> EmailMessage:
    """A complete multipart/alternative message for one recipient, built by the email package.

    The reference that `digest.delivery.mime.MessageTemplate` (what the providers send) is
    checked against; building one per recipient costs about a millisecond."""
    html, text = letter.fill(recipient)
    msg = EmailMessage(policy=SMTP)
    msg["From"] = letter.from_addr
    msg["To"] = formataddr((recipient.name or "", recipient.email))
    msg["Subject"] = letter.subject
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = letter.message_id_header(recipient)
    if letter.reply_to:
        msg["Reply-To"] = letter.reply_to
    for name, value in letter.headers(recipient).items():
        msg[name] = value
    msg.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    msg.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    return msg


_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]+")


class OutboxProvider(Provider):
    name = "outbox"
    batch_limit = 500
    substitutes = False
    idempotent = True  # a file named after the delivery is simply rewritten

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._template: MessageTemplate | None = None

    def template(self, letter: Letter) -> MessageTemplate:
        """The letter encoded once (8bit: a file has no transport to satisfy)."""
        if self._template is None or self._template.letter is not letter:
            self._template = MessageTemplate(letter, eight_bit=True)
        return self._template

    def send_batch(self, letter: Letter, recipients: Sequence[Recipient], *,
                   batch_key: str) -> list[Outcome]:
        folder = self.directory / _UNSAFE.sub("_", letter.tag)
        folder.mkdir(parents=True, exist_ok=True)
        outcomes, index_lines = [], []
        template = self.template(letter)
        date = template.date_header()
        for recipient in recipients:
            stem = (f"{recipient.delivery_id:08d}" if recipient.delivery_id is not None
                    else recipient.message_id)
            path = folder / f"{stem}-{_UNSAFE.sub('_', recipient.email)}.eml"
            data = template.render(recipient, date=date, smtputf8=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
            message_id = letter.message_id_header(recipient)
            outcomes.append(Outcome.sent(message_id))
            index_lines.append(json.dumps({"to": recipient.email, "subject": letter.subject,
                                           "file": path.name, "message_id": message_id,
                                           "batch": batch_key}, ensure_ascii=False))
        with open(folder / "index.jsonl", "a", encoding="utf-8") as index:
            index.write("\n".join(index_lines) + "\n")
        return outcomes
