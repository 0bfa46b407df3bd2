"""Past one machine: a PostgreSQL standby promoted under load; an active worker and a hot standby."""
import collections
import json
import re
import threading
import time
from pathlib import Path

import psycopg
import pytest
import redis as redis_lib

import dr

from core.errors import DatabaseOperationalError
from db import migrate
from db.pool import connect, is_outage, open_pool, transaction, translate_errors
from devstack import chaintools
from devstack.postgres import PostgresServer, PostgresStandby
from devstack.procs import wait_until
from devstack.rpctap import RpcTap
from devstack.redis import RedisSentinel, RedisServer
from tests.botharness import ADMIN_ID, BotProcess, Db
from tests.chainharness import (HOT_WALLET, HOT_WALLET_KEY, USER_KEYS, WorkerProcess, accept_hot_wallet_history,
                                user_with_wallet)
from tests.conftest import make_settings
from tests.test_bot_flows import Chat, hash_id, registered
from tests.test_chain_outages import approved_withdrawal, assert_chain_matches_confirmed, statuses
from tests.test_operations import dr as run_dr

UNIT = 10**6
BREAKER_RESET_S = 2


@pytest.fixture
def replicated():
    """A primary with the schema and a standby streaming from it; the URL names both (primary first)."""
    primary = PostgresServer().start()
    standby = None
    try:
        primary.admin("CREATE DATABASE bot")
        with psycopg.connect(primary.url("bot"), autocommit=True) as conn:
            migrate.migrate(conn, migrate.discover())
        standby = PostgresStandby(primary).start()
        url = (f"postgresql://postgres@127.0.0.1:{primary.port},127.0.0.1:{standby.port}/bot"
               "?target_session_attrs=read-write")
        yield primary, standby, url
    finally:
        for server in (standby, primary):
            if server is not None:
                server.close()


class Load:
    """Users asking for their balance every 0.2 s in a thread; each answer's latency is kept."""

    def __init__(self, chats: list[Chat]):
        self.chats, self.latencies, self.unanswered = chats, [], 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.2):
            for chat in self.chats:
                began = time.monotonic()
                try:
                    chat.send("/balance", timeout=5)
                    self.latencies.append(time.monotonic() - began)
                except AssertionError:
                    self.unanswered += 1

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=30)


def deposit(w3, token: str, key: str, units: int) -> None:
    chaintools.transfer(w3, token, key, HOT_WALLET, units)
    chaintools.mine(w3, 1)


