"""worker.py through RPC outages: a cut link, a killed or frozen node, kill -9 of the worker, low funds, maintenance.

Everything is real: anvil, PostgreSQL, the Bot API stand-in and python worker.py as a
subprocess. In every test that sends withdrawals, the token transfers from the hot
wallet on chain must equal the CONFIRMED withdrawals: none lost, none paid twice.
"""
import collections
import tempfile

import pytest
from eth_account import Account
from psycopg.types.json import Jsonb
from web3.exceptions import TransactionNotFound

from chain import rpc
from chain.sender import WithdrawalSender
from devstack import chaintools
from devstack.procs import wait_until
from devstack.rpctap import DROP, RpcTap
from devstack.tcpproxy import TcpProxy
from dr import pg_breaker, rpc_breaker
from runtime.leadership import WorkerLease
from runtime.worker_context import build_worker_context
from tests.botharness import ADMIN_ID, Db
from tests.chainharness import (HOT_WALLET, HOT_WALLET_KEY, USER_KEYS, WorkerProcess, accept_hot_wallet_history,
                                user_with_wallet)
from tests.conftest import make_settings

USDT = 10**6  # base units of one token of a 6-decimal token
CHAIN_ID = 31337
BREAKER_DOWN = ("OPEN", "HALF_OPEN")
DEPOSIT_GAS = 100_000


# ---------------------------------------------------------------- fixtures and helpers

@pytest.fixture
def db(db_url):
    return Db(db_url)


class Workers:
    """Successive runs of worker.py with one configuration; each run keeps its own log as evidence."""

    def __init__(self):
        self.runs: list[WorkerProcess] = []
        self.config = None

    def configure(self, api, db_url: str, rpc_url: str, token_address: str, w3, **env) -> "Workers":
        env.setdefault("SCAN_START_BLOCK", w3.eth.block_number + 1)  # the session chain has history
        env.setdefault("STATE_DIR", tempfile.mkdtemp(prefix="worker-state-"))  # restarts on one machine: one site
        self.config = (api, db_url, rpc_url, token_address, env)
        return self

    def start(self) -> WorkerProcess:
        api, db_url, rpc_url, token_address, env = self.config
        run = WorkerProcess(api, db_url, rpc_url, token_address, **env)
        self.runs.append(run)  # before start(), so a failed start still shows its log
        return run.start()

    @property
    def current(self) -> WorkerProcess:
        return self.runs[-1]

    def alive(self) -> bool:
        return self.current.process.poll() is None

    def kill(self) -> None:
        self.current.kill()

    def stop_all(self) -> None:
        for run in self.runs:
            run.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {run.log_path}\n{run.log()}" for run in self.runs)


@pytest.fixture
def workers():
    runs = Workers()
    yield runs
    runs.stop_all()
    for run in runs.runs:  # shown by pytest when the test failed
        print(f"===== worker log {run.log_path} (last 6000 chars)\n{run.log()[-6000:]}")


class Depositor:
    """Token transfers from one dev wallet, signed here and sent without a receipt wait (anvil automines)."""

    def __init__(self, w3, token_address: str, key: str):
        self.w3 = w3
        self.key = key
        self.address = chaintools.address_of(key)
        self.contract = chaintools.token_contract(w3, token_address)
        self.nonce = w3.eth.get_transaction_count(self.address, "pending")
        self.gas_price = w3.eth.gas_price * 2  # empty blocks only lower the base fee

    def send(self, to: str, amount: int) -> str:
        data = self.contract.encode_abi("transfer", args=[to, amount])
        tx = {"to": self.contract.address, "data": data, "value": 0, "gas": DEPOSIT_GAS,
              "gasPrice": self.gas_price, "nonce": self.nonce, "chainId": CHAIN_ID}
        signed = Account.sign_transaction(tx, self.key)
        self.nonce += 1
        return self.w3.eth.send_raw_transaction(signed.raw_transaction).to_0x_hex().lower()


def status_of(db: Db, name: str) -> dict:
    return db.value("SELECT status FROM service_status WHERE name = %s", (name,)) or {}


def status_updated_at(db: Db, name: str):
    return db.value("SELECT updated_at FROM service_status WHERE name = %s", (name,))


def wait_for_more_status_reports(db: Db, reports: int = 2) -> None:
    """Poll until the worker wrote its 'rpc' status `reports` more times: proof its loop runs on."""
    for _ in range(reports):
        before = status_updated_at(db, "rpc")
        wait_until(lambda: status_updated_at(db, "rpc") not in (None, before), 10, "another worker status report")


