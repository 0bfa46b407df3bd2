"""End to end: bot.py as a subprocess, the Bot API stand-in, real PostgreSQL and Redis.

One bot process serves the whole module; each test talks as its own users, so
tests do not see each other's chats.
"""
import itertools
import json
import re

import pytest
import redis as redis_lib
from eth_account import Account
from eth_account.messages import encode_defunct

from core.i18n import language_from_telegram, t
from core.wallet_proof import proof_text
from devstack import chaintools
from devstack.procs import wait_until
from devstack.telegram_api import BotApiStandIn
from tests.botharness import ADMIN_ID, DEPOSIT_ADDRESS, SYMBOL, BotProcess, Db, seed_token_cache
from tests.conftest import scratch_database
from tests.walletharness import new_key

UNIT = 10**6
_user_ids = itertools.count(20_000)
WALLETS = itertools.count(1)


def new_wallet() -> str:
    return "0x" + f"{next(WALLETS):040x}"


class Chat:
    """One Telegram user talking to the bot in their private chat."""

    def __init__(self, api: BotApiStandIn, user_id: int | None = None, lang: str = "en"):
        self.api, self.lang = api, lang
        self.id = user_id if user_id is not None else next(_user_ids)

    def mark(self) -> int:
        return len(self.api.messages(self.id))

    def send(self, text: str, contains: str | None = None, timeout: float = 10.0, exactly: str | None = None) -> dict:
        """Send `text`; return the first reply (containing `contains` or equal to `exactly`, if given)."""
        after = self.mark()
        self.api.push_message(self.id, text, language_code=self.lang, username=f"u{self.id}")
        predicate = (lambda message: message["text"] == exactly) if exactly is not None else None
        return self.api.wait_for(self.id, predicate, contains=contains, after=after, timeout=timeout)

    def press(self, label: str, contains: str | None = None, edited: bool = False, timeout: float = 10.0) -> dict:
        """Press a button; return the reply (or, with edited=True, the message the press edited)."""
        after = self.mark()
        before = {m["message_id"]: m["edited"] for m in self.api.messages(self.id)}
        self.api.press(self.id, label, language_code=self.lang)
        if edited:
            return self.api.wait_for(self.id, lambda m: m["edited"] > before.get(m["message_id"], 0),
                                     contains=contains, timeout=timeout)
        return self.api.wait_for(self.id, contains=contains, after=after, timeout=timeout)

    def texts(self) -> list[str]:
        return [m["text"] for m in self.api.messages(self.id)]


def button_labels(message: dict) -> list[str]:
    markup = message.get("reply_markup") or {}
    return [button["text"] for row in markup.get("inline_keyboard", []) for button in row]


def hash_id(text: str) -> int:
    return int(re.search(r"#(\d+)", text).group(1))


@pytest.fixture(scope="module")
def api():
    with BotApiStandIn(token="123456:TEST-token_value") as stand_in:
        yield stand_in


@pytest.fixture(scope="module")
def bot_db(pg_server, template_db):
    with scratch_database(pg_server, "bot", template_db) as url:
        seed_token_cache(url)
        yield url


@pytest.fixture(scope="module")
def bot(api, bot_db, redis_server, anvil):
    """The bot reads the chain head from anvil when a wallet proof comes in."""
    redis_lib.Redis.from_url(redis_server.url(1)).flushdb()
    process = BotProcess(api, bot_db, redis_server.url(1), RPC_URL=anvil.url).start()
    yield process
    process.stop()


@pytest.fixture
def db(bot_db, bot):
    """The running bot's database (asking for it starts the bot)."""
    return Db(bot_db)


@pytest.fixture
def user(api, bot):
    return Chat(api)


@pytest.fixture
def admin(api, bot):
    chat = Chat(api, ADMIN_ID)
    chat.send("/start", contains="Welcome")
    return chat


def prove_wallet(chat: Chat, key: str | None = None) -> str:
    """Bind a wallet the way a user does: sign the proof text with its key; return the address."""
    key = key or new_key()
    address = chaintools.address_of(key)
    bound = t(language_from_telegram(chat.lang, "en"), "wallet_bound", address=address)
    chat.send(f"/wallet {address} {chaintools.sign_wallet_proof(key, chat.id)}", exactly=bound)
    return address


def sign_text(key: str, text: str) -> str:
    """personal_sign of any text, as a wallet would sign whatever it is shown."""
    return Account.sign_message(encode_defunct(text=text), key).signature.to_0x_hex()


def registered(api, db, lang="en", wallet=True, balance=0) -> Chat:
    chat = Chat(api, lang=lang)
    chat.send("/start")
    if wallet:
        prove_wallet(chat)
    if balance:
        db.fund(chat.id, balance, f"test:{chat.id}")
    return chat


# --- start, help, language

