"""Deliver queued notices through the Bot API, in each user's language, at Telegram's pace."""
import logging
import time
from dataclasses import dataclass

from telebot.types import InlineKeyboardButton, InlineKeyboardMarkup

from botapi import client
from core.errors import BreakerOpen, DatabaseError
from core.i18n import CATALOG, t
from db import notifications, users

log = logging.getLogger(__name__)

BATCH = 20
SENT, LATER, FAILED = "sent", "later", "failed"


@dataclass(frozen=True)
class Outcome:
    kind: str                   # SENT, LATER (the pace said wait: no attempt counted) or FAILED
    error: str | None = None
    permanent: bool = False     # FAILED for good: blocked, bad request, cannot render
    retry_in_s: float = 0.0     # LATER: when to try again


def deliver(wctx, ids: list[int] | None = None, stopping=lambda: False, table: str = notifications.OUTBOX,
            pacer=None, sent_keys=None) -> int:
    """Send due notices of `table` (only `ids`, if given); a transient failure retries later.

    The bot calls this right after committing an event, so users hear at once; the
    worker calls it on a schedule (with a pacer) and picks up whatever that first
    attempt left. `sent_keys` (the fallback processor's): a key delivered through the
    stream is marked sent without a second send, and each key sent here is remembered.
    """
    ids = [i for i in ids if i is not None] if ids is not None else None
    if ids == []:
        return 0
    with wctx.transaction() as conn:
        batch = notifications.claim(conn, BATCH, ids=ids, table=table)
    sent = 0
    for row in batch:
        if stopping():
            break  # unsent rows come back when their lease ends
        if sent_keys is not None and sent_keys.seen(row["idempotency_key"]):
            record(wctx, table, row, Outcome(SENT))  # delivered through the stream already
            continue
        outcome = send_notice(wctx, row["chat_id"], row["payload"], pacer)
        record(wctx, table, row, outcome)
        if outcome.kind == SENT and sent_keys is not None:
            sent_keys.remember(row["idempotency_key"])
        sent += outcome.kind == SENT
    return sent


def drain(wctx, budget_s: float, stopping=lambda: False, **options) -> int:
    """deliver() batch after batch while batches send something, for at most `budget_s` (the job's
    share of the scheduler thread): a backlog goes out at the pace, not one batch per run."""
    deadline, total = time.monotonic() + budget_s, 0
    while not stopping() and time.monotonic() < deadline:
        sent = deliver(wctx, stopping=stopping, **options)
        total += sent
        if not sent:
            break
    return total


def send_notice(wctx, chat_id: int, payload: dict, pacer=None) -> Outcome:
    """Render and send one notice; never raises for Telegram's answers."""
    try:
        text, markup = render(language_of(wctx, chat_id), payload)
    except RenderError as exc:  # a poison notice fails alone; the ones behind it still go out
        return Outcome(FAILED, str(exc), permanent=True)
    if pacer is not None:
        wait_s = pacer.reserve(chat_id)
        if wait_s is None:
            return Outcome(LATER, "this chat's pace", retry_in_s=1.0)
        time.sleep(wait_s)
    try:
        client.call(wctx.bot.send_message, chat_id, text, reply_markup=markup, idempotent=False,
                    wait_on_429=pacer is None)
    except client.SendFailed as exc:
        if exc.retry_after is not None and pacer is not None:
            pacer.penalize(chat_id, exc.retry_after)
            return Outcome(LATER, str(exc), retry_in_s=exc.retry_after)
        if exc.blocked:
            mark_blocked(wctx, chat_id)
        return Outcome(FAILED, str(exc), permanent=exc.permanent)
    return Outcome(SENT)


def language_of(wctx, chat_id: int) -> str:
    """The user's language; the default one while PostgreSQL cannot say (stream notices go out then too)."""
    try:
        with wctx.transaction() as conn:
            user = users.get(conn, chat_id)
    except (BreakerOpen, DatabaseError):
        return wctx.settings.default_language
    return user["language"] if user else wctx.settings.default_language


def record(wctx, table: str, row: dict, outcome: Outcome) -> None:
    """Mark a queued row after its send: sent, back for later, or a failed attempt."""
    if outcome.kind == FAILED:
        log.log(logging.WARNING if outcome.permanent else logging.INFO, "notification %s to %s not delivered: %s",
                row["id"], row["chat_id"], outcome.error)
    with wctx.transaction() as conn:
        if outcome.kind == SENT:
            notifications.mark_sent(conn, row["id"], table)
        elif outcome.kind == LATER:
            notifications.retry_in(conn, row["id"], outcome.retry_in_s, table)
        else:
            notifications.mark_failed_attempt(conn, row["id"], outcome.error, outcome.permanent, table)


def mark_blocked(wctx, chat_id: int) -> None:
    """Telegram said 403: the user blocked the bot; the notice is dropped (and logged)."""
    log.info("chat %s blocked the bot: notice dropped", chat_id)
    try:
        with wctx.transaction() as conn:
            users.set_blocked_bot(conn, chat_id, True)
    except (BreakerOpen, DatabaseError) as exc:
        log.warning("could not record that chat %s blocked the bot: %s", chat_id, exc)


class RenderError(Exception):
    """A queued notice that can never be shown: unknown text key, placeholder or button."""


def render(language: str, payload: dict) -> tuple[str, InlineKeyboardMarkup | None]:
    """The notice's text in `language`, and its buttons (rows of [text key, values, callback data])."""
    key = payload.get("text")
    if key not in CATALOG:
        raise RenderError(f"unknown text key {key!r}")
    try:
        text = t(language, key, **payload.get("values", {}))
        rows = payload.get("buttons") or []
        markup = None
        if rows:
            markup = InlineKeyboardMarkup()
            for row in rows:
                markup.row(*[InlineKeyboardButton(t(language, label, **values), callback_data=data)
                             for label, values, data in row])
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise RenderError(f"{key}: cannot render ({type(exc).__name__}: {exc})") from None
    return text, markup
