"""What every HTTP provider shares: one pooled session, timeouts, and the fixed sequence
build the request -> post it -> read each recipient's outcome.

A provider module fills in only `build_request` and `parse_outcomes` (and, where its API has a
quirk, `refused`). Everything about *whether* a call failed lives here, in one place:

* 429, 408 and 5xx, connect timeouts and refused connections raise `TransientProviderError`
  with `retry_after` taken from `Retry-After` or the rate-limit headers;
* a read timeout, a connection dropped after the request was written, or a 2xx answer that
  cannot be read raise `UncertainProviderError`: the provider may have accepted the batch;
* 401/403 and other refusals raise `PermanentProviderError` (or a provider maps them per
  recipient).

There is deliberately no retry loop here: the send loop owns retries, backoff and the ledger.
The rate-limit state of the last answer is kept on `last_rate_limit` and on every error.
"""

from __future__ import annotations

import email.utils
import json
import re
import threading
import time
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from operator import itemgetter
from html import escape as html_escape
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any, ClassVar
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import NewConnectionError

from digest import __version__
from digest.errors import (ConfigurationError, PermanentProviderError, ProviderError,
                           TransientProviderError, UncertainProviderError)
from digest.edition.personalize import TOKENS, SplitTemplate
from digest.delivery.providers.base import Letter, Outcome, Provider, Recipient

USER_AGENT = f"verdict-digest/{__version__} python-requests/{requests.__version__}"
DEFAULT_TIMEOUT = (5.0, 30.0)  # connect, read (seconds); a batch of 500 full messages is large
_BODY_KEPT = 2000  # characters of an error body kept on the exception


@dataclass(frozen=True, slots=True)
class RateLimit:
    """What the provider said about its rate limit in its last answer (any field may be unknown).

    `reset_after` is seconds from the moment of the answer, whatever form the provider used
    (SendGrid sends an epoch, Resend a delta)."""

    limit: int | None = None
    remaining: int | None = None
    reset_after: float | None = None
    retry_after: float | None = None

    @property
    def exhausted(self) -> bool:
        return self.remaining is not None and self.remaining <= 0


@dataclass(slots=True)
class Call:
    """One HTTP request, as a provider module describes it."""

    path: str
    body: bytes | Body | None = None  # already encoded (JSON); or use `form` for multipart
    form: list[tuple[str, tuple[None, str]]] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    method: str = "POST"


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def encode_json(payload: Any) -> bytes:
    """Compact UTF-8 JSON: non-ASCII stays as is (a \\u escape would bloat a 100 KB body)."""
    return _ENCODER.encode(payload).encode("utf-8")


def json_string(text: str) -> str:
    """`text` as a JSON string literal (quotes included), non-ASCII kept."""
    return encode_basestring(text)


def _json_inner(text: str) -> bytes:
    """`text` as the inside of a JSON string literal, UTF-8 encoded (the C string encoder,
    without building a JSONEncoder for every value)."""
    return encode_basestring(text)[1:-1].encode("utf-8")


@lru_cache(maxsize=64)
def _member(name: str, first: bool) -> bytes:
    return (b'"' if first else b',"') + _json_inner(name) + b'":'


_TOKEN_SPLIT = re.compile("(" + "|".join(re.escape(t) for t in TOKENS) + ")")


class JsonString:
    """A rendered document, JSON-encoded once, filled per recipient by joining bytes.

    Full-body providers (Postmark, Resend) send one complete message per recipient. Encoding a
    100 KB body to JSON for every recipient costs ~1 ms (HTML is full of quotes to escape);
    encoding its pieces once and joining them with each recipient's encoded values costs
    microseconds, and yields exactly the bytes `json.dumps` of the filled document would.
    """

    __slots__ = ("_parts", "_names", "_pick", "_escape_html", "_size", "_big")

    def __init__(self, template: SplitTemplate) -> None:
        document = template.fill({t: t for t in template.tokens})  # tokens need no escaping
        pieces = _TOKEN_SPLIT.split(document)
        self._parts = [_json_inner(p) for p in pieces[0::2]]
        slots = pieces[1::2]
        # A body names a few values many times (a reader's vote link sits in every tool's box):
        # each value is escaped and encoded once, then picked for its slots in one C call.
        self._names = sorted(set(slots))
        index = [self._names.index(slot) for slot in slots]
        self._pick = (itemgetter(*index) if len(index) > 1
                      else (lambda encoded, i=tuple(index): tuple(encoded[j] for j in i)))
        self._escape_html = template.escape_html
        self._size = 2 + len(self._parts) + len(slots)
        # Where the large shared parts sit among the pieces: the runs between them are joined
        # here, so an array of 500 messages handles a few pieces a message, not a hundred.
        self._big = [1 + 2 * j for j, part in enumerate(self._parts) if len(part) >= _BIG]

    def pieces(self, values: Mapping[str, str]) -> list[bytes]:
        """The JSON string literal for these values, as pieces (the big ones shared):
        `"`, part, value, part, ..., part, `"`."""
        if self._escape_html:
            encoded = [_json_inner(html_escape(values[name], quote=True))
                       for name in self._names]
        else:
            encoded = [_json_inner(values[name]) for name in self._names]
        out = [b'"'] * self._size
        out[1:-1:2] = self._parts
        out[2:-1:2] = self._pick(encoded)
        if not self._big:
            return [b"".join(out)]
        runs, start = [], 0
        for big in self._big:
            runs.append(b"".join(out[start:big]))
            runs.append(out[big])
            start = big + 1
        runs.append(b"".join(out[start:]))
        return runs

    def render(self, values: Mapping[str, str]) -> bytes:
        return b"".join(self.pieces(values))


