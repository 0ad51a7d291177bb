"""The spliced message (encoded once per issue, joined per recipient) against the message the
email package builds for each recipient (`build_mime`): same headers, same decoded parts."""

from __future__ import annotations

import email
import email.policy
import random

import pytest

from digest.delivery.mime import MAX_LINE, MessageTemplate
from digest.delivery.providers.base import Letter, Recipient
from digest.delivery.providers.outbox import build_mime
from digest.edition.personalize import NAME, UNSUBSCRIBE_URL, VIEW_URL, VOTE_URL

NAMES = ["Zoë Ärger", "Ann & Bob <Co>", "José \"Pepe\" Núñez", "李小龍", "Reader 7", "O'Neil",
         "=?utf-8?q?not-encoded?=", "a.b. c", "", None, "Ünïcödé " * 12, ". dot first",
         "Ω" * 40]


def _html() -> str:
    """An HTML body shaped like the rendered issue: long lines, `=` in every attribute, lines
    that begin with `=` and `.`, slots in attributes and in text, non-ASCII text."""
    cards = "\n".join(
        f'<div class="card" style="margin:0 6px; color:#111827">Card {i} – Ärger über “Preise”'
        f'<a href="{VOTE_URL}/tool-{i}/ship" style="color:#4338ca">Yes</a></div>\n'
        f'=leading equals {i}\n.leading dot {i}\n..two dots\n'
        + "x=y " * 60 for i in range(12))
    return (f'<!doctype html><html lang="en"><body><p>Hi {NAME},</p>\n{cards}\n'
            f'<p><a href="{VIEW_URL}">View</a> · <a href="{UNSUBSCRIBE_URL}">Unsubscribe</a>'
            f'</p>\n.\n</body></html>')


TEXT = (f"Hi {NAME},\n\n" + "=" * 74 + "\n1. A vs B\n" + "=" * 74 + "\n.starts with a dot\n"
        + "A line that is rather long, " * 8 + "\n" + f"Vote: {VOTE_URL}/a/ship\n"
        f"View: {VIEW_URL}\nUnsubscribe: {UNSUBSCRIBE_URL}\n--\nPostal address, Straße 1")


def _letter(**overrides) -> Letter:
    fields = dict(subject="Wöchentliche Urteile: Quarrystone Review vs Fernwick Shell + 7 more "
                  "verdicts and a subject long enough to fold", html=_html(), text=TEXT,
                  from_addr="Weekly Verdicts <digest@verdicts.example.com>", tag="2026-W47",
                  list_id="Weekly Verdicts <weekly.verdicts.example.com>",
                  reply_to="editor@verdicts.example.com",
                  unsubscribe_mailto="unsubscribe@verdicts.example.com")
    fields.update(overrides)
    return Letter.from_documents(**fields)


def _recipients(n: int, seed: int = 7) -> list[Recipient]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        local = f"reader{i}" if i % 5 else f"a.really.long.address.{'x' * rng.randint(20, 60)}.{i}"
        name = NAMES[i % len(NAMES)]
        token = "".join(rng.choice("ABCDEFabcdef0123456789-_.") for _ in range(rng.randint(20, 90)))
        values = {UNSUBSCRIBE_URL: f"https://digest.example.com/u/{i}.{token}",
                  VIEW_URL: f"https://digest.example.com/issues/2026-W47?t={token}&x=1",
                  VOTE_URL: f"https://digest.example.com/vote/{token}",
                  NAME: name or ""}
        if i % 50 == 3:  # a value far too long for one 8bit line: that message goes out QP
            values[NAME] = "Long " * 300
        out.append(Recipient(f"{local}@example.com", values, name, 1000 + i,
                             f"digest.2026-W47.{1000 + i}.abcd1234"))
    return out


def _parse(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.default)


def _headers(msg) -> list[tuple[str, str]]:
    """Names and values in order (the boundary and the clock aside). Values are compared
    without the whitespace a fold leaves at their start: the email package folds a long
    List-Unsubscribe onto a continuation line and reads it back with a leading space."""
    return [(k, str(v).strip()) for k, v in msg.items() if k not in ("Date", "Content-Type")]


def _parts(msg) -> list[tuple[str, dict, bytes]]:
    return [(p.get_content_type(), dict(p.get_params()), p.get_payload(decode=True))
            for p in msg.iter_parts()]


@pytest.mark.parametrize("eight_bit", [True, False], ids=["8bit", "quoted-printable"])
def test_spliced_messages_parse_like_build_mime(eight_bit):
    letter = _letter()
    template = MessageTemplate(letter, eight_bit=eight_bit)
    assert template.html.cte == ("8bit" if eight_bit else "quoted-printable")
    for recipient in _recipients(200):
        spliced = template.render(recipient)
        expected = _parse(bytes(build_mime(letter, recipient)))
        got = _parse(spliced)
        assert _headers(got) == _headers(expected), recipient.email
        assert got.get_content_type() == "multipart/alternative"
        assert _parts(got) == _parts(expected), recipient.email
        assert got["Date"].datetime is not None
        assert max(len(line) for line in spliced.split(b"\r\n")) <= MAX_LINE
        assert b"\n" not in spliced.replace(b"\r\n", b"")  # no bare LF
        assert b"\r" not in spliced.replace(b"\r\n", b"")  # no bare CR
        if not eight_bit:
            assert spliced.isascii()
            body = spliced.split(b"\r\n\r\n", 1)[1]  # quoted-printable lines: 76 at most
            assert max(len(line) for line in body.split(b"\r\n")) <= 76


def test_eight_bit_keeps_rules_and_non_ascii_as_they_are():
    template = MessageTemplate(_letter(), eight_bit=True)
    recipient = _recipients(1)[0]
    data = template.render(recipient)
    assert b"\r\n" + b"=" * 74 + b"\r\n" in data
    assert "Ärger über “Preise”".encode() in data
    assert b"Content-Transfer-Encoding: 8bit" in data


def test_a_value_too_long_for_an_8bit_line_sends_that_message_quoted_printable():
    template = MessageTemplate(_letter(), eight_bit=True)
    recipient = _recipients(4)[3]
    data = template.render(recipient)
    assert b"Content-Transfer-Encoding: 8bit" not in data
    assert _parts(_parse(data)) == _parts(_parse(bytes(build_mime(template.letter, recipient))))


def test_an_html_line_over_998_octets_makes_that_part_quoted_printable():
    letter = _letter(html="<p>" + "word " * 400 + f"<a href='{UNSUBSCRIBE_URL}'>u</a></p>")
    template = MessageTemplate(letter, eight_bit=True)
    assert (template.text.cte, template.html.cte) == ("8bit", "quoted-printable")
    recipient = _recipients(1)[0]
    assert _parts(_parse(template.render(recipient))) == \
        _parts(_parse(bytes(build_mime(letter, recipient))))


def test_confirmation_letters_have_no_list_headers():
    letter = _letter(bulk=False, html=f"<p>Hi {NAME}</p>", text=f"Hi {NAME}\n")
    recipient = _recipients(2)[1]
    got = _parse(MessageTemplate(letter, eight_bit=True).render(recipient))
    assert "List-Unsubscribe" not in got
    assert _headers(got) == _headers(_parse(bytes(build_mime(letter, recipient))))
