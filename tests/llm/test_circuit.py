"""The circuit breaker with an injected clock: opens after N failures in the window, lets
one probe through after the cooldown, closes on success, re-opens on a failed probe."""

from __future__ import annotations

from gateway_llm.circuit import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock) -> CircuitBreaker:
    return CircuitBreaker(failures=3, window_s=60, cooldown_s=30, clock=clock)


def test_opens_after_failures_in_window() -> None:
    clock = Clock()
    b = breaker(clock)
    assert not b.record_failure("status_500")
    clock.now += 61  # the first failure leaves the window
    assert not b.record_failure("status_500")
    assert not b.record_failure("status_500")
    assert b.state == "closed" and b.try_acquire()
    assert b.record_failure("status_503")
    assert b.state == "open" and not b.try_acquire()
    assert b.retry_in() == 30


def test_half_open_lets_one_probe_and_closes_on_success() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.record_failure("x")
    clock.now += 30
    assert b.state == "half_open"
    assert b.try_acquire()
    assert not b.try_acquire()  # only one probe at a time
    b.record_success()
    assert b.state == "closed" and b.try_acquire()


def test_failed_probe_reopens() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.record_failure("x")
    clock.now += 31
    assert b.try_acquire()
    assert b.record_failure("x")
    assert b.state == "open" and b.retry_in() == 30


def test_trip_and_released_probe() -> None:
    clock = Clock()
    b = breaker(clock)
    b.trip("status_401")
    assert b.state == "open" and b.last_reason == "status_401"
    clock.now += 30
    assert b.try_acquire()
    b.release_probe()  # the probe never reached the upstream
    assert b.try_acquire()
