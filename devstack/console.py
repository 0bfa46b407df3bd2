"""Talk to the real bot by hand: python -m devstack chat (or `make chat`).

Starts PostgreSQL, Redis, anvil with a freshly deployed token, the Bot API
stand-in, `python bot.py` and `python worker.py` on 127.0.0.1, then reads lines you
type as messages from a Telegram user and prints what the bot answers, buttons
included. Each console user has an anvil dev wallet holding tokens, so deposits
(`:send`) and withdrawals really move tokens on the local chain.
"""
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

from core.amounts import parse_amount
from core.settings import VARIABLES
from db import migrate
from devstack import chaintools, procs
from devstack.anvil import AnvilNode, ensure_node_modules
from devstack.postgres import PostgresServer
from devstack.redis import RedisServer
from devstack.telegram_api import BotApiStandIn

ROOT = Path(__file__).resolve().parent.parent
BOT_TOKEN = "123456:CONSOLE-token"
ADMIN_ID = 999
FIRST_USER_ID = 1001
HOT_WALLET_KEY = chaintools.DEV_PRIVATE_KEYS[1]
USER_KEYS = chaintools.DEV_PRIVATE_KEYS[2:]
DECIMALS = 6
CONFIRMATIONS = 2
QUIET_S = 1.5  # print replies until the bot has been quiet this long
HELP = """Type a message (e.g. /start) and press Enter. Console commands:
  :press <button label>   press a button on the bot's newest message that has it
  :as <user id> [ru|en]   talk as another user (admin is 999); each keeps its language
  :wallet                 the current user's anvil wallet (bind it with /wallet <address>, then :sign)
  :sign                   sign the wallet proof text with that wallet and send the signature
  :send <amount>          transfer tokens from that wallet to the deposit address (a deposit)
  :mine [blocks]          mine blocks (deposits and withdrawals need 2 confirmations)
  :help                   this text
  :quit                   stop everything"""


class Session:
    def __init__(self, api: BotApiStandIn, w3, token: str):
        self.api, self.w3, self.token = api, w3, token
        self.user_id = FIRST_USER_ID
        self.langs: dict[int, str] = {}  # each user keeps the language they were given
        self.seen: dict[int, dict[int, int]] = {}
        self._print_lock = threading.Lock()
        self._stop = threading.Event()

    @property
    def lang(self) -> str:
        return self.langs.get(self.user_id, "en")

    def run(self) -> None:
        print(HELP)
        threading.Thread(target=self._watch_others, daemon=True).start()
        try:
            while True:
                try:
                    line = input(f"[user {self.user_id} {self.lang}]> ").strip()
                except EOFError:
                    return
                if line == ":quit":
                    return
                if line:
                    self.handle(line)
        finally:
            self._stop.set()

    def handle(self, line: str) -> None:
        command, _, rest = line.partition(" ")
        if command == ":help":
            print(HELP)
        elif command == ":as":
            parts = rest.split()
            self.user_id = int(parts[0]) if parts and parts[0].isdigit() else self.user_id
            if len(parts) > 1 and parts[1] in ("ru", "en"):
                self.langs[self.user_id] = parts[1]
        elif command == ":press":
            try:
                self.api.press(self.user_id, rest.strip(), language_code=self.lang)
            except AssertionError:
                print(f"(no button {rest.strip()!r})")
                return
            self.show_replies()
        elif command == ":wallet":
            print(f"(user {self.user_id}'s wallet: {chaintools.address_of(self.key())}, "
                  f"{chaintools.balance_of(self.w3, self.token, chaintools.address_of(self.key())) / 10**DECIMALS} USDT)")
        elif command == ":sign":
            signature = chaintools.sign_wallet_proof(self.key(), self.user_id)
            print(f"(signed with {chaintools.address_of(self.key())}: {signature})")
            self.api.push_message(self.user_id, signature, language_code=self.lang, username=f"user{self.user_id}")
            self.show_replies()
        elif command == ":send":
            self.send(rest.strip())
        elif command == ":mine":
            chaintools.mine(self.w3, int(rest) if rest.strip().isdigit() else CONFIRMATIONS)
            print(f"(head is now block {self.w3.eth.block_number})")
            self.show_replies()
        else:
            self.api.push_message(self.user_id, line, language_code=self.lang, username=f"user{self.user_id}")
            self.show_replies()

    def show_replies(self) -> None:
        """Print new and edited bot messages until the bot stays quiet for QUIET_S."""
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < QUIET_S:
            if self.print_changes(self.user_id):
                quiet_since = time.monotonic()
            time.sleep(0.05)

    def _watch_others(self) -> None:
        """Messages to users other than the one being played, printed as they arrive."""
        while not self._stop.wait(0.5):
            for chat_id in self.api.chats():
                if chat_id != self.user_id:
                    self.print_changes(chat_id, heading=f"to user {chat_id}")

    def print_changes(self, chat_id: int, heading: str = "") -> bool:
        with self._print_lock:
            seen = self.seen.setdefault(chat_id, {})
            changed = False
            for message in self.api.messages(chat_id):
                version = message["edited"] + (100 if message["deleted"] else 0)
                if seen.get(message["message_id"]) == version:
                    continue
                seen[message["message_id"]] = version
                changed = True
                label = "edited" if message["edited"] else "bot"
                print(f"--- {label} #{message['message_id']}{' ' + heading if heading else ''}\n{message['text']}")
                for row in (message.get("reply_markup") or {}).get("inline_keyboard", []):
                    print("    " + "  ".join(f"[{button['text']}]" for button in row))
            return changed

    def key(self) -> str:
        return USER_KEYS[(self.user_id - FIRST_USER_ID) % len(USER_KEYS)]

    def send(self, amount: str) -> None:
        units = parse_amount(amount, DECIMALS)
        tx_hash = chaintools.transfer(self.w3, self.token, self.key(), chaintools.address_of(HOT_WALLET_KEY), units)
        chaintools.mine(self.w3, CONFIRMATIONS - 1)
        print(f"(sent {amount} USDT on chain, tx {tx_hash}; the worker credits it within seconds)")
        self.show_replies()


