"""Bot and worker together, and the operator's CLI: automatic maintenance, dr.py status/maintenance/recover."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import dr as dr_cli
from devstack import chaintools
from devstack.procs import wait_until
from devstack.tcpproxy import TcpProxy
from tests.botharness import ADMIN_ID, BotProcess, Db, seed_token_cache
from tests.chainharness import HOT_WALLET, HOT_WALLET_KEY, USER_KEYS, WorkerProcess
from tests.test_bot_flows import Chat
from tests.walletharness import bind_proven_at

ROOT = Path(__file__).resolve().parent.parent


def dr(database_url: str, *args: str, **env) -> subprocess.CompletedProcess:
    environ = {**os.environ, "ENV_FILE": "/nonexistent/.env", "DATABASE_URL": database_url,
               **{key: str(value) for key, value in env.items()}}
    return subprocess.run([sys.executable, "dr.py", *args], cwd=ROOT, env=environ, capture_output=True,
                          text=True, timeout=120)


def test_rpc_outage_pauses_withdrawals_automatically_and_recovery_completes_deposits(
        api, db_url, anvil, w3, token6, redis_server):
    db = Db(db_url)
    proxy = TcpProxy(target_port=anvil.port).start()
    worker = WorkerProcess(api, db_url, proxy.url, token6.address, CONFIRMATIONS=1,
                           SCAN_START_BLOCK=w3.eth.block_number + 1).start()
    bot = BotProcess(api, db_url, redis_server.url(9), RPC_URL=anvil.url, TOKEN_ADDRESS=token6.address,
                     DEPOSIT_ADDRESS=HOT_WALLET).start()
    try:
        chat = Chat(api)
        chat.send("/start", contains="Welcome")
        wallet = chaintools.address_of(USER_KEYS[4])
        signature = chaintools.sign_wallet_proof(USER_KEYS[4], chat.id)
        chat.send(f"/wallet {wallet} {signature}", contains="Wallet bound")
        chaintools.mint(w3, token6.address, chaintools.DEPLOYER_KEY, wallet, 10**9)
        chaintools.transfer(w3, token6.address, USER_KEYS[4], HOT_WALLET, 30 * 10**6)  # unrequested deposit
        wait_until(lambda: db.balance(chat.id) == 30 * 10**6, 20, "the first deposit")
        api.wait_for(chat.id, contains="credited")  # the worker's notice, so it is not taken for a reply
        chat.send("/withdraw 5", contains="Confirm?")

        proxy.cut()
        breaker = lambda: db.value("SELECT status->>'breaker' FROM service_status WHERE name = 'rpc'")
        wait_until(lambda: breaker() in ("OPEN", "HALF_OPEN"), 20, "the worker's breaker to open")
        wait_until(lambda: "temporarily unavailable" in chat.send("/withdraw 5")["text"], 10,
                   "the bot to pause withdrawals")
        status = Chat(api, ADMIN_ID).send("/status", contains="Database:")["text"]
        assert "automatic" in status and "RPC (worker): " in status
        reply = chat.send("/deposit 20", contains="under maintenance")["text"]
        request_id = int(reply.split("#")[1].split(":")[0])
        chaintools.transfer(w3, token6.address, USER_KEYS[4], HOT_WALLET, 20 * 10**6)  # made during the outage
        assert db.value("SELECT status FROM deposits WHERE id = %s", (request_id,)) == "PENDING_NETWORK_RECOVERY"

        proxy.restore()
        wait_until(lambda: db.value("SELECT status FROM deposits WHERE id = %s", (request_id,)) == "CONFIRMED",
                   30, "the outage deposit to be found and confirmed")
        assert db.balance(chat.id) == 50 * 10**6
        api.wait_for(chat.id, contains=f"Deposit #{request_id} credited")
        wait_until(lambda: "Confirm?" in chat.send("/withdraw 5")["text"], 15, "withdrawals to resume")
        assert api.rejections == []
    finally:
        bot.stop()
        worker.stop()
        proxy.stop()


def test_dr_maintenance_edits_env_and_status_reports(tmp_path, db_url):
    env_file = tmp_path / ".env"
    env_file.write_text("# operator settings\nDEFAULT_LANGUAGE=ru\nBLOCKCHAIN_MAINTENANCE_MODE=false\n")
    on = dr(db_url, "maintenance", "on", ENV_FILE=env_file)
    assert on.returncode == 0, on.stderr
    assert env_file.read_text().splitlines() == ["# operator settings", "DEFAULT_LANGUAGE=ru",
                                                 "BLOCKCHAIN_MAINTENANCE_MODE=true"]
    status = dr(db_url, "status", ENV_FILE=env_file, STATE_DIR=tmp_path / "state")
    assert "maintenance (BLOCKCHAIN_MAINTENANCE_MODE): on" in status.stdout
    assert "worker: no status file (is worker.py running?)" in status.stdout
    assert status.returncode == 3, status.stdout  # no process alive: critical
    assert dr(db_url, "maintenance", "off", ENV_FILE=env_file).returncode == 0
    assert "BLOCKCHAIN_MAINTENANCE_MODE=false" in env_file.read_text()
    assert dr(db_url, "maintenance").returncode == 2
    refused = dr(db_url, "recover", ENV_FILE=env_file, BLOCKCHAIN_MAINTENANCE_MODE="true")
    assert refused.returncode == 1 and "maintenance off" in refused.stderr


def test_dr_recover_finishes_outage_work_without_the_worker(api, db_url, anvil, w3, token6):
    db = Db(db_url)
    wallet = chaintools.address_of(USER_KEYS[5])
    db.rows("INSERT INTO users (id, language) VALUES (7001, 'en')")
    bind_proven_at(db_url, 7001, USER_KEYS[5])
    start = w3.eth.block_number + 1
    db.rows("INSERT INTO chain_cursor (stream, last_block) VALUES (%s, %s)",
            (f"deposits:{token6.address}:{HOT_WALLET}".lower(), start - 1))
    found = db.value("""INSERT INTO deposits (user_id, status, requested_amount, level_version, level)
                        VALUES (7001, 'PENDING_NETWORK_RECOVERY', %s, 1, 1) RETURNING id""", (15 * 10**6,))
    missing = db.value("""INSERT INTO deposits (user_id, status, requested_amount, level_version, level)
                          VALUES (7001, 'PENDING_NETWORK_RECOVERY', %s, 1, 1) RETURNING id""", (16 * 10**6,))
    chaintools.mint(w3, token6.address, chaintools.DEPLOYER_KEY, wallet, 10**9)
    chaintools.transfer(w3, token6.address, USER_KEYS[5], HOT_WALLET, 15 * 10**6)
    result = dr(db_url, "recover", RPC_URL=anvil.url, TOKEN_ADDRESS=token6.address, CONFIRMATIONS=1,
                HOT_WALLET_PRIVATE_KEY=HOT_WALLET_KEY, BOT_TOKEN="123456:TEST-token_value",
                TELEGRAM_API_URL=api.url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 transfer(s) recorded, 1 outage deposit request(s) reopened" in result.stdout
    assert db.value("SELECT status FROM deposits WHERE id = %s", (found,)) == "CONFIRMED"
    assert db.value("SELECT status FROM deposits WHERE id = %s", (missing,)) == "PENDING"
    assert db.balance(7001) == 15 * 10**6
    assert db.value("SELECT count(*) FROM notification_outbox WHERE status = 'PENDING'") == 1
    again = dr(db_url, "recover", RPC_URL=anvil.url, TOKEN_ADDRESS=token6.address, CONFIRMATIONS=1,
               HOT_WALLET_PRIVATE_KEY=HOT_WALLET_KEY, BOT_TOKEN="123456:TEST-token_value", TELEGRAM_API_URL=api.url)
    assert "0 transfer(s) recorded, 0 outage" in again.stdout and db.balance(7001) == 15 * 10**6


def test_status_shows_how_far_deposits_are_credited_and_finalized(api, db_url, anvil, w3, token6, redis_server):
    chaintools.mine(w3, 70)  # anvil calls the block 64 behind its head finalized
    db = Db(db_url)
    worker = WorkerProcess(api, db_url, anvil.url, token6.address, CONFIRMATIONS=1,
                           SCAN_START_BLOCK=w3.eth.block_number).start()
    bot = BotProcess(api, db_url, redis_server.url(9), RPC_URL=anvil.url, TOKEN_ADDRESS=token6.address,
                     DEPOSIT_ADDRESS=HOT_WALLET).start()
    try:
        report = lambda: db.value("SELECT status FROM service_status WHERE name = 'rpc'") or {}
        head = w3.eth.block_number
        wait_until(lambda: report().get("scanned_block") == head, 20, "the scan to reach the head")
        finalized = w3.eth.get_block("finalized")["number"]
        assert 0 < finalized < head and report()["finalized_block"] == finalized
        text = Chat(api, ADMIN_ID).send("/status", contains="Deposits:")["text"]
        assert f"Deposits: credited through block {head}, finalized through {finalized}" in text
        out = dr(db_url, "status").stdout
        assert f"deposit scan: credited through block {head}, finalized through {finalized}" in out
    finally:
        bot.stop()
        worker.stop()


def test_sigterm_stops_the_bot_and_the_worker_within_3_s(api, db_url, anvil, token6, redis_server):
    seed_token_cache(db_url)
    bot = BotProcess(api, db_url, redis_server.url(6), TELEGRAM_POLL_TIMEOUT_S=25).start()  # a real long poll
    worker = WorkerProcess(api, db_url, anvil.url, token6.address).start()
    try:
        wait_until(lambda: api.waiting_polls > 0, 10, "the bot to be in a long poll")
        for process in (bot, worker):
            started = time.monotonic()
            assert process.stop() == 0
            assert time.monotonic() - started < 3.0, process.log()[-2000:]
    finally:
        bot.stop()
        worker.stop()


def status_of(database_url: str, state_dir, **env) -> tuple[int, str]:
    done = dr(database_url, "status", STATE_DIR=state_dir, **env)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout


def test_dr_status_tells_the_truth_while_redis_and_postgresql_go_down_and_return(
        api, own_pg, own_redis, anvil, token6, tmp_path):
    own_pg.admin("CREATE DATABASE ops")
    url = own_pg.url("ops")
    assert dr(url, "migrate").returncode == 0
    state_dir, common = tmp_path / "state", {"REDIS_URL": own_redis.url(), "BREAKER_RESET_S": 1,
                                             "REDIS_TIMEOUT_S": 0.5}
    worker = WorkerProcess(api, url, anvil.url, token6.address, STATE_DIR=state_dir, **common).start()
    bot = BotProcess(api, url, own_redis.url(), RPC_URL=anvil.url, TOKEN_ADDRESS=token6.address,
                     DEPOSIT_ADDRESS=HOT_WALLET, STATE_DIR=state_dir, **common).start()
    env = {"RPC_URL": anvil.url, "TOKEN_ADDRESS": token6.address, "HOT_WALLET_PRIVATE_KEY": HOT_WALLET_KEY,
           "REDIS_URL": own_redis.url()}
    try:
        wait_until(lambda: status_of(url, state_dir, **env)[0] == 0, 30, "a healthy status")
        code, out = status_of(url, state_dir, **env)
        assert "PostgreSQL: healthy" in out and "Redis: healthy" in out and "overall: healthy" in out
        assert "bot: alive" in out and "worker: alive" in out and "hot wallet " in out
        report = json.loads(dr(url, "status", "--json", STATE_DIR=state_dir, **env).stdout)
        assert report["exit_code"] == 0 and report["dependencies"]["redis"]["up"] is True

        own_redis.kill()
        wait_until(lambda: "worker sees Redis down since" in status_of(url, state_dir, **env)[1], 20,
                   "the worker's Redis breaker in the status")
        code, out = status_of(url, state_dir, **env)
        assert code == 1 and "Redis: DOWN" in out and "overall: degraded" in out
        own_redis.start()
        wait_until(lambda: status_of(url, state_dir, **env)[0] == 0, 30, "healthy again after Redis returned")

        own_pg.stop()
        code, out = status_of(url, state_dir, **env)
        assert code == 3 and "PostgreSQL: DOWN" in out and "overall: CRITICAL" in out
        wait_until(lambda: "bot sees PostgreSQL down since" in status_of(url, state_dir, **env)[1], 20,
                   "the bot's PostgreSQL breaker in its status file")
        own_pg.start()
        wait_until(lambda: status_of(url, state_dir, **env)[0] == 0, 30, "healthy again after PostgreSQL returned")
    finally:
        bot.stop()
        worker.stop()


def test_maintenance_edits_a_commented_env_in_place_keeping_owner_and_mode(tmp_path, db_url):
    env_file = tmp_path / ".env"
    original = ["# operator settings", "DEFAULT_LANGUAGE=ru", "", "# maintenance switch, see README",
                "BLOCKCHAIN_MAINTENANCE_MODE=false", "# after it", "RATE_LIMIT_UPDATES=30"]
    env_file.write_text("\n".join(original) + "\n")
    os.chmod(env_file, 0o640)
    os.chown(env_file, 65534, 65534)  # owned by the service user, not by whoever runs dr.py
    for mode, value in (("on", "true"), ("off", "false")):
        done = dr(db_url, "maintenance", mode, ENV_FILE=env_file)
        assert done.returncode == 0, done.stderr
        assert env_file.read_text().splitlines() == [line.replace("=false", f"={value}") for line in original]
        info = env_file.stat()
        assert (info.st_mode & 0o777, info.st_uid, info.st_gid) == (0o640, 65534, 65534)
    missing = dr(db_url, "maintenance", "on", ENV_FILE=tmp_path / "no-such-dir" / ".env")
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1, missing.stderr
    assert "does not exist" in missing.stderr


def test_every_command_has_its_own_help(capsys):
    """In this process (each `python dr.py` start imports the whole product): the same parser and texts."""
    for command in ("status", "recover", "warmup", "maintenance", "migrate", "reconcile"):
        with pytest.raises(SystemExit) as exited:
            dr_cli.main([command, "--help"])
        out = capsys.readouterr().out
        assert exited.value.code == 0 and "Needs" in out and f"dr.py {command}" in out, out