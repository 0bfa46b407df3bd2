"""Inline keyboards and the callback data they carry (at most 64 bytes, parsed strictly)."""
import re
from dataclasses import dataclass

from telebot.types import InlineKeyboardButton, InlineKeyboardMarkup

from core.i18n import t

MENU_ACTIONS = ("deposit", "balance", "withdraw", "history", "wallet", "lang")
_PATTERNS = {
    "menu": re.compile(r"m:(deposit|balance|withdraw|history|wallet|lang)"),
    "lang": re.compile(r"l:(ru|en)"),
    "level": re.compile(r"dl:(\d{1,9}):(\d{1,4})"),
    "withdraw_all": re.compile(r"wa"),
    "withdraw_confirm": re.compile(r"wc:([0-9a-f]{8})"),
    "withdraw_cancel": re.compile(r"wx:([0-9a-f]{8})"),
    "approve": re.compile(r"ap:(\d{1,18})"),
    "reject": re.compile(r"rj:(\d{1,18})"),
}


@dataclass(frozen=True)
class Callback:
    kind: str
    args: tuple


def parse(data: str | None) -> Callback | None:
    """Callback data as (kind, args), or None for anything this bot did not produce."""
    if not data or len(data.encode()) > 64:
        return None
    for kind, pattern in _PATTERNS.items():
        match = pattern.fullmatch(data)
        if match:
            return Callback(kind, match.groups())
    return None


def _markup(rows: list[list[tuple[str, str]]]) -> InlineKeyboardMarkup:
    markup = InlineKeyboardMarkup()
    for row in rows:
        markup.row(*[InlineKeyboardButton(text, callback_data=data) for text, data in row])
    return markup


def main_menu(lang: str) -> InlineKeyboardMarkup:
    labels = {action: t(lang, f"btn_{'language' if action == 'lang' else action}") for action in MENU_ACTIONS}
    return _markup([[(labels["deposit"], "m:deposit"), (labels["balance"], "m:balance")],
                    [(labels["withdraw"], "m:withdraw"), (labels["history"], "m:history")],
                    [(labels["wallet"], "m:wallet"), (labels["lang"], "m:lang")]])


def languages() -> InlineKeyboardMarkup:
    return _markup([[("Русский", "l:ru"), ("English", "l:en")]])


def deposit_levels(lang: str, buttons: list[tuple[int, int, str, str]], symbol: str) -> InlineKeyboardMarkup:
    """buttons: (version, level, low, high) with low/high as display text."""
    return _markup([[(t(lang, "btn_level", level=level, low=low, high=high, symbol=symbol), f"dl:{version}:{level}")]
                    for version, level, low, high in buttons])


def withdraw_all(lang: str) -> InlineKeyboardMarkup:
    return _markup([[(t(lang, "btn_all"), "wa")]])


def withdraw_confirm(lang: str, draft: str) -> InlineKeyboardMarkup:
    return _markup([[(t(lang, "btn_confirm"), f"wc:{draft}"), (t(lang, "btn_cancel"), f"wx:{draft}")]])


def approve_reject(lang: str, withdrawal_id: int) -> InlineKeyboardMarkup:
    return _markup([[(t(lang, label, **values), data) for label, values, data in row]
                    for row in approve_reject_rows(withdrawal_id)])


def approve_reject_rows(withdrawal_id: int) -> list:
    """The Approve / Reject buttons as a queued notice carries them: [text key, values, callback data]."""
    values = {"id": withdrawal_id}
    return [[["btn_approve", values, f"ap:{withdrawal_id}"], ["btn_reject", values, f"rj:{withdrawal_id}"]]]
