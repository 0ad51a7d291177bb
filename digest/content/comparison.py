"""The comparison input schema shared by both importers (JSON and page text).

Both importers produce `ComparisonIn` values; only `digest.content.store` writes them to the database.
Validation lives here so a score of 140 or a verdict of "maybe" is refused the same way whichever
format it arrived in.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Verdict = Literal["ship", "skip"]


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)


class PanelIn(_In):
    verdict: Verdict | None = None
    ship: int = Field(0, ge=0, le=1000)
    skip: int = Field(0, ge=0, le=1000)

    @field_validator("verdict", mode="before")
    @classmethod
    def _lower(cls, value):
        return value.strip().lower() if isinstance(value, str) else value


class CommunityIn(_In):
    votes: int | None = Field(None, ge=0)


class ReviewIn(_In):
    reviewer: str = Field(min_length=1, max_length=100)
    score: int | None = Field(None, ge=0, le=100)
    verdict: Verdict | None = None
    text: str = ""

    @field_validator("verdict", mode="before")
    @classmethod
    def _lower(cls, value):
        return value.strip().lower() if isinstance(value, str) else value


class ToolIn(_In):
    slug: str = Field(min_length=1, max_length=200, pattern=r"^[a-z0-9][a-z0-9._-]*$")
    name: str = Field(min_length=1, max_length=200)
    category: str = ""
    tagline: str = ""
    description: str = ""
    pricing: str = ""
    entry: str = ""
    best_for: str = ""
    panel: PanelIn = Field(default_factory=PanelIn)
    community: CommunityIn = Field(default_factory=CommunityIn)
    reviews: list[ReviewIn] = Field(default_factory=list, max_length=20)

    @field_validator("reviews")
    @classmethod
    def _unique_reviewers(cls, reviews: list[ReviewIn]) -> list[ReviewIn]:
        seen = set()
        for review in reviews:
            if review.reviewer.lower() in seen:
                raise ValueError(f"reviewer {review.reviewer!r} appears twice")
            seen.add(review.reviewer.lower())
        return reviews


class ComparisonIn(_In):
    slug: str = Field(min_length=1, max_length=300, pattern=r"^[a-z0-9][a-z0-9._-]*$")
    url: str = ""
    published_at: dt.datetime | None = None
    tools: list[ToolIn] = Field(min_length=2, max_length=2)

    @field_validator("published_at")
    @classmethod
    def _aware(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("published_at needs a time zone (e.g. 2026-11-18T10:00:00Z)")
        return value

    @field_validator("tools")
    @classmethod
    def _two_different(cls, tools: list[ToolIn]) -> list[ToolIn]:
        if len(tools) == 2 and tools[0].slug == tools[1].slug:
            raise ValueError("a comparison needs two different tools")
        return tools


def slugify(text: str) -> str:
    """`Claude Files API` -> `claude-files-api`; the page format carries names, not slugs."""
    import re
    import unicodedata

    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug or "tool"
