"""Scan cursors: the last block fully scanned, per stream."""

SQL_GET = "SELECT * FROM chain_cursor WHERE stream = %s"
SQL_FURTHEST_WITH_PREFIX = """
SELECT * FROM chain_cursor WHERE starts_with(stream, %s) ORDER BY last_block DESC, updated_at DESC LIMIT 1
"""
SQL_SET = """
INSERT INTO chain_cursor (stream, last_block, block_hash, updated_at) VALUES (%s, %s, %s, now())
ON CONFLICT (stream) DO UPDATE SET last_block = EXCLUDED.last_block, block_hash = EXCLUDED.block_hash,
    updated_at = now()
"""


def get(conn, stream: str) -> dict | None:
    return conn.execute(SQL_GET, (stream,)).fetchone()


def furthest_with_prefix(conn, prefix: str) -> dict | None:
    """The cursor that got furthest among the streams whose names start with `prefix`."""
    return conn.execute(SQL_FURTHEST_WITH_PREFIX, (prefix,)).fetchone()


def set_cursor(conn, stream: str, last_block: int, block_hash: str | None) -> None:
    """Record that every block up to `last_block` is scanned; commit it with what was credited."""
    conn.execute(SQL_SET, (stream, last_block, block_hash.lower() if block_hash else None))
