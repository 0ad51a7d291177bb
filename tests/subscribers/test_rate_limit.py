"""The signup rate limiter: per client (an IPv6 client is its /64), a sliding window on an
injected clock, memory that stays bounded, and a cost per request that does not grow with the
number of clients it tracks."""

from __future__ import annotations

import sys

import pytest

from subscribers.routes import RateLimiter, network_key
from factories import SetClock


@pytest.fixture
def clock() -> SetClock:
    return SetClock(1_800_000_000.0)


def test_a_client_gets_limit_requests_per_window(clock):
    limiter = RateLimiter(5, 600.0, clock)
    assert [limiter.hit("a") for _ in range(5)] == [None] * 5
    wait = limiter.hit("a")
    assert wait is not None and 540.0 <= wait <= 600.0
    assert limiter.hit("b") is None, "other clients are not affected"
    clock.now += wait
    assert limiter.hit("a") is None, "allowed again once the retry time has passed"


def test_the_window_slides(clock):
    limiter = RateLimiter(5, 600.0, clock)
    for _ in range(3):
        assert limiter.hit("a") is None
    clock.now += 300
    for _ in range(2):
        assert limiter.hit("a") is None
    wait = limiter.hit("a")
    assert wait is not None and wait <= 300.0, "the first three leave the window first"
    clock.now += wait
    assert limiter.hit("a") is None
    assert limiter.hit("a") is None and limiter.hit("a") is None
    assert limiter.hit("a") is not None, "the two later ones (and the new three) still count"


def test_refused_requests_do_not_count(clock):
    limiter = RateLimiter(2, 60.0, clock)
    limiter.hit("a"), limiter.hit("a")
    for _ in range(100):
        assert limiter.hit("a") is not None
    clock.now += 60
    assert limiter.hit("a") is None


def test_a_clock_that_steps_back_is_harmless(clock):
    limiter = RateLimiter(2, 60.0, clock)
    limiter.hit("a")
    clock.now -= 3600
    limiter.hit("a")
    assert limiter.hit("a") is not None
    clock.now += 3600 + 60
    assert limiter.hit("a") is None


@pytest.mark.parametrize("host,key", [
    ("203.0.113.7", "203.0.113.7"),
    ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff:ffff:ffff:fffe", "2001:db8:1:2::/64"),
    ("[2001:db8:1:3::1]", "2001:db8:1:3::/64"),
    ("::ffff:203.0.113.7", "203.0.113.7"),
    ("testclient", "testclient"),
])
def test_clients_are_ipv4_addresses_or_ipv6_slash_64s(host, key):
    assert network_key(host) == key


def test_rotating_through_one_ipv6_slash_64_is_one_client(clock):
    limiter = RateLimiter(5, 600.0, clock)
    hosts = [f"2001:db8:aa:bb::{i:x}" for i in range(1, 7)]
    assert [limiter.hit(h) is None for h in hosts] == [True] * 5 + [False]
    assert limiter.hit("2001:db8:aa:bc::1") is None, "the next /64 is someone else"


def test_memory_is_bounded_and_forgotten_after_the_window(clock):
    limiter = RateLimiter(5, 600.0, clock, max_clients=1000)
    for i in range(5000):  # a flood of new addresses
        limiter.hit(f"flood-{i}")
    assert limiter.tracked() <= 1001
    assert limiter.hit("latecomer") is not None, "past the bound, new clients share one limit"
    assert limiter.hit("flood-1") is None, "clients seen before the bound keep their own"
    clock.now += 600
    assert limiter.tracked() == 1001  # nothing walks the table: old slices go on the next hit
    assert limiter.hit("latecomer") is None
    assert limiter.tracked() == 1


def _python_steps(call) -> int:
    """Python-level events (calls, lines, returns) run by `call`: a count of the work done
    that does not depend on the machine's speed or load."""
    steps = 0

    def trace(frame, event, arg):
        nonlocal steps
        steps += 1
        return trace

    sys.settrace(trace)
    try:
        call()
    finally:
        sys.settrace(None)
    return steps


@pytest.mark.parametrize("tracked", [50_000])
def test_the_cost_of_a_request_does_not_grow_with_the_clients_tracked(clock, tracked):
    def steps_with(clients: int) -> int:
        limiter = RateLimiter(5, 600.0, clock)
        for i in range(clients):
            limiter.hit(f"client-{i}")
        clock.now += 1
        return _python_steps(lambda: limiter.hit("one-more"))

    few, many = steps_with(10), steps_with(tracked)
    assert many == few, f"{many} steps with {tracked} clients tracked, {few} with 10"
