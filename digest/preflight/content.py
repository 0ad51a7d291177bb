"""The week's comparisons without a link: their card has no "read the full comparison" link,
the one thing a digest is for."""

from __future__ import annotations

import datetime as dt

from sqlmodel import Session, select

from digest.database.models import Comparison
from digest.edition.compose import issue_comparison_ids, load_issue
from digest.edition.render import safe_url
from digest.edition.select import load_edition
from digest.edition.weeks import Edition, last_complete_edition
from digest.preflight.report import Check, ok, warn
from digest.settings import Settings

LINK_FIX = ("import the page again with its link: `digest import page.txt --url URL`, or put "
            "a `url: URL` line at the top of the page text")


def week_comparisons(session: Session, settings: Settings, key: str) -> list[Comparison]:
    """What the week's issue carries: the stored issue's comparisons, else what it would select."""
    issue = load_issue(session, key)
    if issue is not None and issue.status not in ("blocked",):
        ids = issue_comparison_ids(session, issue)
        by_id = {c.id: c for c in session.exec(select(Comparison).where(Comparison.id.in_(ids)))}
        return [by_id[i] for i in ids if i in by_id]
    return load_edition(session, Edition.parse(key).window(settings.tz))


def unlinked(comparisons: list[Comparison]) -> list[Comparison]:
    return [c for c in comparisons if safe_url(c.url) is None]


def check_links(session: Session, settings: Settings, key: str) -> Check:
    missing = unlinked(week_comparisons(session, settings, key))
    if missing:
        slugs = ", ".join(c.slug for c in missing)
        return warn("content.links", f"{len(missing)} comparison(s) of {key} have no link: "
                                     f"{slugs}", LINK_FIX)
    return ok("content.links", f"every comparison of {key} links to its page")


def default_week(settings: Settings, now: dt.datetime) -> str:
    return last_complete_edition(now, settings.tz).key
