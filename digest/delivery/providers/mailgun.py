"""Mailgun: `POST /v3/{domain}/messages`, a multipart form with up to 1,000 `to` fields.

Mailgun's batch sending needs `recipient-variables` (JSON keyed by address): with it every
recipient gets their own message; **without it every recipient would see the whole To list**.
So this module never builds a form without it, even when the body has no placeholders.

Our tokens become `%recipient.h_name%` in the HTML part and `%recipient.t_name%` in the text
part (the HTML value is escaped, the text value is not). Headers that differ per recipient
(List-Unsubscribe) use recipient variables too: Mailgun substitutes them in `h:` headers.
`v:issue` comes back in every webhook as `user-variables`.

Mailgun returns one id for the whole batch; per-recipient results arrive by webhook. A 404
means the domain is unknown to this account or lives in the other region (EU accounts use
`https://api.eu.mailgun.net`, set it as DIGEST_PROVIDER_URL).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from email.utils import formataddr
from html import escape as html_escape

import requests

from digest.errors import PermanentProviderError
from digest.delivery.providers.base import Letter, Outcome, Recipient
from digest.delivery.providers.http import Call, HttpProvider, body_text, json_answer, split_headers


def variable(token: str, part: str) -> str:
    """`%%UNSUBSCRIBE_URL%%` in the HTML part -> `h_unsubscribe_url`."""
    return f"{part}_{token.strip('%').lower()}"


class MailgunProvider(HttpProvider):
    name = "mailgun"
    batch_limit = 1000
    substitutes = True
    idempotent = False
    default_base_url = "https://api.mailgun.net"

    def __init__(self, token: str, *, domain: str, **kwargs) -> None:
        if not domain:
            raise ValueError("mailgun: a sending domain is required")
        self.domain = domain
        super().__init__(token, **kwargs)

    def auth_headers(self) -> dict[str, str]:
        credentials = base64.b64encode(f"api:{self.token}".encode()).decode()
        return {"Authorization": f"Basic {credentials}"}

    def form(self, letter: Letter, recipients: Sequence[Recipient]) -> list[tuple[str, str]]:
        html_tokens, text_tokens = letter.html.tokens, letter.text.tokens
        html = letter.html.fill({t: f"%recipient.{variable(t, 'h')}%" for t in html_tokens})
        text = letter.text.fill({t: f"%recipient.{variable(t, 't')}%" for t in text_tokens})
        shared, own = split_headers(letter, recipients)
        per_header = sorted({name for headers in own for name in headers})
        header_vars = {name: f"hdr_{i}" for i, name in enumerate(per_header)}

        variables: dict[str, dict[str, str]] = {}
        fields: list[tuple[str, str]] = [("from", letter.from_addr)]
        for recipient, headers in zip(recipients, own):
            if recipient.email in variables:
                raise ValueError(f"mailgun: {recipient.email} appears twice in one batch")
            values = recipient.values
            mine = {variable(t, "h"): html_escape(values[t], quote=True) for t in html_tokens}
            mine.update({variable(t, "t"): values[t] for t in text_tokens})
            mine.update({header_vars[name]: value for name, value in headers.items()})
            variables[recipient.email] = mine
            fields.append(("to", formataddr((recipient.name or "", recipient.email))))
        fields += [("subject", letter.subject), ("text", text), ("html", html),
                   ("recipient-variables", json.dumps(variables, ensure_ascii=False))]
        for name, value in shared.items():
            fields.append((f"h:{name}", value))
        for name, var in header_vars.items():
            fields.append((f"h:{name}", f"%recipient.{var}%"))
        if letter.reply_to:
            fields.append(("h:Reply-To", letter.reply_to))
        fields.append(("v:issue", letter.tag))
        return fields

    def build_request(self, letter: Letter, recipients: Sequence[Recipient],
                      batch_key: str) -> Call:
        fields = self.form(letter, recipients)
        if not any(name == "recipient-variables" for name, _ in fields):
            raise AssertionError("mailgun: refusing to send a batch without recipient-variables")
        return Call(f"/v3/{self.domain}/messages",
                    form=[(name, (None, value)) for name, value in fields])

    def parse_outcomes(self, response: requests.Response, letter: Letter,
                       recipients: Sequence[Recipient]) -> list[Outcome]:
        answer = json_answer(response, dict)
        return [Outcome.sent(answer.get("id"))] * len(recipients)

    def refused(self, response: requests.Response, recipients: Sequence[Recipient]
                ) -> list[Outcome] | None:
        if response.status_code == 404:
            raise PermanentProviderError(
                f"mailgun does not know the domain {self.domain!r} at {self.base_url} (404); "
                "check DIGEST_MAILGUN_DOMAIN, and for an EU account set DIGEST_PROVIDER_URL="
                "https://api.eu.mailgun.net", status=404, body=body_text(response)[:2000])
        return None
