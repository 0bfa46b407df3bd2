"""User commands, buttons and dialogs. Each handler takes (ctx, message|call, data).

`data` comes from the session middleware: data["user"] is the user's row (None
before /start) and data["lang"] their language. Every reply comes from core/i18n.py.
"""
import logging
import secrets
from datetime import datetime, timedelta, timezone

from core.addresses import parse_address
from core.amounts import parse_amount
from core.errors import AmountError, BreakerOpen, DatabaseError, InsufficientFunds, InvalidTransition, NotFound
from core.i18n import t
from botapi import delivery
from db import deposits, levels, notifications, system_settings, users, withdrawals
from handlers import keyboards, walletflows
from handlers.common import acceptable_address, command_args, ensure_registered, parse_id

log = logging.getLogger(__name__)

MAX_TEXT_CHARS = 1000
HISTORY_LIMIT = 10
# dialog states (the /wallet dialog's are in walletflows)
DEPOSIT_AMOUNT = "deposit_amount"
WITHDRAW_AMOUNT = "withdraw_amount"
WITHDRAW_ADDRESS = "withdraw_address"
WITHDRAW_CONFIRM = "withdraw_confirm"


# --- /start, /help, /cancel, /lang

def start(ctx, message, data) -> None:
    if data.get("cached"):  # PostgreSQL is down: the menu from the cached user, nothing registered
        lang_code = data["lang"]
        ctx.say(message.chat.id, lang_code, "welcome", keyboards.main_menu(lang_code), symbol=ctx.token.symbol)
        return
    user = ensure_registered(ctx, message, data)
    ctx.end_dialog(message.chat.id, user["id"])
    ctx.say(message.chat.id, user["language"], "welcome", keyboards.main_menu(user["language"]),
            symbol=ctx.token.symbol)


def help_(ctx, message, data) -> None:
    lang = data["lang"]
    text = t(lang, "help")
    contact = support_contact(ctx)
    if contact:
        text += "\n\n" + t(lang, "help_support", contact=contact)
    if ctx.is_admin(message.from_user.id):
        text += "\n\n" + t(lang, "admin_help")
    ctx.send(message.chat.id, text)


def support_contact(ctx) -> str | None:
    """The admins' `/set support_contact`; None when unset, or unknown while PostgreSQL is down and it
    is not cached (/help is answered all the same)."""
    try:
        return ctx.system_setting("support_contact")
    except (BreakerOpen, DatabaseError):
        return None


def cancel(ctx, message, data) -> None:
    had_dialog = ctx.end_dialog(message.chat.id, message.from_user.id)
    ctx.say(message.chat.id, data["lang"], "cancelled" if had_dialog else "nothing_to_cancel")


def lang(ctx, message, data) -> None:
    args = command_args(message)
    if not args:
        ctx.say(message.chat.id, data["lang"], "choose_language", keyboards.languages())
        return
    set_language(ctx, message.chat.id, message, data, args[0].lower())


def set_language(ctx, chat_id, message, data, choice: str) -> None:
    if choice not in ("ru", "en"):
        ctx.say(chat_id, data["lang"], "bad_language")
        return
    user = ensure_registered(ctx, message, data)
    with ctx.transaction() as conn:
        users.set_language(conn, user["id"], choice)
    ctx.cache.forget_user(user["id"])
    data["lang"] = choice
    ctx.say(chat_id, choice, "language_set")


# --- /deposit

def deposit(ctx, message, data) -> None:
    user = ensure_registered(ctx, message, data)
    args = command_args(message)
    if not user["wallet_address"]:
        ctx.say(message.chat.id, data["lang"], "wallet_needed")
        return
    if args:
        create_deposit(ctx, message.chat.id, user, data["lang"], args[0], chosen_level=None)
        return
    show_levels(ctx, message.chat.id, user, data["lang"])


def show_levels(ctx, chat_id: int, user: dict, lang_code: str) -> None:
    current = ctx.current_levels()
    if not current:
        ctx.say(chat_id, lang_code, "no_levels")
        return
    buttons = [(lvl.version, lvl.level, lvl.min_tokens, lvl.max_tokens) for lvl in current]
    ctx.set_dialog(chat_id, user["id"], DEPOSIT_AMOUNT)
    ctx.say(chat_id, lang_code, "deposit_choose_level", keyboards.deposit_levels(lang_code, buttons, ctx.token.symbol))


