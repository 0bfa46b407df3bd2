"""Admin commands. Only ids in ADMIN_IDS get here (see admin_only); every action is audited."""
import functools
import logging

from botapi import delivery
from core.amounts import parse_amount
from core.errors import AmountError, InvalidTransition, NotFound
from core.i18n import scan_progress, t
from db import (audit, blacklist, deposits, ledger, levels, notifications, service_status, stats, system_settings,
                users, withdrawals)
from handlers import keyboards, userflows
from handlers.common import command_args, parse_id

log = logging.getLogger(__name__)

PENDING_LIMIT = 20
SUPPORT_CONTACT_MAX_CHARS = 64
# setting -> how to validate its text (returns the JSON value stored)
SETTING_RULES = {
    "min_withdrawal": lambda ctx, text: _token_amount(ctx, text, allow_zero=False),
    "withdrawal_fee": lambda ctx, text: _token_amount(ctx, text, allow_zero=True),
    "support_contact": lambda ctx, text: _short_text(text),
}


def admin_only(action: str):
    """Non-admins get the unknown-command reply, and the attempt is audited."""
    def wrap(handler):
        @functools.wraps(handler)
        def guarded(ctx, message, data, *args):
            actor = message.from_user.id
            if not ctx.is_admin(actor):
                with ctx.transaction() as conn:
                    audit.record(conn, actor_id=actor, action=action, allowed=False,
                                 details={"text": _excerpt(message)})
                chat_id = message.message.chat.id if hasattr(message, "data") else message.chat.id
                if hasattr(message, "data"):
                    ctx.answer(message.id)
                ctx.say(chat_id, data["lang"], "unknown_command")
                return
            handler(ctx, message, data, *args)
        return guarded
    return wrap


def _excerpt(update) -> str:
    return (getattr(update, "data", None) or getattr(update, "text", None) or "")[:200]


def _args(message) -> list[str]:
    return command_args(message)


def _usage(ctx, message, data, usage: str) -> None:
    ctx.say(message.chat.id, data["lang"], "admin_usage", usage=usage)


# --- withdrawals

@admin_only("pending")
def pending(ctx, message, data) -> None:
    with ctx.transaction() as conn:
        rows = withdrawals.with_status(conn, withdrawals.REQUESTED, PENDING_LIMIT)
    if not rows:
        ctx.say(message.chat.id, data["lang"], "admin_pending_empty")
        return
    for row in rows:
        ctx.send(message.chat.id, userflows.pending_line(ctx, data["lang"], row),
                 keyboards.approve_reject(data["lang"], row["id"]))


@admin_only("approve")
def approve(ctx, message, data) -> None:
    args = _args(message)
    withdrawal_id = parse_id(args[0]) if len(args) == 1 else None
    if withdrawal_id is None:
        _usage(ctx, message, data, "/approve <id>")
        return
    approve_withdrawal(ctx, message.chat.id, message.from_user.id, data["lang"], withdrawal_id)


@admin_only("reject")
def reject(ctx, message, data) -> None:
    args = _args(message)
    withdrawal_id = parse_id(args[0]) if args else None
    if withdrawal_id is None:
        _usage(ctx, message, data, "/reject <id> [reason]")
        return
    reason = message.text.split(maxsplit=2)[2][:500] if len(args) > 1 else None
    reject_withdrawal(ctx, message.chat.id, message.from_user.id, data["lang"], withdrawal_id, reason)


@admin_only("approve")
def approve_pressed(ctx, call, data, withdrawal_id: str) -> None:
    ctx.answer(call.id)
    approve_withdrawal(ctx, call.message.chat.id, call.from_user.id, data["lang"], int(withdrawal_id))


@admin_only("reject")
def reject_pressed(ctx, call, data, withdrawal_id: str) -> None:
    ctx.answer(call.id)
    reject_withdrawal(ctx, call.message.chat.id, call.from_user.id, data["lang"], int(withdrawal_id), None)


def approve_withdrawal(ctx, chat_id: int, admin_id: int, lang: str, withdrawal_id: int) -> None:
    decide(ctx, chat_id, admin_id, lang, withdrawal_id, "approve",
           lambda conn: withdrawals.approve(conn, withdrawal_id, admin_id),
           lambda row: ("notify_withdrawal_approved", {}))


