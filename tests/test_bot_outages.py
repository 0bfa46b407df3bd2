"""The bot through outages: PostgreSQL stopped mid-session, the Bot API failing, floods of updates."""
import os
import signal
import time

import psycopg
import pytest
import redis

from db import migrate
from devstack import chaintools
from devstack.procs import wait_until
from tests.botharness import ADMIN_ID, BotProcess, Db, seed_token_cache
from core.i18n import t
from core.wallet_proof import proof_text
from tests.chainharness import WorkerProcess
from tests.test_bot_flows import Chat, registered
from tests.walletharness import new_key

UNIT = 10**6


@pytest.fixture
def bot_db_url(db_url):
    seed_token_cache(db_url)
    return db_url


@pytest.fixture
def private_db(own_pg):
    own_pg.admin("CREATE DATABASE bot")
    url = own_pg.url("bot")
    with psycopg.connect(url, autocommit=True) as conn:
        migrate.migrate(conn, migrate.discover())
    seed_token_cache(url)
    return url


def test_database_errors_become_replies_and_the_bot_recovers(api, own_pg, private_db, redis_server):
    bot = BotProcess(api, private_db, redis_server.url(3)).start()
    try:
        chat = Chat(api)
        chat.send("/start", contains="Welcome")
        Db(private_db).fund(chat.id, 7 * UNIT, "test:outage")

        own_pg.stop()
        assert chat.send("/balance")["text"] == "Technical works on the server, please try again later."
        russian = Chat(api, lang="ru")
        assert russian.send("/start")["text"] == "На сервере ведутся технические работы, попробуйте позже."
        assert bot.process.poll() is None

        own_pg.start()
        wait_until(lambda: "Balance: 7 USDT" in chat.send("/balance", timeout=15)["text"], 30,
                   "the bot to reach PostgreSQL again")
        own_pg.freeze()
        try:
            cached = chat.send("/balance", timeout=30)["text"]  # now known to the cache
            writing = chat.send("/deposit 5", timeout=30)["text"]
        finally:
            own_pg.thaw()
        assert cached.startswith("Balance: 7 USDT as of ")
        assert writing == "Technical works on the server, please try again later."
        assert "PostgreSQL unavailable" in bot.log()  # logged, in one line: an outage is not a bug
        assert "Traceback" not in bot.log()
    finally:
        bot.stop()
    assert api.rejections == []


TECHNICAL_WORKS = "Technical works on the server, please try again later."


@pytest.mark.parametrize("outage", ["stopped", "frozen"])
def test_with_postgresql_down_users_are_answered_at_once_and_the_breaker_closes_by_itself(
        api, own_pg, private_db, redis_server, outage):
    bot = BotProcess(api, private_db, redis_server.url(3), BREAKER_RESET_S=1).start()
    try:
        chats = [Chat(api) for _ in range(3)]
        for chat in chats:
            chat.send("/start", contains="Welcome")
        own_pg.stop() if outage == "stopped" else own_pg.freeze()
        try:
            chats[0].send("/balance", contains=TECHNICAL_WORKS, timeout=30)  # may wait out one timeout
            wait_until(lambda: bot.breaker("postgresql") in ("OPEN", "HALF_OPEN"), 20, "the breaker to open")
            latencies = []
            for chat in chats * 3:
                started = time.monotonic()
                assert chat.send("/balance", timeout=5)["text"] == TECHNICAL_WORKS
                latencies.append(time.monotonic() - started)
            assert max(latencies) < 1.0, latencies  # served without waiting for PostgreSQL
        finally:
            own_pg.start() if outage == "stopped" else own_pg.thaw()
        sent = len(api.messages(chats[0].id))
        wait_until(lambda: bot.breaker("postgresql") == "CLOSED", 30, "the breaker to close without user traffic")
        assert len(api.messages(chats[0].id)) == sent  # nobody had to write for it
        assert "Balance: 0 USDT" in chats[0].send("/balance")["text"]
        assert "Traceback" not in bot.log()  # the updates that waited are logged in one line each
    finally:
        bot.stop()
    assert api.rejections == []


