"""Every transaction signed for a withdrawal, stored before it is sent (a trigger keeps them immutable).

TRANSFER attempts pay the withdrawal (the first one, then re-priced replacements at
the same nonce); a CANCEL attempt transfers nothing to the hot wallet itself to
spend the nonce of a withdrawal that cannot be mined.
"""
from core.fees import Fees
from core.addresses import canonical

TRANSFER, CANCEL = "TRANSFER", "CANCEL"

SQL_INSERT = """
INSERT INTO withdrawal_attempts (withdrawal_id, kind, from_address, nonce, tx_hash, raw_tx, max_fee_per_gas,
                                 max_priority_fee_per_gas, gas_price)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING *
"""
SQL_FOR_WITHDRAWAL = """
SELECT *, extract(epoch FROM now() - created_at)::float AS age_s FROM withdrawal_attempts
WHERE withdrawal_id = %s AND nonce = %s ORDER BY id DESC
"""
SQL_MINED = "UPDATE withdrawal_attempts SET mined_block = %s WHERE id = %s AND mined_block IS NULL"
SQL_HIGHEST_NONCE = """
SELECT max(nonce) AS nonce FROM withdrawal_attempts WHERE from_address = %s OR from_address IS NULL
"""


def record(conn, withdrawal: dict, kind: str, tx_hash: str, raw_tx: bytes, fees: Fees) -> dict:
    """Store an attempt at the nonce the withdrawal holds; commit it before sending a byte."""
    return conn.execute(SQL_INSERT, (withdrawal["id"], kind, withdrawal["from_address"], withdrawal["nonce"],
                                     tx_hash.lower(), raw_tx, fees.max_fee, fees.priority_fee,
                                     fees.gas_price)).fetchone()


def at_current_nonce(conn, withdrawal: dict) -> list[dict]:
    """The withdrawal's attempts at the nonce it holds now, newest first (age_s: seconds since stored)."""
    return conn.execute(SQL_FOR_WITHDRAWAL, (withdrawal["id"], withdrawal["nonce"])).fetchall()


def mark_mined(conn, attempt_id: int, block: int) -> None:
    conn.execute(SQL_MINED, (block, attempt_id))


def highest_nonce(conn, hot_wallet: str) -> int | None:
    return conn.execute(SQL_HIGHEST_NONCE, (canonical(hot_wallet),)).fetchone()["nonce"]


def fees_of(attempt: dict) -> Fees | None:
    """The fees an attempt was signed with; None for attempts stored before fees were."""
    if attempt["max_fee_per_gas"] is not None:
        return Fees(max_fee=int(attempt["max_fee_per_gas"]), priority_fee=int(attempt["max_priority_fee_per_gas"]))
    if attempt["gas_price"] is not None:
        return Fees(gas_price=int(attempt["gas_price"]))
    return None
