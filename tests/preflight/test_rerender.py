"""An issue composed before the operator fixed the identity settings is rendered again (same
comparisons) as long as it has not started sending; once deliveries exist the stored render is
what everyone gets, and `digest status` says which settings that was."""

from __future__ import annotations

import json

from sqlmodel import Session, select

from delivery_support import FakeClock, RecordingProvider, add_subscribers
from digest.database import utcnow
from digest.database.models import IssueComparison
from digest.delivery.send import send_issue
from digest.edition.compose import compose_issue, load_issue, rendered_with
from factories import sample_comparisons, store

KEY = "2026-W47"
NEW = {"base_url": "https://digest.verdict-digest.net",
       "postal_address": "Verdict Digest GmbH, Torstrasse 19, 10119 Berlin, Germany"}


def compose(engine, conf):
    with Session(engine, expire_on_commit=False) as session:
        issue = compose_issue(session, conf, KEY, now=utcnow())
        session.commit()
        ids = session.exec(select(IssueComparison.comparison_id).where(
            IssueComparison.issue_id == issue.id)).all()
        return issue, sorted(ids)


def test_identity_change_before_sending_renders_again(engine, settings):
    with Session(engine, expire_on_commit=False) as session:
        store(session, sample_comparisons(2))
    old, old_ids = compose(engine, settings)
    assert "digest.example.test" in old.html and "Example Street" in old.html
    assert rendered_with(old)["base_url"] == "https://digest.example.test"

    with Session(engine, expire_on_commit=False) as session:  # published later: not pulled in
        store(session, sample_comparisons(1, prefix="late-"))
    fixed = settings.model_copy(update=NEW)
    new, new_ids = compose(engine, fixed)
    assert new.id == old.id and new_ids == old_ids
    assert "digest.example.test" not in new.html and "Example Street" not in new.html
    assert "digest.verdict-digest.net" in new.html and "Torstrasse 19" in new.html
    assert new.html_hash != old.html_hash and new.created_at == old.created_at
    assert rendered_with(new) == {"base_url": NEW["base_url"], "from": settings.from_,
                                  "postal_address": NEW["postal_address"]}

    # Same settings again: nothing to do, the stored render stays.
    again, _ = compose(engine, fixed)
    assert again.html_hash == new.html_hash


def test_once_deliveries_exist_the_stored_render_is_kept(engine, settings, cli):
    with Session(engine, expire_on_commit=False) as session:
        store(session, sample_comparisons(2))
    add_subscribers(engine, 3)
    first, _ = compose(engine, settings)
    clock = FakeClock()
    provider = RecordingProvider(batch_limit=2, script=[None, ConnectionAbortedError("x")])
    try:
        send_issue(engine, first.id, provider, settings, clock=clock, sleep=clock.sleep)
    except ConnectionAbortedError:
        pass  # stopped half way: some delivered, some not
    with Session(engine) as session:
        assert load_issue(session, KEY).send_started_at is not None

    kept, _ = compose(engine, settings.model_copy(update=NEW))
    assert kept.html_hash == first.html_hash and "digest.example.test" in kept.html

    status = cli("status", "--week", KEY, "--format", "json")
    data = json.loads(status.stdout)
    assert data["rendered_with"]["base_url"] == "https://digest.example.test"
    table = cli("status", "--week", KEY)
    assert "rendered with: DIGEST_BASE_URL=https://digest.example.test" in table.out


def test_digest_send_renders_a_composed_issue_again_and_unblocks_a_blocked_week(
        engine, settings, cli, monkeypatch):
    from digest.cli import common
    from digest.database.models import Issue

    with Session(engine, expire_on_commit=False) as session:
        store(session, sample_comparisons(2))
    add_subscribers(engine, 2)
    compose(engine, settings)
    monkeypatch.setenv("DIGEST_POSTAL_ADDRESS", NEW["postal_address"])
    common.reset()
    assert cli("send", "--week", KEY).exit_code == 0
    with Session(engine) as session:
        sent = load_issue(session, KEY)
    assert sent.status == "sent" and "Torstrasse 19" in sent.html

    # A week a refused firing recorded as blocked is composed and sent by `send --week`.
    import datetime as dt

    with Session(engine, expire_on_commit=False) as session:
        store(session, sample_comparisons(1, prefix="w46-", start=dt.datetime(
            2026, 11, 10, 9, tzinfo=dt.timezone.utc)))
    with Session(engine) as session:
        session.add(Issue(key="2026-W46", status="blocked", status_reason="preflight refused",
                          window_start=sent.window_start, window_end=sent.window_start))
        session.commit()
    result = cli("send", "--week", "2026-W46", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["status"] == "sent"
    with Session(engine) as session:
        assert "Torstrasse 19" in load_issue(session, "2026-W46").html
