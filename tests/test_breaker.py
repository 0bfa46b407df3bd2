"""CircuitBreaker state machine, driven by a fake monotonic clock (pure logic, no services)."""
import threading

import pytest

from dr import CLOSED, HALF_OPEN, OPEN, BreakerOpen, CircuitBreaker


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Outage(Exception):
    pass


class Answered(Exception):
    """The dependency answered with an error: not an outage."""


def make(threshold=3, reset=10.0):
    clock = Clock()
    breaker = CircuitBreaker("rpc", threshold, reset, is_failure=lambda exc: isinstance(exc, Outage), clock=clock)
    return breaker, clock


def fail(breaker, exc=Outage):
    with pytest.raises(exc):
        breaker.call(lambda: (_ for _ in ()).throw(exc()))


def test_opens_after_consecutive_failures_only():
    breaker, _ = make(threshold=3)
    fail(breaker)
    fail(breaker)
    assert breaker.call(lambda: "ok") == "ok"  # a success resets the count
    fail(breaker)
    fail(breaker)
    assert breaker.state == CLOSED
    fail(breaker)
    assert breaker.state == OPEN
    with pytest.raises(BreakerOpen):
        breaker.call(lambda: "not called")


def test_answers_with_errors_do_not_open_it():
    breaker, _ = make(threshold=1)
    for _ in range(5):
        fail(breaker, Answered)
    assert breaker.state == CLOSED


def test_half_open_lets_exactly_one_probe_through():
    breaker, clock = make(threshold=1, reset=10)
    fail(breaker)
    clock.now += 9.9
    assert breaker.state == OPEN
    clock.now += 0.2
    assert breaker.state == HALF_OPEN
    entered, release = threading.Event(), threading.Event()
    results = []

    def probe():
        entered.set()
        release.wait(5)
        return "probe"

    thread = threading.Thread(target=lambda: results.append(breaker.call(probe)))
    thread.start()
    entered.wait(5)
    with pytest.raises(BreakerOpen):  # a second caller during the probe fails fast (no lock held by the probe)
        breaker.call(lambda: "second")
    release.set()
    thread.join(5)
    assert results == ["probe"] and breaker.state == CLOSED


def test_failed_probe_reopens_for_a_full_period():
    breaker, clock = make(threshold=2, reset=10)
    fail(breaker)
    fail(breaker)
    clock.now += 10
    fail(breaker)  # the probe
    assert breaker.state == OPEN
    clock.now += 9
    with pytest.raises(BreakerOpen):
        breaker.call(lambda: "x")
    clock.now += 1
    assert breaker.call(lambda: "back") == "back" and breaker.state == CLOSED


def test_last_error_is_reported():
    breaker, _ = make(threshold=1)
    fail(breaker)
    assert breaker.last_error == "Outage"
