"""Money operations on real PostgreSQL: holds, credits and refunds exactly once, under concurrency."""
import itertools
import secrets
import threading
from datetime import timedelta

import pytest

from core.fees import Fees
from core.errors import DatabaseError, InsufficientFunds, InvalidTransition, NotFound, WalletInUse
from db import deposits, ledger, levels, users, wallets, withdrawals
from db.deposits import Transfer
from db.pool import transaction
from devstack import chaintools
from tests.walletharness import bind_proven, new_key

ROUNDS = 20
THREADS = 50
UNIT = 10**6  # a token with 6 decimals
HOT = "0x" + "70" * 20  # the hot wallet that signs in these tests
FEES = Fees(max_fee=2 * 10**9, priority_fee=10**9)
_ids = itertools.count(1000)


def new_user(pool, balance: int = 0, wallet_key: str | None = None) -> int:
    user_id = next(_ids)
    with transaction(pool) as conn:
        users.register(conn, user_id, f"user{user_id}", "en")
        if wallet_key:
            bind_proven(conn, user_id, wallet_key)
        if balance:
            ledger.post(conn, user_id=user_id, amount=balance, kind="adjustment",
                        reference="test", key=f"test:funding:{user_id}")
    return user_id


def request_withdrawal(conn, **request) -> dict:
    """A new withdrawal request, as one confirmation tap creates it (a fresh request key)."""
    return withdrawals.request_once(conn, request_key=f"test:{secrets.token_hex(8)}", **request).withdrawal


def ledger_entries(conn, user_id: int) -> list[dict]:
    return conn.execute("SELECT * FROM ledger_entries WHERE user_id = %s ORDER BY id DESC", (user_id,)).fetchall()


def user_with_wallet(pool) -> tuple[int, str]:
    """A user who proved a wallet (at block 0); returns the user id and the wallet's address."""
    key = new_key()
    return new_user(pool, wallet_key=key), chaintools.address_of(key)


def random_address() -> str:
    return "0x" + secrets.token_hex(20)


def transfer(sender: str, amount: int, log_index: int = 0, tx_hash: str | None = None) -> Transfer:
    return Transfer(tx_hash=tx_hash or "0x" + secrets.token_hex(32), log_index=log_index, block_number=100,
                    block_hash="0x" + secrets.token_hex(32), from_address=sender, amount=amount)


def run_concurrently(count: int, action) -> list:
    """Start `count` threads at one barrier; return each one's result or exception."""
    barrier = threading.Barrier(count)
    results = [None] * count

    def worker(index):
        barrier.wait()
        try:
            results[index] = action(index)
        except Exception as exc:  # every outcome is inspected by the caller
            results[index] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return results


def balance_of(pool, user_id: int) -> int:
    with transaction(pool) as conn:
        return ledger.balance(conn, user_id)


def test_fifty_concurrent_withdrawals_against_a_balance_for_one(pool):
    for _ in range(ROUNDS):
        user_id = new_user(pool, balance=10 * UNIT)

        def withdraw(_index):
            with transaction(pool) as conn:
                return request_withdrawal(conn, user_id=user_id, amount=9 * UNIT, fee=UNIT,
                                          to_address=random_address(), auto_approve_max=0)

        results = run_concurrently(THREADS, withdraw)
        succeeded = [r for r in results if isinstance(r, dict)]
        refused = [r for r in results if isinstance(r, InsufficientFunds)]
        assert len(succeeded) == 1 and len(refused) == THREADS - 1, [r for r in results if not isinstance(r, (dict, InsufficientFunds))]
        assert balance_of(pool, user_id) == 0
        with transaction(pool) as conn:
            assert len(withdrawals.for_user(conn, user_id)) == 1
            holds = [e for e in ledger_entries(conn, user_id) if e["kind"] == "withdrawal_hold"]
            assert [e["amount"] for e in holds] == [-10 * UNIT]
            assert all(e["balance_after"] >= 0 for e in ledger_entries(conn, user_id))


def test_balance_never_negative_even_for_direct_sql(pool):
    user_id = new_user(pool, balance=UNIT)
    with pytest.raises(InsufficientFunds):
        with transaction(pool) as conn:
            ledger.post(conn, user_id=user_id, amount=-2 * UNIT, kind="adjustment", reference="t", key="t:overdraw")
    with pytest.raises(DatabaseError, match="only through ledger"):
        with transaction(pool) as conn:
            conn.execute("UPDATE users SET balance = 10 WHERE id = %s", (user_id,))
    with pytest.raises(DatabaseError, match="append-only"):
        with transaction(pool) as conn:
            conn.execute("DELETE FROM ledger_entries WHERE user_id = %s", (user_id,))
    assert balance_of(pool, user_id) == UNIT


