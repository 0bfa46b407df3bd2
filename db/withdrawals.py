"""Withdrawals: hold on request, refund exactly once on reject/fail, signed bytes kept before sending.

The allowed status changes are enforced by a trigger (migrations/0001); these
functions lock the row, check the state to give a clear error, and post the
ledger entries whose idempotency keys make every retry harmless.
"""
from dataclasses import dataclass

from core.addresses import canonical
from core.errors import InsufficientFunds, InvalidTransition, NotFound
from core.fees import Fees
from db import ledger, users, withdrawal_attempts

REQUESTED = "REQUESTED"
APPROVED = "APPROVED"
SIGNED = "SIGNED"
BROADCAST = "BROADCAST"
CONFIRMED = "CONFIRMED"
REJECTED = "REJECTED"
FAILED = "FAILED"
CANCELLED = "CANCELLED"

SQL_INSERT = """
INSERT INTO withdrawals (user_id, status, amount, fee, to_address, request_key, approved_at)
VALUES (%(user_id)s, %(status)s, %(amount)s, %(fee)s, %(to)s, %(request_key)s,
        CASE WHEN %(status)s = 'APPROVED' THEN now() END)
RETURNING *
"""
SQL_LOCK = "SELECT * FROM withdrawals WHERE id = %s FOR UPDATE"
SQL_GET = "SELECT * FROM withdrawals WHERE id = %s"
SQL_BY_REQUEST_KEY = "SELECT * FROM withdrawals WHERE request_key = %s"
SQL_APPROVE = """
UPDATE withdrawals SET status = 'APPROVED', approved_by = %s, approved_at = now() WHERE id = %s RETURNING *
"""
SQL_REJECT = """
UPDATE withdrawals SET status = 'REJECTED', rejected_by = %s, rejected_at = now(), reason = %s
WHERE id = %s RETURNING *
"""
SQL_CANCEL = "UPDATE withdrawals SET status = 'CANCELLED', reason = 'cancelled by the user' WHERE id = %s RETURNING *"
SQL_FAIL = "UPDATE withdrawals SET status = 'FAILED', reason = %s WHERE id = %s RETURNING *"
SQL_SIGNED = """
UPDATE withdrawals SET status = 'SIGNED', from_address = %s, nonce = %s, tx_hash = %s, raw_tx = %s
WHERE id = %s RETURNING *
"""
SQL_PAID_ON_CHAIN = """
UPDATE withdrawals SET status = 'CONFIRMED', from_address = %s, nonce = %s, tx_hash = %s, raw_tx = %s,
    reconciled_at = now()
WHERE id = %s RETURNING *
"""
SQL_COMMITTED = """
SELECT coalesce(sum(amount), 0) AS amount, count(*) AS count FROM withdrawals WHERE status IN ('SIGNED', 'BROADCAST')
"""
SQL_LAST_DAY = """
SELECT coalesce(sum(amount), 0) AS amount FROM withdrawals
WHERE user_id = %s AND created_at > now() - interval '24 hours' AND status NOT IN ('REJECTED', 'CANCELLED', 'FAILED')
"""
SQL_UNPAID = "SELECT * FROM withdrawals WHERE status IN ('REQUESTED', 'APPROVED') ORDER BY id"
SQL_SET_STATUS = "UPDATE withdrawals SET status = %s WHERE id = %s RETURNING *"
SQL_FOR_USER = "SELECT * FROM withdrawals WHERE user_id = %s ORDER BY id DESC LIMIT %s"
SQL_IN_FLIGHT_FOR_USER = """
SELECT * FROM withdrawals WHERE user_id = %s AND status IN ('REQUESTED', 'APPROVED', 'SIGNED', 'BROADCAST')
ORDER BY id
"""
SQL_BY_STATUS = "SELECT * FROM withdrawals WHERE status = %s ORDER BY id LIMIT %s"
SQL_NEXT_APPROVED = """
SELECT * FROM withdrawals WHERE status = 'APPROVED' AND (not_before IS NULL OR not_before <= now()) ORDER BY id LIMIT 1
"""
SQL_USE_ATTEMPT = "UPDATE withdrawals SET tx_hash = %s, raw_tx = %s WHERE id = %s RETURNING *"
SQL_RELEASE = """
UPDATE withdrawals SET status = 'APPROVED', from_address = NULL, nonce = NULL, tx_hash = NULL, raw_tx = NULL,
    not_before = now() + make_interval(secs => %s), problem = %s
WHERE id = %s RETURNING *
"""
SQL_PROBLEM = "UPDATE withdrawals SET problem = %s WHERE id = %s"
SQL_WITH_PROBLEMS = """
SELECT id, status, problem FROM withdrawals
WHERE problem IS NOT NULL AND status IN ('APPROVED', 'SIGNED', 'BROADCAST') ORDER BY id LIMIT %s
"""
# rows signed before nonces were kept per hot wallet have no from_address: they were this wallet's
SQL_HIGHEST_NONCE = "SELECT max(nonce) AS nonce FROM withdrawals WHERE from_address = %s OR from_address IS NULL"


