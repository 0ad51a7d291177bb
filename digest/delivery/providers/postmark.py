"""Postmark: `POST /email/batch`, up to 500 complete messages a call.

Postmark answers HTTP 200 even when some messages fail: the body is an array, in request order,
of `{ErrorCode, Message, MessageID, To}`. Postmark has no idempotency key, so an unanswered
batch is left to the operator.

How each `ErrorCode` is read (Postmark's error code table):
  0                    accepted
  406                  inactive recipient (bounced or complained before): rejected, inactive
  300                  invalid message or address: rejected
  100, 429             maintenance, rate limit: transient
  10, 400, 401, 405,   bad token, sender signature missing or unconfirmed, account not allowed
  412, 413             to send, pending or suspended: the account, not the recipient, is at
                       fault. If no message of the batch got through the whole call fails
                       permanently (the send pauses until the operator fixes it); otherwise those
                       recipients are transient, so fixing the account lets them go out.
  anything else        rejected with the code and Postmark's message: a per-message refusal
                       that re-sending the same message cannot change.
"""

from __future__ import annotations

from collections.abc import Sequence
from email.utils import formataddr

import requests

from digest.errors import PermanentProviderError
from digest.delivery.providers.base import Letter, Outcome, Recipient
from digest.delivery.providers.http import (Call, HttpProvider, UnreadableAnswer, body_text, json_answer,
                                   json_array, json_object)

ACCEPTED = 0
INACTIVE = 406
TRANSIENT_CODES = frozenset({100, 429})
ACCOUNT_CODES = frozenset({10, 400, 401, 405, 412, 413})
_TAG_MAX = 1000
_METADATA_VALUE_MAX = 80


class PostmarkProvider(HttpProvider):
    name = "postmark"
    batch_limit = 500
    substitutes = False
    idempotent = False
    default_base_url = "https://api.postmarkapp.com"

    def __init__(self, token: str, *, stream: str = "broadcast", **kwargs) -> None:
        super().__init__(token, **kwargs)
        self.stream = stream

    def auth_headers(self) -> dict[str, str]:
        return {"X-Postmark-Server-Token": self.token}

    def fields(self, letter: Letter, recipient: Recipient) -> dict:
        """One message without its bodies, which are spliced in pre-encoded."""
        metadata = {"issue": letter.tag[:_METADATA_VALUE_MAX]}
        if recipient.delivery_id is not None:
            metadata["delivery"] = str(recipient.delivery_id)
        fields = {
            "From": letter.from_addr,
            "To": formataddr((recipient.name or "", recipient.email)),
            "Subject": letter.subject,
            "Headers": [{"Name": k, "Value": v} for k, v in letter.headers(recipient).items()],
            "MessageStream": self.stream,
            "Tag": letter.tag[:_TAG_MAX],
            "Metadata": metadata,
        }
        if letter.reply_to:
            fields["ReplyTo"] = letter.reply_to
        return fields

    def build_request(self, letter: Letter, recipients: Sequence[Recipient],
                      batch_key: str) -> Call:
        html, text = self.encoded_bodies(letter)
        body = json_array([
            json_object(self.fields(letter, r), {"HtmlBody": html.pieces(r.values),
                                                 "TextBody": text.pieces(r.values)})
            for r in recipients])
        return Call("/email/batch", body=body, headers={"Content-Type": "application/json"})

    def parse_outcomes(self, response: requests.Response, letter: Letter,
                       recipients: Sequence[Recipient]) -> list[Outcome]:
        results = json_answer(response, list)
        if len(results) != len(recipients):
            raise UnreadableAnswer(f"expected {len(recipients)} results in request order")
        if not any(isinstance(r, dict) and r.get("ErrorCode") == ACCEPTED for r in results):
            codes = {r.get("ErrorCode") for r in results if isinstance(r, dict)}
            if codes and codes <= ACCOUNT_CODES:
                first = results[0]
                raise PermanentProviderError(
                    f"postmark refused every message for an account reason: "
                    f"{first.get('Message')} (ErrorCode {first.get('ErrorCode')})",
                    status=response.status_code, body=body_text(response)[:2000])
        return [self._outcome(result) for result in results]

    @staticmethod
    def _outcome(result: object) -> Outcome:
        if not isinstance(result, dict) or not isinstance(result.get("ErrorCode"), int):
            raise UnreadableAnswer(f"result without an ErrorCode: {result!r:.200}")
        code, text = result["ErrorCode"], str(result.get("Message", ""))
        reason = f"postmark {code}: {text}"
        if code == ACCEPTED:
            return Outcome.sent(result.get("MessageID"))
        if code == INACTIVE:
            return Outcome.rejected(reason, inactive=True)
        if code in TRANSIENT_CODES or code in ACCOUNT_CODES:
            return Outcome.transient(reason)
        return Outcome.rejected(reason)
