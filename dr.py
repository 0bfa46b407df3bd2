"""Resilience pieces shared by bot and worker, and the operator CLI:
python dr.py migrate | status | recover | reconcile | maintenance on|off.

Here: the circuit breaker, the Redis client factory, the dialog (FSM) storage, the
rate limiter and the recovery routine. Still to come with the disaster-recovery
issue: PostgreSQL fallbacks for dialogs and the Redis notification queue, and
`warmup`. Imports point down only (core, db, chain, runtime), never to bot.py or
worker.py.
"""
import argparse
import getpass
import json
import logging
import os
import sys
import threading
import time

import redis
from telebot.storage import StateStorageBase

from chain import nonce_audit, reconciler, scanner, sender
from chain.rpc import is_transport_failure
from core.errors import BreakerOpen, DatabaseError, MigrationError
from core.i18n import scan_progress
from db import hot_wallet, migrate, notifications, service_status, stats, withdrawals
from db.pool import connect
from runtime import startup
from runtime.worker_context import build_worker_context

log = logging.getLogger(__name__)

DIALOG_TTL_S = 24 * 3600  # an abandoned dialog is forgotten after a day
REDIS_ERRORS = (redis.RedisError, OSError)


def redis_client(settings) -> redis.Redis:
    """A client whose every call fails within REDIS_TIMEOUT_S; callers own any retrying."""
    return redis.Redis.from_url(
        settings.redis_url.reveal(), socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s, health_check_interval=0, decode_responses=True)


class DialogStore(StateStorageBase):
    """Dialog state and data per (bot, chat, user, thread), kept in Redis as one JSON value.

    get/put/clear are what the handlers use; the StateStorageBase methods let telebot
    use the same storage.
    """

    def __init__(self, client: redis.Redis, ttl_s: int = DIALOG_TTL_S):
        super().__init__()
        self._redis = client
        self._ttl_s = ttl_s

    def get(self, chat_id: int, user_id: int, **where) -> tuple[str | None, dict]:
        raw = self._redis.get(self._key(chat_id, user_id, **where))
        if not raw:
            return None, {}
        value = json.loads(raw)
        return value.get("state"), value.get("data") or {}

    def put(self, chat_id: int, user_id: int, state: str | None, data: dict, **where) -> None:
        payload = json.dumps({"state": state, "data": data, "updated_at": time.time()})
        self._redis.set(self._key(chat_id, user_id, **where), payload, ex=self._ttl_s)

    def clear(self, chat_id: int, user_id: int, **where) -> bool:
        return bool(self._redis.delete(self._key(chat_id, user_id, **where)))

    @staticmethod
    def _key(chat_id, user_id, business_connection_id=None, message_thread_id=None, bot_id=None) -> str:
        return f"fsm:{bot_id or 0}:{chat_id}:{user_id}:{message_thread_id or 0}:{business_connection_id or ''}"

    # --- telebot's StateStorageBase interface
    def set_state(self, chat_id, user_id, state, **where):
        state_name = getattr(state, "name", state)
        _, data = self.get(chat_id, user_id, **where)
        self.put(chat_id, user_id, state_name, data, **where)
        return True

    def get_state(self, chat_id, user_id, **where):
        return self.get(chat_id, user_id, **where)[0]

    def delete_state(self, chat_id, user_id, **where):
        return self.clear(chat_id, user_id, **where)

    def set_data(self, chat_id, user_id, key, value, **where):
        state, data = self.get(chat_id, user_id, **where)
        data[key] = value
        self.put(chat_id, user_id, state, data, **where)
        return True

    def get_data(self, chat_id, user_id, **where):
        return self.get(chat_id, user_id, **where)[1]

    def reset_data(self, chat_id, user_id, **where):
        state, _ = self.get(chat_id, user_id, **where)
        self.put(chat_id, user_id, state, {}, **where)
        return True

    def save(self, chat_id, user_id, data, **where):
        state, _ = self.get(chat_id, user_id, **where)
        self.put(chat_id, user_id, state, data, **where)
        return True

    def get_interactive_data(self, chat_id, user_id, **where):
        raise NotImplementedError("use get() and put()")


