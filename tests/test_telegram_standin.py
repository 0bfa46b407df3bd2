"""The Bot API stand-in answers like Telegram over real HTTP, refuses what Telegram refuses, fails on demand."""
import json
import socket
import threading
import time

import pytest
import requests
import telebot
from telebot import apihelper, types

from devstack.telegram_api import BotApiStandIn

USER = 1001
OTHER_USER = 1002
KEYBOARD = {"inline_keyboard": [[{"text": "Deposit", "callback_data": "deposit"},
                                  {"text": "Help", "url": "https://example.org/help"}]]}


@pytest.fixture
def api():
    with BotApiStandIn() as standin:
        yield standin


@pytest.fixture
def telebot_api_url(api):
    """Point telebot (process-wide) at the stand-in for one test."""
    original = apihelper.API_URL
    apihelper.API_URL = api.url + "/bot{0}/{1}"
    try:
        yield
    finally:
        apihelper.API_URL = original


def call(api, method, *, token=None, http_timeout=5.0, **params) -> requests.Response:
    """POST with parameters in the query string, as telebot sends them."""
    return requests.post(f"{api.url}/bot{token or api.token}/{method}", params=params, timeout=http_timeout)


def result_of(response: requests.Response):
    """Assert a successful Telegram answer and return its result."""
    body = response.json()
    assert response.status_code == 200 and body["ok"] is True, body
    return body["result"]


def error_of(response: requests.Response, status: int) -> dict:
    """Assert a Telegram error answer with this status and return its body."""
    body = response.json()
    assert response.status_code == status, body
    assert body["ok"] is False and body["error_code"] == status, body
    return body


