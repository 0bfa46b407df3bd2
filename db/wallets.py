"""Wallet bindings: proven ownership of an address, kept as a history by block number.

A binding proven when the chain head was H owns the transfers its address sends in
blocks after H, until it ends at the head of the moment it was replaced. The
database keeps two bindings of one address from sharing a block (an exclusion
constraint) and mirrors the current binding into users.wallet_address.
"""
import psycopg

from core.addresses import canonical
from core.errors import RebindRefused, SignatureError, WalletInUse
from core.wallet_proof import parse_signature, proves
from db import audit, deposits, users, withdrawals

SQL_CURRENT = "SELECT * FROM wallet_bindings WHERE user_id = %s AND ended_at_block IS NULL"
SQL_CURRENT_FOR_ADDRESS = "SELECT * FROM wallet_bindings WHERE address = %s AND ended_at_block IS NULL"
SQL_HIGHEST_BLOCK = "SELECT max(greatest(proven_at_block, coalesce(ended_at_block, 0))) AS block FROM wallet_bindings"
SQL_LOCK_BINDINGS = "LOCK TABLE wallet_bindings IN SHARE ROW EXCLUSIVE MODE"
SQL_END = "UPDATE wallet_bindings SET ended_at_block = %s, ended_at = now() WHERE id = %s"
SQL_INSERT = """
INSERT INTO wallet_bindings (user_id, address, signature, proven_at_block) VALUES (%s, %s, %s, %s) RETURNING *
"""


def current(conn, user_id: int) -> dict | None:
    return conn.execute(SQL_CURRENT, (user_id,)).fetchone()


def current_for_address(conn, address: str) -> dict | None:
    return conn.execute(SQL_CURRENT_FOR_ADDRESS, (canonical(address),)).fetchone()


def bound_to_other(conn, user_id: int, address: str) -> bool:
    """True when another user currently owns `address`."""
    row = current_for_address(conn, address)
    return row is not None and row["user_id"] != user_id


def rebind_blockers(conn, user_id: int) -> tuple[list[dict], list[dict]]:
    """Open deposit requests and withdrawals in flight, which keep the wallet from changing."""
    return deposits.open_requests(conn, user_id), withdrawals.in_flight_for_user(conn, user_id)


def bind(conn, user_id: int, address: str, signature: str, head: int) -> dict:
    """Record a proven binding at chain head `head` (never below a block already recorded).

    SignatureError unless `signature` is the address's key signing the link to this user.
    Ends the user's previous binding at the same block, so every transfer belongs to at
    most one user. RebindRefused while money is in flight; WalletInUse if another user
    owns the address. Audited in the same transaction. Returns the new binding, or the
    current one unchanged when it already binds `address`.
    """
    signature = parse_signature(signature)
    if not proves(address, user_id, signature):
        raise SignatureError("the signature does not prove this wallet for this user")
    users.lock(conn, user_id)  # serializes this user's binds, deposit requests and withdrawals
    conn.execute(SQL_LOCK_BINDINGS)  # serializes all binds, so the block order holds
    previous = current(conn, user_id)
    if previous and previous["address"] == canonical(address):
        return previous
    if bound_to_other(conn, user_id, address):
        raise WalletInUse("this address is bound to another user")
    if previous and any(rebind_blockers(conn, user_id)):
        raise RebindRefused("open deposit requests or withdrawals in flight")
    highest = conn.execute(SQL_HIGHEST_BLOCK).fetchone()["block"]
    block = max(head, highest or 0)  # a lagging node must not reopen blocks already given out
    if previous:
        conn.execute(SQL_END, (block, previous["id"]))
    try:
        with conn.transaction():
            binding = conn.execute(SQL_INSERT, (user_id, canonical(address), signature, block)).fetchone()
    except (psycopg.errors.UniqueViolation, psycopg.errors.ExclusionViolation):
        raise WalletInUse("this address is bound to another user") from None
    audit.record(conn, actor_id=user_id, action="wallet_rebind" if previous else "wallet_bind",
                 target_user_id=user_id,
                 details={"address": canonical(address), "proven_at_block": block,
                          "previous": previous["address"] if previous else None})
    return binding
