"""worker.py against a real anvil: deposits credited once, withdrawals sent once, reverts refunded once."""
import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row
from web3.exceptions import TransactionNotFound

from chain.rpc import Chain
from core.fees import legacy
from db import withdrawals
from db.pool import configure_connection
from dr import CircuitBreaker

from devstack import chaintools
from devstack.procs import wait_until
from devstack.rpctap import RpcTap
from tests.botharness import ADMIN_ID, Db
from tests.chainharness import (HOT_WALLET, HOT_WALLET_KEY, USER_KEYS, RpcProxy, WorkerProcess,
                                accept_hot_wallet_history, user_with_wallet)
from tests.test_chain_outages import wait_for_more_status_reports

ROOT = Path(__file__).resolve().parent.parent
USER_ID = 5001


@pytest.fixture
def db(db_url):
    return Db(db_url)


def start_worker(api, db_url, anvil_url, token, w3, **env) -> WorkerProcess:
    env.setdefault("SCAN_START_BLOCK", w3.eth.block_number + 1)
    return WorkerProcess(api, db_url, anvil_url, token.address, **env).start()


def credited(db, user_id) -> int:
    return db.balance(user_id) if db.value("SELECT 1 FROM users WHERE id = %s", (user_id,)) else 0


@pytest.mark.parametrize("decimals", [6, 18])
def test_requested_deposit_is_credited_once_after_confirmations(api, db, db_url, anvil, w3, decimals):
    token = chaintools.deploy_token_info(w3, "Test", "TST", decimals)
    wallet = user_with_wallet(db, USER_ID, USER_KEYS[0])
    chaintools.mint(w3, token.address, chaintools.DEPLOYER_KEY, wallet, 1000 * 10**decimals)
    worker = start_worker(api, db_url, anvil.url, token, w3, CONFIRMATIONS=3)
    try:
        amount = 50 * 10**decimals + 10**(decimals - 1)  # 50.1 tokens
        request_id = db.value("""INSERT INTO deposits (user_id, status, requested_amount, level_version, level,
                                 expires_at) VALUES (%s, 'PENDING', %s, 1, 1, now() + interval '1 hour')
                                 RETURNING id""", (USER_ID, amount))
        tx_hash = chaintools.transfer(w3, token.address, USER_KEYS[0], HOT_WALLET, amount)
        block = w3.eth.get_transaction_receipt(tx_hash)["blockNumber"]
        cursor = lambda: db.value("SELECT last_block FROM chain_cursor") or 0
        wait_until(lambda: cursor() >= block - 1, 20, "the scan to reach the block before the transfer")
        chaintools.mine(w3, 1)  # 2 confirmations: not yet
        wait_until(lambda: cursor() >= w3.eth.block_number - 2, 20, "the scan to catch up")
        assert credited(db, USER_ID) == 0
        chaintools.mine(w3, 1)  # 3 confirmations
        wait_until(lambda: credited(db, USER_ID) == amount, 20, "the deposit to be credited")
        row = db.rows("SELECT * FROM deposits WHERE id = %s", (request_id,))[0]
        assert row["status"] == "CONFIRMED" and row["tx_hash"] == tx_hash.lower() and row["block_number"] == block
        told = api.wait_for(USER_ID, contains=f"#{request_id}")
        assert told["text"] == f"Deposit #{request_id} credited: 50.1 TST. Balance: 50.1 TST."
        chaintools.mine(w3, 5)
        wait_until(lambda: cursor() >= w3.eth.block_number - 2, 20, "more scanning")
        assert credited(db, USER_ID) == amount
        assert db.value("SELECT count(*) FROM ledger_entries WHERE kind = 'deposit'") == 1
    finally:
        worker.stop()


