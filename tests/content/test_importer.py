"""Importing comparison files: JSON and page text, all-or-nothing, updates in place."""

from __future__ import annotations

import copy
import datetime as dt
import json

import pytest
from sqlalchemy import func
from sqlmodel import Session, select

from digest.content.comparison import ComparisonIn
from digest.errors import ContentImportError
from digest.content.importer import import_paths
from digest.database.models import Comparison, Review, Tool
from digest.content.store import comparison_to_input
from tests.material import QUOTES_PAGE, SCORECARD_PAGE


def _tool(slug: str, name: str, scores=(81, 64, 77, 90), verdicts=("ship", "skip", "ship", "ship")):
    personas = ("Builder", "Skeptic", "Founder", "Futurist")
    return {
        "slug": slug, "name": name, "category": "Writing", "tagline": f"{name} in one line",
        "description": f"{name} does a thing.", "pricing": "$12/month", "entry": "Paid",
        "best_for": "small teams",
        "panel": {"verdict": "ship", "ship": sum(v == "ship" for v in verdicts),
                  "skip": sum(v == "skip" for v in verdicts)},
        "community": {"votes": 12},
        "reviews": [{"reviewer": p, "score": s, "verdict": v, "text": f"{p} on {name}."}
                    for p, s, v in zip(personas, scores, verdicts)],
    }


def _comparison(a="quillpad", b="inkwell", when="2026-11-18T10:00:00Z"):
    return {"slug": f"{a}-vs-{b}", "url": f"https://verdicts.example.com/compare/{a}-vs-{b}",
            "published_at": when, "tools": [_tool(a, a.title()), _tool(b, b.title(), scores=(50, 40, None, 70),
                                                                       verdicts=("skip", "skip", None, "ship"))]}


def _counts(engine) -> tuple[int, int, int]:
    with Session(engine) as s:
        return tuple(s.exec(select(func.count()).select_from(m)).one() for m in (Comparison, Tool, Review))


def _write(tmp_path, name, data) -> object:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data, indent=2, ensure_ascii=False))
    return path


def test_json_round_trip(engine, tmp_path):
    source = [_comparison(), _comparison("quillpad", "parchment")]
    report = import_paths(engine, [_write(tmp_path, "c.json", source)])
    assert sorted(report.created) == ["quillpad-vs-inkwell", "quillpad-vs-parchment"]
    with Session(engine) as s:
        stored = {c.slug: comparison_to_input(c) for c in s.exec(select(Comparison)).unique().all()}
    for item in source:
        assert stored[item["slug"]] == ComparisonIn.model_validate(item)
    assert _counts(engine) == (2, 3, 12)  # the shared tool is stored once


def test_single_object_and_reimport_updates_in_place(engine, tmp_path):
    import_paths(engine, [_write(tmp_path, "one.json", _comparison())])
    changed = _comparison(when="2026-11-19T08:30:00+01:00")
    changed["tools"][0]["tagline"] = "A new line"
    changed["tools"][0]["reviews"][1]["score"] = 99
    report = import_paths(engine, [_write(tmp_path, "one.json", changed)])
    assert report.updated == ["quillpad-vs-inkwell"] and report.created == []
    assert _counts(engine) == (1, 2, 8)
    with Session(engine) as s:
        c = s.exec(select(Comparison)).unique().one()
        assert c.published_at == dt.datetime(2026, 11, 19, 7, 30, tzinfo=dt.timezone.utc)
        assert c.tool_a.tagline == "A new line"
        assert [r.score for r in c.tool_a.reviews] == [81, 99, 77, 90]


