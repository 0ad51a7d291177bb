"""Signed, purpose-scoped, URL-safe tokens bound to the person they were issued for.

A token names one subscriber for one purpose (confirm, unsubscribe, view, vote,
preferences), the person
holding that id (a keyed hash of their address, shortened to a tag), and when it was issued:

    <subject>.<holder tag>.<issued, hex seconds>.<MAC>

The MAC key is derived per purpose, so an unsubscribe token can never confirm an address or open
another reader's web copy. The holder tag is why a token acts on nobody else even if the id it
names were ever given to another person: whoever acts on a token checks `held_by` against the
row the id leads to. The tag is keyed, so a URL in a log does not let anyone test a guessed
address. Verification is constant-time.

Tokens from before holders were bound (`<subject>.<issued>.<MAC>`, in mail already sent) still
verify, but `held_by` accepts them only while they are unambiguous: the row was created no later
than the token was issued, so it is the row the token was signed for.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

PURPOSES = ("confirm", "unsubscribe", "view", "vote", "preferences")
# Confirmation links go stale; unsubscribe and view links live in archived mail and must keep
# working. A vote link asks about last year's tools for a year at most.
DEFAULT_MAX_AGE = {"confirm": 7 * 24 * 3600.0, "unsubscribe": None, "view": None,
                   "vote": 366 * 24 * 3600.0, "preferences": None}
_MAC_BYTES = 20
_TAG_BYTES = 6  # tells the holder apart from whoever might later hold the id; 1 in 2**48 misses
_URLSAFE = bytes.maketrans(b"+/", b"-_")


class BadToken(ValueError):
    """Forged, truncated, expired or for another purpose. Deliberately says no more than that."""


@dataclass(frozen=True)
class Claim:
    """What a genuine token says: the subject, whom it was issued for, and when."""

    subject: str
    issued: int  # Unix seconds
    holder_tag: str | None  # None: a token from before holders were bound

    @property
    def subject_id(self) -> int:
        if not self.subject.isdigit():
            raise BadToken("bad subject")
        return int(self.subject)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class _Prepared:
    """HMAC-SHA256 from the key's inner and outer hash states, prepared once and copied per
    message (C calls only: `hmac.HMAC.copy` is Python). Same result as `hmac.new`."""

    def __init__(self, key: bytes) -> None:
        block = key.ljust(64, b"\0")  # the keys are 32-byte digests: shorter than a block
        self.inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self.outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def b64_many(self, messages: Iterable[str], size: int) -> list[str]:
        """URL-safe base64 of each message's MAC cut to `size` bytes, encoded in one pass."""
        inner, outer = self.inner, self.outer
        macs = []
        for message in messages:
            mac = inner.copy()
            mac.update(message.encode())
            final = outer.copy()
            final.update(mac.digest())
            macs.append(binascii.b2a_base64(final.digest()[:size]))  # ends in "\n"
        if not macs:
            return []
        return b"".join(macs).translate(_URLSAFE, b"=").decode().split("\n")[:-1]


