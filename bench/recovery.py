"""Recovery: 100,000 fallback notices and 100,000 dialog states moved into Redis by the product, against a
raw pipelined write of the same records (redis-py, batches of 1,000, no PostgreSQL)."""
import json
import time

import psycopg
from psycopg.rows import dict_row

import dr
from bench.report import Row, progress
from bench.stack import Stack, database, settings_of, sql
from db import dialogs
from db.pool import open_pool, transaction

ROWS = 100_000
BATCH = 1_000
RAW_STREAM = "bench:raw-notifications"

FILL_FALLBACK = """
INSERT INTO notification_queue_fallback (chat_id, payload, idempotency_key)
SELECT 1000000 + g %% 5000,
       jsonb_build_object('text', 'notify_deposit_credited',
                          'values', jsonb_build_object('id', g, 'amount', '12.5', 'balance', '100', 'symbol', 'USDT')),
       'bench:notice:' || g
FROM generate_series(1, %s) AS g
"""
FILL_DIALOGS = """
INSERT INTO user_fsm_states (chat_id, user_id, state, data, version)
SELECT 1000000 + g, 1000000 + g, 'withdraw_amount', jsonb_build_object('address', '0x' || repeat('ab', 20)),
       1700000000000000 + g
FROM generate_series(1, %s) AS g
"""


def fill(url: str) -> None:
    """The rows an outage of Redis leaves behind, written with generate_series."""
    sql(url, FILL_FALLBACK, (ROWS,))
    sql(url, FILL_DIALOGS, (ROWS,))
    sql(url, "ANALYZE")


def same_records(url: str) -> tuple[list[dict], list[tuple[str, str]]]:
    """The records as the raw baseline writes them: stream entries, and (key, value) pairs."""
    notices = [{"chat_id": r["chat_id"], "payload": json.dumps(r["payload"]), "key": r["idempotency_key"]}
               for r in query(url, "SELECT chat_id, payload, idempotency_key FROM notification_queue_fallback")]
    states = [(f"bench:raw:{dr.redis_key(dialogs.key_of(r))}",
               json.dumps({"state": r["state"], "data": r["data"], "version": r["version"]}))
              for r in query(url, f"SELECT {dialogs.KEY_COLUMNS}, state, data, version FROM user_fsm_states")]
    return notices, states


def query(url: str, statement: str) -> list[dict]:
    """All rows of one query, as dicts."""
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute(statement).fetchall()


def raw_stream(client, notices: list[dict]) -> float:
    """Seconds to XADD every notice, pipelined in batches."""
    started = time.perf_counter()
    for start in range(0, len(notices), BATCH):
        pipe = client.pipeline(transaction=False)
        for entry in notices[start:start + BATCH]:
            pipe.xadd(RAW_STREAM, entry)
        pipe.execute()
    return time.perf_counter() - started


def raw_states(client, states: list[tuple[str, str]]) -> float:
    """Seconds to SET every dialog state (with the product's TTL), pipelined in batches."""
    started = time.perf_counter()
    for start in range(0, len(states), BATCH):
        pipe = client.pipeline(transaction=False)
        for key, value in states[start:start + BATCH]:
            pipe.set(key, value, ex=dr.DIALOG_TTL_S)
        pipe.execute()
    return time.perf_counter() - started


def timed(function, *args) -> tuple[float, int]:
    """Seconds `function` took, and what it returned (rows moved)."""
    started = time.perf_counter()
    moved = function(*args)
    return time.perf_counter() - started, moved


def product_parts(settings):
    """What bot.py and worker.py hand to recovery: the pool, breakers, dialog store, notification service."""
    pool = open_pool(settings, "bench-recovery")
    client = dr.redis_client(settings)
    redis_breaker, pg_breaker = dr.redis_breaker(settings), dr.pg_breaker(settings)

    def guarded_transaction():
        """A transaction through the PostgreSQL breaker."""
        return guarded(pg_breaker, pool)

    store = dr.DialogStore(client, redis_breaker, pool, pg_breaker)
    service = dr.NotificationService(client, redis_breaker, guarded_transaction, settings.notify_buffer_max)
    return pool, client, store, service, guarded_transaction


class guarded:
    """One transaction through the PostgreSQL breaker, as WorkerContext.transaction does."""

    def __init__(self, breaker, pool):
        self.breaker, self.pool = breaker, pool

    def __enter__(self):
        self._guard, self._transaction = self.breaker.guard(), transaction(self.pool)
        self._guard.__enter__()
        return self._transaction.__enter__()

    def __exit__(self, *exc_info):
        try:
            self._transaction.__exit__(*exc_info)
        finally:
            self._guard.__exit__(*exc_info)


def rows_of(label: str, moved: int, seconds: float, raw_seconds: float, rows: int = ROWS) -> Row:
    """Our rate against the raw rate for the same records."""
    ours, raw = moved / seconds, rows / raw_seconds
    return Row("recovery", f"{label}: {rows:,} rows", f"{ours:,.0f} rows/s", f"raw {raw:,.0f} rows/s",
               ours / raw, ">= 0.5", moved == rows and ours / raw >= 0.5)


def run() -> list[Row]:
    """The product's two recovery steps (what dr.recover_redis runs besides warmup), then the raw write."""
    with Stack() as stack:
        pg, cache = stack.postgres(), stack.redis()
        url = database(pg)
        progress(f"recovery: writing {ROWS:,} fallback notices and {ROWS:,} dialog states")
        fill(url)
        notices, states = same_records(url)
        settings = settings_of(DATABASE_URL=url, REDIS_URL=cache.url())
        pool, client, store, service, guarded_transaction = product_parts(settings)
        try:
            progress("recovery: dr.migrate_notifications, dr.migrate_dialogs, then the raw writes")
            notice_s, notices_moved = timed(dr.migrate_notifications, service, guarded_transaction)
            dialog_s, dialogs_moved = timed(dr.migrate_dialogs, store, guarded_transaction)
            raw_notice_s, raw_state_s = raw_stream(client, notices), raw_states(client, states)
        finally:
            pool.close()
    return [rows_of("dr.migrate_notifications, fallback -> stream", notices_moved, notice_s, raw_notice_s),
            rows_of("dr.migrate_dialogs, dialog states -> Redis", dialogs_moved, dialog_s, raw_state_s),
            rows_of("both", notices_moved + dialogs_moved, notice_s + dialog_s, raw_notice_s + raw_state_s,
                    2 * ROWS)]
