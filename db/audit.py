"""Admin audit log: who did (or tried) what to whom, and when."""
from psycopg.types.json import Jsonb

SQL_RECORD = """
INSERT INTO admin_audit_log (actor_id, action, target_user_id, details, allowed)
VALUES (%s, %s, %s, %s, %s) RETURNING id
"""


def record(conn, *, actor_id: int, action: str, target_user_id: int | None = None,
           details: dict | None = None, allowed: bool = True) -> int:
    return conn.execute(SQL_RECORD, (actor_id, action, target_user_id, Jsonb(details or {}),
                                     allowed)).fetchone()["id"]
