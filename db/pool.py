"""The connection pool, the transaction() helper and the one place driver errors are translated."""
import contextlib
import logging

from decimal import Decimal

import psycopg
from psycopg.adapt import Loader
from psycopg.rows import dict_row, tuple_row
from psycopg_pool import ConnectionPool

from core.errors import DatabaseError, DatabaseInterfaceError, DatabaseOperationalError
from db.watchdog import WATCHDOG

log = logging.getLogger(__name__)


class NumericLoader(Loader):
    """Load NUMERIC as int when it has no fraction (all money columns), else as Decimal."""

    def load(self, data) -> int | Decimal:
        text = bytes(data).decode("ascii")
        return Decimal(text) if "." in text or not text.lstrip("-").isdigit() else int(text)


def configure_connection(conn: psycopg.Connection) -> None:
    """Per-connection setup shared by the pool and single connections."""
    conn.adapters.register_loader("numeric", NumericLoader)


def connection_kwargs(settings, application_name: str) -> dict:
    """libpq options every connection gets: a short connect timeout and TCP keepalives."""
    return {
        "connect_timeout": settings.db_connect_timeout_s,
        "application_name": application_name,
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
        "row_factory": dict_row,
    }


def server_timeouts(deadline_s: float) -> str:
    """Server-side limits for pooled connections, inside the watchdog's deadline.

    A statement or a lock wait that runs too long ends as a clean error the caller can
    answer (and the connection stays usable) before the watchdog has to cut the socket;
    a transaction left idle is ended by the server. CLI connections (migrations) have none.
    """
    statement_ms, lock_ms = max(int(deadline_s * 800), 100), max(int(deadline_s * 600), 50)
    return (f"-c statement_timeout={statement_ms} -c lock_timeout={lock_ms} "
            f"-c idle_in_transaction_session_timeout={int(deadline_s * 2000)}")


class AppPool(ConnectionPool):
    """A ConnectionPool that also carries the deadline transaction() enforces."""

    query_timeout_s: float = 10.0


def open_pool(settings, application_name: str) -> AppPool:
    """Open a pool without waiting for PostgreSQL: an outage at start must not crash the process.

    check= tests each connection before handing it out (the pool would otherwise give
    out connections the server already dropped), and reconnect_timeout bounds the
    pool's own backoff (1 s, 2 s, 4 s, ...): past it the pool gives up that attempt and
    the next caller that needs a connection starts a fresh one.
    """
    deadline_s = settings.db_query_timeout_s
    kwargs = {**connection_kwargs(settings, application_name), "options": server_timeouts(deadline_s)}

    def check(conn) -> None:
        with WATCHDOG.guard(conn, deadline_s):  # a frozen server must not hang the check
            ConnectionPool.check_connection(conn)
            refuse_read_only(conn)

    pool = AppPool(
        settings.database_url.reveal(),
        min_size=settings.db_pool_min_size,
        max_size=settings.db_pool_max_size,
        timeout=settings.db_pool_timeout_s,
        reconnect_timeout=settings.db_reconnect_timeout_s,
        check=check,
        kwargs=kwargs,
        configure=configure_connection,
        name=application_name,
        open=False,
    )
    pool.query_timeout_s = deadline_s
    pool.open(wait=False)
    return pool


def refuse_read_only(conn) -> None:
    """Raise for a connection to a server that cannot write (a standby, or a primary demoted to one), so the
    pool drops it and opens a new one: libpq's target_session_attrs=read-write then finds the primary."""
    autocommit, conn.autocommit = conn.autocommit, True
    try:
        read_only = conn.cursor(row_factory=tuple_row).execute("SHOW transaction_read_only").fetchone()[0]
    finally:
        conn.autocommit = autocommit
    if read_only == "on":
        raise psycopg.OperationalError("the server is read-only (a standby): not the primary")


@contextlib.contextmanager
def transaction(pool: AppPool):
    """Yield a connection inside one transaction: commit on success, roll back on error.

    The whole transaction runs under the pool's deadline (DB_QUERY_TIMEOUT_S): keep
    network calls to Telegram or the RPC outside it.
    """
    with translate_errors():
        with pool.connection() as conn:
            with WATCHDOG.guard(conn, pool.query_timeout_s):
                with conn.transaction():
                    yield conn


def connect(settings, application_name: str, autocommit: bool = False) -> psycopg.Connection:
    """One connection outside the pool (CLI commands, migrations), with translated errors."""
    with translate_errors():
        conn = psycopg.connect(
            settings.database_url.reveal(), autocommit=autocommit,
            **connection_kwargs(settings, application_name))
        configure_connection(conn)
        return conn


@contextlib.contextmanager
def translate_errors():
    """Turn psycopg's exceptions into ours; anything else passes through untouched."""
    try:
        yield
    except (psycopg.OperationalError, psycopg.errors.ReadOnlySqlTransaction) as exc:  # PoolTimeout too
        # 25006 read_only_sql_transaction: this connection reached a standby (a failover is under way)
        raise DatabaseOperationalError(_describe(exc)) from exc
    except psycopg.InterfaceError as exc:
        raise DatabaseInterfaceError(_describe(exc)) from exc
    except psycopg.Error as exc:
        raise DatabaseError(_describe(exc)) from exc


# PostgreSQL answered: the statement or lock wait ran out of time, or lost a deadlock. Not an outage.
ANSWERED = (psycopg.errors.QueryCanceled, psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected)


def is_outage(exc: BaseException) -> bool:
    """True when PostgreSQL gave no usable answer (refused, lost, frozen, no free connection): counts
    against the breaker. Constraint violations, bad input and timeouts the server reported do not."""
    if not isinstance(exc, (DatabaseOperationalError, DatabaseInterfaceError)):
        return False
    return not isinstance(exc.__cause__, ANSWERED)


def _describe(exc: Exception) -> str:
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__
