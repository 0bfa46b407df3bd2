"""Numbered SQL migrations: discover, verify against schema_migrations, apply in order."""
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from core.errors import MigrationError

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
ADVISORY_LOCK_KEY = 7_262_013_001  # serializes concurrent `dr.py migrate` runs
_FILE_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")
HINT = "run `python dr.py migrate`"

SQL_APPLIED = "SELECT version, name, checksum FROM schema_migrations ORDER BY version"
SQL_RECORD = "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str
    checksum: str

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Read migrations/NNNN_name.sql; refuse gaps, duplicates and misnamed files."""
    found = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.fullmatch(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_snake_name.sql")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"two migration files carry number {version:04d}")
        data = path.read_bytes()
        found[version] = Migration(version, match.group(2), data.decode("utf-8"),
                                   hashlib.sha256(data).hexdigest())
    expected = list(range(1, len(found) + 1))
    if sorted(found) != expected:
        missing = sorted(set(range(1, max(found, default=0) + 1)) - set(found))
        raise MigrationError(f"migration number {missing[0]:04d} is missing from {directory}")
    return [found[version] for version in expected]


def applied(conn: psycopg.Connection) -> list[dict]:
    """Rows of schema_migrations, or [] on a database never migrated."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT to_regclass('schema_migrations') IS NOT NULL AS present")
        if not cur.fetchone()["present"]:
            return []
        return cur.execute(SQL_APPLIED).fetchall()


def pending(conn: psycopg.Connection, migrations: list[Migration]) -> list[Migration]:
    """Migrations not yet applied; raise if the database and the files disagree."""
    by_version = {m.version: m for m in migrations}
    done = applied(conn)
    for row in done:
        known = by_version.get(row["version"])
        if known is None:
            raise MigrationError(
                f"database has migration {row['version']:04d}_{row['name']} that is not in "
                f"migrations/: this code is older than the database")
        if known.checksum != row["checksum"]:
            raise MigrationError(
                f"migration {known.label} was edited after it was applied "
                f"(checksum differs); add a new numbered migration instead")
    done_versions = {row["version"] for row in done}
    return [m for m in migrations if m.version not in done_versions]


def migrate(conn: psycopg.Connection, migrations: list[Migration]) -> list[Migration]:
    """Apply pending migrations, each in its own transaction; return those applied.

    `conn` must be in autocommit mode: the advisory lock is held by the session
    across the per-migration transactions, so a second runner waits and then finds
    nothing left to do.
    """
    if not conn.autocommit:
        raise ValueError("migrate() needs an autocommit connection")
    conn.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
    try:
        done = []
        for migration in pending(conn, migrations):
            with conn.transaction():
                conn.execute(migration.sql)
                conn.execute(SQL_RECORD, (migration.version, migration.name, migration.checksum))
            done.append(migration)
        return done
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))


def check_current(conn: psycopg.Connection, migrations: list[Migration]) -> None:
    """Raise MigrationError with a hint unless every migration is applied unchanged."""
    try:
        missing = pending(conn, migrations)
    except MigrationError as exc:
        raise MigrationError(f"{exc}; then {HINT}") from None
    if missing:
        labels = ", ".join(m.label for m in missing)
        raise MigrationError(f"database is not fully migrated ({len(missing)} pending: {labels}); {HINT}")

