"""The Alembic history builds exactly the schema the models describe, on both backends."""

from __future__ import annotations

import datetime as dt

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlmodel import Session, SQLModel

import digest.database.models  # noqa: F401
from conftest import migrate
from digest.database import make_engine, require_schema, schema_state, upgrade


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
    with engine.connect():
        pass  # the file exists, with no schema in it
    with pytest.raises(DigestError, match="not initialised: run `digest init`"):
        require_schema(engine)


def test_a_missing_sqlite_file_is_refused_and_not_created(tmp_path):
    import pytest

    from digest.errors import DigestError

    path = tmp_path / "nowhere.db"
    with pytest.raises(DigestError, match=r"no database here .*run `digest init`"):
        require_schema(make_engine(f"sqlite:///{path}"))
    assert not path.exists()


# --- 0002: ledgers written before delivery batches ----------------------------------------------

def test_0002_carries_an_in_flight_ledger_over(fresh_url):
    """A ledger written by 0001 mid-send: requests in flight or unanswered keep their keys and
    become uncertain batches; everything else is cut into runs, pending or done."""
    from digest.delivery import ledger

    engine = make_engine(fresh_url)
    migrate(engine, "0001")
    t = "2026-11-23 09:00:00+00:00"
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO issues (id, key, status, status_reason, window_start, window_end, subject,"
            " preheader, html, text, html_hash, created_at) VALUES (1, '2026-W47', 'paused', '',"
            " :t, :t, 's', '', 'h', 't', 'x', :t)"), {"t": t})
        conn.execute(text(
            "INSERT INTO subscribers (id, email, status, source, created_at, updated_at)"
            " VALUES (:i, :e, 'active', 'import', :t, :t)"),
            [{"i": i, "e": f"r{i}@example.com", "t": t} for i in range(1, 1504)])
        states = (["sent"] * 1000 + ["claimed"] * 3 + ["uncertain"] * 2 + ["failed"]
                  + ["pending"] * 497)
        keys = [None] * 1000 + ["2026-W47-a"] * 3 + ["2026-W47-b"] * 2 + [None] * 498
        conn.execute(text(
            "INSERT INTO deliveries (id, issue_id, subscriber_id, status, batch_key, attempts,"
            " reason, updated_at) VALUES (:i, 1, :i, :s, :k, 1, '', :t)"),
            [{"i": i + 1, "s": s, "k": k, "t": t} for i, (s, k) in enumerate(zip(states, keys))])

    migrate(engine, "0002")  # the carry-over itself
    assert upgrade(engine) == schema_state(engine)[1]  # on to the head the ledger's code expects
    with Session(engine) as session:
        counts = ledger.counts(session, 1)
        batches = session.execute(text(
            "SELECT status, key, first_id, last_id, size FROM delivery_batches ORDER BY first_id"
        )).all()
    require_schema(engine)
    assert counts.by_status == {"sent": 1000, "uncertain": 5, "failed": 1, "pending": 497}
    assert [tuple(b) for b in batches] == [
        ("done", None, 1, 1000, 1000),
        ("uncertain", "2026-W47-a", 1001, 1003, 3),
        ("uncertain", "2026-W47-b", 1004, 1005, 2),
        ("pending", None, 1006, 1503, 498)]

    # The unanswered requests go out again under their own keys, the rest as new batches.
    now = dt.datetime(2026, 11, 23, 10, tzinfo=dt.timezone.utc)
    with Session(engine) as session:
        first = ledger.claim_uncertain(session, 1, limit=100, now=now, lease_until=now)
        assert (first.batch_key, [r[0] for r in ledger.batch_rows(session, first)]) == (
            "2026-W47-a", [1001, 1002, 1003])
        rest = ledger.claim_batch(session, 1, batch_key="new", limit=1000, now=now,
                                  lease_until=now)
        assert rest.first_id == 1006 and len(ledger.batch_rows(session, rest)) == 497
        session.rollback()

    # And back: the unanswered rows are uncertain rows under their keys again.
    migrate(engine, "0001", down=True)
    with engine.connect() as conn:
        back = dict(conn.execute(text(
            "SELECT status, COUNT(*) FROM deliveries GROUP BY status")).all())
    assert back == {"sent": 1000, "uncertain": 5, "failed": 1, "pending": 497}
    engine.dispose()


# --- 0004: when a batch's request started --------------------------------------------------------

