"""The site's own comparison pages, kept outside the repository (`seeds/` in DIGEST_SHARED_DIR):
an extra check that the parser, written against our fixture pages, still reads the originals.

One test on purpose: without the folder it skips once, saying where the pages come from."""

from __future__ import annotations

import re

from material import shared_material
from sqlmodel import Session, select

from digest.content.importer import import_paths
from digest.content.pages import PERSONAS, parse_page
from digest.database import make_engine, upgrade
from digest.database.models import Comparison, Review, Tool
from digest.errors import ContentImportError

BOILERPLATE = ("Weekly AI Tool Verdicts", "Get the next comparison", "Bookmark")


def _last_line(text: str) -> int:
    lines = re.split(r"\r\n|\r|\n", text)
    return max(no for no, line in enumerate(lines, 1) if line.strip())


def _check_page(path, text: str) -> tuple[str, dict[str, list]]:
    """Parse one seed page whole and check what every page of the site carries."""
    page = parse_page(text, source=path.name)
    scored = any(r.score is not None for tool in page.tools for r in tool.reviews)
    scores = {}
    for tool in page.tools:
        where = f"{path.name}: {tool.name}"
        assert tool.name and tool.category and tool.tagline and tool.entry, where
        assert tool.description, where
        assert {r.reviewer for r in tool.reviews} == set(PERSONAS), where
        assert tool.panel.ship + tool.panel.skip == len(PERSONAS), where
        for review in tool.reviews:
            assert review.text and review.text[0] not in "“”\"" and review.text[-1] not in "“”\"", where
            assert not any(b in review.text for b in BOILERPLATE), where
            assert (review.score is not None and review.verdict is not None) == scored, where
        if scored:
            scores[tool.slug] = [(r.reviewer, r.score, r.verdict) for r in tool.reviews]
    # Cut short anywhere from 30% to 95%: refused where it ends, or (cut inside the closing
    # boilerplate only) the same page.
    for percent in range(30, 100, 5):
        cut = text[:len(text) * percent // 100]
        try:
            shorter = parse_page(cut, source=path.name)
        except ContentImportError as exc:
            assert exc.line == _last_line(cut), (path.name, percent, str(exc))
            continue
        assert shorter == page, (path.name, percent)
    return page.slug, scores


def test_seed_pages_parse_whole_and_import(tmp_path):
    folder = shared_material("seeds")
    paths = sorted(folder.glob("*.txt"))
    assert paths, f"no seed pages (*.txt) in {folder}"
    slugs, scores = set(), {}
    for path in paths:
        slug, page_scores = _check_page(path, path.read_text(encoding="utf-8"))
        slugs.add(slug)
        scores.update(page_scores)

    engine = make_engine(f"sqlite:///{tmp_path / 'seeds.db'}")
    upgrade(engine)
    report = import_paths(engine, paths)
    assert sorted(report.created) == sorted(slugs)
    with Session(engine) as s:
        stored = {t.slug: t for t in s.exec(select(Tool)).all()}
        # A tool on a scorecard page keeps its scores, whatever quote-only page came after.
        for slug, expected in scores.items():
            assert [(r.reviewer, r.score, r.verdict) for r in stored[slug].reviews] == expected
        texts = sorted((r.tool_id, r.reviewer, r.text) for r in s.exec(select(Review)).all())
    again = import_paths(engine, paths)
    assert sorted(again.updated) == sorted(slugs) and again.created == []
    with Session(engine) as s:
        assert len(s.exec(select(Comparison)).unique().all()) == len(slugs)
        assert sorted((r.tool_id, r.reviewer, r.text)
                      for r in s.exec(select(Review)).all()) == texts
    engine.dispose()