def reject_withdrawal(ctx, chat_id: int, admin_id: int, lang: str, withdrawal_id: int, reason: str | None) -> None:
    decide(ctx, chat_id, admin_id, lang, withdrawal_id, "reject",
           lambda conn: withdrawals.reject(conn, withdrawal_id, admin_id, reason),
           lambda row: ("notify_withdrawal_rejected" if reason else "notify_withdrawal_rejected_no_reason",
                        {"total": ctx.amount(row["amount"] + row["fee"]), "reason": reason}),
           reason=reason)


DONE_KEYS = {"approve": "admin_approved", "reject": "admin_rejected"}


def decide(ctx, chat_id: int, admin_id: int, lang: str, withdrawal_id: int, action: str, change_state,
           user_message, reason: str | None = None) -> None:
    """Apply an admin decision, audit it and queue the user's notice in one transaction; then report."""
    try:
        with ctx.transaction() as conn:
            change = change_state(conn)
            row, notice = change.withdrawal, None
            if change.changed:
                audit.record(conn, actor_id=admin_id, action=action, target_user_id=row["user_id"],
                             details={"withdrawal": withdrawal_id, "reason": reason})
                key, values = user_message(row)
                notice = notifications.enqueue(
                    conn, row["user_id"], key,
                    {"id": withdrawal_id, "amount": ctx.amount(row["amount"]), "symbol": ctx.token.symbol, **values},
                    f"withdrawal-{action}:{withdrawal_id}")
    except NotFound:
        ctx.say(chat_id, lang, "admin_not_found", id=withdrawal_id)
        return
    except InvalidTransition:
        _report_state(ctx, chat_id, lang, withdrawal_id)
        return
    if not change.changed:
        ctx.say(chat_id, lang, "admin_already", id=withdrawal_id, status=t(lang, f"status_{row['status']}"))
        return
    ctx.cache.forget_user(row["user_id"])  # a rejection refunded the user
    ctx.say(chat_id, lang, DONE_KEYS[action], id=withdrawal_id)
    delivery.deliver(ctx, [notice])


def _report_state(ctx, chat_id: int, lang: str, withdrawal_id: int) -> None:
    with ctx.transaction() as conn:
        row = withdrawals.get(conn, withdrawal_id)
    ctx.say(chat_id, lang, "admin_already", id=withdrawal_id, status=t(lang, f"status_{row['status']}"))


# --- blacklist

@admin_only("ban")
def ban(ctx, message, data) -> None:
    args = _args(message)
    user_id = parse_id(args[0]) if args else None
    if user_id is None:
        _usage(ctx, message, data, "/ban <user_id> [reason]")
        return
    if ctx.is_admin(user_id):
        ctx.say(message.chat.id, data["lang"], "admin_cannot_ban_admin")
        return
    reason = message.text.split(maxsplit=2)[2][:500] if len(args) > 1 else None
    with ctx.transaction() as conn:
        blacklist.ban(conn, user_id, reason, message.from_user.id)
        audit.record(conn, actor_id=message.from_user.id, action="ban", target_user_id=user_id,
                     details={"reason": reason})
    ctx.cache.set_banned(user_id, True)
    ctx.say(message.chat.id, data["lang"], "admin_banned", user_id=user_id)


@admin_only("unban")
def unban(ctx, message, data) -> None:
    args = _args(message)
    user_id = parse_id(args[0]) if len(args) == 1 else None
    if user_id is None:
        _usage(ctx, message, data, "/unban <user_id>")
        return
    with ctx.transaction() as conn:
        removed = blacklist.unban(conn, user_id)
        audit.record(conn, actor_id=message.from_user.id, action="unban", target_user_id=user_id,
                     details={"was_banned": removed})
    ctx.cache.set_banned(user_id, False)
    ctx.say(message.chat.id, data["lang"], "admin_unbanned" if removed else "admin_not_banned", user_id=user_id)


# --- deposit levels

def _describe_levels(ctx, current) -> str:
    return "\n".join(f"{lvl.level}: {lvl.min_tokens}-{lvl.max_tokens} {ctx.token.symbol}" for lvl in current)


@admin_only("levels")
def show_levels(ctx, message, data) -> None:
    with ctx.transaction() as conn:
        current = levels.current(conn)
        audit.record(conn, actor_id=message.from_user.id, action="levels")
    version = current[0].version if current else 0
    ctx.say(message.chat.id, data["lang"], "admin_levels", version=version, levels=_describe_levels(ctx, current))


