"""The worker lease on real PostgreSQL: one holder, epochs, expiry, fencing, a restart at the same site."""
import threading

import pytest

from core.errors import DatabaseOperationalError, LeaseLost
from db import leases
from db.pool import transaction
from runtime import leadership
from runtime.leadership import WorkerLease


def take(pool, holder: str, site: str, ttl_s: float = 60) -> int | None:
    with transaction(pool) as conn:
        return leases.take(conn, holder, site, ttl_s)


def test_one_holder_at_a_time_and_each_takeover_raises_the_epoch(pool):
    assert take(pool, "a:1", "site-a") == 1
    assert take(pool, "a:1", "site-a") == 1  # renewed
    assert take(pool, "b:2", "site-b") is None  # held
    with transaction(pool) as conn:
        conn.execute("UPDATE worker_lease SET expires_at = now() - interval '1 second'")  # a dies
    assert take(pool, "b:2", "site-b") == 2
    assert take(pool, "a:1", "site-a") is None  # the old holder cannot take it back
    assert take(pool, "b:3", "site-b") == 3  # a restarted worker at the same site takes it at once


def test_a_fenced_transaction_fails_once_the_lease_moved_on(pool):
    assert take(pool, "a:1", "site-a", ttl_s=60) == 1
    with transaction(pool) as conn:
        leases.check(conn, "a:1", 1)
    with transaction(pool) as conn:
        conn.execute("UPDATE worker_lease SET expires_at = now()")
    assert take(pool, "b:2", "site-b") == 2
    with pytest.raises(LeaseLost), transaction(pool) as conn:
        leases.check(conn, "a:1", 1)  # the frozen worker, thawed: its next chain action is refused


def test_a_takeover_waits_for_a_fenced_transaction_in_progress(pool):
    """The check share-locks the lease row: the takeover commits after the action, never under it."""
    assert take(pool, "a:1", "site-a") == 1
    order = []
    with transaction(pool) as conn:
        leases.check(conn, "a:1", 1)
        conn.execute("UPDATE worker_lease SET expires_at = now()")  # expired while acting
        taker = threading.Thread(target=lambda: order.append(("taken", take(pool, "b:2", "site-b"))))
        taker.start()
        taker.join(0.5)
        order.append(("recorded", None))
    taker.join(5)
    assert order == [("recorded", None), ("taken", 2)]


def test_the_worker_steps_down_when_it_cannot_renew(pool):
    now = [0.0]
    lease = WorkerLease(lambda: transaction(pool), site="site-a", holder="a:1", clock=lambda: now[0])
    assert lease.renew() and lease.active() and lease.epoch == 1
    failing = WorkerLease(broken_transaction, site="site-a", holder="a:1", clock=lambda: now[0])
    failing.epoch, failing._renewed_at = lease.epoch, now[0]
    now[0] += leadership.STEP_DOWN_S - 0.5
    assert failing.renew() is True  # a blip: still active
    now[0] += 1
    assert failing.renew() is False and not failing.active()  # stepped down before the lease expires
    with transaction(pool) as conn, pytest.raises(LeaseLost):
        failing.fence(conn)
    assert leadership.STEP_DOWN_S < leadership.TTL_S


def broken_transaction():
    raise DatabaseOperationalError("the database is unreachable")
