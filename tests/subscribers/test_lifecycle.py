"""The subscriber lifecycle on a real database (SQLite and PostgreSQL): every transition from
every state, the forbidden ones, provider events, erasure and the operator's override."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from sqlmodel import select

from digest.database.models import Delivery, Issue
from subscribers import lifecycle
from subscribers.models import STATUSES, Subscriber, Suppression

T0 = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.timezone.utc)


def at(minutes: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def make(session, email: str = "ann@example.org", status: str = "active", **kw) -> Subscriber:
    subscriber = Subscriber(email=email, status=status, source="cli", created_at=T0, updated_at=T0,
                            **kw)
    session.add(subscriber)
    session.commit()
    return subscriber


def reload(session, subscriber_id: int) -> Subscriber | None:
    session.expire_all()
    return session.get(Subscriber, subscriber_id)


# --- addresses -------------------------------------------------------------------------------

def test_addresses_are_normalised_whatever_their_case():
    assert lifecycle.normalize_email("  Ann.Lee@Example.ORG ") == "ann.lee@example.org"
    assert lifecycle.email_hash("ANN@example.org") == lifecycle.email_hash("ann@EXAMPLE.org")
    assert lifecycle.email_hash("ann@example.org") == hashlib.sha256(b"ann@example.org").hexdigest()


@pytest.mark.parametrize("bad", ["", "   ", "ann", "ann@", "@example.org", "ann@@example.org",
                                 "ann example@example.org", "ann@example..org"])
def test_invalid_addresses_are_refused_with_a_clear_message(bad):
    with pytest.raises(lifecycle.InvalidEmail) as err:
        lifecycle.normalize_email(bad)
    assert "email" in str(err.value) or "valid" in str(err.value)


def test_one_subscriber_per_address_regardless_of_case(session):
    first = lifecycle.signup(session, "Ann@Example.org", at=at(0))
    second = lifecycle.signup(session, "ann@EXAMPLE.ORG", at=at(1))
    session.commit()
    assert first.subscriber.id == second.subscriber.id
    assert session.exec(select(Subscriber)).all()[0].email == "ann@example.org"
    assert len(session.exec(select(Subscriber)).all()) == 1


# --- transitions: the whole table --------------------------------------------------------------

# What each transition does from each state: "->x" changes to x, "=" is already satisfied
# (no change, no error), "!" is forbidden. Written out by hand so the code's own table is checked.
EXPECTED = {
    "confirm": {"pending": "->active", "active": "=", "unsubscribed": "!", "bounced": "!",
                "complained": "!"},
    "unsubscribe": {"pending": "->unsubscribed", "active": "->unsubscribed", "unsubscribed": "=",
                    "bounced": "!", "complained": "!"},
    "resubscribe": {"pending": "=", "active": "=", "unsubscribed": "->pending", "bounced": "!",
                    "complained": "!"},
    "bounce": {"pending": "->bounced", "active": "->bounced", "unsubscribed": "->bounced",
               "bounced": "=", "complained": "="},
    "complain": {"pending": "->complained", "active": "->complained",
                 "unsubscribed": "->complained", "bounced": "->complained", "complained": "="},
    "reactivate": {"pending": "->active", "active": "=", "unsubscribed": "->active",
                   "bounced": "->active", "complained": "->active"},
}
FUNCTIONS = {"confirm": lifecycle.confirm, "unsubscribe": lifecycle.unsubscribe,
             "resubscribe": lifecycle.resubscribe, "bounce": lifecycle.mark_bounced,
             "complain": lifecycle.mark_complained}
@pytest.mark.parametrize("name", list(EXPECTED))
def test_every_transition_from_every_state(session, name):
    """One subscriber per starting state; each gets the transition once."""
    for state in STATUSES:
        subscriber = make(session, email=f"{state}@example.org", status=state)
        expected = EXPECTED[name][state]
        if name == "reactivate":
            run = lambda: lifecycle.reactivate(session, subscriber.email, at=at(5))  # noqa: E731
        else:
            run = lambda: FUNCTIONS[name](session, subscriber, at=at(5))  # noqa: E731
        if expected == "!":
            with pytest.raises(lifecycle.ForbiddenTransition) as err:
                run()
            session.rollback()
            assert state in str(err.value) and name in str(err.value)
            assert reload(session, subscriber.id).status == state, (name, state)
            continue
        run()
        session.commit()
        after = reload(session, subscriber.id)
        if expected == "=":
            assert after.status == state, (name, state)
            assert after.updated_at == T0, f"{name} from {state} must not touch the row"
        else:
            assert after.status == expected.removeprefix("->"), (name, state)
            assert after.updated_at == at(5), (name, state)


def test_each_change_stamps_its_own_time(session):
    subscriber = lifecycle.signup(session, "bo@example.org", name="Bo", at=at(0)).subscriber
    lifecycle.confirm(session, subscriber, at=at(1))
    lifecycle.unsubscribe(session, subscriber, at=at(2))
    lifecycle.mark_bounced(session, subscriber, at=at(3))
    lifecycle.mark_complained(session, subscriber, at=at(4))
    session.commit()
    row = reload(session, subscriber.id)
    assert (row.created_at, row.confirmed_at, row.unsubscribed_at, row.bounced_at,
            row.complained_at, row.updated_at) == (at(0), at(1), at(2), at(3), at(4), at(4))
    assert row.source == "form" and row.name == "Bo"


def test_forbidden_transition_on_a_bounced_address_names_the_override(session):
    subscriber = make(session, status="bounced")
    with pytest.raises(lifecycle.ForbiddenTransition, match="reactivate"):
        lifecycle.confirm(session, subscriber, at=at(1))


def test_naive_times_are_refused(session):
    subscriber = make(session, status="pending")
    with pytest.raises(ValueError, match="naive"):
        lifecycle.confirm(session, subscriber, at=dt.datetime(2026, 11, 20, 9, 0))


# --- signup (double opt-in) ----------------------------------------------------------------------

def test_signup_creates_a_pending_subscriber_that_needs_confirmation(session):
    result = lifecycle.signup(session, "new@example.org", name="  New   Person ", at=at(0))
    session.commit()
    assert result.outcome == "created" and result.send_confirmation
    row = reload(session, result.subscriber.id)
    assert (row.status, row.name, row.source) == ("pending", "New Person", "form")


@pytest.mark.parametrize("state,outcome,sends,after", [
    ("pending", "pending", True, "pending"),
    ("active", "already_active", False, "active"),
    ("unsubscribed", "resubscribed", True, "pending"),
    ("bounced", "blocked", False, "bounced"),
    ("complained", "blocked", False, "complained"),
])
def test_signup_of_a_known_address(session, state, outcome, sends, after):
    subscriber = make(session, status=state)
    result = lifecycle.signup(session, "ANN@example.org", at=at(1))
    session.commit()
    assert (result.outcome, result.send_confirmation) == (outcome, sends)
    assert reload(session, subscriber.id).status == after


def test_operator_add_refuses_known_addresses_and_confirms_pending_ones(session):
    added = lifecycle.add(session, "Cy@Example.org", name="Cy", at=at(0))
    assert added.status == "pending" and added.source == "cli"
    with pytest.raises(lifecycle.AlreadySubscribed):
        lifecycle.add(session, "cy@example.org", at=at(1))
    assert lifecycle.add(session, "cy@example.org", confirmed=True, at=at(2)).status == "active"
    gone = make(session, email="gone@example.org", status="unsubscribed")
    with pytest.raises(lifecycle.AlreadySubscribed, match="reactivate"):
        lifecycle.add(session, gone.email, confirmed=True, at=at(3))


# --- provider events (the webhook contract) ------------------------------------------------------

def test_provider_events_change_status_once(session):
    subscriber = make(session, status="active", confirmed_at=T0)
    assert lifecycle.apply_provider_event(session, "ANN@Example.org", "bounced", at=at(10)) is True
    session.commit()
    assert lifecycle.apply_provider_event(session, "ann@example.org", "bounced", at=at(11)) is False
    # an unsubscribe reported after a bounce must not downgrade it (unsubscribed can resubscribe)
    assert lifecycle.apply_provider_event(session, "ann@example.org", "unsubscribed", at=at(12)) is False
    assert lifecycle.apply_provider_event(session, "ann@example.org", "complained", at=at(13)) is True
    session.commit()
    row = reload(session, subscriber.id)
    assert (row.status, row.bounced_at, row.complained_at) == ("complained", at(10), at(13))


def test_provider_events_for_unknown_or_unreadable_addresses_change_nothing(session):
    make(session, status="active")
    assert lifecycle.apply_provider_event(session, "nobody@example.org", "bounced", at=at(1)) is False
    assert lifecycle.apply_provider_event(session, "not an address", "complained", at=at(1)) is False
    assert session.exec(select(Subscriber)).one().status == "active"


def test_provider_unsubscribe_event(session):
    subscriber = make(session, status="active", confirmed_at=T0)
    assert lifecycle.apply_provider_event(session, subscriber.email, "unsubscribed", at=at(3))
    assert not lifecycle.apply_provider_event(session, subscriber.email, "unsubscribed", at=at(4))
    session.commit()
    assert reload(session, subscriber.id).unsubscribed_at == at(3)


def test_a_late_event_cannot_undo_a_newer_confirmation(session):
    subscriber = make(session, status="active", confirmed_at=at(30))
    assert lifecycle.apply_provider_event(session, subscriber.email, "bounced", at=at(20)) is False
    assert reload(session, subscriber.id).status == "active"
    assert lifecycle.apply_provider_event(session, subscriber.email, "bounced", at=at(40)) is True


def test_unknown_event_kinds_are_a_programming_error(session):
    with pytest.raises(ValueError, match="unknown provider event"):
        lifecycle.apply_provider_event(session, "ann@example.org", "delivered", at=at(1))  # type: ignore[arg-type]


# --- erasure and the operator's override ---------------------------------------------------------

def _issue_with_delivery(session, subscriber: Subscriber) -> None:
    issue = Issue(key="2026-W47", status="sent", window_start=T0, window_end=at(60 * 24 * 7),
                  html="<p>x</p>", text="x")
    session.add(issue)
    session.flush()
    session.add(Delivery(issue_id=issue.id, subscriber_id=subscriber.id, status="sent"))
    session.commit()


def test_erase_keeps_only_a_hash_and_the_reason(session):
    subscriber = make(session, email="dee@example.org", status="bounced", name="Dee")
    _issue_with_delivery(session, subscriber)
    suppression = lifecycle.erase(session, "Dee@Example.org", at=at(1))
    session.commit()
    assert suppression.reason == "bounced"
    assert session.exec(select(Subscriber)).all() == []
    assert session.exec(select(Delivery)).all() == [], "delivery history is personal data too"
    stored = session.exec(select(Suppression)).one()
    assert stored.email_hash == hashlib.sha256(b"dee@example.org").hexdigest()
    with pytest.raises(lifecycle.UnknownSubscriber):
        lifecycle.erase(session, "dee@example.org", at=at(2))


def test_an_erased_bounce_is_never_re_added_except_by_the_operator(session):
    make(session, email="dee@example.org", status="bounced")
    lifecycle.erase(session, "dee@example.org", at=at(1))
    session.commit()
    blocked = lifecycle.signup(session, "DEE@example.org", at=at(2))
    assert (blocked.outcome, blocked.send_confirmation, blocked.subscriber) == ("blocked", False, None)
    with pytest.raises(lifecycle.Suppressed, match="reactivate"):
        lifecycle.add(session, "dee@example.org", confirmed=True, at=at(3))
    session.rollback()
    assert session.exec(select(Subscriber)).all() == []

    back = lifecycle.reactivate(session, "dee@example.org", at=at(4))
    session.commit()
    assert (back.status, back.confirmed_at) == ("active", at(4))
    assert session.exec(select(Suppression)).all() == [], "an active address is never suppressed"


def test_a_person_erased_at_their_request_may_sign_up_again(session):
    subscriber = make(session, email="eve@example.org", status="active")
    assert lifecycle.erase(session, subscriber.email, at=at(1)).reason == "erased"
    session.commit()
    result = lifecycle.signup(session, "eve@example.org", at=at(2))
    assert (result.outcome, result.send_confirmation) == ("created", True)
    lifecycle.confirm(session, result.subscriber, at=at(3))
    session.commit()
    assert session.exec(select(Suppression)).all() == []


def test_erasing_again_keeps_the_strongest_reason(session):
    make(session, email="fay@example.org", status="active")
    lifecycle.erase(session, "fay@example.org", at=at(1))  # reason "erased"
    again = lifecycle.signup(session, "fay@example.org", at=at(2)).subscriber  # pending, entry kept
    lifecycle.mark_bounced(session, again, at=at(3))
    lifecycle.erase(session, "fay@example.org", at=at(4))
    session.commit()
    assert [s.reason for s in session.exec(select(Suppression))] == ["bounced"]
    assert lifecycle.signup(session, "fay@example.org", at=at(5)).outcome == "blocked"


def test_reactivate_needs_a_known_or_suppressed_address(session):
    with pytest.raises(lifecycle.UnknownSubscriber, match="add"):
        lifecycle.reactivate(session, "stranger@example.org", at=at(1))


# --- ids are never given twice ------------------------------------------------------------------

def test_a_removed_subscribers_id_is_never_given_to_the_next_one(session):
    """Links name a subscriber by id: the id of someone erased (here the newest row, which a
    SQLite table without AUTOINCREMENT hands out again) must never name the next person."""
    first = lifecycle.signup(session, "first@example.org", at=at(0)).subscriber
    newest = lifecycle.signup(session, "newest@example.org", at=at(1)).subscriber
    session.commit()
    gone = newest.id
    lifecycle.erase(session, "newest@example.org", at=at(2))
    session.commit()
    after = lifecycle.signup(session, "after@example.org", at=at(3)).subscriber
    operator = lifecycle.add(session, "operator@example.org", at=at(4))
    session.commit()
    assert first.id < gone < after.id < operator.id


# --- confirmation mails per address -------------------------------------------------------------

def test_a_pending_address_gets_a_few_confirmations_a_day_then_none(session):
    results = [lifecycle.signup(session, "spam.target@example.org", at=at(i)) for i in range(32)]
    session.commit()
    assert [r.send_confirmation for r in results] == [True] * 3 + [False] * 29
    assert [r.outcome for r in results[:4]] == ["created", "pending", "pending", "throttled"]
    stored = reload(session, results[0].subscriber.id)
    assert (stored.status, stored.confirmations_sent, stored.confirmations_since) == (
        "pending", 3, at(0))
    # a day after the first mail of the window, the count starts again
    day = T0 + lifecycle.CONFIRMATION_WINDOW
    assert not lifecycle.signup(session, "spam.target@example.org",
                                at=day - dt.timedelta(seconds=1)).send_confirmation
    assert lifecycle.signup(session, "spam.target@example.org", at=day).send_confirmation
    again = [lifecycle.signup(session, "Spam.Target@example.org",
                              at=day + dt.timedelta(minutes=m)).send_confirmation
             for m in (1, 2, 3)]
    assert again == [True, True, False]


def test_resubscribing_counts_towards_the_same_limit(session):
    subscriber = make(session, "back@example.org", "unsubscribed")
    sends = []
    for minute in range(5):
        result = lifecycle.signup(session, "back@example.org", at=at(minute))
        sends.append(result.send_confirmation)
        lifecycle.unsubscribe(session, result.subscriber, at=at(minute))
    session.commit()
    assert sends == [True, True, True, False, False]
    assert reload(session, subscriber.id).status == "unsubscribed"


def test_the_limit_holds_across_concurrent_signups(engine):
    """32 signups of one address at once, each in its own transaction (as from 32 clients and
    several server processes): the count lives on the row, so exactly three mails go out."""
    from concurrent.futures import ThreadPoolExecutor

    from sqlmodel import Session

    from subscribers.storage import unit_of_work

    with unit_of_work(lambda: Session(engine)) as session:
        make(session, "target@example.org", "pending")

    def sign_up(i: int) -> bool:
        with unit_of_work(lambda: Session(engine)) as session:
            return lifecycle.signup(session, "target@example.org", at=at(i % 5)).send_confirmation

    with ThreadPoolExecutor(8) as pool:
        sent = list(pool.map(sign_up, range(32)))
    assert sent.count(True) == lifecycle.CONFIRMATIONS_PER_DAY == 3
