"""worker.py delivering a burst of notices while Redis is killed: each one reaches Telegram exactly once."""
import collections
import re

import pytest

import dr
from db.pool import open_pool, transaction
from devstack.procs import wait_until
from tests.botharness import Db
from tests.chainharness import WorkerProcess
from tests.conftest import make_settings

CHATS, NOTICES = 50, 1000


@pytest.fixture
def notifier(db_url, own_redis):
    """A NotificationService of the test's own on the worker's Redis and database (as the bot has one)."""
    settings = make_settings(DATABASE_URL=db_url, REDIS_URL=own_redis.url(), REDIS_TIMEOUT_S=0.5,
                             BREAKER_FAILURES=1, BREAKER_RESET_S=0.2)
    pool = open_pool(settings, "tests")
    breaker = dr.redis_breaker(settings)
    service = dr.NotificationService(dr.redis_client(settings), breaker, lambda: transaction(pool), 10_000)
    yield service, breaker, dr.redis_client(settings)
    pool.close()


def delivered(api) -> collections.Counter:
    counts = collections.Counter()
    for chat in range(1, CHATS + 1):
        for message in api.messages(10_000 + chat):
            found = re.match(r"notice-(\d+) answers again", message["text"])
            if found:
                counts[int(found.group(1))] += 1
    return counts


def test_a_burst_of_notices_survives_redis_being_killed_and_each_arrives_once(api, db_url, own_redis, anvil,
                                                                               token6, notifier):
    service, breaker, client = notifier
    Db(db_url).rows("INSERT INTO users (id, language) SELECT 10000 + n, 'en' FROM generate_series(1, %s) AS n",
                    (CHATS,))
    worker = WorkerProcess(api, db_url, anvil.url, token6.address, REDIS_URL=own_redis.url(), REDIS_TIMEOUT_S=0.5,
                           TELEGRAM_MAX_MSG_PER_S=30).start()
    try:
        where = collections.Counter()
        for n in range(NOTICES):
            if n == 300:
                own_redis.kill()  # mid-burst: the rest goes to PostgreSQL
            if n == 700:
                own_redis.start()  # back: recovery moves what waits in PostgreSQL to the stream
                wait_until(lambda: breaker.probe(client.ping) is not False and breaker.available(), 10, "Redis")
            chat = 10_001 + n % CHATS
            where[service.notify(chat, "admin_dependency_back", {"name": f"notice-{n}", "process": "test"},
                                 f"burst:{n}")] += 1
        assert where["stream"] >= 600 and where["fallback"] >= 300, where
        wait_until(lambda: len(delivered(api)) == NOTICES, 120, "every notice to be delivered")
        wait_until(lambda: "recovery:" in worker.log(), 10, "the worker's recovery after Redis returned")
        assert "recovery failed" not in worker.log() and "Traceback" not in worker.log()
        counts = delivered(api)
        assert set(counts) == set(range(NOTICES))
        assert [n for n, times in counts.items() if times != 1] == []  # exactly once each
        assert Db(db_url).value("SELECT count(*) FROM notification_queue_fallback WHERE status = 'PENDING'") == 0
        assert api.rejections == []
    finally:
        worker.stop()