def test_start_registers_and_shows_menu_in_telegram_language(api, bot, db):
    english, russian = Chat(api, lang="en"), Chat(api, lang="ru-RU")
    menu = english.send("/start")
    assert "Welcome" in menu["text"] and SYMBOL in menu["text"]
    assert button_labels(menu) == ["Deposit", "Balance", "Withdraw", "History", "Wallet", "Language"]
    assert button_labels(russian.send("/start")) == ["Пополнить", "Баланс", "Вывести", "История", "Кошелёк", "Язык"]
    languages = {r["id"]: r["language"] for r in db.rows("SELECT id, language FROM users WHERE id = ANY(%s)",
                                                          ([english.id, russian.id],))}
    assert languages == {english.id: "en", russian.id: "ru"}


def test_help_lists_commands_and_admin_sees_more(user, admin):
    text = user.send("/help")["text"]
    assert "/deposit" in text and "/withdraw" in text and "/pending" not in text
    admin_help = admin.send("/help", contains="Admin commands")["text"].split("Admin commands:")[1]
    described = {line.split()[0]: line.partition(" - ")[2] for line in admin_help.strip().splitlines()}
    assert set(described) == {command.split()[0] for command in ADMIN_COMMANDS} | {"/assign"}
    assert all(len(text) > 10 for text in described.values()), described  # each one says what it does


def test_lang_switches_with_argument_and_buttons(user, db):
    user.send("/start")
    assert user.send("/lang ru")["text"] == "Язык: русский."
    assert "Неизвестный язык" in user.send("/lang de")["text"]
    assert "язык" in user.send("/lang")["text"].lower()
    assert user.press("English")["text"] == "Language: English."
    assert db.value("SELECT language FROM users WHERE id = %s", (user.id,)) == "en"


def test_command_menu_registered_in_both_languages(api, bot):
    commands = api.commands
    assert {c["command"] for c in commands["ru"]} >= {"start", "deposit", "withdraw", "balance"}
    assert commands["ru"][0]["description"] != commands["en"][0]["description"]


# --- wallet

def test_wallet_binding_rules(api, user, db):
    other = registered(api, db)
    taken = db.value("SELECT wallet_address FROM users WHERE id = %s", (other.id,))
    user.send("/start")
    assert "not a valid address" in user.send("/wallet 0x1234")["text"]
    mixed_bad = "0x52908400098527886e0F7030069857D2E4169EE7"
    assert "checksum" in user.send(f"/wallet {mixed_bad}")["text"]
    assert "another user" in user.send(f"/wallet {taken}")["text"]
    assert "cannot be used" in user.send(f"/wallet {DEPOSIT_ADDRESS}")["text"]
    assert "cannot be used" in user.send("/wallet 0x" + "0" * 40)["text"]
    assert db.value("SELECT wallet_address FROM users WHERE id = %s", (user.id,)) is None
    key = new_key()
    good = chaintools.address_of(key)
    user.send(f"/wallet {good.lower()}", exactly=f"Link wallet {good} to Telegram user {user.id}")
    assert "sign the next message" in user.api.messages(user.id)[-2]["text"]
    assert db.value("SELECT wallet_address FROM users WHERE id = %s", (user.id,)) is None
    signature = chaintools.sign_wallet_proof(key, user.id)
    assert user.send(signature)["text"] == f"Wallet bound: {good}"
    assert db.value("SELECT wallet_address FROM users WHERE id = %s", (user.id,)) == good.lower()


def test_wallet_dialog_asks_for_the_address_then_the_signature(user, db):
    user.send("/start")
    user.send("/wallet", contains="Send the address")
    key = new_key()
    address = chaintools.address_of(key)
    user.send(address, exactly=proof_text(address, user.id))
    assert user.send(chaintools.sign_wallet_proof(key, user.id))["text"] == f"Wallet bound: {address}"
    assert db.value("SELECT wallet_address FROM users WHERE id = %s", (user.id,)) == address.lower()
    audit = db.rows("SELECT action, details FROM admin_audit_log WHERE actor_id = %s", (user.id,))
    assert [(row["action"], row["details"]["address"]) for row in audit] == [("wallet_bind", address.lower())]


def test_a_signature_binds_only_its_own_address_for_its_own_user(api, user, db):
    user.send("/start")
    key, stranger_key = new_key(), new_key()
    address, other_address = chaintools.address_of(key), chaintools.address_of(stranger_key)
    refusals = {
        "another key": sign_text(stranger_key, proof_text(address, user.id)),  # the right text, the wrong key
        "another user": chaintools.sign_wallet_proof(key, user.id + 1),        # for someone else's account
        "another address": chaintools.sign_wallet_proof(stranger_key, user.id),  # proves other_address only
        "another text": sign_text(key, f"Link wallet {address} to Telegram user {user.id}!"),
    }
    for case, signature in refusals.items():
        reply = user.send(f"/wallet {address} {signature}")["text"]
        assert "was not made by" in reply and "Nothing was bound" in reply, case
    for garbage in ("0x" + "ab" * 64, "0x" + "00" * 65, "hello", "0x" + "g" * 130):
        assert "Nothing was bound" in user.send(f"/wallet {address} {garbage}")["text"], garbage
    assert db.value("SELECT count(*) FROM wallet_bindings WHERE user_id = %s", (user.id,)) == 0
    assert db.value("SELECT wallet_address FROM users WHERE id = %s", (user.id,)) is None
    other_signature = chaintools.sign_wallet_proof(stranger_key, user.id)
    assert user.send(f"/wallet {other_address} {other_signature}")["text"] == f"Wallet bound: {other_address}"