def test_unrequested_and_unattributed_transfers(api, db, db_url, anvil, w3, token6):
    wallet = user_with_wallet(db, USER_ID, USER_KEYS[0])
    stranger_key = USER_KEYS[1]
    for key in (USER_KEYS[0], stranger_key):
        chaintools.mint(w3, token6.address, chaintools.DEPLOYER_KEY, chaintools.address_of(key), 10**9)
    worker = start_worker(api, db_url, anvil.url, token6, w3, CONFIRMATIONS=1)
    try:
        chaintools.transfer(w3, token6.address, USER_KEYS[0], HOT_WALLET, 7 * 10**6)
        chaintools.transfer(w3, token6.address, stranger_key, HOT_WALLET, 3 * 10**6)
        wait_until(lambda: db.value("SELECT count(*) FROM deposits") == 2, 20, "both transfers to be recorded")
        assert credited(db, USER_ID) == 7 * 10**6
        stranger = db.rows("SELECT * FROM deposits WHERE user_id IS NULL")[0]
        assert stranger["from_address"] == chaintools.address_of(stranger_key).lower()
        assert stranger["credited_amount"] == 3 * 10**6
        assert db.value("SELECT count(*) FROM ledger_entries") == 1
        assert wallet
    finally:
        worker.stop()


def test_a_transfer_mined_before_the_wallet_was_proven_is_left_for_an_admin(api, db, db_url, anvil, w3, token6):
    """Front-running: a transfer from an unbound address, then someone proves that address."""
    key = USER_KEYS[2]
    chaintools.mint(w3, token6.address, chaintools.DEPLOYER_KEY, chaintools.address_of(key), 10**9)
    worker = start_worker(api, db_url, anvil.url, token6, w3, CONFIRMATIONS=2)
    try:
        before = chaintools.transfer(w3, token6.address, key, HOT_WALLET, 9 * 10**6)  # nobody has proven it yet
        user_with_wallet(db, USER_ID, key, head=w3.eth.block_number)  # the head the bot reads at the proof
        after = chaintools.transfer(w3, token6.address, key, HOT_WALLET, 4 * 10**6)
        chaintools.mine(w3, 2)
        wait_until(lambda: db.value("SELECT count(*) FROM deposits") == 2, 20, "both transfers to be recorded")
        owners = {r["tx_hash"]: r["user_id"] for r in db.rows("SELECT tx_hash, user_id FROM deposits")}
        assert owners == {before.lower(): None, after.lower(): USER_ID}
        assert credited(db, USER_ID) == 4 * 10**6
        waiting = db.value("SELECT id FROM deposits WHERE user_id IS NULL")
        api.wait_for(USER_ID, contains=f"Deposit #{waiting} of 9 USDT from your wallet was sent before you proved")
    finally:
        worker.stop()


def test_reorged_transfer_is_never_credited(api, db, db_url, anvil, w3, token6):
    """The node returns a transfer's log, and the block is reorged away before the scanner credits it."""
    user_with_wallet(db, USER_ID, USER_KEYS[0])
    chaintools.mint(w3, token6.address, chaintools.DEPLOYER_KEY, chaintools.address_of(USER_KEYS[0]), 10**9)
    first = w3.eth.block_number + 1
    snapshot = chaintools.snapshot(w3)
    removed = chaintools.transfer(w3, token6.address, USER_KEYS[0], HOT_WALLET, 11 * 10**6)
    chaintools.mine(w3, 3)  # the transfer has its confirmations in the node's view
    kept = []

    def reorg():  # runs after the node answered eth_getLogs, before the worker reads the answer
        chaintools.revert(w3, snapshot)
        kept.append(chaintools.transfer(w3, token6.address, USER_KEYS[0], HOT_WALLET, 22 * 10**6))
        chaintools.mine(w3, 5)

    proxy = RpcTap(target_port=anvil.port).start()
    fired = proxy.arm("eth_getLogs", reorg, on="response")
    worker = start_worker(api, db_url, proxy.url, token6, w3, CONFIRMATIONS=3, SCAN_START_BLOCK=first)
    try:
        wait_until(fired.is_set, 20, "the scanner to read the logs that are then reorged away")
        wait_until(lambda: credited(db, USER_ID) == 22 * 10**6, 20, "the surviving transfer to be credited")
        chaintools.mine(w3, 5)
        wait_until(lambda: (db.value("SELECT last_block FROM chain_cursor") or 0) >= w3.eth.block_number - 2,
                   20, "the scan to catch up")
        hashes = [r["tx_hash"] for r in db.rows("SELECT tx_hash FROM deposits")]
        assert hashes == [kept[0].lower()] and removed.lower() not in hashes
        assert "changed under us (reorg)" in worker.log()
    finally:
        worker.stop()
        proxy.stop()


