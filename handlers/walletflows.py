"""/wallet: bind a wallet the user proves to own, by signing one line of text with it.

/wallet asks for the address; /wallet <address> (or the address as the next
message) answers with the text to sign; the signature comes as the next message,
or in one go as /wallet <address> <signature>. The binding is recorded at the chain
head read after the proof was accepted, so only transfers mined later count as the
user's; while the head cannot be read, nothing is bound.
"""
from core.addresses import parse_address
from core.errors import RebindRefused, SignatureError, WalletInUse
from core.i18n import t
from core.wallet_proof import parse_signature, proof_text, proves
from db import deposits, wallets
from handlers.common import acceptable_address, command_args, ensure_registered

WALLET_ADDRESS = "wallet_address"
WALLET_SIGNATURE = "wallet_signature"


def wallet(ctx, message, data) -> None:
    user = ensure_registered(ctx, message, data)
    chat_id, lang_code = message.chat.id, data["lang"]
    args = command_args(message)
    if len(args) == 1:
        ask_for_signature(ctx, chat_id, user, lang_code, args[0])
        return
    if len(args) == 2:
        address = checked_address(ctx, chat_id, user, lang_code, args[0])
        if address:
            bind(ctx, chat_id, user, lang_code, address, args[1])
        return
    current = user["wallet_address"]
    if current:
        ctx.say(chat_id, lang_code, "wallet_current", address=parse_address(current))
    else:
        ctx.say(chat_id, lang_code, "wallet_none")
    ctx.set_dialog(chat_id, user["id"], WALLET_ADDRESS)
    ctx.say(chat_id, lang_code, "wallet_ask")


def checked_address(ctx, chat_id: int, user: dict, lang_code: str, text: str) -> str | None:
    """The address, if it may become this user's wallet now; otherwise None after saying why."""
    address = acceptable_address(ctx, chat_id, lang_code, text, refusal="wallet_forbidden")
    if address is None:
        return None
    with ctx.transaction() as conn:
        taken = wallets.bound_to_other(conn, user["id"], address)
        current = wallets.current(conn, user["id"])
        blockers = wallets.rebind_blockers(conn, user["id"]) if current else ([], [])
    if taken:
        ctx.say(chat_id, lang_code, "wallet_taken")
        return None
    if current and current["address"] != address.lower() and any(blockers):
        say_rebind_blocked(ctx, chat_id, lang_code, *blockers)
        return None
    return address


def ask_for_signature(ctx, chat_id: int, user: dict, lang_code: str, text: str) -> None:
    address = checked_address(ctx, chat_id, user, lang_code, text)
    if address is None:
        return
    ctx.set_dialog(chat_id, user["id"], WALLET_SIGNATURE, {"address": address})
    ctx.say(chat_id, lang_code, "wallet_sign", address=address)
    ctx.send(chat_id, proof_text(address, user["id"]))  # alone, so it can be copied as it is


def bind(ctx, chat_id: int, user: dict, lang_code: str, address: str, signature_text: str) -> bool:
    """Check the signature, read the chain head, record the binding; any refusal binds nothing."""
    try:
        signature = parse_signature(signature_text)
    except SignatureError:
        ctx.say(chat_id, lang_code, "wallet_signature_malformed")
        return False
    if not proves(address, user["id"], signature):
        ctx.say(chat_id, lang_code, "wallet_signature_wrong", address=address)
        return False
    head = ctx.chain_head()
    if head is None:  # never recorded against an older block: the user tries again later
        ctx.set_dialog(chat_id, user["id"], WALLET_SIGNATURE, {"address": address})
        ctx.say(chat_id, lang_code, "wallet_binding_paused")
        return False
    try:
        with ctx.transaction() as conn:
            binding = wallets.bind(conn, user["id"], address, signature, head)
            earlier = deposits.unattributed_from(conn, address, binding["proven_at_block"])
    except WalletInUse:
        ctx.say(chat_id, lang_code, "wallet_taken")
        return False
    except RebindRefused:
        with ctx.transaction() as conn:
            blockers = wallets.rebind_blockers(conn, user["id"])
        say_rebind_blocked(ctx, chat_id, lang_code, *blockers)
        return False
    ctx.end_dialog(chat_id, user["id"])
    ctx.say(chat_id, lang_code, "wallet_bound", address=address)
    if earlier:
        items = ", ".join(t(lang_code, "wallet_earlier_item", id=row["id"], amount=ctx.amount(row["credited_amount"]),
                            symbol=ctx.token.symbol) for row in earlier)
        ctx.say(chat_id, lang_code, "wallet_earlier_transfers", items=items)
    return True


def say_rebind_blocked(ctx, chat_id: int, lang_code: str, open_deposits: list, in_flight: list) -> None:
    items = [t(lang_code, "wallet_blocker_deposit", id=row["id"]) for row in open_deposits]
    items += [t(lang_code, "wallet_blocker_withdrawal", id=row["id"]) for row in in_flight]
    ctx.say(chat_id, lang_code, "wallet_rebind_blocked", items=", ".join(items))


def dialog_text(ctx, chat_id: int, user: dict, lang_code: str, state: str, dialog: dict, value: str) -> None:
    """The next message of a /wallet dialog: the address, then the signature."""
    if state == WALLET_ADDRESS:
        ask_for_signature(ctx, chat_id, user, lang_code, value)
    else:
        bind(ctx, chat_id, user, lang_code, dialog["address"], value)


DIALOG_STATES = (WALLET_ADDRESS, WALLET_SIGNATURE)
