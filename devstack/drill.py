"""python -m devstack demo [--keep] (or `make demo`): a scripted disaster-recovery drill.

Brings up the local stack on 127.0.0.1 (PostgreSQL, Redis, anvil with the token behind a
cuttable RPC proxy, the Bot API stand-in), migrates, starts bot.py and worker.py as real
processes, and plays users and an admin through the stand-in while it breaks things:
Redis killed mid-dialog and mid-burst of notices, PostgreSQL stopped, the RPC cut while
deposits are made, maintenance switched with `dr.py maintenance on|off`, the worker killed
-9 as it sends a withdrawal. It prints a timeline and a table of invariants computed from
the stand-in's transcript, the chain and the database (never the product's own counters),
and exits 0 only when every invariant holds. Everything it started is torn down at the end,
also on Ctrl-C; with --keep the stack stays up behind a `make chat` console until :quit.
"""
import argparse
import collections
import logging
import re
import signal
import sys
import threading
import time

import redis as redis_lib

import dr
from botapi.delivery import render
from core.i18n import t
from core.settings import load as load_settings
from db import notifications
from db.pool import open_pool, transaction
from devstack import chaintools, procs
from devstack.console import ADMIN_ID, CONFIRMATIONS, DECIMALS, FIRST_USER_ID, HOT_WALLET_KEY, USER_KEYS, Session
from devstack.drill_invariants import (Notice, all_hold, balance_mismatches, invariant_rows, log_errors,
                                       render_rows, tally_deposits, tally_notices, tally_withdrawals)
from devstack.rpctap import DROP, RESPONSE
from devstack.drill_stack import Stack

UNIT = 10**DECIMALS
WALLET_USERS = (1001, 1002, 1003, 1004)
BYSTANDERS = tuple(range(2001, 2036))  # users who only /start: registered chats for the notice burst
BURST_NOTICES = 300
BURST_KILL_AT = 100  # Redis is killed once this many notices of the burst are queued
BURST_PACE_S = 0.01
REPLY_TIMEOUT_S = 15.0
SETTLE_TIMEOUT_S = 45.0
QUIET_TIMEOUT_S = 75.0  # a notice in flight at a kill -9 comes back after its 60 s lease
HOT_WALLET = chaintools.address_of(HOT_WALLET_KEY)
TECH_WORKS = t("en", "db_operational")
PAUSED = t("en", "withdraw_unavailable")
DEPOSIT_PAUSED = t("en", "deposit_maintenance")
DOWN = ("OPEN", "HALF_OPEN")  # a breaker that is not letting calls through
LONG_HEX = re.compile(r"\b(0x[0-9a-fA-F]{6})[0-9a-fA-F]{30,}([0-9a-fA-F]{4})\b")  # addresses, hashes
ALERT = re.compile(r"^(.+?) (is down|answers again) \(.*seen by the (bot|worker)\)")


class DrillFailed(Exception):
    """A step did not see what it expected in time."""


class Timeline:
    """Timestamped lines, and the recoveries measured on the way."""

    def __init__(self):
        self.started = time.monotonic()
        self.recoveries: list[tuple[str, str]] = []

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def say(self, text: str) -> None:
        minutes, seconds = divmod(self.elapsed(), 60)
        print(f"[{int(minutes):02d}:{seconds:04.1f}] {text}", flush=True)

    def step(self, title: str) -> None:
        print(f"\n== {title}", flush=True)

    def recovered(self, what: str, detail: str) -> None:
        self.recoveries.append((what, detail))


def first_line(message: dict, limit: int = 90) -> str:
    """The first line of a bot message, addresses and hashes shortened, quoted."""
    text = LONG_HEX.sub(r"\1...\2", message["text"].splitlines()[0])
    return f"'{text[:limit]}{'...' if len(text) > limit else ''}'"


def hash_id(text: str) -> int:
    return int(re.search(r"#(\d+)", text).group(1))


def key_of(user_id: int) -> str:
    """The user's anvil wallet: the same one the `make chat` console gives that user."""
    return USER_KEYS[(user_id - FIRST_USER_ID) % len(USER_KEYS)]


def wait(predicate, timeout_s: float, what: str, interval_s: float = 0.05) -> float:
    """Wait for `predicate`; return how long it took; DrillFailed naming `what` on timeout."""
    began = time.monotonic()
    try:
        procs.wait_until(predicate, timeout_s, what, interval_s)
    except TimeoutError as exc:
        raise DrillFailed(str(exc)) from None
    return time.monotonic() - began


