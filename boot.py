"""Start-up checks shared by bot.py, worker.py and dr.py: settings, logging, schema."""
import sys

import applog
import config
from db import migrate
from db.pool import connect
from errors import ConfigError, DatabaseError, MigrationError


def settings_or_exit(*required: str) -> config.Settings:
    """Load and validate settings; a bad or missing value exits 2 with one line naming it."""
    settings = config.load_or_exit()
    require_or_exit(settings, *required)
    applog.configure(settings)
    return settings


def require_or_exit(settings, *names: str) -> None:
    try:
        settings.require(*names)
    except ConfigError as exc:
        config.exit_with_config_error(exc)


def fail(message: str, code: int = 1):
    print(message, file=sys.stderr)
    sys.exit(code)


def schema_current_or_exit(settings, application_name: str) -> None:
    """Refuse to run against a database that is unreachable or not fully migrated."""
    try:
        with connect(settings, application_name, autocommit=True) as conn:
            migrate.check_current(conn, migrate.discover())
    except MigrationError as exc:
        fail(f"{application_name}: {exc}")
    except DatabaseError as exc:
        fail(f"{application_name}: cannot reach the database at {settings.database_url}: {exc}")
