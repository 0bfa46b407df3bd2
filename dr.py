"""Resilience pieces shared by bot and worker, and the operator CLI:
python dr.py status | recover | warmup | maintenance on|off | migrate | reconcile (each with --help).

Here: the circuit breakers and their probers, the Redis client factory, the dialog
(FSM) storage with its PostgreSQL fallback, the cache and warmup, the notification
service (Redis Stream, PostgreSQL fallback, memory buffer) and the stream consumer,
the rate limiter with its in-memory fallback, recovery, and the CLI. Imports point
down only (core, db, chain, botapi, runtime), never to bot.py or worker.py.
"""
import argparse
import collections
import contextlib
import getpass
import json
import logging
import os
import socket
import stat
import sys
import threading
import time
from urllib.parse import urlsplit

import redis
from dotenv import set_key
from eth_account import Account
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel
from telebot.storage import StateStorageBase

from chain import nonce_audit, reconciler, scanner, sender
from chain.rpc import ERC20_ABI, connect as chain_connect, is_transport_failure
from core.amounts import format_amount
from core.errors import BreakerOpen, DatabaseError, MigrationError
from core.i18n import scan_progress
from db import (blacklist, dialogs, hot_wallet, leases, levels, migrate, notifications, service_status, stats,
                system_settings, users, withdrawals)
from db.pool import connect, is_outage, open_pool, transaction
from db.watchdog import WATCHDOG
from runtime import startup
from runtime.leadership import WorkerLease
from runtime.worker_context import build_worker_context

log = logging.getLogger(__name__)

DIALOG_TTL_S = 24 * 3600  # an abandoned dialog is forgotten after a day
CACHE_TTL_S = 24 * 3600  # a cached user, blacklist, levels: each says its time when shown
REDIS_ERRORS = (redis.RedisError, OSError)
# KEYS[1] = the dialog; ARGV = value (JSON), its version, TTL seconds. Sets unless Redis holds a newer version.
REDIS_NEWER_WINS = """
local current = redis.call('GET', KEYS[1])
if current then
    local ok, decoded = pcall(cjson.decode, current)
    if ok and type(decoded) == 'table' and tonumber(decoded['version'] or 0) >= tonumber(ARGV[2]) then
        return 0
    end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
return 1
"""


def is_redis_outage(exc: BaseException) -> bool:
    """Redis gave no usable answer (refused, timed out, still loading its data, a replica refusing writes in
    a failover; no master known to the Sentinels): counts against the breaker."""
    return isinstance(exc, (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError, OSError))


def redis_key(key: tuple) -> str:
    bot_id, chat_id, user_id, thread_id, business_connection_id = key
    return f"fsm:{bot_id}:{chat_id}:{user_id}:{thread_id}:{business_connection_id}"


def redis_client(settings) -> redis.Redis:
    """A client whose every call fails within REDIS_TIMEOUT_S, with redis-py's own retries off: the
    breaker owns retrying (redis-py 8 would otherwise retry a refused connection for seconds).

    With REDIS_SENTINELS, the client of the master the Sentinels name (redis-py's Sentinel client): each new
    connection asks them, so after a failover the breaker's next probe reaches the promoted replica."""
    timeouts = {"socket_timeout": settings.redis_timeout_s, "socket_connect_timeout": settings.redis_timeout_s,
                "retry": Retry(NoBackoff(), 0)}
    if settings.redis_sentinels:
        url = urlsplit(settings.redis_url.reveal())
        sentinels = Sentinel(list(settings.redis_sentinels), sentinel_kwargs=timeouts, **timeouts)
        return sentinels.master_for(settings.redis_sentinel_service, password=url.password,
                                    db=int(url.path.strip("/") or 0), health_check_interval=0,
                                    decode_responses=True, retry_on_timeout=False, **timeouts)
    return redis.Redis.from_url(settings.redis_url.reveal(), health_check_interval=0, decode_responses=True,
                                retry_on_timeout=False, **timeouts)


