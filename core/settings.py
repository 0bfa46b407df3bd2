"""Settings from the environment and a .env file, validated once; secrets never printed.

Every variable is declared once in VARIABLES with its parser, default and meaning;
.env.example and the README table are checked against that list by the tests.
"""
import logging
import os
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from dotenv import dotenv_values
from eth_account import Account

from core.addresses import ZERO_ADDRESS, parse_address
from core.amounts import parse_amount
from core.errors import AddressError, AmountError, ConfigError

log = logging.getLogger(__name__)

PROJECT_DIR = Path(__file__).resolve().parent.parent
ENV_FILE_DEFAULT = PROJECT_DIR / ".env"  # not the current directory: `dr.py status` run anywhere sees the same
LANGUAGES = ("ru", "en")
RELOAD_CHECK_INTERVAL_S = 1.0
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class Secret:
    """A string that prints as *** in repr, str and logs; .reveal() gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class SecretUrl(Secret):
    """A URL whose password is masked whenever it is shown."""

    def redacted(self) -> str:
        return redact_url(self._value)

    def __repr__(self) -> str:
        return f"SecretUrl({self.redacted()!r})"

    def __str__(self) -> str:
        return self.redacted()

    def password(self) -> str | None:
        return urlsplit(self._value).password


class SecretEndpoint(SecretUrl):
    """A URL whose path and query may hold an API key (RPC providers): both are masked too."""

    def redacted(self) -> str:
        parts = urlsplit(redact_url(self._value))
        if parts.path.strip("/") or parts.query:
            parts = parts._replace(path="/***", query="")
        return urlunsplit(parts)

    def path_secret(self) -> str | None:
        parts = urlsplit(self._value)
        tail = parts.path.strip("/") + (f"?{parts.query}" if parts.query else "")
        return tail or None


def redact_url(url: str) -> str:
    """Replace the password of `url` (if any) with ***; several hosts (h1:5432,h2:5432) stay as written."""
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return urlunsplit(parts._replace(netloc=f"{userinfo.split(':', 1)[0]}:***@{hosts}"))


def _check_hosts(netloc: str) -> None:
    """libpq's multi-host form: host[:port] separated by commas, each port a number."""
    for host in netloc.rpartition("@")[2].split(","):
        port = host.rpartition(":")[2] if ":" in host and not host.endswith("]") else ""
        if not host or (port and not (port.isdigit() and 0 < int(port) < 65536)):
            raise ValueError(f"malformed URL: bad host {host!r}")


# ---- parsers: each takes the raw text and returns the value or raises ValueError(reason)

def _url(*schemes: str, secret: type | None = None):
    def parse(text: str):
        try:
            parts = urlsplit(text)
            if parts.scheme.startswith("postgres") and "," in parts.netloc:
                _check_hosts(parts.netloc)  # a primary and its standbys: libpq picks the one that fits
            else:
                parts.port  # raises ValueError on a malformed port
        except ValueError as exc:
            raise ValueError(str(exc) if str(exc).startswith("malformed") else "malformed URL") from None
        if parts.scheme not in schemes:
            raise ValueError(f"malformed URL: scheme must be one of {', '.join(schemes)}")
        if not parts.hostname and not (parts.scheme == "unix" and parts.path):
            raise ValueError("malformed URL: no host")
        if any(ch.isspace() for ch in text):
            raise ValueError("malformed URL: contains whitespace")
        value = text.rstrip("/") if parts.scheme in ("http", "https") else text
        return secret(value) if secret else value
    return parse


