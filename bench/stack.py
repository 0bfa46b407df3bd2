"""Shared set-up: the real services on 127.0.0.1, a migrated database, a token, bot.py/worker.py as subprocesses.

Everything a Stack starts is stopped when its with-block ends, however it ends (Ctrl-C included).
"""
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg

from core.settings import load
from db import migrate
from devstack import chaintools, procs
from devstack.anvil import AnvilNode, ensure_node_modules
from devstack.postgres import PostgresServer
from devstack.redis import RedisServer
from devstack.telegram_api import BotApiStandIn

ROOT = Path(__file__).resolve().parent.parent
BOT_TOKEN = "123456:BENCH-token"
HOT_WALLET_KEY = chaintools.DEV_PRIVATE_KEYS[1]
DECIMALS = 6
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30


def settings_of(**values):
    """Product settings from these values alone (no .env file)."""
    return load({"ENV_FILE": "/nonexistent/.env", **{key: str(value) for key, value in values.items()}})


class LongChainAnvil(AnvilNode):
    """anvil that mines 10,000s of blocks at a constant pace: no historical states (the devstack's node already
    runs Cancun rules, without Prague's block-hash history contract), the costs that make each block slower."""

    def command(self) -> list[str]:
        return super().command() + ["--prune-history"]


class Program:
    """bot.py or worker.py as a subprocess, its output in a log file."""

    def __init__(self, script: str, env: dict, log_dir: Path):
        self.script, self.env = script, env
        self.log_path = log_dir / f"{Path(script).stem}.log"
        self.process: subprocess.Popen | None = None

    def start(self, ready) -> "Program":
        """Start it and wait until ready(self) (or until it exits, which is an error)."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, str(ROOT / self.script)], cwd=ROOT, env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        procs.wait_until(lambda: self.process.poll() is not None or ready(self), START_TIMEOUT_S,
                         f"{self.script} to start")
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.script} exited with {self.process.returncode}:\n{self.log()[-2000:]}")
        return self

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not finish in time."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        """Everything it printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Stack:
    """The services and programs of one benchmark; closing it stops them all, newest first."""

    def __init__(self):
        self._exit = contextlib.ExitStack()
        self.dir = Path(tempfile.mkdtemp(prefix="bench-"))
        self._exit.callback(shutil.rmtree, self.dir, ignore_errors=True)

    def __enter__(self) -> "Stack":
        return self

    def __exit__(self, *exc_info) -> None:
        self._exit.close()

    def _service(self, service):
        """Start a devstack service; it is closed (data removed) with the stack."""
        self._exit.callback(service.close)  # registered first: a failed start is cleaned up too
        return service.start()

    def postgres(self) -> PostgresServer:
        """A PostgreSQL cluster of its own."""
        return self._service(PostgresServer())

    def redis(self) -> RedisServer:
        """A Redis server of its own."""
        return self._service(RedisServer())

    def anvil(self, long_chain: bool = False) -> AnvilNode:
        """An anvil node (long_chain: one that stays fast over 10,000s of blocks)."""
        ensure_node_modules()
        return self._service(LongChainAnvil() if long_chain else AnvilNode())

    def standin(self) -> BotApiStandIn:
        """The Bot API stand-in for BOT_TOKEN."""
        api = BotApiStandIn(BOT_TOKEN)
        self._exit.callback(api.stop)
        return api.start()

    def program(self, script: str, env: dict, ready) -> Program:
        """bot.py or worker.py, started and waited for; stopped with the stack."""
        program = Program(script, env, self.dir)
        self._exit.callback(program.stop)
        return program.start(ready)


def database(pg: PostgresServer, name: str = "bot") -> str:
    """A fresh database with every migration applied; its URL."""
    pg.admin(f"CREATE DATABASE {name}")
    url = pg.url(name)
    with psycopg.connect(url, autocommit=True) as conn:
        migrate.migrate(conn, migrate.discover())
    return url


def sql(url: str, statement: str, params=None) -> list:
    """Run one statement in its own committed transaction; its rows, if any."""
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def add_users(url: str, first_id: int, count: int) -> list[int]:
    """Register `count` users with consecutive ids (one statement); their ids."""
    sql(url, """INSERT INTO users (id, username, language)
                SELECT g, 'bench' || g, 'en' FROM generate_series(%s::bigint, %s::bigint) AS g""",
        (first_id, first_id + count - 1))
    return list(range(first_id, first_id + count))


def deploy_token(node: AnvilNode):
    """A 6-decimal USDT-like token on the node; (web3 client, token address)."""
    w3 = chaintools.connect(node.url)
    return w3, chaintools.deploy_token(w3, chaintools.DEPLOYER_KEY, "Tether USD", "USDT", DECIMALS)


def program_env(api: BotApiStandIn, database_url: str, redis_url: str, rpc_url: str, token: str,
                state_dir: Path, **overrides) -> dict:
    """The environment bot.py and worker.py need, with `overrides` on top."""
    return {**os.environ, "ENV_FILE": "/nonexistent/.env", "BOT_TOKEN": BOT_TOKEN, "TELEGRAM_API_URL": api.url,
            "DATABASE_URL": database_url, "REDIS_URL": redis_url, "RPC_URL": rpc_url, "TOKEN_ADDRESS": token,
            "HOT_WALLET_PRIVATE_KEY": HOT_WALLET_KEY, "STATE_DIR": str(state_dir),
            **{key: str(value) for key, value in overrides.items()}}
