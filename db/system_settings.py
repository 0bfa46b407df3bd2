"""System settings edited by admins: key -> JSON value (amounts as whole-token decimal strings)."""
from psycopg.types.json import Jsonb

SQL_GET = "SELECT value FROM system_settings WHERE key = %s"
SQL_ALL = "SELECT key, value, updated_by, updated_at FROM system_settings ORDER BY key"
SQL_SET = """
INSERT INTO system_settings (key, value, updated_by, updated_at) VALUES (%s, %s, %s, now())
ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_by = EXCLUDED.updated_by, updated_at = now()
"""


def get(conn, key: str, default=None):
    row = conn.execute(SQL_GET, (key,)).fetchone()
    return row["value"] if row else default


def all_settings(conn) -> list[dict]:
    return conn.execute(SQL_ALL).fetchall()


def put(conn, key: str, value, admin_id: int | None) -> None:
    conn.execute(SQL_SET, (key, Jsonb(value), admin_id))