def test_same_transfer_credited_once_sequentially(pool):
    user_id, wallet = user_with_wallet(pool)
    event = transfer(wallet, 50 * UNIT)
    with transaction(pool) as conn:
        first = deposits.record_transfer(conn, event)
    with transaction(pool) as conn:
        second = deposits.record_transfer(conn, event)
    assert first.credited and not second.credited
    assert first.deposit["id"] == second.deposit["id"]
    assert balance_of(pool, user_id) == 50 * UNIT


def test_same_transfer_credited_once_concurrently(pool):
    for _ in range(ROUNDS):
        user_id, wallet = user_with_wallet(pool)
        with transaction(pool) as conn:
            version = levels.current(conn)[0].version
            for _request in range(3):  # several open requests of the same amount: only one is used
                deposits.create_request(conn, user_id=user_id, amount=50 * UNIT, level_version=version,
                                        level=1, ttl=timedelta(hours=1))
        event = transfer(wallet, 50 * UNIT, log_index=3)

        def credit(_index):
            with transaction(pool) as conn:
                return deposits.record_transfer(conn, event)

        results = run_concurrently(THREADS, credit)
        errors = [r for r in results if isinstance(r, Exception)]
        assert errors == []
        assert sum(r.credited for r in results) == 1
        assert len({r.deposit["id"] for r in results}) == 1
        assert balance_of(pool, user_id) == 50 * UNIT
        with transaction(pool) as conn:
            rows = deposits.for_user(conn, user_id)
            assert sorted(r["status"] for r in rows) == ["CONFIRMED", "PENDING", "PENDING"]
            assert len([e for e in ledger_entries(conn, user_id) if e["kind"] == "deposit"]) == 1


def test_transfer_attaches_to_oldest_matching_request(pool):
    user_id, wallet = user_with_wallet(pool)
    with transaction(pool) as conn:
        version = levels.current(conn)[0].version
        older = deposits.create_request(conn, user_id=user_id, amount=20 * UNIT, level_version=version,
                                        level=1, ttl=timedelta(hours=1))
        deposits.create_request(conn, user_id=user_id, amount=20 * UNIT, level_version=version,
                                level=1, ttl=timedelta(hours=1))
        other = deposits.create_request(conn, user_id=user_id, amount=30 * UNIT, level_version=version,
                                        level=1, ttl=timedelta(hours=1))
        result = deposits.record_transfer(conn, transfer(wallet, 20 * UNIT))
        assert result.deposit["id"] == older["id"] and result.deposit["status"] == "CONFIRMED"
        assert result.deposit["level_version"] == version
        unrequested = deposits.record_transfer(conn, transfer(wallet, 77 * UNIT))
        assert unrequested.credited and unrequested.deposit["requested_amount"] is None
        assert deposits.get(conn, other["id"])["status"] == "PENDING"
    assert balance_of(pool, user_id) == 97 * UNIT


def test_unknown_sender_is_recorded_unattributed_and_never_credited(pool):
    stranger = random_address()
    with transaction(pool) as conn:
        result = deposits.record_transfer(conn, transfer(stranger, 5 * UNIT))
        assert result.credited and result.deposit["user_id"] is None
        assert result.deposit["from_address"] == stranger.lower()
        assert [d["id"] for d in deposits.unattributed(conn)][0] == result.deposit["id"]
        assert conn.execute("SELECT count(*) AS n FROM ledger_entries WHERE reference = %s",
                            (f"deposit:{result.deposit['id']}",)).fetchone()["n"] == 0


def test_expired_requests(pool):
    user_id = new_user(pool)
    with transaction(pool) as conn:
        version = levels.current(conn)[0].version
        request = deposits.create_request(conn, user_id=user_id, amount=15 * UNIT, level_version=version,
                                          level=1, ttl=timedelta(seconds=-1))
        assert [r["id"] for r in deposits.expire_requests(conn)] == [request["id"]]
        assert deposits.get(conn, request["id"])["status"] == "EXPIRED"