def test_withdrawal_is_sent_once_confirmed_and_user_told(api, db, db_url, anvil, w3, token6):
    user_with_wallet(db, USER_ID, USER_KEYS[0], balance=100 * 10**6)
    chaintools.mint(w3, token6.address, chaintools.DEPLOYER_KEY, HOT_WALLET, 10**12)
    target = chaintools.address_of(USER_KEYS[3])
    withdrawal_id = db.value("""INSERT INTO withdrawals (user_id, status, amount, fee, to_address, approved_at)
                                VALUES (%s, 'APPROVED', %s, 0, %s, now()) RETURNING id""",
                             (USER_ID, 40 * 10**6, target.lower()))
    start_block = w3.eth.block_number
    worker = start_worker(api, db_url, anvil.url, token6, w3, CONFIRMATIONS=2)
    try:
        wait_until(lambda: db.value("SELECT status FROM withdrawals WHERE id = %s", (withdrawal_id,)) == "BROADCAST",
                   20, "the withdrawal to be broadcast")
        chaintools.mine(w3, 2)
        wait_until(lambda: db.value("SELECT status FROM withdrawals WHERE id = %s", (withdrawal_id,)) == "CONFIRMED",
                   20, "the withdrawal to be confirmed")
        tx_hash = db.value("SELECT tx_hash FROM withdrawals WHERE id = %s", (withdrawal_id,))
        told = api.wait_for(USER_ID, contains=f"#{withdrawal_id}")
        assert tx_hash in told["text"]
        events = [e for e in chaintools.transfer_events(w3, token6.address, start_block) if e["from"] == HOT_WALLET]
        assert len(events) == 1 and events[0]["to"] == target and events[0]["value"] == 40 * 10**6
        assert chaintools.balance_of(w3, token6.address, target) == 40 * 10**6
    finally:
        worker.stop()


def test_reverted_withdrawal_is_refunded_once(api, db, db_url, anvil, w3, token6):
    user_with_wallet(db, USER_ID, USER_KEYS[0], balance=100 * 10**6)
    chaintools.mint(w3, token6.address, chaintools.DEPLOYER_KEY, HOT_WALLET, 10**12)
    chaintools.set_fail_transfers(w3, token6.address, chaintools.DEPLOYER_KEY, True)
    db.rows("""INSERT INTO ledger_entries (user_id, amount, kind, reference, idempotency_key, balance_after)
               VALUES (%s, %s, 'withdrawal_hold', 'withdrawal:x', 'test:hold', 0)""", (USER_ID, -41 * 10**6))
    withdrawal_id = db.value("""INSERT INTO withdrawals (user_id, status, amount, fee, to_address, approved_at)
                                VALUES (%s, 'APPROVED', %s, %s, %s, now()) RETURNING id""",
                             (USER_ID, 40 * 10**6, 10**6, chaintools.address_of(USER_KEYS[3]).lower()))
    worker = start_worker(api, db_url, anvil.url, token6, w3, CONFIRMATIONS=1)
    try:
        wait_until(lambda: db.value("SELECT status FROM withdrawals WHERE id = %s", (withdrawal_id,)) == "FAILED",
                   20, "the reverted withdrawal to fail")
        api.wait_for(USER_ID, contains="failed on chain")
        api.wait_for(ADMIN_ID, contains=f"#{withdrawal_id} failed on chain (transaction reverted")
        chaintools.mine(w3, 3)
        refunds = db.rows("SELECT amount FROM ledger_entries WHERE kind = 'withdrawal_refund'")
        assert [r["amount"] for r in refunds] == [41 * 10**6]
        assert db.balance(USER_ID) == 100 * 10**6
    finally:
        worker.stop()
        chaintools.set_fail_transfers(w3, token6.address, chaintools.DEPLOYER_KEY, False)