def test_0004_keeps_batches_left_in_flight_in_doubt_and_goes_back(fresh_url):
    """A ledger written before requests were marked started: a claimed batch may have had its
    request out, so it stays in doubt (uncertain after the takeover, never pending under a new
    key); after the upgrade a claimed batch that never started goes back to pending. Down
    again, a `sending` batch is `claimed` (the older code's "maybe sent")."""
    from digest.delivery import ledger

    engine = make_engine(fresh_url)
    migrate(engine, "0002")
    t = "2026-11-23 09:00:00+00:00"
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO issues (id, key, status, status_reason, window_start, window_end, subject,"
            " preheader, html, text, html_hash, created_at) VALUES (1, '2026-W47', 'sending', '',"
            " :t, :t, 's', '', 'h', 't', 'x', :t)"), {"t": t})
        conn.execute(text(
            "INSERT INTO subscribers (id, email, status, source, created_at, updated_at)"
            " VALUES (:i, :e, 'active', 'import', :t, :t)"),
            [{"i": i, "e": f"r{i}@example.com", "t": t} for i in range(1, 9)])
        conn.execute(text(
            "INSERT INTO deliveries (id, issue_id, subscriber_id, batch_no, status, attempts,"
            " reason, updated_at) VALUES (:i, 1, :i, :b, :s, 0, '', :t)"),
            [{"i": i, "b": (i - 1) // 2, "s": "sent" if i <= 2 else "pending", "t": t}
             for i in range(1, 9)])
        conn.execute(text(
            "INSERT INTO delivery_batches (issue_id, batch_no, status, key, first_id, last_id,"
            " size, attempts, reason, updated_at) VALUES (1, :b, :s, :k, :f, :l, 2, 1, '', :t)"),
            [{"b": b, "s": s, "k": k, "f": 2 * b + 1, "l": 2 * b + 2, "t": t}
             for b, s, k in [(0, "done", None), (1, "claimed", "old-a"),
                             (2, "uncertain", "old-b"), (3, "pending", None)]])

    upgrade(engine)
    now = dt.datetime(2026, 11, 23, 10, tzinfo=dt.timezone.utc)
    with Session(engine) as session:
        started = dict(session.execute(text(
            "SELECT key, started_at IS NOT NULL FROM delivery_batches WHERE key IS NOT NULL")
        ).all())
        assert started == {"old-a": True, "old-b": True}
        assert ledger.release_orphans(session, 1, now=now, expired_only=False) == 1
        session.commit()
        assert ledger.counts(session, 1).by_status == {"sent": 2, "uncertain": 4, "pending": 2}
        # New code from here: one batch claimed and started, one claimed ahead.
        first = ledger.claim_batch(session, 1, batch_key="new-a", limit=10, now=now,
                                   lease_until=now)
        assert ledger.start_request(session, first, now=now)
        session.commit()
        assert ledger.counts(session, 1).by_status == {"sent": 2, "uncertain": 4, "sending": 2}

    migrate(engine, "0002", down=True)
    with engine.connect() as conn:
        back = dict(conn.execute(text("SELECT key, status FROM delivery_batches")).all())
    assert back == {None: "done", "old-a": "uncertain", "old-b": "uncertain", "new-a": "claimed"}
    upgrade(engine)
    with Session(engine) as session:
        assert ledger.release_orphans(session, 1, now=now, expired_only=False) == 1
        session.commit()
        assert ledger.counts(session, 1).by_status == {"sent": 2, "uncertain": 6}


# --- every later migration: down and up again without losing the audience or the ledger -------

def test_every_migration_after_0002_goes_down_and_up_keeping_rows(fresh_url):
    """A rebuilt table on SQLite (Alembic's batch mode) drops the old one with foreign keys on,
    and ON DELETE CASCADE would silently empty the ledger: this walks the chain to catch it."""
    engine = make_engine(fresh_url)
    migrate(engine, "0002")
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO subscribers (id, email, status, source, created_at, updated_at)"
            " VALUES (1, 'ada@example.com', 'active', 'cli', :t, :t)"), {"t": "2026-11-20 09:00:00+00"})
        conn.execute(text(
            "INSERT INTO issues (id, key, status, status_reason, window_start, window_end, subject,"
            " preheader, html, text, html_hash, created_at) VALUES (1, '2026-W47', 'sent', '',"
            " :t, :t, '', '', '', '', '', :t)"), {"t": "2026-11-20 09:00:00+00"})
        conn.execute(text(
            "INSERT INTO deliveries (id, issue_id, subscriber_id, batch_no, status, attempts,"
            " reason, updated_at) VALUES (1, 1, 1, 0, 'sent', 1, '', :t)"),
            {"t": "2026-11-20 09:00:00+00"})

    def rows() -> tuple[int, int]:
        with engine.connect() as conn:
            return (conn.execute(text("SELECT count(*) FROM subscribers")).scalar_one(),
                    conn.execute(text("SELECT count(*) FROM deliveries")).scalar_one())

    head = upgrade(engine)
    assert rows() == (1, 1), f"upgrading to {head} lost rows"
    migrate(engine, "0002", down=True)
    assert rows() == (1, 1), "downgrading to 0002 lost rows"
    assert upgrade(engine) == head and rows() == (1, 1)
    engine.dispose()