def test_rebinding_waits_for_open_requests_and_withdrawals(api, db):
    chat = registered(api, db, balance=50 * UNIT)
    first = db.value("SELECT wallet_address FROM users WHERE id = %s", (chat.id,))
    deposit_id = hash_id(chat.send("/deposit 20")["text"])
    key = new_key()
    address = chaintools.address_of(key)
    signature = chaintools.sign_wallet_proof(key, chat.id)
    refused = chat.send(f"/wallet {address} {signature}")["text"]
    assert f"deposit request #{deposit_id}" in refused and "/canceldeposit" in refused
    assert chat.send(f"/canceldeposit {deposit_id}")["text"] == f"Deposit request #{deposit_id} cancelled."
    assert f"no open deposit request #{deposit_id}" in chat.send(f"/canceldeposit {deposit_id}")["text"]
    chat.send("/withdraw 10")
    withdrawal_id = hash_id(chat.press("Confirm", edited=True)["text"])
    assert f"withdrawal #{withdrawal_id}" in chat.send(f"/wallet {address} {signature}")["text"]
    assert db.value("SELECT wallet_address FROM users WHERE id = %s", (chat.id,)) == first
    cancelled = chat.send(f"/cancelwithdrawal {withdrawal_id}")["text"]
    assert cancelled == f"Withdrawal #{withdrawal_id} cancelled. 10 {SYMBOL} returned to your balance."
    chat.send(f"/cancelwithdrawal {withdrawal_id}")  # a second cancel refunds nothing
    assert db.balance(chat.id) == 50 * UNIT
    assert db.value("SELECT count(*) FROM ledger_entries WHERE idempotency_key = %s",
                    (f"withdrawal:{withdrawal_id}:refund",)) == 1
    assert chat.send(f"/wallet {address} {signature}")["text"] == f"Wallet bound: {address}"
    actions = [r["action"] for r in db.rows("SELECT action FROM admin_audit_log WHERE actor_id = %s ORDER BY id",
                                            (chat.id,))]
    assert actions == ["wallet_bind", "wallet_rebind"]


def test_only_ones_own_withdrawal_waiting_for_approval_can_be_cancelled(api, db, admin):
    chat, other = registered(api, db, balance=50 * UNIT), registered(api, db)
    chat.send("/withdraw 10")
    withdrawal_id = hash_id(chat.press("Confirm", edited=True)["text"])
    assert other.send(f"/cancelwithdrawal {withdrawal_id}")["text"] == f"You have no withdrawal #{withdrawal_id}."
    admin.send(f"/approve {withdrawal_id}", contains="approved")
    api.wait_for(chat.id, contains="was approved")  # the user's notice, before the next reply is read
    refused = chat.send(f"/cancelwithdrawal {withdrawal_id}")["text"]
    assert refused == f"Withdrawal #{withdrawal_id} can no longer be cancelled: it is approved."
    for bad in ("", " ²", " ٣", " 1e3", " -1", " 1 2"):  # no id, non-ASCII digits, not a plain number
        assert "Usage" in chat.send(f"/cancelwithdrawal{bad}")["text"], bad
    assert db.balance(chat.id) == 40 * UNIT


def test_binding_waits_while_the_chain_is_unreachable(bot_db, redis_server, anvil):
    with BotApiStandIn(token="123456:TEST-token_value") as own_api:
        process = BotProcess(own_api, bot_db, redis_server.url(3)).start()  # its RPC_URL answers nothing
        try:
            chat = Chat(own_api)
            chat.send("/start")
            key = new_key()
            address = chaintools.address_of(key)
            chat.send(f"/wallet {address}", exactly=proof_text(address, chat.id))
            reply = chat.send(chaintools.sign_wallet_proof(key, chat.id))["text"]
            assert "cannot be bound right now" in reply
            assert Db(bot_db).value("SELECT count(*) FROM wallet_bindings WHERE user_id = %s", (chat.id,)) == 0
        finally:
            process.stop()


