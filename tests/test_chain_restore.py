"""A database restored from a backup never pays a withdrawal twice.

The backup shows withdrawals as APPROVED that the worker paid after it was taken. On
the restored database the sender must stop (the chain shows hot wallet transactions
the database does not know) until `python dr.py reconcile --apply` has matched them.
"""
import os
import subprocess
import sys
from pathlib import Path

from devstack import chaintools
from devstack.procs import wait_until
from tests.botharness import ADMIN_ID, BotProcess, Db
from tests.chainharness import HOT_WALLET, HOT_WALLET_KEY, USER_KEYS, WorkerProcess, accept_hot_wallet_history, \
    user_with_wallet
from tests.conftest import scratch_database
from tests.test_bot_flows import Chat
from tests.test_chain_outages import approved_withdrawal, confirm_all, hot_wallet_transfers, statuses

ROOT = Path(__file__).resolve().parent.parent
USDT = 10**6
USER_ID = 7701


def dr(database_url: str, rpc_url: str, token: str, api_url: str, *args: str, **extra) -> subprocess.CompletedProcess:
    env = {**os.environ, "ENV_FILE": "/nonexistent/.env", "DATABASE_URL": database_url, "RPC_URL": rpc_url,
           "TOKEN_ADDRESS": token, "HOT_WALLET_PRIVATE_KEY": HOT_WALLET_KEY, "BOT_TOKEN": "123456:TEST-token_value",
           "TELEGRAM_API_URL": api_url, "CONFIRMATIONS": "1", **extra}
    return subprocess.run([sys.executable, "dr.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def restore(pg_server, dump: Path, database_url: str) -> None:
    subprocess.run([pg_server.tool("pg_restore"), "--no-owner", "--dbname", database_url, str(dump)], check=True,
                   capture_output=True)


def test_a_restored_database_pays_each_withdrawal_exactly_once(api, pg_server, db_url, anvil, w3, token6, tmp_path,
                                                                redis_server):
    db = Db(db_url)
    user_with_wallet(db, USER_ID, USER_KEYS[0], balance=100 * USDT)
    chaintools.mint(w3, token6.address, chaintools.DEPLOYER_KEY, HOT_WALLET, 10**12)
    accept_hot_wallet_history(db_url, anvil.url)  # the operator accepted the wallet's past long ago
    targets = [chaintools.address_of(USER_KEYS[3]), chaintools.address_of(USER_KEYS[4])]
    paid = [approved_withdrawal(db, USER_ID, targets[i % 2], (5 + i) * USDT) for i in range(3)]
    dump = tmp_path / "backup.dump"
    subprocess.run([pg_server.tool("pg_dump"), "--format=custom", "--file", str(dump), db_url], check=True)
    first_block = w3.eth.block_number

    worker = WorkerProcess(api, db_url, anvil.url, token6.address, CONFIRMATIONS=1,
                           SCAN_START_BLOCK=first_block + 1).start()
    try:
        confirm_all(db, w3, 3, 1)
    finally:
        worker.stop()
    assert len(hot_wallet_transfers(w3, token6.address, first_block)) == 3

    with scratch_database(pg_server, "restored") as restored_url:
        restore(pg_server, dump, restored_url)
        restored = Db(restored_url)
        assert statuses(restored) == {"APPROVED": 3}  # the backup does not know they were paid
        new = approved_withdrawal(restored, USER_ID, targets[0], 9 * USDT)  # approved after the restore
        again = WorkerProcess(api, restored_url, anvil.url, token6.address, accept_history=False, CONFIRMATIONS=1)
        again.start()
        bot = BotProcess(api, restored_url, redis_server.url(11), RPC_URL=anvil.url, TOKEN_ADDRESS=token6.address,
                         DEPOSIT_ADDRESS=HOT_WALLET).start()
        try:
            gap = lambda: restored.value("SELECT status FROM service_status WHERE name = 'hot_wallet_nonce'")
            wait_until(lambda: (gap() or {}).get("ahead") is True, 20, "the sender to see the unknown transactions")
            api.wait_for(ADMIN_ID, contains="the database does not know")
            status = dr(restored_url, anvil.url, token6.address, api.url, "status",
                        STATE_DIR=again.env["STATE_DIR"])  # where the worker reports
            assert status.returncode == 1 and "the chain shows 3 transaction(s) the database does not know" in \
                status.stdout, status.stdout
            assert len(hot_wallet_transfers(w3, token6.address, first_block)) == 3  # nothing sent again
            admin_status = Chat(api, ADMIN_ID).send("/status", contains="Database:")["text"]
            assert "STOPPED: 3 transaction(s) on chain the database does not know" in admin_status
            assert statuses(restored) == {"APPROVED": 4}

            listed = dr(restored_url, anvil.url, token6.address, api.url, "reconcile")
            assert listed.returncode == 1, listed.stdout + listed.stderr
            for withdrawal_id in paid:
                assert f"= withdrawal #{withdrawal_id} of user {USER_ID} (APPROVED): MATCHED" in listed.stdout
            assert statuses(restored) == {"APPROVED": 4}  # listing records nothing

            applied = dr(restored_url, anvil.url, token6.address, api.url, "reconcile", "--apply")
            assert applied.returncode == 0, applied.stdout + applied.stderr
            assert "3 recorded" in applied.stdout
            wait_until(lambda: statuses(restored)["CONFIRMED"] == 4, 30, "the new withdrawal to be paid")
        finally:
            bot.stop()
            again.stop()
        rows = {r["id"]: r for r in restored.rows("SELECT * FROM withdrawals")}
        events = hot_wallet_transfers(w3, token6.address, first_block)
        assert sorted((e["to"].lower(), e["value"]) for e in events) == \
            sorted((r["to_address"], int(r["amount"])) for r in rows.values())  # each paid exactly once
        assert sorted(e["tx_hash"].lower() for e in events) == sorted(r["tx_hash"] for r in rows.values())
        assert all(rows[i]["reconciled_at"] is not None for i in paid) and rows[new]["reconciled_at"] is None
        assert restored.value("SELECT count(*) FROM admin_audit_log WHERE action = 'reconcile_paid'") == 3
        alerts = [m for m in api.messages(ADMIN_ID) if "has sent 3 transaction(s)" in m["text"]]
        assert len(alerts) == 1