def test_nonce_taken_by_another_transaction_fails_and_refunds_once(api, db, db_url, anvil, w3, token6):
    """A crash left the withdrawal SIGNED; meanwhile someone spent that nonce from the hot wallet."""
    user_with_wallet(db, USER_ID, USER_KEYS[0], balance=100 * 10**6)
    chaintools.mint(w3, token6.address, chaintools.DEPLOYER_KEY, HOT_WALLET, 10**12)
    withdrawal_id = db.value("""INSERT INTO withdrawals (user_id, status, amount, fee, to_address, approved_at)
                                VALUES (%s, 'APPROVED', %s, 0, %s, now()) RETURNING id""",
                             (USER_ID, 10 * 10**6, chaintools.address_of(USER_KEYS[3]).lower()))
    db.rows("""INSERT INTO ledger_entries (user_id, amount, kind, reference, idempotency_key, balance_after)
               VALUES (%s, %s, 'withdrawal_hold', 'x', 'test:hold:nonce', 0)""", (USER_ID, -10 * 10**6))
    node = Chain(w3, CircuitBreaker("rpc", 3, 1), token_address=token6.address, deposit_address=HOT_WALLET,
                 chain_id=31337, hot_wallet_key=HOT_WALLET_KEY)
    nonce = w3.eth.get_transaction_count(HOT_WALLET, "pending")
    fees = legacy(w3.eth.gas_price)
    signed = node.sign_transfer(chaintools.address_of(USER_KEYS[3]), 10 * 10**6, nonce, fees)
    with psycopg.connect(db_url, row_factory=dict_row) as conn:
        configure_connection(conn)
        withdrawals.mark_signed(conn, withdrawal_id, from_address=HOT_WALLET, nonce=nonce, tx_hash=signed.tx_hash,
                                raw_tx=signed.raw, fees=fees)
    chaintools.fund_eth(w3, HOT_WALLET, 10**21)
    chaintools.transfer(w3, token6.address, HOT_WALLET_KEY, chaintools.address_of(USER_KEYS[4]), 1)  # takes the nonce
    start_block = w3.eth.block_number
    worker = start_worker(api, db_url, anvil.url, token6, w3, CONFIRMATIONS=3)
    try:
        wait_until(lambda: "re-sending the same bytes" in worker.log(), 20, "the worker to find the nonce spent")
        chaintools.mine(w3, 1)  # the nonce is consumed, but not yet CONFIRMATIONS deep: no refund yet
        wait_for_more_status_reports(db, 3)  # the reconciler ran meanwhile
        assert db.value("SELECT status FROM withdrawals WHERE id = %s", (withdrawal_id,)) == "BROADCAST"
        assert db.value("SELECT count(*) FROM ledger_entries WHERE kind = 'withdrawal_refund'") == 0
        chaintools.mine(w3, 2)
        wait_until(lambda: db.value("SELECT status FROM withdrawals WHERE id = %s", (withdrawal_id,)) == "FAILED",
                   20, "the withdrawal whose nonce was taken to fail")
        api.wait_for(ADMIN_ID, contains=f"nonce {nonce} used by another transaction")
        chaintools.mine(w3, 3)
        assert db.balance(USER_ID) == 100 * 10**6
        assert db.value("SELECT count(*) FROM ledger_entries WHERE kind = 'withdrawal_refund'") == 1
        with pytest.raises(TransactionNotFound):  # our signed bytes never made it into a block
            w3.eth.get_transaction_receipt(signed.tx_hash)
        sent = [e for e in chaintools.transfer_events(w3, token6.address, start_block + 1) if e["from"] == HOT_WALLET]
        assert sent == []
    finally:
        worker.stop()


