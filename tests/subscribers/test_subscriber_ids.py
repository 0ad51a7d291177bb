"""Subscriber ids are never given twice, on either database, and migration 0003 (which rebuilds
the SQLite table with AUTOINCREMENT) keeps every row that points at a subscriber."""

from __future__ import annotations

import datetime as dt

from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlmodel import Session

from conftest import migrate
from digest.database import alembic_config, make_engine, require_schema, upgrade
from subscribers import lifecycle

T0 = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.timezone.utc)
BEFORE_0003 = ScriptDirectory.from_config(alembic_config("sqlite://")).get_revision(
    "0003").down_revision


def _counts(engine) -> tuple[int, int]:
    with engine.connect() as conn:
        return (conn.execute(text("SELECT COUNT(*) FROM subscribers")).scalar_one(),
                conn.execute(text("SELECT COUNT(*) FROM deliveries")).scalar_one())


def _sign_up(engine, address: str, minutes: int) -> int:
    with Session(engine) as session:
        subscriber = lifecycle.signup(session, address,
                                      at=T0 + dt.timedelta(minutes=minutes)).subscriber
        session.commit()
        return int(subscriber.id)


def _erase(engine, address: str) -> None:
    with Session(engine) as session:
        lifecycle.erase(session, address, at=T0)
        session.commit()


def test_0003_keeps_every_row_and_ids_are_never_given_again(fresh_url):
    engine = make_engine(fresh_url)
    migrate(engine, BEFORE_0003)
    t = "2026-11-23 09:00:00+00:00"
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO issues (id, key, status, status_reason, window_start, window_end, subject,"
            " preheader, html, text, html_hash, created_at) VALUES (1, '2026-W47', 'sent', '',"
            " :t, :t, 's', '', 'h', 't', 'x', :t)"), {"t": t})
        conn.execute(text(
            "INSERT INTO subscribers (id, email, status, source, created_at, updated_at)"
            " VALUES (:i, :e, 'active', 'import', :t, :t)"),
            [{"i": i, "e": f"r{i}@example.com", "t": t} for i in range(1, 301)])
        conn.execute(text(
            "INSERT INTO delivery_batches (id, issue_id, batch_no, status, first_id, last_id,"
            " size, attempts, reason, updated_at)"
            " VALUES (1, 1, 0, 'done', 1, 300, 300, 1, '', :t)"),
            {"t": t})
        conn.execute(text(
            "INSERT INTO deliveries (id, issue_id, subscriber_id, status, attempts, reason,"
            " updated_at, batch_no) VALUES (:i, 1, :i, 'sent', 1, '', :t, 0)"),
            [{"i": i, "t": t} for i in range(1, 301)])

    upgrade(engine)
    require_schema(engine)
    assert _counts(engine) == (300, 300), "rebuilding the table cascaded into the deliveries"
    with engine.connect() as conn:
        assert conn.execute(text("SELECT MIN(confirmations_sent), MAX(confirmations_sent),"
                                 " COUNT(confirmations_since) FROM subscribers")).one() == (0, 0, 0)
        if engine.dialect.name == "sqlite":
            sql = conn.execute(text(
                "SELECT sql FROM sqlite_master WHERE name = 'subscribers'")).scalar_one()
            assert "AUTOINCREMENT" in sql
            assert conn.execute(text("PRAGMA foreign_keys")).scalar_one() == 1, \
                "enforcement is back on after the migration"

    # The newest subscriber leaves; the next one gets a new id, again and again.
    _erase(engine, "r300@example.com")
    assert _counts(engine) == (299, 299)
    newcomer = _sign_up(engine, "new1@example.com", 1)
    assert newcomer > 300
    _erase(engine, "new1@example.com")
    assert _sign_up(engine, "new2@example.com", 2) > newcomer

    # And back down: the columns go, every row stays.
    migrate(engine, BEFORE_0003, down=True)
    assert _counts(engine) == (300, 299)
    engine.dispose()


def test_ids_are_never_given_twice_on_a_fresh_database(engine):
    ids = [_sign_up(engine, f"r{i}@example.com", i) for i in range(3)]
    _erase(engine, "r2@example.com")  # the newest
    _erase(engine, "r1@example.com")
    again = _sign_up(engine, "r3@example.com", 3)
    assert again > max(ids)
