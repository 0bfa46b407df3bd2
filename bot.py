"""The Telegram bot process: python bot.py (systemd unit `bot`).

A pyTelegramBotAPI bot: handlers are registered in register_handlers() and run on
HANDLER_THREADS threads, one chat's updates in arrival order (ChatDispatcher),
middlewares rate-limit, load the user and turn errors into replies, and our own
long-polling loop keeps going through Bot API outages (429, 5xx, refused).
"""
import functools
import logging
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor, wait

import requests
from telebot import TeleBot, apihelper
from telebot.types import BotCommand

from botapi import client
from chain.rpc import Chain, connect
from core.amounts import parse_amount
from core.errors import AmountError, BreakerOpen, DatabaseError
from core.i18n import t
from core.settings import SettingsWatcher
from db import service_status
from db.pool import open_pool
import dr
from dr import DialogStore, RateLimiter, redis_client
from handlers import adminflows, keyboards, userflows, walletflows
from handlers.context import Context
from handlers.middlewares import SessionMiddleware
from runtime import startup

log = logging.getLogger("bot")

HANDLER_THREADS = 4
STATUS_INTERVAL_S = 2.0
POLL_BACKOFF_MAX_S = 5.0
HANDLER_DRAIN_S = 120.0  # longest a batch may keep the next getUpdates (and its confirmation) waiting
USER_COMMANDS = ("start", "deposit", "balance", "withdraw", "history", "wallet", "lang", "cancel", "help")
COMMAND_DESCRIPTIONS = {
    "en": {"start": "Main menu", "deposit": "Deposit", "balance": "Balance", "withdraw": "Withdraw",
           "history": "Last operations", "wallet": "Bind your wallet", "lang": "Language", "cancel": "Leave a dialog",
           "help": "Commands"},
    "ru": {"start": "Главное меню", "deposit": "Пополнить", "balance": "Баланс", "withdraw": "Вывести",
           "history": "Последние операции", "wallet": "Привязать кошелёк", "lang": "Язык",
           "cancel": "Выйти из диалога", "help": "Команды"},
}
NOT_TEXT = ["audio", "document", "photo", "sticker", "video", "video_note", "voice", "location", "contact",
            "animation", "dice", "poll", "venue", "game", "story"]


def register_handlers(bot: TeleBot, ctx: Context) -> None:
    """Wire every command, the dialog text handler and the button router."""
    commands = {
        "start": userflows.start, "help": userflows.help_, "cancel": userflows.cancel, "lang": userflows.lang,
        "wallet": walletflows.wallet, "deposit": userflows.deposit, "balance": userflows.balance,
        "history": userflows.history, "withdraw": userflows.withdraw,
        "canceldeposit": userflows.cancel_deposit, "cancelwithdrawal": userflows.cancel_withdrawal_request,
        "pending": adminflows.pending, "approve": adminflows.approve, "reject": adminflows.reject,
        "ban": adminflows.ban, "unban": adminflows.unban, "levels": adminflows.show_levels,
        "setlevels": adminflows.set_levels, "settings": adminflows.show_settings, "set": adminflows.set_setting,
        "stats": adminflows.show_stats, "status": adminflows.show_status,
        "unattributed": adminflows.show_unattributed, "assign": adminflows.assign_deposit,
    }
    for name, handler in commands.items():
        bot.register_message_handler(functools.partial(handler, ctx), commands=[name])
    bot.register_message_handler(functools.partial(userflows.text, ctx), content_types=["text"])
    bot.register_message_handler(functools.partial(userflows.not_text, ctx), content_types=NOT_TEXT)
    bot.register_callback_query_handler(functools.partial(route_callback, ctx), func=lambda call: True)


def route_callback(ctx: Context, call, data) -> None:
    """Dispatch a button press; forged or unknown data gets 'this button is no longer valid'."""
    parsed = keyboards.parse(call.data)
    if parsed is None:
        ctx.answer(call.id, t(data["lang"], "stale_button"))
        return
    kind, args = parsed.kind, parsed.args
    if kind == "menu":
        userflows.menu_pressed(ctx, call, data, args[0])
    elif kind == "lang":
        userflows.language_pressed(ctx, call, data, args[0])
    elif kind == "level":
        userflows.choose_level(ctx, call, data, int(args[0]), int(args[1]))
    elif kind == "withdraw_all":
        userflows.withdraw_all_pressed(ctx, call, data)
    elif kind == "withdraw_confirm":
        userflows.confirm_withdrawal(ctx, call, data, args[0])
    elif kind == "withdraw_cancel":
        userflows.cancel_withdrawal(ctx, call, data, args[0])
    elif kind == "approve":
        adminflows.approve_pressed(ctx, call, data, args[0])
    elif kind == "reject":
        adminflows.reject_pressed(ctx, call, data, args[0])


