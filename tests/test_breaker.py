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


def make_background(threshold=3, reset=10.0, successes=1):
    clock = Clock()
    breaker = CircuitBreaker("pg", threshold, reset, successes, is_failure=lambda exc: isinstance(exc, Outage),
                             clock=clock, background_probe=True)
    return breaker, clock


def broken():
    raise Outage()


def test_successes_needed_to_close():
    clock = Clock()
    breaker = CircuitBreaker("rpc", 1, 10, 2, is_failure=lambda exc: isinstance(exc, Outage), clock=clock)
    fail(breaker)
    clock.now += 10
    assert breaker.call(lambda: 1) == 1
    assert breaker.state == HALF_OPEN  # one of two
    assert breaker.call(lambda: 2) == 2
    assert breaker.state == CLOSED


def test_with_a_background_prober_a_failure_holds_calls_until_it_re_checks():
    breaker, _ = make_background(threshold=3)
    fail(breaker)
    assert breaker.state == CLOSED and breaker.suspect and breaker.wake.is_set()
    with pytest.raises(BreakerOpen, match="being re-checked"):  # nobody else waits out a timeout meanwhile
        breaker.call(lambda: "not called")
    assert not breaker.available()
    assert breaker.probe(lambda: None) is True  # a blip: back at once
    assert not breaker.suspect and breaker.call(lambda: "ok") == "ok"


def test_failed_re_checks_open_it_and_users_never_probe():
    breaker, clock = make_background(threshold=3, reset=10)
    fail(breaker)
    assert breaker.probe(broken) is False
    assert breaker.probe(broken) is False
    assert breaker.state == OPEN
    assert breaker.probe(lambda: None) is None  # not due before BREAKER_RESET_S
    clock.now += 10
    assert breaker.state == HALF_OPEN
    with pytest.raises(BreakerOpen):  # a user's call is never the probe
        breaker.call(lambda: "not called")
    assert breaker.probe(broken) is False and breaker.state == OPEN
    clock.now += 10
    assert breaker.probe(lambda: None) is True and breaker.state == CLOSED
    assert breaker.call(lambda: "ok") == "ok"


def test_each_state_change_is_reported_once():
    breaker, clock = make_background(threshold=2, reset=10, successes=2)
    changes = []
    breaker.on_change(lambda b, old, new: changes.append((old, new)))
    fail(breaker)
    breaker.probe(broken)
    breaker.probe(lambda: None)  # not due yet: no change
    clock.now += 10
    breaker.probe(lambda: None)
    breaker.probe(lambda: None)
    assert changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]
    assert breaker.down_since is not None


def test_guard_counts_the_block_as_one_call():
    breaker, _ = make(threshold=2)
    for _ in range(2):
        with pytest.raises(Outage):
            with breaker.guard():
                raise Outage()
    assert breaker.state == OPEN
    with pytest.raises(BreakerOpen):
        with breaker.guard():
            pass


def test_calls_through_a_closed_breaker_run_in_parallel():
    """No lock is held during the protected call: 8 threads are inside it at the same time."""
    breaker, _ = make(threshold=3)
    inside, most, lock = [0], [0], threading.Lock()
    everyone_in = threading.Barrier(8, timeout=5)

    def work():
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        everyone_in.wait()  # would time out (BrokenBarrierError) if calls were serialized
        with lock:
            inside[0] -= 1

    threads = [threading.Thread(target=breaker.call, args=(work,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert most[0] == 8 and breaker.state == CLOSED