def credited(db: Db, user_id: int) -> int:
    return int(db.value("SELECT balance FROM users WHERE id = %s", (user_id,)) or 0)


def deposit_entries(db: Db) -> int:
    return db.value("SELECT count(*) FROM ledger_entries WHERE kind = 'deposit'")


def cursor(db: Db) -> int | None:
    return db.value("SELECT last_block FROM chain_cursor")


def scan_caught_up(db: Db, w3, confirmations: int) -> bool:
    return (cursor(db) or -1) >= w3.eth.block_number - confirmations + 1


def withdrawal_status(db: Db, withdrawal_id: int) -> str:
    return db.value("SELECT status FROM withdrawals WHERE id = %s", (withdrawal_id,))


def approved_withdrawal(db: Db, user_id: int, to: str, amount: int) -> int:
    return db.value("""INSERT INTO withdrawals (user_id, status, amount, fee, to_address, approved_at)
                       VALUES (%s, 'APPROVED', %s, 0, %s, now()) RETURNING id""", (user_id, amount, to.lower()))


def statuses(db: Db) -> collections.Counter:
    """How many withdrawals are in each status, read in one query (one consistent snapshot)."""
    return collections.Counter(r["status"] for r in db.rows("SELECT status FROM withdrawals"))


def counted(db: Db, *wanted: str) -> int:
    """Withdrawals in any of the `wanted` statuses, from one snapshot (never count a moving row twice)."""
    now = statuses(db)
    return sum(now[status] for status in wanted)


def hot_wallet_transfers(w3, token_address: str, from_block: int) -> list[dict]:
    return [e for e in chaintools.transfer_events(w3, token_address, from_block) if e["from"] == HOT_WALLET]


def confirm_all(db: Db, w3, count: int, confirmations: int) -> None:
    """Wait until `count` withdrawals are on chain, mine their confirmations, wait until all are CONFIRMED."""
    wait_until(lambda: counted(db, "BROADCAST", "CONFIRMED") == count, 30,
               f"{count} withdrawal(s) to be broadcast")
    wait_until_mined(db, w3)
    chaintools.mine(w3, confirmations)
    try:
        wait_until(lambda: statuses(db)["CONFIRMED"] == count, 30, f"{count} withdrawal(s) to be confirmed")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; head {w3.eth.block_number}; not confirmed: {unconfirmed(db, w3)}") from None


def unconfirmed(db: Db, w3) -> list[dict]:
    """Evidence for a failure: each withdrawal not CONFIRMED with where its transaction is on chain."""
    found = []
    for row in db.rows("SELECT id, status, nonce, tx_hash FROM withdrawals WHERE status <> 'CONFIRMED' ORDER BY id"):
        receipt = w3.eth.get_transaction_receipt(row["tx_hash"]) if row["tx_hash"] else None
        found.append({**row, "block": receipt and receipt["blockNumber"], "ok": receipt and receipt["status"]})
    return found


def wait_until_mined(db: Db, w3) -> None:
    """anvil automines a little after it accepts a transaction: wait for the receipts of all that were sent."""
    for row in db.rows("SELECT tx_hash FROM withdrawals WHERE status IN ('BROADCAST', 'CONFIRMED')"):
        w3.eth.wait_for_transaction_receipt(row["tx_hash"], timeout=10, poll_latency=0.05)


def assert_chain_matches_confirmed(db: Db, w3, token_address: str, from_block: int) -> list[dict]:
    """Transfers from the hot wallet == CONFIRMED withdrawals: same count, recipients, amounts, hashes."""
    events = hot_wallet_transfers(w3, token_address, from_block)
    confirmed = db.rows("SELECT * FROM withdrawals WHERE status = 'CONFIRMED' ORDER BY id")
    assert len(events) == len(confirmed), (events, confirmed)
    assert sorted((e["to"].lower(), e["value"]) for e in events) == \
        sorted((r["to_address"], int(r["amount"])) for r in confirmed)
    assert sorted(e["tx_hash"].lower() for e in events) == sorted(r["tx_hash"] for r in confirmed)
    return events


def insert_notification(db: Db, chat_id: int, key: str) -> None:
    """What db.notifications.enqueue writes: a durable promise to tell `chat_id` 'Cancelled.'."""
    db.rows("INSERT INTO notification_outbox (chat_id, payload, idempotency_key) VALUES (%s, %s, %s)",
            (chat_id, Jsonb({"text": "cancelled", "values": {}}), key))


