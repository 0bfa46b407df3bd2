"""The withdrawal queue cannot jam: one row's error stops no other, stuck transactions are re-priced or cancelled.

worker.py against anvil (mining switched off where a transaction must stay stuck),
PostgreSQL and the Bot API stand-in; a JSON-RPC proxy plays a node that refuses
one particular transaction.
"""
import json
import threading

import pytest

from devstack import chaintools
from devstack.procs import wait_until
from tests.botharness import ADMIN_ID, Db
from tests.chainharness import HOT_WALLET, USER_KEYS, RpcProxy, WorkerProcess, user_with_wallet

USER_ID = 5101
UNIT = 10**6


@pytest.fixture
def db(db_url):
    return Db(db_url)


def start_worker(api, db_url, rpc_url, token, w3, **env) -> WorkerProcess:
    env.setdefault("SCAN_START_BLOCK", w3.eth.block_number + 1)
    return WorkerProcess(api, db_url, rpc_url, token.address, **env).start()


def approved(db, to: str, amount: int) -> int:
    return db.value("""INSERT INTO withdrawals (user_id, status, amount, fee, to_address, approved_at)
                       VALUES (%s, 'APPROVED', %s, 0, %s, now()) RETURNING id""", (USER_ID, amount, to.lower()))


def status(db, withdrawal_id: int) -> str:
    return db.value("SELECT status FROM withdrawals WHERE id = %s", (withdrawal_id,))


def attempts(db, withdrawal_id: int) -> list[dict]:
    return db.rows("SELECT * FROM withdrawal_attempts WHERE withdrawal_id = %s ORDER BY id", (withdrawal_id,))


def paid_from_hot_wallet(w3, token, from_block: int) -> list[tuple]:
    return sorted((e["to"], e["value"]) for e in chaintools.transfer_events(w3, token, from_block)
                  if e["from"] == HOT_WALLET)


def node_knows(w3, tx_hash: str) -> bool:
    try:
        return w3.eth.get_transaction(tx_hash) is not None
    except Exception:
        return False


def admin_notes(api, text: str) -> list[str]:
    return [m["text"] for m in api.messages(ADMIN_ID) if text in m["text"]]


def test_a_transaction_the_node_refuses_blocks_no_later_withdrawal(api, db, db_url, anvil, w3, token6):
    """The node refuses A with an error nobody foresaw: A's nonce is freed by a cancel, B is still paid."""
    user_with_wallet(db, USER_ID, USER_KEYS[0])
    chaintools.mint(w3, token6.address, chaintools.DEPLOYER_KEY, HOT_WALLET, 10**12)
    target_a, target_b = chaintools.address_of(USER_KEYS[3]), chaintools.address_of(USER_KEYS[4])
    refusing = threading.Event()
    refusing.set()

    def refuse_payments_to_a(request):
        if (refusing.is_set() and request.get("method") == "eth_sendRawTransaction"
                and target_a.lower()[2:] in request["params"][0].lower()):
            return {"error": {"code": -32000, "message": "transaction rejected by the provider's policy engine"}}
        return None

    node = RpcProxy(anvil.url, refuse_payments_to_a)
    start_block = w3.eth.block_number + 1
    withdrawal_a = approved(db, target_a, 10 * UNIT)
    withdrawal_b = approved(db, target_b, 20 * UNIT)
    worker = start_worker(api, db_url, node.url, token6, w3, CONFIRMATIONS=1, WITHDRAWAL_STUCK_S=3)
    try:
        wait_until(lambda: status(db, withdrawal_b) == "CONFIRMED", 30, "the withdrawal behind the refused one")
        wait_until(lambda: status(db, withdrawal_a) == "APPROVED" and attempts(db, withdrawal_a), 30,
                   "the refused withdrawal's nonce to be freed")
        first_nonce = attempts(db, withdrawal_a)[0]["nonce"]
        kinds = [(a["kind"], a["nonce"], a["mined_block"] is not None) for a in attempts(db, withdrawal_a)]
        assert kinds == [("TRANSFER", first_nonce, False), ("CANCEL", first_nonce, True)]
        cancel = w3.eth.get_transaction(attempts(db, withdrawal_a)[1]["tx_hash"])
        assert (cancel["to"], cancel["value"], cancel["nonce"]) == (HOT_WALLET, 0, first_nonce)
        assert "freed" in db.value("SELECT problem FROM withdrawals WHERE id = %s", (withdrawal_a,))
        assert len(admin_notes(api, f"Withdrawal #{withdrawal_a} (nonce {first_nonce}) needs attention")) == 1
        api.wait_for(ADMIN_ID, contains=f"Withdrawal #{withdrawal_a} could not be mined")
        assert paid_from_hot_wallet(w3, token6.address, start_block) == [(target_b, 20 * UNIT)]

        refusing.clear()  # the provider lets it through again: A is sent at a new nonce, once
        wait_until(lambda: status(db, withdrawal_a) == "CONFIRMED", 30, "the freed withdrawal to be paid")
        final = attempts(db, withdrawal_a)[-1]
        assert final["kind"] == "TRANSFER" and final["nonce"] > first_nonce and final["mined_block"] is not None
        assert db.value("SELECT tx_hash FROM withdrawals WHERE id = %s", (withdrawal_a,)) == final["tx_hash"]
        assert paid_from_hot_wallet(w3, token6.address, start_block) == sorted(
            [(target_a, 10 * UNIT), (target_b, 20 * UNIT)])
        assert db.value("SELECT count(*) FROM ledger_entries WHERE kind = 'withdrawal_refund'") == 0
    finally:
        worker.stop()
        node.close()