CLOSED, OPEN, HALF_OPEN = "CLOSED", "OPEN", "HALF_OPEN"


class CircuitBreaker:
    """Stop calling a dependency after consecutive failures; probe it again after a pause.

    CLOSED: calls go through; `failure_threshold` consecutive failures open it.
    OPEN: calls fail fast with BreakerOpen until `reset_timeout_s` passed (monotonic clock).
    HALF_OPEN: exactly one probe call goes through; success closes, failure reopens.
    Only exceptions for which `is_failure(exc)` is true count (transport failures, not
    "the node answered with an error"). No lock is held while the protected call runs.
    """

    def __init__(self, name: str, failure_threshold: int, reset_timeout_s: float,
                 is_failure=lambda exc: True, clock=time.monotonic):
        self.name = name
        self._threshold = failure_threshold
        self._reset_timeout_s = reset_timeout_s
        self._is_failure = is_failure
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self.last_error: str | None = None

    @property
    def state(self) -> str:
        with self._lock:
            if self._state == OPEN and self._clock() - self._opened_at >= self._reset_timeout_s:
                return HALF_OPEN
            return self._state

    def call(self, function, *args, **kwargs):
        self._admit()
        try:
            result = function(*args, **kwargs)
        except BaseException as exc:
            self._record(failed=self._is_failure(exc), error=exc)
            raise
        self._record(failed=False)
        return result

    def _admit(self) -> None:
        with self._lock:
            if self._state == CLOSED:
                return
            if self._state == OPEN and self._clock() - self._opened_at >= self._reset_timeout_s:
                self._state = HALF_OPEN
            if self._state == HALF_OPEN and not self._probing:
                self._probing = True  # this caller is the one probe
                return
            raise BreakerOpen(f"{self.name} is unavailable ({self.last_error or 'recent failures'})")

    def _record(self, failed: bool, error: BaseException | None = None) -> None:
        with self._lock:
            probing, self._probing = self._probing, False
            if not failed:
                if self._state != CLOSED:
                    log.warning("%s breaker CLOSED: the dependency answers again", self.name)
                self._state, self._failures = CLOSED, 0
                return
            self._failures += 1
            self.last_error = type(error).__name__ if error else None
            if probing or self._failures >= self._threshold:
                if self._state != OPEN:
                    log.warning("%s breaker OPEN after %s failure(s): %s", self.name, self._failures, self.last_error)
                self._state, self._opened_at = OPEN, self._clock()


def rpc_breaker(settings) -> CircuitBreaker:
    """The breaker that guards every call to the RPC node; only transport failures count."""
    return CircuitBreaker("rpc", settings.breaker_failures, settings.breaker_reset_s,
                          is_failure=is_transport_failure)


ALLOW, WARN, DROP = "ALLOW", "WARN", "DROP"


