"""Proven wallet ownership: the signature rule, bindings as a history by block, and attribution by it."""
import secrets
from datetime import timedelta

import psycopg
import pytest

from core.errors import InvalidTransition, RebindRefused, SignatureError, WalletInUse
from core.wallet_proof import parse_signature, proof_text, proves
from db import deposits, levels, users, wallets
from db.deposits import Transfer
from db.pool import transaction
from devstack import chaintools
from tests.walletharness import bind_proven, new_key

UNIT = 10**6


def test_the_proof_text_names_the_checksummed_address_and_the_telegram_id():
    address = chaintools.address_of(new_key())
    assert proof_text(address.lower(), 4242) == f"Link wallet {address} to Telegram user 4242"


def test_only_the_addresss_key_signing_for_this_user_proves_it():
    key, other = new_key(), new_key()
    address = chaintools.address_of(key)
    assert proves(address, 7, chaintools.sign_wallet_proof(key, 7))
    assert proves(address.lower(), 7, chaintools.sign_wallet_proof(key, 7).upper().replace("0X", "0x"))
    assert not proves(address, 8, chaintools.sign_wallet_proof(key, 7))
    assert not proves(address, 7, chaintools.sign_wallet_proof(other, 7))
    assert not proves(address, 7, "0x" + "00" * 65)
    for garbage in ("", "0x", "0x" + "ab" * 64, "0x" + "ab" * 66, "ab" * 65, "0x" + "zz" * 65):
        with pytest.raises(SignatureError):
            parse_signature(garbage)


def new_user(conn) -> int:
    user_id = 50_000 + secrets.randbelow(10**9)
    users.register(conn, user_id, None, "en")
    return user_id


def transfer_from(address: str, block: int, amount: int = 5 * UNIT) -> Transfer:
    return Transfer(tx_hash="0x" + secrets.token_hex(32), log_index=0, block_number=block,
                    block_hash="0x" + secrets.token_hex(32), from_address=address, amount=amount)


def test_a_transfer_sent_before_the_proof_is_not_the_binders(pool):
    """Front-running: someone binds an address after a transfer from it was mined."""
    key = new_key()
    address = chaintools.address_of(key)
    with transaction(pool) as conn:
        attacker = new_user(conn)
        bind_proven(conn, attacker, key, head=150)
        earlier = deposits.record_transfer(conn, transfer_from(address, 150))  # mined before the proof
        later = deposits.record_transfer(conn, transfer_from(address, 151))
        assert earlier.deposit["user_id"] is None
        assert later.deposit["user_id"] == attacker
        assert users.get(conn, attacker)["balance"] == 5 * UNIT
        assert [row["id"] for row in deposits.unattributed_from(conn, address, 150)] == [earlier.deposit["id"]]


def test_rebinding_and_scan_lag_never_move_a_transfer_to_the_wrong_user(pool):
    key_a, key_b = new_key(), new_key()
    a, b = chaintools.address_of(key_a), chaintools.address_of(key_b)
    with transaction(pool) as conn:
        first, second = new_user(conn), new_user(conn)
        bind_proven(conn, first, key_a, head=10)
        bind_proven(conn, first, key_b, head=20)  # first moves to b; a is free from block 21
        bind_proven(conn, second, key_a, head=30)
        owners = {block: deposits.owner_at(conn, a, block) for block in (10, 11, 20, 21, 30, 31)}
        assert owners == {10: None, 11: first, 20: first, 21: None, 30: None, 31: second}
        assert deposits.owner_at(conn, b, 20) is None and deposits.owner_at(conn, b, 21) == first


def test_a_lagging_head_never_dates_a_binding_before_one_already_recorded(pool):
    key, late_key = new_key(), new_key()
    with transaction(pool) as conn:
        bind_proven(conn, new_user(conn), key, head=500)
        late = bind_proven(conn, new_user(conn), late_key, head=7)  # a node behind the others
        assert late["proven_at_block"] == 500


