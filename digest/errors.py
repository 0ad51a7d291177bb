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


class DatabaseError(DigestError):
    """The database failed or refused an operation: disk full, a read-only file or role, an
    unreachable server. Reported as one line naming the database and the driver's reason, never
    the SQL or its parameters (they hold addresses and tokens). Whatever the ledger committed
    stands, so the same command run again once the database is writable resumes the work."""

    exit_code = 8

    def __init__(self, message: str, *, database: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.database, self.reason = database, reason

    @classmethod
    def wrap(cls, exc: BaseException, *, database: str = "", doing: str = "",
             then: str = "") -> DatabaseError:
        """The one line for a driver error `exc` (SQLAlchemy's wrapper or the driver's own):
        `database <where>: <reason>[; <doing>][. <then>]`."""
        reason = database_reason(exc)
        where = f"database {database}" if database else "the database"
        message = f"{where}: {reason}" + (f"; {doing}" if doing else "") + (
            f". {then}" if then else "")
        return cls(message, database=database, reason=reason)


def database_name(url) -> str:
    """A SQLAlchemy URL as an operator knows the database: a SQLite file by its path, a server
    database by its URL with the password hidden."""
    if url.get_backend_name() == "sqlite":
        return (url.database or ":memory:").removeprefix("file:")
    return url.render_as_string(hide_password=True)


def database_reason(exc: BaseException) -> str:
    """The driver's own first line (`database or disk is full`, `cannot execute UPDATE in a
    read-only transaction`), without SQLAlchemy's statement and parameters."""
    orig = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    return lines[0] if lines else type(orig).__name__


class UncertainProviderError(TransientProviderError):
    """The request went out and no usable answer came back (read timeout, connection dropped
    after sending, a garbled success): the provider may have accepted it. Retry only with the
    same idempotency key; otherwise leave it for the operator, never re-send silently."""