def json_object(fields: Mapping[str, Any], encoded: Mapping[str, list[bytes]]) -> list[bytes]:
    """A JSON object, as pieces: ordinary `fields`, then members already encoded as pieces."""
    head = encode_json(dict(fields))
    out = [head[:-1]]
    first = head == b"{}"
    for name, pieces in encoded.items():
        out.append(_member(name, first))
        out.extend(pieces)
        first = False
    out.append(b"}")
    return out


class Body:
    """A request body as chunks with a known length: requests sends it chunk by chunk with a
    Content-Length (no chunked encoding), so a 50 MB batch is never concatenated in memory.

    `written` is set once every chunk has been handed to the socket: the send loop keeps its
    other threads' Python work off the interpreter until then, because each chunk's write
    needs the interpreter back, and while another thread held it the receiver sat idle (a
    500-message upload took 26-37 ms inside a send instead of 10-13 ms alone)."""

    __slots__ = ("chunks", "_length", "written")

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self._length = sum(len(c) for c in chunks)
        self.written = threading.Event()

    def __iter__(self):
        yield from self.chunks
        self.written.set()

    def __len__(self) -> int:
        return self._length

    def __bytes__(self) -> bytes:
        return b"".join(self.chunks)


_BIG = 8192  # pieces at least this large are sent as they are, never copied


def json_array(items: Sequence[list[bytes]]) -> Body:
    """A JSON array of objects given as pieces. The large pieces (the shared parts of a body)
    become chunks of their own, uncopied; runs of small ones are joined into one chunk."""
    chunks: list[bytes] = []
    small: list[bytes] = [b"["]
    for i, item in enumerate(items):
        if i:
            small.append(b",")
        for piece in item:
            if len(piece) >= _BIG:
                chunks.append(b"".join(small))
                chunks.append(piece)
                small = []
            else:
                small.append(piece)
    small.append(b"]")
    chunks.append(b"".join(small))
    return Body(chunks)


def _int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value is not None and value.strip() != "" else None
    except ValueError:
        return None


def parse_retry_after(value: str | None, now: float) -> float | None:
    """`Retry-After` is either delta seconds or an HTTP date (RFC 9110 section 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now)


def parse_rate_limit(headers: Mapping[str, str], now: float) -> RateLimit:
    """Read `X-RateLimit-*` (SendGrid, Mailgun) or `RateLimit-*` (Resend) and `Retry-After`."""

    def first(*names: str) -> str | None:
        for name in names:
            if name in headers:
                return headers[name]
        return None

    limit = _int(first("ratelimit-limit", "x-ratelimit-limit"))
    remaining = _int(first("ratelimit-remaining", "x-ratelimit-remaining"))
    reset_raw = _int(first("ratelimit-reset", "x-ratelimit-reset"))
    reset_after: float | None = None
    if reset_raw is not None:
        # An epoch is a large number; a delta is small. 10^9 s is 2001, far beyond any window.
        reset_after = max(0.0, reset_raw - now) if reset_raw > 1_000_000_000 else float(reset_raw)
    retry_after = parse_retry_after(first("retry-after"), now)
    return RateLimit(limit, remaining, reset_after, retry_after)


def body_text(response: requests.Response) -> str:
    """The body as text without requests' charset guessing (slow on a large body)."""
    return response.content.decode(response.encoding or "utf-8", "replace")


