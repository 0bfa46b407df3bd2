"""Configuration: parsing, every rejection, secrets never shown, live reload of .env."""
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import logs
from core import settings as config
from core.settings import Secret, SecretUrl, load
from core.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
KEY = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
KEY_ADDRESS = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"
TOKEN = "123456:ABC-secret-token-value"
DB_PASSWORD = "s3cretpw"


def env(**values) -> dict:
    return {"ENV_FILE": "/nonexistent/.env", **values}


def test_defaults():
    settings = load(env())
    assert settings.telegram_api_url == "https://api.telegram.org"
    assert settings.default_language == "en"
    assert settings.admin_ids == frozenset()
    assert settings.blockchain_maintenance_mode is False
    assert settings.withdrawal_auto_approve_max == "0"
    assert settings.confirmations == 12
    assert settings.bot_token is None and settings.database_url is None


def test_values_are_parsed():
    settings = load(env(
        BOT_TOKEN=TOKEN, TELEGRAM_API_URL="http://127.0.0.1:8081/", DATABASE_URL="postgresql://u@h/db",
        CHAIN_ID="1", ADMIN_IDS=" 5, 7 ,9", DEFAULT_LANGUAGE="ru", BLOCKCHAIN_MAINTENANCE_MODE="TRUE",
        HOT_WALLET_PRIVATE_KEY="0x" + KEY, TOKEN_ADDRESS=KEY_ADDRESS.lower(), CONFIRMATIONS="3",
        WITHDRAWAL_AUTO_APPROVE_MAX="100.5", STATE_DIR="/tmp/x"))
    assert settings.bot_token.reveal() == TOKEN
    assert settings.telegram_api_url == "http://127.0.0.1:8081"
    assert settings.admin_ids == frozenset({5, 7, 9})
    assert settings.default_language == "ru"
    assert settings.blockchain_maintenance_mode is True
    assert settings.hot_wallet_private_key.reveal() == KEY
    assert settings.hot_wallet_address == KEY_ADDRESS
    assert settings.deposit_address == KEY_ADDRESS      # defaults to the hot wallet
    assert settings.token_address == KEY_ADDRESS        # lowercase accepted, checksummed out
    assert settings.withdrawal_auto_approve_max == "100.5"
    assert settings.state_dir == Path("/tmp/x")


def test_key_without_prefix_and_explicit_deposit_address():
    other = "0x" + "ab" * 20
    settings = load(env(HOT_WALLET_PRIVATE_KEY=KEY.upper(), DEPOSIT_ADDRESS=other))
    assert settings.hot_wallet_private_key.reveal() == KEY
    assert settings.deposit_address.lower() == other


@pytest.mark.parametrize("name, value, reason", [
    ("TELEGRAM_API_URL", "api.telegram.org", "malformed URL"),
    ("TELEGRAM_API_URL", "ftp://x", "malformed URL"),
    ("TELEGRAM_API_URL", "http://", "malformed URL"),
    ("TELEGRAM_API_URL", "http://h:99999", "malformed URL"),
    ("DATABASE_URL", "mysql://u@h/db", "malformed URL"),
    ("DATABASE_URL", "postgresql://", "malformed URL"),
    ("REDIS_URL", "http://h", "malformed URL"),
    ("RPC_URL", "localhost:8545", "malformed URL"),
    ("CHAIN_ID", "abc", "not an integer"),
    ("CHAIN_ID", "0", "must be >= 1"),
    ("CONFIRMATIONS", "1.5", "not an integer"),
    ("ADMIN_IDS", "abc", "not a positive integer"),
    ("ADMIN_IDS", "1,2,x", "not a positive integer"),
    ("ADMIN_IDS", "-5", "not a positive integer"),
    ("TOKEN_ADDRESS", "0x1234", "not an EVM address"),
    ("TOKEN_ADDRESS", "0x" + "g" * 40, "not an EVM address"),
    ("TOKEN_ADDRESS", "0x52908400098527886e0F7030069857D2E4169EE7", "checksum"),
    ("DEPOSIT_ADDRESS", "52908400098527886E0F7030069857D2E4169EE7", "not an EVM address"),
    ("DEPOSIT_ADDRESS", "0x" + "0" * 40, "zero address"),
    ("HOT_WALLET_PRIVATE_KEY", "abc", "64 hex digits"),
    ("HOT_WALLET_PRIVATE_KEY", KEY[:-2], "64 hex digits"),
    ("HOT_WALLET_PRIVATE_KEY", KEY + "00", "64 hex digits"),
    ("HOT_WALLET_PRIVATE_KEY", "zz" + KEY[2:], "64 hex digits"),
    ("DEFAULT_LANGUAGE", "de", "unknown language"),
    ("BLOCKCHAIN_MAINTENANCE_MODE", "maybe", "not a boolean"),
    ("WITHDRAWAL_AUTO_APPROVE_MAX", "-1", "plain decimal"),
    ("WITHDRAWAL_AUTO_APPROVE_MAX", "1e3", "plain decimal"),
    ("DB_POOL_TIMEOUT_S", "fast", "not a number of seconds"),
    ("BOT_TOKEN", "has space", "malformed"),
    ("BOT_TOKEN", "abc:def", "malformed"),
])
def test_bad_value_names_the_variable(name, value, reason):
    with pytest.raises(ConfigError) as caught:
        load(env(**{name: value}))
    message = str(caught.value)
    assert message.startswith(f"{name}: ")
    assert reason in message


