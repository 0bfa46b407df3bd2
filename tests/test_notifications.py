"""The notification service on real Redis and PostgreSQL: stream first, fallback table, memory buffer;
the stream consumer's at-least-once delivery with one send per key; migration of fallback notices."""
import json

import psycopg
import pytest

import dr
from botapi.delivery import FAILED, LATER, SENT, Outcome
from db import migrate, notifications
from db.pool import open_pool, transaction
from devstack.procs import wait_until
from tests.conftest import make_settings


class Telegram:
    """Records what would have been sent (the send callable the consumer is given)."""

    def __init__(self):
        self.sent, self.answer = [], lambda chat_id, payload: Outcome(SENT)

    def __call__(self, chat_id, payload):
        outcome = self.answer(chat_id, payload)
        if outcome.kind == SENT:
            self.sent.append((chat_id, payload["values"].get("n")))
        return outcome


@pytest.fixture
def stack(db_url, own_redis, pool):
    settings = make_settings(DATABASE_URL=db_url, REDIS_URL=own_redis.url(), REDIS_TIMEOUT_S=0.5,
                             BREAKER_FAILURES=1, BREAKER_RESET_S=0.1, NOTIFY_BUFFER_MAX=5)
    client = dr.redis_client(settings)
    redis_breaker, pg_breaker = dr.redis_breaker(settings), dr.pg_breaker(settings)

    def guarded_transaction():
        return pg_guarded(pg_breaker, pool)

    service = dr.NotificationService(client, redis_breaker, guarded_transaction, settings.notify_buffer_max)
    telegram = Telegram()
    sent_keys = dr.SentKeys(client, redis_breaker, guarded_transaction)
    consumer = dr.StreamConsumer(client, redis_breaker, "c1", telegram, sent_keys, lease_s=0.2)
    return {"service": service, "client": client, "redis": own_redis, "pool": pool, "telegram": telegram,
            "consumer": consumer, "breakers": (redis_breaker, pg_breaker), "sent_keys": sent_keys,
            "transaction": guarded_transaction}


class pg_guarded:
    def __init__(self, breaker, pool):
        self.breaker, self.pool = breaker, pool

    def __enter__(self):
        self.guard = self.breaker.guard()
        self.guard.__enter__()
        self.inner = transaction(self.pool)
        return self.inner.__enter__()

    def __exit__(self, *exc):
        try:
            self.inner.__exit__(*exc)
        finally:
            self.guard.__exit__(*exc)


def notice(service, n: int, chat_id: int = 77) -> str:
    return service.notify(chat_id, "cancelled", {"n": n}, f"test:{n}")


def fallback_rows(pool) -> list[dict]:
    with pool.connection() as conn:
        return conn.execute("SELECT * FROM notification_queue_fallback ORDER BY id").fetchall()


def reopen(breaker, check) -> None:
    wait_until(lambda: breaker.probe(check) is not False and breaker.available(), 10, "the dependency back")


def test_stream_first_and_each_key_delivered_once(stack):
    service, consumer, telegram = stack["service"], stack["consumer"], stack["telegram"]
    assert [notice(service, n) for n in range(3)] == ["stream"] * 3
    assert notice(service, 0) == "stream"  # the same key again: queued, but never sent twice
    assert consumer.run() == 3
    assert telegram.sent == [(77, 0), (77, 1), (77, 2)]
    assert consumer.run() == 0 and consumer.pending() == 0
    assert stack["client"].xlen(dr.STREAM) <= 1  # acknowledged entries are trimmed


@pytest.fixture
def own_stack(own_pg, own_redis):
    """The service on a PostgreSQL and a Redis of this test's own, both of which it may kill."""
    own_pg.admin("CREATE DATABASE notices")
    url = own_pg.url("notices")
    with psycopg.connect(url, autocommit=True) as conn:
        migrate.migrate(conn, migrate.discover())
    settings = make_settings(DATABASE_URL=url, REDIS_URL=own_redis.url(), REDIS_TIMEOUT_S=0.5, BREAKER_FAILURES=1,
                             BREAKER_RESET_S=0.1, NOTIFY_BUFFER_MAX=5, DB_POOL_TIMEOUT_S=1, DB_CONNECT_TIMEOUT_S=1)
    pool = open_pool(settings, "tests")
    redis_breaker, pg_breaker = dr.redis_breaker(settings), dr.pg_breaker(settings)
    service = dr.NotificationService(dr.redis_client(settings), redis_breaker, lambda: pg_guarded(pg_breaker, pool),
                                     settings.notify_buffer_max)
    yield service, pool, pg_breaker, dr.pg_check(pool)
    pool.close()


def test_redis_down_goes_to_postgresql_both_down_to_memory_then_flushed(own_stack, own_pg, own_redis):
    service, pool, pg_breaker, pg_check = own_stack
    own_redis.kill()
    assert notice(service, 1) == "fallback"
    assert [r["idempotency_key"] for r in fallback_rows(pool)] == ["test:1"]
    own_pg.kill()
    assert [notice(service, n) for n in range(2, 9)] == ["buffer"] * 7  # the caller never sees an error
    assert service.buffered == 5 and service.dropped == 2  # the oldest two dropped, counted
    own_pg.start()
    reopen(pg_breaker, pg_check)
    flushed = []  # the processes flush every second; the first try may still meet the pool reconnecting
    wait_until(lambda: flushed.append(service.flush()) or service.buffered == 0, 15, "the buffer to drain")
    assert sum(flushed) == 5  # PostgreSQL back first: the buffer drains into the fallback table
    assert [r["idempotency_key"] for r in fallback_rows(pool)] == ["test:1"] + [f"test:{n}" for n in range(4, 9)]
    assert service.buffered == 0


