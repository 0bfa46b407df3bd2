"""Dialog storage on real Redis and PostgreSQL: Redis first, PostgreSQL fallback, versions, migration back."""
import json
import time

import pytest
import redis

import dr
from core.errors import BreakerOpen
from db.pool import transaction
from devstack.procs import wait_until
from tests.conftest import make_settings

CHAT, USER = 4242, 4242


@pytest.fixture
def parts(db_url, own_redis, pool):
    settings = make_settings(DATABASE_URL=db_url, REDIS_URL=own_redis.url(), REDIS_TIMEOUT_S=0.5,
                             BREAKER_FAILURES=1, BREAKER_RESET_S=0.1)
    client = dr.redis_client(settings)
    redis_breaker, pg_breaker = dr.redis_breaker(settings), dr.pg_breaker(settings)
    store = dr.DialogStore(client, redis_breaker, pool, pg_breaker)
    store.breakers = redis_breaker, pg_breaker  # for the tests' eyes only
    return store, client, own_redis, pool


def redis_copy(client, chat=CHAT, user=USER) -> dict | None:
    raw = client.get(dr.redis_key((0, chat, user, 0, "")))
    return json.loads(raw) if raw else None


def pg_copy(pool, chat=CHAT, user=USER) -> dict | None:
    with pool.connection() as conn:
        return conn.execute("SELECT state, data, version, migrated_at FROM user_fsm_states "
                            "WHERE chat_id = %s AND user_id = %s", (chat, user)).fetchone()


def test_both_stores_hold_each_version_and_a_read_takes_the_newest(parts):
    store, client, _, pool = parts
    store.put(CHAT, USER, "WITHDRAW_CONFIRM", {"draft": "d1", "amount": "5"})
    assert store.get(CHAT, USER) == ("WITHDRAW_CONFIRM", {"draft": "d1", "amount": "5"})
    in_redis, in_pg = redis_copy(client), pg_copy(pool)
    assert in_redis["version"] == in_pg["version"] and in_pg["migrated_at"] is not None
    store.put(CHAT, USER, "WITHDRAW_ADDRESS", {"draft": "d2"})
    assert redis_copy(client)["version"] > in_redis["version"]
    assert store.clear(CHAT, USER) is True
    assert store.get(CHAT, USER) == (None, {})
    assert store.clear(CHAT, USER) is False
    assert store.get_state(CHAT, USER) is None  # telebot's interface reads the same storage


def test_a_dialog_half_way_when_redis_dies_continues_from_postgresql(parts):
    store, client, server, pool = parts
    store.put(CHAT, USER, "WALLET_SIGNATURE", {"address": "0xabc"})
    server.kill()
    assert store.get(CHAT, USER) == ("WALLET_SIGNATURE", {"address": "0xabc"})
    assert store.breakers[0].state == dr.OPEN  # that failure opened it: nobody waits for Redis again
    store.put(CHAT, USER, "WALLET_SIGNATURE", {"address": "0xdef"})  # written during the outage
    assert pg_copy(pool)["migrated_at"] is None
    server.start()  # restarted from its own data: the older value
    assert redis_copy(client)["data"] == {"address": "0xabc"}
    wait_closed(store.breakers[0], client)
    assert store.get(CHAT, USER) == ("WALLET_SIGNATURE", {"address": "0xdef"})  # the newer copy wins
    assert dr.migrate_dialogs(store, lambda: transaction(pool)) == 1
    assert redis_copy(client)["data"] == {"address": "0xdef"}
    assert pg_copy(pool)["migrated_at"] is not None
    assert dr.migrate_dialogs(store, lambda: transaction(pool)) == 0  # idempotent


def test_recovery_never_lets_an_older_copy_win(parts):
    store, client, server, pool = parts
    store.put(CHAT, USER, "A", {"n": 1})
    server.kill()
    store.put(CHAT, USER, "B", {"n": 2})  # PostgreSQL only
    server.start()
    client.flushall()  # a Redis that came back empty
    wait_closed(store.breakers[0], client)
    store.put(CHAT + 1, USER + 1, "OTHER", {})  # a dialog written after the return, in both stores
    newer = {"state": "C", "data": {"n": 3}, "version": pg_copy(pool)["version"] + 10}
    client.set(dr.redis_key((0, CHAT, USER, 0, "")), json.dumps(newer))  # Redis got a newer one meanwhile
    assert dr.migrate_dialogs(store, lambda: transaction(pool)) == 1
    assert redis_copy(client)["data"] == {"n": 3}  # not overwritten by the older PostgreSQL copy
    assert store.get(CHAT, USER) == ("C", {"n": 3})


def test_with_both_stores_down_a_dialog_says_so(db_url, own_redis, own_pg):
    from db.pool import open_pool
    settings = make_settings(DATABASE_URL=own_pg.url("postgres"), REDIS_URL=own_redis.url(), REDIS_TIMEOUT_S=0.5,
                             BREAKER_FAILURES=1, BREAKER_RESET_S=60, DB_POOL_TIMEOUT_S=1)
    pool = open_pool(settings, "tests")
    store = dr.DialogStore(dr.redis_client(settings), dr.redis_breaker(settings), pool, dr.pg_breaker(settings))
    own_redis.kill()
    own_pg.kill()
    try:
        with pytest.raises(BreakerOpen):
            store.put(CHAT, USER, "X", {})
    finally:
        pool.close()
    with pytest.raises(BreakerOpen):
        store.put(CHAT, USER, "X", {})
    with pytest.raises(BreakerOpen):
        store.get(CHAT, USER)


def wait_closed(breaker, client, timeout_s: float = 5.0) -> None:
    """Drive the probe a background prober would make, until Redis answers."""
    wait_until(lambda: breaker.probe(client.ping) is not False and breaker.available(), timeout_s, "Redis back")


def test_redis_refusing_fails_at_once_without_redis_py_retries(parts):
    _, client, server, _ = parts
    server.kill()
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        client.ping()
    assert time.monotonic() - started < 0.5  # redis-py 8's default retries took seconds