def fund_users(db: Db, w3, token_address: str, users: dict[int, str], units: int) -> None:
    for user_id, key in users.items():
        user_with_wallet(db, user_id, key)
        chaintools.mint(w3, token_address, chaintools.DEPLOYER_KEY, chaintools.address_of(key), units)


def recipient(n: int) -> str:
    return "0x" + f"{0xabc000 + n:040x}"


# ---------------------------------------------------------------- 1. RPC unreachable for 2,000 blocks

def test_rpc_cut_for_2000_blocks_then_every_transfer_is_credited_once(api, db, db_url, anvil, w3, token6, workers):
    users = {7101: USER_KEYS[0], 7102: USER_KEYS[1], 7103: USER_KEYS[2]}
    fund_users(db, w3, token6.address, users, 10**12)
    proxy = TcpProxy(target_port=anvil.port).start()
    try:
        workers.configure(api, db_url, proxy.url, token6.address, w3, CONFIRMATIONS=2, SCAN_CHUNK_BLOCKS=250).start()
        wait_until(lambda: cursor(db) is not None and status_of(db, "rpc").get("breaker") == "CLOSED", 20,
                   "the worker to scan through the proxy")

        proxy.cut()
        wait_until(lambda: status_of(db, "rpc").get("breaker") in BREAKER_DOWN, 15,
                   "the worker's RPC breaker to open while the link is cut")
        cursor_at_cut = cursor(db)
        first_block = w3.eth.block_number + 1
        depositors = {user_id: Depositor(w3, token6.address, key) for user_id, key in users.items()}
        expected = collections.Counter()
        sent = set()
        for i in range(300):
            user_id = 7101 + i % 3
            amount = USDT + 1000 * i  # all different
            sent.add(depositors[user_id].send(HOT_WALLET, amount))
            expected[user_id] += amount
            if i % 3 == 2:
                chaintools.mine(w3, 17)  # 300 transfer blocks + 100 x 17 empty ones = 2,000 blocks
        on_chain = lambda: [e for e in chaintools.transfer_events(w3, token6.address, first_block)
                            if e["to"] == HOT_WALLET and e["tx_hash"].lower() in sent]
        wait_until(lambda: len(on_chain()) == 300, 10, "all 300 transfers to be mined")
        chaintools.mine(w3, max(0, first_block + 2000 - 1 - w3.eth.block_number))
        assert w3.eth.block_number - first_block + 1 == 2000

        assert workers.alive(), workers.logs()
        assert deposit_entries(db) == 0 and db.value("SELECT count(*) FROM deposits") == 0
        assert cursor(db) == cursor_at_cut
        assert status_of(db, "rpc").get("breaker") in BREAKER_DOWN

        proxy.restore()
        total = sum(expected.values())
        wait_until(lambda: sum(credited(db, u) for u in users) == total, 60,
                   "every transfer made during the cut to be credited")
        wait_until(lambda: scan_caught_up(db, w3, 2), 20, "the scan to catch up")
        wait_until(lambda: status_of(db, "rpc").get("breaker") == "CLOSED", 10, "the breaker to close")

        assert deposit_entries(db) == 300
        assert db.value("SELECT count(*) FROM deposits") == 300
        assert db.value("SELECT count(DISTINCT (tx_hash, log_index)) FROM deposits") == 300
        assert {r["tx_hash"] for r in db.rows("SELECT tx_hash FROM deposits")} == sent
        assert db.value("SELECT count(DISTINCT idempotency_key) FROM ledger_entries WHERE kind = 'deposit'") == 300
        for user_id, amount in expected.items():
            assert credited(db, user_id) == amount
            assert int(db.value("SELECT sum(credited_amount) FROM deposits WHERE user_id = %s", (user_id,))) == amount
        assert workers.alive()
    finally:
        proxy.stop()


# ---------------------------------------------------------------- 2. the node itself killed and restarted

