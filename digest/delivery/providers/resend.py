"""Resend: `POST /emails/batch`, up to 100 complete emails a call, with an idempotency key.

* `Idempotency-Key` is the ledger's batch key, so a batch that went out unanswered can be sent
  again with the same key and Resend delivers it at most once (keys are kept 24 hours).
* `x-batch-validation: permissive` stops one bad address from sinking the batch: the answer is
  `{data: [{id}...], errors: [{index, message}...]}`, where `data` lists the created emails in
  request order without the failed indexes. Those indexes are rejected; the rest are sent.
* 409 `concurrent_idempotent_requests` (the same key still in flight) is transient;
  409 `invalid_idempotent_request` (the key reused with another payload) is a bug: permanent.
* A `User-Agent` is required (the shared session sends one).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from email.utils import formataddr

import requests

from digest.errors import PermanentProviderError, TransientProviderError
from digest.delivery.providers.base import Letter, Outcome, Recipient
from digest.delivery.providers.http import (Call, HttpProvider, UnreadableAnswer, json_answer, json_array,
                                   json_object)

KEY_MAX = 256


def idempotency_key(batch_key: str) -> str:
    """The batch key itself when it fits Resend's 256 characters, else a stable digest of it."""
    if len(batch_key) <= KEY_MAX and batch_key.isascii():
        return batch_key
    return "sha256-" + hashlib.sha256(batch_key.encode()).hexdigest()


class ResendProvider(HttpProvider):
    name = "resend"
    batch_limit = 100
    substitutes = False
    idempotent = True
    default_base_url = "https://api.resend.com"

    def fields(self, letter: Letter, recipient: Recipient) -> dict:
        """One email without its bodies, which are spliced in pre-encoded."""
        fields = {
            "from": letter.from_addr,
            "to": [formataddr((recipient.name or "", recipient.email))],
            "subject": letter.subject,
            "headers": letter.headers(recipient),
        }
        if letter.reply_to:
            fields["reply_to"] = [letter.reply_to]
        return fields

    def build_request(self, letter: Letter, recipients: Sequence[Recipient],
                      batch_key: str) -> Call:
        html, text = self.encoded_bodies(letter)
        body = json_array([json_object(self.fields(letter, r), {"html": html.pieces(r.values),
                                                                "text": text.pieces(r.values)})
                           for r in recipients])
        return Call("/emails/batch", body=body, headers={
            "Content-Type": "application/json",
            "Idempotency-Key": idempotency_key(batch_key),
            "x-batch-validation": "permissive",
        })

    def parse_outcomes(self, response: requests.Response, letter: Letter,
                       recipients: Sequence[Recipient]) -> list[Outcome]:
        answer = json_answer(response, dict)
        if not isinstance(answer.get("data"), list):
            raise UnreadableAnswer("no `data` list")
        failed: dict[int, str] = {}
        for error in answer.get("errors") or []:
            index = error.get("index") if isinstance(error, dict) else None
            if isinstance(index, int) and 0 <= index < len(recipients):
                failed.setdefault(index, str(error.get("message") or "invalid"))
        ids = [item.get("id") if isinstance(item, dict) else None for item in answer["data"]]
        created = [i for i in range(len(recipients)) if i not in failed]
        if len(ids) != len(created):
            # Every email not listed in `errors` was created; only which id is whose is unknown.
            ids = [None] * len(created)
        by_index = dict(zip(created, ids))
        return [Outcome.rejected(f"resend: {failed[i]}") if i in failed
                else Outcome.sent(by_index[i]) for i in range(len(recipients))]

    def refused(self, response: requests.Response, recipients: Sequence[Recipient]
                ) -> list[Outcome] | None:
        if response.status_code != 409:
            return None
        try:
            name = str(response.json().get("name", ""))
        except (ValueError, AttributeError):
            name = ""
        if name == "concurrent_idempotent_requests":
            raise self._error(TransientProviderError, "resend is still processing this batch "
                              "key (409 concurrent_idempotent_requests)", response)
        raise self._error(PermanentProviderError, f"resend refused the idempotency key (409 "
                          f"{name or 'conflict'}): the same batch key was used with another "
                          "payload", response)
