"""`digest init`, `import`, `comparisons list` and `demo` through the real CLI."""

from __future__ import annotations

import email
import email.policy
import json

from sqlalchemy import func
from sqlmodel import Session, select

from digest.database import make_engine
from digest.database.models import Comparison, Issue
from tests.material import FIXTURE_PAGES


def _count(url: str, model) -> int:
    engine = make_engine(url)
    with Session(engine) as s:
        n = s.exec(select(func.count()).select_from(model)).one()
    engine.dispose()
    return n


def test_init_twice_then_import_and_list(cli, env, tmp_path):
    assert cli("init").exit_code == 0
    again = cli("init")
    assert again.exit_code == 0 and "schema revision" in again.out
    pages = sorted(FIXTURE_PAGES.glob("*.txt"))
    assert len(pages) == 2
    result = cli("import", *map(str, pages), "--published-at", "2026-11-18T10:00:00Z")
    assert result.exit_code == 0, result.err
    assert "2 new" in result.out
    listed = cli("comparisons", "list", "--week", "2026-W47", "--format", "json")
    rows = json.loads(listed.stdout)
    assert {r["tool_b"] for r in rows} == {"Draft & Dash", "Owlet Transcribe"}
    assert all(r["tool_a"] == "Murmur Notes" and r["verdict_a"] == "ship 3/1" for r in rows)
    assert cli("comparisons", "list", "--week", "2026-W40", "--format", "json").stdout.strip() == "[]"
    table = cli("comparisons", "list")
    assert "Murmur Notes" in table.out and "Owlet Transcribe" in table.out


def test_bad_file_exits_2_names_it_and_writes_nothing(cli, env, tmp_path):
    cli("init")
    bad = tmp_path / "bad.json"
    bad.write_text('{"slug": "a-vs-b", "tools": [{"slug": "a", "name": "A", "reviews": '
                   '[{"reviewer": "Builder", "score": 140}]}, {"slug": "b", "name": "B"}]}')
    result = cli("import", str(bad))
    assert result.exit_code == 2
    assert "bad.json" in result.err and "score" in result.err and "Traceback" not in result.err
    assert _count(env["DIGEST_DATABASE_URL"], Comparison) == 0


def test_uninitialised_database_says_run_init(cli, env, tmp_path, monkeypatch):
    from digest.cli import common

    monkeypatch.setenv("DIGEST_DATABASE_URL", f"sqlite:///{tmp_path / 'fresh.db'}")
    common.reset()
    result = cli("comparisons", "list")
    assert result.exit_code != 0 and "digest init" in result.err


def test_bad_week_is_a_clear_error(cli, env):
    cli("init")
    result = cli("comparisons", "list", "--week", "2026-W60")
    assert result.exit_code != 0 and "2026-W60" in result.err and "Traceback" not in result.err


def test_demo_runs_the_whole_pipeline(cli, tmp_path):
    folder = tmp_path / "demo"
    result = cli("demo", "--dir", str(folder))
    assert result.exit_code == 0, result.err + result.out
    assert "Loaded 8 sample comparisons" in result.out
    assert (folder / "issue.html").read_text().lstrip().lower().startswith("<!doctype html>")
    text = (folder / "issue.txt").read_text()
    assert "%%" not in text and "unsubscribe" in text.lower()
    messages = sorted((folder / "outbox").glob("*/*.eml"))
    assert len(messages) == 8  # the active readers; pending and unsubscribed get nothing
    msg = email.message_from_bytes(messages[0].read_bytes(), policy=email.policy.default)
    assert msg.get_content_type() == "multipart/alternative"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = f"sqlite:///{folder / 'digest.db'}"
    assert _count(url, Issue) == 1
    # Running it again starts over instead of failing on the sent issue.
    again = cli("demo", "--dir", str(folder))
    assert again.exit_code == 0, again.err
    assert len(sorted((folder / "outbox").glob("*/*.eml"))) == 8