BROKEN = {
    "bad JSON": ('{"slug": "x-vs-y", "tools": [', r"bad\.json:1: invalid JSON"),
    "missing tool": (lambda d: d["tools"].pop(), r"exactly two tools"),
    "score 140": (lambda d: d["tools"][0]["reviews"][0].__setitem__("score", 140),
                  r"tools\[0\]\.reviews\[0\]\.score.*140"),
    "unknown verdict": (lambda d: d["tools"][1]["reviews"][2].__setitem__("verdict", "maybe"),
                        r"tools\[1\]\.reviews\[2\]\.verdict.*maybe"),
    "naive date": (lambda d: d.__setitem__("published_at", "2026-11-18T10:00:00"),
                   r"published_at.*time zone"),
    "same tool twice": (lambda d: d["tools"].__setitem__(1, copy.deepcopy(d["tools"][0])),
                        r"two different tools"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_file_changes_nothing(engine, tmp_path, case):
    good = _write(tmp_path, "good.json", [_comparison("alpha", "beta")])
    import_paths(engine, [good])
    before = _counts(engine)
    breaker, message = BROKEN[case]
    if isinstance(breaker, str):
        bad = _write(tmp_path, "bad.json", breaker)
    else:
        data = _comparison()
        breaker(data)
        bad = _write(tmp_path, "bad.json", data)
    # A good file with new content first in the same call: it must not land either.
    fresh = _write(tmp_path, "fresh.json", _comparison("gamma", "delta"))
    with pytest.raises(ContentImportError, match=message) as info:
        import_paths(engine, [fresh, bad])
    assert "bad.json" in str(info.value)
    assert _counts(engine) == before


def test_error_in_list_names_the_line(engine, tmp_path):
    bad = _comparison("gamma", "delta")
    bad["tools"][0]["reviews"][0]["score"] = 140
    path = _write(tmp_path, "list.json", [_comparison(), bad])
    with pytest.raises(ContentImportError) as info:
        import_paths(engine, [path])
    text = path.read_text().splitlines()
    assert info.value.line is not None and text[info.value.line - 1].strip().startswith("{")
    assert info.value.field == "[1].tools[0].reviews[0].score"


def test_missing_file_is_a_clear_error(engine, tmp_path):
    with pytest.raises(ContentImportError, match="nope.json: no such file"):
        import_paths(engine, [tmp_path / "nope.json"])


def test_both_page_layouts_share_one_tool(engine):
    when = dt.datetime(2026, 11, 17, 9, 0, tzinfo=dt.timezone.utc)
    report = import_paths(engine, [SCORECARD_PAGE, QUOTES_PAGE], published_at=when)
    assert sorted(report.created) == ["murmur-notes-vs-draft-dash",
                                      "murmur-notes-vs-owlet-transcribe"]
    with Session(engine) as s:
        tools = {t.name: t for t in s.exec(select(Tool)).all()}
        assert set(tools) == {"Murmur Notes", "Draft & Dash", "Owlet Transcribe"}
        murmur = tools["Murmur Notes"]
        # The quote-only page must not erase what only the scorecard page gave: scores,
        # verdicts, the vote count, pricing and "best for".
        assert [(r.reviewer, r.score, r.verdict) for r in murmur.reviews] == [
            ("Builder", 84, "ship"), ("Skeptic", 58, "skip"), ("Founder", 79, "ship"),
            ("Futurist", 81, "ship")]
        assert (murmur.community_votes, murmur.panel_ship, murmur.panel_skip) == (1204, 3, 1)
        assert murmur.pricing == "Free up to 5 hours a month; Pro $9/month per seat"
        assert murmur.best_for == "Teams that meet a lot & forget what they agreed"
        assert murmur.tagline == "Voice memos in, tidy meeting notes out 🎙️"
        dash = tools["Draft & Dash"]
        assert (dash.slug, dash.entry, dash.panel_verdict) == ("draft-dash", "Paid", "skip")
        assert dash.pricing == "$24/month, or $240/year — no free tier"
        owlet = tools["Owlet Transcribe"]
        assert (owlet.panel_verdict, owlet.panel_ship, owlet.panel_skip) == (None, 2, 2)
        assert "the <em>whole</em> pipeline" in owlet.reviews[1].text
        comparisons = s.exec(select(Comparison)).unique().all()
        assert {c.published_at for c in comparisons} == {when}
        assert all(murmur.id in (c.tool_a_id, c.tool_b_id) for c in comparisons)
    assert _counts(engine) == (2, 3, 12)


def test_page_reimport_without_date_keeps_published_at(engine):
    when = dt.datetime(2026, 11, 17, 9, 0, tzinfo=dt.timezone.utc)
    import_paths(engine, [SCORECARD_PAGE], published_at=when)
    report = import_paths(engine, [SCORECARD_PAGE])
    assert report.updated == ["murmur-notes-vs-draft-dash"] and report.created == []
    with Session(engine) as s:
        assert s.exec(select(Comparison)).unique().one().published_at == when
    assert _counts(engine) == (1, 2, 8)


def _review_texts(engine) -> dict[tuple[str, str], str]:
    with Session(engine) as s:
        return {(r.tool.slug, r.reviewer): r.text for r in s.exec(select(Review)).all()}


def test_a_page_cut_short_does_not_replace_the_whole_one(engine, tmp_path):
    """The half page over the full one: refused, naming the file and where it ends."""
    import_paths(engine, [SCORECARD_PAGE])
    before = _review_texts(engine)
    text = SCORECARD_PAGE.read_text(encoding="utf-8")
    half = _write(tmp_path, "half.txt", text[:len(text) // 2])
    with pytest.raises(ContentImportError, match="ends early") as info:
        import_paths(engine, [half])
    assert info.value.path == str(half) and info.value.line is not None
    assert _review_texts(engine) == before


def test_a_review_cut_to_its_beginning_is_refused(engine, tmp_path):
    import_paths(engine, [SCORECARD_PAGE])
    before = _review_texts(engine)
    full = before[("murmur-notes", "Skeptic")]
    text = SCORECARD_PAGE.read_text(encoding="utf-8")
    cut = _write(tmp_path, "cut.txt", text.replace(full, "Every video-call suite"))
    with pytest.raises(ContentImportError) as info:
        import_paths(engine, [QUOTES_PAGE, cut])
    err = info.value
    assert (err.path, err.field) == (str(cut), "tools[0].reviews[1].text")
    assert "Skeptic's review of Murmur Notes" in str(err) and "cut short" in str(err)
    assert _counts(engine) == (1, 2, 8) and _review_texts(engine) == before
    # Within one call too: the full page first, then the cut one.
    with pytest.raises(ContentImportError, match="cut short"):
        import_paths(engine, [SCORECARD_PAGE, cut])
    # An edit that is not a cut-off copy of the stored text goes through.
    edited = _write(tmp_path, "edited.txt", text.replace(full, "Skip: the suites caught up."))
    import_paths(engine, [edited])
    assert _review_texts(engine)[("murmur-notes", "Skeptic")] == "Skip: the suites caught up."


def test_a_json_review_cut_to_its_beginning_names_the_item(engine, tmp_path):
    import_paths(engine, [_write(tmp_path, "one.json", [_comparison("alpha", "beta")])])
    cut = _comparison("alpha", "beta")
    cut["tools"][1]["reviews"][3]["text"] = "Futurist"
    path = _write(tmp_path, "two.json", [_comparison("gamma", "delta"), cut])
    with pytest.raises(ContentImportError) as info:
        import_paths(engine, [path])
    assert (info.value.path, info.value.field) == (str(path), "[1].tools[1].reviews[3].text")
    assert _counts(engine) == (1, 2, 8)