def test_credit_notice_waits_out_a_telegram_outage(api, db, db_url, anvil, w3, token6):
    user_with_wallet(db, USER_ID, USER_KEYS[0])
    chaintools.mint(w3, token6.address, chaintools.DEPLOYER_KEY, chaintools.address_of(USER_KEYS[0]), 10**9)
    worker = start_worker(api, db_url, anvil.url, token6, w3, CONFIRMATIONS=1)
    try:
        api.go_away()
        chaintools.transfer(w3, token6.address, USER_KEYS[0], HOT_WALLET, 9 * 10**6)
        wait_until(lambda: credited(db, USER_ID) == 9 * 10**6, 20, "the credit")
        pending = "SELECT count(*) FROM notification_outbox WHERE status = 'PENDING' AND attempts > 0"
        wait_until(lambda: db.value(pending) == 1, 20, "a failed delivery attempt to be recorded")
        api.come_back()
        told = api.wait_for(USER_ID, contains="credited", timeout=90)  # retried with backoff, never dropped
        assert "Balance: 9 USDT" in told["text"]
        wait_until(lambda: db.value("SELECT status FROM notification_outbox") == "SENT", 10, "SENT")
        assert len([m for m in api.messages(USER_ID) if "credited" in m["text"]]) == 1
    finally:
        worker.stop()


def signed_withdrawal(db, db_url, w3, token6, to: str, amount: int, gas_price: int):
    """An APPROVED withdrawal (with its hold) signed at the hot wallet's next nonce, as a crashed worker leaves it."""
    withdrawal_id = db.value("""INSERT INTO withdrawals (user_id, status, amount, fee, to_address, approved_at)
                                VALUES (%s, 'APPROVED', %s, 0, %s, now()) RETURNING id""", (USER_ID, amount, to.lower()))
    db.rows("""INSERT INTO ledger_entries (user_id, amount, kind, reference, idempotency_key, balance_after)
               VALUES (%s, %s, 'withdrawal_hold', 'x', %s, 0)""", (USER_ID, -amount, f"test:hold:{withdrawal_id}"))
    node = Chain(w3, CircuitBreaker("rpc", 3, 1), token_address=token6.address, deposit_address=HOT_WALLET,
                 chain_id=31337, hot_wallet_key=HOT_WALLET_KEY)
    nonce = w3.eth.get_transaction_count(HOT_WALLET, "pending")
    signed = node.sign_transfer(to, amount, nonce, legacy(gas_price))
    with psycopg.connect(db_url, row_factory=dict_row) as conn:
        configure_connection(conn)
        withdrawals.mark_signed(conn, withdrawal_id, from_address=HOT_WALLET, nonce=nonce, tx_hash=signed.tx_hash,
                                raw_tx=signed.raw, fees=legacy(gas_price))
    return withdrawal_id, node, signed


def test_a_nonce_spent_by_a_lost_attempt_that_pays_the_same_is_paid_not_refunded(api, db, db_url, anvil, w3,
                                                                                  token6):
    """The database lost the attempt that was mined (a restore); its stored attempt can never be mined."""
    user_with_wallet(db, USER_ID, USER_KEYS[0], balance=100 * 10**6)
    chaintools.mint(w3, token6.address, chaintools.DEPLOYER_KEY, HOT_WALLET, 10**12)
    accept_hot_wallet_history(db_url, anvil.url)
    target = chaintools.address_of(USER_KEYS[3])
    withdrawal_id, node, stored = signed_withdrawal(db, db_url, w3, token6, target, 12 * 10**6, w3.eth.gas_price)
    lost = node.sign_transfer(target, 12 * 10**6, stored.nonce, legacy(w3.eth.gas_price + 1))  # same payment, other bytes
    w3.eth.send_raw_transaction(lost.raw)
    start_block = w3.eth.block_number - 1
    worker = start_worker(api, db_url, anvil.url, token6, w3, CONFIRMATIONS=2)
    try:
        chaintools.mine(w3, 3)
        wait_until(lambda: db.value("SELECT status FROM withdrawals WHERE id = %s", (withdrawal_id,)) == "CONFIRMED",
                   20, "the withdrawal to be settled as paid")
        assert db.value("SELECT count(*) FROM ledger_entries WHERE kind = 'withdrawal_refund'") == 0
        assert db.balance(USER_ID) == 88 * 10**6
        sent = [e for e in chaintools.transfer_events(w3, token6.address, start_block) if e["from"] == HOT_WALLET]
        assert [(e["to"], e["value"]) for e in sent] == [(target, 12 * 10**6)]
        api.wait_for(USER_ID, contains=lost.tx_hash)  # the user is shown the transaction that paid them
    finally:
        worker.stop()