class DialogStore(StateStorageBase):
    """Dialog state and data per (bot, chat, user, thread): Redis first, PostgreSQL (user_fsm_states) as fallback.

    Every write carries a version (microseconds, above any version seen for the dialog)
    and goes to each store that is up; a read takes the newer of the two copies. So a
    dialog half-way when Redis dies continues from PostgreSQL without starting over, one
    begun during the outage continues when Redis returns (recovery copies it back), and
    neither store ever takes an older version over a newer one (Redis: a compare-and-set
    script; PostgreSQL: a guarded upsert). A cleared dialog is a versioned tombstone.
    Each store sits behind its breaker: while one is down, nobody waits for it.

    get/put/clear are what the handlers use; the StateStorageBase methods let telebot
    use the same storage.
    """

    def __init__(self, client: redis.Redis, redis_breaker, pool, pg_breaker, ttl_s: int = DIALOG_TTL_S):
        super().__init__()
        self._redis = client
        self._redis_breaker = redis_breaker
        self._pool = pool
        self._pg_breaker = pg_breaker
        self.ttl_s = ttl_s
        self._compare_and_set = client.register_script(REDIS_NEWER_WINS)

    def get(self, chat_id: int, user_id: int, **where) -> tuple[str | None, dict]:
        value = self._newest(self._where(chat_id, user_id, **where))
        return (value["state"], value["data"] or {}) if value else (None, {})

    def put(self, chat_id: int, user_id: int, state: str | None, data: dict, **where) -> None:
        key = self._where(chat_id, user_id, **where)
        seen = self._newest(key)
        version = max(time.time_ns() // 1000, (seen["version"] if seen else 0) + 1)
        value = {"state": state, "data": data, "version": version}
        in_redis = self._try(self._redis_breaker, lambda: self._redis_put(key, value))
        in_pg = self._try(self._pg_breaker, lambda: self._pg_put(key, value, in_redis))
        if not (in_redis or in_pg):
            raise BreakerOpen("dialogs: neither Redis nor PostgreSQL is available")

    def clear(self, chat_id: int, user_id: int, **where) -> bool:
        existed = self.get(chat_id, user_id, **where)[0] is not None
        self.put(chat_id, user_id, None, {}, **where)
        return existed

    def copy_to_redis(self, rows: list[dict]) -> None:
        """Recovery: write these PostgreSQL rows to Redis in one pipeline, each only over an older version."""
        pipe = self._redis.pipeline(transaction=False)
        for row in rows:
            value = {"state": row["state"], "data": row["data"], "version": row["version"]}
            self._compare_and_set(keys=[redis_key(dialogs.key_of(row))],
                                  args=[json.dumps(value), row["version"], self.ttl_s], client=pipe)
        self._redis_breaker.call(pipe.execute)

    def _newest(self, key: tuple) -> dict | None:
        copies, answered = [], 0
        for breaker, read in ((self._redis_breaker, self._redis_get), (self._pg_breaker, self._pg_get)):
            try:
                copies.append(breaker.call(read, key))
                answered += 1
            except BreakerOpen:
                pass  # that store is down: the other one answers alone
            except (*REDIS_ERRORS, DatabaseError) as exc:
                log.info("dialogs: a read from %s failed: %s", breaker.name, exc)
        if not answered:
            raise BreakerOpen("dialogs: neither Redis nor PostgreSQL is available")
        return max((c for c in copies if c), key=lambda c: c["version"], default=None)

    def _redis_get(self, key: tuple) -> dict | None:
        raw = self._redis.get(redis_key(key))
        if not raw:
            return None
        value = json.loads(raw)
        return {"state": value.get("state"), "data": value.get("data") or {}, "version": value.get("version", 0)}

    def _redis_put(self, key: tuple, value: dict) -> None:
        self._compare_and_set(keys=[redis_key(key)], args=[json.dumps(value), value["version"], self.ttl_s])

    def _pg_get(self, key: tuple) -> dict | None:
        with self._pg_transaction() as conn:
            return dialogs.get(conn, key, self.ttl_s)

    def _pg_put(self, key: tuple, value: dict, in_redis: bool) -> None:
        with self._pg_transaction() as conn:
            dialogs.put(conn, key, value["state"], value["data"], value["version"], in_redis)

    def _pg_transaction(self):
        return transaction(self._pool)  # callers go through the PostgreSQL breaker already

    @staticmethod
    def _try(breaker, write) -> bool:
        try:
            breaker.call(write)
            return True
        except (BreakerOpen, *REDIS_ERRORS, DatabaseError) as exc:
            log.info("dialogs: write skipped one store: %s", exc)
            return False

    @staticmethod
    def _where(chat_id, user_id, business_connection_id=None, message_thread_id=None, bot_id=None) -> tuple:
        return (bot_id or 0, chat_id, user_id, message_thread_id or 0, business_connection_id or "")

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


class Cache:
    """Copies in Redis for when PostgreSQL is down: users (language, balance, wallet), the blacklist,
    the deposit levels and the system settings, each with its time and a TTL.

    Filled by warmup (every minute, and after a recovery) and refreshed whenever the bot
    reads a user from PostgreSQL; writers forget or replace what they changed. Every call is
    best effort: a cache that cannot be reached is a cache miss, never an error. What users
    are shown may come from here; what money is decided by never does (a deposit's level,
    a withdrawal's fee and minimum are read again in the transaction that records them),
    so a copy a racing reader left stale for up to a warmup interval misleads nobody.
    """

    USER_FIELDS = ("id", "language", "balance", "wallet_address", "blocked_bot")

    def __init__(self, client: redis.Redis, breaker, ttl_s: int = CACHE_TTL_S):
        self._redis = client
        self._breaker = breaker
        self.ttl_s = ttl_s

    def available(self) -> bool:
        return self._breaker.available()

    def put_users(self, rows: list[dict]) -> None:
        now = time.time()
        pipe = self._redis.pipeline(transaction=False)
        for row in rows:
            value = {field: row[field] for field in self.USER_FIELDS}
            pipe.set(f"cache:user:{row['id']}", json.dumps({**value, "cached_at": now}, default=str), ex=self.ttl_s)
        self._quietly(pipe.execute)

    def user(self, user_id: int) -> dict | None:
        raw = self._quietly(self._redis.get, f"cache:user:{user_id}")
        if not raw:
            return None
        value = json.loads(raw)
        value["balance"] = int(value["balance"])
        return value

    def forget_user(self, user_id: int) -> None:
        self._quietly(self._redis.delete, f"cache:user:{user_id}")

    def put_blacklist(self, user_ids: list[int]) -> None:
        """Replace the cached blacklist as a whole; only a complete copy is ever trusted."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete("cache:banned")
        if user_ids:
            pipe.sadd("cache:banned", *user_ids)
        pipe.set("cache:banned:at", time.time())
        pipe.expire("cache:banned", self.ttl_s)
        pipe.expire("cache:banned:at", self.ttl_s)
        self._quietly(pipe.execute)

    def set_banned(self, user_id: int, banned: bool) -> None:
        """Follow a ban or unban; without a complete copy there is nothing to follow."""
        command = self._redis.sadd if banned else self._redis.srem
        self._quietly(command, "cache:banned", user_id)

    def is_banned(self, user_id: int) -> bool | None:
        """True/False from a complete cached blacklist; None when there is none (or Redis is down)."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.exists("cache:banned:at")
        pipe.sismember("cache:banned", user_id)
        answer = self._quietly(pipe.execute)
        if not answer or not answer[0]:
            return None
        return bool(answer[1])

    def put_value(self, name: str, value) -> None:
        text = json.dumps({"value": value, "cached_at": time.time()}, default=str)
        self._quietly(lambda: self._redis.set(f"cache:{name}", text, ex=self.ttl_s))

    def put_levels(self, current: list) -> None:
        self.put_value("levels", [vars(level) for level in current])

    def levels(self) -> list | None:
        """The cached current deposit levels, or None on a miss."""
        cached = self.value("levels")
        return None if cached is None else [levels.Level(**row) for row in cached]

    def value(self, name: str):
        """A value put_value cached, or None on a miss (or while Redis is down)."""
        raw = self._quietly(self._redis.get, f"cache:{name}")
        return json.loads(raw)["value"] if raw else None

    def forget(self, name: str) -> None:
        self._quietly(self._redis.delete, f"cache:{name}")

    def _quietly(self, function, *args):
        try:
            return self._breaker.call(function, *args)
        except (BreakerOpen, *REDIS_ERRORS) as exc:
            log.debug("cache: %s", exc)
            return None


def warmup(cache: Cache, transaction, batch: int = 1000) -> int:
    """Copy users (in batches), the blacklist, the current deposit levels and the settings into the cache.

    `transaction` opens a (breaker-guarded) transaction: the bot's or the worker's.
    """
    if not cache.available():
        return 0  # Redis is down: recovery warms it when it returns
    warmed, after = 0, 0
    while True:
        with transaction() as conn:
            rows = users.page(conn, after, batch)
        if not rows:
            break
        cache.put_users(rows)
        warmed, after = warmed + len(rows), rows[-1]["id"]
    with transaction() as conn:
        banned = [row["user_id"] for row in blacklist.all_banned(conn)]
        current_levels = levels.current(conn)
        settings = {row["key"]: row["value"] for row in system_settings.all_settings(conn)}
    cache.put_blacklist(banned)
    cache.put_levels(current_levels)
    cache.put_value("settings", settings)
    return warmed


def migrate_dialogs(store: DialogStore, transaction, batch: int = 1000) -> int:
    """Copy dialog states written while Redis was down back into Redis, in pipelined batches; idempotent.

    Each state lands only over an older version, so a Redis that restarted with stale data
    never wins over a newer PostgreSQL copy; rows are marked migrated after Redis took them
    (killed between the two, a rerun copies again, harmlessly).
    """
    moved = 0
    while True:
        with transaction() as conn:
            rows = dialogs.unmigrated(conn, store.ttl_s, batch)
        if not rows:
            return moved
        store.copy_to_redis(rows)
        with transaction() as conn:
            dialogs.mark_migrated(conn, rows)
        moved += len(rows)


STREAM, GROUP = "notifications", "delivery"
SENT_KEY_TTL_S = 7 * 24 * 3600  # a delivered notice's key is remembered this long (no second delivery)
STREAM_LEASE_S = 60  # an entry a consumer took and did not acknowledge is taken over after this


class NotificationService:
    """Notices that are not part of a database transaction: breaker and maintenance alerts, anything sent
    while PostgreSQL is down. (A money event's notice goes to notification_outbox in its own transaction.)

    notify() puts a notice in the Redis Stream; while Redis is down, in notification_queue_fallback; while
    both are, in a buffer in memory of NOTIFY_BUFFER_MAX notices (on overflow the oldest is dropped, logged
    and counted), flushed when either returns. The caller never sees an error. The idempotency key goes
    with the notice wherever it lands; delivery sends each key once.
    """

    def __init__(self, client: redis.Redis, redis_breaker, transaction, buffer_max: int):
        self._redis = client
        self._redis_breaker = redis_breaker
        self._transaction = transaction
        self._buffer: collections.deque = collections.deque()
        self._buffer_max = buffer_max
        self._lock = threading.Lock()
        self.dropped = 0

    def notify(self, chat_id: int, text_key: str, values: dict, key: str, buttons: list | None = None) -> str:
        """Queue a notice; returns where it went: 'stream', 'fallback' or 'buffer'."""
        entry = {"chat_id": chat_id, "payload": notifications.payload_of(text_key, values, buttons), "key": key}
        self.flush()  # what waited in memory goes first
        where = self._place(entry)
        if where is None:
            self._keep(entry)
            return "buffer"
        return where

    def flush(self) -> int:
        """Move buffered notices to the stream or the fallback table, oldest first; how many moved."""
        moved = 0
        while True:
            with self._lock:
                if not self._buffer:
                    return moved
                entry = self._buffer[0]
            if self._place(entry) is None:
                return moved
            with self._lock:
                if self._buffer and self._buffer[0] is entry:
                    self._buffer.popleft()
            moved += 1

    @property
    def buffered(self) -> int:
        with self._lock:
            return len(self._buffer)

    def add_to_stream(self, entries: list[dict]) -> None:
        """XADD entries in one pipeline (through the Redis breaker); raises when Redis did not take them."""
        pipe = self._redis.pipeline(transaction=False)
        for entry in entries:
            pipe.xadd(STREAM, {"chat_id": entry["chat_id"], "payload": json.dumps(entry["payload"]),
                               "key": entry["key"]})
        self._redis_breaker.call(pipe.execute)

    def _place(self, entry: dict) -> str | None:
        try:
            self.add_to_stream([entry])
            return "stream"
        except (BreakerOpen, *REDIS_ERRORS) as exc:
            log.debug("notice %s: Redis unavailable (%s)", entry["key"], exc)
        try:
            with self._transaction() as conn:
                notifications.enqueue_payload(conn, notifications.FALLBACK, entry["chat_id"], entry["payload"],
                                              entry["key"])
            return "fallback"
        except (BreakerOpen, DatabaseError) as exc:
            log.debug("notice %s: PostgreSQL unavailable (%s)", entry["key"], exc)
        return None

    def _keep(self, entry: dict) -> None:
        with self._lock:
            self._buffer.append(entry)
            if len(self._buffer) <= self._buffer_max:
                return
            lost = self._buffer.popleft()
            self.dropped += 1
        log.error("notification buffer full (NOTIFY_BUFFER_MAX=%s): dropped notice %s to %s (%s dropped so far)",
                  self._buffer_max, lost["key"], lost["chat_id"], self.dropped)


class SentKeys:
    """Which notices were delivered, by idempotency key, so neither the stream consumer nor the fallback
    processor sends a key the other one sent (a notice Redis took just before it died may exist in both)."""

    def __init__(self, client: redis.Redis, breaker, transaction):
        self._redis = client
        self._breaker = breaker
        self._transaction = transaction

    def seen(self, key: str) -> bool:
        try:
            if self._breaker.call(self._redis.exists, f"notice:sent:{key}"):
                return True
        except (BreakerOpen, *REDIS_ERRORS):
            pass
        try:
            with self._transaction() as conn:
                return notifications.sent_in_fallback(conn, key)
        except (BreakerOpen, DatabaseError):
            return False

    def remember(self, key: str) -> None:
        try:
            self._breaker.call(self._redis.set, f"notice:sent:{key}", 1, ex=SENT_KEY_TTL_S)
        except (BreakerOpen, *REDIS_ERRORS) as exc:
            log.debug("sent key %s not remembered in Redis: %s", key, exc)


def stream_backlog(client: redis.Redis) -> int:
    """Stream entries taken by a consumer and not acknowledged yet, plus entries nobody read yet."""
    try:
        groups = client.xinfo_groups(STREAM)
    except redis.ResponseError:
        return 0  # no stream yet: nothing waits
    group = next((g for g in groups if g["name"] == GROUP), None)
    return int(group["pending"]) + int(group.get("lag") or 0) if group else 0


class StreamConsumer:
    """Deliver the notification stream: XREADGROUP new entries, take over what a dead consumer left
    (XAUTOCLAIM, looped on its cursor), XACK after the send, trim only acknowledged entries.

    At least once: an entry is acknowledged after it was sent, so a crash mid-send sends it
    again; a key already delivered (remembered in Redis) is acknowledged without a second send.
    A notice the pace or a transient failure holds back is put back at the end of the stream.
    After a failed pass the consumer first re-reads what the group holds in its own name: a
    frozen Redis runs the XREADGROUP whose answer timed out once it thaws, and those entries
    would otherwise wait out the lease.
    """

    def __init__(self, client: redis.Redis, breaker, consumer: str, send, sent_keys: SentKeys,
                 lease_s: float = STREAM_LEASE_S):
        self._redis = client
        self._breaker = breaker
        self.consumer = consumer
        self._send = send  # (chat_id, payload) -> botapi.delivery.Outcome
        self._sent_keys = sent_keys
        self._lease_ms = int(lease_s * 1000)
        self._group_ready = False
        self._unacked: dict[str, str] = {}  # sent, but Redis failed before the XACK: entry id -> key
        self._own_unread = False  # a pass failed: entries may be held in this consumer's name

    def run(self, limit: int = 50, stopping=lambda: False) -> int:
        """One pass: stale entries first, then new ones; returns how many were sent."""
        try:
            return self._pass(limit, stopping)
        except BaseException:
            self._own_unread = True
            raise

    def _pass(self, limit: int, stopping) -> int:
        self._breaker.call(self._ensure_group)
        self._ack_what_was_sent()
        entries = self._stale(limit) + self._breaker.call(self._read, limit)
        sent = 0
        for entry_id, fields in entries:
            if stopping():
                break  # unacknowledged: taken over after the lease
            sent += self._deliver(entry_id, fields)
        if entries:  # an idle pass (most of them) costs two commands, not five
            self._breaker.call(self._trim)
        return sent

    def pending(self) -> int:
        return self._breaker.call(stream_backlog, self._redis)

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            self._redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def _read(self, limit: int) -> list:
        """Entries held in this consumer's name while a failed pass may have left some, else new ones."""
        if self._own_unread:
            own = self._read_from("0", limit)
            if len(own) < limit:
                self._own_unread = False
            own = self._drop_deleted(own)
            if own:
                return own
        return self._read_new(limit)

    def _read_new(self, limit: int) -> list:
        return self._read_from(">", limit)

    def _read_from(self, start: str, limit: int) -> list:
        answer = self._redis.xreadgroup(GROUP, self.consumer, {STREAM: start}, count=limit)
        return answer[0][1] if answer else []

    def _drop_deleted(self, entries: list) -> list:
        """Acknowledge entries trimmed away under us (no fields); keep the rest."""
        gone = [entry_id for entry_id, fields in entries if not fields]
        if gone:
            self._redis.xack(STREAM, GROUP, *gone)
        return [(entry_id, fields) for entry_id, fields in entries if fields]

    def _stale(self, limit: int) -> list:
        """Entries idle past the lease in any consumer's hands, following XAUTOCLAIM's cursor to the end."""
        taken, cursor = [], "0-0"
        while len(taken) < limit:
            cursor, entries, *_ = self._breaker.call(self._redis.xautoclaim, STREAM, GROUP, self.consumer,
                                                     self._lease_ms, cursor, count=limit - len(taken))
            taken += [(entry_id, fields) for entry_id, fields in entries if fields]
            if cursor in ("0-0", b"0-0"):
                break
        return taken

    def _deliver(self, entry_id: str, fields: dict) -> int:
        key = fields["key"]
        if key in self._unacked.values() or self._sent_keys.seen(key):
            self._breaker.call(self._redis.xack, STREAM, GROUP, entry_id)
            return 0
        outcome = self._send(int(fields["chat_id"]), json.loads(fields["payload"]))
        pipe = self._redis.pipeline(transaction=True)
        if outcome.kind == "sent":
            pipe.set(f"notice:sent:{key}", 1, ex=SENT_KEY_TTL_S)
        elif not outcome.permanent:
            pipe.xadd(STREAM, fields)  # held back: to the end of the stream, the original acknowledged
        else:
            log.warning("notice %s to %s dropped: %s", key, fields["chat_id"], outcome.error)
        pipe.xack(STREAM, GROUP, entry_id)
        try:
            self._breaker.call(pipe.execute)
        except (BreakerOpen, *REDIS_ERRORS):
            if outcome.kind == "sent":
                self._unacked[entry_id] = key  # acknowledged once Redis answers; never sent again from here
            raise
        return int(outcome.kind == "sent")

    def _ack_what_was_sent(self) -> None:
        for entry_id, key in list(self._unacked.items()):
            pipe = self._redis.pipeline(transaction=True)
            pipe.set(f"notice:sent:{key}", 1, ex=SENT_KEY_TTL_S)
            pipe.xack(STREAM, GROUP, entry_id)
            self._breaker.call(pipe.execute)
            del self._unacked[entry_id]

    def _trim(self) -> None:
        """Drop entries every consumer is done with: below the oldest unacknowledged one and the group's
        read position (Redis 7.0's plain MAXLEN could drop entries nobody acknowledged)."""
        groups = self._redis.xinfo_groups(STREAM)
        group = next((g for g in groups if g["name"] == GROUP), None)
        if group is None or group["last-delivered-id"] in ("0-0", b"0-0"):
            return
        summary = self._redis.xpending(STREAM, GROUP)
        oldest = summary["min"] if summary and summary.get("pending") else None
        self._redis.xtrim(STREAM, minid=oldest or group["last-delivered-id"], approximate=False)


RECOVERY_LOCK_KEY = 7_262_013_002  # one recovery at a time across every process


@contextlib.contextmanager
def recovery_lock(settings):
    """Yield True while this process holds the recovery lock, False when another process does.

    A session advisory lock on a connection of its own: a recovery killed half-way
    releases it with its connection, and the next one simply starts over.
    """
    conn = connect(settings, "dr-recovery", autocommit=True)
    try:
        with WATCHDOG.guard(conn, settings.db_connect_timeout_s):  # a frozen server must not hang a recovery
            held = conn.execute("SELECT pg_try_advisory_lock(%s) AS held", (RECOVERY_LOCK_KEY,)).fetchone()["held"]
        yield held
    finally:
        conn.close()


def migrate_notifications(service: NotificationService, transaction, batch: int = 1000) -> int:
    """Move fallback notices nobody is sending into the stream, in batches; each row is either sent by the
    fallback processor or migrated here, never both (locked while it moves, marked MIGRATED with it)."""
    moved = 0
    while True:
        with transaction() as conn:
            rows = notifications.take_for_migration(conn, batch)
            if not rows:
                return moved
            service.add_to_stream([{"chat_id": r["chat_id"], "payload": r["payload"], "key": r["idempotency_key"]}
                                   for r in rows])
            notifications.mark_migrated(conn, [r["id"] for r in rows])
        moved += len(rows)


def recover_redis(settings, store: DialogStore, cache: Cache, transaction,
                  service: NotificationService | None = None) -> dict | None:
    """Redis is back: move fallback notices and newer dialog states into it, then warm the cache. None:
    another process is recovering right now."""
    with recovery_lock(settings) as held:
        if not held:
            log.info("recovery: another process is recovering; leaving it to that one")
            return None
        started = time.monotonic()
        done = {"notifications": migrate_notifications(service, transaction) if service else 0,
                "dialogs": migrate_dialogs(store, transaction), "users": warmup(cache, transaction)}
    log.warning("recovery: %s notice(s) and %s dialog state(s) moved to Redis, %s user(s) warmed in %.1f s",
                done["notifications"], done["dialogs"], done["users"], time.monotonic() - started)
    return done


DEPENDENCY_NAMES = {"postgresql": "PostgreSQL", "redis": "Redis", "rpc": "The blockchain RPC"}


def alert_admins_on_change(breaker, notifier: NotificationService, admin_ids, process: str) -> None:
    """Tell admins once when a dependency goes down and once when it is back (not every half-open probe).

    The key names the minute, so the bot and the worker seeing the same outage send one alert.
    """
    def changed(_breaker, old: str, new: str) -> None:
        if new == OPEN and old == CLOSED:
            text_key = "admin_dependency_down"
        elif new == CLOSED:
            text_key = "admin_dependency_back"
        else:
            return
        minute = int(time.time() // 60)
        values = {"name": DEPENDENCY_NAMES.get(breaker.name, breaker.name), "process": process,
                  "error": breaker.last_error or "no answer"}
        for admin_id in admin_ids():
            notifier.notify(admin_id, text_key, values, f"dependency:{breaker.name}:{text_key}:{minute}:{admin_id}")
    breaker.on_change(changed)


def recover_when_back(breaker, recovery) -> None:
    """Run `recovery` in a thread of its own each time `breaker` closes again (never in a handler's path)."""
    def closed(_breaker, old: str, new: str) -> None:
        if new == CLOSED and old != CLOSED:
            threading.Thread(target=guarded_recovery, args=(recovery,), name="recovery", daemon=True).start()
    breaker.on_change(closed)


def guarded_recovery(recovery) -> None:
    try:
        recovery()
    except Exception:  # the next return of Redis, the worker's warmup or `dr.py recover` tries again
        log.exception("recovery failed")


CLOSED, OPEN, HALF_OPEN = "CLOSED", "OPEN", "HALF_OPEN"
PROBE_INTERVAL_S = 0.2  # how often a prober looks at its breaker when nothing woke it


class CircuitBreaker:
    """Stop calling a dependency after consecutive failures; probe it again after a pause.

    CLOSED: calls go through; `failure_threshold` consecutive failures open it.
    OPEN: calls fail fast with BreakerOpen until `reset_timeout_s` passed (monotonic clock).
    HALF_OPEN: exactly one probe goes through; `success_threshold` successful probes close
    it, a failed one reopens it for a full period.
    Only exceptions for which `is_failure(exc)` is true count (connectivity failures, not
    "the dependency answered with an error"). No lock is held while the protected call runs.

    With `background_probe`, a Prober owns probing: ordinary calls never probe (they fail
    fast while HALF_OPEN), and after a failure they fail fast too until the prober has
    re-checked, which it does at once. So a dependency that stopped answering keeps at
    most the calls already in flight waiting for its timeout, and a single failure that
    was a blip costs users one probe's time.
    """

    def __init__(self, name: str, failure_threshold: int, reset_timeout_s: float, success_threshold: int = 1,
                 is_failure=lambda exc: True, clock=time.monotonic, background_probe: bool = False):
        self.name = name
        self._threshold = failure_threshold
        self._reset_timeout_s = reset_timeout_s
        self._success_threshold = success_threshold
        self._is_failure = is_failure
        self._clock = clock
        self.background_probe = background_probe
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failures = 0
        self._successes = 0
        self._opened_at = 0.0
        self._probing = False
        self._listeners = []
        self.wake = threading.Event()  # set on every failure: a prober re-checks at once
        self.last_error: str | None = None
        self.down_since: float | None = None  # wall clock, for people: when it last opened

    @property
    def state(self) -> str:
        with self._lock:
            return self._current()

    @property
    def suspect(self) -> bool:
        """Closed, but the last call failed: a background prober has not re-checked yet."""
        with self._lock:
            return self._state == CLOSED and self._failures > 0

    def available(self) -> bool:
        """Whether an ordinary call would be let through now (no side effects)."""
        with self._lock:
            if self.background_probe:
                return self._state == CLOSED and self._failures == 0
            return self._state == CLOSED or (self._current() == HALF_OPEN and not self._probing)

    def on_change(self, listener) -> None:
        """Call listener(breaker, old_state, new_state) after each state change (outside the lock)."""
        self._listeners.append(listener)

    def call(self, function, *args, **kwargs):
        self._admit()
        try:
            result = function(*args, **kwargs)
        except BaseException as exc:
            self._record(failed=self._is_failure(exc), error=exc)
            raise
        if not self._healthy():
            self._record(failed=False)
        return result

    @contextlib.contextmanager
    def guard(self):
        """The body of a with-block as one protected call."""
        self._admit()
        try:
            yield
        except BaseException as exc:
            self._record(failed=self._is_failure(exc), error=exc)
            raise
        if not self._healthy():
            self._record(failed=False)

    def _healthy(self) -> bool:
        """CLOSED with no failure counted: a call may pass, and a success changes nothing. Read without the
        lock (the fast path of every call): a change racing this read acts as if it came a moment later."""
        return self._state == CLOSED and self._failures == 0

    def probe(self, function) -> bool | None:
        """For a Prober: run `function` as the probe if one is due; True/False: its outcome, None: not due."""
        with self._lock:
            due = (self._current() == HALF_OPEN or (self._state == CLOSED and self._failures > 0))
            if not due or self._probing:
                return None
            before = self._state
            if before == OPEN:
                self._state = HALF_OPEN
            self._probing = True
        self._notify(before)
        try:
            function()
        except BaseException as exc:
            self._record(failed=True, error=exc)
            return False
        self._record(failed=False)
        return True

    def _current(self) -> str:
        if self._state == OPEN and self._clock() - self._opened_at >= self._reset_timeout_s:
            return HALF_OPEN
        return self._state

    def _admit(self) -> None:
        if self._healthy():
            return
        with self._lock:
            state = self._current()
            if state == CLOSED and not (self.background_probe and self._failures):
                return
            if state == HALF_OPEN and not self.background_probe and not self._probing:
                self._state, self._probing = HALF_OPEN, True  # this caller is the one probe
                return
            detail = "being re-checked" if state == CLOSED else (self.last_error or "recent failures")
        raise BreakerOpen(f"{self.name} is unavailable ({detail})")

    def _record(self, failed: bool, error: BaseException | None = None) -> None:
        with self._lock:
            before = self._state
            probing, self._probing = self._probing, False
            if failed:
                self._failures += 1
                self._successes = 0
                self.last_error = type(error).__name__ if error else None
                if probing and before == HALF_OPEN or self._failures >= self._threshold:
                    self._state, self._opened_at = OPEN, self._clock()
                    if before == CLOSED:
                        self.down_since = time.time()
            elif before == HALF_OPEN and probing:
                self._successes += 1
                if self._successes >= self._success_threshold:
                    self._state, self._failures, self._successes = CLOSED, 0, 0
            elif before == CLOSED:
                self._failures = 0
        if failed:
            self.wake.set()
        self._notify(before)

    def _notify(self, before: str) -> None:
        after = self.state
        if after == before:
            return
        level = logging.WARNING if CLOSED in (before, after) else logging.INFO  # a long outage cycles quietly
        log.log(level, "%s breaker %s -> %s%s", self.name, before, after,
                f" ({self.last_error})" if after == OPEN else "")
        for listener in self._listeners:
            try:
                listener(self, before, after)
            except Exception:  # a listener must never break the protected call
                log.exception("%s breaker listener failed", self.name)


class Prober(threading.Thread):
    """Re-checks one dependency for its breaker: at once after a failure, when HALF_OPEN is due."""

    def __init__(self, breaker: CircuitBreaker, check, stop: threading.Event):
        super().__init__(name=f"probe-{breaker.name}", daemon=True)
        self.breaker, self.check, self.stop = breaker, check, stop

    def run(self) -> None:
        while not self.stop.is_set():
            self.breaker.wake.wait(PROBE_INTERVAL_S)
            self.breaker.wake.clear()
            if self.stop.is_set():
                return
            try:
                self.breaker.probe(self.check)
            except Exception:  # keep probing whatever happens
                log.exception("probe of %s failed unexpectedly", self.breaker.name)


def breaker_for(name: str, settings, is_failure, background_probe: bool = False) -> CircuitBreaker:
    """A breaker tuned by BREAKER_FAILURES, BREAKER_RESET_S and BREAKER_SUCCESSES."""
    return CircuitBreaker(name, settings.breaker_failures, settings.breaker_reset_s, settings.breaker_successes,
                          is_failure=is_failure, background_probe=background_probe)


def rpc_breaker(settings, background_probe: bool = False) -> CircuitBreaker:
    """The breaker that guards every call to the RPC node; only transport failures count."""
    return breaker_for("rpc", settings, is_transport_failure, background_probe)


def redis_breaker(settings, background_probe: bool = False) -> CircuitBreaker:
    """The breaker every Redis user goes through (dialogs, rate limiter, cache, notification stream)."""
    return breaker_for("redis", settings, is_redis_outage, background_probe)


def redis_check(client: redis.Redis):
    return client.ping


def pg_breaker(settings, background_probe: bool = False) -> CircuitBreaker:
    """The breaker that guards every transaction; only connectivity failures count (db.pool.is_outage)."""
    return breaker_for("postgresql", settings, is_outage, background_probe)


def pg_check(pool):
    """A probe of PostgreSQL through the process's own pool, so the breaker closes only once the pool can
    hand out working connections again (its reconnect backoff over); bounded by DB_POOL_TIMEOUT_S and the
    watchdog."""
    def check() -> None:
        with transaction(pool) as conn:
            conn.execute("SELECT 1")
    return check


def rpc_check(chain):
    """A probe of the node that bypasses the breaker it decides about (bounded by RPC_TIMEOUT_S)."""
    return lambda: chain.w3.eth.block_number


def write_status_file(state_dir, process: str, breakers, extra: dict | None = None) -> None:
    """STATE_DIR/<process>.json, written atomically: each breaker's state, a heartbeat, `extra`.

    `dr.py status` reads it; it needs no dependency, so it tells the truth while all are down.
    """
    report = {**(extra or {}), "process": process, "pid": os.getpid(), "heartbeat": time.time(),
              "breakers": {b.name: {"state": b.state, "last_error": b.last_error, "down_since": b.down_since}
                           for b in breakers}}
    state_dir.mkdir(parents=True, exist_ok=True)
    temporary = state_dir / f"{process}.json.tmp"
    temporary.write_text(json.dumps(report))
    temporary.replace(state_dir / f"{process}.json")


def start_probers(stop: threading.Event, *pairs) -> None:
    """One background prober per (breaker, check)."""
    for breaker, check in pairs:
        Prober(breaker, check, stop).start()


ALLOW, WARN, DROP = "ALLOW", "WARN", "DROP"
LOCAL_WINDOWS_MAX = 10_000  # in-memory rate-limit windows kept while Redis is down


class RateLimiter:
    """Fixed-window counter per user: ALLOW up to the limit, WARN once past it, then DROP.

    Counts live in Redis so bot restarts do not reset them; while the Redis breaker is
    open the same counting happens in memory (at most LOCAL_WINDOWS_MAX windows, oldest
    dropped first, however many users write), so a flood is still cut off. `limits()`
    gives (updates, window seconds) at each hit, so live .env edits apply at once.
    """

    def __init__(self, client: redis.Redis, breaker, limits, clock=time.time):
        self._redis = client
        self._breaker = breaker
        self._limits = limits
        self._clock = clock
        self._local: collections.OrderedDict[tuple[int, int], int] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._in_memory = False

    def hit(self, user_id: int) -> str:
        limit, window_s = self._limits()
        window = int(self._clock() // window_s)
        try:
            count = self._breaker.call(self._count_in_redis, user_id, window, window_s)
            self._switch(in_memory=False, why="Redis is back")
        except (BreakerOpen, *REDIS_ERRORS) as exc:
            self._switch(in_memory=True, why=f"Redis unavailable ({type(exc).__name__})")
            count = self._count_in_memory(user_id, window)
        if count <= limit:
            return ALLOW
        return WARN if count == limit + 1 else DROP

    def _switch(self, in_memory: bool, why: str) -> None:
        """Log once per switch, not per request."""
        with self._lock:
            if self._in_memory == in_memory:
                return
            self._in_memory = in_memory
        log.warning("rate limiter: %s, counting %s", why, "in memory" if in_memory else "in Redis again")

    def _count_in_redis(self, user_id: int, window: int, window_s: int) -> int:
        key = f"rl:{user_id}:{window_s}:{window}"
        pipe = self._redis.pipeline()
        pipe.incr(key)
        pipe.expire(key, window_s * 2)
        return int(pipe.execute()[0])

    def _count_in_memory(self, user_id: int, window: int) -> int:
        with self._lock:
            key = (user_id, window)
            count = self._local.pop(key, 0) + 1
            self._local[key] = count  # most recent last
            while len(self._local) > LOCAL_WINDOWS_MAX:
                self._local.popitem(last=False)
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


HEALTHY, DEGRADED, CRITICAL = 0, 1, 3  # dr.py status exit codes (2: a usage or configuration error)
HEARTBEAT_STALE_S = 15
NOTICE_STUCK_S = 300  # a queued notice older than this means delivery is not draining
PROCESSES = ("bot", "worker")


def run_status(settings, as_json: bool = False) -> int:
    """Probe every dependency now, read each process's status file, and report; exit 0/1/3."""
    report = collect_status(settings)
    if as_json:
        print(json.dumps(report, indent=2, default=str))
    else:
        for line in render_status(report):
            print(line)
    return report["exit_code"]


def collect_status(settings) -> dict:
    """Everything `dr.py status` shows, as data; each part says what it could not reach."""
    report = {"dependencies": probe_dependencies(settings), "processes": read_status_files(settings.state_dir),
              "maintenance": "on" if settings.blockchain_maintenance_mode else "off", "problems": []}
    if report["dependencies"]["postgresql"]["up"]:
        try:
            with connect(settings, "dr-status", autocommit=True) as conn:
                report["schema_pending"] = len(migrate.pending(conn, migrate.discover()))
                report["database"] = database_report(conn)
        except (MigrationError, DatabaseError) as exc:
            report["dependencies"]["postgresql"] = {"up": False, "error": str(exc)}
    if report["dependencies"]["redis"]["up"]:
        report["stream_waiting"] = stream_waiting(settings)
    report["chain"] = chain_report(settings, report)
    report["problems"] += problems_of(report)
    report["exit_code"] = exit_code_of(report)
    return report


def probe_dependencies(settings) -> dict:
    """PostgreSQL, Redis and the RPC, each asked now and bounded by its own timeout."""
    def postgresql():
        with connect(settings, "dr-status-probe", autocommit=True) as conn:
            conn.execute("SELECT 1")

    def redis_ping():
        client = redis_client(settings)
        try:
            client.ping()
        finally:
            client.close()

    def rpc():
        return chain_connect(settings).eth.block_number

    found = {}
    for name, check in (("postgresql", postgresql), ("redis", redis_ping), ("rpc", rpc)):
        try:
            value = check()
            found[name] = {"up": True, **({"head": value} if name == "rpc" else {})}
        except Exception as exc:  # any failure to answer is the finding
            found[name] = {"up": False, "error": type(exc).__name__}
    return found


def read_status_files(state_dir) -> dict:
    """Each process's last report (STATE_DIR/<process>.json): breakers, heartbeat age; None if none."""
    found = {}
    for process in PROCESSES:
        try:
            report = json.loads((state_dir / f"{process}.json").read_text())
        except (OSError, ValueError):
            found[process] = None
            continue
        report["age_s"] = round(time.time() - report.get("heartbeat", 0), 1)
        report["alive"] = report["age_s"] < HEARTBEAT_STALE_S
        found[process] = report
    return found


def database_report(conn) -> dict:
    """Queues, money in flight and the worker's chain view, from PostgreSQL."""
    rpc = service_status.get(conn, "rpc")
    nonce = service_status.get(conn, "hot_wallet_nonce")
    wallet = service_status.get(conn, "hot_wallet")
    return {
        "queues": stats.queues(conn, DIALOG_TTL_S, NOTICE_STUCK_S),
        "worker_rpc": rpc["status"] if rpc else None,
        "nonce_gap": nonce["status"] if nonce and nonce["status"].get("ahead") else None,
        "funds_short": wallet["status"] if wallet and wallet["status"].get("short") else None,
        "withdrawal_problems": withdrawals.with_problems(conn),
        "summary": stats.summary(conn),
        "liabilities": stats.liabilities(conn),
        "worker_lease": leases.current(conn),
    }


def stream_waiting(settings) -> int | None:
    client = redis_client(settings)
    try:
        return stream_backlog(client)
    except REDIS_ERRORS:
        return None
    finally:
        client.close()


def chain_report(settings, report: dict) -> dict:
    """Scan lag and the hot wallet's solvency, when the RPC answers and the token is configured."""
    found = {}
    worker_rpc = (report.get("database") or {}).get("worker_rpc") or {}
    head = report["dependencies"]["rpc"].get("head")
    if head is not None and worker_rpc.get("scanned_block") is not None:
        found["scan_lag_blocks"] = max(head - worker_rpc["scanned_block"], 0)
    liabilities = (report.get("database") or {}).get("liabilities")
    if head is None or not settings.token_address or not settings.hot_wallet_private_key or liabilities is None:
        return found
    try:
        w3 = chain_connect(settings)
        token = w3.eth.contract(address=w3.to_checksum_address(settings.token_address), abi=ERC20_ABI)
        hot_wallet = Account.from_key(settings.hot_wallet_private_key.reveal()).address
        found["hot_wallet"] = {"address": hot_wallet, "token_balance": token.functions.balanceOf(hot_wallet).call(),
                               "native_balance": w3.eth.get_balance(hot_wallet),
                               "decimals": token.functions.decimals().call()}
        found["solvent"] = found["hot_wallet"]["token_balance"] >= liabilities["total"]
    except Exception as exc:
        found["hot_wallet_error"] = type(exc).__name__
    return found


def problems_of(report: dict) -> list[str]:
    """What needs attention, in operator words."""
    problems = []
    for name, state in report["dependencies"].items():
        if not state["up"]:
            problems.append(f"{DEPENDENCY_NAMES[name]} does not answer ({state['error']})")
    for process, status in report["processes"].items():
        if status is None:
            problems.append(f"{process}: no status file (is {process}.py running?)")
        elif not status["alive"]:
            problems.append(f"{process}: last heartbeat {status['age_s']:.0f} s ago (stopped or hung)")
        else:
            for name, breaker in status["breakers"].items():
                if breaker["state"] != CLOSED:
                    problems.append(f"{process} sees {DEPENDENCY_NAMES.get(name, name)} {breaker_words(breaker)}")
    database = report.get("database")
    if database:
        if database["nonce_gap"]:
            gap = database["nonce_gap"]
            problems.append(f"hot wallet: PROBLEM: the chain shows {gap['unknown']} transaction(s) the database does "
                            f"not know (chain nonce {gap['chain_nonce']}, database {gap['known_next']}); withdrawals "
                            f"are stopped until `python dr.py reconcile`")
        if database["funds_short"]:
            problems.append(f"hot wallet: SHORT of funds for withdrawal #{database['funds_short'].get('withdrawal')}")
        if not (database["worker_lease"] or {}).get("live"):
            problems.append("no worker holds the lease: deposits, withdrawals and notices wait")
        scan_problem = (database["worker_rpc"] or {}).get("scan_problem")
        if scan_problem:
            problems.append(f"deposit scan: PROBLEM: {scan_problem}")
        if database["queues"]["stuck_notices"]:
            problems.append(f"{database['queues']['stuck_notices']} notice(s) waiting more than "
                            f"{NOTICE_STUCK_S // 60} minutes: delivery is not draining")
    if report.get("schema_pending"):
        problems.append(f"{report['schema_pending']} migration(s) pending: run `python dr.py migrate`")
    if report["chain"].get("solvent") is False:
        problems.append("hot wallet: holds less than users' balances plus withdrawals in flight")
    return problems


def breaker_words(breaker: dict) -> str:
    """'down since 12:03 (breaker open)' rather than a state name."""
    since = time.strftime("%H:%M", time.localtime(breaker["down_since"])) if breaker.get("down_since") else "?"
    if breaker["state"] == OPEN:
        return f"down since {since} (breaker open, {breaker.get('last_error') or 'no answer'})"
    return f"down since {since}, being re-checked (breaker half-open)"


def exit_code_of(report: dict) -> int:
    alive = [s for s in report["processes"].values() if s and s["alive"]]
    if not report["dependencies"]["postgresql"]["up"] or not alive:
        return CRITICAL
    return DEGRADED if report["problems"] else HEALTHY


def lease_words(lease: dict | None) -> str:
    """Which worker is active, from the lease row."""
    if lease is None:
        return "worker lease: never taken (no worker has run)"
    if lease["live"]:
        return (f"worker lease: held by {lease['holder']} (epoch {lease['epoch']}; it expires in "
                f"{max(lease['expires_in_s'], 0):.0f} s unless renewed)")
    return f"worker lease: free (last held by {lease['holder']}, epoch {lease['epoch']}): no worker is active"


def memory_buffer_words(status: dict) -> str:
    """What a process keeps in memory while both stores are down, and what it had to drop since it started."""
    buffered, dropped = status.get("notices_buffered", 0), status.get("notices_dropped", 0)
    words = ([f"{buffered} notice(s) kept in memory"] if buffered else []) + \
        ([f"{dropped} notice(s) dropped since start (NOTIFY_BUFFER_MAX reached; see its log)"] if dropped else [])
    return "; " + "; ".join(words) if words else ""


def render_status(report: dict) -> list[str]:
    """One screen for a person."""
    lines = []
    for name, state in report["dependencies"].items():
        lines.append(f"{DEPENDENCY_NAMES[name]}: " + ("healthy" if state["up"] else f"DOWN ({state['error']})"))
    for process, status in report["processes"].items():
        if status is None:
            lines.append(f"{process}: no status file")
            continue
        seen = ", ".join(f"{DEPENDENCY_NAMES.get(n, n)} {'healthy' if b['state'] == CLOSED else breaker_words(b)}"
                         for n, b in status["breakers"].items())
        alive = "alive" if status["alive"] else "STALE"
        role = f" ({status['lease']['role']})" if status.get("lease") else ""
        lines.append(f"{process}: {alive}{role}, heartbeat {status['age_s']:.0f} s ago; sees {seen}"
                     + memory_buffer_words(status))
    automatic = any(s and s["alive"] and s["breakers"].get("rpc", {}).get("state") not in (None, CLOSED)
                    for s in report["processes"].values())
    lines.append(f"maintenance (BLOCKCHAIN_MAINTENANCE_MODE): {report['maintenance']}"
                 + ("; automatic: the RPC is failing" if automatic else ""))
    database = report.get("database")
    if database:
        queues = database["queues"]
        lines.append(f"queues: notices to send {queues['outbox']} (money events), {queues['fallback']} in "
                     f"PostgreSQL fallback, {report.get('stream_waiting', 'unknown')} in the Redis stream; "
                     f"dialog states waiting for Redis {queues['dialogs']}; deposits waiting for the network "
                     f"{queues['network_recovery']}; withdrawals approved {queues['approved']}, signed or sent "
                     f"{queues['in_flight']}")
        lines.append(lease_words(database["worker_lease"]))
        if database["worker_rpc"]:
            lines.append("deposit scan: " + scan_progress(database["worker_rpc"], "en")
                         + (f"; {report['chain']['scan_lag_blocks']} block(s) behind the head"
                            if "scan_lag_blocks" in report["chain"] else ""))
        for row in database["withdrawal_problems"]:
            lines.append(f"withdrawal #{row['id']} ({row['status']}): {row['problem']}")
        summary = database["summary"]
        lines.append("deposits: " + (", ".join(f"{k} {v}" for k, v in summary["deposits"].items()) or "none"))
        lines.append("withdrawals: " + (", ".join(f"{k} {v}" for k, v in summary["withdrawals"].items()) or "none"))
    wallet = report["chain"].get("hot_wallet")
    if wallet:
        owed = database["liabilities"]
        lines.append(f"hot wallet {wallet['address']}: {format_amount(wallet['token_balance'], wallet['decimals'])} "
                     f"tokens for {format_amount(owed['total'], wallet['decimals'])} owed (balances "
                     f"{format_amount(owed['balances'], wallet['decimals'])} + withdrawals in flight "
                     f"{format_amount(owed['withdrawals'], wallet['decimals'])}); "
                     f"{wallet['native_balance']} wei for gas")
    lines += [f"PROBLEM: {problem}" for problem in report["problems"]]
    verdict = {HEALTHY: "healthy", DEGRADED: "degraded", CRITICAL: "CRITICAL"}[report["exit_code"]]
    lines.append(f"overall: {verdict}")
    return lines


def run_maintenance(settings, mode: str) -> int:
    """Set BLOCKCHAIN_MAINTENANCE_MODE in the .env file in place; running processes follow within seconds.

    python-dotenv's set_key rewrites only that line (added at the end if missing), keeps
    every other line and comment, and replaces the file atomically; its owner and mode
    are put back, so the service user can still read it.
    """
    path = settings.source_file
    value = "true" if mode == "on" else "false"
    if not path.parent.is_dir():
        startup.fail(f"maintenance: cannot write {path}: the directory {path.parent} does not exist "
                     f"(set ENV_FILE to the bot's .env)", 2)
    before = path.stat() if path.exists() else None
    try:
        set_key(path, "BLOCKCHAIN_MAINTENANCE_MODE", value, quote_mode="never")
        if before is not None:
            os.chmod(path, stat.S_IMODE(before.st_mode))
            if (before.st_uid, before.st_gid) != (os.getuid(), os.getgid()):
                os.chown(path, before.st_uid, before.st_gid)
    except OSError as exc:
        startup.fail(f"maintenance: cannot write {path}: {exc.strerror}", 1)
    print(f"{path}: BLOCKCHAIN_MAINTENANCE_MODE={value}; bot and worker pick it up within 5 s")
    if "BLOCKCHAIN_MAINTENANCE_MODE" in os.environ:
        print("warning: BLOCKCHAIN_MAINTENANCE_MODE is also set in the environment, which wins over .env")
    return 0


def run_warmup(settings) -> int:
    """Copy users, the blacklist, levels and settings from PostgreSQL into the Redis cache."""
    pool = open_pool(settings, "dr-warmup")
    try:
        client = redis_client(settings)
        cache = Cache(client, redis_breaker(settings))
        if not probe_now(redis_check(client)):
            startup.fail("warmup: Redis does not answer; nothing was warmed")
        warmed = warmup(cache, lambda: transaction(pool))
    except DatabaseError as exc:
        startup.fail(f"warmup: PostgreSQL does not answer ({exc}); nothing was warmed")
    finally:
        pool.close()
    print(f"warmup: {warmed} user(s), the blacklist, deposit levels and settings cached")
    return 0


def run_recover(settings, dry_run: bool = False) -> int:
    """Finish what outages left: move fallback notices and newer dialog states into Redis, warm the cache,
    then the chain side (scan to the head, reopen unmatched outage deposits, settle withdrawals).

    Runs the worker's own building blocks once, in a context built the way the worker builds its.
    """
    if settings.blockchain_maintenance_mode and not dry_run:
        startup.fail("recover: BLOCKCHAIN_MAINTENANCE_MODE is on; run `python dr.py maintenance off` first")
    if dry_run:
        return print_recovery_plan(settings)
    startup.require_or_exit(settings, "TOKEN_ADDRESS", "HOT_WALLET_PRIVATE_KEY")
    wctx = build_worker_context(settings, "dr-recover", rpc_breaker(settings), pg_breaker(settings))
    started, stop, lease_thread = time.monotonic(), threading.Event(), None
    try:
        redis_part = recover_redis_by_hand(settings, wctx)
        lease_thread = take_worker_lease(wctx, stop)
        if lease_thread is None:
            print(f"recover: {redis_part}")
            return 1
        progress("chain: scanning deposits", started)
        deposit_monitor = scanner.DepositMonitor(wctx)
        recorded = deposit_monitor.scan()
        reopened = scanner.finish_network_recovery(wctx, deposit_monitor)
        progress("chain: re-sending signed withdrawals and settling receipts", started)
        withdrawal_sender = sender.WithdrawalSender(wctx)
        withdrawal_sender.rebroadcast_signed()
        settled = reconciler.reconcile(wctx)
    except BreakerOpen as exc:
        startup.fail(f"recover: a dependency is unavailable ({exc}); nothing was changed beyond what is committed")
    except Exception as exc:
        log.exception("recover failed")
        startup.fail(f"recover: stopped by {type(exc).__name__}: {exc}; run it again once the cause is fixed")
    finally:
        stop.set()
        if lease_thread is not None:
            lease_thread.join(timeout=10)  # it lets the lease go, so the worker need not wait for it to expire
        wctx.pool.close()
    print(f"recover: {redis_part}; {recorded} transfer(s) recorded, {reopened} outage deposit request(s) "
          f"reopened, {settled} withdrawal(s) settled in {time.monotonic() - started:.1f} s")
    return 0


def take_worker_lease(wctx, stop: threading.Event) -> threading.Thread | None:
    """The chain side acts like the worker, so it needs the worker lease; refuse (and say who has it) while a
    worker holds it. Renewed by the thread returned until `stop`, then released."""
    lease = WorkerLease(wctx.transaction, site=f"dr-recover:{socket.gethostname()}:{os.getpid()}")
    if not lease.renew():
        with wctx.transaction() as conn:
            holder = leases.current(conn)
        print(f"recover: the chain side was not run: {holder['holder']} holds the worker lease (epoch "
              f"{holder['epoch']}, {max(holder['expires_in_s'], 0):.0f} s left) and does this work itself; stop that "
              f"worker (systemctl stop worker) to run it by hand", file=sys.stderr)
        return None
    wctx.lease = lease
    thread = threading.Thread(target=lease.keep, args=(stop,), name="dr-recover-lease", daemon=True)
    thread.start()
    return thread


def recover_redis_by_hand(settings, wctx) -> str:
    """The Redis side of `dr.py recover`: skipped, with a word why, when Redis is down or another process
    recovers right now."""
    client = redis_client(settings)
    breaker = redis_breaker(settings)
    if not probe_now(redis_check(client)):
        return "Redis does not answer: notices and dialog states stay in PostgreSQL for now"
    service = NotificationService(client, breaker, wctx.transaction, settings.notify_buffer_max)
    store = DialogStore(client, breaker, wctx.pool, wctx.pg_breaker)
    done = recover_redis(settings, store, Cache(client, breaker), wctx.transaction, service)
    if done is None:
        return "another process is moving data into Redis right now"
    return (f"{done['notifications']} notice(s) and {done['dialogs']} dialog state(s) moved to Redis, "
            f"{done['users']} user(s) cached")


def print_recovery_plan(settings) -> int:
    """--dry-run: what recover would move and finish, counted, changing nothing."""
    try:
        with connect(settings, "dr-recover-plan", autocommit=True) as conn:
            queues = stats.queues(conn, DIALOG_TTL_S, NOTICE_STUCK_S)
    except DatabaseError as exc:
        startup.fail(f"recover --dry-run: PostgreSQL does not answer ({exc})")
    print(f"recover would move {queues['fallback']} notice(s) and {queues['dialogs']} dialog state(s) to Redis, "
          f"warm the cache, rescan for {queues['network_recovery']} deposit(s) waiting for the network and settle "
          f"{queues['in_flight']} withdrawal(s) signed or sent; nothing was changed")
    return 0


def probe_now(check) -> bool:
    try:
        check()
        return True
    except Exception:
        return False


def progress(step: str, started: float) -> None:
    print(f"recover: {step} ({time.monotonic() - started:.1f} s)", flush=True)


def run_reconcile(settings, apply: bool = False, accept_unmatched: bool = False,
                  choices: dict[int, int] | None = None) -> int:
    """List hot wallet transactions the database does not know and what they paid; record them when told.

    Exit 0 once the database accounts for every mined hot wallet transaction, 1 while some remain.
    """
    startup.require_or_exit(settings, "TOKEN_ADDRESS", "HOT_WALLET_PRIVATE_KEY")
    wctx = build_worker_context(settings, "dr-reconcile", rpc_breaker(settings), pg_breaker(settings))
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


HELP = {
    "status": ("Show what is up and what waits: each dependency probed now, each process's breakers and "
               "heartbeat (STATE_DIR), maintenance, queue depths, scan lag, the hot wallet's solvency. Needs "
               "DATABASE_URL (works while PostgreSQL is down, saying so). Changes nothing. Exit 0 healthy, "
               "1 degraded, 3 critical (PostgreSQL unreachable or no process alive), 2 usage error."),
    "recover": ("Finish what outages left, once: notices and dialog states written while Redis was down move "
                "into Redis, the cache is warmed, deposits are scanned to the head, outage requests reopened, "
                "signed withdrawals re-sent (the same bytes) and settled. Needs DATABASE_URL, TOKEN_ADDRESS, "
                "HOT_WALLET_PRIVATE_KEY, RPC_URL. Idempotent, safe beside the running worker."),
    "warmup": "Copy users, the blacklist, levels and settings into the Redis cache. Needs DATABASE_URL, REDIS_URL.",
    "maintenance": ("Set BLOCKCHAIN_MAINTENANCE_MODE=true|false in the .env file (ENV_FILE) in place; bot and "
                    "worker follow within 5 s. Needs nothing else. Changes that one line."),
    "migrate": "Apply pending schema migrations in order. Needs DATABASE_URL. Changes the schema.",
    "reconcile": ("After a database restore: list hot wallet transactions the database does not know and what "
                  "they paid; --apply / --accept-unmatched / --match record them (audited). Needs DATABASE_URL, "
                  "TOKEN_ADDRESS, HOT_WALLET_PRIVATE_KEY, RPC_URL. Exit 0 once everything is accounted for."),
}
NEEDS = {"status": ("DATABASE_URL",), "recover": ("DATABASE_URL",), "warmup": ("DATABASE_URL",),
         "maintenance": (), "migrate": ("DATABASE_URL",), "reconcile": ("DATABASE_URL",)}


def parser_of() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dr.py", description="The operator's disaster-recovery commands.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in HELP.items():
        command = commands.add_parser(name, help=text.split(":")[0].split(".")[0], description=text)
        if name == "status":
            command.add_argument("--json", action="store_true", help="print the report as JSON")
        if name == "recover":
            command.add_argument("--dry-run", action="store_true", help="count what would be done; change nothing")
        if name == "maintenance":
            command.add_argument("mode", choices=("on", "off"))
        if name == "reconcile":
            command.add_argument("--apply", action="store_true", help="record matched transactions as paid")
            command.add_argument("--accept-unmatched", action="store_true",
                                 help="accept transactions no withdrawal matches as not ours (audited)")
            command.add_argument("--match", action="append", default=[], metavar="NONCE=WITHDRAWAL",
                                 help="settle an ambiguous transaction as paying this withdrawal")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = parser_of()
    args = parser.parse_args(argv)
    choices = parse_choices(parser, getattr(args, "match", []))
    settings = startup.settings_or_exit(*NEEDS[args.command])
    if args.command == "maintenance":
        return run_maintenance(settings, args.mode)
    if args.command == "status":
        return run_status(settings, args.json)
    if args.command == "recover":
        return run_recover(settings, args.dry_run)
    if args.command == "reconcile":
        return run_reconcile(settings, args.apply, args.accept_unmatched, choices)
    return {"migrate": run_migrate, "warmup": run_warmup}[args.command](settings)


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
