"""The operator's preview: an edition as a sample subscriber gets it (the page that shows it at
desktop and phone widths is `digest.web.preview`).

A stored issue is shown as stored (it is frozen); a week not composed yet is drafted on the fly
and never saved, so looking at a week in progress cannot freeze it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlmodel import Session

from digest.edition.compose import draft_issue, issue_comparisons, load_issue, personalize
from digest.edition.segments import segment_issue
from digest.errors import ConfigurationError, DigestError
from digest.database.models import Issue
from digest.edition.personalize import (CLICK_READER, NAME, PREFERENCES_URL, UNSUBSCRIBE_URL,
                                        VIEW_URL, VOTE_URL)
from digest.edition.render import measured_size
from digest.edition.select import editions_with_content
from digest.settings import Settings
from digest.edition.weeks import Edition
from subscribers.preferences import Preferences
from subscribers.tokens import Signer

SAMPLE_NAME = "Sam Sample"
SAMPLE_SUBSCRIBER_ID = 0  # no real subscriber has id 0, so the sample links act on nobody
SAMPLE_EMAIL = "sample@example.com"


class NothingToPreview(DigestError):
    """The requested week has no comparisons and no composed issue."""


def sample_values(settings: Settings, key: str) -> dict[str, str]:
    """Per-subscriber values for a made-up reader, with links shaped like real ones."""
    try:
        token = Signer(settings.signing_key()).sign("unsubscribe", SAMPLE_SUBSCRIBER_ID,
                                                     SAMPLE_EMAIL)
    except ConfigurationError:
        token = "0.sample.preview-token-not-valid-for-real-use"
    return {UNSUBSCRIBE_URL: f"{settings.base_url}/u/{token}",
            VIEW_URL: f"{settings.base_url}/issues/{key}",
            VOTE_URL: f"{settings.base_url}/vote/{token}",
            PREFERENCES_URL: f"{settings.base_url}/p/{token}", NAME: SAMPLE_NAME,
            CLICK_READER: ""}  # no reader: a click from the preview is counted for nobody


@dataclass(frozen=True)
class Preview:
    issue: Issue
    stored: bool  # True: the composed, frozen row; False: a draft made for this preview
    html: str  # filled in for the sample subscriber
    text: str
    base_url: str | None = None  # what the issue's links start with

    @property
    def html_bytes(self) -> int:
        return len(self.html.encode("utf-8"))

    @property
    def measured_bytes(self) -> int:
        """The unfilled HTML with every placeholder at its longest allowed value: what the
        renderer keeps under the budget."""
        return measured_size(self.issue.html, self.base_url)


def default_week(session: Session, settings: Settings, now: dt.datetime) -> Edition:
    """This week if it has content, else the newest week that has some."""
    current = Edition.at(now, settings.tz)
    weeks = editions_with_content(session, settings.tz)
    if not weeks or current in weeks:
        return current
    earlier = [w for w in weeks if w <= current]
    return earlier[-1] if earlier else weeks[0]


def build_preview(session: Session, settings: Settings, key: str, *, now: dt.datetime,
                  segment: Preferences | None = None) -> Preview:
    """The edition as a sample reader gets it; with `segment`, as that segment's readers do."""
    edition = Edition.parse(key)
    issue = load_issue(session, edition.key)
    stored = issue is not None
    if issue is None:
        issue, comparisons = draft_issue(session, settings, edition.key, now=now)
    else:
        comparisons = issue_comparisons(session, issue)
    if not issue.html:
        weeks = ", ".join(w.key for w in editions_with_content(session, settings.tz)[-8:])
        why = issue.status_reason or f"issue {edition.key} is {issue.status}"
        raise NothingToPreview(f"nothing to preview for {edition.key}: {why}"
                               + (f" (weeks with content: {weeks})" if weeks else
                                  " (no comparisons imported yet: try `digest import`)"))
    if segment is not None:
        shown = segment_issue(session, settings, issue, comparisons, segment)
        if shown is None:
            raise NothingToPreview(f"nothing for the segment {segment.describe()!r} in "
                                   f"{edition.key}: its readers get no issue this week")
        stored, issue = stored and shown is issue, shown
    html, text = personalize(issue, sample_values(settings, edition.key))
    return Preview(issue, stored, html, text, settings.base_url)
