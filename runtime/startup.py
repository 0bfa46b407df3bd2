"""Start-up checks shared by bot.py, worker.py and dr.py: settings, logging, schema, token metadata."""
import signal
import sys

from chain.token import TokenInfo, load_token_info
from core import logs
from core.errors import ConfigError, DatabaseError, MigrationError, TokenInfoUnavailable
from core.settings import Settings, exit_with_config_error, load_or_exit
from db import migrate
from db.pool import connect


def settings_or_exit(*required: str) -> Settings:
    """Load and validate settings; a bad or missing value exits 2 with one line naming it."""
    settings = load_or_exit()
    require_or_exit(settings, *required)
    logs.configure(settings)
    return settings


def require_or_exit(settings, *names: str) -> None:
    try:
        settings.require(*names)
    except ConfigError as exc:
        exit_with_config_error(exc)


def reload_on_sighup(watcher) -> None:
    """SIGHUP (`systemctl reload`) re-reads .env at once; live settings apply, others wait for a restart."""
    signal.signal(signal.SIGHUP, lambda *_: watcher.reload_soon())


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


def token_info_or_exit(settings, pool, program: str) -> TokenInfo:
    """Symbol and decimals from the contract or the cached copy; neither: exit 1 with one line."""
    try:
        return load_token_info(settings, pool)
    except TokenInfoUnavailable as exc:
        fail(f"{program}: cannot read the token's symbol and decimals: {exc}")
