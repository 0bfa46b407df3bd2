"""worker.py delivering a burst of notices while Redis is killed: each one reaches Telegram exactly once."""
import collections
import json
import re
import threading
import time

import pytest

import dr
from db.pool import open_pool, transaction
from devstack.procs import wait_until
from tests.botharness import Db
from tests.chainharness import WorkerProcess
from tests.conftest import make_settings
from tests.test_operations import dr as run_dr

CHATS, NOTICES = 50, 1000
SAMPLE_EVERY_S = 2


@pytest.fixture
def notifier(db_url, own_redis):
    """A NotificationService of the test's own on the worker's Redis and database (as the bot has one)."""
    settings = make_settings(DATABASE_URL=db_url, REDIS_URL=own_redis.url(), REDIS_TIMEOUT_S=0.5,
                             BREAKER_FAILURES=1, BREAKER_RESET_S=0.2)
    pool, stop = open_pool(settings, "tests"), threading.Event()
    breaker = dr.redis_breaker(settings, background_probe=True)  # probed in the background, as in the bot
    dr.start_probers(stop, (breaker, dr.redis_check(dr.redis_client(settings))))
    yield dr.NotificationService(dr.redis_client(settings), breaker, lambda: transaction(pool), 10_000), breaker
    stop.set()
    pool.close()


def delivered(api) -> collections.Counter:
    counts = collections.Counter()
    for chat in range(1, CHATS + 1):
        for message in api.messages(10_000 + chat):
            found = re.match(r"notice-(\d+) answers again", message["text"])
            if found:
                counts[int(found.group(1))] += 1
    return counts


class StatusSampler:
    """`dr.py status --json` run over and over in a thread: what it said the queues held, in order."""

    def __init__(self, db_url: str, redis_url: str):
        self.env = {"REDIS_URL": redis_url, "REDIS_TIMEOUT_S": 0.5}
        self.db_url, self.samples, self._stop = db_url, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            report = json.loads(run_dr(self.db_url, "status", "--json", **self.env).stdout)
            self.samples.append((report["database"]["queues"]["fallback"], report.get("stream_waiting")))
            self._stop.wait(SAMPLE_EVERY_S)  # each run imports the whole product: leave the CPU to the burst

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)


@pytest.mark.parametrize("outage", ["killed", "frozen"])
def test_a_burst_of_notices_survives_a_redis_outage_and_each_arrives_once(api, db_url, own_redis, anvil, token6,
                                                                          notifier, outage):
    """Redis killed (or frozen) at notice 300 and back at 700: each of 1,000 notices reaches its chat
    once, no notify() waits more than 1 s, and `dr.py status` shows the queues drain."""
    service, breaker = notifier
    Db(db_url).rows("INSERT INTO users (id, language) SELECT 10000 + n, 'en' FROM generate_series(1, %s) AS n",
                    (CHATS,))
    worker = WorkerProcess(api, db_url, anvil.url, token6.address, REDIS_URL=own_redis.url(), REDIS_TIMEOUT_S=0.5,
                           TELEGRAM_MAX_MSG_PER_S=30).start()
    sampler = StatusSampler(db_url, own_redis.url())
    try:
        where, waits = collections.Counter(), []
        for n in range(NOTICES):
            if n == 300:
                own_redis.kill() if outage == "killed" else own_redis.freeze()  # the rest goes to PostgreSQL
            if n == 700:
                wait_until(lambda: worker.breaker("redis") not in (None, "CLOSED"), 20, "the worker to see Redis down")
                own_redis.start() if outage == "killed" else own_redis.thaw()
                wait_until(breaker.available, 10, "the Redis breaker to close")
                sampler.start()  # recovery moves what waits in PostgreSQL to the stream
            chat = 10_001 + n % CHATS
            began = time.monotonic()
            where[service.notify(chat, "admin_dependency_back", {"name": f"notice-{n}", "process": "test"},
                                 f"burst:{n}")] += 1
            waits.append(time.monotonic() - began)
        assert where["stream"] >= 600 and where["fallback"] >= 300, where
        assert max(waits) < 1.0 and sum(wait > 0.4 for wait in waits) <= 1, [(n, w) for n, w in enumerate(waits) if w > 0.1]
        wait_until(lambda: len(delivered(api)) == NOTICES, 120, "every notice to be delivered")
        wait_until(lambda: "recovery:" in worker.log(), 10, "the worker's recovery after Redis returned")
        wait_until(lambda: sampler.samples and sampler.samples[-1] == (0, 0), 30, "the status to show empty queues")
        sampler.stop()
        assert max(sum(sample) for sample in sampler.samples) > 0, sampler.samples  # it saw them full first
        assert "recovery failed" not in worker.log() and "Traceback" not in worker.log()
        counts = delivered(api)
        assert set(counts) == set(range(NOTICES))
        assert [n for n, times in counts.items() if times != 1] == []  # exactly once each
        assert Db(db_url).value("SELECT count(*) FROM notification_queue_fallback WHERE status = 'PENDING'") == 0
        assert api.rejections == []
    finally:
        sampler.stop()
        own_redis.thaw()
        worker.stop()