@pytest.mark.parametrize("outage", ["killed", "frozen"])
def test_dialogs_half_way_when_redis_fails_complete_and_one_begun_then_completes_after(
        api, bot_db_url, own_redis, anvil, outage):
    bot = BotProcess(api, bot_db_url, own_redis.url(), RPC_URL=anvil.url, REDIS_TIMEOUT_S=0.5).start()
    try:
        db = Db(bot_db_url)
        chat = registered(api, db, balance=50 * UNIT)
        chat.send("/withdraw 5", contains="Confirm?")
        binder, key = Chat(api), new_key()
        binder.send("/start", contains="Welcome")
        address = chaintools.address_of(key)
        binder.send(f"/wallet {address}", exactly=proof_text(address, binder.id))  # now waits for the signature

        own_redis.kill() if outage == "killed" else own_redis.freeze()
        try:
            started = time.monotonic()
            assert "waiting for approval" in chat.press("Confirm", edited=True)["text"]
            assert time.monotonic() - started < 3.0  # one Redis timeout at most, then the fallback
            binder.send(chaintools.sign_wallet_proof(key, binder.id),
                        exactly=t("en", "wallet_bound", address=address))
            assert db.value("SELECT count(*) FROM withdrawals WHERE user_id = %s", (chat.id,)) == 1
            assert db.balance(chat.id) == 45 * UNIT
            for _ in range(3):  # every later update: no waiting for Redis at all
                started = time.monotonic()
                chat.send("/help", contains="/withdraw")
                assert time.monotonic() - started < 1.0
            chat.send("/withdraw 7", contains="Confirm?")  # a dialog begun during the outage
        finally:
            own_redis.start() if outage == "killed" else own_redis.thaw()
        wait_until(lambda: bot.breaker("redis") == "CLOSED", 20, "the Redis breaker to close")
        assert "waiting for approval" in chat.press("Confirm", edited=True)["text"]
        assert db.value("SELECT count(*) FROM withdrawals WHERE user_id = %s", (chat.id,)) == 2
        assert db.balance(chat.id) == 38 * UNIT
        assert "Something went wrong" not in " ".join(chat.texts() + binder.texts())
    finally:
        bot.stop()
    assert api.rejections == []


def test_with_postgresql_down_start_help_and_balance_come_from_the_cache(api, own_pg, private_db, redis_server):
    redis.Redis.from_url(redis_server.url(5)).flushdb()
    bot = BotProcess(api, private_db, redis_server.url(5), BREAKER_RESET_S=1).start()
    try:
        chat, banned, admin = Chat(api), Chat(api), Chat(api, ADMIN_ID)
        for someone in (chat, banned, admin):
            someone.send("/start", contains="Welcome")
        Db(private_db).fund(chat.id, 7 * UNIT, "test:cached")
        admin.send(f"/ban {banned.id}", contains=str(banned.id))
        chat.send("/balance", contains="Balance: 7 USDT")  # read from PostgreSQL, and cached
        cached = redis.Redis.from_url(redis_server.url(5))
        wait_until(lambda: cached.exists("cache:banned:at"), 10, "the blacklist to be warmed")

        own_pg.stop()
        try:
            first = chat.send("/balance", timeout=20)["text"]  # may wait out one timeout, then the cache
            assert first.startswith("Balance: 7 USDT as of ") and "Technical works" in first
            wait_until(lambda: bot.breaker("postgresql") in ("OPEN", "HALF_OPEN"), 20, "the breaker to open")
            started = time.monotonic()
            assert chat.send("/balance")["text"].startswith("Balance: 7 USDT as of ")
            assert time.monotonic() - started < 1.0
            chat.send("/start", contains="Welcome")
            chat.send("/help", contains="/withdraw")
            assert banned.send("/balance")["text"] == t("en", "banned")  # the blacklist is cached too
            assert chat.send("/lang ru")["text"] == TECHNICAL_WORKS  # writes wait for PostgreSQL
            assert chat.send("/deposit 20")["text"] == TECHNICAL_WORKS
            assert Chat(api).send("/balance")["text"] == TECHNICAL_WORKS  # nobody cached: nothing to show
        finally:
            own_pg.start()
        wait_until(lambda: bot.breaker("postgresql") == "CLOSED", 30, "the breaker to close")
        assert chat.send("/balance")["text"].startswith("Balance: 7 USDT") and "as of" not in chat.texts()[-1]
    finally:
        bot.stop()
    assert api.rejections == []