def choose_level(ctx, call, data, version: int, number: int) -> None:
    user = ensure_registered(ctx, call, data)
    current = ctx.current_levels()  # the amount is checked against PostgreSQL's levels when recorded
    chosen = next((lvl for lvl in current if lvl.version == version and lvl.level == number), None)
    if chosen is None or not user["wallet_address"]:
        ctx.answer(call.id, t(data["lang"], "stale_button"))
        return
    ctx.answer(call.id)
    ctx.set_dialog(call.message.chat.id, user["id"], DEPOSIT_AMOUNT, {"version": version, "level": number})
    last = chosen is current[-1]  # only the last level holds its upper bound
    ctx.say(call.message.chat.id, data["lang"], "deposit_ask_amount" if last else "deposit_ask_amount_below",
            low=chosen.min_tokens, high=chosen.max_tokens, symbol=ctx.token.symbol)


def create_deposit(ctx, chat_id: int, user: dict, lang_code: str, text: str, chosen_level: dict | None) -> bool:
    decimals = ctx.token.decimals
    try:
        amount = parse_amount(text, decimals)
    except AmountError as exc:
        ctx.say(chat_id, lang_code, "bad_amount", reason=str(exc))
        return False
    settings = ctx.settings
    status = deposits.PENDING_NETWORK_RECOVERY if ctx.chain_pause() else deposits.PENDING
    with ctx.transaction() as conn:
        current = levels.current(conn)
        level = levels.level_for(current, amount, decimals)
        if chosen_level and (level is None or level.level != chosen_level.get("level")):
            level = None
        request = level and deposits.create_request(
            conn, user_id=user["id"], amount=amount, level_version=level.version, level=level.level,
            ttl=timedelta(hours=settings.deposit_request_ttl_h), status=status)
    if request is None:
        described = ", ".join(f"{lvl.min_tokens}-{lvl.max_tokens}" for lvl in current
                              if not chosen_level or lvl.level == chosen_level.get("level"))
        ctx.say(chat_id, lang_code, "deposit_out_of_levels", levels=f"{described} {ctx.token.symbol}")
        return False
    ctx.end_dialog(chat_id, user["id"])
    text = t(lang_code, "deposit_created", id=request["id"], amount=ctx.amount(amount), symbol=ctx.token.symbol,
             wallet=parse_address(user["wallet_address"]), address=settings.deposit_address,
             hours=settings.deposit_request_ttl_h)
    if status == deposits.PENDING_NETWORK_RECOVERY:
        text += "\n\n" + t(lang_code, "deposit_maintenance")
    ctx.send(chat_id, text)
    return True


# --- /balance, /history