def _integer(minimum: int | None = None, maximum: int | None = None):
    def parse(text: str) -> int:
        if not re.fullmatch(r"-?[0-9]+", text):
            raise ValueError(f"not an integer: {text!r}")
        value = int(text)
        if minimum is not None and value < minimum:
            raise ValueError(f"must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise ValueError(f"must be <= {maximum}, got {value}")
        return value
    return parse


def _seconds(minimum: float = 0.0):
    def parse(text: str) -> float:
        if not re.fullmatch(r"[0-9]+(\.[0-9]+)?", text):
            raise ValueError(f"not a number of seconds: {text!r}")
        value = float(text)
        if value < minimum:
            raise ValueError(f"must be >= {minimum}, got {text}")
        return value
    return parse


def _boolean(text: str) -> bool:
    lowered = text.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"not a boolean (use true or false): {text!r}")


def _address(text: str) -> str:
    try:
        address = parse_address(text)
    except AddressError as exc:
        raise ValueError(f"{exc}: {text!r}") from None
    if address == ZERO_ADDRESS:
        raise ValueError("the zero address is not allowed")
    return address


def _address_list(text: str) -> tuple:
    return tuple(_address(item.strip()) for item in text.split(",") if item.strip())


def _host_ports(text: str) -> tuple:
    """host:port,host:port -> ((host, port), ...)"""
    found = []
    for item in (part.strip() for part in text.split(",") if part.strip()):
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{item!r} is not host:port")
        found.append((host, int(port)))
    return tuple(found)