def test_fallback_notices_migrate_to_the_stream_once(stack):
    service, server, pool, consumer = stack["service"], stack["redis"], stack["pool"], stack["consumer"]
    server.kill()
    for n in range(4):
        assert notice(service, n) == "fallback"
    with pool.connection() as conn:  # the fallback processor is sending #0 right now (leased)
        notifications.claim(conn, 1, lease_s=60, table=notifications.FALLBACK)
        conn.commit()
    server.start()
    reopen(stack["breakers"][0], stack["client"].ping)
    assert dr.migrate_notifications(service, stack["transaction"]) == 3
    assert [r["status"] for r in fallback_rows(pool)] == ["PENDING", "MIGRATED", "MIGRATED", "MIGRATED"]
    assert dr.migrate_notifications(service, stack["transaction"]) == 0
    consumer.run()
    assert sorted(stack["telegram"].sent) == [(77, 1), (77, 2), (77, 3)]


def test_an_entry_a_dead_consumer_held_is_taken_over_and_a_sent_key_is_not_resent(stack):
    service, client, telegram = stack["service"], stack["client"], stack["telegram"]
    for n in range(3):
        notice(service, n)
    dead = dr.StreamConsumer(client, stack["breakers"][0], "dead", telegram, stack["sent_keys"], lease_s=0.2)
    dead._ensure_group()
    taken = dead._read_new(10)  # read, then the process died before sending or acknowledging
    assert len(taken) == 3
    stack["sent_keys"].remember("test:1")  # one of them had gone out through another path
    assert stack["consumer"].run() == 0  # not idle long enough yet
    wait_until(lambda: stack["consumer"].run() > 0, 5, "the stale entries to be taken over")
    assert sorted(telegram.sent) == [(77, 0), (77, 2)]
    assert stack["consumer"].pending() == 0


def test_entries_a_frozen_redis_handed_out_after_the_read_timed_out_are_sent_without_waiting_the_lease(stack):
    service, client, telegram, server = stack["service"], stack["client"], stack["telegram"], stack["redis"]
    consumer = dr.StreamConsumer(client, stack["breakers"][0], "c2", telegram, stack["sent_keys"], lease_s=60)
    assert consumer.run() == 0  # the group exists; nothing to read yet
    for n in range(3):
        notice(service, n)
    consumer._stale = lambda limit: []  # so that the read is the command the freeze catches
    server.freeze()
    try:
        with pytest.raises(dr.REDIS_ERRORS):
            consumer.run()  # the XREADGROUP waits in the socket; its answer times out
    finally:
        server.thaw()  # Redis now runs it: the three entries are held in c2's name
        del consumer._stale
    reopen(stack["breakers"][0], client.ping)
    wait_until(lambda: client.xpending(dr.STREAM, dr.GROUP)["pending"] == 3, 5, "the late read to be run")
    assert consumer.run() == 3 and sorted(telegram.sent) == [(77, 0), (77, 1), (77, 2)]
    assert consumer.pending() == 0 and consumer.run() == 0  # each once


def test_held_back_notices_go_to_the_end_and_permanent_failures_are_dropped(stack):
    service, telegram, consumer = stack["service"], stack["telegram"], stack["consumer"]
    answers = {0: Outcome(LATER, "pace", retry_in_s=1), 1: Outcome(FAILED, "403 blocked", permanent=True)}
    telegram.answer = lambda chat_id, payload: answers.pop(payload["values"]["n"], Outcome(SENT))
    for n in range(3):
        notice(service, n)
    consumer.run()
    assert telegram.sent == [(77, 2)]
    consumer.run()
    assert telegram.sent == [(77, 2), (77, 0)]  # held back once, then sent; #1 never
    assert consumer.pending() == 0


def test_a_notice_in_both_queues_is_sent_once(stack):
    """Redis took a notice just before it died, so it went to the fallback table as well."""
    service, pool, consumer = stack["service"], stack["pool"], stack["consumer"]
    service.add_to_stream([{"chat_id": 77, "payload": notifications.payload_of("cancelled", {"n": 5}),
                            "key": "test:5"}])
    with pool.connection() as conn:
        notifications.enqueue_payload(conn, notifications.FALLBACK, 77,
                                      notifications.payload_of("cancelled", {"n": 5}), "test:5")
        conn.execute("UPDATE notification_queue_fallback SET status = 'SENT' WHERE idempotency_key = 'test:5'")
        conn.commit()
    assert consumer.run() == 0  # the fallback processor delivered it already
    assert stack["telegram"].sent == [] and consumer.pending() == 0
    assert json.loads(json.dumps(fallback_rows(pool)[0]["payload"]))["values"] == {"n": 5}


def test_status_shows_notices_a_process_keeps_in_memory_and_drops():
    report = {"dependencies": {"postgresql": {"up": False, "error": "OperationalError"},
                               "redis": {"up": False, "error": "ConnectionError"}},
              "processes": {"bot": {"alive": True, "age_s": 1.0, "breakers": {}, "notices_buffered": 12,
                                    "notices_dropped": 3},
                            "worker": {"alive": True, "age_s": 1.0, "breakers": {}}},
              "maintenance": "off", "chain": {}, "problems": [], "exit_code": dr.CRITICAL}
    lines = dr.render_status(report)
    bot_line = next(line for line in lines if line.startswith("bot:"))
    assert "12 notice(s) kept in memory" in bot_line and "3 notice(s) dropped since start" in bot_line
    assert "notice" not in next(line for line in lines if line.startswith("worker:"))
