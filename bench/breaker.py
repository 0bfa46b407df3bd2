"""Circuit breaker: per-call overhead in the closed state, and 8 threads of 5 ms calls, against pybreaker."""
import statistics
import threading
import time

import pybreaker

import dr
from bench.report import Row, ms, us
from bench.stack import settings_of

CALLS = 200_000
REPEATS = 5
THREADS = 8
SLOW_CALLS = 40  # per thread
SLOW_CALL_S = 0.005
SLOW_REPEATS = 3


def noop() -> None:
    """The protected call when only the breaker's own cost is measured."""


def slow() -> None:
    """A 5 ms dependency call."""
    time.sleep(SLOW_CALL_S)


def ours():
    """Our breaker as bot.py and worker.py build it (BREAKER_* defaults, background probing)."""
    return dr.redis_breaker(settings_of(), background_probe=True)


def theirs():
    """pybreaker with the same threshold and reset time."""
    settings = settings_of()
    return pybreaker.CircuitBreaker(fail_max=settings.breaker_failures, reset_timeout=settings.breaker_reset_s)


def loop_time(call, function, calls: int) -> float:
    """Seconds for `calls` calls of call(function)."""
    started = time.perf_counter()
    for _ in range(calls):
        call(function)
    return time.perf_counter() - started


def direct(function):
    """The baseline: the call without any breaker."""
    return function()


def overhead_per_call(call) -> float:
    """Seconds a call through `call` costs above a direct call (best of REPEATS, side by side)."""
    best = float("inf")
    for _ in range(REPEATS):
        best = min(best, (loop_time(call, noop, CALLS) - loop_time(direct, noop, CALLS)) / CALLS)
    return best


def threaded_time(call) -> float:
    """Wall time of THREADS threads each making SLOW_CALLS slow calls through `call`."""
    def worker():
        """One thread's calls."""
        for _ in range(SLOW_CALLS):
            call(slow)
    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def median_threaded(call) -> float:
    """Median of SLOW_REPEATS threaded runs."""
    return statistics.median(threaded_time(call) for _ in range(SLOW_REPEATS))


def run() -> list[Row]:
    """Both measures, ours and pybreaker side by side."""
    our_breaker, their_breaker = ours(), theirs()
    our_overhead, their_overhead = overhead_per_call(our_breaker.call), overhead_per_call(their_breaker.call)
    plain = median_threaded(direct)
    our_threads, their_threads = median_threaded(our_breaker.call), median_threaded(their_breaker.call)
    ratio = our_overhead / their_overhead
    shape = f"{THREADS} threads x {SLOW_CALLS} calls of 5 ms"
    return [
        Row("breaker", "closed-state overhead per call", us(our_overhead), f"pybreaker {us(their_overhead)}",
            ratio, "<= 0.4", ratio <= 0.4),
        Row("breaker", f"{shape}, ours vs direct", ms(our_threads), f"direct {ms(plain)}",
            our_threads / plain, "<= 1.1", our_threads / plain <= 1.1),
        Row("breaker", f"{shape}, pybreaker vs direct", ms(their_threads), f"direct {ms(plain)}",
            their_threads / plain, "~8 (serialized)"),
    ]