class People:
    """Users and the admin typing into Telegram, as the stand-in delivers it to the bot."""

    def __init__(self, stack):
        self.stack = stack

    @property
    def api(self):
        return self.stack.api

    def push(self, user_id: int, text: str) -> tuple[int, float]:
        """Send a message without waiting; (index of the next reply, when it was sent)."""
        after = len(self.api.messages(user_id))
        self.api.push_message(user_id, text, language_code="en", username=f"user{user_id}")
        return after, time.monotonic()

    def reply(self, user_id: int, pushed: tuple[int, float], contains: str | None = None,
              timeout_s: float = REPLY_TIMEOUT_S) -> tuple[dict, float]:
        """The first reply after `pushed` (containing `contains`) and its latency."""
        after, began = pushed
        try:
            message = self.api.wait_for(user_id, contains=contains, after=after, timeout=timeout_s)
        except AssertionError as exc:
            raise DrillFailed(f"user {user_id}: {str(exc).splitlines()[0]}") from None
        return message, time.monotonic() - began

    def send(self, user_id: int, text: str, contains: str | None = None,
             timeout_s: float = REPLY_TIMEOUT_S) -> tuple[dict, float]:
        return self.reply(user_id, self.push(user_id, text), contains, timeout_s)

    def press(self, user_id: int, label: str, contains: str | None = None) -> tuple[dict, float]:
        """Press a button; the message it edited or the new one that answers it (containing `contains`)."""
        before = {m["message_id"]: m["edited"] for m in self.api.messages(user_id)}
        began = time.monotonic()
        try:
            self.api.press(user_id, label, language_code="en")
            message = self.api.wait_for(
                user_id, lambda m: m["message_id"] not in before or m["edited"] > before[m["message_id"]],
                contains=contains, timeout=REPLY_TIMEOUT_S)
        except AssertionError as exc:
            raise DrillFailed(f"user {user_id} pressing {label!r}: {str(exc).splitlines()[0]}") from None
        return message, time.monotonic() - began

    def until(self, user_id: int, text: str, wanted: str, other: str,
              timeout_s: float = 10.0) -> tuple[dict, float, int]:
        """Send `text` until the answer (containing `wanted` or `other`) contains `wanted`; (reply, time, tries)."""
        began, tries = time.monotonic(), 0
        answer = lambda m: wanted in m["text"] or other in m["text"]
        while True:
            tries += 1
            pushed = self.push(user_id, text)
            try:
                message = self.api.wait_for(user_id, answer, after=pushed[0], timeout=REPLY_TIMEOUT_S)
            except AssertionError as exc:
                raise DrillFailed(f"user {user_id}: {str(exc).splitlines()[0]}") from None
            if wanted in message["text"]:
                return message, time.monotonic() - began, tries
            if time.monotonic() - began > timeout_s:
                raise DrillFailed(f"user {user_id}: {text!r} still answered {first_line(message)} after "
                                  f"{timeout_s:.0f} s (wanted {wanted!r})")
            time.sleep(0.5)


class Burst(threading.Thread):
    """Operator notices queued through dr.NotificationService the way the bot queues its own: Redis Stream,
    else the PostgreSQL fallback, else memory; each with an idempotency key."""

    def __init__(self, stack: Stack, chats: list[int], count: int):
        super().__init__(name="notice-burst", daemon=True)
        settings = load_settings({"ENV_FILE": str(stack.env_file)})
        self.halt = threading.Event()
        self.pool = open_pool(settings, "drill-notices")
        breaker = dr.redis_breaker(settings, background_probe=True)
        client = dr.redis_client(settings)
        dr.start_probers(self.halt, (breaker, dr.redis_check(client)))
        self.service = dr.NotificationService(client, breaker, lambda: transaction(self.pool),
                                              settings.notify_buffer_max)
        self.chats, self.count = chats, count
        self.queued, self.where, self.longest_s = 0, collections.Counter(), 0.0
        self.done = threading.Event()

    @staticmethod
    def payload(n: int, count: int) -> dict:
        return notifications.payload_of("admin_dependency_back",
                                        {"name": f"Operator notice {n + 1}/{count}", "process": "operator drill"})

    def plan(self) -> list[tuple[int, dict, str]]:
        return [(self.chats[n % len(self.chats)], self.payload(n, self.count), f"drill:burst:{n}")
                for n in range(self.count)]

    def run(self) -> None:
        try:
            for chat_id, payload, key in self.plan():
                began = time.monotonic()
                self.where[self.service.notify(chat_id, payload["text"], payload["values"], key)] += 1
                self.longest_s = max(self.longest_s, time.monotonic() - began)
                self.queued += 1
                time.sleep(BURST_PACE_S)
        finally:
            self.done.set()

    def close(self) -> None:
        self.halt.set()
        self.pool.close()