@admin_only("setlevels")
def set_levels(ctx, message, data) -> None:
    args = _args(message)
    if not args:
        _usage(ctx, message, data, "/setlevels 10-100,100-1000,1000-10000")
        return
    try:
        ranges = levels.parse_ranges("".join(args))
        for low, high in ranges:  # every bound must be expressible in the token's decimals
            parse_amount(low, ctx.token.decimals)
            parse_amount(high, ctx.token.decimals)
    except AmountError as exc:
        ctx.say(message.chat.id, data["lang"], "admin_bad_levels", reason=str(exc))
        return
    with ctx.transaction() as conn:
        version = levels.replace(conn, ranges, message.from_user.id)
        audit.record(conn, actor_id=message.from_user.id, action="setlevels",
                     details={"version": version, "ranges": ranges})
        current = levels.current(conn)
    ctx.cache.put_levels(current)  # users see the new levels at once
    ctx.say(message.chat.id, data["lang"], "admin_levels_set", version=version, levels=_describe_levels(ctx, current))


# --- settings

@admin_only("settings")
def show_settings(ctx, message, data) -> None:
    with ctx.transaction() as conn:
        rows = system_settings.all_settings(conn)
        audit.record(conn, actor_id=message.from_user.id, action="settings")
    text = "\n".join(f"{row['key']} = {row['value']}" for row in rows)
    ctx.say(message.chat.id, data["lang"], "admin_settings", settings=text)


@admin_only("set")
def set_setting(ctx, message, data) -> None:
    parts = (message.text or "").split(maxsplit=2)
    if len(parts) != 3 or parts[1] not in SETTING_RULES:
        _usage(ctx, message, data, f"/set <{'|'.join(SETTING_RULES)}> <value>")
        return
    key, raw = parts[1], parts[2].strip()
    try:
        value = SETTING_RULES[key](ctx, raw)
    except ValueError as exc:
        ctx.say(message.chat.id, data["lang"], "admin_bad_setting", reason=str(exc))
        return
    with ctx.transaction() as conn:
        old = system_settings.get(conn, key)
        system_settings.put(conn, key, value, message.from_user.id)
        audit.record(conn, actor_id=message.from_user.id, action="set", details={"key": key, "old": old, "new": value})
    ctx.cache.forget("settings")
    ctx.say(message.chat.id, data["lang"], "admin_setting_saved", setting=key, value=value)


def _token_amount(ctx, text: str, allow_zero: bool) -> str:
    """A whole-token decimal valid for this token; stored as a JSON string, never a float."""
    units = parse_amount(text, ctx.token.decimals, allow_zero=allow_zero)  # AmountError is a ValueError
    return ctx.amount(units)


def _short_text(text: str) -> str:
    if not 0 < len(text) <= SUPPORT_CONTACT_MAX_CHARS or any(not ch.isprintable() for ch in text):
        raise ValueError(f"1 to {SUPPORT_CONTACT_MAX_CHARS} printable characters")
    return text


# --- overview

@admin_only("stats")
def show_stats(ctx, message, data) -> None:
    with ctx.transaction() as conn:
        summary = stats.summary(conn)
        audit.record(conn, actor_id=message.from_user.id, action="stats")
    lang = data["lang"]
    none = t(lang, "none")
    ctx.say(message.chat.id, lang, "admin_stats", users=summary["users"], balances=ctx.amount(summary["balances"]),
            symbol=ctx.token.symbol,
            deposits=", ".join(f"{t(lang, 'status_' + k)} {v}" for k, v in summary["deposits"].items()) or none,
            withdrawals=", ".join(f"{t(lang, 'status_' + k)} {v}" for k, v in summary["withdrawals"].items()) or none)


@admin_only("status")
def show_status(ctx, message, data) -> None:
    lang = data["lang"]
    database = t(lang, "ok")
    try:
        with ctx.transaction() as conn:
            conn.execute("SELECT 1")
            audit.record(conn, actor_id=message.from_user.id, action="status")
    except Exception:  # /status must answer whatever is down
        database = t(lang, "down")
    try:
        redis_state = t(lang, "ok") if ctx.redis_breaker.call(ctx.redis.ping) else t(lang, "down")
    except Exception:
        redis_state = t(lang, "down")
    ctx.say(message.chat.id, lang, "admin_status", database=database, redis=redis_state,
            **chain_summary(ctx, lang))