def test_refund_happens_once_however_often_retried(pool):
    for _ in range(ROUNDS):
        user_id = new_user(pool, balance=100 * UNIT)
        with transaction(pool) as conn:
            withdrawal = request_withdrawal(conn, user_id=user_id, amount=60 * UNIT, fee=2 * UNIT,
                                            to_address=random_address(), auto_approve_max=0)
        assert balance_of(pool, user_id) == 38 * UNIT

        def reject(index):
            with transaction(pool) as conn:
                return withdrawals.reject(conn, withdrawal["id"], admin_id=1, reason=f"try {index}")

        results = run_concurrently(THREADS, reject)
        assert [r for r in results if isinstance(r, Exception)] == []
        assert sum(r.changed for r in results) == 1
        for _retry in range(3):
            with transaction(pool) as conn:
                assert not withdrawals.reject(conn, withdrawal["id"], admin_id=1, reason="again").changed
        assert balance_of(pool, user_id) == 100 * UNIT
        with transaction(pool) as conn:
            refunds = [e for e in ledger_entries(conn, user_id) if e["kind"] == "withdrawal_refund"]
            assert [e["amount"] for e in refunds] == [62 * UNIT]


def test_failed_withdrawal_refunds_once(pool):
    user_id = new_user(pool, balance=10 * UNIT)
    with transaction(pool) as conn:
        withdrawal = request_withdrawal(conn, user_id=user_id, amount=4 * UNIT, fee=0,
                                        to_address=random_address(), auto_approve_max=5 * UNIT)
        assert withdrawal["status"] == "APPROVED"
        withdrawals.mark_signed(conn, withdrawal["id"], from_address=HOT, nonce=7, tx_hash="0x" + "ab" * 32,
                                raw_tx=b"\x01\x02", fees=FEES)
        withdrawals.mark_broadcast(conn, withdrawal["id"])
    results = run_concurrently(10, lambda i: _in_tx(pool, withdrawals.fail, withdrawal["id"], "reverted"))
    assert sum(r.changed for r in results) == 1
    assert balance_of(pool, user_id) == 10 * UNIT


def test_confirm_and_state_machine(pool):
    user_id = new_user(pool, balance=10 * UNIT)
    with transaction(pool) as conn:
        w = request_withdrawal(conn, user_id=user_id, amount=3 * UNIT, fee=UNIT,
                               to_address=random_address(), auto_approve_max=0)
        assert w["status"] == "REQUESTED"
        with pytest.raises(InvalidTransition):
            withdrawals.mark_signed(conn, w["id"], from_address=HOT, nonce=1, tx_hash="0x" + "cd" * 32, raw_tx=b"x", fees=FEES)
        assert withdrawals.approve(conn, w["id"], admin_id=9).changed
        assert not withdrawals.approve(conn, w["id"], admin_id=9).changed
        signed = withdrawals.mark_signed(conn, w["id"], from_address=HOT, nonce=1, tx_hash="0x" + "CD" * 32,
                                         raw_tx=b"raw", fees=FEES)
        assert signed["tx_hash"] == "0x" + "cd" * 32 and bytes(signed["raw_tx"]) == b"raw"
        with pytest.raises(InvalidTransition):
            withdrawals.reject(conn, w["id"], admin_id=9, reason="too late")
        assert withdrawals.confirm(conn, w["id"]).changed
        assert not withdrawals.confirm(conn, w["id"]).changed
        with pytest.raises(InvalidTransition):
            withdrawals.fail(conn, w["id"], "no")
        with pytest.raises(NotFound):
            withdrawals.approve(conn, 999999, admin_id=9)
    assert balance_of(pool, user_id) == 6 * UNIT


def test_database_refuses_skipping_states_and_replacing_signed_bytes(pool):
    user_id = new_user(pool, balance=10 * UNIT)
    with transaction(pool) as conn:
        w = request_withdrawal(conn, user_id=user_id, amount=UNIT, fee=0, to_address=random_address(),
                               auto_approve_max=UNIT)
        withdrawals.mark_signed(conn, w["id"], from_address=HOT, nonce=3, tx_hash="0x" + "ee" * 32, raw_tx=b"first", fees=FEES)
    with pytest.raises(DatabaseError, match="replaced only by a recorded attempt"):
        with transaction(pool) as conn:
            conn.execute("UPDATE withdrawals SET raw_tx = 'second' WHERE id = %s", (w["id"],))
    with pytest.raises(DatabaseError, match="SIGNED -> REQUESTED is not allowed"):
        with transaction(pool) as conn:
            conn.execute("UPDATE withdrawals SET status = 'REQUESTED' WHERE id = %s", (w["id"],))
    for change in ("amount = amount + 1", "fee = 5", "to_address = '0x" + "99" * 20 + "'", "user_id = user_id + 1"):
        with pytest.raises(DatabaseError, match="never change"):  # refunds and payments rely on the terms
            with transaction(pool) as conn:
                conn.execute(f"UPDATE withdrawals SET {change} WHERE id = %s", (w["id"],))
    other = new_user(pool, balance=10 * UNIT)
    with pytest.raises(DatabaseError, match="UniqueViolation"):  # a nonce is never used twice
        with transaction(pool) as conn:
            w2 = request_withdrawal(conn, user_id=other, amount=UNIT, fee=0, to_address=random_address(),
                                    auto_approve_max=UNIT)
            withdrawals.mark_signed(conn, w2["id"], from_address=HOT, nonce=3, tx_hash="0x" + "ff" * 32, raw_tx=b"x", fees=FEES)


