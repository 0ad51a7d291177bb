"""SMTP: one connection per batch, one message per recipient (each has its own unsubscribe
headers), from `DIGEST_SMTP_URL`:

    smtp://[user:pass@]host[:25]            plain (a local relay)
    smtp+starttls://user:pass@host[:587]    upgraded with STARTTLS before logging in
    smtps://user:pass@host[:465]            TLS from the first byte

The MAIL / RCPT / DATA steps are issued one by one so a failure is placed exactly: a refused
recipient (5xx) is rejected and the connection carries on with the next; a 4xx is transient; a
connection lost before DATA leaves the message unsent (transient), but one lost while the
message was being transferred may have been delivered (uncertain), and is never re-sent blindly.
"""

from __future__ import annotations

import re
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import parseaddr
from urllib.parse import unquote, urlsplit

from digest.errors import ConfigurationError, PermanentProviderError, TransientProviderError
from digest.delivery.providers.base import Letter, Outcome, Provider, Recipient
from digest.delivery.providers.outbox import build_mime

MODES = {"smtp": ("plain", 25), "smtp+starttls": ("starttls", 587), "smtps": ("ssl", 465)}
_LEADING_DOT = re.compile(rb"^\.", re.MULTILINE)


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    mode: str  # plain | starttls | ssl
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_url(cls, url: str) -> "SmtpTarget":
        parts = urlsplit(url)
        if parts.scheme not in MODES:
            raise ConfigurationError(f"DIGEST_SMTP_URL: scheme {parts.scheme!r} is not one of "
                                     f"{', '.join(s + '://' for s in MODES)}")
        if not parts.hostname:
            raise ConfigurationError("DIGEST_SMTP_URL: no host (e.g. smtp+starttls://user:pass@"
                                     "mail.example.com:587)")
        mode, default_port = MODES[parts.scheme]
        try:
            port = parts.port or default_port
        except ValueError:
            raise ConfigurationError("DIGEST_SMTP_URL: the port is not a number") from None
        return cls(parts.hostname, port, mode,
                   unquote(parts.username) if parts.username else None,
                   unquote(parts.password) if parts.password else None)


class _Lost(Exception):
    """The connection is gone; `delivered_maybe` says whether the message was in transfer."""

    def __init__(self, reason: str, *, delivered_maybe: bool) -> None:
        super().__init__(reason)
        self.delivered_maybe = delivered_maybe


