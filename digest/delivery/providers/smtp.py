"""SMTP: one message per recipient (each has its own unsubscribe headers) over a few kept-open
connections, from `DIGEST_SMTP_URL`:

    smtp://[user:pass@]host[:25]            plain (a local relay)
    smtp+starttls://user:pass@host[:587]    upgraded with STARTTLS before logging in
    smtps://user:pass@host[:465]            TLS from the first byte

Throughput: the issue's message is encoded once (`digest.delivery.mime`) and each recipient's
is spliced from it; `connections` (DIGEST_SMTP_CONNECTIONS) connections work through a batch
in parallel, each taking the next recipient as soon as it is free, kept open across batches
and replaced after `messages_per_connection` messages (relays often cap a session) or a 421.
Where the server offers PIPELINING, MAIL, RCPT and DATA go out in one write.

Each message's fate is placed exactly, on every connection: a refused recipient (5xx) is
rejected with the server's reply, a 4xx is retried after a backoff and stays transient if it
persists, a connection lost (or a 421) before DATA leaves the message unsent and it is tried
again on a new connection, but one lost while the message was being transferred may have
been delivered (uncertain), and is never re-sent blindly.
"""

from __future__ import annotations

import itertools
import smtplib
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from email.utils import parseaddr
from urllib.parse import unquote, urlsplit

from digest.delivery.mime import MessageTemplate
from digest.delivery.providers.base import Letter, Outcome, Provider, Recipient
from digest.errors import (ConfigurationError, PermanentProviderError, ProviderError,
                           TransientProviderError)

MODES = {"smtp": ("plain", 25), "smtp+starttls": ("starttls", 587), "smtps": ("ssl", 465)}


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


class _Retry(Exception):
    """A 4xx answer: the message was not taken, and may be tried again after a while."""

    def __init__(self, reason: str, *, reconnect: bool = False) -> None:
        super().__init__(reason)
        self.reconnect = reconnect


class _Pacer:
    """Messages per second across all connections, spaced evenly (a relay that asks for a rate
    usually counts per second, so a burst of a whole batch would be refused)."""

    def __init__(self, rate: float, clock: Callable[[], float],
                 sleep: Callable[[float], None]) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._clock, self._sleep = clock, sleep
        self._next: float | None = None
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = self._clock()
            at = now if self._next is None or self._next < now else self._next
            self._next = at + self.interval
        if at > now:
            self._sleep(at - now)


class _Connection:
    """One SMTP session and what its server offers; used by one thread at a time."""

    __slots__ = ("smtp", "sent", "eight_bit", "smtputf8", "pipelining")

    def __init__(self, smtp: smtplib.SMTP, *, pipelining: bool) -> None:
        self.smtp = smtp
        self.sent = 0
        self.eight_bit = smtp.has_extn("8bitmime")
        self.smtputf8 = smtp.has_extn("smtputf8")
        self.pipelining = pipelining and smtp.has_extn("pipelining")

    def close(self, *, polite: bool) -> None:
        try:
            if polite:
                self.smtp.quit()
            else:
                self.smtp.close()
        except (OSError, smtplib.SMTPException):
            self.smtp.close()