def test_node_killed_and_restarted_from_its_state_file(api, db, db_url, own_anvil, workers):
    w3 = chaintools.connect(own_anvil.url)
    token = chaintools.deploy_token_info(w3, "Tether USD", "USDT", 6)
    user_id, key = 7201, USER_KEYS[0]
    fund_users(db, w3, token.address, {user_id: key}, 10**12)
    workers.configure(api, db_url, own_anvil.url, token.address, w3, CONFIRMATIONS=4).start()

    first = chaintools.transfer(w3, token.address, key, HOT_WALLET, 5 * USDT)
    chaintools.mine(w3, 3)
    wait_until(lambda: credited(db, user_id) == 5 * USDT, 20, "the first deposit to be credited")

    before_kill = [chaintools.transfer(w3, token.address, key, HOT_WALLET, 7 * USDT),
                   chaintools.transfer(w3, token.address, key, HOT_WALLET, 11 * USDT)]
    chaintools.mine(w3, 1)  # not yet 4 confirmations for either
    wait_until(lambda: scan_caught_up(db, w3, 4), 20, "the scan to reach the head")
    height = w3.eth.block_number
    own_anvil.dump_state()
    own_anvil.kill()

    wait_until(lambda: status_of(db, "rpc").get("breaker") in BREAKER_DOWN, 15, "the breaker to open")
    wait_for_more_status_reports(db)
    assert workers.alive(), workers.logs()
    assert credited(db, user_id) == 5 * USDT

    own_anvil.start()
    assert w3.eth.block_number == height
    assert all(w3.eth.get_transaction_receipt(h).status == 1 for h in before_kill)
    chaintools.mine(w3, 4)
    wait_until(lambda: credited(db, user_id) == 23 * USDT, 30, "the transfers made before the kill to be credited")

    after = chaintools.transfer(w3, token.address, key, HOT_WALLET, 13 * USDT)
    chaintools.mine(w3, 4)
    wait_until(lambda: credited(db, user_id) == 36 * USDT, 20, "a transfer after the restart to be credited")
    wait_until(lambda: scan_caught_up(db, w3, 4), 20, "the scan to catch up")

    assert workers.alive() and len(workers.runs) == 1
    assert deposit_entries(db) == 4
    rows = db.rows("SELECT tx_hash, log_index, credited_amount FROM deposits ORDER BY id")
    assert [r["tx_hash"] for r in rows] == [h.lower() for h in [first, *before_kill, after]]
    assert [int(r["credited_amount"]) for r in rows] == [5 * USDT, 7 * USDT, 11 * USDT, 13 * USDT]
    wait_until(lambda: status_of(db, "rpc").get("breaker") == "CLOSED", 10, "the breaker to close")


# ---------------------------------------------------------------- 3. the node frozen mid-scan and mid-broadcast

def test_frozen_node_during_a_scan_and_a_broadcast_leaves_other_jobs_running(api, db, db_url, own_anvil, workers):
    w3 = chaintools.connect(own_anvil.url)
    token = chaintools.deploy_token_info(w3, "Tether USD", "USDT", 6)
    user_id, key = 7301, USER_KEYS[0]
    fund_users(db, w3, token.address, {user_id: key}, 10**12)
    chaintools.mint(w3, token.address, chaintools.DEPLOYER_KEY, HOT_WALLET, 10**12)
    first_block = w3.eth.block_number
    proxy = RpcTap(own_anvil.port).start()
    try:
        workers.configure(api, db_url, proxy.url, token.address, w3, CONFIRMATIONS=3).start()

        # -- frozen while the worker asks for the logs holding a pending deposit
        deposit_tx = chaintools.transfer(w3, token.address, key, HOT_WALLET, 9 * USDT)
        wait_until(lambda: scan_caught_up(db, w3, 3), 20, "the scan to reach the block before the deposit")
        scan_frozen = proxy.arm("eth_getLogs", own_anvil.freeze)
        chaintools.mine(w3, 3)  # the deposit is now due: the next scan asks for its logs
        wait_until(scan_frozen.is_set, 15, "the worker to scan into the frozen node")
        try:
            insert_notification(db, 7390, "test:frozen-scan")
            api.wait_for(7390, contains="Cancelled.", timeout=15)
            wait_until(lambda: status_of(db, "rpc").get("breaker") in BREAKER_DOWN, 15, "the breaker to open")
            wait_for_more_status_reports(db)
            assert workers.alive(), workers.logs()
            assert credited(db, user_id) == 0
        finally:
            own_anvil.thaw()
        wait_until(lambda: credited(db, user_id) == 9 * USDT, 20, "the pending deposit to be credited after thaw")

        # -- frozen at the moment the worker broadcasts a withdrawal
        target = chaintools.address_of(USER_KEYS[3])
        broadcast_frozen = proxy.arm("eth_sendRawTransaction", own_anvil.freeze)
        withdrawal_id = approved_withdrawal(db, user_id, target, 4 * USDT)
        wait_until(broadcast_frozen.is_set, 15, "the worker to broadcast into the frozen node")
        try:
            assert withdrawal_status(db, withdrawal_id) == "SIGNED"  # committed before a byte left
            insert_notification(db, 7391, "test:frozen-broadcast")
            api.wait_for(7391, contains="Cancelled.", timeout=15)
            wait_for_more_status_reports(db)
            assert workers.alive(), workers.logs()
            assert withdrawal_status(db, withdrawal_id) == "SIGNED"
        finally:
            own_anvil.thaw()
        confirm_all(db, w3, 1, 3)

        assert deposit_entries(db) == 1
        assert db.value("SELECT tx_hash FROM deposits") == deposit_tx.lower()
        events = assert_chain_matches_confirmed(db, w3, token.address, first_block)
        assert [(e["to"], e["value"]) for e in events] == [(target, 4 * USDT)]
        assert workers.alive() and len(workers.runs) == 1
    finally:
        proxy.stop()