def register_commands(bot: TeleBot) -> None:
    """Publish the command menu in both languages (and English as the default)."""
    for language in (None, "en", "ru"):
        descriptions = COMMAND_DESCRIPTIONS[language or "en"]
        commands = [BotCommand(name, descriptions[name]) for name in USER_COMMANDS]
        try:
            client.call(bot.set_my_commands, commands, language_code=language)
        except client.SendFailed as exc:
            log.warning("setMyCommands (%s) failed: %s; the menu stays as it was", language or "default", exc)


class ChatDispatcher:
    """Runs a batch of updates on HANDLER_THREADS threads: one chat's updates in arrival order.

    telebot's own pool makes every update a task of its own, so "/deposit" and "50" of one
    chat, arriving in one batch after an outage, could run in reverse. Here different chats
    run in parallel and each chat's updates run one after another in one thread. dispatch()
    returns once the whole batch is handled (or after `timeout_s`): the next getUpdates
    confirms the batch to Telegram, so a bot killed mid-handler gets those updates again
    after a restart instead of losing them.
    """

    def __init__(self, bot: TeleBot, threads: int):
        self._bot = bot
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="handler")

    def dispatch(self, updates: list, timeout_s: float) -> bool:
        by_chat: dict[int, list] = {}
        for update in updates:
            by_chat.setdefault(chat_of(update), []).append(update)
        futures = [self._pool.submit(self._handle, batch) for batch in by_chat.values()]
        return not wait(futures, timeout=timeout_s).not_done

    def _handle(self, batch: list) -> None:
        try:
            self._bot.process_new_updates(batch)  # a non-threaded bot: handlers run here, in order
        except Exception:  # the middleware answers errors; this only keeps the thread alive
            log.exception("handling updates %s failed", [update.update_id for update in batch])

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def chat_of(update) -> int:
    """The chat an update belongs to (a button press: the chat of the message it sits on)."""
    if update.message is not None:
        return update.message.chat.id
    call = update.callback_query
    if call is not None:
        return call.message.chat.id if call.message is not None else call.from_user.id
    return -update.update_id  # anything else runs on its own


def poll_forever(bot: TeleBot, dispatcher: ChatDispatcher, stop: threading.Event, poll_timeout_s: int) -> None:
    """Long-poll getUpdates until `stop`; outages back off (max POLL_BACKOFF_MAX_S), 429 waits retry_after.

    `stop` ends the loop at once, even in the middle of a long poll: that poll is abandoned
    and whatever it returns is neither handled nor confirmed, so Telegram delivers it again
    after the restart.
    """
    offset, backoff = None, 0.0
    while not stop.is_set():
        try:
            updates = interruptible(lambda: bot.get_updates(offset=offset, timeout=poll_timeout_s + 10,
                                                            long_polling_timeout=poll_timeout_s,
                                                            allowed_updates=["message", "callback_query"]), stop)
        except (apihelper.ApiException, requests.RequestException) as exc:
            retry_after = client.retry_after_s(exc)
            backoff = retry_after if retry_after is not None else min(max(backoff * 2, 0.25), POLL_BACKOFF_MAX_S)
            log.warning("getUpdates failed (%s); retrying in %.2f s", _describe(exc), backoff)
            stop.wait(backoff)
            continue
        backoff = 0.0
        if updates:
            offset = updates[-1].update_id + 1
            if not dispatcher.dispatch(updates, HANDLER_DRAIN_S):
                log.warning("handlers still busy after %s s; confirming the batch anyway", HANDLER_DRAIN_S)


def interruptible(call, stop: threading.Event):
    """Run `call` in a thread of its own and return its result, or None as soon as `stop` is set."""
    done, outcome = threading.Event(), {}

    def run():
        try:
            outcome["result"] = call()
        except BaseException as exc:  # handed to the caller
            outcome["error"] = exc
        done.set()

    threading.Thread(target=run, name="get-updates", daemon=True).start()
    while not done.wait(0.1):
        if stop.is_set():
            return None
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def report_status(ctx: Context, notifier, stop: threading.Event) -> None:
    """Every STATUS_INTERVAL_S: STATE_DIR/bot.json with the breakers' states and a heartbeat, the same
    report in service_status (through the PostgreSQL breaker: so the bot notices an outage without any
    user writing), and a flush of notices kept in memory while Redis and PostgreSQL were both down."""
    breakers = [ctx.pg_breaker, ctx.redis_breaker, ctx.chain.breaker]
    while not stop.wait(STATUS_INTERVAL_S):
        notifier.flush()
        status = {"breakers": {b.name: b.state for b in breakers}, "notices_buffered": notifier.buffered,
                  "notices_dropped": notifier.dropped}
        try:
            dr.write_status_file(ctx.settings.state_dir, "bot", breakers, status)
        except OSError as exc:
            log.warning("cannot write the status file: %s", exc)
        try:
            with ctx.transaction() as conn:
                service_status.put(conn, "bot", status)
        except (DatabaseError, BreakerOpen):
            pass  # the breaker has counted it; the status file says so


