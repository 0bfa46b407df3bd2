"""Notification delivery: 600 money-event notices to 600 chats, queued in notification_outbox and sent by the
real worker.py against the stand-in enforcing Telegram's limits (30 msg/s overall, 1 msg/s per chat)."""
import time
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from bench.report import Row, progress
from bench.stack import Stack, add_users, database, deploy_token, program_env
from db import notifications
from devstack import procs

NOTICES = 600
RATE_PER_S = 30
FIRST_CHAT = 2_000_001
DEADLINE_S = 180


def enqueue_all(url: str, chats: list[int]) -> float:
    """Queue one deposit notice per chat in one transaction, as the scanner does; the commit's time."""
    with psycopg.connect(url, row_factory=dict_row) as conn:
        for n, chat in enumerate(chats, 1):
            notifications.enqueue(conn, chat, "notify_deposit_credited",
                                  {"id": n, "amount": "25", "balance": "125", "symbol": "USDT"},
                                  f"bench:deposit-credited:{chat}")
        conn.commit()
        return time.monotonic()


def sent_to(api, chats: set[int]) -> int:
    """How many messages the stand-in accepted for these chats."""
    return sum(1 for params in api.calls("sendMessage") if params.get("chat_id") in chats)


def wait_delivered(api, chats: set[int], worker) -> float:
    """Wait until every chat has its message; the time the last one was seen."""
    deadline = time.monotonic() + DEADLINE_S
    while sent_to(api, chats) < len(chats):
        if time.monotonic() > deadline or worker.process.poll() is not None:
            raise RuntimeError(f"{sent_to(api, chats)} of {len(chats)} delivered; worker log:\n{worker.log()[-2000:]}")
        time.sleep(0.02)
    return time.monotonic()


def one_round(stack: Stack, api, env: dict, url: str, chats: list[int]) -> tuple[float, int]:
    """worker.py started idle, the notices queued at once; seconds until the last is sent, and the 429s."""
    status_file = Path(env["STATE_DIR"]) / "worker.json"
    status_file.unlink(missing_ok=True)
    worker = stack.program("worker.py", env, lambda program: "worker started" in program.log())
    try:
        procs.wait_until(lambda: worker.process.poll() is not None or status_file.exists(), 30,
                         "the worker's first status report")
        api.enforce_limits(True)
        refused_before = sum(1 for failure in api.failures if failure[2] == 429)
        progress(f"delivery: {NOTICES} notices queued, worker.py sending "
                 f"(WORKER_INTERVAL_S {env.get('WORKER_INTERVAL_S', 'default')})")
        started = enqueue_all(url, chats)
        elapsed = wait_delivered(api, set(chats), worker) - started
        return elapsed, sum(1 for failure in api.failures if failure[2] == 429) - refused_before
    finally:
        worker.stop()
        (stack.dir / "worker.log").unlink(missing_ok=True)


def row(interval: str, elapsed: float, too_many: int) -> Row:
    """Elapsed against the theoretical minimum (NOTICES / RATE_PER_S), and the 429s."""
    minimum = NOTICES / RATE_PER_S
    ratio = elapsed / minimum
    measure = f"{NOTICES} outbox notices/{NOTICES} chats, {RATE_PER_S} msg/s, WORKER_INTERVAL_S {interval}"
    return Row("delivery", measure,
               f"{elapsed:.1f} s, {too_many} x 429", f"minimum {minimum:.0f} s", ratio, "<= 1.05, no 429",
               ratio <= 1.05 and too_many == 0)


def run() -> list[Row]:
    """Two rounds on one stack: the default WORKER_INTERVAL_S (2 s), then the tests' 0.2 s."""
    with Stack() as stack:
        pg, cache, node, api = stack.postgres(), stack.redis(), stack.anvil(), stack.standin()
        url = database(pg)
        _, token = deploy_token(node)
        env = program_env(api, url, cache.url(), node.url, token, stack.dir / "state",
                          TELEGRAM_MAX_MSG_PER_S=RATE_PER_S)
        rows = []
        for number, interval in enumerate((None, "0.2")):
            chats = add_users(url, FIRST_CHAT + number * NOTICES, NOTICES)
            round_env = env if interval is None else {**env, "WORKER_INTERVAL_S": interval}
            rows.append(row(interval or "2 (default)", *one_round(stack, api, round_env, url, chats)))
    return rows