def test_with_postgresql_and_redis_down_at_once_users_are_answered_and_nothing_is_lost(
        api, own_pg, private_db, own_redis, anvil, token6):
    common = {"REDIS_URL": own_redis.url(), "REDIS_TIMEOUT_S": 0.5, "BREAKER_RESET_S": 1}
    worker = WorkerProcess(api, private_db, anvil.url, token6.address, **common).start()
    bot = BotProcess(api, private_db, own_redis.url(), RPC_URL=anvil.url, TOKEN_ADDRESS=token6.address,
                     REDIS_TIMEOUT_S=0.5, BREAKER_RESET_S=1).start()
    try:
        db = Db(private_db)
        chat = registered(api, db, balance=20 * UNIT)
        chat.send("/withdraw 4", contains="Confirm?")  # half-way when both go
        own_redis.kill()
        own_pg.kill()
        try:
            for _ in range(3):
                started = time.monotonic()
                assert chat.send("/balance", timeout=20)["text"] == TECHNICAL_WORKS
            assert time.monotonic() - started < 1.0  # once the breakers are open, at once
            assert bot.process.poll() is None and worker.process.poll() is None
        finally:
            own_pg.start()
            own_redis.start()
        wait_until(lambda: bot.breaker("postgresql") == "CLOSED" and bot.breaker("redis") == "CLOSED", 30,
                   "the bot's breakers to close")
        assert "waiting for approval" in chat.press("Confirm", edited=True)["text"]  # the dialog survived
        assert db.value("SELECT count(*) FROM withdrawals WHERE user_id = %s", (chat.id,)) == 1
        assert db.balance(chat.id) == 16 * UNIT
        down = api.wait_for(ADMIN_ID, contains="is down", timeout=30)  # alerts kept in memory, then delivered
        back = api.wait_for(ADMIN_ID, contains="answers again", timeout=30)
        assert down and back
    finally:
        bot.stop()
        worker.stop()
    assert api.rejections == []


def test_polling_survives_502_429_and_the_api_going_away(api, bot_db_url, redis_server):
    bot = BotProcess(api, bot_db_url, redis_server.url(4)).start()
    try:
        chat = Chat(api)
        chat.send("/start", contains="Welcome")
        api.fail_next("getUpdates", status=502, count=3)
        api.fail_next("getUpdates", status=429, count=1, retry_after=1)
        assert "Commands" in chat.send("/help", timeout=20)["text"]

        api.go_away()
        wait_until(lambda: api.waiting_polls == 0, 10, "the poll to be cut")
        api.push_message(chat.id, "/balance")  # queued while the API is unreachable
        api.come_back()
        api.wait_for(chat.id, contains="Balance", timeout=20)

        api.fail_next("sendMessage", status=502, count=1)
        api.fail_next("sendMessage", status=429, count=1, retry_after=1)
        assert "Commands" in chat.send("/help", timeout=20)["text"]  # the send was retried
        assert bot.process.poll() is None
    finally:
        bot.stop()


