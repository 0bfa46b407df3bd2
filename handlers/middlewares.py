"""Class middlewares: rate limit, blacklist and user loading before handlers; error replies after.

No exception from a handler or from here reaches telebot's polling loop: database
errors become an i18n reply by type, anything else a generic one, all logged with
their traceback. While PostgreSQL is down (its breaker open), /start, /help and
/balance are served from the Redis cache (the blacklist included); every other
update gets the technical-works reply at once.
"""
import logging

from telebot.handler_backends import BaseMiddleware, CancelUpdate, SkipHandler

import dr
from core.errors import BreakerOpen, DatabaseError, DatabaseInterfaceError, DatabaseOperationalError
from core.i18n import language_from_telegram, t
from db import blacklist, users
from db.pool import is_outage

log = logging.getLogger(__name__)

CACHED_COMMANDS = ("start", "help", "balance")  # what can be answered without PostgreSQL


def error_reply_key(exc: BaseException) -> str:
    """Which text answers `exc` (seed R11-1: by database error type; an open breaker is technical works)."""
    if isinstance(exc, (DatabaseOperationalError, BreakerOpen)):
        return "db_operational"
    if isinstance(exc, DatabaseInterfaceError):
        return "db_interface"
    if isinstance(exc, DatabaseError):
        return "db_error"
    return "internal_error"


class SessionMiddleware(BaseMiddleware):
    def __init__(self, ctx):
        super().__init__()
        self.update_sensitive = True
        self.update_types = ["message", "callback_query"]
        self.ctx = ctx

    # --- messages
    def pre_process_message(self, message, data):
        if message.chat.type != "private" or message.from_user is None:
            return CancelUpdate()  # the bot serves private chats only
        return self._admit(message.from_user, message.chat.id, data, callback_id=None, text=message.text)

    def post_process_message(self, message, data, exception):
        self._report(message.chat.id, data, exception, callback_id=None)

    # --- button presses
    def pre_process_callback_query(self, call, data):
        if call.message is None or call.message.chat.type != "private":
            self.ctx.answer(call.id)
            return CancelUpdate()
        return self._admit(call.from_user, call.message.chat.id, data, callback_id=call.id)

    def post_process_callback_query(self, call, data, exception):
        self._report(call.message.chat.id, data, exception, callback_id=call.id)

    # --- shared
    def _admit(self, tg_user, chat_id: int, data: dict, callback_id: str | None, text: str | None = None):
        ctx = self.ctx
        data["lang"] = language_from_telegram(tg_user.language_code, ctx.settings.default_language)
        verdict = ctx.limiter.hit(tg_user.id)
        if verdict != dr.ALLOW:
            if callback_id:
                ctx.answer(callback_id)
            if verdict == dr.WARN:
                ctx.say(chat_id, data["lang"], "slow_down")
            return CancelUpdate()
        try:
            with ctx.transaction() as conn:
                banned = blacklist.is_banned(conn, tg_user.id)
                user = users.get(conn, tg_user.id)
                if user and user["blocked_bot"]:  # writing to us again means they unblocked the bot
                    users.set_blocked_bot(conn, tg_user.id, False)
        except (DatabaseError, BreakerOpen) as exc:
            if isinstance(exc, BreakerOpen) or is_outage(exc):
                served = self._from_cache(tg_user, chat_id, data, callback_id, text)
                if served is not False:
                    return served
            data["error"] = exc
            return SkipHandler()
        if user:
            ctx.cache.put_users([user])  # what /balance shows while PostgreSQL is down
        if banned:
            if callback_id:
                ctx.answer(callback_id, t(data["lang"], "banned"))
            else:
                ctx.say(chat_id, data["lang"], "banned")
            return CancelUpdate()
        data["user"] = user
        if user:
            data["lang"] = user["language"]
        return None

    def _from_cache(self, tg_user, chat_id: int, data: dict, callback_id: str | None, text: str | None):
        """PostgreSQL is down: None to serve the update from the cache, CancelUpdate for a banned user, False
        when the cache cannot answer it (then the technical-works reply)."""
        command = command_of(text)
        if callback_id or command not in CACHED_COMMANDS:
            return False
        banned = self.ctx.cache.is_banned(tg_user.id)
        if banned is None:
            return False  # no complete copy of the blacklist: nobody is served blind
        if banned:
            self.ctx.say(chat_id, data["lang"], "banned")
            return CancelUpdate()
        user = self.ctx.cache.user(tg_user.id)
        if user is None and command != "help":
            return False
        data["user"], data["cached"] = user, True
        if user:
            data["lang"] = user["language"]
        return None

    def _report(self, chat_id: int, data: dict, exception, callback_id: str | None) -> None:
        error = exception or data.get("error")
        if error is None:
            return
        if isinstance(error, BreakerOpen):  # expected while a dependency is down: no traceback per update
            log.info("update for chat %s answered with technical works: %s", chat_id, error)
        elif is_outage(error):  # in flight as PostgreSQL went away: one line, the breaker tells the rest
            log.warning("update for chat %s: PostgreSQL unavailable (%s); answered with technical works",
                        chat_id, error)
        else:
            log.error("update for chat %s failed: %s", chat_id, error, exc_info=error)
        if callback_id:
            self.ctx.answer(callback_id)
        self.ctx.say(chat_id, data.get("lang", self.ctx.settings.default_language), error_reply_key(error))


def command_of(text: str | None) -> str | None:
    """'balance' for '/balance', '/balance@OurBot' or '/balance extra'; None for anything else."""
    if not text or not text.startswith("/"):
        return None
    return text.split()[0][1:].split("@")[0].lower()