# ---------------------------------------------------------------- 4. worker kill -9 around the broadcast

def sign_like_the_worker(db_url: str, rpc_url: str, token_address: str) -> tuple[int, rpc.SignedTransfer]:
    """The worker's own WithdrawalSender.sign_next, in a context built as the worker builds it; then "die"."""
    accept_hot_wallet_history(db_url, rpc_url)
    settings = make_settings(DATABASE_URL=db_url, RPC_URL=rpc_url, TOKEN_ADDRESS=token_address, CHAIN_ID=CHAIN_ID,
                             HOT_WALLET_PRIVATE_KEY=HOT_WALLET_KEY, BOT_TOKEN="123456:TEST-token_value")
    wctx = build_worker_context(settings, "test-signer", rpc_breaker(settings), pg_breaker(settings))
    wctx.lease = WorkerLease(wctx.transaction, site="test-signer")
    try:
        assert wctx.lease.renew()
        return WithdrawalSender(wctx).sign_next()
    finally:
        wctx.lease.release()  # so the worker started next need not wait out the lease of this "dead" one
        wctx.pool.close()


@pytest.mark.parametrize("sent_before_crash", [False, True], ids=["crash-before-send", "crash-after-send"])
def test_withdrawal_signed_before_a_crash_is_sent_exactly_once(api, db, db_url, anvil, w3, token6, workers,
                                                               sent_before_crash):
    user_id = 7401
    user_with_wallet(db, user_id, USER_KEYS[0])
    chaintools.mint(w3, token6.address, chaintools.DEPLOYER_KEY, HOT_WALLET, 10**12)
    target = chaintools.address_of(USER_KEYS[4])
    first_block = w3.eth.block_number
    withdrawal_id = approved_withdrawal(db, user_id, target, 25 * USDT)

    signed_id, signed = sign_like_the_worker(db_url, anvil.url, token6.address)
    assert signed_id == withdrawal_id and withdrawal_status(db, withdrawal_id) == "SIGNED"
    if sent_before_crash:  # the bytes left, the process died before committing BROADCAST
        w3.eth.send_raw_transaction(signed.raw)
        assert w3.eth.wait_for_transaction_receipt(signed.tx_hash, timeout=10, poll_latency=0.05).status == 1

    workers.configure(api, db_url, anvil.url, token6.address, w3, CONFIRMATIONS=2).start()
    confirm_all(db, w3, 1, 2)

    events = assert_chain_matches_confirmed(db, w3, token6.address, first_block)
    assert [(e["to"], e["value"], e["tx_hash"].lower()) for e in events] == [(target, 25 * USDT, signed.tx_hash)]
    row = db.rows("SELECT * FROM withdrawals WHERE id = %s", (withdrawal_id,))[0]
    assert row["tx_hash"] == signed.tx_hash and row["nonce"] == signed.nonce and bytes(row["raw_tx"]) == signed.raw
    api.wait_for(user_id, contains=signed.tx_hash)
    chaintools.mine(w3, 3)
    wait_for_more_status_reports(db)
    assert len(hot_wallet_transfers(w3, token6.address, first_block)) == 1