def prepare_database(pg: PostgresServer) -> str:
    pg.admin("CREATE DATABASE bot")
    url = pg.url("bot")
    with psycopg.connect(url, autocommit=True) as conn:
        migrate.migrate(conn, migrate.discover())
    return url


def prepare_chain(node: AnvilNode):
    """Deploy a 6-decimal USDT-like token; give every console wallet and the hot wallet some."""
    w3 = chaintools.connect(node.url)
    token = chaintools.deploy_token(w3, chaintools.DEPLOYER_KEY, "Tether USD", "USDT", DECIMALS)
    for key in [HOT_WALLET_KEY, *USER_KEYS]:
        chaintools.mint(w3, token, chaintools.DEPLOYER_KEY, chaintools.address_of(key), 10_000 * 10**DECIMALS)
    return w3, token


def start_program(script: str, env: dict, log_path: Path) -> subprocess.Popen:
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, str(ROOT / script)], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT)


def write_stack_env(directory: Path, settings: dict) -> Path:
    """The stack's own .env (never the operator's): bot.py, worker.py and dr.py all read this one, so
    `dr.py maintenance on` reaches the running processes."""
    path = directory / ".env"
    path.write_text("# written by `make chat` for its local stack; removed when it stops\n"
                    + "".join(f"{key}={value}\n" for key, value in settings.items()))
    return path


def program_environment(env_file: Path) -> dict:
    """This shell's environment without any of the project's settings (which would win over .env)."""
    ours = {var.name for var in VARIABLES}
    return {**{key: value for key, value in os.environ.items() if key not in ours}, "ENV_FILE": str(env_file)}


def start(service, started: list):
    """Start one service and remember it, so that it is stopped even if the next one fails (or Ctrl-C)."""
    started.append(service)
    return service.start()


def stop_programs(programs: list) -> None:
    for program in programs:
        if program.poll() is None:
            program.terminate()
    for program in programs:
        try:
            program.wait(10)
        except subprocess.TimeoutExpired:
            program.kill()
            program.wait()


def main() -> int:
    try:
        return run_console()
    except KeyboardInterrupt:
        return 130  # everything was stopped on the way out


def run_console() -> int:
    ensure_node_modules()
    workdir = Path(tempfile.mkdtemp(prefix="chat-stack-"))
    services, programs = [], []
    try:
        pg, cache, node, api = (start(service, services) for service in
                                (PostgresServer(), RedisServer(), AnvilNode(), BotApiStandIn(BOT_TOKEN)))
        database_url = prepare_database(pg)
        w3, token = prepare_chain(node)
        env_file = write_stack_env(workdir, {
            "BOT_TOKEN": BOT_TOKEN, "TELEGRAM_API_URL": api.url, "DATABASE_URL": database_url,
            "REDIS_URL": cache.url(), "RPC_URL": node.url, "TOKEN_ADDRESS": token,
            "HOT_WALLET_PRIVATE_KEY": HOT_WALLET_KEY, "ADMIN_IDS": ADMIN_ID, "CONFIRMATIONS": CONFIRMATIONS,
            "WORKER_INTERVAL_S": 0.5, "STATE_DIR": workdir / "state", "BLOCKCHAIN_MAINTENANCE_MODE": "false"})
        env = program_environment(env_file)
        for script in ("bot.py", "worker.py"):
            programs.append(start_program(script, env, workdir / f"{script}.log"))
        procs.wait_until(lambda: api.waiting_polls > 0 or any(p.poll() is not None for p in programs), 60,
                         "bot.py to start")
        if any(p.poll() is not None for p in programs):
            for script in ("bot.py", "worker.py"):
                print((workdir / f"{script}.log").read_text(), file=sys.stderr)
            return 1
        print(f"bot.py and worker.py are running (logs in {workdir}); token USDT at {token}")
        print(f"operator commands against this stack, from {ROOT}:\n"
              f"  ENV_FILE={env_file} {sys.executable} dr.py status|maintenance on|maintenance off|recover")
        Session(api, w3, token).run()
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave servers behind
        print("stopping...", flush=True)
        stop_programs(programs)
        for service in reversed(services):
            service.stop() if isinstance(service, BotApiStandIn) else service.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