def test_admin_assigns_an_unattributed_transfer_once(api, db, admin):
    chat, stranger = registered(api, db), Chat(api)
    deposit_id = db.value("""INSERT INTO deposits (status, from_address, credited_amount, tx_hash, log_index,
                                                   block_number, block_hash, confirmed_at)
                             VALUES ('CONFIRMED', %s, %s, %s, 0, 5, %s, now()) RETURNING id""",
                          ("0x" + "ab" * 20, 7 * UNIT, "0x" + f"{chat.id:064x}", "0x" + "cd" * 32))
    assert "unknown" in stranger.send(f"/assign {deposit_id} {chat.id}")["text"].lower()
    assert f"#{deposit_id}" in admin.send("/unattributed", contains=f"#{deposit_id}")["text"]
    done = admin.send(f"/assign {deposit_id} {chat.id}")["text"]
    assert done == f"Deposit #{deposit_id} (7 {SYMBOL}) credited to user {chat.id}."
    api.wait_for(chat.id, contains=f"Deposit #{deposit_id} of 7 {SYMBOL} was checked by an admin")
    assert "already belongs" in admin.send(f"/assign {deposit_id} {chat.id}")["text"]
    assert "already belongs" in admin.send(f"/assign {deposit_id} {ADMIN_ID}")["text"]
    assert "not a recorded transfer" in admin.send(f"/assign 999999 {chat.id}")["text"]
    assert "has not started" in admin.send(f"/assign {deposit_id} 424242")["text"]
    assert db.balance(chat.id) == 7 * UNIT
    assert db.value("SELECT count(*) FROM admin_audit_log WHERE action = 'assign' AND allowed") == 1


# --- deposit

def test_deposit_needs_a_wallet(api, db):
    chat = registered(api, db, wallet=False)
    assert "/wallet" in chat.send("/deposit 50")["text"]
    assert db.value("SELECT count(*) FROM deposits WHERE user_id = %s", (chat.id,)) == 0


def test_deposit_with_amount_creates_a_request(api, db):
    chat = registered(api, db)
    reply = chat.send("/deposit 50")["text"]
    deposit_id = hash_id(reply)
    assert f"50 {SYMBOL}" in reply and DEPOSIT_ADDRESS.lower() in reply.lower() and "24 h" in reply
    row = db.rows("SELECT * FROM deposits WHERE id = %s", (deposit_id,))[0]
    assert row["user_id"] == chat.id and row["requested_amount"] == 50 * UNIT and row["status"] == "PENDING"
    assert row["level"] == 1


def test_deposit_dialog_with_level_buttons_in_russian(api, db):
    chat = registered(api, db, lang="ru")
    levels = chat.send("/deposit")
    assert button_labels(levels) == [f"Уровень 1: 10-100 {SYMBOL}", f"Уровень 2: 100-1000 {SYMBOL}",
                                     f"Уровень 3: 1000-10000 {SYMBOL}"]
    assert "от 100 и меньше 1000" in chat.press(f"Уровень 2: 100-1000 {SYMBOL}")["text"]
    assert "уровней" in chat.send("50")["text"]  # outside the chosen level
    assert "уровней" in chat.send("1000")["text"]  # the upper bound belongs to the next level
    reply = chat.send("150.5")["text"]
    assert "150.5 USDT" in reply
    assert db.value("SELECT level FROM deposits WHERE id = %s", (hash_id(reply),)) == 2


@pytest.mark.parametrize("amount", ["5", "10001", "-5", "0", "1e309", "NaN", "1,5", "0x10", "9" * 40, "1.0000001"])
def test_deposit_bad_amounts_change_nothing(api, db, amount):
    chat = registered(api, db)
    reply = chat.send(f"/deposit {amount}")["text"]
    assert "#" not in reply and ("Invalid amount" in reply or "deposit level" in reply)
    assert db.value("SELECT count(*) FROM deposits WHERE user_id = %s", (chat.id,)) == 0


@pytest.mark.parametrize("amount", ["-5", "0", "1e309", "NaN", "1,5", "0x10", "9" * 40, "1.0000001", "🙂"])
def test_withdraw_bad_amounts_change_nothing(api, db, amount):
    chat = registered(api, db, balance=50 * UNIT)
    reply = chat.send(f"/withdraw {amount}")["text"]
    assert "Invalid amount" in reply and "#" not in reply
    assert db.value("SELECT count(*) FROM withdrawals WHERE user_id = %s", (chat.id,)) == 0
    assert db.balance(chat.id) == 50 * UNIT


# --- balance and history

def test_balance_and_history(api, db):
    chat = registered(api, db, balance=100 * UNIT)
    deposit_id = hash_id(chat.send("/deposit 20")["text"])
    balance = chat.send("/balance")["text"]
    assert f"Balance: 100 {SYMBOL}" in balance and f"#{deposit_id}" in balance
    history = chat.send("/history")["text"]
    assert f"#{deposit_id} deposit 20 {SYMBOL}" in history


