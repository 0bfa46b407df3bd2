"""Users: registration, language, blocked-the-bot flag (wallets: db/wallets.py)."""
from core.errors import NotFound

SQL_UPSERT = """
INSERT INTO users (id, username, language) VALUES (%(id)s, %(username)s, %(language)s)
ON CONFLICT (id) DO UPDATE SET username = EXCLUDED.username, blocked_bot = false
RETURNING *, (xmax = 0) AS created
"""
SQL_GET = "SELECT * FROM users WHERE id = %s"
SQL_LOCK = "SELECT * FROM users WHERE id = %s FOR UPDATE"
SQL_SET_LANGUAGE = "UPDATE users SET language = %s WHERE id = %s RETURNING *"
SQL_SET_BLOCKED = "UPDATE users SET blocked_bot = %s WHERE id = %s"
SQL_PAGE = "SELECT * FROM users WHERE id > %s ORDER BY id LIMIT %s"


def register(conn, user_id: int, username: str | None, language: str) -> dict:
    """Create the user or refresh their username; 'created' tells which. Language is kept if known."""
    return conn.execute(SQL_UPSERT, {"id": user_id, "username": username, "language": language}).fetchone()


def page(conn, after_id: int, limit: int) -> list[dict]:
    """Users with an id above `after_id`, in id order (for walking the whole table in batches)."""
    return conn.execute(SQL_PAGE, (after_id, limit)).fetchall()


def get(conn, user_id: int) -> dict | None:
    return conn.execute(SQL_GET, (user_id,)).fetchone()


def lock(conn, user_id: int) -> dict:
    """Return the user's row locked FOR UPDATE until the transaction ends."""
    row = conn.execute(SQL_LOCK, (user_id,)).fetchone()
    if row is None:
        raise NotFound(f"user {user_id} does not exist")
    return row


def set_language(conn, user_id: int, language: str) -> dict:
    row = conn.execute(SQL_SET_LANGUAGE, (language, user_id)).fetchone()
    if row is None:
        raise NotFound(f"user {user_id} does not exist")
    return row


def set_blocked_bot(conn, user_id: int, blocked: bool) -> None:
    conn.execute(SQL_SET_BLOCKED, (blocked, user_id))