class SmtpProvider(Provider):
    name = "smtp"
    batch_limit = 100
    substitutes = False
    idempotent = False

    def __init__(self, target: SmtpTarget, *, timeout: float = 30.0,
                 ssl_context: ssl.SSLContext | None = None,
                 local_hostname: str | None = None, connections: int = 4,
                 messages_per_connection: int = 100, rate_limit: float = 0.0,
                 retries: int = 3, backoff: float = 1.0, pipelining: bool = True,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if connections < 1 or messages_per_connection < 1:
            raise ConfigurationError("DIGEST_SMTP_CONNECTIONS and "
                                     "DIGEST_SMTP_MESSAGES_PER_CONNECTION must be at least 1")
        self.target = target
        self.timeout = timeout
        self.ssl_context = ssl_context or ssl.create_default_context()
        self.local_hostname = local_hostname
        self.connections = connections
        self.messages_per_connection = messages_per_connection
        self.retries, self.backoff = retries, backoff
        self.pipelining = pipelining
        self.sleep = sleep
        self._pacer = _Pacer(rate_limit, clock, sleep)
        # Enough per batch that each connection has a run of messages between the batch's ends
        # (where the others wait for the slowest), few enough that a crash leaves little open.
        self.batch_limit = max(100, 50 * connections)
        self._idle: list[_Connection | None] = [None] * connections
        self._pool: ThreadPoolExecutor | None = None
        self._templates: dict[tuple[int, bool], tuple[Letter, MessageTemplate]] = {}
        self._template_lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **kwargs) -> "SmtpProvider":
        return cls(SmtpTarget.from_url(url), **kwargs)

    # connections -----------------------------------------------------------------------------

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

    def _ready(self, slot: int) -> _Connection:
        """Slot's connection, opened (or replaced after its quota of messages) as needed."""
        conn = self._idle[slot]
        if conn is not None and conn.smtp.sock is None:  # closed after a refusal went wrong
            conn = None
        elif conn is not None and conn.sent >= self.messages_per_connection:
            conn.close(polite=True)
            conn = None
        if conn is None:
            conn = _Connection(self.connect(), pipelining=self.pipelining)
        self._idle[slot] = conn
        return conn

    def _drop(self, slot: int) -> None:
        conn, self._idle[slot] = self._idle[slot], None
        if conn is not None:
            conn.close(polite=False)

    def close(self) -> None:
        for slot, conn in enumerate(self._idle):
            if conn is not None:
                conn.close(polite=True)
            self._idle[slot] = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def template(self, letter: Letter, *, eight_bit: bool) -> MessageTemplate:
        """The letter's message encoded once for servers with (or without) 8BITMIME."""
        key = (id(letter), eight_bit)
        with self._template_lock:
            cached = self._templates.get(key)
            if cached is None or cached[0] is not letter:
                if len(self._templates) > 4:  # one issue at a time: drop earlier letters
                    self._templates.clear()
                cached = (letter, MessageTemplate(letter, eight_bit=eight_bit))
                self._templates[key] = cached
            return cached[1]

    # a batch ---------------------------------------------------------------------------------

    def send_batch(self, letter: Letter, recipients: Sequence[Recipient], *,
                   batch_key: str) -> list[Outcome]:
        if not recipients:
            return []
        if len(recipients) > self.batch_limit:
            raise ValueError(f"smtp: batch of {len(recipients)} exceeds {self.batch_limit}")
        run = _Run(self, letter, recipients)
        workers = min(self.connections, len(recipients))
        if workers == 1:
            run.work(0)
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.connections, thread_name_prefix="digest-smtp")
            futures = [self._pool.submit(run.work, slot) for slot in range(workers)]
            wait(futures)  # all of them, even if one failed: no thread may outlive its batch
            for future in futures:
                future.result()
        return run.finish()


class _Run:
    """One batch: every connection takes the next recipient until none is left."""

    def __init__(self, provider: SmtpProvider, letter: Letter,
                 recipients: Sequence[Recipient]) -> None:
        self.provider, self.letter, self.recipients = provider, letter, recipients
        self.sender = parseaddr(letter.from_addr)[1]
        self.outcomes: list[Outcome | None] = [None] * len(recipients)
        self._next = itertools.count()
        self.errors: list[ProviderError] = []
        self.stop = False

    def work(self, slot: int) -> None:
        p = self.provider
        while not self.stop:
            try:
                conn = p._ready(slot)
            except ProviderError as exc:
                self.errors.append(exc)
                if isinstance(exc, PermanentProviderError):
                    self.stop = True
                return
            index = next(self._next)
            if index >= len(self.recipients):
                return
            self.outcomes[index] = self._deliver(slot, conn, self.recipients[index])

    def _deliver(self, slot: int, conn: _Connection, recipient: Recipient) -> Outcome:
        p = self.provider
        attempt = 0
        while True:
            attempt += 1
            p._pacer.wait()
            try:
                outcome = _send_one(conn, p.template(self.letter, eight_bit=conn.eight_bit),
                                    self.sender, recipient, first=conn.sent == 0)
            except _Lost as lost:
                p._drop(slot)
                if lost.delivered_maybe:
                    return Outcome.uncertain(str(lost))
                reason, wait = str(lost), 0.0  # nothing was taken: a new connection may do
            except _Retry as busy:
                if busy.reconnect:
                    p._drop(slot)
                reason, wait = str(busy), p.backoff * 2 ** (attempt - 1)
            except PermanentProviderError as exc:  # the sender itself is refused
                self.errors.append(exc)
                self.stop = True
                return Outcome.transient(f"not sent: {exc}")
            else:
                conn.sent += 1
                return outcome
            if attempt > p.retries:
                return Outcome.transient(reason)
            if wait:
                p.sleep(wait)
            try:
                conn = p._ready(slot)
            except ProviderError as exc:
                self.errors.append(exc)
                self.stop = isinstance(exc, PermanentProviderError) or self.stop
                return Outcome.transient(f"not sent: {exc}")

    def finish(self) -> list[Outcome]:
        """The outcomes in order. A failure that left every recipient unsent fails the whole
        call (the sender retries it, or stops on a permanent one). Once anything may have
        gone out (sent, refused for good, uncertain) the outcomes stand, since a retried call
        could deliver twice; those not reached are transient, and the next batch meets the
        failure again."""
        if self.errors and all(o is None or o.status == "transient" for o in self.outcomes):
            permanent = [e for e in self.errors if isinstance(e, PermanentProviderError)]
            raise (permanent or self.errors)[0]
        reason = f"not sent: {self.errors[0]}" if self.errors else "not sent"
        return [o if o is not None else Outcome.transient(reason) for o in self.outcomes]


