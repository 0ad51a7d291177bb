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


def run(connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=connection.dialect.name == "sqlite",
                      compare_type=True, include_name=include_name)
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    engine = engine_from_config(config.get_section(config.config_ini_section) or {},
                                prefix="sqlalchemy.", poolclass=pool.NullPool)
    with engine.connect() as conn:
        run(conn)
