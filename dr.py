"""Operator CLI for disaster recovery and schema: python dr.py migrate|status.

Later issues add the circuit breaker, fallback storage, recovery routines and the
commands recover, warmup and maintenance on|off.
"""
import argparse
import sys

import boot
from db import migrate
from db.pool import connect
from errors import DatabaseError, MigrationError


def run_migrate(settings) -> int:
    """Apply pending migrations; refuse if an applied file was edited or a number is missing."""
    try:
        migrations = migrate.discover()
        with connect(settings, "dr-migrate", autocommit=True) as conn:
            done = migrate.migrate(conn, migrations)
    except MigrationError as exc:
        boot.fail(f"migrate: refused: {exc}")
    except DatabaseError as exc:
        boot.fail(f"migrate: cannot reach the database at {settings.database_url}: {exc}")
    for migration in done:
        print(f"applied {migration.label}")
    print(f"schema is current ({len(migrations)} migrations, {len(done)} applied now)")
    return 0


def run_status(settings) -> int:
    """Print the schema state; later issues add breakers, queues and maintenance."""
    try:
        migrations = migrate.discover()
        with connect(settings, "dr-status", autocommit=True) as conn:
            missing = migrate.pending(conn, migrations)
    except (MigrationError, DatabaseError) as exc:
        print(f"database: PROBLEM: {exc}")
        return 1
    state = "current" if not missing else f"{len(missing)} pending migrations"
    print(f"database: ok, schema {state}")
    return 0 if not missing else 1


COMMANDS = {"migrate": run_migrate, "status": run_status}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dr.py", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=sorted(COMMANDS))
    args = parser.parse_args(argv)
    settings = boot.settings_or_exit("DATABASE_URL")
    return COMMANDS[args.command](settings)


if __name__ == "__main__":
    sys.exit(main())
