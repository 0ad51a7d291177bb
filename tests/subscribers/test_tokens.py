"""Signed tokens: genuine ones verify for their own purpose only; anything altered, cut short,
too old or meant for another purpose is refused."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs, urlsplit

import pytest

from subscribers.links import Links
from subscribers.tokens import BadToken, Signer

KEY = b"unit-test-key-0123456789abcdef"


class Clock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def signer(clock) -> Signer:
    return Signer(KEY, clock=clock)


@pytest.mark.parametrize("purpose", ["confirm", "unsubscribe", "view"])
def test_round_trip_for_each_purpose(signer, purpose):
    token = signer.sign(purpose, 42)
    assert signer.verify_id(token, purpose) == 42
    assert all(c.isalnum() or c in "-_." for c in token), "tokens must be URL-safe as they are"


@pytest.mark.parametrize("made_for,used_for", [
    ("unsubscribe", "confirm"), ("confirm", "unsubscribe"), ("view", "unsubscribe"),
    ("unsubscribe", "view"), ("view", "confirm"), ("confirm", "view"),
])
def test_a_token_is_refused_for_any_other_purpose(signer, made_for, used_for):
    with pytest.raises(BadToken):
        signer.verify(signer.sign(made_for, 7), used_for)


def _flip_last_mac_byte(token: str) -> str:
    body, mac = token.rsplit(".", 1)
    raw = bytearray(base64.urlsafe_b64decode(mac + "=" * (-len(mac) % 4)))
    raw[-1] ^= 0x01
    return body + "." + base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


def test_forged_tokens_are_refused(signer):
    token = signer.sign("unsubscribe", 7)
    subject, issued, mac = token.split(".")
    forgeries = [
        f"8.{issued}.{mac}",  # someone else's id with this MAC
        _flip_last_mac_byte(token),
        f"{subject}.{int(issued, 16) + 1:x}.{mac}",  # a changed date
        Signer(b"another-key-0123456789abcdef").sign("unsubscribe", 7),  # another installation
    ]
    for forged in forgeries:
        with pytest.raises(BadToken):
            signer.verify(forged, "unsubscribe")


@pytest.mark.parametrize("cut", [1, 5, 10])
def test_truncated_tokens_are_refused(signer, cut):
    token = signer.sign("unsubscribe", 123)
    with pytest.raises(BadToken):
        signer.verify(token[:-cut], "unsubscribe")


@pytest.mark.parametrize("garbage", ["", ".", "..", "a.b.c", "1.zz.abc", "1.2", "1.2.3.4",
                                     "é.1.aaaa", "1.1.!!!!"])
def test_malformed_tokens_are_refused(signer, garbage):
    with pytest.raises(BadToken):
        signer.verify(garbage, "confirm")


def test_confirmation_tokens_expire_after_seven_days(signer, clock):
    token = signer.sign("confirm", 5)
    clock.now += 7 * 24 * 3600 - 1
    assert signer.verify_id(token, "confirm") == 5
    clock.now += 2
    with pytest.raises(BadToken):
        signer.verify(token, "confirm")


def test_unsubscribe_and_view_tokens_keep_working_in_archived_mail(signer, clock):
    unsubscribe, view = signer.sign("unsubscribe", 5), signer.sign("view", 5)
    clock.now += 3 * 365 * 24 * 3600
    assert signer.verify_id(unsubscribe, "unsubscribe") == 5
    assert signer.verify_id(view, "view") == 5


def test_a_non_numeric_subject_is_not_a_subscriber_id(signer):
    with pytest.raises(BadToken):
        signer.verify_id(signer.sign("view", "abc"), "view")


def test_short_keys_are_refused():
    with pytest.raises(ValueError):
        Signer(b"short")


def test_links_carry_tokens_for_their_own_purpose(signer):
    links = Links("https://digest.example.test", signer)
    confirm = urlsplit(links.confirm(3))
    unsubscribe = urlsplit(links.unsubscribe(3))
    view = urlsplit(links.view("2026-W47", 3))
    assert confirm.path.startswith("/confirm/") and unsubscribe.path.startswith("/u/")
    assert signer.verify_id(confirm.path.removeprefix("/confirm/"), "confirm") == 3
    assert signer.verify_id(unsubscribe.path.removeprefix("/u/"), "unsubscribe") == 3
    assert view.path == "/issues/2026-W47"
    assert signer.verify_id(parse_qs(view.query)["t"][0], "view") == 3