@dataclass(frozen=True)
class Change:
    withdrawal: dict
    changed: bool  # False: it was already in the target state; nothing happened now


def request_once(conn, *, request_key: str, user_id: int, amount: int, fee: int, to_address: str,
                 auto_approve_max: int, daily_max: int = 0) -> Change:
    """Create a withdrawal and hold amount + fee; a second call with the same key (a double tap)
    returns the first withdrawal unchanged.

    Approved at once when amount <= auto_approve_max > 0, unless it takes the user's last 24 h
    of withdrawals past daily_max > 0: then an admin decides.
    """
    user = users.lock(conn, user_id)  # serializes this user's requests, so the lookup and the sum cannot race
    existing = conn.execute(SQL_BY_REQUEST_KEY, (request_key,)).fetchone()
    if existing:
        return Change(existing, False)
    automatic = 0 < amount <= auto_approve_max
    if automatic and daily_max > 0:
        automatic = withdrawn_last_day(conn, user_id) + amount <= daily_max
    return Change(_create(conn, user, amount, fee, to_address, automatic, request_key), True)


def withdrawn_last_day(conn, user_id: int) -> int:
    """What the user withdrew in the last 24 h, counting everything not rejected, cancelled or failed."""
    return int(conn.execute(SQL_LAST_DAY, (user_id,)).fetchone()["amount"])


def _create(conn, user: dict, amount: int, fee: int, to_address: str, approve_at_once: bool,
            request_key: str | None) -> dict:
    if amount <= 0 or fee < 0:
        raise ValueError("amount must be positive and fee non-negative")
    if user["balance"] < amount + fee:
        raise InsufficientFunds("balance does not cover amount plus fee")
    user_id = user["id"]
    status = APPROVED if approve_at_once else REQUESTED
    row = conn.execute(SQL_INSERT, {"user_id": user_id, "status": status, "amount": amount, "fee": fee,
                                    "to": canonical(to_address), "request_key": request_key}).fetchone()
    ledger.post(conn, user_id=user_id, amount=-(amount + fee), kind="withdrawal_hold",
                reference=f"withdrawal:{row['id']}", key=f"withdrawal:{row['id']}:hold")
    return row


def approve(conn, withdrawal_id: int, admin_id: int) -> Change:
    current = lock(conn, withdrawal_id)
    if current["status"] == APPROVED:
        return Change(current, False)
    _expect(current, REQUESTED)
    return Change(conn.execute(SQL_APPROVE, (admin_id, withdrawal_id)).fetchone(), True)


def reject(conn, withdrawal_id: int, admin_id: int, reason: str | None) -> Change:
    """Reject a withdrawal nobody has signed yet and refund it, once however often called."""
    current = lock(conn, withdrawal_id)
    if current["status"] == REJECTED:
        return Change(current, False)
    _expect(current, REQUESTED, APPROVED)
    row = conn.execute(SQL_REJECT, (admin_id, reason, withdrawal_id)).fetchone()
    _refund(conn, row)
    return Change(row, True)