class Drill:
    def __init__(self, stack: Stack, timeline: Timeline):
        self.stack, self.tl = stack, timeline
        self.people = People(stack)
        self.withdrawals: dict[int, int] = {}  # withdrawal id -> user id
        self.deposit_requests: dict[int, int] = {}
        self.burst: Burst | None = None
        self.kills: list[int] = []  # messages sent when the worker was killed -9
        self.first_block = 0

    # -- small views of the world

    def sent_messages(self) -> list[tuple[int, str]]:
        return [(int(p["chat_id"]), p["text"]) for m, p in self.stack.api.requests if m == "sendMessage"]

    def withdrawal_status(self, withdrawal_id: int) -> str | None:
        return self.stack.value("SELECT status FROM withdrawals WHERE id = %s", (withdrawal_id,))

    def deposit_status(self, deposit_id: int) -> str | None:
        return self.stack.value("SELECT status FROM deposits WHERE id = %s", (deposit_id,))

    def balance(self, user_id: int) -> int:
        return int(self.stack.value("SELECT balance FROM users WHERE id = %s", (user_id,)) or 0)

    def worker_report(self) -> dict:
        return self.stack.value("SELECT status FROM service_status WHERE name = 'rpc'") or {}

    def cursor(self) -> int | None:
        return self.stack.value("SELECT max(last_block) FROM chain_cursor")

    def amount(self, units: int) -> str:
        return f"{units / UNIT:g} USDT"

    def deposit_on_chain(self, user_id: int, units: int) -> dict:
        """A real token transfer from the user's anvil wallet to the deposit address."""
        tx_hash = chaintools.transfer(self.stack.w3, self.stack.token, key_of(user_id), HOT_WALLET, units)
        return {**self.stack.w3.eth.get_transaction_receipt(tx_hash), "hash": tx_hash}

    def wait_blocks(self, past: int, blocks: int) -> None:
        wait(lambda: self.stack.w3.eth.block_number >= past + blocks, 10 + 2 * blocks, f"{blocks} more blocks",
             interval_s=0.2)

    def wait_notice(self, user_id: int, contains: str, timeout_s: float = 30.0) -> dict:
        try:
            return self.stack.api.wait_for(user_id, contains=contains, timeout=timeout_s)
        except AssertionError:
            raise DrillFailed(f"user {user_id} never got a notice containing {contains!r} "
                              f"within {timeout_s:.0f} s") from None

    def request_withdrawal(self, user_id: int, units: int) -> int:
        """/withdraw <amount> and Confirm; the withdrawal's id."""
        self.people.send(user_id, f"/withdraw {units / UNIT:g}", contains="Confirm?")
        message, _ = self.people.press(user_id, "Confirm", contains="Withdrawal #")
        withdrawal_id = hash_id(message["text"])
        self.withdrawals[withdrawal_id] = user_id
        return withdrawal_id

    def request_deposit(self, user_id: int, units: int) -> tuple[int, dict, float]:
        message, latency = self.people.send(user_id, f"/deposit {units / UNIT:g}", contains="Deposit request #")
        deposit_id = hash_id(message["text"])
        self.deposit_requests[deposit_id] = user_id
        return deposit_id, message, latency

    # -- the stack

    def bring_up(self) -> None:
        stack, tl = self.stack, self.tl
        tl.step("Bringing up the local stack on 127.0.0.1")
        stack.start_services()
        tl.say(f"PostgreSQL :{stack.pg.port}, Redis :{stack.redis.port}, anvil :{stack.anvil.port} "
               f"(behind the RPC proxy :{stack.proxy.listen_port}), Bot API stand-in :{stack.api.port}")
        stack.prepare()
        self.first_block = stack.w3.eth.block_number + 1
        tl.say(f"database migrated; token USDT deployed at {stack.token}; wallets funded")
        tl.say(f"wrote {stack.env_file} (STATE_DIR and logs beside it): bot, worker and dr.py read only this "
               f"one (ENV_FILE)")
        stack.start_programs()
        stack.start_ticker()
        tl.say(f"bot.py (pid {stack.bot.process.pid}) and worker.py (pid {stack.worker.process.pid}) running; "
               f"the chain mines a block a second")

    # -- 1. the happy path

    def step_users(self) -> None:
        tl, people = self.tl, self.people
        tl.step("1. Users register, prove their wallets, deposit and withdraw")
        began = time.monotonic()
        everyone = (ADMIN_ID, *WALLET_USERS, *BYSTANDERS)
        pushed = {user: people.push(user, "/start") for user in everyone}
        for user in everyone:
            people.reply(user, pushed[user], contains="Welcome")
        tl.say(f"{len(everyone)} users sent /start (admin {ADMIN_ID}, wallet users "
               f"{', '.join(map(str, WALLET_USERS))}, {len(BYSTANDERS)} more): all welcomed within "
               f"{time.monotonic() - began:.1f} s")
        for user in WALLET_USERS:
            address = chaintools.address_of(key_of(user))
            signature = chaintools.sign_wallet_proof(key_of(user), user)
            message, latency = people.send(user, f"/wallet {address} {signature}", contains="Wallet bound")
        tl.say(f"each wallet user sent /wallet <address> <signature> (EIP-191, signed in their wallet): "
               f"{first_line(message)}")
        requests = {}
        for user in WALLET_USERS:
            deposit_id, message, _ = self.request_deposit(user, 25 * UNIT)
            requests[user] = deposit_id
        tl.say(f"/deposit 25 from each: {first_line(message)}")
        sent_at = time.monotonic()
        for user in WALLET_USERS:
            self.deposit_on_chain(user, 25 * UNIT)
        tl.say(f"each sent 25 USDT on chain from their wallet to {HOT_WALLET[:10]}...")
        for user, deposit_id in requests.items():
            message = self.wait_notice(user, f"Deposit #{deposit_id} credited")
        tl.say(f"all 4 credited after {CONFIRMATIONS} confirmations within {time.monotonic() - sent_at:.1f} s: "
               f"{first_line(message)}")

        withdrawal_id = self.request_withdrawal(1001, 5 * UNIT)
        tl.say(f"user 1001: /withdraw 5, pressed Confirm -> 'Withdrawal #{withdrawal_id} ... waiting for approval'")
        self.wait_notice(ADMIN_ID, f"#{withdrawal_id} user 1001")
        message, _ = people.press(ADMIN_ID, f"Approve #{withdrawal_id}", contains="approved")
        tl.say(f"admin pressed [Approve #{withdrawal_id}] on the bot's notice -> {first_line(message)}")
        message = self.wait_notice(1001, f"Withdrawal #{withdrawal_id} of 5 USDT is confirmed")
        tl.say(f"worker sent it on chain; user 1001 told: {first_line(message, 60)}")

    # -- 2. Redis killed mid-dialog and mid-burst

    def step_redis(self) -> None:
        stack, tl, people = self.stack, self.tl, self.people
        tl.step("2. Redis killed -9 mid-dialog and during a burst of notices")
        people.send(1002, "/withdraw 5", contains="Confirm?")
        tl.say("user 1002: /withdraw 5 -> 'Withdraw 5 USDT to 0x... Confirm?' (dialog state in Redis and PostgreSQL)")
        chats = [row["id"] for row in stack.rows("SELECT id FROM users ORDER BY id")]
        self.burst = burst = Burst(stack, chats, BURST_NOTICES)
        burst.start()
        tl.say(f"operator burst: {BURST_NOTICES} notices to {len(chats)} registered chats through "
               f"dr.NotificationService, idempotency keys drill:burst:<n>")
        wait(lambda: burst.queued >= BURST_KILL_AT, 30, f"{BURST_KILL_AT} notices to be queued")
        stack.redis.kill()
        killed_at = time.monotonic()
        tl.say(f"Redis KILLED -9 with {burst.queued} notices queued (all in the Redis stream so far)")

        message, latency = people.press(1002, "Confirm", contains="Withdrawal #")
        w2 = hash_id(message["text"])
        self.withdrawals[w2] = 1002
        tl.say(f"user 1002 pressed Confirm -> {first_line(message)} in {latency:.2f} s "
               f"(dialog read from PostgreSQL)")
        message, latency = people.send(1003, "/withdraw 3", contains="Confirm?")
        tl.say(f"user 1003: /withdraw 3 -> 'Confirm?' in {latency:.2f} s (a dialog begun with Redis down: "
               f"PostgreSQL only)")
        message, latency = people.send(ADMIN_ID, f"/approve {w2}", contains="approved")
        tl.say(f"admin: /approve {w2} -> {first_line(message)} in {latency:.2f} s")
        wait(burst.done.is_set, 60, "the burst to be queued")
        where = ", ".join(f"{count} {place}" for place, count in sorted(burst.where.items()))
        tl.say(f"burst queued: {where}; longest notify() {burst.longest_s:.2f} s")
        wait(lambda: stack.breaker("bot", "redis") in DOWN and stack.breaker("worker", "redis") in DOWN, 20,
             "bot.json and worker.json to show the Redis breaker open")
        tl.say(f"bot.json and worker.json: Redis breaker open ({time.monotonic() - killed_at:.1f} s after the kill)")
        in_fallback = stack.value("SELECT count(*) FROM notification_queue_fallback "
                                  "WHERE idempotency_key LIKE 'drill:burst:%%'")
        tl.say(f"waiting in PostgreSQL: {in_fallback} burst notices in notification_queue_fallback, "
               f"{stack.value('SELECT count(*) FROM user_fsm_states WHERE migrated_at IS NULL')} dialog state(s) "
               f"in user_fsm_states not yet in Redis")

        logs_at = (len(stack.bot.log()), len(stack.worker.log()))
        stack.redis.start()
        back_at = time.monotonic()
        tl.say(f"Redis restarted (from its append-only file) after {back_at - killed_at:.1f} s down")
        closed_s = wait(lambda: stack.breaker("bot", "redis") == "CLOSED"
                        and stack.breaker("worker", "redis") == "CLOSED", 30,
                        "the bot's and the worker's Redis breakers to close")
        tl.say(f"bot.json and worker.json: Redis breaker CLOSED {closed_s:.1f} s after the restart")
        recovery = re.compile(r"recovery: (\d+) notice\(s\) and (\d+) dialog state\(s\) moved to Redis, "
                              r"(\d+) user\(s\) warmed in ([\d.]+) s")
        found = lambda: [m for text in (stack.bot.log()[logs_at[0]:], stack.worker.log()[logs_at[1]:])
                         for m in recovery.finditer(text)]
        wait(lambda: found(), 30, "the recovery after Redis returned (bot or worker log)")
        moved = found()
        notices, dialogs = sum(int(m.group(1)) for m in moved), sum(int(m.group(2)) for m in moved)
        tl.say(f"recovery: {notices} notice(s) and {dialogs} dialog state(s) moved back to Redis, "
               f"{max(int(m.group(3)) for m in moved)} user(s) warmed ({time.monotonic() - back_at:.1f} s after "
               f"the restart)")
        client = redis_lib.Redis.from_url(stack.redis.url(), socket_timeout=2)
        with client:
            cached = sum(1 for _ in client.scan_iter("cache:user:*"))
        tl.say(f"cache warm: {cached} of {len(chats)} users cached in Redis")
        message, latency = people.press(1003, "Confirm", contains="Withdrawal #")
        w3 = hash_id(message["text"])
        self.withdrawals[w3] = 1003
        tl.say(f"user 1003 pressed Confirm -> {first_line(message)} (the dialog begun during the outage)")
        self.wait_notice(ADMIN_ID, f"#{w3} user 1003")
        message, _ = people.press(ADMIN_ID, f"Approve #{w3}", contains="approved")
        tl.say(f"admin pressed [Approve #{w3}] -> {first_line(message)}")

        expected = {(chat_id, render("en", payload)[0]) for chat_id, payload, _ in burst.plan()}
        delivered = lambda: len(expected & set(self.sent_messages()))
        wait(lambda: delivered() == len(expected), 90, "every burst notice to reach its chat", 0.25)
        split = dict((r["status"], r["n"]) for r in stack.rows(
            "SELECT status, count(*) AS n FROM notification_queue_fallback WHERE idempotency_key LIKE 'drill:burst:%%' "
            "GROUP BY status"))
        tl.say(f"all {len(expected)} burst notices reached their chats {time.monotonic() - killed_at:.1f} s after "
               f"the kill (of those in PostgreSQL: {split.get('SENT', 0)} sent by the fallback processor, "
               f"{split.get('MIGRATED', 0)} migrated back to the stream)")
        for withdrawal_id, user in ((w2, 1002), (w3, 1003)):
            self.wait_notice(user, f"Withdrawal #{withdrawal_id} of ")
            wait(lambda: self.withdrawal_status(withdrawal_id) == "CONFIRMED", 30,
                 f"withdrawal #{withdrawal_id} to be confirmed")
        tl.say(f"withdrawals #{w2} and #{w3} confirmed on chain")
        tl.recovered("Redis killed -9", f"down {back_at - killed_at:.1f} s; {in_fallback} notices waited in "
                                        f"PostgreSQL; breakers closed {closed_s:.1f} s after the restart; "
                                        f"{notices} notices + {dialogs} dialog(s) moved back to Redis")

    # -- 3. PostgreSQL stopped

    def step_postgres(self) -> None:
        stack, tl, people = self.stack, self.tl, self.people
        tl.step("3. PostgreSQL stopped")
        balance_1004 = self.balance(1004)
        stack.pg.stop()
        stopped_at = time.monotonic()
        tl.say("PostgreSQL STOPPED (fast shutdown)")
        tries = {1001: "/deposit 10", 1002: "/history", 1003: "/withdraw 2", 2001: "/deposit 15"}
        pushed = {user: people.push(user, text) for user, text in tries.items()}
        cached = people.push(1004, "/balance")
        latencies = []
        for user, text in tries.items():
            message, latency = people.reply(user, pushed[user], contains=TECH_WORKS)
            latencies.append(latency)
        tl.say(f"4 users wrote at once ({', '.join(tries.values())}): each got {first_line(message)} "
               f"in {min(latencies):.2f}-{max(latencies):.2f} s")
        if max(latencies) > 1.0:
            tl.say(f"  SLOW: not at once; requests already waiting for a pooled connection waited out "
                   f"DB_POOL_TIMEOUT_S={stack.settings['DB_POOL_TIMEOUT_S']} s")
        message, latency = people.reply(1004, cached, contains="Balance:")
        tl.say(f"user 1004: /balance -> {first_line(message, 80)} in {latency:.2f} s (from the Redis cache)")
        if f"Balance: {balance_1004 / UNIT:g} USDT" not in message["text"]:
            raise DrillFailed(f"the cached balance of user 1004 is not {balance_1004 / UNIT:g}: {message['text']!r}")
        message, latency = people.send(1001, "/withdraw 1", contains=TECH_WORKS)
        tl.say(f"user 1001 again: /withdraw 1 -> technical works in {latency:.2f} s (breaker open: no waiting)")
        wait(lambda: stack.breaker("bot", "postgresql") in DOWN, 20, "bot.json to show the PostgreSQL breaker open")
        tl.say(f"bot.json: PostgreSQL breaker open ({time.monotonic() - stopped_at:.1f} s after the stop)")
        try:
            alert = stack.api.wait_for(ADMIN_ID, contains="PostgreSQL is down", timeout=15)
            tl.say(f"admin {ADMIN_ID} told while it is down, through the Redis stream: {first_line(alert, 60)}")
        except AssertionError:
            tl.say(f"admin {ADMIN_ID} was not told within 15 s that PostgreSQL is down")
        stack.pg.start()
        back_at = time.monotonic()
        tl.say(f"PostgreSQL started again after {back_at - stopped_at:.1f} s down; no user writes now")
        bot_s = wait(lambda: stack.breaker("bot", "postgresql") == "CLOSED", 30,
                     "the bot's PostgreSQL breaker to close")
        worker_s = wait(lambda: stack.breaker("worker", "postgresql") == "CLOSED", 30,
                        "the worker's PostgreSQL breaker to close")
        tl.say(f"bot.json: PostgreSQL breaker CLOSED {bot_s:.1f} s after the start, without any user traffic; "
               f"worker.json: CLOSED {bot_s + worker_s:.1f} s")
        message, latency = people.send(1001, "/balance", contains="Balance:")
        tl.say(f"user 1001: /balance -> {first_line(message)} in {latency:.2f} s (from PostgreSQL again)")
        tl.recovered("PostgreSQL stopped", f"down {back_at - stopped_at:.1f} s; technical-works replies in "
                                           f"<= {max(latencies):.2f} s; bot breaker closed {bot_s:.1f} s after start")

    # -- 4. the RPC cut while deposits are made

    def step_rpc(self) -> None:
        stack, tl, people = self.stack, self.tl, self.people
        tl.step("4. The RPC link cut while deposits are made")
        stack.proxy.cut()
        cut_at = time.monotonic()
        tl.say("RPC link CUT (the TCP proxy between bot/worker and anvil refuses connections)")
        wait(lambda: stack.breaker("worker", "rpc") in DOWN, 20, "the worker's RPC breaker to open")
        tl.say(f"worker.json: RPC breaker open after {time.monotonic() - cut_at:.1f} s: automatic maintenance")
        message, took, tries = people.until(1002, "/withdraw 5", PAUSED, "Confirm?")
        tl.say(f"user 1002: /withdraw 5 -> {first_line(message, 60)} ({tries} tr{'y' if tries == 1 else 'ies'})")
        made = {}
        for user, units in ((1003, 30 * UNIT), (1004, 40 * UNIT)):
            deposit_id, message, _ = self.request_deposit(user, units)
            if DEPOSIT_PAUSED not in message["text"]:
                raise DrillFailed(f"user {user}'s deposit request did not say maintenance: {message['text']!r}")
            made[user] = (deposit_id, units)
        statuses = [self.deposit_status(d) for d, _ in made.values()]
        tl.say(f"users 1003, 1004: /deposit 30 and /deposit 40 -> 'Deposit request #...' + "
               f"'{DEPOSIT_PAUSED[:60]}...'; in the database: {', '.join(statuses)}")
        if set(statuses) != {"PENDING_NETWORK_RECOVERY"}:
            raise DrillFailed(f"outage deposit requests are {statuses}, not PENDING_NETWORK_RECOVERY")
        last = 0
        for user, (deposit_id, units) in made.items():
            receipt = self.deposit_on_chain(user, units)
            last = receipt["blockNumber"]
        cursor = self.cursor()
        self.wait_blocks(last, CONFIRMATIONS + 2)
        tl.say(f"both sent their tokens on chain (mined by block {last}); the chain moved on to block "
               f"{stack.w3.eth.block_number}; the worker's cursor waits at block {cursor}; credited: "
               f"{'nothing' if self.cursor() == cursor else 'SOMETHING?'}")
        stack.proxy.restore()
        back_at = time.monotonic()
        tl.say(f"RPC link RESTORED after {back_at - cut_at:.1f} s")
        for user, (deposit_id, units) in made.items():
            message = self.wait_notice(user, f"Deposit #{deposit_id} credited")
        took = time.monotonic() - back_at
        tl.say(f"both outage deposits credited and their users told within {took:.1f} s: {first_line(message)}")
        wait(lambda: stack.breaker("worker", "rpc") == "CLOSED", 20, "the worker's RPC breaker to close")
        tl.say("worker.json: RPC breaker CLOSED")
        tl.recovered("RPC cut", f"down {back_at - cut_at:.1f} s; 2 deposit requests waited as "
                                f"PENDING_NETWORK_RECOVERY; credited {took:.1f} s after the link returned")

    # -- 5. maintenance on and off with dr.py

    def step_maintenance(self) -> None:
        stack, tl, people = self.stack, self.tl, self.people
        tl.step("5. Maintenance switched on and off with dr.py while everything runs")
        since_on = self.maintenance("on")
        wait(lambda: self.worker_report().get("maintenance") is True, 15, "the worker to report maintenance")
        worker_s = since_on()
        tl.say(f"worker picked it up {worker_s:.1f} s after the .env edit (its report says maintenance)")
        message, _, tries = people.until(1001, "/withdraw 5", PAUSED, "Confirm?")
        bot_s = since_on()
        tl.say(f"bot picked it up within {bot_s:.1f} s: user 1001 /withdraw 5 -> {first_line(message, 60)}")
        deposit_id, message, _ = self.request_deposit(1001, 12 * UNIT)
        status = self.deposit_status(deposit_id)
        if DEPOSIT_PAUSED not in message["text"] or status != "PENDING_NETWORK_RECOVERY":
            raise DrillFailed(f"deposit request #{deposit_id} during maintenance: {status}, {message['text']!r}")
        receipt = self.deposit_on_chain(1001, 12 * UNIT)
        cursor = self.cursor()
        self.wait_blocks(receipt["blockNumber"], CONFIRMATIONS + 1)
        tl.say(f"user 1001: /deposit 12 -> #{deposit_id} {status}; sent 12 USDT on chain (block "
               f"{receipt['blockNumber']}); the chain moved on to {stack.w3.eth.block_number}, scanning paused at "
               f"block {cursor}")
        since_off = self.maintenance("off")
        on_for = since_on() - since_off()
        message = self.wait_notice(1001, f"Deposit #{deposit_id} credited")
        credited_s = since_off()
        tl.say(f"deposit #{deposit_id} credited {credited_s:.1f} s after the .env edit: {first_line(message)}")
        message, took, tries = people.until(1001, "/withdraw 5", "Confirm?", PAUSED)
        tl.say(f"user 1001: /withdraw 5 -> 'Confirm?' again ({since_off():.1f} s after the edit); pressed Cancel")
        people.press(1001, "Cancel", contains="Cancelled")
        tl.recovered("maintenance", f"on for {on_for:.1f} s; picked up by the worker in {worker_s:.1f} s, by the "
                                    f"bot within {bot_s:.1f} s; the deposit made meanwhile credited {credited_s:.1f} s "
                                    f"after off")

    def maintenance(self, mode: str):
        """python dr.py maintenance on|off against our .env; a clock of the seconds since it rewrote the file."""
        done = self.stack.dr("maintenance", mode)
        if done.returncode != 0:
            raise DrillFailed(f"dr.py maintenance {mode} exited {done.returncode}: {done.stderr.strip()}")
        edited = self.stack.env_file.stat().st_mtime
        self.tl.say(f"$ {self.stack.dr_command('maintenance', mode)}\n          {done.stdout.strip()}")
        return lambda: time.time() - edited

    # -- 6. the worker killed -9 as it sends a withdrawal

    def step_worker_kill(self) -> None:
        stack, tl, people = self.stack, self.tl, self.people
        tl.step("6. The worker killed -9 while sending a withdrawal")
        for withdrawal_id in self.withdrawals:
            wait(lambda: self.withdrawal_status(withdrawal_id) == "CONFIRMED", 30,
                 f"withdrawal #{withdrawal_id} to be confirmed first")
        withdrawal_id = self.request_withdrawal(1004, 7 * UNIT)
        tl.say(f"user 1004: /withdraw 7, Confirm -> 'Withdrawal #{withdrawal_id} ... waiting for approval'")
        worker = stack.worker

        def kill_worker():
            worker.process.kill()  # SIGKILL, from the proxy thread, before the node's answer is passed on
            return DROP
        fired = stack.proxy.arm("eth_sendRawTransaction", kill_worker, on=RESPONSE)
        self.wait_notice(ADMIN_ID, f"#{withdrawal_id} user 1004")
        people.press(ADMIN_ID, f"Approve #{withdrawal_id}", contains="approved")
        tl.say(f"admin pressed [Approve #{withdrawal_id}]; the proxy is armed to kill the worker when it broadcasts")
        wait(fired.is_set, 30, "the worker to broadcast the withdrawal")
        worker.process.wait(20)
        self.kills.append(len(self.sent_messages()))
        killed_at = time.monotonic()
        row = stack.rows("SELECT status, tx_hash FROM withdrawals WHERE id = %s", (withdrawal_id,))[0]
        receipt = stack.w3.eth.wait_for_transaction_receipt(row["tx_hash"], timeout=10, poll_latency=0.05)
        tl.say(f"worker KILLED -9 the moment its transaction reached the node: database says {row['status']}, "
               f"the chain has tx {row['tx_hash'][:12]}... mined in block {receipt['blockNumber']}")
        worker.start()
        worker.wait_started()
        tl.say(f"worker restarted (pid {worker.process.pid}) after {time.monotonic() - killed_at:.1f} s")
        self.wait_notice(1004, f"Withdrawal #{withdrawal_id} of 7 USDT is confirmed")
        tx_hashes = [e["tx_hash"].lower() for e in chaintools.transfer_events(stack.w3, stack.token, self.first_block)
                     if e["from"] == HOT_WALLET and e["value"] == 7 * UNIT]
        final = stack.rows("SELECT status, tx_hash FROM withdrawals WHERE id = %s", (withdrawal_id,))[0]
        same = "the same" if final["tx_hash"] == row["tx_hash"] else "ANOTHER"
        tl.say(f"withdrawal #{withdrawal_id} {final['status']} with {same} signed transaction; "
               f"user 1004 told {time.monotonic() - killed_at:.1f} s after the kill; on-chain transfers for it: "
               f"{len(tx_hashes)}")
        tl.recovered("worker kill -9", f"confirmed {time.monotonic() - killed_at:.1f} s after the kill with the "
                                       f"bytes it had committed; {len(tx_hashes)} transfer on chain")

    # -- the verdict

    def settle(self) -> None:
        """Wait until the work the drill caused is done and nothing is in flight (bounded)."""
        stack, tl = self.stack, self.tl
        tl.step("Settling")
        try:
            wait(lambda: all(self.withdrawal_status(w) == "CONFIRMED" for w in self.withdrawals), SETTLE_TIMEOUT_S,
                 "every withdrawal to be confirmed", 0.2)
            last = max((e["block_number"] for e in self.user_transfers()), default=0)
            wait(lambda: (self.cursor() or 0) >= last, SETTLE_TIMEOUT_S, "the deposit scan to pass the last transfer",
                 0.2)
            wait(lambda: not self.expected_notices(missing_only=True), SETTLE_TIMEOUT_S,
                 "every expected notice to be sent", 0.25)
            queues = ("SELECT (SELECT count(*) FROM notification_outbox WHERE status = 'PENDING') + "
                      "(SELECT count(*) FROM notification_queue_fallback WHERE status = 'PENDING')")
            wait(lambda: stack.value(queues) == 0 and self.stream_backlog() == 0, QUIET_TIMEOUT_S,
                 "the notice queues to drain", 0.25)
            tl.say("every withdrawal confirmed, the scan past the last transfer, the notice queues empty")
            alerts = collections.Counter()
            for message in stack.api.messages(ADMIN_ID):
                found = ALERT.match(message["text"])
                if found:
                    alerts[f"{found.group(1)} {'down' if found.group(2) == 'is down' else 'back'}"] += 1
            tl.say(f"admin {ADMIN_ID} was alerted: " + (", ".join(f"{what} x{n}" for what, n in alerts.items())
                                                       or "never"))
        except DrillFailed as exc:
            tl.say(f"not settled: {exc}")

    def stream_backlog(self) -> int:
        client = redis_lib.Redis.from_url(self.stack.redis.url(), socket_timeout=2, decode_responses=True)
        with client:
            return dr.stream_backlog(client)

    def user_transfers(self) -> list[dict]:
        owners = {chaintools.address_of(key_of(user)) for user in WALLET_USERS}
        return [e for e in chaintools.transfer_events(self.stack.w3, self.stack.token, self.first_block)
                if e["to"] == HOT_WALLET and e["from"] in owners]

    def expected_notices(self, missing_only: bool = False) -> list[Notice]:
        """Every notice that must reach a chat once: the burst, and every money-event notice in the outbox."""
        languages = {row["id"]: row["language"] for row in self.stack.rows("SELECT id, language FROM users")}
        expected = []
        if self.burst is not None:
            expected += [Notice(chat_id, render(languages.get(chat_id, "en"), payload)[0], key)
                         for chat_id, payload, key in self.burst.plan()]
        for row in self.stack.rows("SELECT chat_id, payload, idempotency_key FROM notification_outbox ORDER BY id"):
            expected.append(Notice(row["chat_id"], render(languages.get(row["chat_id"], "en"), row["payload"])[0],
                                   row["idempotency_key"]))
        if missing_only:
            sent = set(self.sent_messages())
            expected = [n for n in expected if (n.chat_id, n.text) not in sent]
        return expected

    def verdict(self) -> bool:
        stack, tl = self.stack, self.tl
        owners = {chaintools.address_of(key_of(user)): user for user in WALLET_USERS}
        transfers = self.user_transfers()
        notices = tally_notices(self.expected_notices(), self.sent_messages(), self.kills)
        ledger = stack.rows("SELECT idempotency_key, user_id, amount FROM ledger_entries WHERE kind = 'deposit'")
        deposits = tally_deposits(transfers, owners, ledger)
        withdrawal_rows = stack.rows("SELECT * FROM withdrawals ORDER BY id")
        hot = [e for e in chaintools.transfer_events(stack.w3, stack.token, self.first_block)
               if e["from"] == HOT_WALLET]
        withdrawals = tally_withdrawals(hot, withdrawal_rows)
        users = stack.rows("SELECT id, balance FROM users WHERE id = ANY(%s)", (list(WALLET_USERS),))
        balances = balance_mismatches(users, transfers, owners, withdrawal_rows)
        errors = log_errors("bot.log", stack.bot.log()) + log_errors("worker.log", stack.worker.log())
        rows = invariant_rows(notices, deposits, withdrawals, balances, errors, len(self.kills))

        status = stack.dr("status")
        overall = next((line for line in status.stdout.splitlines() if line.startswith("overall:")), "no verdict")
        tl.say(f"$ {stack.dr_command('status')} -> exit {status.returncode}, {overall}")
        for line in status.stdout.splitlines():
            if line.startswith("PROBLEM:"):
                tl.say(f"  {line}")

        print("\nRecoveries")
        for what, detail in tl.recoveries:
            print(f"  {what:<20} {detail}")
        print(f"\nInvariants (from the stand-in's transcript: {len(self.sent_messages())} messages; the chain: "
              f"{len(transfers)} deposits, {len(hot)} withdrawals; the ledger, deposits and withdrawals tables)")
        for line in render_rows(rows):
            print(line)
        return all_hold(rows)


