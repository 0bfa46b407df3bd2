"""Notifications to users, written in the same transaction as the event they report.

A row is the durable promise to tell someone; the delivery job sends due rows and
marks them SENT. The unique idempotency key makes enqueueing the same event twice
harmless. Payload: {"text": <catalog key>, "values": {...}}, rendered in the
user's language at delivery.
"""
from psycopg.types.json import Jsonb

MAX_BACKOFF_S = 60  # a transient failure (Telegram down) is retried forever, at least once a minute

SQL_ENQUEUE = """
INSERT INTO notification_queue_fallback (chat_id, payload, idempotency_key) VALUES (%s, %s, %s)
ON CONFLICT (idempotency_key) DO NOTHING RETURNING id
"""
SQL_CLAIM = """
UPDATE notification_queue_fallback SET next_attempt_at = now() + make_interval(secs => %(lease)s)
WHERE id IN (SELECT id FROM notification_queue_fallback
             WHERE status = 'PENDING' AND next_attempt_at <= now()
               AND (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s::bigint[]))
             ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
RETURNING *
"""
SQL_SENT = "UPDATE notification_queue_fallback SET status = 'SENT', processed_at = now() WHERE id = %s"
SQL_RETRY = """
UPDATE notification_queue_fallback
SET attempts = attempts + 1, last_error = %(error)s,
    status = CASE WHEN %(permanent)s THEN 'FAILED' ELSE 'PENDING' END,
    processed_at = CASE WHEN %(permanent)s THEN now() END,
    next_attempt_at = now() + make_interval(secs => least(%(max_backoff)s, 2 ^ least(attempts + 1, 16)))
WHERE id = %(id)s
"""
SQL_PENDING_COUNT = "SELECT count(*) AS n FROM notification_queue_fallback WHERE status = 'PENDING'"


def enqueue(conn, chat_id: int, text_key: str, values: dict, idempotency_key: str,
            buttons: list | None = None) -> int | None:
    """Queue a message (buttons: rows of [text key, values, callback data]); its id, or None if queued before."""
    payload = {"text": text_key, "values": values, **({"buttons": buttons} if buttons else {})}
    row = conn.execute(SQL_ENQUEUE, (chat_id, Jsonb(payload), idempotency_key)).fetchone()
    return row["id"] if row else None


def claim(conn, limit: int = 20, lease_s: int = 60, ids: list[int] | None = None) -> list[dict]:
    """Take due rows (only `ids`, if given) for `lease_s` seconds: send after commit, then mark them.

    Sending happens outside any transaction; a deliverer that dies mid-way leaves its
    rows to be retried when the lease ends (at least once: Telegram has no idempotency).
    """
    rows = conn.execute(SQL_CLAIM, {"lease": lease_s, "limit": limit, "ids": ids}).fetchall()
    return sorted(rows, key=lambda row: row["id"])


def mark_sent(conn, notification_id: int) -> None:
    conn.execute(SQL_SENT, (notification_id,))


def mark_failed_attempt(conn, notification_id: int, error: str, permanent: bool) -> None:
    """Schedule a retry with backoff; only a permanent failure (blocked, bad request) gives up."""
    conn.execute(SQL_RETRY, {"error": error[:500], "permanent": permanent, "max_backoff": MAX_BACKOFF_S,
                             "id": notification_id})


def pending_count(conn) -> int:
    return conn.execute(SQL_PENDING_COUNT).fetchone()["n"]
