"""Run bot.py as a real subprocess against the Bot API stand-in, PostgreSQL and Redis."""
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from devstack import procs

ROOT = Path(__file__).resolve().parent.parent
BOT_TOKEN = "123456:TEST-token_value"
ADMIN_ID = 999
TOKEN_ADDRESS = "0x" + "7" * 40
DEPOSIT_ADDRESS = "0x" + "d" * 40
SYMBOL = "USDT"
DECIMALS = 6


def seed_token_cache(database_url: str, symbol: str = SYMBOL, decimals: int = DECIMALS) -> None:
    """What bot.py caches after reading the contract; with the RPC down it starts from this."""
    value = json.dumps({"address": TOKEN_ADDRESS, "symbol": symbol, "decimals": decimals})
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("""INSERT INTO system_settings (key, value) VALUES ('token_metadata', %s)
                        ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value""", (value,))


class ProgramProcess:
    """One of our entry points as a subprocess, its output in a log file; subclasses say when it is up."""

    script = ""

    def __init__(self, env: dict):
        self.env = env
        self.log_path = Path(tempfile.mkstemp(prefix=f"{Path(self.script).stem}-", suffix=".log")[1])
        self.process: subprocess.Popen | None = None
        self.log_offset = 0

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self):
        self.log_offset = self.log_path.stat().st_size  # a restart looks for new lines only
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, str(ROOT / self.script)], cwd=ROOT, env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT)
        procs.wait_until(lambda: self.ready() or self.process.poll() is not None, 30, f"{self.script} to start")
        if self.process.poll() is not None:
            raise AssertionError(f"{self.script} exited with {self.process.returncode}:\n{self.log()}")
        return self

    def freeze_process(self) -> None:
        """SIGSTOP: the process keeps its connections and its beliefs, and does nothing."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGSTOP)

    def thaw_process(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """kill -9: no chance to finish anything."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> int:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode if self.process else 0

    def breaker(self, name: str) -> str | None:
        """A breaker's state from the process's status file (None before the first report)."""
        try:
            report = json.loads((Path(self.env["STATE_DIR"]) / f"{Path(self.script).stem}.json").read_text())
        except (OSError, ValueError):
            return None
        return report["breakers"][name]["state"]

    def log(self, since_start: bool = False) -> str:
        text = self.log_path.read_bytes()
        return (text[self.log_offset:] if since_start else text).decode(errors="replace")


class BotProcess(ProgramProcess):
    """python bot.py; started once it long-polls the stand-in."""

    script = "bot.py"

    def __init__(self, api, database_url: str, redis_url: str, **env):
        self.api = api
        super().__init__({
            **os.environ, "ENV_FILE": "/nonexistent/.env", "BOT_TOKEN": BOT_TOKEN, "TELEGRAM_API_URL": api.url,
            "DATABASE_URL": database_url, "REDIS_URL": redis_url, "TOKEN_ADDRESS": TOKEN_ADDRESS,
            "DEPOSIT_ADDRESS": DEPOSIT_ADDRESS, "ADMIN_IDS": str(ADMIN_ID),
            "RPC_URL": f"http://127.0.0.1:{procs.free_port()}", "RPC_TIMEOUT_S": "1",
            "TELEGRAM_POLL_TIMEOUT_S": "2", "RATE_LIMIT_UPDATES": "1000", "DB_POOL_TIMEOUT_S": "2",
            "DB_CONNECT_TIMEOUT_S": "2", "DB_RECONNECT_TIMEOUT_S": "2", "DB_QUERY_TIMEOUT_S": "3",
            "STATE_DIR": tempfile.mkdtemp(prefix="bot-state-"),
            **{key: str(value) for key, value in env.items()},
        })

    def ready(self) -> bool:
        return self.api.waiting_polls > 0


class Db:
    """Direct SQL on the bot's database, for arranging and checking state."""

    def __init__(self, url: str):
        self.url = url

    def rows(self, sql: str, params=None) -> list[dict]:
        with psycopg.connect(self.url, autocommit=True, row_factory=dict_row) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def value(self, sql: str, params=None):
        rows = self.rows(sql, params)
        return next(iter(rows[0].values())) if rows else None

    def fund(self, user_id: int, units: int, key: str) -> None:
        self.rows("""INSERT INTO ledger_entries (user_id, amount, kind, reference, idempotency_key, balance_after)
                     VALUES (%s, %s, 'adjustment', 'test', %s, 0)""", (user_id, units, key))

    def balance(self, user_id: int) -> int:
        return int(self.value("SELECT balance FROM users WHERE id = %s", (user_id,)))