def _error_text(response: requests.Response) -> str:
    """The provider's own words about an error, for the operator."""
    try:
        data = response.json()
    except ValueError:
        return body_text(response).strip()[:300]
    if isinstance(data, dict):
        if isinstance(data.get("errors"), list) and data["errors"]:
            first = data["errors"][0]
            if isinstance(first, dict):
                return str(first.get("message") or first)
        for key in ("Message", "message", "error", "name"):
            if data.get(key):
                code = data.get("ErrorCode")  # Postmark's own error number says the most
                return f"{data[key]} (ErrorCode {code})" if code is not None else str(data[key])
    return str(data)[:300]


class HttpProvider(Provider):
    """Base of the HTTP API providers: one pooled `requests.Session` per instance."""

    default_base_url: ClassVar[str]

    def __init__(self, token: str, *, base_url: str | None = None,
                 timeout: tuple[float, float] = DEFAULT_TIMEOUT,
                 clock: Callable[[], float] = time.time, pool_size: int = 4) -> None:
        if not token:
            raise ValueError(f"{self.name}: an API token is required")
        self.token = token
        self.base_url = (base_url or self.default_base_url).rstrip("/")
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError(f"DIGEST_PROVIDER_URL {self.base_url!r} must be an absolute "
                                     f"http(s) URL, e.g. {self.default_base_url}")
        self.timeout = timeout
        self.clock = clock
        self.last_rate_limit: RateLimit | None = None
        self._encoded: tuple[Letter, JsonString, JsonString] | None = None
        self.session = requests.Session()
        # No transport-level retries: a silent re-post could deliver a batch twice.
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})
        self.session.headers.update(self.auth_headers())
        # Proxies and a CA bundle from the environment are honoured, but read once here: left to
        # requests, every call walks the whole environment (a tenth of a call's CPU), and a
        # ~/.netrc entry could replace the provider's own Authorization header.
        env = self.session.merge_environment_settings(self.base_url, {}, None, None, None)
        self._transport = {"proxies": env["proxies"], "verify": env["verify"],
                           "cert": env["cert"]}
        self.session.trust_env = False

    # --- what a provider module fills in ------------------------------------------------------

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @abstractmethod
    def build_request(self, letter: Letter, recipients: Sequence[Recipient],
                      batch_key: str) -> Call:
        """The request that sends this batch."""

    @abstractmethod
    def parse_outcomes(self, response: requests.Response, letter: Letter,
                       recipients: Sequence[Recipient]) -> list[Outcome]:
        """One outcome per recipient from a 2xx answer. Raise `UnreadableAnswer` when the answer
        cannot be matched to the recipients."""

    def refused(self, response: requests.Response, recipients: Sequence[Recipient]
                ) -> list[Outcome] | None:
        """A provider's reading of a 4xx answer other than 401/403/408/429: per-recipient
        outcomes, or None to treat it as a permanent failure of the whole call."""
        return None

    def encoded_bodies(self, letter: Letter) -> tuple[JsonString, JsonString]:
        """The letter's HTML and text, JSON-encoded once per letter (a send has one letter)."""
        if self._encoded is None or self._encoded[0] is not letter:
            self._encoded = (letter, JsonString(letter.html), JsonString(letter.text))
        return self._encoded[1], self._encoded[2]

    # --- the fixed sequence --------------------------------------------------------------------

    def send_batch(self, letter: Letter, recipients: Sequence[Recipient], *,
                   batch_key: str) -> list[Outcome]:
        return self.send_prepared(self.prepare(letter, recipients, batch_key=batch_key), letter,
                                  recipients, batch_key=batch_key)

    def prepare(self, letter: Letter, recipients: Sequence[Recipient], *,
                batch_key: str) -> Call | None:
        """The batch's request, encoded: the CPU-heavy half of a call, which the send loop
        builds while the previous request waits for its answer."""
        if not recipients:
            return None
        if len(recipients) > self.batch_limit:
            raise ValueError(f"{self.name}: batch of {len(recipients)} exceeds the limit of "
                             f"{self.batch_limit}")
        return self.build_request(letter, recipients, batch_key)

    def send_prepared(self, prepared: object | None, letter: Letter,
                      recipients: Sequence[Recipient], *, batch_key: str) -> list[Outcome]:
        if not recipients:
            return []
        if prepared is None:
            prepared = self.prepare(letter, recipients, batch_key=batch_key)
        if not isinstance(prepared, Call):
            raise TypeError(f"{self.name}: send_prepared needs the Call that prepare built")
        response = self.post(prepared)
        if 200 <= response.status_code < 300:
            try:
                outcomes = self.parse_outcomes(response, letter, recipients)
            except UnreadableAnswer as exc:
                raise self._error(UncertainProviderError,
                                  f"{self.name} accepted the call but its answer cannot be read "
                                  f"({exc}); the batch may have been sent", response) from None
            if len(outcomes) != len(recipients):  # a provider module bug, never silently
                raise AssertionError(f"{self.name}: {len(outcomes)} outcomes for "
                                     f"{len(recipients)} recipients")
            return outcomes
        return self.classify_failure(response, recipients)

    def post(self, call: Call) -> requests.Response:
        """Send one request; translate transport failures into the error family."""
        url = self.base_url + call.path
        try:
            response = self.session.request(call.method, url, data=call.body, files=call.form,
                                            headers=call.headers, timeout=self.timeout,
                                            allow_redirects=False, **self._transport)
        except requests.ConnectTimeout as exc:
            raise TransientProviderError(f"{self.name}: connecting to {self.base_url} timed out "
                                         f"({exc.__class__.__name__})") from exc
        except requests.ReadTimeout as exc:
            raise UncertainProviderError(f"{self.name}: no answer within {self.timeout[1]} s; "
                                         "the batch may have been sent") from exc
        except requests.exceptions.SSLError as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                raise PermanentProviderError(f"{self.name}: the certificate of {self.base_url} "
                                             "is not trusted") from exc
            raise UncertainProviderError(f"{self.name}: TLS failed ({exc!r}); the batch may "
                                         "have been sent") from exc
        except requests.ConnectionError as exc:
            if _never_connected(exc):
                raise TransientProviderError(f"{self.name}: cannot connect to {self.base_url}"
                                             ) from exc
            raise UncertainProviderError(f"{self.name}: the connection dropped before an "
                                         "answer; the batch may have been sent") from exc
        except requests.RequestException as exc:  # e.g. ChunkedEncodingError mid-answer
            raise UncertainProviderError(f"{self.name}: the answer broke off ({exc!r}); the "
                                         "batch may have been sent") from exc
        self.last_rate_limit = parse_rate_limit(
            {k.lower(): v for k, v in response.headers.items()}, self.clock())
        return response

    def classify_failure(self, response: requests.Response,
                         recipients: Sequence[Recipient]) -> list[Outcome]:
        status = response.status_code
        text = _error_text(response)
        if status == 429 or status == 408 or status >= 500:
            raise self._error(TransientProviderError,
                              f"{self.name} answered {status}: {text}", response)
        if status in (401, 403):
            raise self._error(PermanentProviderError,
                              f"{self.name} refused the credentials ({status}): {text}", response)
        outcomes = self.refused(response, recipients)
        if outcomes is not None:
            return outcomes
        raise self._error(PermanentProviderError, f"{self.name} refused the call ({status}): "
                          f"{text}", response)

    def _error(self, cls: type[ProviderError], message: str,
               response: requests.Response) -> ProviderError:
        rate = self.last_rate_limit or RateLimit()
        retry_after = rate.retry_after
        if retry_after is None and response.status_code == 429 and rate.reset_after is not None:
            retry_after = rate.reset_after
        error = cls(message, status=response.status_code, body=body_text(response)[:_BODY_KEPT],
                    retry_after=retry_after)
        error.rate_limit = rate  # type: ignore[attr-defined]
        return error

    def close(self) -> None:
        self.session.close()


