"""Composing an edition into its one frozen Issue row, on SQLite and PostgreSQL, including two
composers racing for the same key; and filling the issue in per subscriber."""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import time

import pytest
from sqlalchemy import func, text
from sqlmodel import Session, select

from digest.edition.compose import (EditionOpenError, IssueTemplate, compose_issue, draft_issue,
                            issue_comparison_ids, personalize)
from digest.errors import DigestError
from digest.database.models import Comparison, Issue, IssueComparison
from digest.edition.personalize import NAME, PREFERENCES_URL, UNSUBSCRIBE_URL, VIEW_URL, VOTE_URL
from factories import sample_comparisons, store

UTC = dt.timezone.utc
W47_MONDAY = dt.datetime(2026, 11, 15, 23, 0, tzinfo=UTC)  # Mon 16 Nov 00:00 in Berlin
AFTER_W47 = dt.datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
VALUES = {UNSUBSCRIBE_URL: "https://digest.example.test/u/7.abc.def?a=1&b=2",
          VIEW_URL: "https://digest.example.test/issues/2026-W47",
          VOTE_URL: "https://digest.example.test/vote/7-1.abc.def",
          PREFERENCES_URL: "https://digest.example.test/p/7.pref.sig", NAME: "Ada"}


def _count(session, model) -> int:
    return session.exec(select(func.count()).select_from(model)).one()


def _seed(engine, n=3, start=W47_MONDAY + dt.timedelta(hours=10), prefix=""):
    with Session(engine, expire_on_commit=False) as session:
        return [c.id for c in store(session, sample_comparisons(n, start=start, prefix=prefix))]


def test_compose_freezes_the_edition(engine, settings):
    ids = _seed(engine, 3)
    with Session(engine) as session:
        issue = compose_issue(session, settings, "2026-W47", now=AFTER_W47)
        session.commit()
        issue_id = issue.id

    with Session(engine) as session:
        issue = session.get(Issue, issue_id)
        assert issue.key == "2026-W47" and issue.status == "ready"
        assert issue.window_start == W47_MONDAY
        assert issue.window_end == W47_MONDAY + dt.timedelta(days=7)
        assert issue.created_at == AFTER_W47
        assert issue.subject == "Quillmark vs Parsec Notes + 2 more verdicts"
        assert issue.preheader == "3 comparisons this week covering 6 tools: 4 ship, 2 skip."
        assert issue.html_hash == hashlib.sha256(issue.html.encode()).hexdigest()
        assert UNSUBSCRIBE_URL in issue.html and UNSUBSCRIBE_URL in issue.text
        assert issue_comparison_ids(session, issue) == ids  # in publication order

    # A comparison published later in the same week does not change the frozen issue.
    _seed(engine, 1, start=W47_MONDAY + dt.timedelta(days=5), prefix="late-")
    with Session(engine) as session:
        again = compose_issue(session, settings, "2026-W47", now=AFTER_W47 + dt.timedelta(days=1))
        assert again.id == issue_id and again.html_hash == issue.html_hash
        assert again.created_at == AFTER_W47
        assert _count(session, Issue) == 1 and _count(session, IssueComparison) == 3


def test_a_week_without_new_comparisons_is_skipped(engine, settings):
    _seed(engine, 2)  # in W47, not W46
    with Session(engine) as session:
        issue = compose_issue(session, settings, "2026-W46", now=AFTER_W47)
        session.commit()
        assert issue.status == "skipped"
        assert issue.status_reason == "no new comparisons were published 9–15 November 2026"
        assert issue.html == issue.text == issue.subject == issue.html_hash == ""
        assert _count(session, IssueComparison) == 0
        with pytest.raises(DigestError, match="no rendered content"):
            IssueTemplate.of(issue)


def test_an_open_week_is_refused_unless_asked_for(engine, settings):
    _seed(engine, 1)
    midweek = W47_MONDAY + dt.timedelta(days=3)
    with Session(engine) as session:
        with pytest.raises(EditionOpenError, match=r"2026-W47 \(16–22 November 2026\) is still open "
                                                   r"until 2026-11-23 00:00 Europe/Berlin"):
            compose_issue(session, settings, "2026-W47", now=midweek)
        assert _count(session, Issue) == 0
        issue = compose_issue(session, settings, "2026-W47", now=midweek, allow_open=True)
        assert issue.status == "ready"


