"""The engine, sessions, and schema upgrades (Alembic) for SQLite and PostgreSQL alike."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine

# The shared timestamp type, clock and unit of work live with the lowest package; digest code
# imports them from here.
from subscribers.storage import UTCDateTime, unit_of_work, utcnow  # noqa: F401

MIGRATIONS = Path(__file__).parent / "migrations"


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    # WAL lets readers (status, preview) run while a send writes; busy_timeout makes concurrent
    # senders wait for the write lock instead of failing with "database is locked".
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _sqlite_begin(conn) -> None:
    # Take the write lock at BEGIN so read-then-write transactions cannot deadlock or interleave.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str, **kwargs) -> Engine:
    """One engine per process. SQLite gets WAL and immediate transactions; PostgreSQL a pool."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                               **kwargs)

        @event.listens_for(engine, "connect")
        def _connect(dbapi_conn, record):
            dbapi_conn.isolation_level = None  # let SQLAlchemy's BEGIN event drive transactions
            _sqlite_pragmas(dbapi_conn, record)

        event.listen(engine, "begin", _sqlite_begin)
        return engine
    kwargs.setdefault("pool_size", 5)
    kwargs.setdefault("max_overflow", 5)
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def session_scope(engine: Engine):
    """A unit of work on `engine`: commit on success, roll back everything on any error."""
    return unit_of_work(lambda: Session(engine, expire_on_commit=False))


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(engine: Engine) -> str:
    """Bring the database to the newest schema; running it twice is a no-op. Returns the revision."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        conn.commit()
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision() or ""


def schema_state(engine: Engine) -> tuple[str | None, str]:
    """(current revision or None, head revision) without changing anything."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head() or ""
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    return current, head


def sqlite_file(engine: Engine) -> Path | None:
    """The file behind a SQLite engine (None for PostgreSQL and in-memory databases)."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:" \
            or database.startswith("file:"):
        return None
    return Path(database)


def require_schema(engine: Engine) -> None:
    """Refuse to work on a database that `digest init` has not brought up to date."""
    from digest.errors import DigestError

    path = sqlite_file(engine)
    if path is not None and not path.exists():
        # Connecting would create an empty file; a look at a database that is not there must
        # leave nothing behind.
        raise DigestError(f"no database here ({path}): run `digest init` first")
    current, head = schema_state(engine)
    if current != head:
        state = "is not initialised" if current is None else f"is at revision {current}, not {head}"
        where = engine.url.render_as_string(hide_password=True)
        raise DigestError(f"the database {where} {state}: run `digest init`")