def test_a_user_who_blocked_the_bot_is_marked(api, bot_db_url, redis_server):
    bot = BotProcess(api, bot_db_url, redis_server.url(5)).start()
    try:
        chat = Chat(api)
        chat.send("/start", contains="Welcome")
        api.fail_next("sendMessage", status=403, count=1)
        api.push_message(chat.id, "/help")
        db = Db(bot_db_url)
        wait_until(lambda: db.value("SELECT blocked_bot FROM users WHERE id = %s", (chat.id,)), 10,
                   "blocked_bot to be recorded")
        chat.send("/start", contains="Welcome")
        assert db.value("SELECT blocked_bot FROM users WHERE id = %s", (chat.id,)) is False
    finally:
        bot.stop()


def test_rate_limit_warns_once_then_stays_silent(api, bot_db_url, redis_server):
    bot = BotProcess(api, bot_db_url, redis_server.url(6), RATE_LIMIT_UPDATES=3, RATE_LIMIT_WINDOW_S=3600).start()
    try:
        flooder, calm = Chat(api), Chat(api)
        for _ in range(8):
            api.push_message(flooder.id, "/help")
        api.wait_for(flooder.id, contains="slow down")
        assert "Commands" in calm.send("/help")["text"]   # other users are not affected
        for _ in range(2):  # calm's own 3 updates: all answered, and the flood's stragglers are done
            calm.send("/help", contains="Commands")
        texts = flooder.texts()
        assert len(texts) == 4 and sum("slow down" in text for text in texts) == 1
    finally:
        bot.stop()


def test_rate_limiting_goes_on_in_memory_while_redis_is_down(api, bot_db_url, own_redis):
    bot = BotProcess(api, bot_db_url, own_redis.url(), RATE_LIMIT_UPDATES=3, RATE_LIMIT_WINDOW_S=3600,
                     REDIS_TIMEOUT_S=0.5).start()
    try:
        own_redis.kill()
        flooder, calm = Chat(api), Chat(api)
        calm.send("/help", contains="Commands")  # the first update meets Redis gone: the breaker opens
        for _ in range(8):
            api.push_message(flooder.id, "/help")
        api.wait_for(flooder.id, contains="slow down")
        for _ in range(2):
            calm.send("/help", contains="Commands")
        texts = flooder.texts()
        assert len(texts) == 4 and sum("slow down" in text for text in texts) == 1  # a flood is still cut off
        assert bot.log().count("counting in memory") == 1  # logged once per switch, not per request
    finally:
        bot.stop()


def test_maintenance_mode_is_picked_up_from_env_edits(api, bot_db_url, redis_server, tmp_path, anvil):
    env_file = tmp_path / ".env"
    env_file.write_text("BLOCKCHAIN_MAINTENANCE_MODE=false\n")
    bot = BotProcess(api, bot_db_url, redis_server.url(7), ENV_FILE=str(env_file), RPC_URL=anvil.url).start()
    try:
        db = Db(bot_db_url)
        chat, newcomer = Chat(api), Chat(api)
        chat.send("/start", contains="Welcome")
        key = new_key()
        chat.send(f"/wallet {chaintools.address_of(key)} {chaintools.sign_wallet_proof(key, chat.id)}",
                  contains="Wallet bound")
        db.fund(chat.id, 20 * UNIT, "test:maintenance")
        assert "Confirm?" in chat.send("/withdraw 5")["text"]

        env_file.write_text("BLOCKCHAIN_MAINTENANCE_MODE=true\n")
        wait_until(lambda: "temporarily unavailable" in chat.send("/withdraw 5")["text"], 5,
                   "the bot to see maintenance mode")
        unavailable = chat.press("Confirm")  # the preview from before maintenance
        assert "temporarily unavailable" in unavailable["text"]
        assert "temporarily unavailable" in chat.send("/withdraw all")["text"]
        reply = chat.send("/deposit 50")["text"]
        assert "under maintenance" in reply
        deposit_id = int(reply.split("#")[1].split(":")[0])
        assert db.value("SELECT status FROM deposits WHERE id = %s", (deposit_id,)) == "PENDING_NETWORK_RECOVERY"
        assert db.value("SELECT count(*) FROM withdrawals WHERE user_id = %s", (chat.id,)) == 0
        newcomer.send("/start", contains="Welcome")
        late_key = new_key()
        proof = f"/wallet {chaintools.address_of(late_key)} {chaintools.sign_wallet_proof(late_key, newcomer.id)}"
        assert "cannot be bound right now" in newcomer.send(proof)["text"]  # no head is read in maintenance
        assert db.value("SELECT count(*) FROM wallet_bindings WHERE user_id = %s", (newcomer.id,)) == 0

        env_file.write_text("BLOCKCHAIN_MAINTENANCE_MODE=0\n")
        wait_until(lambda: "Confirm?" in chat.send("/withdraw 5")["text"], 5, "maintenance to end")
        assert "Wallet bound" in newcomer.send(proof)["text"]

        before = env_file.stat()  # an edit the file's times do not show: `systemctl reload` (SIGHUP) applies it
        env_file.write_text("BLOCKCHAIN_MAINTENANCE_MODE=1\n")
        os.utime(env_file, ns=(before.st_atime_ns, before.st_mtime_ns))
        bot.process.send_signal(signal.SIGHUP)
        wait_until(lambda: "temporarily unavailable" in chat.send("/withdraw 5")["text"], 5,
                   "the bot to re-read .env on SIGHUP")
        assert bot.process.poll() is None and "reload requested" in bot.log()
    finally:
        bot.stop()