def test_wallets_are_unique_case_insensitively(pool):
    key = new_key()
    new_user(pool, wallet_key=key)
    other = new_user(pool)
    wallet = chaintools.address_of(key)
    with transaction(pool) as conn:
        with pytest.raises(WalletInUse):
            wallets.bind(conn, other, wallet.upper().replace("0X", "0x"), chaintools.sign_wallet_proof(key, other), 0)
        assert users.get(conn, other)["wallet_address"] is None


def test_level_versions(pool):
    with transaction(pool) as conn:
        first = levels.current(conn)
        version = levels.replace(conn, levels.parse_ranges("5-50, 50-500.5"), admin_id=1)
        current = levels.current(conn)
    assert version > first[0].version
    assert [(l.level, l.min_tokens, l.max_tokens) for l in current] == [(1, "5", "50"), (2, "50", "500.5")]
    assert levels.level_for(current, 500_500_000, 6).level == 2  # the last level holds its upper bound
    assert levels.level_for(current, 50 * UNIT, 6).level == 2  # the others do not
    assert levels.level_for(current, 50 * UNIT - 1, 6).level == 1
    assert levels.level_for(current, 5 * UNIT - 1, 6) is None
    assert levels.level_for(current, 500_500_001, 6) is None
    with transaction(pool) as conn:
        assert conn.execute("SELECT count(*) AS n FROM deposit_level_versions WHERE is_current").fetchone()["n"] == 1


def test_the_default_levels_leave_no_gap():
    default = [levels.Level(1, number, low, high) for number, (low, high)
               in enumerate(levels.parse_ranges("10-100,100-1000,1000-10000"), start=1)]
    assert levels.level_for(default, 99_500_000, 6).level == 1  # 99.5: refused while the levels were 10-99,100-999
    assert levels.level_for(default, 100 * UNIT, 6).level == 2
    assert levels.level_for(default, 10000 * UNIT, 6).level == 3


def test_the_database_refuses_levels_with_a_gap(pool):
    with transaction(pool) as conn:
        before = levels.current(conn)
    with pytest.raises(DatabaseError, match="each starts where the one before ends"):
        with transaction(pool) as conn:
            levels.replace(conn, [("10", "99"), ("100", "999")], admin_id=1)  # bypassing parse_ranges
    with pytest.raises(DatabaseError, match="each starts where the one before ends"):
        with transaction(pool) as conn:
            version = levels.replace(conn, [("10", "100"), ("100", "1000")], admin_id=1)
            conn.execute("UPDATE deposit_levels SET min_tokens = 101 WHERE version = %s AND level = 2", (version,))
    with transaction(pool) as conn:
        assert levels.current(conn) == before  # both versions rolled back whole


@pytest.mark.parametrize("text", ["", "10", "10-5", "10-10", "10-99,50-200", "10-99,100-999", "a-b", "-5-10",
                                  "10-99,,"])
def test_bad_level_ranges(text):
    from core.errors import AmountError
    with pytest.raises(AmountError):
        levels.parse_ranges(text)


def _in_tx(pool, function, *args):
    with transaction(pool) as conn:
        return function(conn, *args)


def test_double_tap_with_one_request_key_creates_one_withdrawal(pool):
    for _ in range(5):
        user_id = new_user(pool, balance=100 * UNIT)
        address = random_address()

        def confirm(_index):
            with transaction(pool) as conn:
                return withdrawals.request_once(conn, request_key=f"wd:{user_id}:draft1", user_id=user_id,
                                                amount=10 * UNIT, fee=UNIT, to_address=address, auto_approve_max=0)

        results = run_concurrently(20, confirm)
        assert [r for r in results if isinstance(r, Exception)] == []
        assert sum(r.changed for r in results) == 1
        assert len({r.withdrawal["id"] for r in results}) == 1
        assert balance_of(pool, user_id) == 89 * UNIT