def chain_summary(ctx, lang: str) -> dict:
    """Maintenance (and why), the worker's RPC breaker, hot wallet funds, queued notifications."""
    try:
        pause = ctx.chain_pause()
        rpc = ctx.worker_rpc_status()
        with ctx.transaction() as conn:
            wallet = service_status.get(conn, "hot_wallet")
            nonce = service_status.get(conn, "hot_wallet_nonce")
            queued = notifications.pending_count(conn)
    except Exception:  # /status must answer whatever is down
        return {"maintenance": t(lang, "unknown"), "rpc": t(lang, "unknown"), "hot_wallet": t(lang, "unknown"),
                "queued": t(lang, "unknown"), "scan": t(lang, "unknown")}
    if pause is None:
        maintenance = t(lang, "off")
    elif pause[0] == "manual":
        maintenance = t(lang, "maintenance_manual")
    else:
        maintenance = t(lang, "maintenance_auto", state=pause[1])
    rpc_text = t(lang, "unknown") if rpc is None else rpc["breaker"] + (
        f" ({rpc['last_error']})" if rpc.get("last_error") and rpc["breaker"] != "CLOSED" else "")
    short = wallet and wallet["status"].get("short")
    if nonce and nonce["status"].get("ahead"):
        hot_wallet = t(lang, "nonce_ahead", unknown=nonce["status"]["unknown"])
    else:
        hot_wallet = t(lang, "funds_short") if short else t(lang, "ok")
    return {"maintenance": maintenance, "rpc": rpc_text, "queued": queued, "hot_wallet": hot_wallet,
            "scan": scan_progress(rpc or {}, lang)}


@admin_only("unattributed")
def show_unattributed(ctx, message, data) -> None:
    with ctx.transaction() as conn:
        rows = deposits.unattributed(conn, 20)
        audit.record(conn, actor_id=message.from_user.id, action="unattributed")
    lang = data["lang"]
    if not rows:
        ctx.say(message.chat.id, lang, "admin_unattributed_empty")
        return
    lines = [t(lang, "admin_unattributed_item", id=r["id"], amount=ctx.amount(r["credited_amount"]),
               symbol=ctx.token.symbol, address=r["from_address"], tx_hash=r["tx_hash"]) for r in rows]
    ctx.send(message.chat.id, "\n".join(lines))


@admin_only("assign")
def assign_deposit(ctx, message, data) -> None:
    """/assign <deposit id> <telegram id>: credit an unattributed transfer to that user, once."""
    args, lang, chat_id = _args(message), data["lang"], message.chat.id
    deposit_id, user_id = (parse_id(args[0]), parse_id(args[1])) if len(args) == 2 else (None, None)
    if deposit_id is None or user_id is None:
        _usage(ctx, message, data, "/assign <deposit_id> <user_id>")
        return
    try:
        with ctx.transaction() as conn:
            if users.get(conn, user_id) is None:
                ctx.say(chat_id, lang, "admin_assign_no_user", user_id=user_id)
                return
            result = deposits.assign(conn, deposit_id, user_id)
            row, notice = result.deposit, None
            if result.credited:
                audit.record(conn, actor_id=message.from_user.id, action="assign", target_user_id=user_id,
                             details={"deposit": deposit_id, "tx_hash": row["tx_hash"], "log_index": row["log_index"],
                                      "amount": str(row["credited_amount"])})
                notice = notifications.enqueue(
                    conn, user_id, "notify_deposit_assigned",
                    {"id": deposit_id, "amount": ctx.amount(row["credited_amount"]), "symbol": ctx.token.symbol,
                     "balance": ctx.amount(ledger.balance(conn, user_id))},
                    f"deposit-assigned:{deposit_id}")
    except NotFound:
        ctx.say(chat_id, lang, "admin_assign_not_found", id=deposit_id)
        return
    except InvalidTransition:
        with ctx.transaction() as conn:
            owner = deposits.get(conn, deposit_id)["user_id"]
        ctx.say(chat_id, lang, "admin_assign_already", id=deposit_id, user_id=owner)
        return
    if not result.credited:
        ctx.say(chat_id, lang, "admin_assign_already", id=deposit_id, user_id=user_id)
        return
    ctx.cache.forget_user(user_id)  # credited
    ctx.say(chat_id, lang, "admin_assigned", id=deposit_id, amount=ctx.amount(row["credited_amount"]),
            symbol=ctx.token.symbol, user_id=user_id)
    delivery.deliver(ctx, [notice])