def test_sends_wait_out_telegram_flood_limits(api, bot_db_url, redis_server):
    bot = BotProcess(api, bot_db_url, redis_server.url(8)).start()
    try:
        db = Db(bot_db_url)
        chat = Chat(api)
        chat.send("/start", contains="Welcome")
        db.fund(chat.id, 100 * UNIT, "test:flood")
        for _ in range(6):
            chat.send("/withdraw 1 0x" + "cd" * 20, contains="Confirm?")
            chat.press("Confirm", edited=True)
        api.enforce_limits(True)
        admin = Chat(api, 999)
        before = admin.mark()  # the admin was already told of each new withdrawal
        admin.send("/pending")
        wait_until(lambda: len([m for m in api.messages(999)[before:] if "#" in m["text"]]) >= 6, 30,
                   "all six pending withdrawals to reach the admin")
        assert any(status == 429 for _, _, status, _ in api.failures)  # the limit was hit and waited out
    finally:
        api.enforce_limits(False)
        bot.stop()


def test_an_update_in_progress_survives_kill_9_of_the_bot(api, bot_db_url, redis_server, anvil):
    db = Db(bot_db_url)
    bot = BotProcess(api, bot_db_url, redis_server.url(10), RPC_URL=anvil.url).start()
    chat = Chat(api)
    key = new_key()
    wallet = chaintools.address_of(key).lower()
    waiting = """SELECT count(*) FROM pg_stat_activity
                 WHERE application_name = 'bot' AND wait_event_type = 'Lock'"""
    try:
        chat.send("/start", contains="Welcome")
        with psycopg.connect(bot_db_url) as blocker:  # holds the user's row: the handler must wait
            blocker.execute("SELECT 1 FROM users WHERE id = %s FOR UPDATE", (chat.id,))
            api.push_message(chat.id, f"/wallet {wallet} {chaintools.sign_wallet_proof(key, chat.id)}")
            wait_until(lambda: db.value(waiting) == 1, 10, "the handler to be stuck mid-update")
            bot.kill()
            blocker.rollback()
    finally:
        bot.stop()
    assert db.value("SELECT wallet_address FROM users WHERE id = %s", (chat.id,)) is None
    restarted = BotProcess(api, bot_db_url, redis_server.url(10), RPC_URL=anvil.url).start()
    try:  # the update was never confirmed to Telegram, so it comes again and is handled now
        api.wait_for(chat.id, contains="Wallet bound", timeout=20)
        assert db.value("SELECT wallet_address FROM users WHERE id = %s", (chat.id,)) == wallet
    finally:
        restarted.stop()
