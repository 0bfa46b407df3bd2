"""Start-up checks shared by bot.py, worker.py and dr.py: settings, logging, schema."""
import sys

import logging

import applog
import chain
import config
from db import migrate, system_settings
from db.pool import connect, transaction
from errors import ConfigError, DatabaseError, MigrationError

log = logging.getLogger(__name__)
TOKEN_CACHE_KEY = "token_metadata"


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


def load_token_info(settings, pool, program: str) -> chain.TokenInfo:
    """Symbol and decimals from the contract, cached in the database for when the RPC is down."""
    try:
        info = chain.read_token_info(chain.connect(settings), settings.token_address)
    except Exception as exc:  # any RPC trouble: fall back to the cached copy
        log.warning("token metadata from the RPC failed (%s); using the cached copy", type(exc).__name__)
        with transaction(pool) as conn:
            cached = system_settings.get(conn, TOKEN_CACHE_KEY)
        if not cached or cached.get("address", "").lower() != settings.token_address.lower():
            fail(f"{program}: cannot read the token's symbol and decimals: the RPC is unreachable and none are cached")
        return chain.TokenInfo(settings.token_address, cached["symbol"], int(cached["decimals"]))
    with transaction(pool) as conn:
        system_settings.put(conn, TOKEN_CACHE_KEY, {"address": info.address, "symbol": info.symbol,
                                                    "decimals": info.decimals}, None)
    return info
