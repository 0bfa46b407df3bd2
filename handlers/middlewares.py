"""Class middlewares: rate limit, blacklist and user loading before handlers; error replies after.

No exception from a handler or from here reaches telebot's polling loop: database
errors become an i18n reply by type, anything else a generic one, all logged with
their traceback.
"""
import logging

from telebot.handler_backends import BaseMiddleware, CancelUpdate, SkipHandler

import dr
from core.errors import BreakerOpen, DatabaseError, DatabaseInterfaceError, DatabaseOperationalError
from core.i18n import language_from_telegram, t
from db import blacklist, users

log = logging.getLogger(__name__)


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
        return self._admit(message.from_user, message.chat.id, data, callback_id=None)

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
    def _admit(self, tg_user, chat_id: int, data: dict, callback_id: str | None):
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
            data["error"] = exc
            return SkipHandler()
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

    def _report(self, chat_id: int, data: dict, exception, callback_id: str | None) -> None:
        error = exception or data.get("error")
        if error is None:
            return
        if isinstance(error, BreakerOpen):  # expected while a dependency is down: no traceback per update
            log.info("update for chat %s answered with technical works: %s", chat_id, error)
        else:
            log.error("update for chat %s failed: %s", chat_id, error, exc_info=error)
        if callback_id:
            self.ctx.answer(callback_id)
        self.ctx.say(chat_id, data.get("lang", self.ctx.settings.default_language), error_reply_key(error))
