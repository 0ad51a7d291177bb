"""Shared fixtures: a migrated database on SQLite and on PostgreSQL. Each test gets empty tables.

PostgreSQL is the server DIGEST_TEST_DATABASE_URL names (CI sets it to the machine's own); without
it, the session starts a throwaway server from the `pgserver` wheel in a temporary folder and
removes it at the end, so the README's one test command runs the PostgreSQL half anywhere."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
import warnings
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlmodel import Session, SQLModel

from typer.testing import CliRunner

from digest.database import make_engine, upgrade
from digest.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("DIGEST_TEST_DATABASE_URL")

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def _pg_database(base_url: str):
    """Create a throwaway database on the test server, so runs never see each other's rows."""
    admin = make_engine(base_url, isolation_level="AUTOCOMMIT", pool_size=1)
    name = f"digest_test_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_engine(base_url).url.set(database=name).render_as_string(hide_password=False)
    return admin, name, url


@pytest.fixture(scope="session")
def pg_server_url():
    """The PostgreSQL server the tests use: DIGEST_TEST_DATABASE_URL, or one of our own.

    Its data folder is not under pytest's temporary folder: run as root, the server runs as
    another user, and every pytest session that starts on the machine (a second terminal, an
    editor's test run) resets `/tmp/pytest-of-root` to owner-only, cutting the server off
    from its files mid-run."""
    if PG_URL:
        yield PG_URL
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR
            import pgserver
    except ImportError:
        pytest.skip("PostgreSQL tests: DIGEST_TEST_DATABASE_URL is unset and the pgserver wheel "
                    "is not available on this platform")
    folder = Path(tempfile.mkdtemp(prefix="digest-test-postgresql-"))
    server = pgserver.get_server(folder / "data", cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_url(pg_server_url):
    admin, name, url = _pg_database(pg_server_url)
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _truncate(engine) -> None:
    tables = [t.name for t in SQLModel.metadata.sorted_tables]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("TRUNCATE " + ", ".join(tables) + " RESTART IDENTITY CASCADE"))
        else:
            for name in reversed(tables):
                conn.execute(text(f"DELETE FROM {name}"))


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path):
    """A URL of a migrated, empty database: SQLite file, or the shared PostgreSQL test database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'test.db'}"
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        return url
    url = request.getfixturevalue("pg_url")
    engine = make_engine(url)
    _truncate(engine)
    engine.dispose()
    return url


@pytest.fixture
def engine(db_url):
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine):
    with Session(engine, expire_on_commit=False) as session:
        yield session


@pytest.fixture
def settings(db_url, tmp_path, monkeypatch):
    """Settings for a test: this database, an outbox in tmp, no `.env` from the developer's folder."""
    monkeypatch.chdir(tmp_path)
    for key in list(os.environ):
        if key.startswith("DIGEST_") and key != "DIGEST_TEST_DATABASE_URL":
            monkeypatch.delenv(key)
    return load_settings(database_url=db_url, outbox_dir=str(tmp_path / "outbox"),
                         base_url="https://digest.example.test", timezone="Europe/Berlin",
                         secret_key="test-secret-key-0123456789abcdef")


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    path = Path(os.environ.get("DIGEST_TEST_ARTIFACTS", ROOT / "artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def env(settings, monkeypatch) -> dict[str, str]:
    """The `settings` fixture as DIGEST_* variables, for commands run through the CLI."""
    from digest.cli import common

    values = {
        "DIGEST_DATABASE_URL": settings.database_url,
        "DIGEST_OUTBOX_DIR": settings.outbox_dir,
        "DIGEST_SECRET_KEY": settings.secret_key.get_secret_value(),
        "DIGEST_BASE_URL": settings.base_url,
        "DIGEST_TIMEZONE": settings.timezone,
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    common.reset()  # settings and engine are cached per process
    yield values
    common.reset()


@pytest.fixture
def cli(env):
    """Run `digest ...` in-process; `.out`/`.err` have whitespace folded for easy matching."""
    from digest.cli import app

    runner = CliRunner()

    def run(*args: str):
        result = runner.invoke(app, list(args), env={"COLUMNS": "200"})
        result.out = " ".join(result.stdout.split())
        result.err = " ".join(result.stderr.split())
        return result

    return run


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """One line per distinct skip reason (pytest's own list repeats it per test location)."""
    reasons = Counter()
    for report in terminalreporter.stats.get("skipped", []):
        if isinstance(report.longrepr, tuple):
            reasons[report.longrepr[2].removeprefix("Skipped: ")] += 1
    for reason, count in sorted(reasons.items(), key=lambda item: -item[1]):
        terminalreporter.write_line(f"skipped {count}: {reason}")


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium for a browser test module (see `browser_support`)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    from browser_support import launch

    with sync_api.sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def fresh_url(request, tmp_path):
    """An empty database with no schema at all, of either backend (for migration tests)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    admin, name, url = _pg_database(request.getfixturevalue("pg_server_url"))
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def migrate(engine, revision: str, down: bool = False) -> None:
    """Alembic up (or down) to `revision` on the engine's database."""
    from alembic import command

    from digest.database import alembic_config

    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)
        conn.commit()
