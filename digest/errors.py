"""One error family for the project, so the CLI can turn any of them into one clear line.

`ConfigurationError` deliberately sits outside `DigestError`: a broken setup must never be
swallowed by code that catches the ordinary, recoverable errors.
"""

from __future__ import annotations


class DigestError(Exception):
    """Base of every expected, reportable failure."""

    exit_code = 1


class ContentImportError(DigestError):
    """A comparison file that does not parse. Carries where: file, line and/or field."""

    exit_code = 2

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        self.path, self.line, self.field, self.reason = path, line, field, message
        where = ""
        if path:
            where = path + (f":{line}" if line else "")
        if field:
            where = f"{where} [{field}]" if where else f"[{field}]"
        super().__init__(f"{where}: {message}" if where else message)


class ProviderError(DigestError):
    """A provider call failed as a whole (not one recipient)."""

    def __init__(self, message: str, *, status: int | None = None, body: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status, self.body, self.retry_after = status, body, retry_after


class TransientProviderError(ProviderError):
    """Worth retrying: 429, 5xx, timeouts, dropped connections."""


class PermanentProviderError(ProviderError):
    """Retrying cannot help: bad credentials, a malformed request, a suspended account."""


class ConfigurationError(Exception):
    """The settings cannot work (missing secret, unknown provider, bad time zone)."""

    exit_code = 3


class UncertainProviderError(TransientProviderError):
    """The request went out and no usable answer came back (read timeout, connection dropped
    after sending, a garbled success): the provider may have accepted it. Retry only with the
    same idempotency key; otherwise leave it for the operator, never re-send silently."""