def cancel(conn, withdrawal_id: int, user_id: int) -> Change:
    """The user withdraws their own request before an admin decided; refunded once however often called."""
    current = lock(conn, withdrawal_id)
    if current["user_id"] != user_id:
        raise NotFound(f"withdrawal #{withdrawal_id} does not exist")
    if current["status"] == CANCELLED:
        return Change(current, False)
    _expect(current, REQUESTED)
    row = conn.execute(SQL_CANCEL, (withdrawal_id,)).fetchone()
    _refund(conn, row)
    return Change(row, True)


def fail(conn, withdrawal_id: int, reason: str, attempt: dict | None = None, block: int | None = None) -> Change:
    """Mark a withdrawal failed and refund it once (`attempt`: the stored attempt mined reverted, in `block`).

    Callers must know the transaction can never be mined (a reverted receipt, or it
    was never signed): refunding a transaction that is later mined pays out twice.
    """
    current = lock(conn, withdrawal_id)
    if current["status"] == FAILED:
        return Change(current, False)
    _expect(current, APPROVED, SIGNED, BROADCAST)
    if attempt is not None:
        withdrawal_attempts.mark_mined(conn, attempt["id"], block)
        if attempt["tx_hash"] != current["tx_hash"]:
            conn.execute(SQL_USE_ATTEMPT, (attempt["tx_hash"], attempt["raw_tx"], withdrawal_id))
    row = conn.execute(SQL_FAIL, (reason, withdrawal_id)).fetchone()
    _refund(conn, row)
    return Change(row, True)


def mark_signed(conn, withdrawal_id: int, *, from_address: str, nonce: int, tx_hash: str, raw_tx: bytes,
                fees: Fees) -> dict:
    """Store the signed transaction as the withdrawal's first attempt; this must commit before it is sent."""
    _expect(lock(conn, withdrawal_id), APPROVED)
    row = conn.execute(SQL_SIGNED, (canonical(from_address), nonce, tx_hash.lower(), raw_tx,
                                    withdrawal_id)).fetchone()
    withdrawal_attempts.record(conn, row, withdrawal_attempts.TRANSFER, tx_hash, raw_tx, fees)
    return row


def add_attempt(conn, withdrawal_id: int, kind: str, *, tx_hash: str, raw_tx: bytes, fees: Fees) -> dict:
    """Store another attempt at the nonce the withdrawal holds (a re-priced transfer, or a cancel); the
    withdrawal shows the newest transfer. Must commit before the bytes are sent."""
    current = lock(conn, withdrawal_id)
    _expect(current, SIGNED, BROADCAST)
    attempt = withdrawal_attempts.record(conn, current, kind, tx_hash, raw_tx, fees)
    if kind == withdrawal_attempts.TRANSFER:
        conn.execute(SQL_USE_ATTEMPT, (attempt["tx_hash"], raw_tx, withdrawal_id))
    return attempt


def release_nonce(conn, withdrawal_id: int, cancel: dict, block: int, retry_after_s: float, problem: str) -> Change:
    """A cancel at the withdrawal's nonce was mined: the nonce is spent, no transfer of it can be mined.
    Back to APPROVED with its amount still held, signed again (at a new nonce) after retry_after_s."""
    current = lock(conn, withdrawal_id)
    if current["status"] == APPROVED:
        return Change(current, False)
    _expect(current, SIGNED, BROADCAST)
    withdrawal_attempts.mark_mined(conn, cancel["id"], block)
    return Change(conn.execute(SQL_RELEASE, (retry_after_s, problem, withdrawal_id)).fetchone(), True)


def with_problems(conn, limit: int = 10) -> list[dict]:
    """Unsettled withdrawals with a recorded problem, oldest first."""
    return conn.execute(SQL_WITH_PROBLEMS, (limit,)).fetchall()


def note_problem(conn, withdrawal_id: int, problem: str) -> None:
    """Record what stops this withdrawal now (shown to admins); the status is untouched."""
    conn.execute(SQL_PROBLEM, (problem, withdrawal_id))


