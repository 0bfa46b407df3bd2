"""Talk to the real bot by hand: python -m devstack chat (or `make chat`).

Starts PostgreSQL, Redis, the Bot API stand-in and `python bot.py` on 127.0.0.1,
then reads lines you type as messages from a Telegram user and prints what the
bot answers, buttons included. Lines starting with ':' are console commands.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from db import migrate
from devstack import procs
from devstack.postgres import PostgresServer
from devstack.redis import RedisServer
from devstack.telegram_api import BotApiStandIn

ROOT = Path(__file__).resolve().parent.parent
BOT_TOKEN = "123456:CONSOLE-token"
ADMIN_ID = 999
FIRST_USER_ID = 1001
TOKEN_ADDRESS = "0x" + "7" * 40
DEPOSIT_ADDRESS = "0x" + "d" * 40
QUIET_S = 1.0  # print replies until the bot has been quiet this long
HELP = """Type a message (e.g. /start) and press Enter. Console commands:
  :press <button label>   press a button on the bot's newest message that has it
  :as <user id> [ru|en]   talk as another user (admin is 999)
  :fund <amount>          credit the current user (whole tokens), as a confirmed deposit would
  :help                   this text
  :quit                   stop everything"""


class Session:
    def __init__(self, api: BotApiStandIn, database_url: str):
        self.api, self.database_url = api, database_url
        self.user_id, self.lang = FIRST_USER_ID, "en"
        self.seen: dict[int, dict[int, int]] = {}

    def run(self) -> None:
        print(HELP)
        while True:
            try:
                line = input(f"[user {self.user_id} {self.lang}]> ").strip()
            except EOFError:
                return
            if line == ":quit":
                return
            if line:
                self.handle(line)

    def handle(self, line: str) -> None:
        command, _, rest = line.partition(" ")
        if command == ":help":
            print(HELP)
        elif command == ":as":
            parts = rest.split()
            self.user_id = int(parts[0]) if parts and parts[0].isdigit() else self.user_id
            self.lang = parts[1] if len(parts) > 1 else self.lang
        elif command == ":press":
            try:
                self.api.press(self.user_id, rest.strip(), language_code=self.lang)
            except AssertionError:
                print(f"(no button {rest.strip()!r})")
                return
            self.show_replies()
        elif command == ":fund":
            self.fund(rest.strip())
        else:
            self.api.push_message(self.user_id, line, language_code=self.lang, username=f"user{self.user_id}")
            self.show_replies()

    def show_replies(self) -> None:
        """Print new and edited bot messages until the bot stays quiet for QUIET_S."""
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < QUIET_S:
            if self.print_changes():
                quiet_since = time.monotonic()
            time.sleep(0.05)

    def print_changes(self) -> bool:
        seen = self.seen.setdefault(self.user_id, {})
        changed = False
        for message in self.api.messages(self.user_id):
            version = message["edited"] + (100 if message["deleted"] else 0)
            if seen.get(message["message_id"]) == version:
                continue
            seen[message["message_id"]] = version
            changed = True
            label = "edited" if message["edited"] else "bot"
            print(f"--- {label} #{message['message_id']}\n{message['text']}")
            for row in (message.get("reply_markup") or {}).get("inline_keyboard", []):
                print("    " + "  ".join(f"[{button['text']}]" for button in row))
        return changed

    def fund(self, amount: str) -> None:
        from money import parse_amount
        units = parse_amount(amount, 6)
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            conn.execute("""INSERT INTO ledger_entries (user_id, amount, kind, reference, idempotency_key, balance_after)
                            VALUES (%s, %s, 'adjustment', 'console', %s, 0)""",
                         (self.user_id, units, f"console:{self.user_id}:{time.time_ns()}"))
        print(f"(credited {amount} USDT to user {self.user_id}; /start first if they are new)")


def prepare_database(pg: PostgresServer) -> str:
    pg.admin("CREATE DATABASE bot")
    url = pg.url("bot")
    with psycopg.connect(url, autocommit=True) as conn:
        migrate.migrate(conn, migrate.discover())
        conn.execute("INSERT INTO system_settings (key, value) VALUES ('token_metadata', %s)",
                     (json.dumps({"address": TOKEN_ADDRESS, "symbol": "USDT", "decimals": 6}),))
    return url


def main() -> int:
    pg, cache, api, bot = PostgresServer().start(), RedisServer().start(), BotApiStandIn(BOT_TOKEN).start(), None
    try:
        database_url = prepare_database(pg)
        log_path = pg.base_dir / "bot.log"
        env = {**os.environ, "ENV_FILE": os.environ.get("ENV_FILE", "/nonexistent/.env"), "BOT_TOKEN": BOT_TOKEN,
               "TELEGRAM_API_URL": api.url, "DATABASE_URL": database_url, "REDIS_URL": cache.url(),
               "TOKEN_ADDRESS": TOKEN_ADDRESS, "DEPOSIT_ADDRESS": DEPOSIT_ADDRESS, "ADMIN_IDS": str(ADMIN_ID),
               "RPC_URL": f"http://127.0.0.1:{procs.free_port()}", "RPC_TIMEOUT_S": "1"}
        with open(log_path, "ab") as log:
            bot = subprocess.Popen([sys.executable, str(ROOT / "bot.py")], cwd=ROOT, env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
        procs.wait_until(lambda: api.waiting_polls > 0 or bot.poll() is not None, 30, "bot.py to start")
        if bot.poll() is not None:
            print(log_path.read_text(), file=sys.stderr)
            return 1
        print(f"bot.py is running against the stand-in at {api.url} (its log: {log_path})")
        Session(api, database_url).run()
        return 0
    finally:
        if bot and bot.poll() is None:
            bot.terminate()
            bot.wait(30)
        api.stop()
        cache.close()
        pg.close()


if __name__ == "__main__":
    sys.exit(main())
