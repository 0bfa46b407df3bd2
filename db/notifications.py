"""Queued notices in PostgreSQL: the outbox of money events, and the fallback queue of the rest.

`notification_outbox`: a notice caused by a money event, written in that event's own
transaction, so it exists exactly when the event committed; the worker delivers it.
`notification_queue_fallback`: a notice that could not go to the Redis Stream (Redis
down); the fallback processor sends it, or recovery migrates it to the stream, never
both. In both, the unique idempotency key makes queueing the same notice twice
harmless. Payload: {"text": <catalog key>, "values": {...}, "buttons": [...]},
rendered in the user's language at delivery.
"""
from psycopg.types.json import Jsonb

OUTBOX, FALLBACK = "notification_outbox", "notification_queue_fallback"
TABLES = (OUTBOX, FALLBACK)
MAX_BACKOFF_S = 60  # a transient failure (Telegram down) is retried forever, at least once a minute

SQL_ENQUEUE = """
INSERT INTO {table} (chat_id, payload, idempotency_key) VALUES (%s, %s, %s)
ON CONFLICT (idempotency_key) DO NOTHING RETURNING id
"""
SQL_CLAIM = """
UPDATE {table} SET next_attempt_at = now() + make_interval(secs => %(lease)s)
WHERE id IN (SELECT id FROM {table}
             WHERE status = 'PENDING' AND next_attempt_at <= now()
               AND (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s::bigint[]))
             ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
RETURNING *
"""
SQL_SENT = "UPDATE {table} SET status = 'SENT', processed_at = now() WHERE id = %s"
SQL_RETRY = """
UPDATE {table}
SET attempts = attempts + 1, last_error = %(error)s,
    status = CASE WHEN %(permanent)s THEN 'FAILED' ELSE 'PENDING' END,
    processed_at = CASE WHEN %(permanent)s THEN now() END,
    next_attempt_at = now() + make_interval(secs => least(%(max_backoff)s, 2 ^ least(attempts + 1, 16)))
WHERE id = %(id)s
"""
SQL_RETRY_AT = "UPDATE {table} SET next_attempt_at = now() + make_interval(secs => %s) WHERE id = %s"
SQL_PENDING_COUNT = "SELECT count(*) AS n FROM {table} WHERE status = 'PENDING'"
# rows nobody is sending now (not leased): recovery moves them to the stream, in the same transaction
SQL_TAKE_FOR_MIGRATION = """
SELECT * FROM notification_queue_fallback WHERE status = 'PENDING' AND next_attempt_at <= now()
ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED
"""
SQL_SENT_IN_FALLBACK = """
SELECT EXISTS (SELECT 1 FROM notification_queue_fallback WHERE idempotency_key = %s AND status = 'SENT') AS sent
"""
SQL_MIGRATED = """
UPDATE notification_queue_fallback SET status = 'MIGRATED', migrated_at = now() WHERE id = ANY(%s::bigint[])
"""


def _sql(template: str, table: str) -> str:
    if table not in TABLES:
        raise ValueError(f"not a notification table: {table!r}")
    return template.format(table=table)


def payload_of(text_key: str, values: dict, buttons: list | None = None) -> dict:
    return {"text": text_key, "values": values, **({"buttons": buttons} if buttons else {})}


def enqueue(conn, chat_id: int, text_key: str, values: dict, idempotency_key: str,
            buttons: list | None = None) -> int | None:
    """Queue a money event's notice in its transaction (buttons: rows of [text key, values, callback data]);
    its id, or None if queued before."""
    return enqueue_payload(conn, OUTBOX, chat_id, payload_of(text_key, values, buttons), idempotency_key)


def enqueue_for_admins(conn, admin_ids, text_key: str, values: dict, key_prefix: str) -> None:
    """The same money-event notice to every admin, each keyed `<key_prefix>:<admin id>`."""
    for admin_id in admin_ids:
        enqueue(conn, admin_id, text_key, values, f"{key_prefix}:{admin_id}")


def enqueue_payload(conn, table: str, chat_id: int, payload: dict, idempotency_key: str) -> int | None:
    row = conn.execute(_sql(SQL_ENQUEUE, table), (chat_id, Jsonb(payload), idempotency_key)).fetchone()
    return row["id"] if row else None


def claim(conn, limit: int = 20, lease_s: int = 60, ids: list[int] | None = None, table: str = OUTBOX) -> list[dict]:
    """Take due rows (only `ids`, if given) for `lease_s` seconds: send after commit, then mark them.

    Sending happens outside any transaction; a deliverer that dies mid-way leaves its
    rows to be retried when the lease ends (at least once: Telegram has no idempotency).
    """
    rows = conn.execute(_sql(SQL_CLAIM, table), {"lease": lease_s, "limit": limit, "ids": ids}).fetchall()
    return sorted(rows, key=lambda row: row["id"])


def mark_sent(conn, notification_id: int, table: str = OUTBOX) -> None:
    conn.execute(_sql(SQL_SENT, table), (notification_id,))


def mark_failed_attempt(conn, notification_id: int, error: str, permanent: bool, table: str = OUTBOX) -> None:
    """Schedule a retry with backoff; only a permanent failure (blocked, bad request) gives up."""
    conn.execute(_sql(SQL_RETRY, table), {"error": error[:500], "permanent": permanent,
                                          "max_backoff": MAX_BACKOFF_S, "id": notification_id})


def retry_in(conn, notification_id: int, seconds: float, table: str = OUTBOX) -> None:
    """Put a claimed row back for later without counting an attempt (the pace said wait)."""
    conn.execute(_sql(SQL_RETRY_AT, table), (seconds, notification_id))


def pending_count(conn, table: str = OUTBOX) -> int:
    return conn.execute(_sql(SQL_PENDING_COUNT, table)).fetchone()["n"]


def take_for_migration(conn, limit: int) -> list[dict]:
    """Lock fallback rows nobody is sending, for recovery to move to the stream before this transaction ends."""
    return conn.execute(SQL_TAKE_FOR_MIGRATION, (limit,)).fetchall()


def mark_migrated(conn, ids: list[int]) -> None:
    conn.execute(SQL_MIGRATED, (ids,))


def sent_in_fallback(conn, idempotency_key: str) -> bool:
    """Whether the fallback processor delivered this notice."""
    return conn.execute(SQL_SENT_IN_FALLBACK, (idempotency_key,)).fetchone()["sent"]