def test_bad_keys_are_refused(engine, settings):
    with Session(engine) as session:
        with pytest.raises(DigestError, match="not of the form YYYY-Www"):
            compose_issue(session, settings, "week 47", now=AFTER_W47)


def test_comparisons_already_sent_are_not_sent_again(engine, settings):
    ids = _seed(engine, 2)
    with Session(engine) as session:
        issue = compose_issue(session, settings, "2026-W47", now=AFTER_W47)
        issue.status = "sent"
        session.commit()
    # Re-imported with a later date, the first comparison now falls into W48.
    with Session(engine) as session:
        moved = session.get(Comparison, ids[0])
        moved.published_at = W47_MONDAY + dt.timedelta(days=8)
        session.commit()
    new_ids = _seed(engine, 1, start=W47_MONDAY + dt.timedelta(days=9), prefix="w48-")
    with Session(engine) as session:
        w48 = compose_issue(session, settings, "2026-W48", now=AFTER_W47 + dt.timedelta(days=7))
        session.commit()
        assert issue_comparison_ids(session, w48) == new_ids


def test_draft_issue_does_not_touch_the_database(engine, settings):
    _seed(engine, 2)
    with Session(engine) as session:
        issue, comparisons = draft_issue(session, settings, "2026-W47", now=AFTER_W47)
        assert issue.id is None and issue.status == "ready" and len(comparisons) == 2
        session.commit()
        assert _count(session, Issue) == 0


def _wait_until_blocked(engine, deadline_s=20.0) -> bool:
    """PostgreSQL only: True once some other backend waits on a lock (our racing insert)."""
    end = time.monotonic() + deadline_s
    with engine.connect() as conn:
        while time.monotonic() < end:
            waiting = conn.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'")).scalar()
            conn.rollback()  # a fresh snapshot for the next look
            if waiting:
                return True
    return False


def test_two_composers_racing_for_one_key_agree_on_one_issue(engine, settings):
    _seed(engine, 3)
    first = Session(engine)
    try:
        winner = compose_issue(first, settings, "2026-W47", now=AFTER_W47)  # flushed, not committed
        outcome: dict[str, object] = {}

        def second_composer() -> None:
            try:
                with Session(engine) as session:
                    issue = compose_issue(session, settings, "2026-W47",
                                          now=AFTER_W47 + dt.timedelta(minutes=1))
                    session.commit()
                    outcome["issue"] = (issue.id, issue.html_hash, issue.created_at)
            except BaseException as exc:  # reported by the assertion below
                outcome["error"] = exc

        racer = threading.Thread(target=second_composer)
        racer.start()
        if engine.dialect.name == "postgresql":
            # The second composer saw no row (ours is uncommitted), rendered its own and now
            # waits on our unique key: the path where the database decides the race.
            assert _wait_until_blocked(engine), "the second composer never reached its insert"
        # (SQLite: our transaction holds the write lock, so the second waits before it reads.)
        first.commit()
        racer.join(timeout=60)
        assert not racer.is_alive()
        assert "error" not in outcome, outcome.get("error")
        assert outcome["issue"] == (winner.id, winner.html_hash, AFTER_W47)
    finally:
        first.close()
    with Session(engine) as session:
        assert _count(session, Issue) == 1 and _count(session, IssueComparison) == 3


def test_personalize_fills_every_placeholder(engine, settings):
    _seed(engine, 2)
    with Session(engine) as session:
        issue = compose_issue(session, settings, "2026-W47", now=AFTER_W47)
    html, text_part = personalize(issue, VALUES)
    assert "%%" not in html and "%%" not in text_part
    assert 'href="https://digest.example.test/u/7.abc.def?a=1&amp;b=2"' in html
    assert "Unsubscribe: https://digest.example.test/u/7.abc.def?a=1&b=2" in text_part
    template = IssueTemplate.of(issue)
    assert template.fill(VALUES) == (html, text_part)
    other = template.fill({**VALUES, UNSUBSCRIBE_URL: "https://digest.example.test/u/8.x.y"})
    assert "https://digest.example.test/u/8.x.y" in other[0] and "7.abc.def" not in other[0]
    with pytest.raises(KeyError):
        template.fill({VIEW_URL: "https://digest.example.test/issues/2026-W47"})
