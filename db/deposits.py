"""Deposits: requests, on-chain transfers credited exactly once per (tx_hash, log_index)."""
from dataclasses import dataclass

import psycopg

from core.addresses import canonical
from core.errors import InvalidTransition, NotFound
from db import ledger, users

PENDING = "PENDING"
PENDING_NETWORK_RECOVERY = "PENDING_NETWORK_RECOVERY"
CONFIRMED = "CONFIRMED"
EXPIRED = "EXPIRED"
CANCELLED = "CANCELLED"
OPEN_STATUSES = (PENDING, PENDING_NETWORK_RECOVERY)

SQL_CREATE_REQUEST = """
INSERT INTO deposits (user_id, status, requested_amount, level_version, level, expires_at)
VALUES (%(user_id)s, %(status)s, %(amount)s, %(level_version)s, %(level)s, now() + %(ttl)s)
RETURNING *
"""
SQL_LOCK_TRANSFER = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"
SQL_BY_TRANSFER = "SELECT * FROM deposits WHERE tx_hash = %s AND log_index = %s"
SQL_OLDEST_OPEN_REQUEST = """
SELECT * FROM deposits
WHERE user_id = %s AND requested_amount = %s AND status IN ('PENDING', 'PENDING_NETWORK_RECOVERY')
ORDER BY created_at, id LIMIT 1
FOR UPDATE SKIP LOCKED
"""
SQL_MATCH_REQUEST = """
UPDATE deposits SET status = 'CONFIRMED', from_address = %(from)s, credited_amount = %(amount)s,
    tx_hash = %(tx)s, log_index = %(log)s, block_number = %(block)s, block_hash = %(bhash)s,
    confirmed_at = now()
WHERE id = %(id)s
RETURNING *
"""
SQL_INSERT_TRANSFER = """
INSERT INTO deposits (user_id, status, from_address, credited_amount, tx_hash, log_index,
                      block_number, block_hash, confirmed_at)
VALUES (%(user_id)s, 'CONFIRMED', %(from)s, %(amount)s, %(tx)s, %(log)s, %(block)s, %(bhash)s, now())
RETURNING *
"""
SQL_GET = "SELECT * FROM deposits WHERE id = %s"
SQL_FOR_USER = "SELECT * FROM deposits WHERE user_id = %s ORDER BY id DESC LIMIT %s"
SQL_OPEN_FOR_USER = """
SELECT * FROM deposits WHERE user_id = %s AND status IN ('PENDING', 'PENDING_NETWORK_RECOVERY') ORDER BY id
"""
SQL_EXPIRE = """
UPDATE deposits SET status = 'EXPIRED' WHERE status = 'PENDING' AND expires_at <= now() RETURNING *
"""
SQL_RESUME_AFTER_OUTAGE = """
UPDATE deposits SET status = 'PENDING', expires_at = now() + %s
WHERE status = 'PENDING_NETWORK_RECOVERY' RETURNING *
"""
SQL_UNATTRIBUTED = "SELECT * FROM deposits WHERE user_id IS NULL ORDER BY id DESC LIMIT %s"
SQL_UNATTRIBUTED_FROM = """
SELECT * FROM deposits WHERE user_id IS NULL AND from_address = %s AND block_number <= %s ORDER BY id
"""
# the binding valid when the transfer was mined: proven before its block, not yet ended then
SQL_OWNER_AT = """
SELECT user_id FROM wallet_bindings
WHERE address = %(address)s AND proven_at_block < %(block)s
  AND (ended_at_block IS NULL OR ended_at_block >= %(block)s)
"""
SQL_LOCK = "SELECT * FROM deposits WHERE id = %s FOR UPDATE"
SQL_ASSIGN = "UPDATE deposits SET user_id = %s WHERE id = %s RETURNING *"
SQL_CANCEL = """
UPDATE deposits SET status = 'CANCELLED'
WHERE id = %s AND user_id = %s AND status IN ('PENDING', 'PENDING_NETWORK_RECOVERY') RETURNING *
"""


@dataclass(frozen=True)
class Transfer:
    """One ERC-20 Transfer log to the deposit address."""
    tx_hash: str
    log_index: int
    block_number: int
    block_hash: str
    from_address: str
    amount: int

    def params(self) -> dict:
        return {"tx": self.tx_hash.lower(), "log": self.log_index, "block": self.block_number,
                "bhash": self.block_hash.lower(), "from": canonical(self.from_address), "amount": self.amount}


@dataclass(frozen=True)
class CreditResult:
    deposit: dict
    credited: bool  # False: this transfer had been recorded before; nothing changed now


def owner_at(conn, address: str, block: int) -> int | None:
    """The user whose proven wallet binding covers a transfer from `address` mined in `block`."""
    row = conn.execute(SQL_OWNER_AT, {"address": canonical(address), "block": block}).fetchone()
    return row["user_id"] if row else None


def create_request(conn, *, user_id: int, amount: int, level_version: int, level: int,
                   ttl, status: str = PENDING) -> dict:
    """Record that the user intends to deposit `amount` base units (ttl: a timedelta)."""
    if status not in OPEN_STATUSES:
        raise ValueError(f"a new request cannot be {status}")
    users.lock(conn, user_id)  # a wallet rebind waits for this request, or this waits for it
    return conn.execute(SQL_CREATE_REQUEST, {
        "user_id": user_id, "status": status, "amount": amount,
        "level_version": level_version, "level": level, "ttl": ttl}).fetchone()


