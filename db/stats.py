"""Read-only aggregates for admins."""

SQL_USERS = "SELECT count(*) AS users, coalesce(sum(balance), 0) AS balances FROM users"
SQL_DEPOSITS = "SELECT status, count(*) AS n FROM deposits GROUP BY status ORDER BY status"
SQL_WITHDRAWALS = "SELECT status, count(*) AS n FROM withdrawals GROUP BY status ORDER BY status"


def summary(conn) -> dict:
    totals = conn.execute(SQL_USERS).fetchone()
    return {
        "users": totals["users"],
        "balances": int(totals["balances"]),
        "deposits": {row["status"]: row["n"] for row in conn.execute(SQL_DEPOSITS)},
        "withdrawals": {row["status"]: row["n"] for row in conn.execute(SQL_WITHDRAWALS)},
    }


SQL_QUEUES = """
SELECT (SELECT count(*) FROM notification_outbox WHERE status = 'PENDING') AS outbox,
       (SELECT count(*) FROM notification_queue_fallback WHERE status = 'PENDING') AS fallback,
       (SELECT count(*) FROM notification_outbox WHERE status = 'PENDING'
           AND created_at < now() - make_interval(secs => %(stuck)s)) AS stuck_notices,
       (SELECT count(*) FROM user_fsm_states WHERE migrated_at IS NULL
           AND updated_at > now() - make_interval(secs => %(ttl)s)) AS dialogs,
       (SELECT count(*) FROM deposits WHERE status = 'PENDING_NETWORK_RECOVERY') AS network_recovery,
       (SELECT count(*) FROM withdrawals WHERE status = 'APPROVED') AS approved,
       (SELECT count(*) FROM withdrawals WHERE status IN ('SIGNED', 'BROADCAST')) AS in_flight
"""
SQL_LIABILITIES = """
SELECT (SELECT coalesce(sum(balance), 0) FROM users) AS balances,
       (SELECT coalesce(sum(amount), 0) FROM withdrawals
        WHERE status IN ('REQUESTED', 'APPROVED', 'SIGNED', 'BROADCAST')) AS withdrawals
"""


def queues(conn, dialog_ttl_s: int, stuck_s: int) -> dict:
    """What waits where: notices, dialog states for Redis, outage deposits, withdrawals to pay."""
    return {key: int(value) for key, value in conn.execute(SQL_QUEUES, {"stuck": stuck_s, "ttl": dialog_ttl_s})
            .fetchone().items()}


def liabilities(conn) -> dict:
    """What the hot wallet owes: user balances plus withdrawals not yet paid (their amounts are held)."""
    row = conn.execute(SQL_LIABILITIES).fetchone()
    return {"balances": int(row["balances"]), "withdrawals": int(row["withdrawals"]),
            "total": int(row["balances"]) + int(row["withdrawals"])}
