"""The worker lease: one row saying which process may act on the chain, until when, under which epoch.

Times are the database's (now()), so the machines' clocks do not matter.
"""
from core.errors import LeaseLost

SQL_TAKE = """
INSERT INTO worker_lease (id, holder, site, epoch, expires_at, renewed_at)
VALUES (1, %(holder)s, %(site)s, 1, now() + %(ttl_s)s * interval '1 second', now())
ON CONFLICT (id) DO UPDATE SET
    epoch = CASE WHEN worker_lease.holder = EXCLUDED.holder THEN worker_lease.epoch ELSE worker_lease.epoch + 1 END,
    holder = EXCLUDED.holder, site = EXCLUDED.site, expires_at = EXCLUDED.expires_at, renewed_at = now()
WHERE worker_lease.holder = EXCLUDED.holder OR worker_lease.site = EXCLUDED.site OR worker_lease.expires_at <= now()
RETURNING epoch
"""
SQL_HOLDS = """
SELECT 1 FROM worker_lease WHERE id = 1 AND holder = %s AND epoch = %s AND expires_at > now() FOR SHARE
"""
SQL_RELEASE = "UPDATE worker_lease SET expires_at = now() WHERE id = 1 AND holder = %s"
SQL_CURRENT = """
SELECT holder, site, epoch, expires_at, renewed_at, expires_at > now() AS live,
       extract(epoch FROM expires_at - now())::float AS expires_in_s
FROM worker_lease WHERE id = 1
"""


def take(conn, holder: str, site: str, ttl_s: float) -> int | None:
    """Renew our lease or take one that expired (or was ours at this site); its epoch, or None if another
    process holds it. Taken from another process, the epoch is one more than before."""
    row = conn.execute(SQL_TAKE, {"holder": holder, "site": site, "ttl_s": ttl_s}).fetchone()
    return row["epoch"] if row else None


def check(conn, holder: str, epoch: int | None) -> None:
    """Raise LeaseLost unless `holder` still holds the lease at `epoch`. The row stays share-locked to the
    end of the transaction, so nobody can take the lease while it records what it did."""
    if epoch is None or conn.execute(SQL_HOLDS, (holder, epoch)).fetchone() is None:
        raise LeaseLost(f"{holder} does not hold the worker lease at epoch {epoch}")


def release(conn, holder: str) -> None:
    """Let the lease go at once (a clean stop), so a standby or `dr.py recover` need not wait for it to expire."""
    conn.execute(SQL_RELEASE, (holder,))


def current(conn) -> dict | None:
    return conn.execute(SQL_CURRENT).fetchone()
