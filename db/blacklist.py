"""Blacklist of Telegram users."""

SQL_BAN = """
INSERT INTO blacklist (user_id, reason, created_by) VALUES (%s, %s, %s)
ON CONFLICT (user_id) DO UPDATE SET reason = EXCLUDED.reason
RETURNING (xmax = 0) AS added
"""
SQL_UNBAN = "DELETE FROM blacklist WHERE user_id = %s RETURNING user_id"
SQL_IS_BANNED = "SELECT EXISTS (SELECT 1 FROM blacklist WHERE user_id = %s) AS banned"
SQL_ALL = "SELECT * FROM blacklist ORDER BY created_at"


def ban(conn, user_id: int, reason: str | None, admin_id: int) -> bool:
    """Ban the user; False if they were banned already (the reason is updated)."""
    return conn.execute(SQL_BAN, (user_id, reason, admin_id)).fetchone()["added"]


def unban(conn, user_id: int) -> bool:
    return conn.execute(SQL_UNBAN, (user_id,)).fetchone() is not None


def is_banned(conn, user_id: int) -> bool:
    return conn.execute(SQL_IS_BANNED, (user_id,)).fetchone()["banned"]


def all_banned(conn) -> list[dict]:
    return conn.execute(SQL_ALL).fetchall()