def wait_until(condition, timeout=5.0, what="condition"):
    """Poll until condition() is true or fail after timeout."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def background(target):
    """Run target in a thread; return the thread and a dict that receives its result or error."""
    outcome = {}

    def run():
        try:
            outcome["result"] = target()
        except Exception as error:  # noqa: BLE001 - handed to the test to assert on
            outcome["error"] = error
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def send(api, chat_id=USER, text="hello", **params) -> requests.Response:
    return call(api, "sendMessage", chat_id=chat_id, text=text, **params)


# ---------------------------------------------------------------- answers like Telegram

def test_get_me_and_housekeeping_methods(api):
    me = result_of(call(api, "getMe"))
    assert me["id"] == 123456 and me["is_bot"] is True and me["username"]
    assert result_of(call(api, "deleteWebhook", drop_pending_updates="True")) is True
    assert result_of(call(api, "close")) is True
    assert result_of(call(api, "logOut")) is True
    assert [method for method, _ in api.requests] == ["getMe", "deleteWebhook", "close", "logOut"]
    assert api.rejections == []


def test_wrong_token_is_401_and_unknown_method_is_404(api):
    assert error_of(call(api, "getMe", token="999:WRONG"), 401)["description"] == "Unauthorized"
    assert error_of(call(api, "sendPhoto", chat_id=USER), 404)["description"] == "Not Found"
    assert [(method, description) for method, _, description in api.rejections] == [
        ("getMe", "Unauthorized"), ("sendPhoto", "Not Found")]


def test_long_poll_wakes_at_once_when_an_update_is_pushed(api):
    thread, outcome = background(lambda: call(api, "getUpdates", timeout=5, http_timeout=10))
    wait_until(lambda: api.waiting_polls == 1, what="the poll to block")
    pushed_at = time.monotonic()
    update = api.push_message(USER, "hi")
    thread.join(3)
    assert time.monotonic() - pushed_at < 1.0
    assert [u["update_id"] for u in result_of(outcome["result"])] == [update["update_id"]]


def test_long_poll_without_updates_returns_empty_after_its_timeout(api):
    started = time.monotonic()
    assert result_of(call(api, "getUpdates", timeout=1)) == []
    assert 0.9 <= time.monotonic() - started < 1.8


def test_a_poll_whose_client_hung_up_stops_waiting(api):
    client = socket.create_connection(("127.0.0.1", api.port))
    client.sendall(f"GET /bot{api.token}/getUpdates?timeout=10 HTTP/1.0\r\n\r\n".encode())
    wait_until(lambda: api.waiting_polls == 1, what="the poll to block")
    client.close()  # as a killed bot process would
    wait_until(lambda: api.waiting_polls == 0, what="the abandoned poll to end")


def test_a_newer_poll_ends_an_older_one_with_409(api):
    thread, outcome = background(lambda: call(api, "getUpdates", timeout=5, http_timeout=10))
    wait_until(lambda: api.waiting_polls == 1, what="the first poll to block")
    assert result_of(call(api, "getUpdates")) == []
    thread.join(3)
    assert error_of(outcome["result"], 409)["description"].startswith("Conflict: terminated by other getUpdates")


def test_offset_confirms_earlier_updates_and_limit_caps_a_batch(api):
    ids = [api.push_message(USER, f"m{n}")["update_id"] for n in range(3)]
    assert [u["update_id"] for u in result_of(call(api, "getUpdates"))] == ids
    assert [u["update_id"] for u in result_of(call(api, "getUpdates"))] == ids, "unconfirmed updates come again"
    assert [u["update_id"] for u in result_of(call(api, "getUpdates", limit=2))] == ids[:2]
    assert [u["update_id"] for u in result_of(call(api, "getUpdates", offset=ids[1]))] == ids[1:]
    assert [u["update_id"] for u in result_of(call(api, "getUpdates"))] == ids[1:], "ids[0] stays confirmed"
    assert result_of(call(api, "getUpdates", offset=ids[2] + 1)) == []
    later = api.push_message(USER, "later")["update_id"]
    assert [u["update_id"] for u in result_of(call(api, "getUpdates", offset=-1))] == [later]


def test_allowed_updates_drops_other_kinds(api):
    api.push_message(USER, "a message the bot did not ask for")
    message_id = result_of(send(api, reply_markup=json.dumps(KEYBOARD)))["message_id"]
    api.push_callback(USER, "deposit", message_id=message_id)
    batch = result_of(call(api, "getUpdates", allowed_updates=json.dumps(["callback_query"])))
    assert [list(u)[1] for u in batch] == ["callback_query"]


def test_pushed_message_looks_like_telegrams(api):
    update = api.push_message(USER, "/start ref42", language_code="ru", username="alice", first_name="Alice")
    message = update["message"]
    assert message["chat"] == {"id": USER, "type": "private", "first_name": "Alice", "username": "alice"}
    assert message["from"]["language_code"] == "ru" and message["from"]["is_bot"] is False
    assert message["entities"] == [{"type": "bot_command", "offset": 0, "length": 6}]
    assert "entities" not in api.push_message(USER, "no command")["message"]


def test_send_edit_callback_and_delete_are_recorded(api):
    sent = result_of(send(api, text="<b>Balance</b>: 5", parse_mode="HTML", reply_markup=json.dumps(KEYBOARD)))
    assert sent["text"] == "Balance: 5" and sent["chat"]["id"] == USER and sent["from"]["is_bot"] is True
    assert sent["reply_markup"] == KEYBOARD

    query_id = api.push_callback(USER, "deposit", message_id=sent["message_id"])
    update = result_of(call(api, "getUpdates"))[-1]
    assert update["callback_query"]["id"] == query_id
    assert update["callback_query"]["message"]["message_id"] == sent["message_id"]
    assert update["callback_query"]["data"] == "deposit"
    assert result_of(call(api, "answerCallbackQuery", callback_query_id=query_id, text="Done")) is True
    assert api.callback_answers == [{"callback_query_id": query_id, "text": "Done"}]

    edited = result_of(call(api, "editMessageText", chat_id=USER, message_id=sent["message_id"], text="Balance: 7"))
    assert edited["text"] == "Balance: 7" and "reply_markup" not in edited, "no markup given removes the keyboard"
    assert result_of(call(api, "deleteMessage", chat_id=USER, message_id=sent["message_id"])) is True

    [record] = api.messages(USER)
    assert record["message_id"] == sent["message_id"] and record["text"] == "Balance: 7"
    assert record["reply_markup"] is None and record["parse_mode"] is None
    assert record["edited"] == 1 and record["deleted"] is True
    assert api.rejections == []


def test_edit_errors_and_double_answers_are_refused(api):
    message_id = result_of(send(api, text="same", reply_markup=json.dumps(KEYBOARD)))["message_id"]
    not_modified = error_of(call(api, "editMessageText", chat_id=USER, message_id=message_id, text="same",
                                 reply_markup=json.dumps(KEYBOARD)), 400)
    assert not_modified["description"].startswith("Bad Request: message is not modified: ")
    not_modified = error_of(call(api, "editMessageReplyMarkup", chat_id=USER, message_id=message_id,
                                 reply_markup=json.dumps(KEYBOARD)), 400)
    assert not_modified["description"].startswith("Bad Request: message is not modified: ")
    removed = result_of(call(api, "editMessageReplyMarkup", chat_id=USER, message_id=message_id))
    assert removed["message_id"] == message_id and "reply_markup" not in removed
    missing = error_of(call(api, "editMessageText", chat_id=USER, message_id=999, text="x"), 400)
    assert missing["description"] == "Bad Request: message to edit not found"

    query_id = api.push_callback(USER, "deposit", message_id=message_id)
    assert result_of(call(api, "answerCallbackQuery", callback_query_id=query_id)) is True
    twice = error_of(call(api, "answerCallbackQuery", callback_query_id=query_id), 400)
    assert "query ID is invalid" in twice["description"]
    assert len(api.rejections) == 4


def test_form_and_json_bodies_are_read_too(api):
    url = f"{api.url}/bot{api.token}/sendMessage"
    result_of(requests.post(url, data={"chat_id": str(USER), "text": "from a form"}, timeout=5))
    result_of(requests.post(url, json={"chat_id": USER, "text": "from json", "reply_markup": KEYBOARD,
                                       "disable_notification": True}, timeout=5))
    result_of(requests.get(f"{api.url}/bot{api.token}/getMe", timeout=5))
    assert [m["text"] for m in api.messages(USER)] == ["from a form", "from json"]
    assert api.messages(USER)[1]["reply_markup"] == KEYBOARD
    assert api.calls("sendMessage")[1]["disable_notification"] is True


def test_wait_for_finds_a_later_message_and_reports_everything_on_timeout(api):
    send(api, text="first")
    thread, _ = background(lambda: send(api, text="Your balance is 5"))
    found = api.wait_for(USER, contains="balance is", timeout=5)
    assert found["text"] == "Your balance is 5"
    assert api.wait_for(USER, lambda m: m["text"] == "first")["message_id"] == 1
    with pytest.raises(AssertionError) as failure:
        api.wait_for(USER, contains="first", after=1, timeout=0.2)
    assert "Your balance is 5" in str(failure.value) and "'first'" in str(failure.value)
    thread.join(3)


def test_press_pushes_the_callback_of_a_labelled_button(api):
    result_of(send(api, text="menu", reply_markup=json.dumps(KEYBOARD)))
    query_id = api.press(USER, "Deposit")
    [update] = result_of(call(api, "getUpdates"))
    assert update["callback_query"]["id"] == query_id and update["callback_query"]["data"] == "deposit"
    with pytest.raises(AssertionError):
        api.press(USER, "Withdraw")


# ---------------------------------------------------------------- validation

def button_markup(**button) -> str:
    return json.dumps({"inline_keyboard": [[{"text": "Go", **button}]]})


REFUSED = [
    pytest.param("sendMessage", {"chat_id": USER, "text": "hi", "colour": "red"},
                 'unknown parameter "colour"', id="unknown-parameter"),
    pytest.param("sendMessage", {"text": "hi"}, "chat_id is empty", id="missing-required"),
    pytest.param("deleteMessage", {"chat_id": USER, "message_id": "abc"},
                 'wrong type of parameter "message_id": expected Integer', id="wrong-type-integer"),
    pytest.param("sendMessage", {"chat_id": USER, "text": "hi", "disable_notification": "maybe"},
                 'wrong type of parameter "disable_notification"', id="wrong-type-boolean"),
    pytest.param("sendMessage", {"chat_id": "not a chat", "text": "hi"}, "chat not found", id="wrong-chat-id"),
    pytest.param("sendMessage", {"chat_id": USER, "text": "x" * 4097}, "message is too long", id="4097-chars"),
    pytest.param("sendMessage", {"chat_id": USER, "text": "\U0001F600" * 2049}, "message is too long",
                 id="4098-utf16-units"),
    pytest.param("sendMessage", {"chat_id": USER, "text": "<b>" + "x" * 4097 + "</b>", "parse_mode": "HTML"},
                 "message is too long", id="4097-chars-after-html"),
    pytest.param("sendMessage", {"chat_id": USER, "text": ""}, "message text is empty", id="empty-text"),
    pytest.param("sendMessage", {"chat_id": USER, "text": "<b> </b>", "parse_mode": "HTML"},
                 "message text is empty", id="empty-after-html"),
    pytest.param("sendMessage", {"chat_id": USER, "text": "hi", "reply_markup": button_markup(callback_data="d" * 65)},
                 "BUTTON_DATA_INVALID", id="callback-data-65-bytes"),
    pytest.param("sendMessage", {"chat_id": USER, "text": "hi", "reply_markup": button_markup(callback_data="é" * 33)},
                 "BUTTON_DATA_INVALID", id="callback-data-66-utf8-bytes"),
    pytest.param("sendMessage", {"chat_id": USER, "text": "hi", "reply_markup": button_markup()},
                 "Text buttons are unallowed", id="button-without-action"),
    pytest.param("sendMessage", {"chat_id": USER, "text": "hi",
                                 "reply_markup": button_markup(callback_data="a", url="https://example.org")},
                 "exactly one of", id="button-with-two-actions"),
    pytest.param("sendMessage", {"chat_id": USER, "text": "hi", "reply_markup": button_markup(colour="red", url="x")},
                 'field "colour"', id="button-unknown-field"),
    pytest.param("sendMessage", {"chat_id": USER, "text": "hi", "reply_markup": "{not json"},
                 "can't parse reply_markup JSON object", id="markup-not-json"),
    pytest.param("sendMessage", {"chat_id": USER, "text": "hi",
                                 "reply_markup": json.dumps({"inline_keyboard": [{"text": "Go", "url": "x"}]})},
                 "must be an array", id="keyboard-not-rows"),
    pytest.param("sendMessage", {"chat_id": USER, "text": "<blink>hi</blink>", "parse_mode": "HTML"},
                 'Unsupported start tag "blink"', id="html-unknown-tag"),
    pytest.param("sendMessage", {"chat_id": USER, "text": "<b>hi", "parse_mode": "HTML"},
                 'Can\'t find end tag corresponding to start tag "b"', id="html-unclosed"),
    pytest.param("sendMessage", {"chat_id": USER, "text": "<b><i>hi</b></i>", "parse_mode": "HTML"},
                 "Unmatched end tag", id="html-crossed"),
    pytest.param("sendMessage", {"chat_id": USER, "text": "1 < 2", "parse_mode": "HTML"},
                 "can't parse entities", id="html-bare-less-than"),
    pytest.param("sendMessage", {"chat_id": USER, "text": "2 > 1", "parse_mode": "HTML"},
                 "must be escaped as &gt;", id="html-bare-greater-than"),
    pytest.param("sendMessage", {"chat_id": USER, "text": "Tom & Jerry", "parse_mode": "HTML"},
                 "must be escaped as &amp;", id="html-bare-ampersand"),
    pytest.param("sendMessage", {"chat_id": USER, "text": "a&nbsp;b", "parse_mode": "HTML"},
                 'Unsupported HTML entity "&nbsp;"', id="html-unknown-entity"),
    pytest.param("sendMessage", {"chat_id": USER, "text": "<span>x</span>", "parse_mode": "HTML"},
                 'class="tg-spoiler"', id="html-plain-span"),
    pytest.param("sendMessage", {"chat_id": USER, "text": "Balance: 1.5", "parse_mode": "MarkdownV2"},
                 "Character '.' is reserved", id="markdownv2-unescaped-dot"),
    pytest.param("sendMessage", {"chat_id": USER, "text": "*bold", "parse_mode": "MarkdownV2"},
                 "Can't find end of Bold entity", id="markdownv2-unbalanced"),
    pytest.param("sendMessage", {"chat_id": USER, "text": "pay `now", "parse_mode": "MarkdownV2"},
                 "Can't find end of Code entity", id="markdownv2-open-code"),
    pytest.param("sendMessage", {"chat_id": USER, "text": "hi", "parse_mode": "html5"},
                 "unsupported parse_mode", id="bad-parse-mode"),
    pytest.param("editMessageText", {"chat_id": USER, "message_id": 1, "text": "a_b", "parse_mode": "Markdown"},
                 "Can't find end of the entity", id="markdown-unbalanced"),
    pytest.param("setMyCommands", {"commands": json.dumps([{"command": "Start", "description": "Begin"}])},
                 "BOT_COMMAND_INVALID", id="command-uppercase"),
    pytest.param("setMyCommands", {"commands": json.dumps([{"command": "start", "description": ""}])},
                 "BOT_COMMAND_DESCRIPTION_INVALID", id="command-empty-description"),
    pytest.param("setMyCommands", {"commands": json.dumps([{"command": "start"}])},
                 'required field "description"', id="command-without-description"),
    pytest.param("setMyCommands", {"commands": json.dumps([{"command": "s", "description": "d"}]),
                                   "scope": json.dumps({"type": "everyone"})},
                 "scope.type must be one of", id="unknown-scope"),
]


@pytest.mark.parametrize("method, params, expected", REFUSED)
def test_requests_telegram_would_refuse_are_400_and_recorded(api, method, params, expected):
    body = error_of(call(api, method, **params), 400)
    assert body["description"].startswith("Bad Request: ") and expected in body["description"], body
    assert "parameters" not in body
    [(rejected_method, rejected_params, description)] = api.rejections
    assert rejected_method == method and description == body["description"]
    assert rejected_params == {k: str(v) for k, v in params.items()}
    assert api.messages(USER) == [] and api.requests == []


ACCEPTED = [
    pytest.param("x" * 4096, None, "x" * 4096, id="4096-chars"),
    pytest.param("Tom & Jerry <3", None, "Tom & Jerry <3", id="plain-text-needs-no-escaping"),
    pytest.param('<b>b</b><strong>s</strong><i>i</i><em>e</em><u>u</u><ins>n</ins><s>s</s><strike>k</strike>'
                 '<del>d</del><span class="tg-spoiler">p</span><tg-spoiler>t</tg-spoiler>'
                 '<a href="https://example.org/?a=1&amp;b=2">a</a><code>c</code>'
                 '<pre><code class="language-python">x = 1</code></pre><blockquote expandable>q</blockquote>'
                 '<tg-emoji emoji-id="5368324170671202286">E</tg-emoji> &lt;&gt;&amp;&quot;&#33;',
                 "HTML", "bsieunskdptacx = 1qE <>&\"!", id="every-html-tag"),
    pytest.param(r"*b* _i_ __u__ ~s~ ||p|| [l](https://example.org/\)) `c\`` 1\.5\! \#\+\-\=\|\{\}\(\)\[\]\>",
                 "MarkdownV2", "b i u s p l c` 1.5! #+-=|{}()[]>", id="markdownv2-escapes"),
    pytest.param(">quoted\n*_nested_*", "MarkdownV2", "quoted\nnested", id="markdownv2-quote-and-nesting"),
    pytest.param("*b* _i_ `c` [l](https://example.org)", "Markdown", "b i c l", id="legacy-markdown"),
]


@pytest.mark.parametrize("text, parse_mode, plain", ACCEPTED)
def test_well_formed_texts_are_accepted(api, text, parse_mode, plain):
    params = {"parse_mode": parse_mode} if parse_mode else {}
    assert result_of(send(api, text=text, **params))["text"] == plain
    assert api.messages(USER)[0]["plain_text"] == plain
    assert api.rejections == []


def test_callback_data_of_64_bytes_is_accepted(api):
    result_of(send(api, reply_markup=button_markup(callback_data="é" * 32)))
    assert api.rejections == []


# ---------------------------------------------------------------- faults

def test_fail_next_429_carries_retry_after_and_does_not_send(api):
    api.fail_next("sendMessage", status=429, retry_after=3)
    body = error_of(send(api, text="lost"), 429)
    assert body["parameters"] == {"retry_after": 3}
    assert body["description"] == "Too Many Requests: retry after 3"
    result_of(send(api, text="kept"))
    assert [m["text"] for m in api.messages(USER)] == ["kept"]
    assert [(method, status) for method, _, status, _ in api.failures] == [("sendMessage", 429)]
    assert api.rejections == []


def test_fail_next_502_hits_any_method_once(api):
    api.fail_next()
    assert error_of(call(api, "getMe"), 502)["description"] == "Bad Gateway"
    result_of(call(api, "getMe"))


def test_fail_next_403_blocked_user_for_a_count(api):
    api.fail_next("sendMessage", status=403, count=2)
    result_of(call(api, "getMe"))  # other methods are not affected
    for _ in range(2):
        assert error_of(send(api), 403)["description"] == "Forbidden: bot was blocked by the user"
    result_of(send(api))
    with pytest.raises(ValueError):
        api.fail_next("sendMesage")


def test_set_delay_slows_answers_of_one_method(api):
    api.set_delay(0.5, "getMe")
    started = time.monotonic()
    result_of(call(api, "getMe"))
    assert time.monotonic() - started >= 0.5
    started = time.monotonic()
    result_of(send(api))
    assert time.monotonic() - started < 0.4
    api.set_delay(0, "getMe")
    started = time.monotonic()
    result_of(call(api, "getMe"))
    assert time.monotonic() - started < 0.4


def test_go_away_refuses_connections_and_come_back_reuses_the_port(api):
    result_of(send(api, text="before"))
    port = api.port
    thread, outcome = background(lambda: call(api, "getUpdates", timeout=5, http_timeout=10))
    wait_until(lambda: api.waiting_polls == 1, what="the poll to block")

    api.go_away()
    thread.join(3)
    assert isinstance(outcome.get("error"), requests.ConnectionError), "an in-flight poll is dropped"
    with pytest.raises(requests.ConnectionError):
        call(api, "getMe", http_timeout=2)

    api.come_back()
    assert api.port == port
    result_of(send(api, text="after"))
    assert [m["text"] for m in api.messages(USER)] == ["before", "after"]


def test_enforce_limits_answers_429_beyond_the_per_chat_burst(api):
    api.enforce_limits(True)
    for _ in range(3):
        result_of(send(api))
    body = error_of(send(api), 429)
    assert body["parameters"]["retry_after"] >= 1
    result_of(send(api, chat_id=OTHER_USER))  # another chat has its own budget
    api.enforce_limits(False)
    result_of(send(api))


def test_enforce_limits_caps_the_overall_rate(api):
    api.enforce_limits(True)
    statuses = [send(api, chat_id=10_000 + n).status_code for n in range(60)]
    assert statuses[:30] == [200] * 30
    assert 429 in statuses


# ---------------------------------------------------------------- a real telebot bot

def test_real_telebot_bot_round_trip(api, telebot_api_url):
    bot = telebot.TeleBot(api.token, threaded=False)

    @bot.message_handler(commands=["start"])
    def greet(message):
        markup = types.InlineKeyboardMarkup()
        markup.add(types.InlineKeyboardButton("Deposit", callback_data="deposit"))
        bot.send_message(message.chat.id, "<b>Welcome</b> &amp; hello", parse_mode="HTML", reply_markup=markup)

    @bot.callback_query_handler(func=lambda call: call.data == "deposit")
    def deposit(call):
        bot.answer_callback_query(call.id, "Opening")
        bot.edit_message_text("Send USDT to 0xabc", call.message.chat.id, call.message.message_id)

    bot.set_my_commands([types.BotCommand("start", "Start"), types.BotCommand("balance", "Balance")])
    bot.set_my_commands([types.BotCommand("start", "Старт")], language_code="ru")
    bot.set_my_commands([types.BotCommand("approve", "Approve")], scope=types.BotCommandScopeChat(USER))
    assert [c.command for c in bot.get_my_commands(language_code="ru")] == ["start"]
    bot.delete_webhook()

    poller = threading.Thread(target=bot.polling, kwargs={"non_stop": True, "interval": 0, "timeout": 5,
                                                           "long_polling_timeout": 1}, daemon=True)
    poller.start()
    try:
        api.push_message(USER, "/start")
        welcome = api.wait_for(USER, contains="Welcome", timeout=5)
        assert welcome["plain_text"] == "Welcome & hello" and welcome["parse_mode"] == "HTML"
        query_id = api.press(USER, "Deposit")
        edited = api.wait_for(USER, lambda m: m["edited"] == 1, timeout=5)
        assert edited["message_id"] == welcome["message_id"] and edited["text"] == "Send USDT to 0xabc"
        wait_until(lambda: api.callback_answers, what="the callback answer")
    finally:
        bot.stop_polling()
        poller.join(5)

    assert api.callback_answers == [{"callback_query_id": query_id, "text": "Opening"}]
    assert api.commands == {"": [{"command": "start", "description": "Start"},
                                 {"command": "balance", "description": "Balance"}],
                            "ru": [{"command": "start", "description": "Старт"}]}
    assert api.all_commands[(f"chat:{USER}", "")] == [{"command": "approve", "description": "Approve"}]
    assert not poller.is_alive()
    assert api.rejections == []
