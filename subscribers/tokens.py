"""Signed, purpose-scoped, URL-safe tokens.

A token names one subscriber for one purpose (confirm, unsubscribe, view, vote) and carries when
it was issued. The MAC key is derived per purpose, so an unsubscribe token can never confirm an
address or open another reader's web copy. Verification is constant-time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable, Iterable

PURPOSES = ("confirm", "unsubscribe", "view", "vote")
# Confirmation links go stale; unsubscribe and view links live in archived mail and must keep
# working. A vote link asks about last year's tools for a year at most.
DEFAULT_MAX_AGE = {"confirm": 7 * 24 * 3600.0, "unsubscribe": None, "view": None,
                   "vote": 366 * 24 * 3600.0}
_MAC_BYTES = 20
_URLSAFE = bytes.maketrans(b"+/", b"-_")


class BadToken(ValueError):
    """Forged, truncated, expired or for another purpose. Deliberately says no more than that."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    def __init__(self, key: bytes, *, clock: Callable[[], float] = time.time) -> None:
        if len(key) < 16:
            raise ValueError("signing key must be at least 16 bytes")
        self._keys = {p: hmac.new(key, b"verdict-digest/token/" + p.encode(), hashlib.sha256).digest()
                      for p in PURPOSES}
        self._clock = clock

    def _mac(self, purpose: str, body: str) -> bytes:
        try:
            key = self._keys[purpose]
        except KeyError:
            raise ValueError(f"unknown token purpose {purpose!r}") from None
        return hmac.new(key, body.encode(), hashlib.sha256).digest()[:_MAC_BYTES]

    def sign(self, purpose: str, subject: int | str) -> str:
        body = f"{subject}.{int(self._clock()):x}"
        return f"{body}.{_b64(self._mac(purpose, body))}"

    def sign_many(self, purpose: str, subjects: Iterable[int | str]) -> list[str]:
        """The tokens `sign` would give each subject, issued at one instant.

        A send signs two tokens per recipient, a million times. HMAC-SHA256 is computed from
        the key's inner and outer hash states, prepared once a call and copied per token (C
        calls only: `hmac.HMAC.copy` is Python), and the MACs are made URL-safe base64 in one
        pass over the batch."""
        try:
            key = self._keys[purpose]
        except KeyError:
            raise ValueError(f"unknown token purpose {purpose!r}") from None
        block = key.ljust(64, b"\0")  # the keys are 32-byte digests: shorter than a SHA-256 block
        inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))
        issued = f".{int(self._clock()):x}"
        bodies = [f"{subject}{issued}" for subject in subjects]
        macs = []
        for body in bodies:
            mac = inner.copy()
            mac.update(body.encode())
            final = outer.copy()
            final.update(mac.digest())
            macs.append(binascii.b2a_base64(final.digest()[:_MAC_BYTES]))  # ends in "\n"
        encoded = b"".join(macs).translate(_URLSAFE, b"=").decode().split("\n")
        return [f"{body}.{mac}" for body, mac in zip(bodies, encoded)]

    def verify(self, token: str, purpose: str, *, max_age: float | None = -1.0) -> str:
        """Return the subject if the token is genuine, for `purpose`, and not too old."""
        if max_age == -1.0:
            max_age = DEFAULT_MAX_AGE.get(purpose)
        try:
            subject, issued_hex, mac_text = token.split(".")
            issued = int(issued_hex, 16)
            given = _unb64(mac_text)
        except (ValueError, AttributeError):
            raise BadToken("malformed token") from None
        expected = self._mac(purpose, f"{subject}.{issued_hex}")
        if not hmac.compare_digest(given, expected):
            raise BadToken("bad signature")
        if max_age is not None and self._clock() - issued > max_age:
            raise BadToken("expired")
        if not subject:
            raise BadToken("empty subject")
        return subject

    def verify_id(self, token: str, purpose: str, **kwargs) -> int:
        subject = self.verify(token, purpose, **kwargs)
        if not subject.isdigit():
            raise BadToken("bad subject")
        return int(subject)