def test_pool_sizes_must_be_consistent():
    with pytest.raises(ConfigError, match="DB_POOL_MIN_SIZE"):
        load(env(DB_POOL_MIN_SIZE="5", DB_POOL_MAX_SIZE="2"))


def test_env_file_and_state_dir_defaults_are_the_project_directorys_wherever_a_program_starts(tmp_path):
    assert config.env_file_path({}) == ROOT / ".env" and load(env()).state_dir == ROOT / "state"
    assert load(env(STATE_DIR="run/state")).state_dir == ROOT / "run" / "state"
    script = "from core import settings as s; print(s.env_file_path({}), s.load({'ENV_FILE': '/none'}).state_dir)"
    shown = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert shown.stdout.split() == [str(ROOT / ".env"), str(ROOT / "state")], shown.stderr


def test_require_names_the_missing_variable():
    with pytest.raises(ConfigError, match="^BOT_TOKEN: required"):
        load(env()).require("TELEGRAM_API_URL", "BOT_TOKEN")


def test_require_names_every_missing_variable_in_one_message():
    with pytest.raises(ConfigError) as caught:
        load(env()).require("BOT_TOKEN", "TELEGRAM_API_URL", "TOKEN_ADDRESS", "HOT_WALLET_PRIVATE_KEY")
    message = str(caught.value)
    assert "\n" not in message and "TELEGRAM_API_URL" not in message
    assert [name for name in ("BOT_TOKEN", "TOKEN_ADDRESS", "HOT_WALLET_PRIVATE_KEY") if name in message] == \
        ["BOT_TOKEN", "TOKEN_ADDRESS", "HOT_WALLET_PRIVATE_KEY"]


def test_a_database_url_may_name_a_primary_and_its_standbys():
    url = f"postgresql://bot:{DB_PASSWORD}@10.0.0.1:5432,10.0.0.2:5433/bot?target_session_attrs=read-write"
    settings = load(env(DATABASE_URL=url))
    assert settings.database_url.reveal() == url
    assert DB_PASSWORD not in repr(settings) and "10.0.0.1:5432,10.0.0.2:5433/bot" in str(settings.database_url)
    with pytest.raises(ConfigError, match="bad host '10.0.0.2:port'"):
        load(env(DATABASE_URL="postgresql://bot@10.0.0.1:5432,10.0.0.2:port/bot"))


def test_redis_sentinels_are_host_port_pairs():
    settings = load(env(REDIS_SENTINELS="10.0.0.1:26379, 10.0.0.2:26380", REDIS_SENTINEL_SERVICE="bot-redis"))
    assert settings.redis_sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26380))
    assert settings.redis_sentinel_service == "bot-redis" and load(env()).redis_sentinels == ()
    with pytest.raises(ConfigError, match="REDIS_SENTINELS: '10.0.0.1' is not host:port"):
        load(env(REDIS_SENTINELS="10.0.0.1"))


