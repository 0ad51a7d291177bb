"""The Alembic history builds exactly the schema the models describe, on both backends."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

import digest.models  # noqa: F401
from digest.db import make_engine, require_schema, schema_state, upgrade


def test_upgrade_is_idempotent_and_matches_models(db_url):
    engine = make_engine(db_url)
    assert upgrade(engine) == upgrade(engine)
    current, head = schema_state(engine)
    assert current == head
    require_schema(engine)
    with engine.connect() as conn:
        # APScheduler's job store lives in the same database (schedules/runner.py); not ours.
        opts = {"compare_type": True,
                "include_name": lambda name, type_, _parents: not (
                    type_ == "table" and name == "apscheduler_jobs")}
        diff = compare_metadata(MigrationContext.configure(conn, opts=opts), SQLModel.metadata)
    assert diff == [], f"models and migrations differ: {diff}"
    engine.dispose()


def test_uninitialised_database_is_refused(tmp_path):
    import pytest

    from digest.errors import DigestError

    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(DigestError, match="not initialised: run `digest init`"):
        require_schema(engine)