def json_answer(response: requests.Response, kind: type[dict] | type[list]):
    """A 2xx answer's JSON, which must be an object (`dict`) or an array (`list`). Anything else
    raises `UnreadableAnswer`: the request may have been accepted, so the batch is uncertain."""
    try:
        answer = response.json()
    except ValueError as exc:
        raise UnreadableAnswer("not JSON") from exc
    if not isinstance(answer, kind):
        raise UnreadableAnswer(f"not a JSON {'object' if kind is dict else 'array'}")
    return answer


class UnreadableAnswer(ValueError):
    """A 2xx answer that does not say what happened to each recipient."""


def _never_connected(exc: requests.ConnectionError) -> bool:
    """True when the request cannot have reached the server (refused, DNS, unreachable)."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        item = stack.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, NewConnectionError):
            return True
        stack.extend([item.__cause__, item.__context__, getattr(item, "reason", None)])
        stack.extend(a for a in getattr(item, "args", ()) if isinstance(a, BaseException))
    return False


def split_headers(letter: Letter, recipients: Sequence[Recipient]
                  ) -> tuple[dict[str, str], list[dict[str, str]]]:
    """Headers every recipient of a batch shares, and each recipient's own (List-Unsubscribe):
    substituting providers send the first once and template the second."""
    per = [letter.headers(r) for r in recipients]
    shared = {k: v for k, v in per[0].items() if all(h.get(k) == v for h in per[1:])}
    own = [{k: v for k, v in h.items() if k not in shared} for h in per]
    return shared, own
