"""Deliver queued notifications through the Bot API, in each user's language."""
import logging

from telebot.types import InlineKeyboardButton, InlineKeyboardMarkup

from botapi import client
from core.i18n import CATALOG, t
from db import notifications, users

log = logging.getLogger(__name__)

BATCH = 20


def deliver(wctx, ids: list[int] | None = None, stopping=lambda: False) -> int:
    """Send due notifications (only `ids`, if given); a transient failure retries later.

    The bot calls this right after committing an event, so users hear at once; the
    worker calls it on a schedule and picks up whatever that first attempt left.
    """
    ids = [i for i in ids if i is not None] if ids is not None else None
    if ids == []:
        return 0
    with wctx.transaction() as conn:
        batch = notifications.claim(conn, BATCH, ids=ids)
    sent = 0
    for row in batch:
        if stopping():
            break  # unsent rows come back when their lease ends
        sent += _deliver_one(wctx, row)
    return sent


def _deliver_one(wctx, row: dict) -> int:
    payload = row["payload"]
    with wctx.transaction() as conn:
        user = users.get(conn, row["chat_id"])
    language = user["language"] if user else wctx.settings.default_language
    try:
        text, markup = render(language, payload)
    except RenderError as exc:  # a poison row fails alone; the rows behind it still go out
        _record_failure(wctx, row, str(exc), permanent=True)
        return 0
    try:
        client.call(wctx.bot.send_message, row["chat_id"], text, reply_markup=markup, idempotent=False)
    except client.SendFailed as exc:
        _record_failure(wctx, row, str(exc), permanent=exc.permanent, blocked=exc.blocked)
        return 0
    with wctx.transaction() as conn:
        notifications.mark_sent(conn, row["id"])
    return 1


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


def _record_failure(wctx, row: dict, error: str, permanent: bool, blocked: bool = False) -> None:
    log.log(logging.WARNING if permanent else logging.INFO, "notification %s to %s not delivered: %s",
            row["id"], row["chat_id"], error)
    with wctx.transaction() as conn:
        notifications.mark_failed_attempt(conn, row["id"], error, permanent)
        if blocked:
            users.set_blocked_bot(conn, row["chat_id"], True)
