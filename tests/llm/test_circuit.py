"""The circuit breaker by failure rate, with an injected clock: a few failures among many
successes leave it closed, a high failure rate over enough requests opens it, the window
forgets, half-open lets the configured number of probes through, an auth failure opens it
at once, and a forced probe (the last door) closes it when it succeeds."""

from __future__ import annotations

import pytest

from gateway_llm.circuit import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, *, min_requests: int = 10, failure_rate: float = 0.5,
            probes: int = 1, min_failures: int = 1) -> CircuitBreaker:
    return CircuitBreaker(window_s=60, min_requests=min_requests, failure_rate=failure_rate,
                          cooldown_s=30, probes=probes, min_failures=min_failures,
                          clock=clock)


def test_three_failures_among_a_hundred_successes_leave_it_closed() -> None:
    clock = Clock()
    b = breaker(clock)
    for i in range(103):
        clock.now += 0.1
        if i in (0, 1, 2):  # even three in a row, at the start
            assert not b.failure("status_500", "closed")
        else:
            b.success("closed")
    assert b.state == "closed" and b.admit() == "closed"
    assert b.counts() == (103, 3)


@pytest.mark.parametrize(("outcomes", "opens"), [
    # Half of min_requests failing opens it, at the request that reached the rate.
    ("ok ok ok ok ok fail fail fail fail fail", True),
    ("fail ok fail ok fail ok fail ok fail ok", False),  # 50 % only at the 10th, an ok
    ("fail ok fail ok fail ok fail ok fail ok fail", True),  # 6 of 11
    ("fail fail fail fail fail fail fail fail fail", False),  # 9 < min_requests
    ("ok ok ok ok ok ok ok ok ok ok fail fail fail fail fail fail fail fail fail", False),
    ("ok ok ok ok ok ok ok ok ok ok fail fail fail fail fail fail fail fail fail fail", True),
])
def test_failure_rate_over_min_requests(outcomes: str, opens: bool) -> None:
    clock = Clock()
    b = breaker(clock)
    opened = []
    for outcome in outcomes.split():
        if outcome == "ok":
            b.success("closed")
        else:
            opened.append(b.failure("status_503", "closed"))
    assert (b.state == "open") is opens
    assert any(opened) is opens
    if opens:
        assert opened[-1] and b.last_reason == "status_503" and b.retry_in() == 30


def test_min_failures_guards_low_traffic() -> None:
    clock = Clock()
    b = breaker(clock, min_requests=2, min_failures=3)
    assert not b.failure("x", "closed")
    assert not b.failure("x", "closed")
    assert b.failure("x", "closed")


def test_the_window_forgets_old_requests() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(9):
        b.failure("x", "closed")
    clock.now += 61  # all of them leave the window
    assert b.counts() == (0, 0)
    assert not b.failure("x", "closed")
    assert b.state == "closed"


def open_it(b: CircuitBreaker) -> None:
    assert b.trip("status_401")
    assert b.state == "open"


def test_half_open_lets_the_configured_probes_through_and_closes_on_their_success() -> None:
    clock = Clock()
    b = breaker(clock, probes=2)
    open_it(b)
    assert b.admit() is None
    clock.now += 30
    assert b.state == "half_open"
    assert b.admit() == "probe" and b.admit() == "probe"
    assert b.admit() is None  # two probes at most
    assert not b.success("probe")  # one of two
    assert b.state == "half_open" and b.admit() is None
    assert b.success("probe")
    assert b.state == "closed" and b.admit() == "closed" and b.last_reason is None
    assert b.counts() == (0, 0)  # a closed circuit starts afresh


def test_failed_probe_reopens() -> None:
    clock = Clock()
    b = breaker(clock)
    open_it(b)
    clock.now += 31
    assert b.admit() == "probe"
    assert b.failure("status_500", "probe")
    assert b.state == "open" and b.retry_in() == 30


def test_released_probe_lets_another() -> None:
    clock = Clock()
    b = breaker(clock)
    open_it(b)
    clock.now += 30
    permit = b.admit()
    assert permit == "probe" and b.admit() is None
    b.release(permit)  # the probe never reached the upstream
    assert b.admit() == "probe"


def test_outcomes_of_requests_admitted_before_it_opened_do_not_move_it() -> None:
    clock = Clock()
    b = breaker(clock)
    open_it(b)
    opened_at = b.opened_at
    clock.now += 5
    assert not b.failure("status_500", "closed")  # admitted while closed, ended now
    assert not b.success("closed")
    assert b.opened_at == opened_at and b.state == "open"


def test_forced_probe_through_an_open_circuit() -> None:
    clock = Clock()
    b = breaker(clock)
    open_it(b)
    assert b.admit() is None
    permit = b.force()
    assert permit == "probe"
    assert b.success(permit)
    assert b.state == "closed"
    assert b.force() == "closed"  # on a closed circuit it is an ordinary request


def test_a_request_already_counted_is_not_counted_twice() -> None:
    clock = Clock()
    b = breaker(clock, min_requests=1)
    b.success("closed")
    b.success("closed", count=False)
    assert not b.failure("x", "closed", count=False)
    assert b.counts() == (1, 0)
