"""Segments from the command line: `digest preview --segment`, `digest send --dry-run` listing
segments with their readers and sizes, and `digest subscribers list` showing preferences."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlmodel import Session, select

from digest.database import make_engine
from digest.database.models import Issue, IssueEdition
from factories import UTC, make_comparison, make_tool, store
from subscribers import lifecycle, preferences
from subscribers.preferences import Preferences

MONDAY = dt.datetime(2026, 11, 17, 9, tzinfo=UTC)


@pytest.fixture
def seeded(env):
    engine = make_engine(env["DIGEST_DATABASE_URL"])
    with Session(engine, expire_on_commit=False) as session:
        store(session, [
            make_comparison(make_tool("dataflow", category="Data Infrastructure"),
                            make_tool("lakehouse", category="Data Infrastructure", verdict="skip"),
                            published_at=MONDAY),
            make_comparison(make_tool("linty", category="Code Review", verdict="skip",
                                      scores=(40, 40, 40, 40)),
                            make_tool("reviewbot", category="Code Review", verdict="skip",
                                      scores=(40, 40, 40, 40)),
                            published_at=MONDAY + dt.timedelta(hours=1))])
        for i, (cats, ship) in enumerate([((), False), ((), False),
                                          (("Data Infrastructure",), False),
                                          (("Code Review",), True)]):
            reader = lifecycle.add(session, f"r{i}@example.com", confirmed=True, at=MONDAY)
            preferences.store(session, reader, Preferences(cats, ship), at=MONDAY)
        session.commit()
    yield engine
    engine.dispose()


def test_preview_shows_one_segments_edition(cli, seeded):
    everyone = cli("preview", "--week", "2026-W47")
    data = cli("preview", "--week", "2026-W47", "--segment", "Data Infrastructure")
    assert everyone.exit_code == 0 and data.exit_code == 0, data.err
    assert "Linty" in everyone.stdout and "Linty" not in data.stdout
    assert "Dataflow" in data.stdout and "for Data Infrastructure" in data.err
    nothing = cli("preview", "--week", "2026-W47", "--segment", "Code Review,ship-only")
    assert nothing.exit_code != 0 and "nothing for the segment" in nothing.err


def test_dry_run_lists_segments_and_writes_nothing(cli, seeded):
    result = cli("send", "--week", "2026-W47", "--dry-run", "--format", "json")
    assert result.exit_code == 0, result.err
    data = json.loads(result.stdout)
    by_segment = {s["segment"]: s for s in data["segments"]}
    assert by_segment["all"]["readers"] == 2
    assert by_segment["data-infrastructure"]["comparisons"] == 1
    assert by_segment["data-infrastructure"]["html_bytes"] > 10_000
    assert by_segment["code-review:ship"]["empty"] and by_segment["code-review:ship"]["readers"] == 1
    with Session(seeded) as session:
        assert session.exec(select(Issue)).all() == []
        assert session.exec(select(IssueEdition)).all() == []
    table = cli("send", "--week", "2026-W47", "--dry-run")
    assert "nothing: skipped" in table.out and "data-infrastructure" in table.out


def test_subscribers_list_shows_preferences(cli, seeded):
    result = cli("subscribers", "list", "--format", "json")
    rows = {r["email"]: r for r in json.loads(result.stdout)}
    assert rows["r3@example.com"]["categories"] == "Code Review"
    assert rows["r3@example.com"]["ship_only"] is True


def test_the_preview_page_picks_a_segment(seeded, env):
    from fastapi.testclient import TestClient

    from digest.cli import common
    from digest.web.preview import create_app

    app = create_app(seeded, common.settings(), clock=lambda: MONDAY + dt.timedelta(days=8))
    with TestClient(app) as client:
        page = client.get("/week/2026-W47")
        assert '<select name="segment">' in page.text
        assert "Data Infrastructure · 1 reader(s)" in page.text
        assert "Code Review (ship verdicts only) · 1 reader(s)" in page.text
        data = client.get("/week/2026-W47/email.html", params={"segment": "Data Infrastructure"})
        assert "Dataflow" in data.text and "Linty" not in data.text
        chosen = client.get("/week/2026-W47", params={"segment": "Data Infrastructure"})
        assert "email.html?segment=Data%20Infrastructure" in chosen.text
        empty = client.get("/week/2026-W47", params={"segment": "Code Review,ship-only"})
        assert empty.status_code == 404 and "nothing for the segment" in empty.text
