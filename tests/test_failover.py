"""Past one machine: a PostgreSQL primary with a streaming standby, promoted under load."""
import threading
import time

import psycopg
import pytest

from core.errors import DatabaseOperationalError
from db import migrate
from db.pool import connect, is_outage, open_pool, transaction, translate_errors
from devstack import chaintools
from devstack.postgres import PostgresServer, PostgresStandby
from devstack.procs import wait_until
from tests.botharness import BotProcess, Db
from tests.chainharness import HOT_WALLET, USER_KEYS, WorkerProcess
from tests.conftest import make_settings
from tests.test_bot_flows import Chat

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
            depositors[1].press("Confirm", edited=True, contains="waiting for approval")  # recorded on the new primary
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