class Signer:
    def __init__(self, key: bytes, *, clock: Callable[[], float] = time.time) -> None:
        if len(key) < 16:
            raise ValueError("signing key must be at least 16 bytes")
        self._keys = {p: hmac.new(key, b"verdict-digest/token/" + p.encode(), hashlib.sha256).digest()
                      for p in PURPOSES}
        self._prepared = {p: _Prepared(k) for p, k in self._keys.items()}
        self._holder_key = hmac.new(key, b"verdict-digest/holder", hashlib.sha256).digest()
        self._clock = clock

    def _mac(self, purpose: str, body: str) -> bytes:
        try:
            key = self._keys[purpose]
        except KeyError:
            raise ValueError(f"unknown token purpose {purpose!r}") from None
        return hmac.new(key, body.encode(), hashlib.sha256).digest()[:_MAC_BYTES]

    # --- issuing ------------------------------------------------------------------------------

    def bind_many(self, subjects: Sequence[int | str], holders: Sequence[str]) -> list[str]:
        """`subject.tag` for each subject and its holder (the subscriber's stored address):
        what `sign_many` signs. A send binds a batch once and signs several purposes with it."""
        if len(subjects) != len(holders):
            raise ValueError("one holder per subject")
        tags = self._tags(holders)
        return [f"{subject}.{tag}" for subject, tag in zip(subjects, tags)]

    def _tags(self, holders: Iterable[str]) -> list[str]:
        """Keyed BLAKE2b of each address, cut to the tag's size: a keyed hash in one C call per
        address, so binding adds little to the two MACs a send already makes per recipient."""
        key, blake2b = self._holder_key, hashlib.blake2b
        raw = [binascii.b2a_base64(blake2b(holder.encode(), key=key, digest_size=_TAG_BYTES)
                                   .digest()) for holder in holders]
        if not raw:
            return []
        return b"".join(raw).translate(_URLSAFE, b"=").decode().split("\n")[:-1]

    def sign_many(self, purpose: str, bound: Sequence[str]) -> list[str]:
        """The tokens for subjects already bound by `bind_many`, issued at one instant.

        A send signs two tokens per recipient, a million times: the hash states are prepared
        once and the MACs made URL-safe base64 in one pass over the batch."""
        try:
            prepared = self._prepared[purpose]
        except KeyError:
            raise ValueError(f"unknown token purpose {purpose!r}") from None
        issued = f".{int(self._clock()):x}"
        bodies = [f"{subject}{issued}" for subject in bound]
        return [f"{body}.{mac}" for body, mac in zip(bodies, prepared.b64_many(bodies, _MAC_BYTES))]

    def sign(self, purpose: str, subject: int | str, holder: str) -> str:
        """One token for `subject`, usable only while `holder` is who the subject leads to."""
        if "." in str(subject) or not str(subject):
            raise ValueError(f"a token subject cannot be empty or contain '.': {subject!r}")
        return self.sign_many(purpose, self.bind_many([subject], [holder]))[0]

    # --- checking ------------------------------------------------------------------------------

    def verify(self, token: str, purpose: str, *, max_age: float | None = -1.0) -> Claim:
        """The claim of a genuine, unexpired token for `purpose`. Whom it may act on is a second
        question: ask `held_by` with the row the subject leads to before acting."""
        if max_age == -1.0:
            max_age = DEFAULT_MAX_AGE.get(purpose)
        try:
            parts = token.split(".")
            if len(parts) == 4:
                subject, tag, issued_hex, mac_text = parts
            elif len(parts) == 3:
                (subject, issued_hex, mac_text), tag = parts, None
            else:
                raise ValueError
            issued = int(issued_hex, 16)
            given = _unb64(mac_text)
        except (ValueError, AttributeError, binascii.Error):
            raise BadToken("malformed token") from None
        body = token.rsplit(".", 1)[0]
        if not hmac.compare_digest(given, self._mac(purpose, body)):
            raise BadToken("bad signature")
        if max_age is not None and self._clock() - issued > max_age:
            raise BadToken("expired")
        if not subject:
            raise BadToken("empty subject")
        return Claim(subject, issued, tag)

    def verify_id(self, token: str, purpose: str, **kwargs) -> int:
        """The subscriber id a genuine token names (not yet whether it may act on them)."""
        return self.verify(token, purpose, **kwargs).subject_id

    def held_by(self, claim: Claim, holder: str, *, since: dt.datetime | float) -> bool:
        """Was the token issued for this holder? `holder` is the stored address of the row the
        subject leads to now, `since` when that row was created.

        A token from before holders were bound names only an id: it is taken only if the row
        already existed when the token was issued (so it is the row it was signed for); a row
        created later holds an id someone else had, and the token does nothing to it."""
        if claim.holder_tag is None:
            created = since.timestamp() if isinstance(since, dt.datetime) else float(since)
            return int(created) <= claim.issued
        expected = self._tags([holder])[0]
        return hmac.compare_digest(claim.holder_tag.encode(), expected.encode())