def interrupt(*_):
    raise KeyboardInterrupt


def run(drill: Drill, keep: bool) -> int:
    """The drill, its verdict and (with --keep) the console; 0 when every invariant held."""
    stack, timeline, failed = drill.stack, drill.tl, None
    try:
        drill.bring_up()
        for step in (drill.step_users, drill.step_redis, drill.step_postgres, drill.step_rpc,
                     drill.step_maintenance, drill.step_worker_kill):
            step()
        drill.settle()
    except (DrillFailed, RuntimeError, TimeoutError) as exc:
        failed = exc
        timeline.say(f"DRILL FAILED: {exc}")
    except Exception as exc:  # a bug of the drill itself: say where, keep the traceback in drill.log
        failed = exc
        logging.exception("the drill broke")
        timeline.say(f"DRILL BROKE: {type(exc).__name__}: {exc} (traceback in {stack.dir}/drill.log)")
    passed = False
    if stack.bot is not None and stack.pg is not None and stack.pg.running():
        try:
            passed = drill.verdict() and failed is None
        except Exception as exc:
            logging.exception("the verdict broke")
            timeline.say(f"no verdict: {type(exc).__name__}: {exc}")
    print(f"\nRESULT: {'PASS' if passed else 'FAIL'} in {timeline.elapsed():.0f} s"
          + ("" if passed else f"; logs kept in {stack.dir}"), flush=True)
    if keep:
        keep_talking(stack)
    return 0 if passed else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true",
                        help="leave the stack running afterwards, with a `make chat` console to talk to the bot")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, interrupt)  # stopped from outside: tear down as on Ctrl-C
    stack = drill = None
    code = 1
    try:
        stack = Stack()
        logging.basicConfig(filename=stack.dir / "drill.log", level=logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        drill = Drill(stack, Timeline())
        code = run(drill, args.keep)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("\ninterrupted: tearing everything down", flush=True)
        code = 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not stop the teardown half-way
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if drill is not None and drill.burst is not None:
            drill.burst.close()
        if stack is not None:
            stack.down()
            if code in (0, 130):
                stack.remove_files()
            print("stack stopped: bot.py, worker.py, PostgreSQL, Redis, anvil, the proxy and the stand-in",
                  flush=True)
    return code


def keep_talking(stack: Stack) -> None:
    """--keep: the stack stays up; talk to the bot as in `make chat` until :quit (or Ctrl-C)."""
    print(f"\nThe stack keeps running (KEEP). In another shell, ask the operator's questions:\n"
          f"  {stack.dr_command('status')}\n"
          f"  {stack.dr_command('status', '--json')}\n"
          f"Logs: {stack.dir}/bot.log, {stack.dir}/worker.log. The chain still mines a block a second.\n"
          f"Below: a `make chat` console as user {FIRST_USER_ID} (:as {ADMIN_ID} for the admin, :help, :quit to stop "
          f"everything).", flush=True)
    session = Session(stack.api, stack.w3, stack.token)
    for chat_id in (ADMIN_ID, *WALLET_USERS, *BYSTANDERS):  # what the drill already saw is not printed again
        session.seen[chat_id] = {m["message_id"]: m["edited"] + (100 if m["deleted"] else 0)
                                 for m in stack.api.messages(chat_id)}
    session.run()


if __name__ == "__main__":
    sys.exit(main())