class ForgetfulNode(RpcProxy):
    """Answers like a lagging backend while `forgetting`: no receipt, no transaction."""

    FORGOTTEN = ("eth_getTransactionReceipt", "eth_getTransactionByHash")

    def __init__(self, target_url: str):
        self.forgetting = True
        super().__init__(target_url, lambda request: {"result": None}
                         if self.forgetting and request.get("method") in self.FORGOTTEN else None)


def test_a_node_that_forgets_our_mined_transaction_causes_no_refund(api, db, db_url, anvil, w3, token6):
    user_with_wallet(db, USER_ID, USER_KEYS[0], balance=100 * 10**6)
    chaintools.mint(w3, token6.address, chaintools.DEPLOYER_KEY, HOT_WALLET, 10**12)
    target = chaintools.address_of(USER_KEYS[3])
    withdrawal_id = db.value("""INSERT INTO withdrawals (user_id, status, amount, fee, to_address, approved_at)
                                VALUES (%s, 'APPROVED', %s, 0, %s, now()) RETURNING id""",
                             (USER_ID, 15 * 10**6, target.lower()))
    lagging = ForgetfulNode(anvil.url)
    worker = start_worker(api, db_url, lagging.url, token6, w3, CONFIRMATIONS=2)
    try:
        wait_until(lambda: "re-sending the same bytes" in worker.log(), 20, "the worker to miss its own receipt")
        chaintools.mine(w3, 4)  # deep enough for a refund, if the worker believed the lagging node
        wait_for_more_status_reports(db, 3)
        assert db.value("SELECT status FROM withdrawals WHERE id = %s", (withdrawal_id,)) == "BROADCAST"
        assert db.value("SELECT count(*) FROM ledger_entries WHERE kind = 'withdrawal_refund'") == 0
        lagging.forgetting = False
        wait_until(lambda: db.value("SELECT status FROM withdrawals WHERE id = %s", (withdrawal_id,)) == "CONFIRMED",
                   20, "the withdrawal to be confirmed once the node answers")
        assert db.value("SELECT count(*) FROM ledger_entries WHERE kind = 'withdrawal_refund'") == 0
    finally:
        worker.stop()
        lagging.close()


def test_the_funds_check_counts_withdrawals_already_in_flight(api, db, db_url, own_anvil):
    """Two withdrawals of 60 from a hot wallet with 100: the second waits while the first sits in the mempool."""
    w3 = chaintools.connect(own_anvil.url)
    token = chaintools.deploy_token_info(w3, "Tether USD", "USDT", 6)
    user_with_wallet(db, USER_ID, USER_KEYS[0], balance=200 * 10**6)
    chaintools.mint(w3, token.address, chaintools.DEPLOYER_KEY, HOT_WALLET, 100 * 10**6)
    targets = [chaintools.address_of(USER_KEYS[3]), chaintools.address_of(USER_KEYS[4])]
    ids = [db.value("""INSERT INTO withdrawals (user_id, status, amount, fee, to_address, approved_at)
                       VALUES (%s, 'APPROVED', %s, 0, %s, now()) RETURNING id""", (USER_ID, 60 * 10**6, to.lower()))
           for to in targets]
    status = lambda withdrawal_id: db.value("SELECT status FROM withdrawals WHERE id = %s", (withdrawal_id,))
    chaintools.node_request(w3, "evm_setAutomine", [False])  # what is sent stays in the mempool
    worker = start_worker(api, db_url, own_anvil.url, token, w3, CONFIRMATIONS=1)
    try:
        wait_until(lambda: status(ids[0]) == "BROADCAST", 20, "the first withdrawal to be sent")
        short = lambda: (db.value("SELECT status FROM service_status WHERE name = 'hot_wallet'") or {}).get("short")
        wait_until(short, 20, "the hot wallet to be reported short for the second")
        wait_for_more_status_reports(db, 2)
        assert status(ids[1]) == "APPROVED"  # 100 on the balance, but 60 of it is already on its way
        api.wait_for(ADMIN_ID, contains=f"cannot pay withdrawal #{ids[1]}: it has 100 USDT (60 USDT of it already",
                     timeout=20)
        chaintools.node_request(w3, "evm_setAutomine", [True])
        chaintools.mine(w3, 1)  # the first withdrawal is mined: 40 left, still short for the second
        wait_until(lambda: status(ids[0]) == "CONFIRMED", 20, "the first withdrawal to be confirmed")
        wait_for_more_status_reports(db, 2)
        assert status(ids[1]) == "APPROVED"
        chaintools.mint(w3, token.address, chaintools.DEPLOYER_KEY, HOT_WALLET, 100 * 10**6)  # topped up
        wait_until(lambda: status(ids[1]) in ("BROADCAST", "CONFIRMED"), 20, "the second withdrawal to be sent")
        chaintools.mine(w3, 2)
        wait_until(lambda: [status(i) for i in ids] == ["CONFIRMED", "CONFIRMED"], 30, "both to be confirmed")
        assert not short()
        assert db.value("SELECT count(*) FROM ledger_entries WHERE kind = 'withdrawal_refund'") == 0
    finally:
        worker.stop()


