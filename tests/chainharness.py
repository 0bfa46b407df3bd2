"""Run worker.py as a real subprocess against anvil, PostgreSQL and the Bot API stand-in."""
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from devstack import chaintools, procs
from tests.botharness import ADMIN_ID, BOT_TOKEN, Db

ROOT = Path(__file__).resolve().parent.parent
HOT_WALLET_KEY = chaintools.DEV_PRIVATE_KEYS[1]
HOT_WALLET = chaintools.address_of(HOT_WALLET_KEY)
USER_KEYS = chaintools.DEV_PRIVATE_KEYS[2:]


class WorkerProcess:
    """python worker.py with its output in a log file."""

    def __init__(self, api, database_url: str, rpc_url: str, token_address: str, **env):
        self.env = {
            **os.environ, "ENV_FILE": "/nonexistent/.env", "BOT_TOKEN": BOT_TOKEN, "TELEGRAM_API_URL": api.url,
            "DATABASE_URL": database_url, "RPC_URL": rpc_url, "TOKEN_ADDRESS": token_address,
            "HOT_WALLET_PRIVATE_KEY": HOT_WALLET_KEY, "ADMIN_IDS": str(ADMIN_ID), "CONFIRMATIONS": "2",
            "WORKER_INTERVAL_S": "0.2", "RPC_TIMEOUT_S": "1", "BREAKER_RESET_S": "1", "BREAKER_FAILURES": "2",
            "DB_POOL_TIMEOUT_S": "2", "DB_CONNECT_TIMEOUT_S": "2", "DB_QUERY_TIMEOUT_S": "5",
            "STATE_DIR": tempfile.mkdtemp(prefix="worker-state-"),
            **{key: str(value) for key, value in env.items()},
        }
        self.log_path = Path(tempfile.mkstemp(prefix="worker-", suffix=".log")[1])
        self.process: subprocess.Popen | None = None

    def start(self) -> "WorkerProcess":
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, str(ROOT / "worker.py")], cwd=ROOT, env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT)
        procs.wait_until(lambda: "worker started" in self.log() or self.process.poll() is not None, 30,
                         "worker.py to start")
        if self.process.poll() is not None:
            raise AssertionError(f"worker.py exited with {self.process.returncode}:\n{self.log()}")
        return self

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

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def user_with_wallet(db: Db, user_id: int, wallet_key: str, balance: int = 0) -> str:
    """Register a user whose bound wallet is the address of `wallet_key`; return that address."""
    address = chaintools.address_of(wallet_key)
    db.rows("INSERT INTO users (id, username, language, wallet_address) VALUES (%s, %s, 'en', %s)",
            (user_id, f"u{user_id}", address.lower()))
    if balance:
        db.fund(user_id, balance, f"test:fund:{user_id}")
    return address
