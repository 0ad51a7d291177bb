"""A link on every card: `digest import page.txt --url URL`, a `url:` line at the top of page
text, and warnings from `preview`, `doctor` and `send` about comparisons without one."""

from __future__ import annotations

import json

import pytest
from sqlmodel import Session, select

from delivery_support import add_subscribers
from digest.content.pages import parse_page
from digest.database.models import Comparison
from digest.errors import ContentImportError

URL = "https://verdicts.example.com/compare/tallybird-vs-ledgerly"
WEEK = "2026-W47"
PUBLISHED = "2026-11-18T10:00:00Z"


def page(pairs: int = 4) -> str:
    """A fictional comparison page in the quote-only layout."""
    quotes = []
    for p in range(pairs):
        quotes += [f"“Tallybird review {p}.”", f"“Ledgerly review {p}.”"]
    return "\n".join([
        "AI tool comparison", "Tallybird vs Ledgerly", "Two bookkeeping assistants.",
        "Finance Tools", "Tallybird", "Reconciles receipts against the bank feed",
        "60%", "Panel ship", "4 votes", "Community", "Freemium", "Entry",
        "Tallybird matches receipts to transactions.",
        "Finance Tools", "Ledgerly", "Month-end close on autopilot",
        "40%", "Panel ship", "—", "Community", "Paid", "Entry",
        "Ledgerly drafts the month-end journal entries.",
        "Reviewer scorecard", *quotes,
        "Weekly AI Tool Verdicts", "Get the next comparison in your inbox",
    ]) + "\n"


def stored_url(engine) -> str:
    with Session(engine) as session:
        return session.exec(select(Comparison.url)).one()


def test_url_option_for_one_page(cli, engine, tmp_path):
    path = tmp_path / "page.txt"
    path.write_text(page())
    result = cli("import", str(path), "--published-at", PUBLISHED, "--url", URL)
    assert result.exit_code == 0, result.output
    assert stored_url(engine) == URL


def test_url_line_in_the_page_text(cli, engine, tmp_path):
    path = tmp_path / "page.txt"
    path.write_text(f"\nurl: {URL}\n" + page())
    assert cli("import", str(path), "--published-at", PUBLISHED).exit_code == 0
    assert stored_url(engine) == URL


def test_url_line_keeps_line_numbers_and_bad_urls_are_named():
    broken = page().replace("Reviewer scorecard\n", "")
    with pytest.raises(ContentImportError) as plain:
        parse_page(broken, source="p.txt")
    with pytest.raises(ContentImportError) as with_url:
        parse_page(f"url: {URL}\n" + broken.split("\n", 1)[1], source="p.txt")
    assert plain.value.line == with_url.value.line > 20  # the url line took the kicker's place
    with pytest.raises(ContentImportError, match=r"p.txt:2 \[url\]: url 'javascript:alert\(1\)'"):
        parse_page("\nurl: javascript:alert(1)\n" + page(), source="p.txt")


def test_url_option_refuses_several_files_and_writes_nothing(cli, engine, tmp_path):
    one, two = tmp_path / "a.txt", tmp_path / "b.txt"
    one.write_text(page())
    two.write_text(page())
    result = cli("import", str(one), str(two), "--published-at", PUBLISHED, "--url", URL)
    assert result.exit_code == 2 and "--url is the address of one page" in result.err
    bad = cli("import", str(one), "--published-at", PUBLISHED, "--url", "ftp://x")
    assert bad.exit_code == 2 and "not an absolute http(s) address" in bad.err
    with Session(engine) as session:
        assert session.exec(select(Comparison)).all() == []


def test_preview_doctor_and_send_list_cards_without_a_link(cli, engine, tmp_path):
    path = tmp_path / "page.txt"
    path.write_text(page())
    assert cli("import", str(path), "--published-at", PUBLISHED).exit_code == 0
    add_subscribers(engine, 2)

    preview = cli("preview", "--week", WEEK, "--out", str(tmp_path / "p.html"))
    assert preview.exit_code == 0
    assert ("warning: 1 comparison(s) have no link on their card: tallybird-vs-ledgerly"
            in preview.err)

    doctor = cli("doctor", "--offline", "--week", WEEK, "--format", "json")
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert checks["content.links"]["status"] == "warn"
    assert "tallybird-vs-ledgerly" in checks["content.links"]["saw"]

    send = cli("send", "--week", WEEK)
    assert send.exit_code == 0, send.output
    assert "have no link on their card: tallybird-vs-ledgerly" in send.err

    assert cli("import", str(path), "--published-at", PUBLISHED, "--url", URL).exit_code == 0
    linked = cli("doctor", "--offline", "--week", WEEK, "--format", "json")
    checks = {c["name"]: c for c in json.loads(linked.stdout)["checks"]}
    assert checks["content.links"]["status"] == "ok"