def test_a_notice_that_cannot_be_rendered_fails_alone(api, db, db_url, anvil, w3, token6):
    """A poison row (a placeholder its values lack) must not starve the notices queued behind it."""
    db.rows("INSERT INTO users (id, language) VALUES (%s, 'en')", (USER_ID,))
    poison = db.value("""INSERT INTO notification_outbox (chat_id, payload, idempotency_key)
                         VALUES (%s, %s, 'test:poison') RETURNING id""",
                      (USER_ID, json.dumps({"text": "notify_deposit_credited", "values": {"id": 1}})))
    good = db.value("""INSERT INTO notification_outbox (chat_id, payload, idempotency_key)
                       VALUES (%s, %s, 'test:good') RETURNING id""",
                    (USER_ID, json.dumps({"text": "cancelled", "values": {}})))
    worker = start_worker(api, db_url, anvil.url, token6, w3)
    try:
        api.wait_for(USER_ID, contains="Cancelled.")
        row = lambda i: db.rows("SELECT status, last_error FROM notification_outbox WHERE id = %s", (i,))[0]
        wait_until(lambda: row(poison)["status"] == "FAILED", 10, "the poison row to be marked failed")
        assert "cannot render" in row(poison)["last_error"] and row(good)["status"] == "SENT"
        assert [m["text"] for m in api.messages(USER_ID)] == ["Cancelled."]
    finally:
        worker.stop()


def test_a_send_left_unanswered_is_not_repeated_at_once(api, db, db_url, anvil, w3, token6):
    """Telegram takes the message but answers too late: at most one duplicate per timed-out send."""
    db.rows("INSERT INTO users (id, language) VALUES (%s, 'en')", (USER_ID,))
    notice = db.value("""INSERT INTO notification_outbox (chat_id, payload, idempotency_key)
                         VALUES (%s, %s, 'test:slow') RETURNING id""",
                      (USER_ID, json.dumps({"text": "cancelled", "values": {}})))
    row = lambda: db.rows("SELECT status, attempts, last_error FROM notification_outbox WHERE id = %s",
                          (notice,))[0]
    api.set_delay(2.5, "sendMessage")  # delivered, but after the worker stopped waiting
    worker = start_worker(api, db_url, anvil.url, token6, w3, TELEGRAM_READ_TIMEOUT_S=1)
    try:
        wait_until(lambda: row()["attempts"] >= 1, 20, "the first send to time out")
        assert "outcome unknown" in row()["last_error"]
        api.wait_for(USER_ID, contains="Cancelled.")
        api.set_delay(0, "sendMessage")
        wait_until(lambda: row()["status"] == "SENT", 20, "the queue to send it again")
        wait_for_more_status_reports(db, 2)
        timed_out = row()["attempts"]  # each one delivered late; the last attempt was answered in time
        assert [m["text"] for m in api.messages(USER_ID)] == ["Cancelled."] * (timed_out + 1)
    finally:
        api.set_delay(0, "sendMessage")
        worker.stop()