def _describe(exc: Exception) -> str:
    code = getattr(exc, "error_code", None)
    return f"{type(exc).__name__} {code}" if code else type(exc).__name__


def main() -> int:
    settings = startup.settings_or_exit("DATABASE_URL", "BOT_TOKEN", "TOKEN_ADDRESS")  # settings before the database
    if not settings.deposit_address:
        startup.fail("configuration error: DEPOSIT_ADDRESS: required (or HOT_WALLET_PRIVATE_KEY to derive it)", 2)
    startup.schema_current_or_exit(settings, "bot")
    pool = open_pool(settings, "bot")
    try:
        token = startup.token_info_or_exit(settings, pool, "bot")
    except DatabaseError as exc:
        startup.fail(f"bot: cannot reach the database: {exc}")
    for name, value in (("WITHDRAWAL_AUTO_APPROVE_MAX", settings.withdrawal_auto_approve_max),
                        ("WITHDRAWAL_DAILY_MAX", settings.withdrawal_daily_max)):
        try:  # known only now: the setting must fit the token's decimals
            parse_amount(value, token.decimals, allow_zero=True)
        except AmountError as exc:
            startup.fail(f"configuration error: {name}: {exc} for {token.symbol}", 2)
    client.configure(settings.telegram_api_url, settings.telegram_read_timeout_s)
    redis = redis_client(settings)
    pg_breaker = dr.pg_breaker(settings, background_probe=True)
    redis_breaker = dr.redis_breaker(settings, background_probe=True)
    dialogs = DialogStore(redis, redis_breaker, pool, pg_breaker)
    bot = TeleBot(settings.bot_token.reveal(), threaded=False, use_class_middlewares=True,
                  state_storage=dialogs)  # ChatDispatcher owns the handler threads
    watcher = SettingsWatcher(settings, on_error=lambda exc: log.error("ignoring bad .env edit: %s", exc))
    node = Chain(connect(settings), dr.rpc_breaker(settings, background_probe=True),
                 token_address=settings.token_address, deposit_address=settings.deposit_address,
                 chain_id=settings.chain_id)  # reads the head only
    limits = lambda: (watcher.current().rate_limit_updates, watcher.current().rate_limit_window_s)
    ctx = Context(bot=bot, watcher=watcher, pool=pool, redis=redis, dialogs=dialogs, pg_breaker=pg_breaker,
                  redis_breaker=redis_breaker, cache=dr.Cache(redis, redis_breaker),
                  limiter=RateLimiter(redis, redis_breaker, limits),
                  token=token, chain=node, bot_id=int(settings.bot_token.reveal().split(":")[0]))
    bot.setup_middleware(SessionMiddleware(ctx))
    register_handlers(bot, ctx)
    register_commands(bot)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    startup.reload_on_sighup(watcher)
    dr.start_probers(stop, (pg_breaker, dr.pg_check(pool)), (redis_breaker, dr.redis_check(redis)),
                     (node.breaker, dr.rpc_check(node)))
    notifier = dr.NotificationService(redis, redis_breaker, ctx.transaction, settings.notify_buffer_max)
    for breaker in (pg_breaker, redis_breaker, node.breaker):
        dr.alert_admins_on_change(breaker, notifier, lambda: ctx.settings.admin_ids, "bot")
    dr.recover_when_back(redis_breaker, lambda: dr.recover_redis(settings, dialogs, ctx.cache, ctx.transaction,
                                                                 notifier))
    threading.Thread(target=dr.guarded_recovery, args=(lambda: dr.warmup(ctx.cache, ctx.transaction),),
                     name="warmup", daemon=True).start()  # the worker refreshes it every minute
    threading.Thread(target=report_status, args=(ctx, notifier, stop), name="status", daemon=True).start()
    log.info("bot started: token %s (%s decimals), polling %s", token.symbol, token.decimals,
             settings.telegram_api_url)
    dispatcher = ChatDispatcher(bot, HANDLER_THREADS)
    poll_forever(bot, dispatcher, stop, settings.telegram_poll_timeout_s)
    log.info("stopping: finishing handlers in progress")
    dispatcher.close()
    pool.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