def test_worker_killed_between_broadcast_and_confirmation(api, db, db_url, anvil, w3, token6, workers):
    user_id = 7411
    user_with_wallet(db, user_id, USER_KEYS[0])
    chaintools.mint(w3, token6.address, chaintools.DEPLOYER_KEY, HOT_WALLET, 10**12)
    target = chaintools.address_of(USER_KEYS[4])
    first_block = w3.eth.block_number
    withdrawal_id = approved_withdrawal(db, user_id, target, 31 * USDT)
    workers.configure(api, db_url, anvil.url, token6.address, w3, CONFIRMATIONS=3).start()
    wait_until(lambda: withdrawal_status(db, withdrawal_id) == "BROADCAST", 20, "the withdrawal to be broadcast")
    workers.kill()

    wait_until_mined(db, w3)
    assert len(hot_wallet_transfers(w3, token6.address, first_block)) == 1
    chaintools.mine(w3, 3)
    assert withdrawal_status(db, withdrawal_id) == "BROADCAST"
    workers.start()
    wait_until(lambda: withdrawal_status(db, withdrawal_id) == "CONFIRMED", 20, "the withdrawal to be confirmed")

    events = assert_chain_matches_confirmed(db, w3, token6.address, first_block)
    assert [(e["to"], e["value"]) for e in events] == [(target, 31 * USDT)]
    told = api.wait_for(user_id, contains=f"#{withdrawal_id}")
    assert events[0]["tx_hash"].lower() in told["text"]
    wait_for_more_status_reports(db)
    assert len([m for m in api.messages(user_id) if f"#{withdrawal_id}" in m["text"]]) == 1


def test_chaos_kill_9_twice_while_sending_eight_withdrawals(api, db, db_url, anvil, w3, token6, workers):
    """kill -9 exactly between SIGNED and the bytes reaching the node, then between sending and BROADCAST."""
    user_id = 7421
    user_with_wallet(db, user_id, USER_KEYS[0])
    chaintools.mint(w3, token6.address, chaintools.DEPLOYER_KEY, HOT_WALLET, 10**12)
    first_block = w3.eth.block_number
    wanted = {recipient(n): (n + 1) * USDT + n for n in range(8)}
    ids = [approved_withdrawal(db, user_id, to, amount) for to, amount in wanted.items()]
    in_flight = lambda: counted(db, "SIGNED", "BROADCAST")
    signed_row = lambda: db.rows("SELECT * FROM withdrawals WHERE status = 'SIGNED'")
    proxy = RpcTap(anvil.port).start()
    try:
        workers.configure(api, db_url, proxy.url, token6.address, w3, CONFIRMATIONS=40)

        workers.start()
        wait_until(lambda: in_flight() >= 2, 20, "some withdrawals to be signed and sent")
        crashed = proxy.arm("eth_sendRawTransaction", lambda: (workers.kill(), DROP)[1])
        wait_until(crashed.is_set, 20, "the worker to die as it broadcasts")
        assert not workers.alive()
        [lost] = signed_row()  # committed as SIGNED; its bytes never reached the node
        with pytest.raises(TransactionNotFound):
            w3.eth.get_transaction(lost["tx_hash"])
        wait_until_mined(db, w3)
        assert len(hot_wallet_transfers(w3, token6.address, first_block)) == statuses(db)["BROADCAST"]

        workers.start()
        later = ids.index(lost["id"]) + 2  # in flight once the lost one is re-sent and one more signed
        wait_until(lambda: withdrawal_status(db, lost["id"]) == "BROADCAST" and in_flight() >= later, 20,
                   "the lost withdrawal to be re-sent and one more signed")
        # the node accepts the bytes; the worker dies before it hears so (and before committing BROADCAST)
        crashed = proxy.arm("eth_sendRawTransaction", lambda: (workers.kill(), DROP)[1], on="response")
        wait_until(crashed.is_set, 20, "the worker to die right after broadcasting")
        assert not workers.alive()
        [unrecorded] = signed_row()
        assert w3.eth.wait_for_transaction_receipt(unrecorded["tx_hash"], timeout=10, poll_latency=0.05).status == 1

        workers.start()
        wait_until(lambda: statuses(db)["BROADCAST"] == 8, 30, "all eight to be broadcast")
        wait_until_mined(db, w3)
        assert statuses(db)["CONFIRMED"] == 0  # 40 confirmations keep them BROADCAST
        chaintools.mine(w3, 40)
        wait_until(lambda: statuses(db)["CONFIRMED"] == 8, 30, "all eight to be confirmed")
    finally:
        proxy.stop()

    events = assert_chain_matches_confirmed(db, w3, token6.address, first_block)
    assert len(events) == 8 and len(workers.runs) == 3
    assert sorted((e["to"].lower(), e["value"]) for e in events) == sorted(wanted.items())
    rows = db.rows("SELECT * FROM withdrawals ORDER BY nonce")
    assert [r["nonce"] for r in rows] == list(range(rows[0]["nonce"], rows[0]["nonce"] + 8))
    assert sorted(r["id"] for r in rows if r["status"] == "CONFIRMED") == ids
    by_id = {r["id"]: r for r in rows}
    assert by_id[lost["id"]]["tx_hash"] == lost["tx_hash"]  # the same signed bytes, never a second signature
    assert by_id[unrecorded["id"]]["tx_hash"] == unrecorded["tx_hash"]