def test_promoting_the_standby_under_load_keeps_every_money_operation(api, replicated, anvil, w3, token6,
                                                                        redis_server):
    primary, standby, url = replicated
    common = {"BREAKER_RESET_S": BREAKER_RESET_S, "BREAKER_FAILURES": 2, "DB_POOL_TIMEOUT_S": 2,
              "DB_CONNECT_TIMEOUT_S": 2}
    worker = WorkerProcess(api, url, anvil.url, token6.address, SCAN_START_BLOCK=w3.eth.block_number + 1,
                           **common).start()
    bot = BotProcess(api, url, redis_server.url(12), RPC_URL=anvil.url, TOKEN_ADDRESS=token6.address,
                     DEPOSIT_ADDRESS=HOT_WALLET, **common).start()
    db = Db(url)
    try:
        depositors = [Chat(api) for _ in range(2)]
        for chat, key in zip(depositors, USER_KEYS[6:8]):
            chat.send("/start", contains="Welcome")
            chat.send(f"/wallet {chaintools.address_of(key)} {chaintools.sign_wallet_proof(key, chat.id)}",
                      contains="Wallet bound")
            chaintools.mint(w3, token6.address, chaintools.DEPLOYER_KEY, chaintools.address_of(key), 1000 * UNIT)
        bystanders = [Chat(api) for _ in range(2)]
        for chat in bystanders:
            chat.send("/start", contains="Welcome")
        with Load(bystanders) as load:
            for chat, key in zip(depositors, USER_KEYS[6:8]):  # before the switch
                deposit(w3, token6.address, key, 40 * UNIT)
            wait_until(lambda: all(db.balance(c.id) == 40 * UNIT for c in depositors), 30, "deposits credited")
            for chat in depositors:  # their notices arrive now, not as if they answered a command below
                api.wait_for(chat.id, contains="credited", timeout=20)
            depositors[0].send("/withdraw 5", contains="Confirm?")
            depositors[0].press("Confirm", edited=True, contains="waiting for approval")

            primary.stop()
            deposit(w3, token6.address, USER_KEYS[6], 7 * UNIT)  # mined while no server takes writes
            standby.promote()
            promoted = time.monotonic()
            reply = ""
            while "Confirm?" not in reply:  # a write through the bot: the withdrawal dialog needs PostgreSQL
                reply = depositors[1].send("/withdraw 3", timeout=5)["text"]
                assert time.monotonic() - promoted < BREAKER_RESET_S + 5, f"no write yet; last reply {reply!r}"
            depositors[1].press("Confirm", edited=True, contains="waiting for approval", timeout=20)  # on the new primary
            switched_s = time.monotonic() - promoted
            assert switched_s < BREAKER_RESET_S + 5

            deposit(w3, token6.address, USER_KEYS[7], 9 * UNIT)  # after the switch
            wait_until(lambda: db.balance(depositors[0].id) == 42 * UNIT and db.balance(depositors[1].id) == 46 * UNIT,
                       30, "every deposit credited on the new primary")
        print(f"writes on the promoted standby {switched_s:.1f} s after pg_ctl promote")
        assert load.unanswered == 0 and max(load.latencies) < 5  # users answered during the switch
        keys = db.rows("SELECT idempotency_key FROM ledger_entries WHERE user_id = ANY(%s)",
                       ([c.id for c in depositors],))
        credits = [row["idempotency_key"] for row in keys if row["idempotency_key"].startswith("deposit:")]
        assert len(credits) == len(set(credits)) == 4  # each transfer once: none lost, none doubled
        holds = [row["idempotency_key"] for row in keys if row["idempotency_key"].endswith(":hold")]
        assert len(holds) == 2
        assert db.value("SELECT count(*) FROM withdrawals WHERE user_id = ANY(%s)", ([c.id for c in depositors],)) == 2
        assert "Traceback" not in worker.log() and "Traceback" not in bot.log()
    finally:
        bot.stop()
        worker.stop()


def test_a_read_only_server_counts_as_an_outage_and_its_connections_are_not_handed_out(replicated):
    primary, standby, _ = replicated
    settings = make_settings(DATABASE_URL=standby.url("bot"), DB_POOL_TIMEOUT_S=1)
    with connect(settings, "tests") as conn, pytest.raises(DatabaseOperationalError) as refused:
        with translate_errors():  # 25006 read_only_sql_transaction, as every transaction() translates it
            conn.execute("INSERT INTO system_settings (key, value) VALUES ('x', '1')")
    assert is_outage(refused.value) and "ReadOnlySqlTransaction" in str(refused.value)
    pool = open_pool(settings, "tests")
    try:
        with pytest.raises(DatabaseOperationalError) as timed_out:  # the check drops every standby connection
            with transaction(pool) as conn:
                conn.execute("SELECT 1")
        assert is_outage(timed_out.value)
    finally:
        pool.close()
    pool = open_pool(make_settings(DATABASE_URL=primary.url("bot")), "tests")
    try:
        with transaction(pool) as conn:
            assert conn.execute("SELECT 1 AS one").fetchone()["one"] == 1  # the primary's are handed out
    finally:
        pool.close()


# ---------------------------------------------------------------- one active worker, one hot standby

def lease_role(worker: WorkerProcess) -> str | None:
    """'active' or 'standby' from the worker's own status file."""
    try:
        report = json.loads((Path(worker.env["STATE_DIR"]) / "worker.json").read_text())
    except (OSError, ValueError):
        return None
    return report.get("lease", {}).get("role")


