"""Dialog states in PostgreSQL (user_fsm_states): the copy that outlives a Redis outage.

A key is (bot_id, chat_id, user_id, thread_id, business_connection_id). Every write
carries a version; an older version never overwrites a newer one. `migrated_at` is
set when Redis holds this version too; rows written while Redis was down have none
until recovery copies them back.
"""
from psycopg.types.json import Jsonb

KEY_COLUMNS = "bot_id, chat_id, user_id, thread_id, business_connection_id"
SQL_GET = f"""
SELECT state, data, version FROM user_fsm_states
WHERE ({KEY_COLUMNS}) = (%s, %s, %s, %s, %s) AND updated_at > now() - make_interval(secs => %s)
"""
SQL_PUT = f"""
INSERT INTO user_fsm_states ({KEY_COLUMNS}, state, data, version, updated_at, migrated_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now(), CASE WHEN %s::boolean THEN now() END)
ON CONFLICT ({KEY_COLUMNS}) DO UPDATE SET state = EXCLUDED.state, data = EXCLUDED.data, version = EXCLUDED.version,
    updated_at = now(), migrated_at = EXCLUDED.migrated_at
WHERE user_fsm_states.version < EXCLUDED.version
"""
SQL_UNMIGRATED = f"""
SELECT {KEY_COLUMNS}, state, data, version FROM user_fsm_states
WHERE migrated_at IS NULL AND updated_at > now() - make_interval(secs => %s)
ORDER BY updated_at LIMIT %s
"""
SQL_MARK_MIGRATED = f"""
UPDATE user_fsm_states s SET migrated_at = now()
FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], %s::text[], %s::bigint[])
     AS m({KEY_COLUMNS}, version)
WHERE (s.bot_id, s.chat_id, s.user_id, s.thread_id, s.business_connection_id, s.version)
    = (m.bot_id, m.chat_id, m.user_id, m.thread_id, m.business_connection_id, m.version)
  AND s.migrated_at IS NULL
"""


def get(conn, key: tuple, ttl_s: int) -> dict | None:
    """{'state', 'data', 'version'} of a dialog written within ttl_s, or None."""
    return conn.execute(SQL_GET, (*key, ttl_s)).fetchone()


def put(conn, key: tuple, state: str | None, data: dict, version: int, in_redis: bool) -> None:
    """Store this version unless a newer one is there already."""
    conn.execute(SQL_PUT, (*key, state, Jsonb(data), version, in_redis))


def unmigrated(conn, ttl_s: int, limit: int) -> list[dict]:
    """Dialog states Redis may not have, oldest first (older than ttl_s: forgotten like in Redis)."""
    return conn.execute(SQL_UNMIGRATED, (ttl_s, limit)).fetchall()


def mark_migrated(conn, rows: list[dict]) -> None:
    """Redis holds these versions now (a row rewritten meanwhile keeps waiting)."""
    columns = list(zip(*[(*key_of(row), row["version"]) for row in rows])) if rows else [()] * 6
    conn.execute(SQL_MARK_MIGRATED, [list(column) for column in columns])  # one statement per batch


def key_of(row: dict) -> tuple:
    return (row["bot_id"], row["chat_id"], row["user_id"], row["thread_id"], row["business_connection_id"])