def paid_on_chain(conn, withdrawal_id: int, *, from_address: str, nonce: int, tx_hash: str, raw_tx: bytes) -> dict:
    """A transaction found on chain paid this unpaid withdrawal (reconciliation after a restore)."""
    _expect(lock(conn, withdrawal_id), REQUESTED, APPROVED)
    return conn.execute(SQL_PAID_ON_CHAIN, (canonical(from_address), nonce, tx_hash.lower(), raw_tx,
                                            withdrawal_id)).fetchone()


def committed_on_chain(conn) -> dict:
    """Amount and number of withdrawals signed or sent but not yet confirmed."""
    row = conn.execute(SQL_COMMITTED).fetchone()
    return {"amount": int(row["amount"]), "count": int(row["count"])}


def unpaid(conn) -> list[dict]:
    """Withdrawals that hold funds but were never signed, oldest first."""
    return conn.execute(SQL_UNPAID).fetchall()


def mark_broadcast(conn, withdrawal_id: int) -> Change:
    current = lock(conn, withdrawal_id)
    if current["status"] == BROADCAST:
        return Change(current, False)
    _expect(current, SIGNED)
    return Change(conn.execute(SQL_SET_STATUS, (BROADCAST, withdrawal_id)).fetchone(), True)


def confirm(conn, withdrawal_id: int, attempt: dict | None = None, block: int | None = None) -> Change:
    """The transfer is mined with enough confirmations; the held funds are gone for good.

    `attempt` is the stored attempt that was mined (in `block`): the withdrawal shows it.
    """
    current = lock(conn, withdrawal_id)
    if current["status"] == CONFIRMED:
        return Change(current, False)
    _expect(current, SIGNED, BROADCAST)
    if attempt is not None:
        withdrawal_attempts.mark_mined(conn, attempt["id"], block)
        if attempt["tx_hash"] != current["tx_hash"]:
            conn.execute(SQL_USE_ATTEMPT, (attempt["tx_hash"], attempt["raw_tx"], withdrawal_id))
    return Change(conn.execute(SQL_SET_STATUS, (CONFIRMED, withdrawal_id)).fetchone(), True)


def lock(conn, withdrawal_id: int) -> dict:
    row = conn.execute(SQL_LOCK, (withdrawal_id,)).fetchone()
    if row is None:
        raise NotFound(f"withdrawal #{withdrawal_id} does not exist")
    return row


def get(conn, withdrawal_id: int) -> dict | None:
    return conn.execute(SQL_GET, (withdrawal_id,)).fetchone()


def for_user(conn, user_id: int, limit: int = 10) -> list[dict]:
    return conn.execute(SQL_FOR_USER, (user_id, limit)).fetchall()


def in_flight_for_user(conn, user_id: int) -> list[dict]:
    return conn.execute(SQL_IN_FLIGHT_FOR_USER, (user_id,)).fetchall()


def with_status(conn, status: str, limit: int = 50) -> list[dict]:
    return conn.execute(SQL_BY_STATUS, (status, limit)).fetchall()


def next_approved(conn) -> dict | None:
    """The oldest APPROVED withdrawal (mark_signed's state check stops a second signer)."""
    return conn.execute(SQL_NEXT_APPROVED).fetchone()


def highest_nonce(conn, hot_wallet: str) -> int | None:
    """The highest nonce a withdrawal holds or any attempt ever used (a freed nonce stays used)."""
    held = conn.execute(SQL_HIGHEST_NONCE, (canonical(hot_wallet),)).fetchone()["nonce"]
    tried = withdrawal_attempts.highest_nonce(conn, hot_wallet)
    known = [n for n in (held, tried) if n is not None]
    return max(known) if known else None


def _refund(conn, withdrawal: dict) -> None:
    ledger.post(conn, user_id=withdrawal["user_id"], amount=withdrawal["amount"] + withdrawal["fee"],
                kind="withdrawal_refund", reference=f"withdrawal:{withdrawal['id']}",
                key=f"withdrawal:{withdrawal['id']}:refund")


def _expect(withdrawal: dict, *allowed: str) -> None:
    if withdrawal["status"] not in allowed:
        raise InvalidTransition(
            f"withdrawal #{withdrawal['id']} is {withdrawal['status']}, expected {' or '.join(allowed)}")
