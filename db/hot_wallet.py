"""What the database accounts for of the hot wallet's transactions, by nonce.

A nonce is accounted for when a withdrawal was signed with it, or when `dr.py
reconcile` recorded the chain transaction that used it (matched to a withdrawal,
or accepted by the operator). The sender never signs while the chain's nonce is
ahead of this: those are transactions the database does not know (a restore).
"""
from core.addresses import canonical
from db import withdrawals

MATCHED, ACCEPTED = "MATCHED", "ACCEPTED"

SQL_HIGHEST_RECORDED = "SELECT max(nonce) AS nonce FROM hot_wallet_transactions WHERE address = %s"
SQL_RECORD = """
INSERT INTO hot_wallet_transactions (address, nonce, tx_hash, decision, withdrawal_id, decided_by)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (address, nonce) DO NOTHING
"""


def next_nonce(conn, address: str) -> int:
    """The first nonce the database does not account for."""
    signed = withdrawals.highest_nonce(conn, address)
    recorded = conn.execute(SQL_HIGHEST_RECORDED, (canonical(address),)).fetchone()["nonce"]
    known = [n for n in (signed, recorded) if n is not None]
    return max(known) + 1 if known else 0


def record(conn, address: str, nonce: int, tx_hash: str | None, decision: str, decided_by: str,
           withdrawal_id: int | None = None) -> None:
    """Record what the chain transaction with this nonce was; a nonce recorded before keeps its record."""
    conn.execute(SQL_RECORD, (canonical(address), nonce, tx_hash.lower() if tx_hash else None, decision,
                              withdrawal_id, decided_by))
