"""Signed tokens: genuine ones verify for their own purpose only; anything altered, cut short,
too old or meant for another purpose is refused."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs, urlsplit

import pytest

from subscribers.links import Links
from subscribers.tokens import BadToken, Signer
from factories import SetClock

KEY = b"unit-test-key-0123456789abcdef"
HOLDER = "ada@example.com"


@pytest.fixture
def clock() -> SetClock:
    return SetClock(1_800_000_000.0)


@pytest.fixture
def signer(clock) -> Signer:
    return Signer(KEY, clock=clock)


@pytest.mark.parametrize("purpose", ["confirm", "unsubscribe", "view"])
def test_round_trip_for_each_purpose(signer, purpose):
    token = signer.sign(purpose, 42, HOLDER)
    assert signer.verify_id(token, purpose) == 42
    assert all(c.isalnum() or c in "-_." for c in token), "tokens must be URL-safe as they are"


@pytest.mark.parametrize("made_for,used_for", [
    ("unsubscribe", "confirm"), ("confirm", "unsubscribe"), ("view", "unsubscribe"),
    ("unsubscribe", "view"), ("view", "confirm"), ("confirm", "view"),
])
def test_a_token_is_refused_for_any_other_purpose(signer, made_for, used_for):
    with pytest.raises(BadToken):
        signer.verify(signer.sign(made_for, 7, HOLDER), used_for)


def _flip_last_mac_byte(token: str) -> str:
    body, mac = token.rsplit(".", 1)
    raw = bytearray(base64.urlsafe_b64decode(mac + "=" * (-len(mac) % 4)))
    raw[-1] ^= 0x01
    return body + "." + base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


def test_forged_tokens_are_refused(signer):
    token = signer.sign("unsubscribe", 7, HOLDER)
    subject, tag, issued, mac = token.split(".")
    forgeries = [
        f"8.{tag}.{issued}.{mac}",  # someone else's id with this MAC
        _flip_last_mac_byte(token),
        f"{subject}.{tag}.{int(issued, 16) + 1:x}.{mac}",  # a changed date
        # another installation
        Signer(b"another-key-0123456789abcdef").sign("unsubscribe", 7, HOLDER),
    ]
    for forged in forgeries:
        with pytest.raises(BadToken):
            signer.verify(forged, "unsubscribe")


@pytest.mark.parametrize("cut", [1, 5, 10])
def test_truncated_tokens_are_refused(signer, cut):
    token = signer.sign("unsubscribe", 123, HOLDER)
    with pytest.raises(BadToken):
        signer.verify(token[:-cut], "unsubscribe")


@pytest.mark.parametrize("garbage", ["", ".", "..", "a.b.c", "1.zz.abc", "1.2", "1.2.3.4",
                                     "é.1.aaaa", "1.1.!!!!"])
def test_malformed_tokens_are_refused(signer, garbage):
    with pytest.raises(BadToken):
        signer.verify(garbage, "confirm")


def test_confirmation_tokens_expire_after_seven_days(signer, clock):
    token = signer.sign("confirm", 5, HOLDER)
    clock.now += 7 * 24 * 3600 - 1
    assert signer.verify_id(token, "confirm") == 5
    clock.now += 2
    with pytest.raises(BadToken):
        signer.verify(token, "confirm")


def test_unsubscribe_and_view_tokens_keep_working_in_archived_mail(signer, clock):
    unsubscribe, view = signer.sign("unsubscribe", 5, HOLDER), signer.sign("view", 5, HOLDER)
    clock.now += 3 * 365 * 24 * 3600
    assert signer.verify_id(unsubscribe, "unsubscribe") == 5
    assert signer.verify_id(view, "view") == 5


def test_a_non_numeric_subject_is_not_a_subscriber_id(signer):
    with pytest.raises(BadToken):
        signer.verify_id(signer.sign("view", "abc", HOLDER), "view")


def test_short_keys_are_refused():
    with pytest.raises(ValueError):
        Signer(b"short")


def test_links_carry_tokens_for_their_own_purpose(signer):
    links = Links("https://digest.example.test", signer)
    confirm = urlsplit(links.confirm(3, HOLDER))
    unsubscribe = urlsplit(links.unsubscribe(3, HOLDER))
    view = urlsplit(links.view("2026-W47", 3, HOLDER))
    assert confirm.path.startswith("/confirm/") and unsubscribe.path.startswith("/u/")
    assert signer.verify_id(confirm.path.removeprefix("/confirm/"), "confirm") == 3
    assert signer.verify_id(unsubscribe.path.removeprefix("/u/"), "unsubscribe") == 3
    assert view.path == "/issues/2026-W47"
    assert signer.verify_id(parse_qs(view.query)["t"][0], "view") == 3


# --- bound to the person they were issued for ----------------------------------------------------

def _legacy_token(purpose: str, subject: int, issued: int, key: bytes = KEY) -> str:
    """A token as mail sent before holders were bound carries it: `<id>.<issued>.<MAC>`."""
    import hashlib
    import hmac

    purpose_key = hmac.new(key, b"verdict-digest/token/" + purpose.encode(),
                           hashlib.sha256).digest()
    body = f"{subject}.{issued:x}"
    mac = hmac.new(purpose_key, body.encode(), hashlib.sha256).digest()[:20]
    return f"{body}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def test_a_token_acts_only_on_the_address_it_was_issued_for(signer, clock):
    claim = signer.verify(signer.sign("unsubscribe", 7, HOLDER), "unsubscribe")
    assert claim.subject_id == 7 and claim.holder_tag
    since = clock.now + 3600  # even a row created after the token: the address decides
    assert signer.held_by(claim, HOLDER, since=since)
    assert not signer.held_by(claim, "bob@example.com", since=since)
    # addresses are stored lower-case: another spelling is another holder
    assert not signer.held_by(claim, "Ada@example.com", since=since)


def test_the_address_is_not_readable_from_the_token(signer):
    token = signer.sign("view", 7, HOLDER)
    assert "ada" not in token and "example" not in token
    # The tag is keyed: another installation tags the same address differently.
    other = Signer(b"another-key-0123456789abcdef").sign("view", 7, HOLDER)
    assert token.split(".")[1] != other.split(".")[1]


def test_rebinding_a_token_to_someone_else_is_refused(signer):
    token = signer.sign("unsubscribe", 7, HOLDER)
    subject, tag, issued, mac = token.split(".")
    bob_tag = signer.bind_many([7], ["bob@example.com"])[0].split(".")[1]
    for forged in (f"{subject}.{bob_tag}.{issued}.{mac}",  # Bob's tag, Ada's MAC
                   f"{subject}.{issued}.{mac}"):  # the tag dropped: posing as an old token
        with pytest.raises(BadToken):
            signer.verify(forged, "unsubscribe")


def test_tokens_from_before_binding_act_only_on_a_row_as_old_as_the_token(signer, clock):
    """Mail already sent carries tokens that name only an id. Such a token is taken for the row
    that held the id when it was issued, never for a row created later (an id given again)."""
    issued = int(clock.now) - 86_400
    token = _legacy_token("unsubscribe", 7, issued)
    claim = signer.verify(token, "unsubscribe")
    assert claim.holder_tag is None and claim.subject_id == 7
    assert signer.held_by(claim, HOLDER, since=issued - 100)
    assert signer.held_by(claim, HOLDER, since=issued + 0.9)  # created in the second it was signed
    assert not signer.held_by(claim, "bob@example.com", since=issued + 1)
    with pytest.raises(BadToken):  # and the old format is still checked as strictly as before
        signer.verify(_legacy_token("unsubscribe", 7, issued, b"another-key-0123456789abcdef"),
                      "unsubscribe")
    with pytest.raises(BadToken):
        signer.verify(_legacy_token("unsubscribe", 7, issued), "view")


def test_batch_binding_and_signing_equal_one_at_a_time(signer):
    ids = [1, 7, 123_456, 10**9]
    emails = [f"r{i}@example.com" for i in ids]
    bound = signer.bind_many(ids, emails)
    for purpose in ("confirm", "unsubscribe", "view"):
        assert signer.sign_many(purpose, bound) == [
            signer.sign(purpose, i, e) for i, e in zip(ids, emails)]
    assert signer.sign_many("view", []) == [] and signer.bind_many([], []) == []
    with pytest.raises(ValueError):
        signer.bind_many([1, 2], ["a@example.com"])
    with pytest.raises(ValueError):
        signer.sign("view", "1.2", HOLDER)


# --- tokens kept out of logs ---------------------------------------------------------------------

def test_redact_takes_every_token_out_of_a_request_path(signer):
    from subscribers.links import redact

    token = signer.sign("unsubscribe", 42, HOLDER)
    dotted = token.replace(".", "%2E")
    cases = {
        f"/u/{token}": "/u/[token]",
        f"/confirm/{token}": "/confirm/[token]",
        f"/issues/2026-W47?t={token}": "/issues/2026-W47?t=[token]",
        f"/subscribe?t={token}&x=1": "/subscribe?t=[token]&x=1",
        f"/subscribe?%74={token}": "/subscribe?%74=[token]",  # the router decodes the name too
        f"/%75/{dotted}": "/%75/[token]",
        f"/elsewhere/{token}/more": "/elsewhere/[token]/more",  # token-shaped, any route
        "/subscribe": "/subscribe",
        "/issues/2026-W47": "/issues/2026-W47",
        "/webhooks/postmark?x=1": "/webhooks/postmark?x=1",
    }
    for path, expected in cases.items():
        assert redact(path) == expected, path
