"""Health reports written by one process and read by the others."""
from psycopg.types.json import Jsonb

SQL_PUT = """
INSERT INTO service_status (name, status, updated_at) VALUES (%s, %s, now())
ON CONFLICT (name) DO UPDATE SET status = EXCLUDED.status, updated_at = now()
"""
SQL_GET = "SELECT status, updated_at, now() - updated_at AS age FROM service_status WHERE name = %s"


def put(conn, name: str, status: dict) -> None:
    conn.execute(SQL_PUT, (name, Jsonb(status)))


def get(conn, name: str) -> dict | None:
    """{'status': {...}, 'updated_at': ..., 'age': timedelta} or None."""
    return conn.execute(SQL_GET, (name,)).fetchone()
