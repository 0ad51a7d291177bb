"""Alembic environment: runs on the connection `digest.database.upgrade` hands over, or on the URL."""

from alembic import context
from sqlalchemy import engine_from_config, pool
from sqlmodel import SQLModel

import digest.database.models  # noqa: F401  (registers every table on SQLModel.metadata)

config = context.config
target_metadata = SQLModel.metadata
# Tables another program keeps in this database, never ours to create or drop: APScheduler's job
# store (schedules/runner.py).
FOREIGN_TABLES = {"apscheduler_jobs"}


def include_name(name, type_, parent_names) -> bool:
    return not (type_ == "table" and name in FOREIGN_TABLES)


def _sqlite_foreign_keys(connection, on: bool) -> None:
    """Batch mode rebuilds a SQLite table by dropping it, and dropping a table others reference
    deletes their rows first (ON DELETE CASCADE) while foreign keys are enforced. Enforcement
    can only change outside a transaction, so it is switched on the driver's connection."""
    if connection.in_transaction():
        connection.commit()
    connection.connection.driver_connection.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")


def run(connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        _sqlite_foreign_keys(connection, False)
    try:
        context.configure(connection=connection, target_metadata=target_metadata,
                          render_as_batch=sqlite, compare_type=True, include_name=include_name)
        with context.begin_transaction():
            context.run_migrations()
            if sqlite:
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"the migration left rows pointing nowhere: {broken[:5]}")
    except BaseException:
        if connection.in_transaction():
            connection.rollback()
        raise
    finally:
        if sqlite:
            _sqlite_foreign_keys(connection, True)


connection = config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    engine = engine_from_config(config.get_section(config.config_ini_section) or {},
                                prefix="sqlalchemy.", poolclass=pool.NullPool)
    with engine.connect() as conn:
        run(conn)