# one message -----------------------------------------------------------------------------------

def _send_one(conn: _Connection, template: MessageTemplate, sender: str, recipient: Recipient,
              *, first: bool) -> Outcome:
    """MAIL, RCPT, DATA and the message; the outcome, or _Lost / _Retry to say what to do."""
    address = recipient.email
    utf8 = not (address.isascii() and sender.isascii())
    if utf8 and not conn.smtputf8:
        return Outcome.rejected("smtp 553: the address is not ASCII and the server does not "
                                "offer SMTPUTF8")
    options = (" BODY=8BITMIME" if conn.eight_bit else "") + (" SMTPUTF8" if utf8 else "")
    data = template.render(recipient, smtputf8=utf8)
    mail = f"MAIL FROM:<{sender}>{options}\r\n".encode("utf-8")
    rcpt = f"RCPT TO:<{address}>\r\n".encode("utf-8")
    smtp = conn.smtp
    if conn.pipelining:
        _write(smtp, mail + rcpt + b"DATA\r\n", "MAIL FROM")
        replies = [_reply(smtp, "MAIL FROM"), _reply(smtp, "RCPT TO"), _reply(smtp, "DATA")]
    else:
        replies = [_reply_to(smtp, mail, "MAIL FROM")]
        if replies[0][0] == 250:
            replies.append(_reply_to(smtp, rcpt, "RCPT TO"))
            if replies[1][0] in (250, 251):
                replies.append(_reply_to(smtp, b"DATA\r\n", "DATA"))
    (code, reply), steps = replies[0], ("MAIL FROM", "RCPT TO", "DATA")
    for step, (code, reply) in zip(steps, replies):
        if code == 421:
            raise _Lost(f"not sent: server closing at {step}: {_text(reply)}",
                        delivered_maybe=False)
    code, reply = replies[0]
    if code != 250:
        _reset(smtp, ended=len(replies) == 3 and replies[2][0] == 354)
        if code >= 500 and first:  # the sender, not this recipient, is refused
            raise PermanentProviderError(f"smtp: sender {sender} refused: {code} "
                                         f"{_text(reply)}", status=code)
        raise _Retry(f"smtp {code}: sender refused: {_text(reply)}")
    code, reply = replies[1]
    if code not in (250, 251):
        _reset(smtp, ended=len(replies) == 3 and replies[2][0] == 354)
        return _refusal(code, reply, "recipient refused")
    code, reply = replies[2]
    if code != 354:
        _reset(smtp, ended=False)
        return _refusal(code, reply, "message refused")
    if b"\n." in data:
        data = data.replace(b"\n.", b"\n..")
    try:
        smtp.sock.sendall(data + b".\r\n")
        code, reply = smtp.getreply()
    except (OSError, smtplib.SMTPServerDisconnected) as exc:
        raise _Lost(f"uncertain: connection lost while the message was transferred "
                    f"({exc!r}); it may have been delivered", delivered_maybe=True) from exc
    if code == 421:
        raise _Lost(f"uncertain: server closing after the message: {_text(reply)}",
                    delivered_maybe=True)
    if code != 250:
        return _refusal(code, reply, "message refused")
    return Outcome.sent(template.letter.message_id_header(recipient))


def _write(smtp: smtplib.SMTP, data: bytes, step: str) -> None:
    try:
        if smtp.sock is None:
            raise smtplib.SMTPServerDisconnected("not connected")
        smtp.sock.sendall(data)
    except (OSError, smtplib.SMTPServerDisconnected) as exc:
        raise _Lost(f"not sent: connection lost at {step} ({exc!r})",
                    delivered_maybe=False) from exc


def _reply(smtp: smtplib.SMTP, step: str) -> tuple[int, bytes]:
    try:
        return smtp.getreply()
    except (OSError, smtplib.SMTPServerDisconnected) as exc:
        raise _Lost(f"not sent: connection lost at {step} ({exc!r})",
                    delivered_maybe=False) from exc


def _reply_to(smtp: smtplib.SMTP, command: bytes, step: str) -> tuple[int, bytes]:
    _write(smtp, command, step)
    return _reply(smtp, step)


def _reset(smtp: smtplib.SMTP, *, ended: bool) -> None:
    """Back to a clean transaction after a refusal. `ended`: the server went into DATA anyway
    (a pipelined DATA it should have refused): ending it with "." could deliver an empty
    message, so the connection is closed instead and the next message opens a new one. Best
    effort: a refusal stands even if the connection dies right after it."""
    if ended:
        smtp.close()
        return
    try:
        smtp.sock.sendall(b"RSET\r\n")
        smtp.getreply()
    except (OSError, AttributeError, smtplib.SMTPException):
        smtp.close()


def _refusal(code: int, reply: bytes, what: str) -> Outcome:
    reason = f"smtp {code}: {what}: {_text(reply)}"
    if code >= 500:
        return Outcome.rejected(reason)
    raise _Retry(reason)


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