def balance(ctx, message, data) -> None:
    if data.get("cached"):  # PostgreSQL is down: the cached balance, with its time
        cached = data["user"]
        at = datetime.fromtimestamp(cached["cached_at"], timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        ctx.say(message.chat.id, data["lang"], "balance_cached", amount=ctx.amount(cached["balance"]),
                symbol=ctx.token.symbol, time=at)
        return
    user = ensure_registered(ctx, message, data)
    with ctx.transaction() as conn:
        fresh = users.get(conn, user["id"])
        open_deposits = deposits.open_requests(conn, user["id"])
        in_flight = withdrawals.in_flight_for_user(conn, user["id"])
    lang_code, symbol = data["lang"], ctx.token.symbol
    lines = [t(lang_code, "balance", amount=ctx.amount(fresh["balance"]), symbol=symbol)]
    if open_deposits:
        lines += ["", t(lang_code, "balance_pending_deposits")] + [deposit_line(ctx, lang_code, d) for d in open_deposits]
    if in_flight:
        lines += ["", t(lang_code, "balance_withdrawals")] + [withdrawal_line(ctx, lang_code, w) for w in in_flight]
    ctx.send(message.chat.id, "\n".join(lines))


def history(ctx, message, data) -> None:
    user = ensure_registered(ctx, message, data)
    with ctx.transaction() as conn:
        rows = [("d", d) for d in deposits.for_user(conn, user["id"], HISTORY_LIMIT)]
        rows += [("w", w) for w in withdrawals.for_user(conn, user["id"], HISTORY_LIMIT)]
    rows.sort(key=lambda item: item[1]["created_at"], reverse=True)
    lang_code = data["lang"]
    if not rows:
        ctx.say(message.chat.id, lang_code, "history_empty")
        return
    lines = [t(lang_code, "history_title")]
    for kind, row in rows[:HISTORY_LIMIT]:
        lines.append(deposit_line(ctx, lang_code, row) if kind == "d" else withdrawal_line(ctx, lang_code, row))
    ctx.send(message.chat.id, "\n".join(lines))


def deposit_line(ctx, lang_code: str, row: dict) -> str:
    amount = row["credited_amount"] or row["requested_amount"]
    return t(lang_code, "line_deposit", id=row["id"], amount=ctx.amount(amount), symbol=ctx.token.symbol,
             status=t(lang_code, f"status_{row['status']}"))


def withdrawal_line(ctx, lang_code: str, row: dict) -> str:
    return t(lang_code, "line_withdrawal", id=row["id"], amount=ctx.amount(row["amount"]),
             fee=ctx.amount(row["fee"]), symbol=ctx.token.symbol, status=t(lang_code, f"status_{row['status']}"))


# --- /withdraw

def withdraw(ctx, message, data) -> None:
    user = ensure_registered(ctx, message, data)
    chat_id, lang_code = message.chat.id, data["lang"]
    if withdrawals_paused(ctx):
        ctx.end_dialog(chat_id, user["id"])
        ctx.say(chat_id, lang_code, "withdraw_unavailable")
        return
    args = command_args(message)
    if len(args) > 2:
        ctx.say(chat_id, lang_code, "usage_withdraw")
        return
    if not args:
        ask_withdraw_amount(ctx, chat_id, user, lang_code)
        return
    address = args[1] if len(args) == 2 else None
    preview_withdrawal(ctx, chat_id, user, lang_code, args[0], address)


def withdrawals_paused(ctx) -> bool:
    return ctx.chain_pause() is not None


def ask_withdraw_amount(ctx, chat_id: int, user: dict, lang_code: str) -> None:
    with ctx.transaction() as conn:
        fresh = users.get(conn, user["id"])
    fee = token_setting(ctx, ctx.system_setting("withdrawal_fee", "0"))  # shown only: the preview reads it again
    ctx.set_dialog(chat_id, user["id"], WITHDRAW_AMOUNT)
    ctx.say(chat_id, lang_code, "withdraw_ask_amount", keyboards.withdraw_all(lang_code),
            balance=ctx.amount(fresh["balance"]), fee=ctx.amount(fee), symbol=ctx.token.symbol)


def token_setting(ctx, value) -> int:
    """A token amount setting (a whole-token decimal) in base units."""
    return parse_amount(str(value), ctx.token.decimals, allow_zero=True)


def withdrawal_fee(ctx, conn) -> int:
    return token_setting(ctx, system_settings.get(conn, "withdrawal_fee", "0"))


def minimum_withdrawal(ctx, conn) -> int:
    return token_setting(ctx, system_settings.get(conn, "min_withdrawal", "0"))


def preview_withdrawal(ctx, chat_id: int, user: dict, lang_code: str, amount_text: str,
                       address_text: str | None) -> None:
    """Check amount and address, then show the terms with Confirm / Cancel buttons."""
    symbol = ctx.token.symbol
    with ctx.transaction() as conn:
        fresh = users.get(conn, user["id"])
        fee = withdrawal_fee(ctx, conn)
        minimum = minimum_withdrawal(ctx, conn)
    if amount_text.lower() == "all":
        amount = fresh["balance"] - fee
    else:
        try:
            amount = parse_amount(amount_text, ctx.token.decimals)
        except AmountError as exc:
            ctx.say(chat_id, lang_code, "bad_amount", reason=str(exc))
            return
    if amount < max(minimum, 1):
        ctx.say(chat_id, lang_code, "withdraw_below_min", min=ctx.amount(max(minimum, 1)), symbol=symbol)
        return
    if fresh["balance"] < amount + fee:
        ctx.say(chat_id, lang_code, "withdraw_insufficient", balance=ctx.amount(fresh["balance"]),
                total=ctx.amount(amount + fee), symbol=symbol)
        return
    if address_text is None and not fresh["wallet_address"]:
        ctx.set_dialog(chat_id, user["id"], WITHDRAW_ADDRESS, {"amount": str(amount)})
        ctx.say(chat_id, lang_code, "withdraw_ask_address")
        return
    to = acceptable_address(ctx, chat_id, lang_code, address_text or fresh["wallet_address"],
                            refusal="withdraw_bad_address")
    if to is None:
        return
    draft = secrets.token_hex(4)
    ctx.set_dialog(chat_id, user["id"], WITHDRAW_CONFIRM,
                   {"draft": draft, "amount": str(amount), "fee": str(fee), "to": to})
    ctx.say(chat_id, lang_code, "withdraw_preview", keyboards.withdraw_confirm(lang_code, draft),
            amount=ctx.amount(amount), fee=ctx.amount(fee), total=ctx.amount(amount + fee), address=to, symbol=symbol)


def withdraw_all_pressed(ctx, call, data) -> None:
    user = ensure_registered(ctx, call, data)
    chat_id = call.message.chat.id
    state, _ = ctx.dialog(chat_id, user["id"])
    if withdrawals_paused(ctx):
        ctx.answer(call.id)
        ctx.say(chat_id, data["lang"], "withdraw_unavailable")
        return
    if state != WITHDRAW_AMOUNT:
        ctx.answer(call.id, t(data["lang"], "stale_button"))
        return
    ctx.answer(call.id)
    preview_withdrawal(ctx, chat_id, user, data["lang"], "all", None)


def confirm_withdrawal(ctx, call, data, draft: str) -> None:
    """Create the withdrawal the preview showed; a second tap of the same button creates nothing."""
    user = ensure_registered(ctx, call, data)
    chat_id, lang_code, symbol = call.message.chat.id, data["lang"], ctx.token.symbol
    state, dialog = ctx.dialog(chat_id, user["id"])
    if withdrawals_paused(ctx):
        ctx.answer(call.id)
        ctx.say(chat_id, lang_code, "withdraw_unavailable")
        return
    if state != WITHDRAW_CONFIRM or dialog.get("draft") != draft:
        ctx.answer(call.id, t(lang_code, "stale_button"))
        return
    amount, fee = int(dialog["amount"]), int(dialog["fee"])
    settings = ctx.settings
    auto_max = parse_amount(settings.withdrawal_auto_approve_max, ctx.token.decimals, allow_zero=True)
    daily_max = parse_amount(settings.withdrawal_daily_max, ctx.token.decimals, allow_zero=True)
    try:
        with ctx.transaction() as conn:
            change, notices = None, []
            if withdrawal_fee(ctx, conn) == fee:  # the fee shown is the fee charged, or nothing happens
                change = withdrawals.request_once(conn, request_key=f"wd:{user['id']}:{draft}",
                                                  user_id=user["id"], amount=amount, fee=fee,
                                                  to_address=dialog["to"], auto_approve_max=auto_max,
                                                  daily_max=daily_max)
            if change and change.changed and change.withdrawal["status"] == withdrawals.REQUESTED:
                notices = queue_admin_alerts(ctx, conn, change.withdrawal)  # committed with the request
    except InsufficientFunds:
        change = None
    ctx.cache.forget_user(user["id"])  # the hold changed the balance
    if change is None:
        ctx.answer(call.id)
        ctx.end_dialog(chat_id, user["id"])
        ctx.say(chat_id, lang_code, "withdraw_terms_changed")
        return
    ctx.answer(call.id)
    if not change.changed:
        return  # the other tap already reported this withdrawal
    ctx.end_dialog(chat_id, user["id"])
    row = change.withdrawal
    ctx.edit(chat_id, call.message.message_id,
             t(lang_code, "withdraw_created", id=row["id"], amount=ctx.amount(amount), symbol=symbol,
               address=dialog["to"], status=t(lang_code, f"status_{row['status']}")))
    delivery.deliver(ctx, notices)


def queue_admin_alerts(ctx, conn, row: dict) -> list[int]:
    """Queue every admin's notice of a new request, with Approve / Reject buttons, in the request's transaction."""
    ids = [notifications.enqueue(conn, admin_id, "admin_pending_item", pending_values(ctx, row),
                                 f"withdrawal-requested:{row['id']}:admin:{admin_id}",
                                 buttons=keyboards.approve_reject_rows(row["id"]))
           for admin_id in ctx.settings.admin_ids]
    return [i for i in ids if i is not None]


def pending_values(ctx, row: dict) -> dict:
    return {"id": row["id"], "user_id": row["user_id"], "amount": ctx.amount(row["amount"]),
            "fee": ctx.amount(row["fee"]), "symbol": ctx.token.symbol, "address": parse_address(row["to_address"]),
            "created": row["created_at"].strftime("%Y-%m-%d %H:%M UTC")}


def pending_line(ctx, lang_code: str, row: dict) -> str:
    return t(lang_code, "admin_pending_item", **pending_values(ctx, row))


def cancel_withdrawal(ctx, call, data, draft: str) -> None:
    user = ensure_registered(ctx, call, data)
    chat_id = call.message.chat.id
    state, dialog = ctx.dialog(chat_id, user["id"])
    ctx.answer(call.id)
    if state == WITHDRAW_CONFIRM and dialog.get("draft") == draft:
        ctx.end_dialog(chat_id, user["id"])
        ctx.edit(chat_id, call.message.message_id, t(data["lang"], "cancelled"))


# --- cancelling one's own open deposit request or withdrawal waiting for approval

def cancel_deposit(ctx, message, data) -> None:
    user = ensure_registered(ctx, message, data)
    chat_id, lang_code = message.chat.id, data["lang"]
    deposit_id = id_argument(message)
    if deposit_id is None:
        ctx.say(chat_id, lang_code, "usage_cancel")
        return
    with ctx.transaction() as conn:
        cancelled = deposits.cancel_request(conn, deposit_id, user["id"])
    ctx.say(chat_id, lang_code, "deposit_cancelled" if cancelled else "deposit_cancel_none", id=deposit_id)


def cancel_withdrawal_request(ctx, message, data) -> None:
    user = ensure_registered(ctx, message, data)
    chat_id, lang_code = message.chat.id, data["lang"]
    withdrawal_id = id_argument(message)
    if withdrawal_id is None:
        ctx.say(chat_id, lang_code, "usage_cancel")
        return
    try:
        with ctx.transaction() as conn:
            change = withdrawals.cancel(conn, withdrawal_id, user["id"])
        ctx.cache.forget_user(user["id"])
    except NotFound:
        ctx.say(chat_id, lang_code, "withdraw_cancel_none", id=withdrawal_id)
        return
    except InvalidTransition:
        with ctx.transaction() as conn:
            status = withdrawals.get(conn, withdrawal_id)["status"]
        ctx.say(chat_id, lang_code, "withdraw_cancel_refused", id=withdrawal_id, status=t(lang_code, f"status_{status}"))
        return
    row = change.withdrawal
    ctx.say(chat_id, lang_code, "withdraw_cancelled", id=withdrawal_id, total=ctx.amount(row["amount"] + row["fee"]),
            symbol=ctx.token.symbol)


def id_argument(message) -> int | None:
    args = command_args(message)
    return parse_id(args[0]) if len(args) == 1 else None


# --- free text: dialog input or a polite "use the menu"

def text(ctx, message, data) -> None:
    """Route plain text to the open dialog, if any."""
    chat_id, lang_code = message.chat.id, data["lang"]
    if len(message.text) > MAX_TEXT_CHARS:
        ctx.say(chat_id, lang_code, "too_long")
        return
    user = data.get("user")
    state, dialog = ctx.dialog(chat_id, message.from_user.id) if user else (None, {})
    value = message.text.strip()
    if state in walletflows.DIALOG_STATES:
        walletflows.dialog_text(ctx, chat_id, user, lang_code, state, dialog, value)
    elif state == DEPOSIT_AMOUNT:
        create_deposit(ctx, chat_id, user, lang_code, value, dialog or None)
    elif state in (WITHDRAW_AMOUNT, WITHDRAW_CONFIRM) and not withdrawals_paused(ctx):
        preview_withdrawal(ctx, chat_id, user, lang_code, value, None)
    elif state == WITHDRAW_ADDRESS and not withdrawals_paused(ctx):
        preview_withdrawal(ctx, chat_id, user, lang_code, ctx.amount(int(dialog["amount"])), value)
    elif state in (WITHDRAW_AMOUNT, WITHDRAW_ADDRESS, WITHDRAW_CONFIRM):
        ctx.end_dialog(chat_id, user["id"])
        ctx.say(chat_id, lang_code, "withdraw_unavailable")
    elif value.startswith("/"):
        ctx.say(chat_id, lang_code, "unknown_command")
    else:
        ctx.say(chat_id, lang_code, "free_text")


def not_text(ctx, message, data) -> None:
    ctx.say(message.chat.id, data["lang"], "text_only")


# --- main menu buttons

def menu_pressed(ctx, call, data, action: str) -> None:
    ctx.answer(call.id)
    message = call.message
    message.from_user = call.from_user  # the handlers below act for whoever pressed
    message.text = f"/{action}"
    MENU[action](ctx, message, data)


def language_pressed(ctx, call, data, choice: str) -> None:
    ctx.answer(call.id)
    message = call.message
    message.from_user = call.from_user
    set_language(ctx, message.chat.id, message, data, choice)


MENU = {"deposit": deposit, "balance": balance, "withdraw": withdraw, "history": history,
        "wallet": walletflows.wallet, "lang": lang}