def test_one_chats_messages_arriving_in_one_batch_are_handled_in_order(api, db):
    """After an outage "/deposit" and "50" come in one getUpdates batch: the dialog must see them in order."""
    chats = [registered(api, db) for _ in range(4)]
    api.set_delay(1.5, "getUpdates")  # the bot's next poll collects everything pushed meanwhile
    try:
        chats[0].send("/balance", contains="Balance")  # ends the poll in flight; the next one waits
        for chat in chats:
            api.push_message(chat.id, "/deposit", language_code="en")
            api.push_message(chat.id, "50", language_code="en")
    finally:
        api.set_delay(0, "getUpdates")
    for chat in chats:
        api.wait_for(chat.id, contains="Deposit request #")
        assert "I did not understand" not in " ".join(chat.texts())
        assert db.value("SELECT count(*) FROM deposits WHERE user_id = %s AND requested_amount = %s",
                        (chat.id, 50 * UNIT)) == 1


# --- withdraw

def test_withdraw_to_bound_wallet_with_confirmation(api, db):
    chat = registered(api, db, balance=100 * UNIT)
    preview = chat.send("/withdraw 40")
    assert f"Withdraw 40 {SYMBOL}" in preview["text"] and button_labels(preview) == ["Confirm", "Cancel"]
    assert db.value("SELECT count(*) FROM withdrawals WHERE user_id = %s", (chat.id,)) == 0
    result = chat.press("Confirm", edited=True)
    withdrawal_id = hash_id(result["text"])
    assert "waiting for approval" in result["text"]
    assert db.balance(chat.id) == 60 * UNIT
    assert db.value("SELECT status FROM withdrawals WHERE id = %s", (withdrawal_id,)) == "REQUESTED"


def test_the_admins_notice_of_a_request_is_queued_with_the_request(api, db, admin):
    """Telegram fails while the admin is told: the notice stays queued (with its buttons) for the worker."""
    chat = registered(api, db, balance=100 * UNIT)
    chat.send("/withdraw 7")
    api.fail_next("sendMessage", status=502, count=3)  # every attempt of the bot's immediate delivery
    withdrawal_id = hash_id(chat.press("Confirm", edited=True)["text"])
    queued = lambda: db.rows("""SELECT status, attempts, payload FROM notification_outbox
                                WHERE idempotency_key = %s""", (f"withdrawal-requested:{withdrawal_id}:admin:{ADMIN_ID}",))
    wait_until(lambda: queued() and queued()[0]["attempts"] == 1, 15, "the failed delivery to be recorded")
    row = queued()[0]
    assert row["status"] == "PENDING" and row["payload"]["text"] == "admin_pending_item"
    assert [b[2] for b in row["payload"]["buttons"][0]] == [f"ap:{withdrawal_id}", f"rj:{withdrawal_id}"]


def test_double_tap_on_confirm_creates_one_withdrawal(api, db):
    chat = registered(api, db, balance=100 * UNIT)
    preview = chat.send("/withdraw 30")
    data = [b["callback_data"] for row in preview["reply_markup"]["inline_keyboard"] for b in row][0]
    taps = {api.push_callback(chat.id, data, message_id=preview["message_id"]) for _ in range(5)}
    api.wait_for(chat.id, lambda m: "#" in m["text"])
    answered = lambda: taps <= {a["callback_query_id"] for a in api.callback_answers}
    wait_until(answered, 10, "every tap to be handled")  # count only once all five are done
    assert db.value("SELECT count(*) FROM withdrawals WHERE user_id = %s", (chat.id,)) == 1
    assert db.balance(chat.id) == 70 * UNIT


def test_withdraw_all_with_fee_and_minimum(api, db, admin):
    chat = registered(api, db, balance=10 * UNIT)
    assert f"fee 0 {SYMBOL}" in chat.send("/withdraw")["text"]  # the settings are cached now
    admin.send("/set withdrawal_fee 1.5", contains="withdrawal_fee")
    try:
        assert f"fee 1.5 {SYMBOL}" in chat.send("/withdraw")["text"]  # the change reached the cache at once
        preview = chat.send("/withdraw all")["text"]
        assert f"Withdraw 8.5 {SYMBOL}" in preview and f"Fee: 1.5 {SYMBOL}" in preview
        assert "Not enough funds" in chat.send("/withdraw 9")["text"]
        assert "minimum" in chat.send("/withdraw 0.5")["text"]
        assert "waiting for approval" in chat.press("Confirm", edited=True)["text"]
        assert db.balance(chat.id) == 0
    finally:
        admin.send("/set withdrawal_fee 0", contains="withdrawal_fee")