class SmtpProvider(Provider):
    name = "smtp"
    batch_limit = 100  # messages per connection: relays often cap a session
    substitutes = False
    idempotent = False

    def __init__(self, target: SmtpTarget, *, timeout: float = 30.0,
                 ssl_context: ssl.SSLContext | None = None,
                 local_hostname: str | None = None) -> None:
        self.target = target
        self.timeout = timeout
        self.ssl_context = ssl_context or ssl.create_default_context()
        self.local_hostname = local_hostname

    @classmethod
    def from_url(cls, url: str, **kwargs) -> "SmtpProvider":
        return cls(SmtpTarget.from_url(url), **kwargs)

    def connect(self) -> smtplib.SMTP:
        t = self.target
        try:
            if t.mode == "ssl":
                conn: smtplib.SMTP = smtplib.SMTP_SSL(t.host, t.port, timeout=self.timeout,
                                                      context=self.ssl_context,
                                                      local_hostname=self.local_hostname)
            else:
                conn = smtplib.SMTP(t.host, t.port, timeout=self.timeout,
                                    local_hostname=self.local_hostname)
            conn.ehlo_or_helo_if_needed()
            if t.mode == "starttls":
                conn.starttls(context=self.ssl_context)
                conn.ehlo()
            if t.username:
                conn.login(t.username, t.password or "")
            return conn
        except smtplib.SMTPAuthenticationError as exc:
            raise PermanentProviderError(f"smtp: {t.host} refused the login ({exc.smtp_code})",
                                         status=exc.smtp_code) from exc
        except smtplib.SMTPNotSupportedError as exc:
            raise PermanentProviderError(f"smtp: {t.host} does not offer {exc}") from exc
        except ssl.SSLCertVerificationError as exc:
            raise PermanentProviderError(f"smtp: {t.host}'s certificate: {exc.verify_message}"
                                         ) from exc
        except smtplib.SMTPResponseException as exc:
            cls = PermanentProviderError if exc.smtp_code >= 500 else TransientProviderError
            raise cls(f"smtp: {t.host} answered {exc.smtp_code} {_text(exc.smtp_error)}",
                      status=exc.smtp_code) from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise TransientProviderError(f"smtp: cannot connect to {t.host}:{t.port} ({exc!r})"
                                         ) from exc

    def send_batch(self, letter: Letter, recipients: Sequence[Recipient], *,
                   batch_key: str) -> list[Outcome]:
        if not recipients:
            return []
        if len(recipients) > self.batch_limit:
            raise ValueError(f"smtp: batch of {len(recipients)} exceeds {self.batch_limit}")
        sender = parseaddr(letter.from_addr)[1]
        conn = self.connect()
        outcomes: list[Outcome] = []
        try:
            for recipient in recipients:
                if conn is None:
                    outcomes.append(Outcome.transient("not sent: the SMTP connection was lost "
                                                      "earlier in this batch"))
                    continue
                try:
                    outcomes.append(self._send_one(conn, sender, letter, recipient,
                                                   first=not outcomes))
                except _Lost as lost:
                    outcomes.append(Outcome.uncertain(str(lost)) if lost.delivered_maybe
                                    else Outcome.transient(str(lost)))
                    conn.close()
                if conn.sock is None:  # lost, or closed by a failed RSET
                    conn = None
        finally:
            if conn is not None:
                try:
                    conn.quit()
                except (OSError, smtplib.SMTPException):
                    conn.close()
        return outcomes

    def _send_one(self, conn: smtplib.SMTP, sender: str, letter: Letter, recipient: Recipient,
                  *, first: bool) -> Outcome:
        data = bytes(build_mime(letter, recipient))
        code, reply = self._command(conn, lambda: conn.mail(sender), "MAIL FROM")
        if code != 250:
            self._reset(conn)
            if first:  # the sender, not this recipient, is refused: fail the call as a whole
                cls = PermanentProviderError if code >= 500 else TransientProviderError
                raise cls(f"smtp: sender {sender} refused: {code} {_text(reply)}", status=code)
            # Refused after others went through: not this recipient's fault, so not final.
            return Outcome.transient(f"smtp {code}: sender refused: {_text(reply)}")
        code, reply = self._command(conn, lambda: conn.rcpt(recipient.email), "RCPT TO")
        if code not in (250, 251):
            self._reset(conn)
            return _refusal(code, reply, "recipient refused")
        code, reply = self._data(conn, data)
        if code != 250:
            self._reset(conn)
            return _refusal(code, reply, "message refused")
        return Outcome.sent(letter.message_id_header(recipient))

    @staticmethod
    def _command(conn: smtplib.SMTP, step, name: str) -> tuple[int, bytes]:
        try:
            code, reply = step()
        except UnicodeEncodeError:
            return 553, b"the address is not ASCII and this sender does not use SMTPUTF8"
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            raise _Lost(f"not sent: connection lost at {name} ({exc!r})",
                        delivered_maybe=False) from exc
        if code == 421:
            raise _Lost(f"not sent: server closing at {name}: {_text(reply)}",
                        delivered_maybe=False)
        return code, reply

    @staticmethod
    def _data(conn: smtplib.SMTP, data: bytes) -> tuple[int, bytes]:
        """DATA in two steps, so a loss before the 354 is told apart from one during transfer."""
        try:
            conn.putcmd("data")
            code, reply = conn.getreply()
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            raise _Lost(f"not sent: connection lost at DATA ({exc!r})",
                        delivered_maybe=False) from exc
        if code != 354:
            if code == 421:
                raise _Lost(f"not sent: server closing at DATA: {_text(reply)}",
                            delivered_maybe=False)
            return code, reply
        payload = _LEADING_DOT.sub(b"..", data)
        if not payload.endswith(b"\r\n"):
            payload += b"\r\n"
        try:
            conn.send(payload + b".\r\n")
            code, reply = conn.getreply()
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            raise _Lost(f"uncertain: connection lost while the message was transferred "
                        f"({exc!r}); it may have been delivered", delivered_maybe=True) from exc
        if code == 421:
            raise _Lost(f"uncertain: server closing after the message: {_text(reply)}",
                        delivered_maybe=True)
        return code, reply

    @staticmethod
    def _reset(conn: smtplib.SMTP) -> None:
        """Best effort: a refusal stands even if the connection dies right after it."""
        try:
            conn.rset()
        except (OSError, smtplib.SMTPException):
            conn.close()


def _refusal(code: int, reply: bytes, what: str) -> Outcome:
    reason = f"smtp {code}: {what}: {_text(reply)}"
    return Outcome.rejected(reason) if code >= 500 else Outcome.transient(reason)


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)