def record_transfer(conn, transfer: Transfer) -> CreditResult:
    """Record a transfer and credit its sender exactly once; unknown senders are kept unattributed.

    Callers handling the same transfer queue on a transaction-scoped advisory lock,
    so the second one finds the first one's row. The unique (tx_hash, log_index) key
    stays the guarantee: should a race slip past, the loser fails on it inside a
    savepoint and reports the winner's row.
    """
    conn.execute(SQL_LOCK_TRANSFER, (f"deposit:{transfer.tx_hash.lower()}:{transfer.log_index}",))
    existing = conn.execute(SQL_BY_TRANSFER, (transfer.tx_hash.lower(), transfer.log_index)).fetchone()
    if existing:
        return CreditResult(existing, False)
    owner = owner_at(conn, transfer.from_address, transfer.block_number)
    try:
        with conn.transaction():
            deposit = _attach(conn, transfer, owner)
            if owner is not None:
                _credit(conn, deposit, transfer)
    except psycopg.errors.UniqueViolation as exc:
        if exc.diag.constraint_name != "deposits_tx_hash_log_index_key":
            raise
        existing = conn.execute(SQL_BY_TRANSFER, (transfer.tx_hash.lower(), transfer.log_index)).fetchone()
        return CreditResult(existing, False)
    return CreditResult(deposit, True)


def _attach(conn, transfer: Transfer, user_id: int | None) -> dict:
    """Fill the user's oldest open request of the same amount, else insert a new confirmed row."""
    params = transfer.params()
    if user_id is not None:
        request = conn.execute(SQL_OLDEST_OPEN_REQUEST, (user_id, transfer.amount)).fetchone()
        if request:
            return conn.execute(SQL_MATCH_REQUEST, {**params, "id": request["id"]}).fetchone()
    return conn.execute(SQL_INSERT_TRANSFER, {**params, "user_id": user_id}).fetchone()


def _credit(conn, deposit: dict, transfer: Transfer) -> None:
    key = f"deposit:{transfer.tx_hash.lower()}:{transfer.log_index}"
    entry = ledger.post(conn, user_id=deposit["user_id"], amount=transfer.amount, kind="deposit",
                        reference=f"deposit:{deposit['id']}", key=key)
    if entry is None:  # the ledger has the key but deposits had no row: never paper over that
        raise RuntimeError(f"ledger already holds {key} without a deposit row")


def assign(conn, deposit_id: int, user_id: int) -> CreditResult:
    """Give an unattributed transfer to `user_id` and credit it, once (the transfer's ledger key)."""
    deposit = conn.execute(SQL_LOCK, (deposit_id,)).fetchone()
    if deposit is None or deposit["tx_hash"] is None:
        raise NotFound(f"deposit #{deposit_id} is not a recorded transfer")
    if deposit["user_id"] is not None:
        if deposit["user_id"] == user_id:
            return CreditResult(deposit, False)
        raise InvalidTransition(f"deposit #{deposit_id} belongs to user {deposit['user_id']}")
    users.lock(conn, user_id)
    assigned = conn.execute(SQL_ASSIGN, (user_id, deposit_id)).fetchone()
    _credit(conn, assigned, Transfer(assigned["tx_hash"], assigned["log_index"], assigned["block_number"],
                                     assigned["block_hash"], assigned["from_address"],
                                     int(assigned["credited_amount"])))
    return CreditResult(assigned, True)


def cancel_request(conn, deposit_id: int, user_id: int) -> dict | None:
    """Cancel the user's own open request; None when it is not theirs or no longer open."""
    return conn.execute(SQL_CANCEL, (deposit_id, user_id)).fetchone()


def unattributed_from(conn, address: str, up_to_block: int) -> list[dict]:
    """Transfers from `address` mined before its binding was proven, waiting for an admin."""
    return conn.execute(SQL_UNATTRIBUTED_FROM, (canonical(address), up_to_block)).fetchall()


def get(conn, deposit_id: int) -> dict | None:
    return conn.execute(SQL_GET, (deposit_id,)).fetchone()


def for_user(conn, user_id: int, limit: int = 10) -> list[dict]:
    return conn.execute(SQL_FOR_USER, (user_id, limit)).fetchall()


def open_requests(conn, user_id: int) -> list[dict]:
    return conn.execute(SQL_OPEN_FOR_USER, (user_id,)).fetchall()


def expire_requests(conn) -> list[dict]:
    """Move PENDING requests past their deadline to EXPIRED; later transfers still get credited."""
    return conn.execute(SQL_EXPIRE).fetchall()


def resume_network_recovery(conn, ttl) -> list[dict]:
    """Requests made during an outage that no transfer matched go back to PENDING with a fresh TTL."""
    return conn.execute(SQL_RESUME_AFTER_OUTAGE, (ttl,)).fetchall()


def unattributed(conn, limit: int = 50) -> list[dict]:
    return conn.execute(SQL_UNATTRIBUTED, (limit,)).fetchall()