@pytest.mark.parametrize("failure", ["killed", "frozen"])
def test_the_standby_takes_over_and_every_withdrawal_is_paid_once(api, db_url, anvil, w3, token6, failure):
    db = Db(db_url)
    user_with_wallet(db, 7801, USER_KEYS[0])
    chaintools.mint(w3, token6.address, chaintools.DEPLOYER_KEY, HOT_WALLET, 10**12)
    first_block = w3.eth.block_number
    accept_hot_wallet_history(db_url, anvil.url)
    path = RpcTap(target_port=anvil.port).start()  # the active worker's way to the node
    env = {"SCAN_START_BLOCK": first_block + 1, "CONFIRMATIONS": 1}
    active = WorkerProcess(api, db_url, path.url, token6.address, **env).start()
    standby = None
    try:
        wait_until(lambda: lease_role(active) == "active", 10, "the first worker to take the lease")
        standby = WorkerProcess(api, db_url, anvil.url, token6.address, **env).start()
        wait_until(lambda: lease_role(standby) == "standby", 10, "the second worker to stand by")
        targets = [chaintools.address_of(key) for key in USER_KEYS[1:5]]
        hit = path.arm("eth_sendRawTransaction", active.kill if failure == "killed" else active.freeze_process)
        ids = [approved_withdrawal(db, 7801, target, (n + 1) * 10**6) for n, target in enumerate(targets)]
        wait_until(hit.is_set, 20, "the active worker to broadcast")  # and die (or freeze) right there
        failed_at = time.monotonic()
        wait_until(lambda: lease_role(standby) == "active", 15, "the standby to take over")
        takeover_s = time.monotonic() - failed_at
        wait_until(lambda: statuses(db)["CONFIRMED"] == len(ids), 40, "every withdrawal confirmed")
        if failure == "frozen":
            active.thaw_process()  # it wakes up believing it is active: the lease says otherwise
            wait_until(lambda: "worker lease: held by another worker" in active.log()
                       or "stepping down" in active.log(), 15, "the thawed worker to stand by")
            wait_until(lambda: lease_role(active) == "standby", 10,  # its own report, written after the thaw
                       "the thawed worker to report itself standing by")
        print(f"{failure}: the standby took over {takeover_s:.1f} s after the failure")
        assert takeover_s < 10
        events = assert_chain_matches_confirmed(db, w3, token6.address, first_block)
        assert len(events) == len(ids)  # exactly one transfer per withdrawal
        nonces = sorted(row["nonce"] for row in db.rows("SELECT nonce FROM withdrawals WHERE id = ANY(%s)", (ids,)))
        assert nonces == list(range(nonces[0], nonces[0] + len(ids)))  # consecutive
        assert w3.eth.get_transaction_count(HOT_WALLET) == nonces[-1] + 1
        def told() -> collections.Counter:
            return collections.Counter(hash_id(m["text"]) for m in api.messages(7801) if "is confirmed" in m["text"])
        wait_until(lambda: set(told()) == set(ids), 20, "every user to be told")
        assert sum(told().values()) - len(ids) <= 1  # at most the one in flight at the failure, twice
        for process in (active, standby):
            assert "Traceback" not in process.log(), process.log()[-3000:]
    finally:
        for process in (standby, active):
            if process is not None:
                process.thaw_process()
                process.stop()
        path.stop()


