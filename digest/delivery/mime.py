"""The issue's MIME message, encoded once, spliced per recipient.

Building an `EmailMessage` per recipient and serialising it costs about 1 ms (header parsing,
quoted-printable encoding of ~70 KB, folding); at a few hundred messages a second that is most
of an SMTP send. The message differs between recipients only in a few places (To, Message-ID,
Date, List-Unsubscribe and the placeholder values in the two bodies), so `MessageTemplate`
encodes everything else once, as bytes, and a recipient's message is those bytes joined with
its values, each encoded the way the part around it is:

* `8bit` (the server offers 8BITMIME): the pieces are UTF-8 with CRLF line ends; a value is
  escaped (HTML) and encoded the same way. A part with a line over 998 octets cannot be 8bit,
  so it falls back to quoted-printable; a recipient whose value would push a line over the
  limit gets the quoted-printable message (`render` returns it from the fallback template).
* `quoted-printable`: every piece is encoded on its own and, when it ends in the middle of a
  line, closed with a soft line break, so the value after it starts a fresh encoded line and
  nothing an encoder did to one piece depends on its neighbours.

Headers that carry a recipient's data are folded per recipient (a fast path for plain ASCII,
the standard library's folding otherwise); the others are folded once with the `email` package,
so the result parses to what `build_mime` produces (tests/delivery/test_mime_splice.py).
Dot-stuffing is left to the SMTP layer: these are the message's bytes, not its transfer.
"""

from __future__ import annotations

import binascii
import html
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from email.policy import SMTP
from email.utils import formataddr, formatdate, quote

from digest.delivery.providers.base import Letter, Recipient
from digest.edition.personalize import TOKENS, UNSUBSCRIBE_URL, SplitTemplate

MAX_LINE = 998  # RFC 5321: octets on a line, CRLF excluded
_TOKEN_RE = re.compile("(" + "|".join(re.escape(t) for t in TOKENS) + ")")
# A display name that needs neither quoting nor encoding (RFC 5322 atoms, single spaces).
_PLAIN_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")  # one printable ASCII word: no folding needed


def _crlf(data: bytes) -> bytes:
    """Line ends as the wire wants them: CR, LF and CRLF all become CRLF."""
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return data.replace(b"\n", b"\r\n")


def _qp(data: bytes) -> bytes:
    """Quoted-printable for a piece that may be followed by anything: ends at a line start."""
    if not data:
        return data
    # Normalised after encoding too: a piece with no line break gets bare-LF soft breaks.
    out = _crlf(binascii.b2a_qp(_crlf(data), istext=True))
    if out.endswith(b"\r\n"):
        return out
    # Ends mid-line: close it with a soft break, keeping the line (with its `=`) within 76.
    start = out.rfind(b"\r\n")
    start = 0 if start < 0 else start + 2
    if len(out) - start > 75:
        cut = start + 75
        while b"=" in out[cut - 2:cut]:  # never split an =XX escape
            cut -= 1
        out = out[:cut] + b"=\r\n" + out[cut:]
    return out + b"=\r\n"


