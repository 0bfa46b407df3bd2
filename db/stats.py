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
