"""SendGrid: `POST /v3/mail/send`, up to 1,000 personalizations sharing one body.

The issue's body travels once per batch: our placeholder tokens stay in the content and each
personalization's `substitutions` maps them to that recipient's values. The HTML part and the
text part get different keys, because a value that goes into HTML must be escaped and the same
value in plain text must not. Headers that differ per recipient (List-Unsubscribe) go into the
personalization; the rest once at the top.

SendGrid answers 202 with no per-recipient result: every recipient of an accepted call is
`sent` with the call's `X-Message-Id` (the events webhook reports the rest). A 400 that names
personalizations (`personalizations.3.to.0.email`) rejects only those recipients; the others
were not sent and are transient. `custom_args` sits in each personalization, where the API
schema puts an object (its top-level field is a string in the published spec).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from email.utils import parseaddr
from html import escape as html_escape

import requests

from digest.providers.base import Letter, Outcome, Recipient
from digest.providers.http import (Body, Call, HttpProvider, encode_json, json_string,
                                   split_headers)

_FIELD_INDEX = re.compile(r"^personalizations\.(\d+)(\.|$)")


def text_key(token: str) -> str:
    """The substitution key a token gets in the text part (`%%NAME%%` -> `%%NAME_TEXT%%`)."""
    return token[:-2] + "_TEXT%%"


def address(raw: str) -> dict[str, str]:
    name, email = parseaddr(raw)
    return {"email": email, "name": name} if name else {"email": email}


class SendGridProvider(HttpProvider):
    name = "sendgrid"
    batch_limit = 1000
    substitutes = True
    idempotent = False
    default_base_url = "https://api.sendgrid.com"

    def __init__(self, token: str, **kwargs) -> None:
        super().__init__(token, **kwargs)
        self._message_head: tuple[Letter, tuple, bytes] | None = None

    def message_head(self, letter: Letter, shared: dict[str, str]) -> bytes:
        """Everything but the personalizations, JSON-encoded once per letter: the body with
        its substitution keys, sender, subject, shared headers."""
        key = tuple(shared.items())
        cached = self._message_head
        if cached is None or cached[0] is not letter or cached[1] != key:
            html = letter.html.fill({t: t for t in letter.html.tokens})  # tokens are HTML-safe
            text = letter.text.fill({t: text_key(t) for t in letter.text.tokens})
            message: dict = {
                "from": address(letter.from_addr),
                "subject": letter.subject,
                # SendGrid requires text/plain before text/html.
                "content": [{"type": "text/plain", "value": text},
                            {"type": "text/html", "value": html}],
            }
            if shared:
                message["headers"] = shared
            if letter.reply_to:
                message["reply_to"] = address(letter.reply_to)
            cached = self._message_head = (letter, key, encode_json(message))
        return cached[2]

    def personalizations(self, letter: Letter, recipients: Sequence[Recipient],
                         own: Sequence[dict[str, str]]) -> bytes:
        """The personalizations array, encoded by hand from pre-encoded keys: at a million
        recipients, building and encoding a dict per recipient is a third of the send's CPU.
        Every value goes through the C JSON string encoder; tests parse and validate the result
        against SendGrid's schema."""
        html_tokens, text_tokens = sorted(letter.html.tokens), sorted(letter.text.tokens)
        html_keys = [json_string(t) + ":" for t in html_tokens]
        text_keys = [json_string(text_key(t)) + ":" for t in text_tokens]
        issue = '{"issue":' + json_string(letter.tag)
        out = []
        for recipient, headers in zip(recipients, own):
            values = recipient.values
            to = '{"to":[{"email":' + json_string(recipient.email)
            if recipient.name:
                to += ',"name":' + json_string(recipient.name)
            args = issue
            if recipient.delivery_id is not None:
                args += ',"delivery":"' + str(int(recipient.delivery_id)) + '"'
            subs = [k + json_string(html_escape(values[t], quote=True))
                    for k, t in zip(html_keys, html_tokens)]
            subs += [k + json_string(values[t]) for k, t in zip(text_keys, text_tokens)]
            item = to + '}],"custom_args":' + args + "}"
            if subs:
                item += ',"substitutions":{' + ",".join(subs) + "}"
            if headers:
                item += ',"headers":{' + ",".join(json_string(k) + ":" + json_string(v)
                                                  for k, v in headers.items()) + "}"
            out.append(item + "}")
        return ("[" + ",".join(out) + "]").encode("utf-8")

    def payload(self, letter: Letter, recipients: Sequence[Recipient]) -> Body:
        shared, own = split_headers(letter, recipients)
        head = self.message_head(letter, shared)
        return Body([head[:-1], b',"personalizations":',
                     self.personalizations(letter, recipients, own), b"}"])

    def build_request(self, letter: Letter, recipients: Sequence[Recipient],
                      batch_key: str) -> Call:
        return Call("/v3/mail/send", body=self.payload(letter, recipients),
                    headers={"Content-Type": "application/json"})

    def parse_outcomes(self, response: requests.Response, letter: Letter,
                       recipients: Sequence[Recipient]) -> list[Outcome]:
        message_id = response.headers.get("X-Message-Id")
        return [Outcome.sent(message_id)] * len(recipients)

    def refused(self, response: requests.Response, recipients: Sequence[Recipient]
                ) -> list[Outcome] | None:
        """A 400 naming personalizations rejects those recipients and nobody else."""
        if response.status_code != 400:
            return None
        try:
            errors = response.json().get("errors") or []
        except (ValueError, AttributeError):
            return None
        bad: dict[int, str] = {}
        for error in errors:
            match = _FIELD_INDEX.match(str((error or {}).get("field") or ""))
            if not match or int(match.group(1)) >= len(recipients):
                return None  # an error about the whole message: nobody is to blame alone
            bad.setdefault(int(match.group(1)), str(error.get("message") or "invalid"))
        if not bad:
            return None
        return [Outcome.rejected(f"sendgrid 400: {bad[i]}") if i in bad
                else Outcome.transient("not sent: sendgrid refused the call because of "
                                       "another recipient")
                for i in range(len(recipients))]

