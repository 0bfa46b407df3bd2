"""The local stack's outage controls really take the servers down, and the pool recovers after."""
import random
import socket
import time
from types import SimpleNamespace

import psycopg
import pytest
import redis

from db.pool import open_pool, transaction
from db.watchdog import Watchdog
from devstack import procs
from core.errors import DatabaseOperationalError
from tests.conftest import make_settings


def pg_answers(server) -> bool:
    try:
        with psycopg.connect(server.url(), connect_timeout=1) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)
    except psycopg.OperationalError:
        return False


def redis_answers(server) -> bool:
    client = redis.Redis.from_url(server.url(), socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        return client.ping()
    except redis.RedisError:
        return False
    finally:
        client.close()


def test_postgres_kill_freeze_restart_keeps_committed_data(own_pg):
    own_pg.admin("CREATE TABLE kept (v int)")
    own_pg.admin("INSERT INTO kept VALUES (42)")
    with psycopg.connect(own_pg.url()):  # a backend that must die with the server
        backends = procs.descendants(own_pg.process.pid)
        assert backends

        own_pg.kill()
        assert not pg_answers(own_pg)
        assert not any(procs.alive(pid) for pid in backends)
    own_pg.start()
    assert own_pg.admin("SELECT v FROM kept") == [(42,)]

    own_pg.freeze()
    started = time.monotonic()
    assert not pg_answers(own_pg)
    assert time.monotonic() - started < 5
    own_pg.thaw()
    assert pg_answers(own_pg)

    own_pg.stop()
    assert not own_pg.running() and not pg_answers(own_pg)
    own_pg.restart()
    assert own_pg.admin("SELECT v FROM kept") == [(42,)]


def test_redis_kill_freeze_restart(own_redis):
    client = redis.Redis.from_url(own_redis.url(), socket_timeout=1)
    client.set("k", "v")
    own_redis.kill()
    assert not redis_answers(own_redis)
    own_redis.start()
    assert client.get("k") == b"v"  # the append-only file (appendfsync always) survives kill -9
    own_redis.freeze()
    assert not redis_answers(own_redis)
    own_redis.thaw()
    assert redis_answers(own_redis)
    own_redis.restart()
    assert redis_answers(own_redis)
    client.close()


def test_pool_survives_a_crash_and_reconnects_within_its_bound(own_pg):
    own_pg.admin("CREATE TABLE t (v int)")
    settings = make_settings(DATABASE_URL=own_pg.url(), DB_POOL_MIN_SIZE=2, DB_POOL_TIMEOUT_S=1,
                             DB_RECONNECT_TIMEOUT_S=2, DB_CONNECT_TIMEOUT_S=1)
    pool = open_pool(settings, "stack-test")
    try:
        pool.wait(timeout=10)
        with transaction(pool) as conn:
            conn.execute("INSERT INTO t VALUES (1)")

        own_pg.kill()
        started = time.monotonic()
        with pytest.raises(DatabaseOperationalError):
            with transaction(pool) as conn:
                conn.execute("SELECT 1")
        assert time.monotonic() - started < 5  # a dead server answers fast, no 130 s connect hang

        # callers keep trying through an outage longer than DB_RECONNECT_TIMEOUT_S; each fails fast
        while time.monotonic() - started < 4:
            attempt = time.monotonic()
            assert not _works(pool)
            assert time.monotonic() - attempt < 3
        own_pg.start()
        back = time.monotonic()
        procs.wait_until(lambda: _works(pool), 10, "the pool to reconnect")
        assert time.monotonic() - back < 10
        with transaction(pool) as conn:
            assert conn.execute("SELECT count(*) AS n FROM t").fetchone()["n"] == 1
    finally:
        pool.close()


def test_pool_does_not_start_blocked_by_a_dead_database():
    settings = make_settings(DATABASE_URL=f"postgresql://nobody@127.0.0.1:{procs.free_port()}/x",
                             DB_POOL_TIMEOUT_S=0.5, DB_CONNECT_TIMEOUT_S=1)
    started = time.monotonic()
    pool = open_pool(settings, "dead")
    try:
        with pytest.raises(DatabaseOperationalError):
            with transaction(pool):
                pass
    finally:
        pool.close()
    assert time.monotonic() - started < 5


def _works(pool) -> bool:
    try:
        with transaction(pool) as conn:
            conn.execute("SELECT 1")
        return True
    except DatabaseOperationalError:
        return False


class _SocketConn:
    """Just what the watchdog touches of a connection: its socket and close()."""

    def __init__(self):
        self.ours, self.peer = socket.socketpair()
        self.pgconn = SimpleNamespace(socket=self.ours.fileno())
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def was_cut(self) -> bool:
        self.peer.setblocking(False)
        try:
            return self.peer.recv(1) == b""  # the other end was shut down
        except BlockingIOError:
            return False


def test_the_watchdog_never_cuts_a_connection_after_its_block_ended():
    """Blocks ending right at their deadline: a connection is cut only while its block runs, then closed."""
    dog = Watchdog()
    rng = random.Random(7)
    outcomes = set()
    for _ in range(300):
        conn = _SocketConn()
        with dog.guard(conn, 0.002):
            time.sleep(rng.uniform(0, 0.004))
        time.sleep(0.005)  # well past the deadline: a late cut would have happened by now
        assert conn.was_cut() == conn.closed  # a cut connection is closed by its owner, never handed on
        outcomes.add(conn.closed)
        conn.ours.close()
        conn.peer.close()
    assert outcomes == {True, False}  # both sides of the deadline were exercised


def test_a_lock_wait_ends_as_a_clean_error_before_the_watchdog(db_url):
    settings = make_settings(DATABASE_URL=db_url, DB_QUERY_TIMEOUT_S=2, DB_POOL_TIMEOUT_S=5)
    pool = open_pool(settings, "tests")
    try:
        with psycopg.connect(db_url) as blocker:
            blocker.execute("INSERT INTO users (id) VALUES (424242)")
            blocker.commit()
            blocker.execute("SELECT 1 FROM users WHERE id = 424242 FOR UPDATE")
            started = time.monotonic()
            with pytest.raises(DatabaseOperationalError, match="lock timeout"):
                with transaction(pool) as conn:
                    conn.execute("SELECT 1 FROM users WHERE id = 424242 FOR UPDATE")
            assert time.monotonic() - started < 2.0  # before the 2 s deadline would cut the socket
            blocker.rollback()
        with transaction(pool) as conn:
            settings_seen = conn.execute("SHOW idle_in_transaction_session_timeout").fetchone()
        assert list(settings_seen.values()) == ["4s"]
    finally:
        pool.close()
