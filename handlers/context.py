"""What every handler needs, in one object: settings, storage, the token, and ways to reply."""
import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field

from telebot import TeleBot

from botapi import client
from chain.rpc import Chain, is_transport_failure
from chain.token import TokenInfo
from core.amounts import format_amount
from core.i18n import t
from core.settings import SettingsWatcher
from core.errors import BreakerOpen
from db import levels, service_status, system_settings, users
from db.pool import transaction
from dr import DialogStore, RateLimiter

log = logging.getLogger(__name__)

CHAIN_STATUS_CACHE_S = 2.0
WORKER_STATUS_FRESH_S = 60  # an older report (worker stopped) no longer pauses anything
MANUAL, AUTOMATIC = "manual", "automatic"


@dataclass
class Context:
    bot: TeleBot
    watcher: SettingsWatcher
    pool: object
    redis: object
    dialogs: DialogStore
    limiter: RateLimiter
    token: TokenInfo
    chain: Chain
    pg_breaker: object = None
    redis_breaker: object = None
    cache: object = None
    bot_id: int = 0
    _chain_status: tuple = field(default=(0.0, None), repr=False)
    _chain_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def settings(self):
        """Current settings; .env edits show up here within seconds."""
        return self.watcher.current()

    @contextlib.contextmanager
    def transaction(self):
        """One transaction through the PostgreSQL breaker: BreakerOpen at once while it is open."""
        with self.pg_breaker.guard():
            with transaction(self.pool) as conn:
                yield conn

    def is_admin(self, user_id: int) -> bool:
        return user_id in self.settings.admin_ids

    def chain_pause(self) -> tuple[str, str] | None:
        """Why chain work is paused: (MANUAL, '') for BLOCKCHAIN_MAINTENANCE_MODE, (AUTOMATIC,
        breaker state) while the worker reports its RPC breaker not CLOSED; None when it runs."""
        if self.settings.blockchain_maintenance_mode:
            return MANUAL, ""
        status = self.worker_rpc_status()
        if status and status.get("breaker") not in (None, "CLOSED"):
            return AUTOMATIC, status["breaker"]
        return None

    def worker_rpc_status(self) -> dict | None:
        """The worker's latest RPC report if fresh, cached for a moment (read on every /withdraw)."""
        with self._chain_lock:
            read_at, status = self._chain_status
            if time.monotonic() - read_at < CHAIN_STATUS_CACHE_S:
                return status
            with self.transaction() as conn:
                row = service_status.get(conn, "rpc")
            fresh = row and row["age"].total_seconds() < WORKER_STATUS_FRESH_S
            status = row["status"] if fresh else None
            self._chain_status = (time.monotonic(), status)
            return status

    def chain_head(self) -> int | None:
        """The chain's current block number, or None while chain work is paused or the node does not answer."""
        if self.chain_pause():
            return None
        try:
            return self.chain.head()
        except BreakerOpen:
            return None
        except Exception as exc:
            if is_transport_failure(exc):
                log.warning("chain head unavailable (%s)", type(exc).__name__)
                return None
            raise

    # --- read-mostly values shown to users: the cache first, PostgreSQL on a miss
    def current_levels(self) -> list[levels.Level]:
        current = self.cache.levels()
        if current is None:
            with self.transaction() as conn:
                current = levels.current(conn)
            self.cache.put_levels(current)
        return current

    def system_setting(self, key: str, default=None):
        cached = self.cache.value("settings")
        if cached is None:
            with self.transaction() as conn:
                cached = {row["key"]: row["value"] for row in system_settings.all_settings(conn)}
            self.cache.put_value("settings", cached)
        return cached.get(key, default)

    def amount(self, units: int) -> str:
        return format_amount(int(units), self.token.decimals)

    # --- dialogs (keyed by chat and user)
    def dialog(self, chat_id: int, user_id: int) -> tuple[str | None, dict]:
        return self.dialogs.get(chat_id, user_id, bot_id=self.bot_id)

    def set_dialog(self, chat_id: int, user_id: int, state: str | None, data: dict | None = None) -> None:
        self.dialogs.put(chat_id, user_id, state, data or {}, bot_id=self.bot_id)

    def end_dialog(self, chat_id: int, user_id: int) -> bool:
        return self.dialogs.clear(chat_id, user_id, bot_id=self.bot_id)

    # --- replies
    def say(self, chat_id: int, lang: str, key: str, markup=None, **values):
        return self.send(chat_id, t(lang, key, **values), markup)

    def send(self, chat_id: int, text: str, markup=None):
        """Send a plain-text message; a user who blocked the bot is marked, nothing raised."""
        try:
            return client.call(self.bot.send_message, chat_id, text, reply_markup=markup, idempotent=False)
        except client.SendFailed as exc:
            if exc.blocked:
                self._mark_blocked(chat_id)
            log.warning("send to chat %s failed: %s", chat_id, exc)
            return None

    def edit(self, chat_id: int, message_id: int, text: str, markup=None) -> None:
        try:
            client.call(self.bot.edit_message_text, text, chat_id, message_id, reply_markup=markup)
        except client.SendFailed as exc:
            log.info("edit of message %s in chat %s failed: %s", message_id, chat_id, exc)

    def answer(self, callback_id: str, text: str | None = None) -> None:
        try:
            client.call(self.bot.answer_callback_query, callback_id, text=text)
        except client.SendFailed as exc:
            log.info("answerCallbackQuery failed: %s", exc)

    def _mark_blocked(self, chat_id: int) -> None:
        try:
            with self.transaction() as conn:
                users.set_blocked_bot(conn, chat_id, True)
        except Exception:  # best effort: the send failure is already logged
            log.exception("could not mark user %s as having blocked the bot", chat_id)
