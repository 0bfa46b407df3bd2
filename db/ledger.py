"""The ledger: the only way a balance changes. One entry per idempotency key, ever."""
import psycopg

from core.errors import InsufficientFunds

SQL_POST = """
INSERT INTO ledger_entries (user_id, amount, kind, reference, idempotency_key, balance_after)
VALUES (%(user_id)s, %(amount)s, %(kind)s, %(reference)s, %(key)s, 0)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING *
"""
SQL_BALANCE = "SELECT balance FROM users WHERE id = %s"


def post(conn, *, user_id: int, amount: int, kind: str, reference: str, key: str) -> dict | None:
    """Append an entry and move the balance (a trigger does that); None if `key` was posted before.

    balance_after is filled in by the trigger. A debit that would take the balance
    below zero is refused by the database's CHECK and surfaces as InsufficientFunds.
    """
    params = {"user_id": user_id, "amount": amount, "kind": kind, "reference": reference, "key": key}
    try:
        with conn.transaction():
            return conn.execute(SQL_POST, params).fetchone()
    except psycopg.errors.CheckViolation as exc:
        if exc.diag.constraint_name in ("users_balance_check", "ledger_entries_balance_after_check"):
            raise InsufficientFunds("balance does not cover this debit") from None
        raise


def balance(conn, user_id: int) -> int:
    row = conn.execute(SQL_BALANCE, (user_id,)).fetchone()
    return int(row["balance"]) if row else 0