def test_the_daily_limit_sends_automatic_withdrawals_to_an_admin(pool):
    user_id = new_user(pool, balance=100 * UNIT)

    def request(amount: int) -> dict:
        with transaction(pool) as conn:
            return withdrawals.request_once(conn, request_key=f"test:{secrets.token_hex(8)}", user_id=user_id,
                                            amount=amount * UNIT, fee=0, to_address=random_address(),
                                            auto_approve_max=10 * UNIT, daily_max=15 * UNIT).withdrawal

    first, second = request(8), request(7)
    assert (first["status"], second["status"]) == ("APPROVED", "APPROVED")  # 15 in 24 h: at the limit
    third = request(1)
    assert third["status"] == "REQUESTED"
    with transaction(pool) as conn:
        withdrawals.reject(conn, second["id"], admin_id=9, reason=None)  # what was refunded does not count
    assert request(6)["status"] == "APPROVED"  # 8 + 1 waiting for an admin + 6 = 15
    assert request(1)["status"] == "REQUESTED"



def test_attempts_replace_a_signed_transaction_only_at_its_nonce_and_a_mined_cancel_frees_it(pool):
    user_id = new_user(pool, balance=10 * UNIT)
    with transaction(pool) as conn:
        w = request_withdrawal(conn, user_id=user_id, amount=UNIT, fee=0, to_address=random_address(),
                               auto_approve_max=UNIT)
        withdrawals.mark_signed(conn, w["id"], from_address=HOT, nonce=40, tx_hash="0x" + "a1" * 32,
                                raw_tx=b"first", fees=FEES)
        withdrawals.mark_broadcast(conn, w["id"])
        repriced = withdrawals.add_attempt(conn, w["id"], "TRANSFER", tx_hash="0x" + "a2" * 32, raw_tx=b"second",
                                           fees=Fees(max_fee=3 * 10**9, priority_fee=2 * 10**9))
        current = withdrawals.get(conn, w["id"])
        assert (current["tx_hash"], bytes(current["raw_tx"]), current["nonce"]) == (repriced["tx_hash"], b"second", 40)
    with pytest.raises(DatabaseError, match="replaced only by a recorded attempt"):  # an unrecorded transaction
        with transaction(pool) as conn:
            conn.execute("UPDATE withdrawals SET tx_hash = %s, raw_tx = 'x' WHERE id = %s", ("0x" + "a3" * 32, w["id"]))
    with pytest.raises(DatabaseError, match="only its mined block"):  # attempts are immutable
        with transaction(pool) as conn:
            conn.execute("UPDATE withdrawal_attempts SET raw_tx = 'x' WHERE id = %s", (repriced["id"],))
    with pytest.raises(DatabaseError, match="never deleted"):
        with transaction(pool) as conn:
            conn.execute("DELETE FROM withdrawal_attempts WHERE id = %s", (repriced["id"],))
    with transaction(pool) as conn:
        cancel = withdrawals.add_attempt(conn, w["id"], "CANCEL", tx_hash="0x" + "a4" * 32, raw_tx=b"cancel",
                                         fees=Fees(max_fee=4 * 10**9, priority_fee=3 * 10**9))
        assert withdrawals.get(conn, w["id"])["tx_hash"] == repriced["tx_hash"]  # it shows the newest transfer
    with pytest.raises(DatabaseError, match="only when a mined cancel"):  # the cancel is not mined yet
        with transaction(pool) as conn:
            conn.execute("""UPDATE withdrawals SET status = 'APPROVED', nonce = NULL, tx_hash = NULL, raw_tx = NULL
                            WHERE id = %s""", (w["id"],))
    with transaction(pool) as conn:
        released = withdrawals.release_nonce(conn, w["id"], cancel, 123, 60, "nonce 40 freed")
        assert released.changed and released.withdrawal["status"] == "APPROVED"
        assert released.withdrawal["nonce"] is None and released.withdrawal["problem"] == "nonce 40 freed"
        assert not withdrawals.release_nonce(conn, w["id"], cancel, 123, 60, "again").changed
        waiting = conn.execute("SELECT not_before > now() AS waiting FROM withdrawals WHERE id = %s", (w["id"],))
        assert waiting.fetchone()["waiting"]  # not signed again before retry_after_s
        assert withdrawals.highest_nonce(conn, HOT) >= 40  # a freed nonce stays used
    assert balance_of(pool, user_id) == 9 * UNIT  # still held, never refunded
    other = new_user(pool, balance=10 * UNIT)
    with pytest.raises(DatabaseError, match="already used by another withdrawal"):  # nonce 40 was spent by w's cancel: no other withdrawal's attempt may use it
        with transaction(pool) as conn:
            w2 = request_withdrawal(conn, user_id=other, amount=UNIT, fee=0, to_address=random_address(),
                                    auto_approve_max=UNIT)
            withdrawals.mark_signed(conn, w2["id"], from_address=HOT, nonce=40, tx_hash="0x" + "a5" * 32,
                                    raw_tx=b"x", fees=FEES)