def test_withdraw_dialog_to_explicit_address_and_cancel(api, db):
    chat = registered(api, db, balance=50 * UNIT)
    chat.send("/withdraw", contains="Send the amount")
    target = new_wallet()
    preview = chat.send(f"/withdraw 5 {target}")
    assert target.lower() in preview["text"].lower()
    confirm = preview["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    assert chat.press("Cancel", edited=True)["text"] == "Cancelled."
    before = len(api.callback_answers)
    api.push_callback(chat.id, confirm, message_id=preview["message_id"])  # Confirm after Cancel
    wait_until(lambda: len(api.callback_answers) > before, 10, "the callback answer")
    assert api.callback_answers[-1]["text"] == "This button is no longer valid."
    assert db.value("SELECT count(*) FROM withdrawals WHERE user_id = %s", (chat.id,)) == 0


def test_auto_approved_withdrawal(api, bot_db, redis_server, anvil):
    """WITHDRAWAL_AUTO_APPROVE_MAX: a second bot process with a different setting."""
    with BotApiStandIn(token="123456:TEST-token_value") as own_api:
        process = BotProcess(own_api, bot_db, redis_server.url(2), WITHDRAWAL_AUTO_APPROVE_MAX="10",
                             WITHDRAWAL_DAILY_MAX="15", RPC_URL=anvil.url).start()
        try:
            db = Db(bot_db)
            chat = registered(own_api, db, balance=50 * UNIT)
            chat.send("/withdraw 10")
            assert "Status: approved" in chat.press("Confirm", edited=True)["text"]
            chat.send("/withdraw 11")
            assert "waiting for approval" in chat.press("Confirm", edited=True)["text"]
            chat.send("/withdraw 6")  # under the automatic limit, but 16 in 24 h is past the daily one
            assert "waiting for approval" in chat.press("Confirm", edited=True)["text"]
        finally:
            process.stop()


def _answer_text(api, chat, label) -> str:
    """Press a (stale) button and return the text of its callback answer."""
    before = len(api.callback_answers)
    api.press(chat.id, label)
    wait_until(lambda: len(api.callback_answers) > before, 10, "the callback answer")
    return api.callback_answers[-1].get("text") or ""


# --- admin

def test_admin_approves_and_rejects_with_refund_and_user_is_told(api, db, admin):
    chat = registered(api, db, lang="ru", balance=100 * UNIT)
    chat.send("/withdraw 10")
    first = hash_id(chat.press("Подтвердить", edited=True)["text"])
    chat.send("/withdraw 20")
    second = hash_id(chat.press("Подтвердить", edited=True)["text"])
    pending = admin.send("/pending", contains=f"#{first}")
    assert f"Approve #{first}" in button_labels(pending)
    admin.press(f"Approve #{first}", contains=f"#{first} approved")
    chat.api.wait_for(chat.id, contains=f"#{first}", after=0, predicate=lambda m: "одобрен" in m["text"])
    admin.send(f"/reject {second} address looks wrong", contains="rejected and refunded")
    told = api.wait_for(chat.id, contains="отклонён")
    assert f"#{second}" in told["text"] and "address looks wrong" in told["text"]
    assert db.balance(chat.id) == 90 * UNIT
    admin.send(f"/reject {second}", contains="is already rejected.")  # in words, not an enum name
    assert db.balance(chat.id) == 90 * UNIT
    admin.send("/approve 99999999", contains="does not exist")
    admin.send("/approve abc", contains="Usage")


ADMIN_COMMANDS = ["/pending", "/approve 1", "/reject 1 x", "/ban 5", "/unban 5", "/levels", "/setlevels 10-100,100-1000,1000-10000",
                  "/settings", "/set withdrawal_fee 0", "/stats", "/status", "/unattributed"]


@pytest.mark.parametrize("command", ADMIN_COMMANDS)
def test_non_admin_gets_the_unknown_command_reply_and_is_audited(api, db, user, command):
    unknown = user.send("/nosuchcommand")["text"]
    assert user.send(command)["text"] == unknown
    audited = db.rows("SELECT * FROM admin_audit_log WHERE actor_id = %s AND NOT allowed", (user.id,))
    assert len(audited) == 1 and audited[0]["details"]["text"] == command


@pytest.mark.parametrize("command", ADMIN_COMMANDS)
def test_admin_commands_answer_the_admin(admin, command):
    unknown = "Unknown command. Send /help for the list of commands."
    after = admin.mark()
    admin.send(command)
    # a sentinel: the bot handles it only after every message of the command's reply (e.g. /pending) is out
    sentinel = admin.send("/nosuchcommand", contains=unknown)
    replies = [m for m in admin.api.messages(admin.id)[after:] if m["message_id"] < sentinel["message_id"]]
    assert replies and all(m["text"] != unknown for m in replies)


def test_ban_and_unban(api, db, admin):
    chat = registered(api, db)
    admin.send(f"/ban {chat.id} spam", contains="banned")
    for text in ["/start", "/balance", "hello", "/withdraw 5"]:
        assert chat.send(text)["text"] == "Access restricted."
    assert "Access restricted" in _answer_text(api, chat, "Deposit")
    admin.send(f"/ban {ADMIN_ID}", contains="Admins cannot be banned")
    admin.send(f"/unban {chat.id}", contains="unbanned")
    assert "Balance" in chat.send("/balance")["text"]
    actions = [r["action"] for r in db.rows("""SELECT action FROM admin_audit_log
                                               WHERE target_user_id = %s AND actor_id = %s ORDER BY id""",
                                            (chat.id, ADMIN_ID))]
    assert actions == ["ban", "unban"]


def test_levels_and_new_version(api, db, admin):
    admin.send("/levels", contains="1: 10-100")
    chat = registered(api, db)
    old = hash_id(chat.send("/deposit 50")["text"])
    admin.send("/setlevels 10-5", contains="Invalid levels")
    admin.send("/setlevels 20-200,201-2000", contains="each level starts where the one before ends")
    reply = admin.send("/setlevels 20-200,200-2000", contains="New deposit levels")["text"]
    assert "1: 20-200" in reply
    try:
        assert "deposit level" in chat.send("/deposit 15")["text"]
        new = hash_id(chat.send("/deposit 150")["text"])
        versions = db.rows("SELECT id, level_version FROM deposits WHERE id IN (%s, %s) ORDER BY id", (old, new))
        assert versions[0]["level_version"] < versions[1]["level_version"]
    finally:
        admin.send("/setlevels 10-100,100-1000,1000-10000", contains="New deposit levels")


def test_users_see_levels_from_the_cache_and_a_change_at_once(api, db, admin, redis_server):
    cache = redis_lib.Redis.from_url(redis_server.url(1))
    chat = registered(api, db)
    cache.delete("cache:levels")  # a miss: read from PostgreSQL and cached
    assert button_labels(chat.send("/deposit"))[0] == f"Level 1: 10-100 {SYMBOL}"
    cached = json.loads(cache.get("cache:levels"))
    assert [row["max_tokens"] for row in cached["value"]] == ["100", "1000", "10000"]
    cached["value"][0]["min_tokens"] = "11"  # a copy only the cache has: shown means read from it
    cache.set("cache:levels", json.dumps(cached))
    assert button_labels(chat.send("/deposit"))[0] == f"Level 1: 11-100 {SYMBOL}"
    try:
        admin.send("/setlevels 20-200,200-2000", contains="New deposit levels")
        assert button_labels(chat.send("/deposit")) == [f"Level 1: 20-200 {SYMBOL}", f"Level 2: 200-2000 {SYMBOL}"]
    finally:
        admin.send("/setlevels 10-100,100-1000,1000-10000", contains="New deposit levels")
    assert button_labels(chat.send("/deposit"))[0] == f"Level 1: 10-100 {SYMBOL}"


def test_settings_are_validated(admin, db):
    admin.send("/set withdrawal_fee -1", contains="Invalid setting")
    admin.send("/set min_withdrawal 0", contains="Invalid setting")
    admin.send("/set nosuch 1", contains="Usage")
    admin.send("/set min_withdrawal 2.50", exactly="min_withdrawal = 2.5")
    admin.send("/set support_contact @desk_of_support", contains="support_contact")
    try:
        assert "Questions? Write to @desk_of_support." in Chat(admin.api).send("/help")["text"]  # users see it
        assert db.value("SELECT value FROM system_settings WHERE key = 'min_withdrawal'") == "2.5"
        admin.send("/settings", contains="min_withdrawal")
    finally:
        admin.send("/set min_withdrawal 1", contains="min_withdrawal")
        admin.send("/set support_contact @support", contains="support_contact")


def test_stats_and_status(admin):
    admin.send("/stats", contains="Users:")
    status = admin.send("/status", contains="Database:")["text"]
    assert "Database: ok" in status and "Redis: ok" in status


# --- bad input

@pytest.mark.parametrize("text", ["hello", "🙂🙂🙂", "'; DROP TABLE users; --", "/nosuch", "x" * 4000,
                                  "/withdraw 1 2 3 4"])
def test_bad_input_gets_a_clear_reply_and_changes_nothing(api, db, text):
    chat = registered(api, db, balance=5 * UNIT)
    before = db.rows("SELECT count(*) AS n FROM withdrawals UNION ALL SELECT count(*) FROM deposits")
    reply = chat.send(text)["text"]
    assert reply and "#" not in reply
    assert db.rows("SELECT count(*) AS n FROM withdrawals UNION ALL SELECT count(*) FROM deposits") == before
    assert db.balance(chat.id) == 5 * UNIT


def test_forged_callbacks_are_refused(api, db, admin):
    chat = registered(api, db, balance=100 * UNIT)
    chat.send("/withdraw 10")
    withdrawal_id = hash_id(chat.press("Confirm", edited=True)["text"])
    menu = chat.send("/start")
    for forged in [f"ap:{withdrawal_id}", f"rj:{withdrawal_id}", "wc:deadbeef", "junk", "m:root"]:
        api.push_callback(chat.id, forged, message_id=menu["message_id"])
    api.wait_for(chat.id, lambda m: m["text"] == "Unknown command. Send /help for the list of commands.")
    other = registered(api, db, balance=100 * UNIT)
    preview = other.send("/withdraw 10")
    confirm = preview["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    mine = chat.send("/start")
    api.push_callback(chat.id, confirm, message_id=mine["message_id"])  # someone else's draft
    wait_until(lambda: any(a.get("text") == "This button is no longer valid." for a in api.callback_answers),
               10, "the stale-button answer")
    assert db.value("SELECT status FROM withdrawals WHERE id = %s", (withdrawal_id,)) == "REQUESTED"
    assert db.value("SELECT count(*) FROM withdrawals WHERE user_id = %s", (other.id,)) == 0


def test_the_bot_sent_nothing_the_spec_rejects(api, bot):
    assert api.rejections == []


@pytest.mark.parametrize("lang", ["en", "ru"])
def test_every_user_flow_in_both_languages(api, db, lang):
    """One walk through every user flow, checking each reply is the catalog text of that language."""
    from core.addresses import parse_address
    chat = Chat(api, lang=lang)
    assert chat.send("/start")["text"] == t(lang, "welcome", symbol=SYMBOL)
    contact = db.value("SELECT value FROM system_settings WHERE key = 'support_contact'")  # seeded: @support
    assert chat.send("/help")["text"] == t(lang, "help") + "\n\n" + t(lang, "help_support", contact=contact)
    assert chat.send("/cancel")["text"] == t(lang, "nothing_to_cancel")
    assert chat.send("/deposit 50")["text"] == t(lang, "wallet_needed")
    chat.send("/wallet", contains=t(lang, "wallet_ask"))
    assert chat.send("/cancel")["text"] == t(lang, "cancelled")
    key = new_key()
    wallet = chaintools.address_of(key)
    assert chat.press(t(lang, "btn_wallet"), contains=t(lang, "wallet_ask"))
    chat.send(wallet, exactly=proof_text(wallet, chat.id))  # alone, after the instructions
    assert api.messages(chat.id)[-2]["text"] == t(lang, "wallet_sign", address=wallet)
    assert chat.send("0x1234")["text"] == t(lang, "wallet_signature_malformed")
    assert chat.send(chaintools.sign_wallet_proof(key, chat.id + 1))["text"] == t(
        lang, "wallet_signature_wrong", address=wallet)
    signature = chaintools.sign_wallet_proof(key, chat.id)
    assert chat.send(signature, exactly=t(lang, "wallet_bound", address=wallet))
    levels = chat.press(t(lang, "btn_deposit"))
    assert levels["text"] == t(lang, "deposit_choose_level")
    chat.press(t(lang, "btn_level", level=1, low="10", high="100", symbol=SYMBOL),
               contains=t(lang, "deposit_ask_amount_below", low="10", high="100", symbol=SYMBOL))
    created = chat.send("12.5")["text"]
    deposit_id = hash_id(created)
    assert created == t(lang, "deposit_created", id=deposit_id, amount="12.5", symbol=SYMBOL, wallet=wallet,
                        address=parse_address(DEPOSIT_ADDRESS), hours=24)
    db.fund(chat.id, 30 * UNIT, f"test:tour:{chat.id}")
    balance = chat.press(t(lang, "btn_balance"))["text"]
    assert balance.startswith(t(lang, "balance", amount="30", symbol=SYMBOL))
    assert t(lang, "line_deposit", id=deposit_id, amount="12.5", symbol=SYMBOL,
             status=t(lang, "status_PENDING")) in balance
    ask = chat.press(t(lang, "btn_withdraw"))
    assert ask["text"] == t(lang, "withdraw_ask_amount", balance="30", fee="0", symbol=SYMBOL)
    preview = chat.press(t(lang, "btn_all"))
    assert preview["text"] == t(lang, "withdraw_preview", amount="30", fee="0", total="30", address=wallet,
                                symbol=SYMBOL)
    created = chat.press(t(lang, "btn_confirm"), edited=True)["text"]
    withdrawal_id = hash_id(created)
    assert created == t(lang, "withdraw_created", id=withdrawal_id, amount="30", symbol=SYMBOL, address=wallet,
                        status=t(lang, "status_REQUESTED"))
    history = chat.press(t(lang, "btn_history"))["text"]
    assert history.startswith(t(lang, "history_title")) and f"#{withdrawal_id}" in history
    other = "en" if lang == "ru" else "ru"
    chat.press(t(lang, "btn_language"), contains=t(lang, "choose_language"))
    assert chat.press("English" if other == "en" else "Русский")["text"] == t(other, "language_set")
    assert chat.send("/balance")["text"].startswith(t(other, "balance", amount="0", symbol=SYMBOL))
