"""Test material: the repository's own fixture pages, and the reference material kept outside it.

The fixture pages under `tests/fixtures/pages/` were written for the tests in both layouts the
site uses, so every parser, importer and CLI test runs from a bare clone. The reference material
(the site's own comparison pages in `seeds/`, the providers' published OpenAPI documents in
`provider-specs/`) stays outside the repository and is an extra check: `DIGEST_SHARED_DIR` names
the folder holding it (`.ci/run` sets it); unset, a `shared/` folder beside the repository is
used when there is one. Without it, each check skips once, saying where it looked.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_PAGES = ROOT / "tests" / "fixtures" / "pages"
#: A scorecard page (`84/100 · ship`), and a quote-only page sharing its first tool.
SCORECARD_PAGE = FIXTURE_PAGES / "murmur-notes-vs-draft-dash.txt"
QUOTES_PAGE = FIXTURE_PAGES / "murmur-notes-vs-owlet-transcribe.txt"


def fixture_text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def shared_dir() -> Path | None:
    """The reference folder: `DIGEST_SHARED_DIR`, else `../shared` beside the repository."""
    configured = os.environ.get("DIGEST_SHARED_DIR", "").strip()
    if configured:
        return Path(configured).expanduser()
    beside = ROOT.parent / "shared"
    return beside if beside.is_dir() else None


def shared_material(*parts: str) -> Path:
    """A path inside the reference folder, or skip the calling test with one line saying where
    the material comes from."""
    base = shared_dir()
    what = "/".join(parts)
    if base is None:
        pytest.skip(f"{what}/ is reference material kept outside the repository: set "
                    "DIGEST_SHARED_DIR to the folder holding it (.ci/run uses ../shared)")
    path = base.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{what}/ not found in {base} (DIGEST_SHARED_DIR): reference material kept "
                    "outside the repository")
    return path