def test_dr_recover_refuses_while_a_worker_holds_the_lease_and_runs_once_it_stopped(api, db_url, anvil, token6):
    env = {"RPC_URL": anvil.url, "TOKEN_ADDRESS": token6.address, "HOT_WALLET_PRIVATE_KEY": HOT_WALLET_KEY,
           "BOT_TOKEN": "123456:TEST-token_value", "TELEGRAM_API_URL": api.url}
    worker = WorkerProcess(api, db_url, anvil.url, token6.address).start()
    try:
        wait_until(lambda: lease_role(worker) == "active", 10, "the worker to take the lease")
        shown = run_dr(db_url, "status", STATE_DIR=worker.env["STATE_DIR"], **env).stdout
        assert "worker: alive (active)" in shown and "worker lease: held by " in shown, shown
        refused = run_dr(db_url, "recover", **env)
        assert refused.returncode == 1 and "holds the worker lease" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
    finally:
        worker.stop()  # a clean stop lets the lease go
    began = time.monotonic()
    done = run_dr(db_url, "recover", **env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert time.monotonic() - began < 15  # no waiting out the lease
    with psycopg.connect(db_url) as conn:  # and recover let it go too
        assert conn.execute("SELECT expires_at <= now() FROM worker_lease").fetchone()[0]


# ---------------------------------------------------------------- Redis behind Sentinel

@pytest.fixture
def sentinels():
    """A Redis master, one replica streaming from it, three Sentinels watching them."""
    started = []
    try:
        master = RedisServer().start()
        started.append(master)
        replica = RedisServer(replica_of=master).start()
        started.append(replica)
        wait_until(lambda: replica.role() == "slave" and replica_in_sync(replica), 10, "the replica to sync")
        watchers = []
        for _ in range(3):
            watchers.append(RedisSentinel(master).start())
            started.append(watchers[-1])
        wait_until(lambda: all(w.master_port() == master.port for w in watchers), 10, "the Sentinels")
        yield master, replica, watchers
    finally:
        for service in reversed(started):
            service.close()


def replica_in_sync(replica: RedisServer) -> bool:
    with redis_lib.Redis.from_url(replica.url(), socket_timeout=1) as client:
        return client.info("replication").get("master_link_status") == "up"


def test_a_sentinel_failover_mid_dialog_and_mid_burst_loses_and_doubles_nothing(api, db_url, anvil, token6,
                                                                                 sentinels):
    master, replica, watchers = sentinels
    redis_env = {"REDIS_SENTINELS": ",".join(w.address for w in watchers),
                 "REDIS_SENTINEL_SERVICE": RedisSentinel.SERVICE, "REDIS_URL": "redis://127.0.0.1:1/0",
                 "REDIS_TIMEOUT_S": 0.5, "BREAKER_RESET_S": 1}
    db = Db(db_url)
    db.rows("INSERT INTO users (id, language) SELECT 11000 + n, 'en' FROM generate_series(1, 20) AS n")
    worker = WorkerProcess(api, db_url, anvil.url, token6.address, TELEGRAM_MAX_MSG_PER_S=30, **redis_env).start()
    bot = BotProcess(api, db_url, "redis://127.0.0.1:1/0", RPC_URL=anvil.url, TOKEN_ADDRESS=token6.address,
                     DEPOSIT_ADDRESS=HOT_WALLET, **redis_env).start()
    settings = make_settings(DATABASE_URL=db_url, **redis_env)
    pool, client = open_pool(settings, "tests"), dr.redis_client(settings)
    notifier = dr.NotificationService(client, dr.redis_breaker(settings), lambda: transaction(pool), 10_000)
    try:
        chat = registered(api, db, balance=50 * UNIT)
        chat.send("/withdraw 5", contains="Confirm?")  # half-way: the dialog waits for Confirm
        for n in range(200):
            if n == 80:
                client.execute_command("WAIT", 1, 2000)  # what the master acknowledged has reached the replica
                master.kill()  # mid-burst; Sentinel promotes the replica
                killed = time.monotonic()
                assert "waiting for approval" in chat.press("Confirm", edited=True)["text"]
            notifier.notify(11001 + n % 20, "admin_dependency_back", {"name": f"notice-{n}", "process": "test"},
                            f"sentinel-burst:{n}")
        wait_until(lambda: all(w.master_port() == replica.port for w in watchers), 20, "Sentinel's promotion")
        promoted_s = time.monotonic() - killed
        wait_until(lambda: bot.breaker("redis") == "CLOSED" and worker.breaker("redis") == "CLOSED", 20,
                   "bot and worker to follow the new master")
        print(f"Sentinel promoted the replica {promoted_s:.1f} s after the kill; bot and worker on it "
              f"{time.monotonic() - killed:.1f} s after")
        chat.send("/withdraw 3", contains="Confirm?")  # a dialog on the promoted replica
        assert "waiting for approval" in chat.press("Confirm", edited=True)["text"]
        with redis_lib.Redis.from_url(replica.url()) as promoted:
            assert promoted.keys(f"fsm:*:{chat.id}:*"), "the bot writes dialogs to the new master"

        def burst() -> collections.Counter:
            return collections.Counter(int(re.match(r"notice-(\d+) answers", m["text"]).group(1))
                                       for c in range(11001, 11021) for m in api.messages(c)
                                       if m["text"].startswith("notice-"))
        wait_until(lambda: len(burst()) == 200, 60, "every notice of the burst delivered")
        assert max(burst().values()) == 1  # none twice
        requests = db.rows("SELECT id FROM withdrawals WHERE user_id = %s ORDER BY id", (chat.id,))
        assert len(requests) == 2 and db.balance(chat.id) == 42 * UNIT  # each dialog made one withdrawal
        def admin_notices(withdrawal_id: int) -> list[dict]:
            return [m for m in api.messages(ADMIN_ID) if m["text"].startswith(f"#{withdrawal_id} user {chat.id}:")]
        wait_until(lambda: all(admin_notices(row["id"]) for row in requests), 20, "the admins' money notices")
        assert [len(admin_notices(row["id"])) for row in requests] == [1, 1]  # from the outbox: exactly once
        assert "Traceback" not in worker.log() and "Traceback" not in bot.log()
    finally:
        bot.stop()
        worker.stop()
        pool.close()