def test_a_bad_signature_binds_nothing(pool):
    key = new_key()
    address = chaintools.address_of(key)
    with transaction(pool) as conn:
        user_id = new_user(conn)
        with pytest.raises(SignatureError):
            wallets.bind(conn, user_id, address, chaintools.sign_wallet_proof(key, user_id + 1), 5)
        with pytest.raises(SignatureError):
            wallets.bind(conn, user_id, address, "0x" + "00" * 65, 5)
        assert wallets.current(conn, user_id) is None


def test_rebinding_is_refused_while_money_is_in_flight(pool):
    with transaction(pool) as conn:
        user_id = new_user(conn)
        bind_proven(conn, user_id, new_key(), head=1)
        version = levels.current(conn)[0].version
        request = deposits.create_request(conn, user_id=user_id, amount=20 * UNIT, level_version=version, level=1,
                                          ttl=timedelta(hours=1))
    with transaction(pool) as conn:
        with pytest.raises(RebindRefused):
            bind_proven(conn, user_id, new_key(), head=2)
    with transaction(pool) as conn:
        assert deposits.cancel_request(conn, request["id"], user_id)["status"] == "CANCELLED"
        assert deposits.cancel_request(conn, request["id"], user_id) is None
        assert bind_proven(conn, user_id, new_key(), head=3)["proven_at_block"] >= 3


def test_an_address_has_one_owner_at_a_time(pool):
    key = new_key()
    with transaction(pool) as conn:
        bind_proven(conn, new_user(conn), key, head=1)
        with pytest.raises(WalletInUse):
            bind_proven(conn, new_user(conn), key, head=2)


def test_the_database_keeps_bindings_as_history(conn):
    with conn.transaction():
        user_id = new_user(conn)
        binding = bind_proven(conn, user_id, new_key(), head=4)
    for statement, params in [
        ("UPDATE wallet_bindings SET address = %s WHERE id = %s", ("0x" + "11" * 20, binding["id"])),
        ("UPDATE wallet_bindings SET proven_at_block = 0 WHERE id = %s", (binding["id"],)),
        ("DELETE FROM wallet_bindings WHERE id = %s", (binding["id"],)),
        ("UPDATE users SET wallet_address = %s WHERE id = %s", ("0x" + "22" * 20, user_id)),
        ("INSERT INTO users (id, language, wallet_address) VALUES (%s, 'en', %s)", (user_id + 1, "0x" + "33" * 20)),
    ]:
        with pytest.raises(psycopg.errors.RestrictViolation):
            conn.execute(statement, params)
    overlapping = """INSERT INTO wallet_bindings (user_id, address, signature, proven_at_block, ended_at_block, ended_at)
                     VALUES (%s, %s, %s, 1, 9, now())"""
    with pytest.raises(psycopg.errors.ExclusionViolation):  # blocks 5..9 already belong to the current binding
        conn.execute(overlapping, (user_id, binding["address"], binding["signature"]))


def test_assign_credits_an_unattributed_transfer_once(pool):
    stranger = chaintools.address_of(new_key())
    with transaction(pool) as conn:
        owner, other = new_user(conn), new_user(conn)
        recorded = deposits.record_transfer(conn, transfer_from(stranger, 9, 8 * UNIT)).deposit
        assert recorded["user_id"] is None
        assert deposits.assign(conn, recorded["id"], owner).credited
        assert not deposits.assign(conn, recorded["id"], owner).credited
        with pytest.raises(InvalidTransition):
            deposits.assign(conn, recorded["id"], other)
        assert users.get(conn, owner)["balance"] == 8 * UNIT and users.get(conn, other)["balance"] == 0
        assert conn.execute("SELECT count(*) AS n FROM ledger_entries WHERE idempotency_key = %s",
                            (f"deposit:{recorded['tx_hash']}:0",)).fetchone()["n"] == 1
