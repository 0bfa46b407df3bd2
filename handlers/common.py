"""Helpers every flow uses: command arguments, first-contact registration, address checks."""
from core.addresses import canonical, is_zero, parse_address
from core.errors import AddressError
from core.i18n import language_from_telegram
from db import users


def command_args(message) -> list[str]:
    return (message.text or "").split()[1:]


def parse_id(text: str) -> int | None:
    """A record or Telegram id typed as 17 or #17; None for anything else."""
    text = text.lstrip("#")
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None


def ensure_registered(ctx, message, data) -> dict:
    """The user's row, registering them on first contact (any command may come before /start)."""
    if data.get("user"):
        return data["user"]
    tg_user = message.from_user
    lang = language_from_telegram(tg_user.language_code, ctx.settings.default_language)
    with ctx.transaction() as conn:
        user = users.register(conn, tg_user.id, tg_user.username, lang)
    data["user"], data["lang"] = user, user["language"]
    return user


def acceptable_address(ctx, chat_id: int, lang_code: str, text: str, refusal: str) -> str | None:
    """The checksummed address in `text`, or None after telling the user why it will not do."""
    try:
        address = parse_address(text)
    except AddressError as exc:
        ctx.say(chat_id, lang_code, "wallet_invalid", reason=str(exc))
        return None
    if is_zero(address) or canonical(address) in forbidden_addresses(ctx):
        ctx.say(chat_id, lang_code, refusal)
        return None
    return address


def forbidden_addresses(ctx) -> set[str]:
    """Addresses no user may own or withdraw to: ours and the token contract."""
    settings = ctx.settings
    found = {settings.deposit_address, settings.hot_wallet_address, settings.token_address, ctx.token.address,
             *settings.previous_deposit_addresses}
    return {canonical(a) for a in found if a}
