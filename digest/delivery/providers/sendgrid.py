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
from collections.abc import Iterable, Mapping, Sequence
from email.utils import parseaddr
from html import escape as html_escape
from itertools import repeat

import requests

from digest.delivery.providers.base import Letter, Outcome, Recipient
from digest.delivery.providers.http import Body, Call, HttpProvider, encode_json, json_string

_FIELD_INDEX = re.compile(r"^personalizations\.(\d+)(\.|$)")


def text_key(token: str) -> str:
    """The substitution key a token gets in the text part (`%%NAME%%` -> `%%NAME_TEXT%%`)."""
    return token[:-2] + "_TEXT%%"


# What makes a value need escaping: in a JSON string, quotes, backslashes and control characters
# (as bytes: UTF-8 never uses these bytes inside a multi-byte character); in HTML, `html.escape`'s.
_JSON_SPECIAL = bytes(range(0x20)) + b'"\\'
_HTML_SPECIAL = "&<>\"'"
_SEP = "\x7f"  # joins a column for one escaping pass; neither escaping touches it


def json_inners(column: Sequence[str]) -> list[str]:
    """Each value as the inside of its JSON string literal (`json_string(value)[1:-1]`).

    Almost every value (addresses, signed links, most names) needs no escaping at all, and one
    byte-level check of the whole column says so: then the values are used as they are."""
    joined = "".join(column).encode("utf-8", "surrogatepass")
    if len(joined.translate(None, _JSON_SPECIAL)) == len(joined):
        return list(column)
    return [json_string(value)[1:-1] for value in column]


def html_escapes(column: Sequence[str]) -> list[str]:
    """`html.escape(value, quote=True)` of each value: the column untouched when nothing in it
    needs escaping, else one escaping pass over the joined column."""
    joined = _SEP.join(column)
    if not any(char in joined for char in _HTML_SPECIAL):
        return list(column)
    if joined.count(_SEP) != len(column) - 1:  # a value holds the separator itself
        return [html_escape(value, quote=True) for value in column]
    return html_escape(joined, quote=True).split(_SEP)


class _Rows:
    """Strings built column by column: constant text and per-row columns, joined row-wise in
    C (`map("".join, zip(...))`), so no Python code runs per row."""

    def __init__(self) -> None:
        self._columns: list[Iterable[str]] = []
        self._text = ""

    def text(self, text: str) -> None:
        self._text += text

    def column(self, column: Sequence[str]) -> None:
        if self._text:
            self._columns.append(repeat(self._text))
            self._text = ""
        self._columns.append(column)

    def rows(self) -> Iterable[str]:
        if self._text:
            self._columns.append(repeat(self._text))
            self._text = ""
        return map("".join, zip(*self._columns))

    def string_object(self, field: str, columns: Iterable[tuple[str, Sequence[str]]]) -> None:
        """`,"field":{"key":"<this row's value>",...}` from (key, column of values) pairs; nothing
        when there are none."""
        opener = f',{json_string(field)}:{{'
        for key, column in columns:
            self.text(opener + json_string(key) + ':"')
            self.column(json_inners(column))
            self.text('"')
            opener = ","
        if opener == ",":
            self.text("}")


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
                         own: Mapping[str, Sequence[str]]) -> bytes:
        """The personalizations array, encoded by hand a column at a time: each field of the
        whole batch (every address, every HTML value, ...) is checked, and escaped only when it
        must be, in a few C calls, and the objects are joined from the columns. At a million
        recipients a dict, or even a few Python calls, per recipient is a large share of the
        send's CPU. `own` holds the headers that differ per recipient, one column per header
        name. Tests parse and validate the result against SendGrid's schema."""
        if not recipients:
            return b"[]"
        html_tokens, text_tokens = sorted(letter.html.tokens), sorted(letter.text.tokens)
        values = [r.values for r in recipients]
        names = [r.name for r in recipients]
        ids = [r.delivery_id for r in recipients]
        rows = _Rows()
        rows.text('{"to":[{"email":"')
        rows.column(json_inners([r.email for r in recipients]))
        rows.text('"')
        if any(names):
            encoded = json_inners([name or "" for name in names])
            rows.column([f',"name":"{e}"' if name else "" for name, e in zip(names, encoded)])
        rows.text('}],"custom_args":{"issue":' + json_string(letter.tag))
        if None in ids:
            rows.column(["" if d is None else f',"delivery":"{int(d)}"' for d in ids])
        else:
            rows.text(',"delivery":"')
            rows.column(list(map(str, map(int, ids))))
            rows.text('"')
        rows.text("}")
        subs = [(t, html_escapes([v[t] for v in values])) for t in html_tokens]
        subs += [(text_key(t), [v[t] for v in values]) for t in text_tokens]
        rows.string_object("substitutions", subs)
        rows.string_object("headers", own.items())
        rows.text("}")
        return ("[" + ",".join(rows.rows()) + "]").encode("utf-8")

    def payload(self, letter: Letter, recipients: Sequence[Recipient]) -> Body:
        shared, own = letter.batch_headers(recipients)
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