# ---------------------------------------------------------------- 5. nonces stay consecutive

def test_fifteen_withdrawals_use_consecutive_nonces(api, db, db_url, anvil, w3, token6, workers):
    user_id = 7501
    user_with_wallet(db, user_id, USER_KEYS[0])
    chaintools.mint(w3, token6.address, chaintools.DEPLOYER_KEY, HOT_WALLET, 10**12)
    first_block = w3.eth.block_number
    wanted = {recipient(100 + n): 2 * USDT + n for n in range(15)}
    for to, amount in wanted.items():
        approved_withdrawal(db, user_id, to, amount)
    workers.configure(api, db_url, anvil.url, token6.address, w3, CONFIRMATIONS=2).start()
    confirm_all(db, w3, 15, 2)

    events = assert_chain_matches_confirmed(db, w3, token6.address, first_block)
    assert len(events) == 15
    assert sorted((e["to"].lower(), e["value"]) for e in events) == sorted(wanted.items())
    rows = db.rows("SELECT id, nonce, tx_hash FROM withdrawals ORDER BY id")
    nonces = [r["nonce"] for r in rows]
    assert nonces == list(range(nonces[0], nonces[0] + 15))
    for row in rows:
        tx = w3.eth.get_transaction(row["tx_hash"])
        assert tx["nonce"] == row["nonce"] and tx["from"] == HOT_WALLET


# ---------------------------------------------------------------- 6. hot wallet short of funds

def test_hot_wallet_short_of_tokens_alerts_admins_once_then_sends_when_topped_up(api, db, db_url, anvil, w3, token6,
                                                                                  workers):
    user_id = 7601
    user_with_wallet(db, user_id, USER_KEYS[0])
    chaintools.mint(w3, token6.address, chaintools.DEPLOYER_KEY, HOT_WALLET, 5 * USDT)
    target = chaintools.address_of(USER_KEYS[5])
    first_block = w3.eth.block_number
    withdrawal_id = approved_withdrawal(db, user_id, target, 40 * USDT)
    workers.configure(api, db_url, anvil.url, token6.address, w3, CONFIRMATIONS=2).start()

    alert = api.wait_for(ADMIN_ID, contains=f"withdrawal #{withdrawal_id}", timeout=15)
    assert f"it has 5 {token6.symbol}" in alert["text"] and HOT_WALLET.lower() in alert["text"].lower()
    wait_until(lambda: status_of(db, "hot_wallet").get("short") is True, 10, "the hot wallet status to say short")
    hot = status_of(db, "hot_wallet")
    assert hot["withdrawal"] == withdrawal_id and hot["token_balance"] == "5"
    alerted_at = status_updated_at(db, "hot_wallet")
    # the sender keeps checking (and re-reporting) for a while: still no second alert
    wait_until(lambda: db.value("SELECT updated_at > %s + interval '2 seconds' FROM service_status "
                                "WHERE name = 'hot_wallet'", (alerted_at,)), 15, "more sender runs")
    wait_for_more_status_reports(db)
    assert len(api.messages(ADMIN_ID)) == 1, api.messages(ADMIN_ID)
    assert db.value("SELECT count(*) FROM notification_outbox WHERE chat_id = %s", (ADMIN_ID,)) == 1
    assert withdrawal_status(db, withdrawal_id) == "APPROVED"
    assert hot_wallet_transfers(w3, token6.address, first_block) == []

    chaintools.mint(w3, token6.address, chaintools.DEPLOYER_KEY, HOT_WALLET, 100 * USDT)
    confirm_all(db, w3, 1, 2)
    wait_until(lambda: status_of(db, "hot_wallet").get("short") is False, 10, "the hot wallet status to clear")
    events = assert_chain_matches_confirmed(db, w3, token6.address, first_block)
    assert [(e["to"], e["value"]) for e in events] == [(target, 40 * USDT)]
    assert len(api.messages(ADMIN_ID)) == 1


