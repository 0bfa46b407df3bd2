"""The drill's stack on 127.0.0.1: PostgreSQL, Redis, anvil behind a cuttable RPC proxy, the Bot API
stand-in, a real .env of its own, and bot.py / worker.py as processes; and the way down again.

Everything lives in one temporary directory (the .env, STATE_DIR, the program logs); the
operator's .env is never read or written: the programs and dr.py get ENV_FILE pointing here,
and no setting is inherited from the caller's environment.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from core.settings import VARIABLES
from devstack import chaintools, procs
from devstack.anvil import AnvilNode, ensure_node_modules
from devstack.console import (ADMIN_ID, CONFIRMATIONS, HOT_WALLET_KEY, prepare_chain, prepare_database)
from devstack.rpctap import RpcTap
from devstack.postgres import PostgresServer
from devstack.redis import RedisServer
from devstack.telegram_api import BotApiStandIn

ROOT = Path(__file__).resolve().parent.parent
BOT_TOKEN = "123456:DRILL-token"
BLOCK_INTERVAL_S = 1.0  # the chain moves on by itself, one block a second, as a real one does
PROGRAM_START_S = 60.0
PROGRAM_STOP_S = 20.0
# Short but realistic: a dependency counts as down after 2 failed calls, is re-checked every second.
SETTINGS = {
    "CONFIRMATIONS": str(CONFIRMATIONS), "ADMIN_IDS": str(ADMIN_ID), "WITHDRAWAL_AUTO_APPROVE_MAX": "0",
    "BLOCKCHAIN_MAINTENANCE_MODE": "false", "WORKER_INTERVAL_S": "0.5", "BREAKER_FAILURES": "2",
    "BREAKER_RESET_S": "1", "REDIS_TIMEOUT_S": "0.5", "RPC_TIMEOUT_S": "1", "DB_CONNECT_TIMEOUT_S": "1",
    "DB_POOL_TIMEOUT_S": "2", "DB_QUERY_TIMEOUT_S": "3", "DB_RECONNECT_TIMEOUT_S": "2",
    "TELEGRAM_POLL_TIMEOUT_S": "10", "TELEGRAM_READ_TIMEOUT_S": "5", "TELEGRAM_MAX_MSG_PER_S": "25",
}


class Program:
    """bot.py or worker.py as a process of its own session (a Ctrl-C reaches only the drill)."""

    def __init__(self, script: str, env: dict, log_path: Path, ready):
        self.script, self.env, self.log_path, self._ready = script, env, log_path, ready
        self.process: subprocess.Popen | None = None
        self.offset = 0
        self.runs = 0

    def start(self) -> "Program":
        self.offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, str(ROOT / self.script)], cwd=ROOT, env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        self.runs += 1
        return self

    def wait_started(self) -> None:
        procs.wait_until(lambda: self._ready(self) or not self.alive(), PROGRAM_START_S, f"{self.script} to start")
        if not self.alive():
            raise RuntimeError(f"{self.script} exited with {self.process.returncode}:\n{self.log()[-3000:]}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """kill -9: no chance to finish anything."""
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(PROGRAM_STOP_S)

    def stop(self) -> None:
        """SIGTERM, as systemd stops it; kill -9 if it does not go."""
        if not self.alive():
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(PROGRAM_STOP_S)
        except subprocess.TimeoutExpired:
            self.kill()

    def log(self, since_start: bool = False) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        return (data[self.offset:] if since_start else data).decode(errors="replace")


class Ticker(threading.Thread):
    """Mine a block every BLOCK_INTERVAL_S, straight on anvil (not through the proxy the programs use)."""

    def __init__(self, url: str):
        super().__init__(name="block-ticker", daemon=True)
        self.w3 = chaintools.connect(url)
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(BLOCK_INTERVAL_S):
            try:
                chaintools.mine(self.w3, 1)
            except Exception:  # the node is being torn down; the drill notices anything else itself
                pass


class Stack:
    """The whole local stack of one drill run."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="drill-", dir="/tmp"))
        self.dir.chmod(0o755)
        self.env_file = self.dir / ".env"
        self.state_dir = self.dir / "state"
        self.pg = self.redis = self.anvil = self.api = self.proxy = self.ticker = None
        self.bot = self.worker = None
        self.w3 = self.token = self.db_url = None
        self.settings: dict[str, str] = {}

    # -- bringing it up

    def start_services(self) -> None:
        ensure_node_modules()
        self.pg = PostgresServer()
        self.pg.start()
        self.redis = RedisServer()
        self.redis.start()
        self.anvil = AnvilNode()
        self.anvil.start()
        self.api = BotApiStandIn(BOT_TOKEN).start()
        self.proxy = RpcTap(target_port=self.anvil.port).start()

    def prepare(self) -> None:
        """Migrate a fresh database, deploy the token, fund the wallets, write the .env."""
        self.db_url = prepare_database(self.pg)
        self.w3, self.token = prepare_chain(self.anvil)
        self.settings = {
            "BOT_TOKEN": BOT_TOKEN, "TELEGRAM_API_URL": self.api.url, "DATABASE_URL": self.db_url,
            "REDIS_URL": self.redis.url(), "RPC_URL": self.proxy.url, "CHAIN_ID": "31337",
            "TOKEN_ADDRESS": self.token, "HOT_WALLET_PRIVATE_KEY": HOT_WALLET_KEY,
            "STATE_DIR": str(self.state_dir), **SETTINGS}
        self.env_file.write_text("# written by the drill (devstack/drill.py) for its own stack; not the operator's\n"
                                 + "".join(f"{key}={value}\n" for key, value in self.settings.items()))

    def program_env(self) -> dict:
        """The caller's environment without any of the product's settings, plus ENV_FILE: only our .env counts."""
        names = {var.name for var in VARIABLES} | {"ENV_FILE"}
        return {**{k: v for k, v in os.environ.items() if k not in names}, "ENV_FILE": str(self.env_file),
                "PYTHONUNBUFFERED": "1"}

    def start_programs(self) -> None:
        env = self.program_env()
        self.bot = Program("bot.py", env, self.dir / "bot.log", lambda p: self.api.waiting_polls > 0)
        self.worker = Program("worker.py", env, self.dir / "worker.log",
                              lambda p: "worker started" in p.log(since_start=True))
        self.bot.start()
        self.worker.start()  # both import the product side by side
        self.bot.wait_started()
        self.worker.wait_started()

    def start_ticker(self) -> None:
        self.ticker = Ticker(self.anvil.url)
        self.ticker.start()

    # -- looking at it

    def rows(self, sql: str, params=None) -> list[dict]:
        with psycopg.connect(self.db_url, autocommit=True, row_factory=dict_row, connect_timeout=5) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def value(self, sql: str, params=None):
        rows = self.rows(sql, params)
        return next(iter(rows[0].values())) if rows else None

    def status_file(self, process: str) -> dict | None:
        try:
            return json.loads((self.state_dir / f"{process}.json").read_text())
        except (OSError, ValueError):
            return None

    def breaker(self, process: str, name: str) -> str | None:
        """A process's breaker state from its status file, if the file is fresh (written in the last 6 s)."""
        report = self.status_file(process)
        if not report or time.time() - report.get("heartbeat", 0) > 6:
            return None
        return report["breakers"].get(name, {}).get("state")

    def dr(self, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
        """python dr.py ... against this stack (ENV_FILE = our .env)."""
        return subprocess.run([sys.executable, "dr.py", *args], cwd=ROOT, env=self.program_env(),
                              capture_output=True, text=True, timeout=timeout_s)

    def dr_command(self, *args: str) -> str:
        """The command line an operator types to run dr.py against this stack."""
        python = os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(str(ROOT)) else sys.executable
        return f"cd {ROOT} && ENV_FILE={self.env_file} {python} dr.py {' '.join(args)}"

    # -- the way down

    def down(self) -> None:
        """Stop everything this stack started, whatever state it is in; remove the temporary files."""
        steps = [lambda: self.ticker and self.ticker.halt.set()]
        steps += [lambda p=p: p and p.stop() for p in (self.bot, self.worker)]
        steps += [lambda: self.proxy and self.proxy.stop(), lambda: self.api and self.api.stop()]
        steps += [lambda s=s: s and s.close() for s in (self.anvil, self.redis, self.pg)]
        for step in steps:
            try:
                step()
            except Exception as exc:  # keep going: everything else must still stop
                print(f"  (teardown: {type(exc).__name__}: {exc})", file=sys.stderr)

    def remove_files(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