def test_a_row_whose_receipt_cannot_be_read_holds_up_no_other(api, db, db_url, anvil, w3, token6):
    user_with_wallet(db, USER_ID, USER_KEYS[0])
    chaintools.mint(w3, token6.address, chaintools.DEPLOYER_KEY, HOT_WALLET, 10**12)
    broken = set()
    node = RpcProxy(anvil.url, lambda request: {"error": {"code": -32603, "message": "receipt index corrupted"}}
                    if request.get("method") == "eth_getTransactionReceipt" and request["params"][0] in broken
                    else None)
    withdrawal_a = approved(db, chaintools.address_of(USER_KEYS[3]), 5 * UNIT)
    worker = start_worker(api, db_url, node.url, token6, w3, CONFIRMATIONS=2)
    try:
        wait_until(lambda: status(db, withdrawal_a) == "BROADCAST", 20, "the first withdrawal to be sent")
        broken.add(db.value("SELECT tx_hash FROM withdrawals WHERE id = %s", (withdrawal_a,)))
        withdrawal_b = approved(db, chaintools.address_of(USER_KEYS[4]), 6 * UNIT)
        wait_until(lambda: status(db, withdrawal_b) == "BROADCAST", 20, "the second withdrawal to be sent")
        chaintools.mine(w3, 2)
        wait_until(lambda: status(db, withdrawal_b) == "CONFIRMED", 20, "the second withdrawal to be settled")
        problem = lambda: db.value("SELECT problem FROM withdrawals WHERE id = %s", (withdrawal_a,)) or ""
        wait_until(lambda: "receipt index corrupted" in problem(), 20, "the first row's problem to be recorded")
        assert status(db, withdrawal_a) == "BROADCAST"
        api.wait_for(ADMIN_ID, contains=f"Withdrawal #{withdrawal_a} (nonce")
        broken.clear()
        wait_until(lambda: status(db, withdrawal_a) == "CONFIRMED", 20, "the first withdrawal once readable")
        assert len(admin_notes(api, f"Withdrawal #{withdrawal_a} (nonce")) == 1  # once per problem
    finally:
        worker.stop()
        node.close()


@pytest.fixture
def stalled_chain(own_anvil):
    """A private anvil with a token, whose blocks are mined only when the test says so."""
    w3 = chaintools.connect(own_anvil.url)
    token = chaintools.deploy_token_info(w3, "Tether USD", "USDT", 6)
    chaintools.mint(w3, token.address, chaintools.DEPLOYER_KEY, HOT_WALLET, 10**12)
    chaintools.node_request(w3, "evm_setAutomine", [False])
    return own_anvil, w3, token