def test_secrets_never_in_repr_str_or_errors():
    settings = load(env(BOT_TOKEN=TOKEN, HOT_WALLET_PRIVATE_KEY=KEY,
                        DATABASE_URL=f"postgresql://bot:{DB_PASSWORD}@127.0.0.1:5432/bot",
                        REDIS_URL=f"redis://:{DB_PASSWORD}x@127.0.0.1:6379/0",
                        RPC_URL="https://rpc.example/v1/apikey123456"))
    shown = repr(settings) + str(settings.database_url) + str(settings.bot_token) + repr(settings.redis_url)
    for secret in (TOKEN, KEY, DB_PASSWORD, "apikey123456"):
        assert secret not in shown
    assert "postgresql://bot:***@127.0.0.1:5432/bot" in shown
    for name, value in (("HOT_WALLET_PRIVATE_KEY", KEY[:-1] + "x"), ("BOT_TOKEN", TOKEN + " x"),
                        ("DATABASE_URL", f"mysql://bot:{DB_PASSWORD}@h/db")):
        with pytest.raises(ConfigError) as caught:
            load(env(**{name: value}))
        assert KEY[:20] not in str(caught.value) and DB_PASSWORD not in str(caught.value)
        assert "secret-token" not in str(caught.value)


def test_secret_equality_and_url_redaction():
    assert Secret("a") == Secret("a") and Secret("a") != Secret("b")
    assert config.redact_url("redis://:pw@h:1/0") == "redis://:***@h:1/0"
    assert config.redact_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert SecretUrl("postgresql://u:pw@h/db").password() == "pw"


def test_log_records_are_redacted(capsys):
    settings = load(env(BOT_TOKEN=TOKEN, HOT_WALLET_PRIVATE_KEY=KEY,
                        DATABASE_URL=f"postgresql://bot:{DB_PASSWORD}@127.0.0.1/bot"))
    logs.configure(settings)
    log = logging.getLogger("test.redaction")
    log.error("calling https://api.telegram.org/bot%s/getMe with key %s", TOKEN, KEY)
    try:
        raise RuntimeError(f"connect failed for postgresql://bot:{DB_PASSWORD}@h/bot")
    except RuntimeError:
        log.exception("database trouble")
    err = capsys.readouterr().err
    assert "bot***/getMe" in err and "database trouble" in err
    for secret in (TOKEN, KEY, DB_PASSWORD):
        assert secret not in err
    logging.getLogger().handlers[:] = []