@dataclass(frozen=True)
class _Part:
    """One text part: its pieces (encoded) and slots, and what encoding it uses."""

    cte: str  # "8bit" | "quoted-printable"
    pieces: tuple[bytes, ...]
    slots: tuple[str, ...]
    escape_html: bool
    # 8bit only: for each line holding slots, (fixed octets on it, the slots on it).
    lines: tuple[tuple[int, tuple[str, ...]], ...] = ()

    @classmethod
    def encode(cls, template: SplitTemplate, *, eight_bit: bool) -> "_Part":
        document = template.fill({t: t for t in template.tokens})  # tokens escape to themselves
        split = _TOKEN_RE.split(document)
        texts, slots = split[0::2], tuple(split[1::2])
        if not document.endswith(("\n", "\r")) and document:
            texts[-1] += "\n"  # the email package ends every text part with a line break
        raw = [_crlf(t.encode("utf-8")) for t in texts]
        if eight_bit:
            lines = cls._line_budget(raw)
            if lines is not None:
                named = tuple((fixed, tuple(slots[i] for i in on_line)) for fixed, on_line in lines)
                return cls("8bit", tuple(raw), slots, template.escape_html, named)
        pieces = [_qp(piece) for piece in raw]  # the last one ends with a line break
        return cls("quoted-printable", tuple(pieces), slots, template.escape_html)

    @staticmethod
    def _line_budget(raw: list[bytes]) -> tuple[tuple[int, tuple[int, ...]], ...] | None:
        """The lines that hold slots with their fixed length; None if a fixed line is too long."""
        lines: list[tuple[int, tuple[int, ...]]] = []
        current, slots = 0, []
        for i, piece in enumerate(raw):
            segments = piece.split(b"\r\n")
            if len(segments) == 1:
                current += len(piece)
            else:
                current += len(segments[0])
                if current > MAX_LINE or any(len(s) > MAX_LINE for s in segments[1:-1]):
                    return None
                if slots:
                    lines.append((current, tuple(slots)))
                current, slots = len(segments[-1]), []
            if i < len(raw) - 1:
                slots.append(i)
        if current > MAX_LINE:
            return None
        if slots:
            lines.append((current, tuple(slots)))
        return tuple(lines)

    def join(self, values: dict[str, str], out: list[bytes]) -> bool:
        """Append this part's body for `values` to `out`; False when a value cannot be spliced
        into 8bit (a line would pass 998 octets, or the value holds a line break)."""
        pieces, slots = self.pieces, self.slots
        if not slots:
            out.append(pieces[0])
            return True
        encoded: dict[str, bytes] = {}
        eight_bit = self.cte == "8bit"
        for slot in slots:  # each distinct value encoded once (the vote link recurs per tool)
            if slot in encoded:
                continue
            value = values[slot]
            if self.escape_html:
                value = html.escape(value, quote=True)
            data = value.encode("utf-8")
            if eight_bit:
                if b"\n" in data or b"\r" in data:
                    return False
            else:
                data = _qp(data)
            encoded[slot] = data
        if eight_bit:
            for fixed, on_line in self.lines:
                if fixed + sum(len(encoded[slot]) for slot in on_line) > MAX_LINE:
                    return False
        out.append(pieces[0])
        for slot, piece in zip(slots, pieces[1:]):
            out.append(encoded[slot])
            out.append(piece)
        return True