# ---------------------------------------------------------------- 7. maintenance mode from a live .env edit

def test_maintenance_mode_pauses_chain_work_and_resumes_from_the_cursor(api, db, db_url, anvil, w3, token6, workers,
                                                                        tmp_path):
    depositor_id, withdrawer_id, key = 7701, 7702, USER_KEYS[0]
    fund_users(db, w3, token6.address, {depositor_id: key}, 10**12)
    user_with_wallet(db, withdrawer_id, USER_KEYS[1])
    chaintools.mint(w3, token6.address, chaintools.DEPLOYER_KEY, HOT_WALLET, 10**12)
    target = chaintools.address_of(USER_KEYS[6])
    withdrawal_id = approved_withdrawal(db, withdrawer_id, target, 30 * USDT)
    open_request = """INSERT INTO deposits (user_id, status, requested_amount, level_version, level, expires_at)
                      VALUES (%s, 'PENDING_NETWORK_RECOVERY', %s, 1, 1, now() + interval '1 hour') RETURNING id"""
    matched_id = db.value(open_request, (depositor_id, 12 * USDT + 500_000))
    unmatched_id = db.value(open_request, (depositor_id, 99 * USDT))
    # a previous run scanned up to the head: that cursor is where scanning must resume
    head = w3.eth.block_number
    stream = f"deposits:{token6.address}:{HOT_WALLET}".lower()
    db.rows("INSERT INTO chain_cursor (stream, last_block, block_hash) VALUES (%s, %s, %s)",
            (stream, head, w3.eth.get_block(head)["hash"].to_0x_hex().lower()))
    env_file = tmp_path / "worker.env"
    env_file.write_text("BLOCKCHAIN_MAINTENANCE_MODE=true\n")
    first_block = head + 1
    workers.configure(api, db_url, anvil.url, token6.address, w3, CONFIRMATIONS=2, ENV_FILE=env_file).start()

    wait_until(lambda: status_of(db, "rpc").get("maintenance") is True, 10, "the worker to report maintenance")
    matching_tx = chaintools.transfer(w3, token6.address, key, HOT_WALLET, 12 * USDT + 500_000)
    unrequested_tx = chaintools.transfer(w3, token6.address, key, HOT_WALLET, 4 * USDT)
    chaintools.mine(w3, 20)
    wait_for_more_status_reports(db, 3)  # the loop ran on through the new blocks
    assert status_of(db, "rpc").get("maintenance") is True
    assert deposit_entries(db) == 0 and credited(db, depositor_id) == 0
    assert cursor(db) == head
    assert withdrawal_status(db, withdrawal_id) == "APPROVED"
    assert {r["status"] for r in db.rows("SELECT status FROM deposits")} == {"PENDING_NETWORK_RECOVERY"}
    assert hot_wallet_transfers(w3, token6.address, first_block) == []
    assert workers.alive()

    env_file.write_text("BLOCKCHAIN_MAINTENANCE_MODE=false\n")
    wait_until(lambda: credited(db, depositor_id) == 16 * USDT + 500_000, 5,
               "scanning to resume within 5 s of the .env edit")
    wait_until(lambda: db.value("SELECT status FROM deposits WHERE id = %s", (unmatched_id,)) == "PENDING", 10,
               "the unmatched request to go back to PENDING")
    confirm_all(db, w3, 1, 2)
    wait_until(lambda: status_of(db, "rpc").get("maintenance") is False, 5, "the status to show maintenance off")

    matched = db.rows("SELECT * FROM deposits WHERE id = %s", (matched_id,))[0]
    assert matched["status"] == "CONFIRMED" and matched["tx_hash"] == matching_tx.lower()
    assert int(matched["credited_amount"]) == 12 * USDT + 500_000
    unmatched = db.rows("SELECT *, expires_at > now() + interval '23 hours' AS fresh FROM deposits WHERE id = %s",
                        (unmatched_id,))[0]
    assert unmatched["tx_hash"] is None and unmatched["fresh"]
    other = db.rows("SELECT * FROM deposits WHERE tx_hash = %s", (unrequested_tx.lower(),))
    assert len(other) == 1 and other[0]["user_id"] == depositor_id and other[0]["requested_amount"] is None
    assert deposit_entries(db) == 2
    events = assert_chain_matches_confirmed(db, w3, token6.address, first_block)
    assert [(e["to"], e["value"]) for e in events] == [(target, 30 * USDT)]