def test_env_file_is_read_and_environment_wins(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("DEFAULT_LANGUAGE=ru\nCHAIN_ID=5\n# comment\nADMIN_IDS=1,2\n")
    settings = load({"ENV_FILE": str(env_file), "CHAIN_ID": "7"})
    assert settings.default_language == "ru"
    assert settings.chain_id == 7
    assert settings.admin_ids == frozenset({1, 2})


def test_watcher_picks_up_edits_and_survives_a_broken_edit(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("BLOCKCHAIN_MAINTENANCE_MODE=false\n")
    environ = {"ENV_FILE": str(env_file)}
    errors = []
    watcher = config.SettingsWatcher(load(environ), environ, on_error=errors.append, check_interval_s=0.05)
    assert watcher.current().blockchain_maintenance_mode is False

    env_file.write_text("BLOCKCHAIN_MAINTENANCE_MODE=true\n")
    _poll(lambda: watcher.current().blockchain_maintenance_mode is True, 5.0)

    env_file.write_text("BLOCKCHAIN_MAINTENANCE_MODE=perhaps\n")
    _poll(lambda: watcher.current() and errors, 5.0)
    assert "BLOCKCHAIN_MAINTENANCE_MODE" in str(errors[0])
    assert watcher.current().blockchain_maintenance_mode is True  # last good settings kept

    env_file.write_text("BLOCKCHAIN_MAINTENANCE_MODE=off\n")
    _poll(lambda: watcher.current().blockchain_maintenance_mode is False, 5.0)


def test_a_reload_request_re_reads_an_edit_the_file_times_do_not_show(tmp_path):
    """SIGHUP after an edit that kept size, inode and mtime (a restored backup, a coarse clock)."""
    env_file = tmp_path / ".env"
    env_file.write_text("BLOCKCHAIN_MAINTENANCE_MODE=0\n")
    environ = {"ENV_FILE": str(env_file)}
    watcher = config.SettingsWatcher(load(environ), environ, check_interval_s=0.05)
    before = env_file.stat()
    env_file.write_text("BLOCKCHAIN_MAINTENANCE_MODE=1\n")
    os.utime(env_file, ns=(before.st_atime_ns, before.st_mtime_ns))
    time.sleep(0.2)
    assert watcher.current().blockchain_maintenance_mode is False  # polling cannot see it
    watcher.reload_soon()
    assert watcher.current().blockchain_maintenance_mode is True


def test_only_live_settings_change_in_a_running_process(tmp_path, caplog):
    """A new deposit address in .env must not reach the bot while the worker scans the old one."""
    env_file = tmp_path / ".env"
    old_address, new_address = "0x" + "11" * 20, "0x" + "22" * 20
    env_file.write_text(f"DEPOSIT_ADDRESS={old_address}\nRATE_LIMIT_UPDATES=20\n")
    environ = {"ENV_FILE": str(env_file)}
    watcher = config.SettingsWatcher(load(environ), environ, check_interval_s=0.05)
    env_file.write_text(f"DEPOSIT_ADDRESS={new_address}\nRATE_LIMIT_UPDATES=5\nCHAIN_ID=5\n")
    with caplog.at_level("WARNING"):
        _poll(lambda: watcher.current().rate_limit_updates == 5, 5.0)
    assert watcher.current().deposit_address.lower() == old_address and watcher.current().chain_id == 31337
    assert "CHAIN_ID, DEPOSIT_ADDRESS changed" in caplog.text and "needs a restart" in caplog.text
    live = {var.name for var in config.VARIABLES if var.live}
    assert live == {"BLOCKCHAIN_MAINTENANCE_MODE", "RATE_LIMIT_UPDATES", "RATE_LIMIT_WINDOW_S",
                    "LOW_FUNDS_ALERT_INTERVAL_S"}
    readme = (ROOT / "README.md").read_text()
    for var in config.VARIABLES:  # README's table says which are live, and only those
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{var.name}` |"))
        assert ("picked up live" in row) == var.live, var.name


def test_watcher_default_interval_meets_the_five_second_promise():
    assert config.RELOAD_CHECK_INTERVAL_S <= 2.0


def test_every_variable_is_documented_in_env_example_and_readme():
    example = (ROOT / ".env.example").read_text()
    readme = (ROOT / "README.md").read_text()
    for var in config.VARIABLES:
        assert re.search(rf"^#?\s*{var.name}=", example, re.M), f"{var.name} missing from .env.example"
        assert f"`{var.name}`" in readme, f"{var.name} missing from the README table"


@pytest.mark.parametrize("program, names", [("bot.py", ["BOT_TOKEN", "TOKEN_ADDRESS"]),
                                            ("worker.py", ["BOT_TOKEN", "TOKEN_ADDRESS", "HOT_WALLET_PRIVATE_KEY"])])
def test_a_copied_env_example_names_every_missing_setting_before_the_database(tmp_path, program, names):
    """cp .env.example .env; python bot.py: what is missing, all at once, not an unreachable database."""
    (tmp_path / ".env").write_text((ROOT / ".env.example").read_text())
    clean = {key: value for key, value in os.environ.items() if key not in {var.name for var in config.VARIABLES}}
    result = subprocess.run([sys.executable, str(ROOT / program)], capture_output=True, text=True, timeout=60,
                            cwd=ROOT, env={**clean, "ENV_FILE": str(tmp_path / ".env")})
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert all(name in lines[0] for name in names) and "database" not in lines[0].lower(), lines[0]


@pytest.mark.parametrize("name, value", [("ADMIN_IDS", "abc"), ("DEFAULT_LANGUAGE", "xx"),
                                         ("HOT_WALLET_PRIVATE_KEY", "12")])
@pytest.mark.parametrize("program", ["bot.py", "worker.py", "dr.py"])
def test_programs_exit_2_with_one_line(program, name, value):
    args = [sys.executable, str(ROOT / program)] + (["migrate"] if program == "dr.py" else [])
    result = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=ROOT,
                            env={**os.environ, "ENV_FILE": "/nonexistent/.env", name: value,
                                 "DATABASE_URL": "postgresql://u@127.0.0.1:1/db"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and name in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def _poll(predicate, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)