def _name(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", text):
        raise ValueError("letters, digits, '_', '.', '-' (at most 64)")
    return text


def _private_key(text: str) -> Secret:
    if not re.fullmatch(r"(0x)?[0-9a-fA-F]{64}", text):
        raise ValueError("must be 32 bytes as 64 hex digits, optionally prefixed with 0x")
    key = text[2:] if text.startswith("0x") else text
    if int(key, 16) == 0:
        raise ValueError("must not be zero")
    return Secret(key.lower())


def _id_list(text: str) -> frozenset:
    ids = set()
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if not re.fullmatch(r"[0-9]+", item) or int(item) == 0:
            raise ValueError(f"not a positive integer Telegram id: {item!r}")
        ids.add(int(item))
    return frozenset(ids)


def _language(text: str) -> str:
    if text not in LANGUAGES:
        raise ValueError(f"unknown language {text!r} (use {' or '.join(LANGUAGES)})")
    return text


def _token_units(text: str) -> str:
    """Validate a whole-token decimal; it becomes base units once the token's decimals are known."""
    try:
        parse_amount(text, 36, allow_zero=True)
    except AmountError as exc:
        raise ValueError(f"{exc}: {text!r}") from None
    return text


def _bot_token(text: str) -> Secret:
    if not re.fullmatch(r"[0-9]{1,20}:[A-Za-z0-9_-]{1,100}", text):
        raise ValueError("malformed: expected <bot id>:<secret> as given by @BotFather")
    return Secret(text)


def _project_path(text: str) -> Path:
    """A path; a relative one is taken from the project directory, wherever the program was started."""
    return PROJECT_DIR / Path(text)


@dataclass(frozen=True)
class Var:
    name: str
    parse: object
    default: str | None
    doc: str
    secret: bool = False
    live: bool = False  # picked up from .env edits by running processes; the rest need a restart


VARIABLES = (
    Var("BOT_TOKEN", _bot_token, None, "Telegram bot token (secret); required by bot.py and worker.py", True),
    Var("TELEGRAM_API_URL", _url("http", "https"), "https://api.telegram.org",
        "Bot API base URL; the bot calls {base}/bot{token}/{method}"),
    Var("DATABASE_URL", _url("postgresql", "postgres", secret=SecretUrl), None,
        "PostgreSQL URL, e.g. postgresql://bot:pw@127.0.0.1:5432/bot (password is secret)", True),
    Var("REDIS_URL", _url("redis", "rediss", "unix", secret=SecretUrl), "redis://127.0.0.1:6379/0",
        "Redis URL (password is secret)", True),
    Var("REDIS_SENTINELS", _host_ports, "",
        "comma-separated host:port of Redis Sentinels; when set, Redis is the master they name (REDIS_URL then "
        "gives only the password and database number)"),
    Var("REDIS_SENTINEL_SERVICE", _name, "mymaster", "the master's name in the Sentinels' configuration"),
    Var("RPC_URL", _url("http", "https", secret=SecretEndpoint), "http://127.0.0.1:8545",
        "EVM JSON-RPC endpoint (an API key in its path is treated as secret)", True),
    Var("CHAIN_ID", _integer(1), "31337", "EVM chain id the hot wallet signs for"),
    Var("TOKEN_ADDRESS", _address, None, "ERC-20 token contract; symbol and decimals are read from it"),
    Var("DEPOSIT_ADDRESS", _address, None, "where users send deposits; defaults to the hot wallet's address"),
    Var("PREVIOUS_DEPOSIT_ADDRESSES", _address_list, "",
        "comma-separated former deposit addresses, still scanned so late senders to them are credited"),
    Var("HOT_WALLET_PRIVATE_KEY", _private_key, None,
        "hot wallet key, 64 hex digits with or without 0x (secret)", True),
    Var("CONFIRMATIONS", _integer(1, 1000), "12", "blocks (counting the transfer's own) before a transfer counts"),
    Var("BLOCKCHAIN_MAINTENANCE_MODE", _boolean, "false",
        "true pauses chain work; running processes pick up edits of .env within 5 s", live=True),
    Var("ADMIN_IDS", _id_list, "", "comma-separated Telegram user ids of admins"),
    Var("DEFAULT_LANGUAGE", _language, "en", "language when Telegram gives none: ru or en"),
    Var("WITHDRAWAL_AUTO_APPROVE_MAX", _token_units, "0",
        "token units; withdrawals up to this are approved at once, 0 = every one needs an admin"),
    Var("WITHDRAWAL_DAILY_MAX", _token_units, "0",
        "token units a user may withdraw in 24 h without an admin, 0 = no limit; above it every one needs an admin"),
    Var("WITHDRAWAL_STUCK_S", _integer(1), "180",
        "seconds a sent withdrawal may stay unmined before it is replaced at a higher fee (same nonce)"),
    Var("WITHDRAWAL_REPRICE_MAX", _integer(0, 100), "3",
        "re-priced replacements of a stuck withdrawal before its nonce is freed and it is sent again later"),
    Var("WITHDRAWAL_MAX_FEE_GWEI", _integer(1), "500", "most gwei per gas ever offered for a withdrawal or a cancel"),
    Var("STATE_DIR", _project_path, "state", "directory for heartbeat and status files (relative to the project)"),
    Var("NOTIFY_BUFFER_MAX", _integer(1, 10_000_000), "10000",
        "notices kept in memory while Redis and PostgreSQL are both down (the oldest is dropped beyond)"),
    Var("TELEGRAM_MAX_MSG_PER_S", _integer(1, 30), "25",
        "messages per second the worker sends at most (Telegram allows about 30; the rest is the bot's)"),
    Var("DEPOSIT_REQUEST_TTL_H", _integer(1, 720), "24", "hours a deposit request stays open"),
    Var("RATE_LIMIT_UPDATES", _integer(1, 10000), "20", "updates a user may send per window", live=True),
    Var("RATE_LIMIT_WINDOW_S", _integer(1, 3600), "10", "seconds of the rate-limit window", live=True),
    Var("REDIS_TIMEOUT_S", _seconds(0.1), "1", "seconds for a Redis connect or command before it counts as down"),
    Var("RPC_TIMEOUT_S", _seconds(0.1), "5", "seconds for one JSON-RPC request"),
    Var("TELEGRAM_READ_TIMEOUT_S", _seconds(0.5), "10",
        "seconds to wait for a Bot API answer; a send left unanswered is retried only by the queue"),
    Var("TELEGRAM_POLL_TIMEOUT_S", _integer(1, 50), "25", "seconds of one getUpdates long poll"),
    Var("SCAN_START_BLOCK", _integer(0), None, "first block of the very first deposit scan; default: the head then"),
    Var("SCAN_CHUNK_BLOCKS", _integer(1, 100000), "500", "blocks per eth_getLogs request (halved when refused)"),
    Var("BREAKER_FAILURES", _integer(1, 100), "3",
        "consecutive connectivity failures that open a dependency's breaker (PostgreSQL, Redis, RPC)"),
    Var("BREAKER_RESET_S", _seconds(0.1), "10", "seconds an open breaker waits before one probe"),
    Var("BREAKER_SUCCESSES", _integer(1, 100), "1", "successful probes that close a half-open breaker"),
    Var("WORKER_INTERVAL_S", _seconds(0.1), "2", "seconds between runs of the worker's chain and delivery jobs"),
    Var("LOW_FUNDS_ALERT_INTERVAL_S", _integer(60), "3600", "seconds between alerts about a hot wallet short of funds",
        live=True),
    Var("DB_CONNECT_TIMEOUT_S", _integer(1, 60), "3", "seconds to wait for a PostgreSQL connection to open"),
    Var("DB_POOL_MIN_SIZE", _integer(0, 100), "1", "connections the pool keeps open"),
    Var("DB_POOL_MAX_SIZE", _integer(1, 200), "10", "most connections the pool opens"),
    Var("DB_POOL_TIMEOUT_S", _seconds(0.1), "5", "seconds a caller waits for a free pooled connection"),
    Var("DB_QUERY_TIMEOUT_S", _seconds(0.5), "10",
        "seconds a pooled transaction may take before its connection is cut (a frozen server)"),
    Var("DB_RECONNECT_TIMEOUT_S", _seconds(1.0), "10",
        "seconds the pool keeps retrying a lost connection (backoff 1, 2, 4 s...) before the next caller retries"),
)
_BY_NAME = {var.name: var for var in VARIABLES}


class Settings:
    """Parsed, validated settings; attribute names are the variable names in lowercase."""

    def __init__(self, values: dict, source_file: Path):
        object.__setattr__(self, "_values", dict(values))
        object.__setattr__(self, "source_file", source_file)

    def __getattr__(self, name: str):
        try:
            return self._values[name.upper()]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        raise AttributeError("Settings are read-only")

    def __repr__(self) -> str:
        shown = ", ".join(f"{key}={value!r}" for key, value in self._values.items())
        return f"Settings({shown})"

    def require(self, *names: str) -> None:
        """Raise one ConfigError naming every one of `names` that has no value."""
        missing = [name for name in names if self._values.get(name) is None]
        if missing:
            raise ConfigError("; ".join(f"{name}: required but not set ({_BY_NAME[name].doc})" for name in missing))

    @property
    def deposit_address(self) -> str | None:
        if self._values["DEPOSIT_ADDRESS"]:
            return self._values["DEPOSIT_ADDRESS"]
        return self.hot_wallet_address

    @property
    def hot_wallet_address(self) -> str | None:
        key = self._values["HOT_WALLET_PRIVATE_KEY"]
        return Account.from_key(key.reveal()).address if key else None

    def secret_values(self) -> list[str]:
        """Every secret string in these settings, for log redaction."""
        found = []
        for var in VARIABLES:
            value = self._values.get(var.name)
            if isinstance(value, SecretUrl):
                found.append(value.password() or "")
                if isinstance(value, SecretEndpoint):
                    found.append(value.path_secret() or "")
            elif isinstance(value, Secret):
                found.append(value.reveal())
        return [secret for secret in found if len(secret) >= 4]


def env_file_path(environ=None) -> Path:
    environ = os.environ if environ is None else environ
    return Path(environ.get("ENV_FILE") or ENV_FILE_DEFAULT)


def load(environ=None) -> Settings:
    """Read the .env file and the environment (which wins); raise ConfigError on a bad value."""
    environ = os.environ if environ is None else environ
    path = env_file_path(environ)
    raw = {}
    if path.is_file():
        raw.update({k: v for k, v in dotenv_values(path).items() if v is not None})
    raw.update({k: v for k, v in environ.items() if k in _BY_NAME})
    values = {}
    for var in VARIABLES:
        text = raw.get(var.name, "").strip()
        if text == "":
            text = var.default
        values[var.name] = None if text is None else _parse_one(var, text)
    _check_consistency(values)
    return Settings(values, path)


def _parse_one(var: Var, text: str):
    try:
        return var.parse(text)
    except ValueError as exc:  # parsers of secret variables never echo the value
        raise ConfigError(f"{var.name}: {exc}") from None


def _check_consistency(values: dict) -> None:
    if values["DB_POOL_MIN_SIZE"] > values["DB_POOL_MAX_SIZE"]:
        raise ConfigError("DB_POOL_MIN_SIZE: must not exceed DB_POOL_MAX_SIZE")


def load_or_exit(environ=None) -> Settings:
    """load(), but a bad setting prints one line naming the variable and exits with code 2."""
    try:
        return load(environ)
    except ConfigError as exc:
        exit_with_config_error(exc)


def exit_with_config_error(exc: ConfigError):
    print(f"configuration error: {exc}", file=sys.stderr)
    sys.exit(2)


class SettingsWatcher:
    """Hands out the current settings, re-reading .env when its mtime changes.

    A running process calls current() whenever it needs a value that operators may
    edit live (BLOCKCHAIN_MAINTENANCE_MODE); the file is stat()ed at most once per
    RELOAD_CHECK_INTERVAL_S. Only variables declared live change; an edit of any other
    (a deposit address, a key, the RPC) is logged as needing a restart and ignored until
    then, so the bot and the worker never disagree about which address is watched. A
    broken edit keeps the last good settings and is reported through on_error, so a typo
    never takes a running process down.
    """

    def __init__(self, settings: Settings, environ=None, on_error=None,
                 check_interval_s: float = RELOAD_CHECK_INTERVAL_S):
        self._environ = environ
        self._settings = settings
        self._on_error = on_error or (lambda exc: None)
        self._interval = check_interval_s
        self._lock = threading.Lock()
        self._mtime = self._stat()
        self._next_check = time.monotonic() + self._interval
        self._forced = False

    def current(self) -> Settings:
        now = time.monotonic()
        if now < self._next_check:
            return self._settings
        with self._lock:
            if now >= self._next_check:
                self._next_check = now + self._interval
                mtime = self._stat()
                if mtime != self._mtime or self._forced:
                    if self._forced:
                        log.info("re-reading %s: reload requested", env_file_path(self._environ))
                    self._mtime, self._forced = mtime, False
                    self._reload()
        return self._settings

    def reload_soon(self) -> None:
        """Re-read .env at the next current(), changed or not (SIGHUP, `systemctl reload`).

        Safe in a signal handler: it only sets two fields, never takes the lock."""
        self._forced, self._next_check = True, 0.0

    def _reload(self) -> None:
        try:
            edited = load(self._environ)
        except ConfigError as exc:
            self._on_error(exc)
            return
        started = self._settings._values
        needs_restart = [var.name for var in VARIABLES
                         if not var.live and edited._values.get(var.name) != started.get(var.name)]
        if needs_restart:
            log.warning("%s changed in %s: needs a restart; the running process keeps the old value",
                        ", ".join(needs_restart), edited.source_file)
        live = {var.name: edited._values.get(var.name) for var in VARIABLES if var.live}
        self._settings = Settings({**started, **live}, edited.source_file)

    def _stat(self):
        try:
            stat = env_file_path(self._environ).stat()
        except FileNotFoundError:
            return None
        return (stat.st_mtime_ns, stat.st_size, stat.st_ino)