def test_a_stuck_withdrawal_is_replaced_at_a_higher_fee_and_paid_once(api, db, db_url, stalled_chain):
    anvil, w3, token = stalled_chain
    user_with_wallet(db, USER_ID, USER_KEYS[0])
    target = chaintools.address_of(USER_KEYS[3])
    start_block = w3.eth.block_number + 1
    withdrawal_id = approved(db, target, 30 * UNIT)
    worker = start_worker(api, db_url, anvil.url, token, w3, CONFIRMATIONS=1, WITHDRAWAL_STUCK_S=2,
                          WITHDRAWAL_REPRICE_MAX=50)
    try:
        wait_until(lambda: status(db, withdrawal_id) == "BROADCAST", 20, "the withdrawal to be sent")
        wait_until(lambda: len(attempts(db, withdrawal_id)) >= 2 and node_knows(w3, attempts(db, withdrawal_id)[1]
                                                                                  ["tx_hash"]),
                   20, "the unmined transaction to be replaced")
        first, second = attempts(db, withdrawal_id)[:2]
        assert first["nonce"] == second["nonce"] and second["kind"] == "TRANSFER"
        for fee in ("max_fee_per_gas", "max_priority_fee_per_gas"):  # EIP-1559, each bumped past the 10 % rule
            assert second[fee] * 10 >= first[fee] * 11
        chaintools.mine(w3, 1)
        wait_until(lambda: status(db, withdrawal_id) == "CONFIRMED", 20, "the withdrawal to be settled")
        mined = [a for a in attempts(db, withdrawal_id) if a["mined_block"] is not None]
        assert len(mined) == 1 and mined[0]["id"] != first["id"]
        assert w3.eth.get_transaction(mined[0]["tx_hash"])["type"] == 2
        assert db.value("SELECT tx_hash FROM withdrawals WHERE id = %s", (withdrawal_id,)) == mined[0]["tx_hash"]
        assert paid_from_hot_wallet(w3, token.address, start_block) == [(target, 30 * UNIT)]
        told = api.wait_for(USER_ID, contains=f"#{withdrawal_id}")
        assert mined[0]["tx_hash"] in told["text"]
    finally:
        worker.stop()


def test_a_withdrawal_that_stays_stuck_has_its_nonce_freed_and_is_sent_again(api, db, db_url, stalled_chain):
    anvil, w3, token = stalled_chain
    user_with_wallet(db, USER_ID, USER_KEYS[0])
    target = chaintools.address_of(USER_KEYS[3])
    start_block = w3.eth.block_number + 1
    withdrawal_id = approved(db, target, 40 * UNIT)
    worker = start_worker(api, db_url, anvil.url, token, w3, CONFIRMATIONS=1, WITHDRAWAL_STUCK_S=2,
                          WITHDRAWAL_REPRICE_MAX=1)
    try:
        cancels = lambda: [a for a in attempts(db, withdrawal_id) if a["kind"] == "CANCEL"]
        wait_until(lambda: cancels() and node_knows(w3, cancels()[0]["tx_hash"]), 30,
                   "the re-priced transfer, still stuck, to be cancelled")
        stuck_nonce = cancels()[0]["nonce"]
        assert [a["kind"] for a in attempts(db, withdrawal_id)][:3] == ["TRANSFER", "TRANSFER", "CANCEL"]
        api.wait_for(ADMIN_ID, contains=f"Withdrawal #{withdrawal_id} (nonce {stuck_nonce}) needs attention")
        chaintools.mine(w3, 1)  # the cancel replaced the transfers: only it can be mined
        wait_until(lambda: status(db, withdrawal_id) == "APPROVED", 20, "the nonce to be freed")
        api.wait_for(ADMIN_ID, contains=f"Withdrawal #{withdrawal_id} could not be mined: its nonce {stuck_nonce}")
        assert paid_from_hot_wallet(w3, token.address, start_block) == []
        assert db.balance(USER_ID) == 0 and db.value("SELECT count(*) FROM ledger_entries "
                                                     "WHERE kind = 'withdrawal_refund'") == 0  # still held
        chaintools.node_request(w3, "evm_setAutomine", [True])
        wait_until(lambda: status(db, withdrawal_id) in ("BROADCAST", "CONFIRMED"), 30,
                   "the withdrawal to be sent again at a new nonce")
        chaintools.mine(w3, 1)
        wait_until(lambda: status(db, withdrawal_id) == "CONFIRMED", 20, "the withdrawal to be paid")
        assert db.value("SELECT nonce FROM withdrawals WHERE id = %s", (withdrawal_id,)) == stuck_nonce + 1
        assert paid_from_hot_wallet(w3, token.address, start_block) == [(target, 40 * UNIT)]
    finally:
        worker.stop()


def test_a_short_of_funds_flag_from_before_a_restart_is_derived_again(api, db, db_url, anvil, w3, token6):
    """A flag written before the worker stopped (since topped up) must not stay in status after a start."""
    db.rows("""INSERT INTO service_status (name, status) VALUES ('hot_wallet', %s)
               ON CONFLICT (name) DO UPDATE SET status = EXCLUDED.status, updated_at = now()""",
            (json.dumps({"short": True, "withdrawal": 1, "alerted_at": 0}),))
    worker = start_worker(api, db_url, anvil.url, token6, w3)
    try:
        short = lambda: db.value("SELECT status->'short' FROM service_status WHERE name = 'hot_wallet'")
        wait_until(lambda: short() is False, 20, "the stale flag to be rewritten from the current state")
    finally:
        worker.stop()