class MessageTemplate:
    """One letter's message as encoded bytes with slots; `render` fills them for a recipient.

    Build one per letter and server capabilities (`eight_bit`: the server offers 8BITMIME).
    Thread-safe: rendering reads the template and builds a new list of bytes."""

    def __init__(self, letter: Letter, *, eight_bit: bool, boundary: str | None = None) -> None:
        self.letter = letter
        self.eight_bit = eight_bit
        self.boundary = boundary or f"=_digest_{uuid.uuid4().hex}"
        self.text = _Part.encode(letter.text, eight_bit=eight_bit)
        self.html = _Part.encode(letter.html, eight_bit=eight_bit)
        self._fallback: MessageTemplate | None = None
        self._domain = letter.from_domain
        fold = SMTP.fold
        self._from = fold("From", letter.from_addr).encode("ascii")
        self._subject = fold("Subject", letter.subject).encode("ascii")
        # Reply-To and the letter's own headers, in build_mime's order; List-Unsubscribe is the
        # one made per recipient, so what comes before it and after it are kept apart.
        probe = Recipient("probe@example.com", {UNSUBSCRIBE_URL: "u"}, message_id="probe")
        headers = letter.headers(probe)
        self._unsubscribe = "List-Unsubscribe" in headers
        self._mailto = headers.get("List-Unsubscribe", "<u>")[3:]  # the mailbox after the URL
        middle = [fold("Reply-To", letter.reply_to)] if letter.reply_to else []
        tail = middle
        for name, value in headers.items():
            if name == "List-Unsubscribe":
                tail = []
            else:
                tail.append(fold(name, value))
        if tail is middle:  # no List-Unsubscribe: every header is shared and comes in one block
            middle = []
        tail.append("MIME-Version: 1.0\r\n")
        tail.append(f'Content-Type: multipart/alternative;\r\n boundary="{self.boundary}"\r\n')
        self._middle = "".join(middle).encode("ascii")
        head = "".join(tail) + "\r\n" + self._part_head("plain", self.text.cte)
        self._head = head.encode("ascii")
        self._between = ("\r\n" + self._part_head("html", self.html.cte)).encode("ascii")
        self._end = f"\r\n--{self.boundary}--\r\n".encode("ascii")
        self._date: tuple[int, bytes] = (0, b"")

    def _part_head(self, subtype: str, cte: str) -> str:
        return (f"--{self.boundary}\r\nContent-Type: text/{subtype}; charset=\"utf-8\"\r\n"
                f"Content-Transfer-Encoding: {cte}\r\n\r\n")

    @property
    def fallback(self) -> "MessageTemplate":
        """The same letter in quoted-printable, for recipients whose values do not fit 8bit."""
        if not self.eight_bit:
            return self
        if self._fallback is None:
            self._fallback = MessageTemplate(self.letter, eight_bit=False)
        return self._fallback

    def date_header(self, now: float | None = None) -> bytes:
        """`Date:` for now, formatted once a second (every message of that second shares it)."""
        now = time.time() if now is None else now
        second = int(now)
        cached = self._date
        if cached[0] != second:
            cached = (second, f"Date: {formatdate(second, usegmt=True)}\r\n".encode("ascii"))
            self._date = cached
        return cached[1]

    def render(self, recipient: Recipient, *, date: bytes | None = None,
               smtputf8: bool = False) -> bytes:
        """The recipient's complete message. `smtputf8`: the address may be written in UTF-8
        (the server offers SMTPUTF8 and the MAIL command asks for it)."""
        values = recipient.values
        out = [self._from, _to_header(recipient, smtputf8), self._subject,
               date or self.date_header(),
               b"Message-ID: <" + recipient.message_id.encode("ascii") + b"@"
               + self._domain.encode("ascii") + b">\r\n", self._middle]
        if self._unsubscribe:
            url = recipient.unsubscribe_url()
            if not url:
                raise ValueError(f"bulk mail to {recipient.email} has no unsubscribe URL")
            out.append(_list_unsubscribe(url, self._mailto))
        out.append(self._head)
        if not self.text.join(values, out):
            return self.fallback.render(recipient, date=date, smtputf8=smtputf8)
        out.append(self._between)
        if not self.html.join(values, out):
            return self.fallback.render(recipient, date=date, smtputf8=smtputf8)
        out.append(self._end)
        return b"".join(out)

    def render_all(self, recipients: Sequence[Recipient]) -> list[bytes]:
        date = self.date_header()
        return [self.render(r, date=date) for r in recipients]


def _to_header(recipient: Recipient, smtputf8: bool) -> bytes:
    name, address = recipient.name, recipient.email
    if address.isascii():
        if not name:
            line = f"To: {address}\r\n"
            if len(line) <= 80:
                return line.encode("ascii")
        elif _PLAIN_NAME.fullmatch(name):
            line = f"To: {name} <{address}>\r\n"
            if len(line) <= 80:
                return line.encode("ascii")
        return SMTP.fold("To", formataddr((name or "", address))).encode("ascii")
    if not smtputf8:
        raise UnicodeEncodeError("ascii", address, 0, len(address),
                                 "the address is not ASCII and SMTPUTF8 is not in use")
    # RFC 6532: the address goes as it is, and so may the name (quoted).
    value = f'"{quote(name)}" <{address}>' if name else address
    line = f"To: {value}\r\n".encode("utf-8")
    if len(line) > MAX_LINE:
        raise ValueError(f"the To header for {address} is longer than {MAX_LINE} octets")
    return line


def _list_unsubscribe(url: str, mailto: str) -> bytes:
    """The URL stays on the header's first line (a URL has nowhere to fold); the mailbox, if
    any, goes on a continuation line when the whole would pass 78 characters."""
    if _HEADER_SAFE.fullmatch(url) is None or len(url) > MAX_LINE - 40:
        return SMTP.fold("List-Unsubscribe", f"<{url}>{mailto}").encode("ascii")
    line = f"List-Unsubscribe: <{url}>{mailto}\r\n"
    if len(line) <= 80 or not mailto:
        return line.encode("ascii")
    return f"List-Unsubscribe: <{url}>,\r\n {mailto[2:]}\r\n".encode("ascii")