class RateLimiter:
    """Fixed-window counter per user: ALLOW up to the limit, WARN once past it, then DROP.

    Counts live in Redis so bot restarts do not reset them; while Redis is down the
    same counting happens in memory, so a flood is still cut off. `limits()` gives
    (updates, window seconds) at each hit, so live .env edits apply at once.
    """

    def __init__(self, client: redis.Redis, limits, clock=time.time):
        self._redis = client
        self._limits = limits
        self._clock = clock
        self._local: dict[tuple[int, int], int] = {}
        self._lock = threading.Lock()

    def hit(self, user_id: int) -> str:
        limit, window_s = self._limits()
        window = int(self._clock() // window_s)
        try:
            count = self._count_in_redis(user_id, window, window_s)
        except REDIS_ERRORS as exc:
            log.warning("rate limiter: Redis unavailable (%s), counting in memory", type(exc).__name__)
            count = self._count_in_memory(user_id, window)
        if count <= limit:
            return ALLOW
        return WARN if count == limit + 1 else DROP

    def _count_in_redis(self, user_id: int, window: int, window_s: int) -> int:
        key = f"rl:{user_id}:{window_s}:{window}"
        pipe = self._redis.pipeline()
        pipe.incr(key)
        pipe.expire(key, window_s * 2)
        return int(pipe.execute()[0])

    def _count_in_memory(self, user_id: int, window: int) -> int:
        with self._lock:
            for key in [k for k in self._local if k[1] < window]:
                del self._local[key]
            count = self._local.get((user_id, window), 0) + 1
            self._local[(user_id, window)] = count
            return count


# --- operator CLI

def run_migrate(settings) -> int:
    """Apply pending migrations; refuse if an applied file was edited or a number is missing."""
    try:
        migrations = migrate.discover()
        with connect(settings, "dr-migrate", autocommit=True) as conn:
            done = migrate.migrate(conn, migrations)
    except MigrationError as exc:
        startup.fail(f"migrate: refused: {exc}")
    except DatabaseError as exc:
        startup.fail(f"migrate: cannot reach the database at {settings.database_url}: {exc}")
    for migration in done:
        print(f"applied {migration.label}")
    print(f"schema is current ({len(migrations)} migrations, {len(done)} applied now)")
    return 0


def run_status(settings) -> int:
    """Print what an operator needs after an incident; exit 1 when something needs attention."""
    try:
        migrations = migrate.discover()
        with connect(settings, "dr-status", autocommit=True) as conn:
            missing = migrate.pending(conn, migrations)
            report = status_report(conn)
    except (MigrationError, DatabaseError) as exc:
        print(f"database: PROBLEM: {exc}")
        return 1
    print(f"database: ok, schema {'current' if not missing else f'{len(missing)} pending migrations'}")
    print(f"maintenance (BLOCKCHAIN_MAINTENANCE_MODE): {'on' if settings.blockchain_maintenance_mode else 'off'}")
    for line in report["lines"]:
        print(line)
    return 0 if not missing and report["healthy"] else 1


def status_report(conn) -> dict:
    """Lines about the worker's RPC view, money in flight and queues, from the database alone."""
    lines, healthy = [], True
    rpc = service_status.get(conn, "rpc")
    if rpc is None:
        lines.append("rpc (worker): no report yet (is worker.py running?)")
        healthy = False
    else:
        status, age = rpc["status"], int(rpc["age"].total_seconds())
        healthy &= status.get("breaker") == "CLOSED" and age < 60
        detail = f" ({status['last_error']})" if status.get("last_error") and status.get("breaker") != "CLOSED" else ""
        lines.append(f"rpc (worker): breaker {status.get('breaker')}{detail}, reported {age} s ago")
        if status.get("scan_problem"):
            lines.append(f"deposit scan: PROBLEM: {status['scan_problem']}")
            healthy = False
        lines.append("deposit scan: " + scan_progress(status, "en"))
    nonce = service_status.get(conn, "hot_wallet_nonce")
    if nonce and nonce["status"].get("ahead"):
        gap = nonce["status"]
        lines.append(f"hot wallet: PROBLEM: the chain shows {gap['unknown']} transaction(s) the database does not "
                     f"know (chain nonce {gap['chain_nonce']}, database {gap['known_next']}); withdrawals are "
                     f"stopped until `python dr.py reconcile`")
        healthy = False
    wallet = service_status.get(conn, "hot_wallet")
    if wallet and wallet["status"].get("short"):
        lines.append(f"hot wallet: SHORT of funds for withdrawal #{wallet['status'].get('withdrawal')}")
        healthy = False
    for row in withdrawals.with_problems(conn):
        lines.append(f"withdrawal #{row['id']} ({row['status']}): {row['problem']}")
    summary = stats.summary(conn)
    lines.append("deposits: " + (", ".join(f"{k} {v}" for k, v in summary["deposits"].items()) or "none"))
    lines.append("withdrawals: " + (", ".join(f"{k} {v}" for k, v in summary["withdrawals"].items()) or "none"))
    lines.append(f"notifications waiting: {notifications.pending_count(conn)}")
    return {"lines": lines, "healthy": healthy}


def run_maintenance(settings, mode: str) -> int:
    """Switch BLOCKCHAIN_MAINTENANCE_MODE in the .env file; running processes follow within seconds."""
    path = settings.source_file
    value = "true" if mode == "on" else "false"
    lines = path.read_text().splitlines() if path.exists() else []
    kept = [line for line in lines if not line.strip().startswith("BLOCKCHAIN_MAINTENANCE_MODE=")]
    kept.append(f"BLOCKCHAIN_MAINTENANCE_MODE={value}")
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("\n".join(kept) + "\n")
    temporary.replace(path)  # atomic: a process never reads half a file
    print(f"{path}: BLOCKCHAIN_MAINTENANCE_MODE={value}; bot and worker pick it up within 5 s")
    if "BLOCKCHAIN_MAINTENANCE_MODE" in os.environ:
        print("warning: BLOCKCHAIN_MAINTENANCE_MODE is also set in the environment, which wins over .env")
    return 0


def run_recover(settings) -> int:
    """Finish what outages left: scan to the head, reopen unmatched outage deposits, settle withdrawals.

    Runs the worker's own job building blocks once, in a context built the way the worker builds its.
    """
    if settings.blockchain_maintenance_mode:
        startup.fail("recover: BLOCKCHAIN_MAINTENANCE_MODE is on; run `python dr.py maintenance off` first")
    startup.require_or_exit(settings, "TOKEN_ADDRESS", "HOT_WALLET_PRIVATE_KEY", "BOT_TOKEN")
    wctx = build_worker_context(settings, "dr-recover", rpc_breaker(settings))
    try:
        deposit_monitor = scanner.DepositMonitor(wctx)
        recorded = deposit_monitor.scan()
        reopened = scanner.finish_network_recovery(wctx, deposit_monitor)
        withdrawal_sender = sender.WithdrawalSender(wctx)
        withdrawal_sender.rebroadcast_signed()
        settled = reconciler.reconcile(wctx)
    except BreakerOpen as exc:
        startup.fail(f"recover: the RPC is unavailable ({exc}); nothing was changed beyond what is committed")
    except Exception as exc:
        log.exception("recover failed")
        startup.fail(f"recover: stopped by {type(exc).__name__}: {exc}; run it again once the cause is fixed")
    finally:
        wctx.pool.close()
    print(f"recover: {recorded} transfer(s) recorded, {reopened} outage deposit request(s) reopened, "
          f"{settled} withdrawal(s) settled")
    return 0


def run_reconcile(settings, apply: bool = False, accept_unmatched: bool = False,
                  choices: dict[int, int] | None = None) -> int:
    """List hot wallet transactions the database does not know and what they paid; record them when told.

    Exit 0 once the database accounts for every mined hot wallet transaction, 1 while some remain.
    """
    startup.require_or_exit(settings, "TOKEN_ADDRESS", "HOT_WALLET_PRIVATE_KEY", "BOT_TOKEN")
    wctx = build_worker_context(settings, "dr-reconcile", rpc_breaker(settings))
    try:
        with wctx.transaction() as conn:
            first_unknown = hot_wallet.next_nonce(conn, wctx.chain.hot_wallet)
        transactions, pending = nonce_audit.unknown_transactions(wctx.chain, first_unknown)
        with wctx.transaction() as conn:
            plan = nonce_audit.resolve(nonce_audit.match(transactions, withdrawals.unpaid(conn)), choices or {})
        print(f"hot wallet {wctx.chain.hot_wallet}: the database accounts for nonces below {first_unknown}; "
              f"{len(transactions)} mined transaction(s) after that, {pending} waiting in the mempool")
        for line in describe(wctx, plan):
            print("  " + line)
        recorded, remaining = 0, sorted(transactions, key=lambda t: t.nonce)
        if apply or accept_unmatched:
            decided_by = f"dr.py reconcile by {getpass.getuser()}"
            recorded, remaining = nonce_audit.record(wctx, plan, apply, accept_unmatched, decided_by)
    except BreakerOpen as exc:
        startup.fail(f"reconcile: the RPC is unavailable ({exc}); nothing was recorded beyond what is committed")
    except Exception as exc:  # a node that contradicts itself, a transport error: say so in one line
        log.exception("reconcile failed")
        startup.fail(f"reconcile: stopped by {type(exc).__name__}: {exc}; nothing was recorded beyond what is "
                     f"committed; run it again once the cause is fixed")
    finally:
        wctx.pool.close()
    print(reconcile_summary(recorded, remaining, pending, plan))
    return 0 if not remaining and not pending else 1


def describe(wctx, plan) -> list[str]:
    symbol, lines = wctx.token.symbol, []
    for tx, w in plan.matched:
        lines.append(f"nonce {tx.nonce} tx {tx.tx_hash} (block {tx.block}): {wctx.amount(tx.amount)} {symbol} to "
                     f"{tx.recipient} = withdrawal #{w['id']} of user {w['user_id']} ({w['status']}): MATCHED")
    for tx, candidates in plan.ambiguous:
        ids = ", ".join(f"#{w['id']} (user {w['user_id']})" for w in candidates)
        lines.append(f"nonce {tx.nonce} tx {tx.tx_hash}: {wctx.amount(tx.amount)} {symbol} to {tx.recipient} "
                     f"could be withdrawal {ids}: AMBIGUOUS, choose with --match {tx.nonce}=<withdrawal id>")
    for tx in plan.unmatched:
        what = (f"{wctx.amount(tx.amount)} {symbol} to {tx.recipient}" if tx.recipient
                else "not a token transfer")
        lines.append(f"nonce {tx.nonce} tx {tx.tx_hash} (block {tx.block}): {what}: UNMATCHED")
    return lines


def reconcile_summary(recorded: int, remaining: list, pending: int, plan) -> str:
    if not remaining and not pending:
        return f"reconcile: {recorded} recorded; the database accounts for every hot wallet transaction"
    hints = []
    if plan.matched and recorded == 0:
        hints.append("--apply records the matched ones as paid")
    if plan.unmatched:
        hints.append("--accept-unmatched accepts the unmatched ones as not ours (audited)")
    if pending:
        hints.append(f"{pending} transaction(s) still in the mempool: run again once they are mined")
    return (f"reconcile: {recorded} recorded, {len(remaining)} still unknown from nonce "
            f"{remaining[0].nonce if remaining else '-'}; withdrawals stay stopped. " + "; ".join(hints))


COMMANDS = {"migrate": run_migrate, "status": run_status, "recover": run_recover, "reconcile": run_reconcile,
            "maintenance": run_maintenance}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dr.py", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument("mode", nargs="?", choices=("on", "off"), help="for maintenance: on or off")
    parser.add_argument("--apply", action="store_true", help="reconcile: record matched transactions as paid")
    parser.add_argument("--accept-unmatched", action="store_true",
                        help="reconcile: accept transactions no withdrawal matches as not ours (audited)")
    parser.add_argument("--match", action="append", default=[], metavar="NONCE=WITHDRAWAL",
                        help="reconcile: settle an ambiguous transaction as paying this withdrawal")
    args = parser.parse_args(argv)
    if (args.command == "maintenance") != (args.mode is not None):
        parser.error("maintenance takes on|off; other commands take no argument")
    if args.command != "reconcile" and (args.apply or args.accept_unmatched or args.match):
        parser.error("--apply, --accept-unmatched and --match belong to reconcile")
    choices = parse_choices(parser, args.match)
    settings = startup.settings_or_exit("DATABASE_URL")
    if args.command == "maintenance":
        return run_maintenance(settings, args.mode)
    if args.command == "reconcile":
        return run_reconcile(settings, args.apply, args.accept_unmatched, choices)
    return COMMANDS[args.command](settings)


def parse_choices(parser, pairs: list[str]) -> dict[int, int]:
    choices = {}
    for pair in pairs:
        nonce, _, withdrawal = pair.partition("=")
        if not (nonce.isdigit() and withdrawal.lstrip("#").isdigit()):
            parser.error(f"--match takes NONCE=WITHDRAWAL_ID, not {pair!r}")
        choices[int(nonce)] = int(withdrawal.lstrip("#"))
    return choices


if __name__ == "__main__":
    sys.exit(main())
