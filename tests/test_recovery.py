"""`python dr.py recover` moving what waited in PostgreSQL into Redis: twice at once, killed half-way."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

import dr
from devstack.procs import wait_until
from tests.botharness import Db
from tests.chainharness import HOT_WALLET_KEY

ROOT = Path(__file__).resolve().parent.parent
NOTICES = 30_000


def recover(db_url, redis_url, anvil, token) -> subprocess.Popen:
    env = {**os.environ, "ENV_FILE": "/nonexistent/.env", "DATABASE_URL": db_url, "REDIS_URL": redis_url,
           "RPC_URL": anvil.url, "TOKEN_ADDRESS": token.address, "HOT_WALLET_PRIVATE_KEY": HOT_WALLET_KEY}
    return subprocess.Popen([sys.executable, "dr.py", "recover"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture
def waiting(db_url):
    """NOTICES notices and 500 dialog states written while Redis was down."""
    db = Db(db_url)
    db.rows("""INSERT INTO notification_queue_fallback (chat_id, payload, idempotency_key)
               SELECT 1000 + n %% 50, '{"text": "cancelled", "values": {}}', 'outage:' || n
               FROM generate_series(1, %s) AS n""", (NOTICES,))
    db.rows("""INSERT INTO user_fsm_states (chat_id, user_id, state, data, version)
               SELECT n, n, 'withdraw_confirm', '{}', 1 FROM generate_series(1, 500) AS n""")
    return db


def stream_keys(client) -> list[str]:
    return [fields[b"key"].decode() for _, fields in client.xrange(dr.STREAM)]


def migrated(db) -> int:
    return db.value("SELECT count(*) FROM notification_queue_fallback WHERE status = 'MIGRATED'")


def test_two_recoveries_at_once_move_everything_once(waiting, db_url, own_redis, anvil, token6):
    runs = [recover(db_url, own_redis.url(), anvil, token6) for _ in range(2)]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert migrated(waiting) == NOTICES
    keys = stream_keys(redis.Redis.from_url(own_redis.url()))
    assert len(keys) == NOTICES and len(set(keys)) == NOTICES  # the advisory lock: never moved twice
    assert waiting.value("SELECT count(*) FROM user_fsm_states WHERE migrated_at IS NULL") == 0
    said = " ".join(out for out, _ in outputs)
    assert f"{NOTICES} notice(s) and 500 dialog state(s) moved to Redis" in said


def test_a_recovery_killed_half_way_is_finished_by_the_next_one(waiting, db_url, own_redis, anvil, token6):
    first = recover(db_url, own_redis.url(), anvil, token6)
    try:
        wait_until(lambda: migrated(waiting) > 0, 60, "the first batches to move", interval_s=0.005)
        os.kill(first.pid, signal.SIGKILL)
    finally:
        first.communicate(timeout=30)
    assert 0 < migrated(waiting) < NOTICES, "killed too late to be half-way"
    again = recover(db_url, own_redis.url(), anvil, token6)
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, out + err
    assert migrated(waiting) == NOTICES
    keys = stream_keys(redis.Redis.from_url(own_redis.url()))
    assert set(keys) == {f"outage:{n}" for n in range(1, NOTICES + 1)}
    assert len(keys) - NOTICES <= 1000  # at most the batch that was in flight twice; delivery sends a key once