def test_a_reorg_deeper_than_the_cursor_stops_crediting_and_alerts_admins(api, db, db_url, anvil, w3, token6):
    user_with_wallet(db, USER_ID, USER_KEYS[0])
    chaintools.mint(w3, token6.address, chaintools.DEPLOYER_KEY, chaintools.address_of(USER_KEYS[0]), 10**9)
    worker = start_worker(api, db_url, anvil.url, token6, w3, CONFIRMATIONS=1)
    try:
        snapshot = chaintools.snapshot(w3)
        chaintools.transfer(w3, token6.address, USER_KEYS[0], HOT_WALLET, 5 * 10**6)
        chaintools.mine(w3, 2)
        wait_until(lambda: credited(db, USER_ID) == 5 * 10**6, 20, "the first transfer to be credited")
        head = w3.eth.block_number
        wait_until(lambda: db.value("SELECT last_block FROM chain_cursor") >= head, 20, "the scan to reach the head")
        chaintools.revert(w3, snapshot)  # every block the scanner has seen is replaced
        chaintools.transfer(w3, token6.address, USER_KEYS[0], HOT_WALLET, 7 * 10**6)
        chaintools.mine(w3, 5)
        problem = lambda: (db.value("SELECT status FROM service_status WHERE name = 'rpc'") or {}).get("scan_problem")
        wait_until(lambda: "changed after it was scanned" in (problem() or ""), 20, "the scanner to notice")
        api.wait_for(ADMIN_ID, contains="Deposit scanning stopped")
        wait_for_more_status_reports(db, 2)
        assert credited(db, USER_ID) == 5 * 10**6  # nothing from the new branch while stopped
        status = subprocess.run([sys.executable, "dr.py", "status"], cwd=ROOT, capture_output=True, text=True,
                                env={**os.environ, "ENV_FILE": "/nonexistent/.env", "DATABASE_URL": db_url,
                                     "STATE_DIR": worker.env["STATE_DIR"]})  # where the worker reports
        assert status.returncode == 1 and "deposit scan: PROBLEM: block" in status.stdout, status.stdout
    finally:
        worker.stop()


def test_a_new_deposit_address_is_scanned_from_where_the_old_one_stopped(api, db, db_url, anvil, w3, token6):
    """Transfers made while the worker restarts with a new address, to the new one and to the old one."""
    key = USER_KEYS[0]
    user_with_wallet(db, USER_ID, key)
    chaintools.mint(w3, token6.address, chaintools.DEPLOYER_KEY, chaintools.address_of(key), 10**9)
    old, new = HOT_WALLET, chaintools.address_of(USER_KEYS[5])
    worker = start_worker(api, db_url, anvil.url, token6, w3, CONFIRMATIONS=1)
    try:
        chaintools.transfer(w3, token6.address, key, old, 1 * 10**6)
        wait_until(lambda: credited(db, USER_ID) == 1 * 10**6, 20, "the first deposit")
    finally:
        worker.stop()
    chaintools.transfer(w3, token6.address, key, new, 2 * 10**6)  # while no worker runs
    chaintools.transfer(w3, token6.address, key, old, 4 * 10**6)  # a late sender to the old address
    chaintools.mine(w3, 2)
    worker = start_worker(api, db_url, anvil.url, token6, w3, CONFIRMATIONS=1, DEPOSIT_ADDRESS=new,
                          PREVIOUS_DEPOSIT_ADDRESSES=old)
    try:
        wait_until(lambda: credited(db, USER_ID) == 7 * 10**6, 20, "both transfers made during the restart")
        assert "deposit address changed" in worker.log()
        assert db.value("SELECT count(*) FROM ledger_entries WHERE kind = 'deposit'") == 3
    finally:
        worker.stop()
