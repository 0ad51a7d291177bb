"""The operator preview: `digest preview` through the real CLI, and the local preview site."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func
from sqlmodel import Session, select
from typer.testing import CliRunner

from digest.cli import app as cli_app
from digest.cli import common
from digest.edition.compose import compose_issue
from digest.database.models import Issue
from digest.edition.preview import (NothingToPreview, SAMPLE_NAME, build_preview, default_week,
                                    sample_values)
from digest.web.preview import create_app
from digest.edition.render import BUDGET_BYTES
from factories import make_comparison, make_tool, sample_comparisons, store

UTC = dt.timezone.utc
W47 = dt.datetime(2026, 11, 17, 9, tzinfo=UTC)
DURING_W48 = dt.datetime(2026, 11, 25, 12, tzinfo=UTC)


def _issues(engine) -> int:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(Issue)).one()


@pytest.fixture
def seeded(engine):
    with Session(engine, expire_on_commit=False) as session:
        store(session, sample_comparisons(3, start=W47))
        evil = make_tool("evil", '<script>alert(1)</script> & "Co"')
        store(session, [make_comparison(evil, make_tool("calm", "Calm Tool"),
                                        published_at=DURING_W48 - dt.timedelta(days=1))])
    return engine


def test_build_preview_drafts_without_freezing(seeded, settings):
    with Session(seeded) as session:
        preview = build_preview(session, settings, "2026-W48", now=DURING_W48)
    assert not preview.stored and preview.issue.status == "ready"
    assert _issues(seeded) == 0  # looking at an open week must not compose it
    assert "%%" not in preview.html and "%%" not in preview.text
    assert f"{settings.base_url}/archive/2026-W48" in preview.html
    assert preview.measured_bytes <= BUDGET_BYTES and preview.html_bytes < preview.measured_bytes


def test_build_preview_shows_a_stored_issue_as_stored(seeded, settings):
    with Session(seeded) as session:
        issue = compose_issue(session, settings, "2026-W47", now=DURING_W48)
        issue.subject = "The subject as it was frozen"
        session.commit()
    with Session(seeded) as session:
        preview = build_preview(session, settings, "2026-W47", now=DURING_W48)
    assert preview.stored and preview.issue.subject == "The subject as it was frozen"


def test_nothing_to_preview_names_the_weeks_that_have_content(seeded, settings):
    with Session(seeded) as session:
        with pytest.raises(NothingToPreview, match=r"nothing to preview for 2026-W40: no new "
                                                   r"comparisons.*weeks with content: 2026-W47, 2026-W48"):
            build_preview(session, settings, "2026-W40", now=DURING_W48)


def test_default_week_is_this_week_or_the_newest_with_content(seeded, settings):
    with Session(seeded) as session:
        assert default_week(session, settings, DURING_W48).key == "2026-W48"
        assert default_week(session, settings, DURING_W48 + dt.timedelta(days=30)).key == "2026-W48"
        assert default_week(session, settings, dt.datetime(2026, 1, 5, tzinfo=UTC)).key == "2026-W47"


def test_sample_values_carry_a_signed_unsubscribe_link(settings):
    values = sample_values(settings, "2026-W47")
    assert re.fullmatch(r"https://digest\.example\.test/u/0\.[\w-]+\.[0-9a-f]+\.[\w-]+",
                        values["%%UNSUBSCRIBE_URL%%"])
    assert values["%%NAME%%"] == SAMPLE_NAME


# --- the site ---------------------------------------------------------------------------------

@pytest.fixture
def site(seeded, settings):
    return TestClient(create_app(seeded, settings, clock=lambda: DURING_W48))


def test_site_opens_on_the_current_week(site):
    response = site.get("/", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/week/2026-W48"


def test_week_page_shows_both_widths_text_subject_and_size(site, seeded):
    page = site.get("/week/2026-W48")
    assert page.status_code == 200
    body = page.text
    assert 'width="800"' in body and 'width="375"' in body
    assert body.count('src="/week/2026-W48/email.html"') == 2
    assert "draft · not composed yet" in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &#34;Co&#34; vs Calm Tool" in body  # subject
    assert "<script>alert(1)" not in body
    assert re.search(r"[\d,]+ of 102,400 bytes", body)
    assert '<option value="2026-W47">' in body and '<option value="2026-W48" selected>' in body
    assert "Calm Tool" in body.split("<pre>")[1]  # the text version
    assert _issues(seeded) == 0


def test_sample_reader_email_and_text(site):
    html = site.get("/week/2026-W47/email.html")
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert "%%" not in html.text and "Quillmark vs Parsec Notes" in html.text
    text = site.get("/week/2026-W47/email.txt")
    assert text.headers["content-type"].startswith("text/plain")
    assert "Unsubscribe: https://digest.example.test/u/" in text.text


def test_site_errors_are_pages_not_tracebacks(site):
    assert site.get("/week/2026-47").status_code == 400
    empty = site.get("/week/2026-W40")
    assert empty.status_code == 404 and "weeks with content: 2026-W47, 2026-W48" in empty.text
    assert site.get("/go", params={"week": "2026-w47"}, follow_redirects=False).headers[
        "location"] == "/week/2026-W47"
    assert site.get("/go", params={"week": "soon"}).status_code == 400


# --- the command ------------------------------------------------------------------------------

@pytest.fixture
def cli(seeded, settings, monkeypatch):
    for name, value in {"DIGEST_DATABASE_URL": settings.database_url,
                        "DIGEST_BASE_URL": settings.base_url,
                        "DIGEST_TIMEZONE": settings.timezone,
                        "DIGEST_SECRET_KEY": settings.secret_key.get_secret_value()}.items():
        monkeypatch.setenv(name, value)
    common.reset()  # settings and engine are cached per process
    runner = CliRunner()
    yield lambda *args: runner.invoke(cli_app, ["preview", *args], env={"COLUMNS": "200"})
    common.reset()


def test_preview_writes_html_for_a_sample_subscriber(cli, tmp_path, seeded):
    out = tmp_path / "previews" / "w47.html"
    result = cli("--week", "2026-W47", "--out", str(out))
    assert result.exit_code == 0, result.output
    html = out.read_text("utf-8")
    assert html.startswith("<!doctype html>") and "%%" not in html
    assert "2026-W47 (draft, not composed yet): 'Quillmark vs Parsec Notes + 2 more verdicts'" \
        in " ".join(result.stderr.split())
    assert _issues(seeded) == 0


def test_preview_text_goes_to_stdout(cli):
    result = cli("--week", "2026-W47", "--text")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Weekly AI Tool Verdicts\nWeek 47, 2026")
    assert "Unsubscribe: https://digest.example.test/u/0." in result.stdout


def test_preview_reports_bad_input_in_one_line(cli):
    bad = cli("--week", "2026-W99")
    assert bad.exit_code == 2 and "2026 has 53 ISO weeks" in bad.stderr
    assert "Traceback" not in bad.output
    empty = cli("--week", "2026-W01")
    assert empty.exit_code == 1 and "nothing to preview for 2026-W01" in " ".join(empty.stderr.split())
