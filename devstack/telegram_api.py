"""A stand-in for the Telegram Bot API on 127.0.0.1: real HTTP, spec-checked requests, faults on demand.

The bot under test reaches it through TELEGRAM_API_URL and calls `{url}/bot{token}/{method}`.
Parameters are read from the query string (what telebot sends), an
application/x-www-form-urlencoded body and an application/json body; a body wins over the
query string. Every request is checked against `telegram_spec.json` (facts copied from the
Bot API spec) and against Telegram's own rules for texts, markup and keyboards; a request
that real Telegram would refuse is answered 400 and recorded in `rejections`, so a test can
assert that the bot never made one.

    with BotApiStandIn() as api:             # or api = BotApiStandIn().start() ... api.stop()
        start_bot(TELEGRAM_API_URL=api.url)
        api.push_message(42, "/start")
        api.wait_for(42, contains="Welcome")
        assert api.rejections == []
"""
import copy
import itertools
import json
import math
import re
import select
import socket
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

SPEC_PATH = Path(__file__).with_name("telegram_spec.json")

MAX_TEXT_UTF16 = 4096
MAX_CALLBACK_DATA_BYTES = 64
MAX_CALLBACK_ANSWER_CHARS = 200
MAX_COMMANDS = 100
MAX_UPDATES_PER_POLL = 100
MAX_POLL_TIMEOUT_S = 50
SERVE_POLL_INTERVAL_S = 0.05  # how quickly go_away()/stop() stop the accept loop
CLIENT_CHECK_INTERVAL_S = 0.2  # how often a long poll looks whether its client hung up
DEFAULT_RETRY_AFTER_S = 1

GLOBAL_SEND_RATE_PER_S = 30
CHAT_SEND_RATE_PER_S = 1
CHAT_SEND_BURST = 3

FIRST_UPDATE_ID = 100_000
FIRST_CALLBACK_ID = 7_000_000_000

PARSE_MODES = ("HTML", "MarkdownV2", "Markdown")
SCALAR_TYPES = ("Integer", "Float", "Boolean", "String")
# InlineKeyboardButton fields that decorate a button; every other field is its one action.
BUTTON_DECORATIONS = ("text", "icon_custom_emoji_id", "style")
COMMAND_PATTERN = re.compile(r"[a-z0-9_]{1,32}")
LEADING_COMMAND = re.compile(r"/[A-Za-z0-9_]{1,32}(@[A-Za-z0-9_]+)?")
MAX_COMMAND_DESCRIPTION_CHARS = 256

NOT_MODIFIED = ("message is not modified: specified new message content and reply markup are "
                "exactly the same as a current content and reply markup of the message")
CONFLICT = "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"
STATUS_DESCRIPTIONS = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden: bot was blocked by the user",
    404: "Not Found", 409: "Conflict", 500: "Internal Server Error", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout",
}
REJECTION_STATUSES = (400, 401, 404)  # the bot's own mistakes, as opposed to faults we inject

DROP = object()  # a handler result meaning: close the connection without an answer


class ApiError(Exception):
    """A Telegram error answer: HTTP status, description and, for 429, retry_after seconds."""

    def __init__(self, status: int, description: str, retry_after: int | None = None):
        super().__init__(description)
        self.status = status
        self.description = description
        self.retry_after = retry_after

    def payload(self) -> dict:
        """Return the JSON body Telegram sends with this error."""
        body = {"ok": False, "error_code": self.status, "description": self.description}
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return body


class MarkupError(ValueError):
    """Text markup (HTML or Markdown) that Telegram cannot parse."""


def bad_request(detail: str) -> ApiError:
    """Return a 400 answer with Telegram's 'Bad Request: ' prefix."""
    return ApiError(400, f"Bad Request: {detail}")


def too_many_requests(retry_after: int) -> ApiError:
    """Return a 429 answer carrying retry_after."""
    return ApiError(429, f"Too Many Requests: retry after {retry_after}", retry_after)


def utf16_len(text: str) -> int:
    """Count UTF-16 code units, the unit Telegram measures texts and offsets in."""
    return len(text.encode("utf-16-le")) // 2


def byte_offset(text: str, index: int) -> int:
    """Return the UTF-8 byte offset of text[index], as Telegram's error messages give it."""
    return len(text[:index].encode("utf-8"))


# ---------------------------------------------------------------- spec and parameter types

class Spec:
    """The methods and types of the Bot API that the stand-in serves."""

    def __init__(self, path: Path = SPEC_PATH):
        data = json.loads(path.read_text())
        self.version = data["version"]
        self.methods = {name: {p["name"]: p for p in params} for name, params in data["methods"].items()}
        self.types = data["types"]


def check_params(spec: Spec, method: str, raw: dict) -> dict:
    """Return the parameters as Python values of their spec types; raise ApiError at the first misfit."""
    declared = spec.methods[method]
    for name in raw:
        if name not in declared:
            raise bad_request(f'unknown parameter "{name}" for method {method} in {spec.version}')
    for name, param in declared.items():
        if param["required"] and name not in raw:
            raise bad_request(f"{name} is empty")
    return {name: convert_param(spec, name, value, declared[name]["types"]) for name, value in raw.items()}


def convert_param(spec: Spec, name: str, value, types: list[str]):
    """Convert one parameter to the first of its spec types that it fits."""
    if all(type_name in SCALAR_TYPES for type_name in types):
        for type_name in types:
            try:
                return scalar(value, type_name)
            except ValueError:
                continue
        raise bad_request(f'wrong type of parameter "{name}": expected {" or ".join(types)}, got {value!r}')
    parsed = json_value(name, value)
    type_name = union_member(spec, parsed, types)
    try:
        check_json(spec, parsed, type_name, name)
    except ValueError as error:
        raise bad_request(f"can't parse {name} JSON object: {error}") from None
    return parsed


def scalar(value, type_name: str):
    """Return a query-string or JSON value as the scalar type_name; raise ValueError if it does not fit."""
    if isinstance(value, str):
        return scalar_from_text(value, type_name)
    if json_fits(value, type_name):
        return value
    raise ValueError(type_name)


def scalar_from_text(text: str, type_name: str):
    """Parse a scalar from its text form, as Telegram reads query strings and forms."""
    if type_name == "String":
        return text
    if type_name == "Integer" and re.fullmatch(r"-?\d+", text):
        return int(text)
    if type_name == "Float" and re.fullmatch(r"-?\d+(\.\d+)?([eE][-+]?\d+)?", text):
        return float(text)
    if type_name == "Boolean" and text.lower() in ("true", "false", "1", "0"):
        return text.lower() in ("true", "1")
    raise ValueError(type_name)


def json_fits(value, type_name: str) -> bool:
    """Tell whether a parsed JSON value is of the scalar spec type."""
    if type_name == "Integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if type_name == "Float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if type_name == "Boolean":
        return isinstance(value, bool)
    return isinstance(value, str)


def json_value(name: str, value):
    """Return a JSON-serialized parameter parsed (a JSON body may carry it already parsed)."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        raise bad_request(f"can't parse {name} JSON object: not valid JSON") from None


def union_member(spec: Spec, value, types: list[str]) -> str:
    """Pick the type of a union that a JSON object means: the first whose required fields it has."""
    if len(types) == 1 or not isinstance(value, dict):
        return types[0]
    for type_name in types:
        fields = spec.types.get(type_name, {}).get("fields", [])
        if all(field["name"] in value for field in fields if field["required"]):
            return type_name
    return types[0]


def check_json(spec: Spec, value, type_name: str, path: str) -> None:
    """Raise ValueError naming the spot where a parsed JSON value does not fit the spec type."""
    if type_name.startswith("Array of "):
        if not isinstance(value, list):
            raise ValueError(f"{path} must be an array")
        for index, item in enumerate(value):
            check_json(spec, item, type_name[len("Array of "):], f"{path}[{index}]")
    elif type_name in SCALAR_TYPES:
        if not json_fits(value, type_name):
            raise ValueError(f"{path} must be {type_name}, got {value!r}")
    elif "subtypes" in spec.types[type_name]:
        check_json(spec, value, subtype_of(spec, value, type_name, path), path)
    else:
        check_object(spec, value, type_name, path)
    if type_name == "InlineKeyboardMarkup":
        check_inline_keyboard(value)


def check_object(spec: Spec, value, type_name: str, path: str) -> None:
    """Raise ValueError unless value is a JSON object with exactly the fields the type allows."""
    if not isinstance(value, dict):
        raise ValueError(f"{path} must be a {type_name} object")
    fields = {field["name"]: field for field in spec.types[type_name]["fields"]}
    for name in value:
        if name not in fields:
            raise ValueError(f'{path} has field "{name}" that {type_name} does not have')
    for name, field in fields.items():
        if field["required"] and name not in value:
            raise ValueError(f'{path} lacks the required field "{name}" of {type_name}')
        if name in value:
            check_union(spec, value[name], field["types"], f"{path}.{name}")


def check_union(spec: Spec, value, types: list[str], path: str) -> None:
    """Raise ValueError unless the value fits one of the types."""
    errors = []
    for type_name in types:
        try:
            return check_json(spec, value, type_name, path)
        except ValueError as error:
            errors.append(str(error))
    raise ValueError("; ".join(errors))


def subtype_of(spec: Spec, value, type_name: str, path: str) -> str:
    """Return the subtype a JSON object names in its "type" field (BotCommandScopeChat <- "chat")."""
    kinds = {snake_case(subtype[len(type_name):]): subtype for subtype in spec.types[type_name]["subtypes"]}
    kind = value.get("type") if isinstance(value, dict) else None
    if kind not in kinds:
        raise ValueError(f'{path}.type must be one of {sorted(kinds)}, got {kind!r}')
    return kinds[kind]


def snake_case(camel: str) -> str:
    """AllPrivateChats -> all_private_chats."""
    return re.sub(r"(?<!^)([A-Z])", r"_\1", camel).lower()


def check_inline_keyboard(markup: dict) -> None:
    """Apply Telegram's button rules: one action per button, callback_data of 1-64 bytes."""
    for row in markup["inline_keyboard"]:
        for button in row:
            actions = [name for name in button if name not in BUTTON_DECORATIONS]
            if not actions:
                raise bad_request("can't parse inline keyboard button: "
                                  "Text buttons are unallowed in the inline keyboard")
            if len(actions) > 1:
                raise bad_request(f"can't parse inline keyboard button: exactly one of {actions} may be set")
            if not button["text"]:
                raise bad_request("BUTTON_TEXT_INVALID")
            data = button.get("callback_data")
            if data is not None and not 1 <= len(data.encode("utf-8")) <= MAX_CALLBACK_DATA_BYTES:
                raise bad_request("BUTTON_DATA_INVALID")


def check_chat_id(chat_id) -> None:
    """A chat is an integer id or a public @username."""
    if isinstance(chat_id, str) and not re.fullmatch(r"@[A-Za-z]\w{3,}", chat_id):
        raise bad_request("chat not found")


# ---------------------------------------------------------------- message texts and markup

def visible_text(text: str, parse_mode: str | None) -> str:
    """Return the text a user would see after markup parsing; raise ApiError as Telegram would."""
    try:
        plain = parse_markup(text, parse_mode)
    except MarkupError as error:
        raise bad_request(f"can't parse entities: {error}") from None
    if not plain.strip():
        raise bad_request("message text is empty")
    if utf16_len(plain) > MAX_TEXT_UTF16:
        raise bad_request("message is too long")
    return plain


def parse_markup(text: str, parse_mode: str | None) -> str:
    """Dispatch to the parser of the parse mode."""
    if not parse_mode:
        return text
    if parse_mode == "HTML":
        return parse_html(text)
    if parse_mode == "MarkdownV2":
        return parse_markdown_v2(text)
    if parse_mode == "Markdown":
        return parse_markdown(text)
    raise bad_request(f"unsupported parse_mode {parse_mode!r}; use one of {', '.join(PARSE_MODES)}")


HTML_TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "span", "tg-spoiler",
             "a", "code", "pre", "blockquote", "tg-emoji"}
HTML_NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
HTML_ATTRIBUTE_VALUE = r"(?:\"[^\"]*\"|'[^']*'|[^\s\"'>]+)"
HTML_START_TAG = re.compile(rf"([a-zA-Z][a-zA-Z0-9-]*)((?:\s+[^\s=/]+(?:\s*=\s*{HTML_ATTRIBUTE_VALUE})?)*)\s*")
HTML_ATTRIBUTE = re.compile(rf"([^\s=]+)(?:\s*=\s*({HTML_ATTRIBUTE_VALUE}))?")


def parse_html(text: str) -> str:
    """Return the plain text of Telegram HTML; raise MarkupError at the first thing Telegram refuses."""
    plain, open_tags, index = [], [], 0
    while index < len(text):
        char = text[index]
        if char == "<":
            end = text.find(">", index)
            if end < 0:
                raise MarkupError(f"Unclosed start tag at byte offset {byte_offset(text, index)}")
            apply_html_tag(text[index + 1:end], open_tags, byte_offset(text, index))
            index = end + 1
        elif char == "&":
            decoded, length = html_entity(text, index)
            plain.append(decoded)
            index += length
        elif char == ">":
            raise MarkupError(f"Character '>' at byte offset {byte_offset(text, index)} must be escaped as &gt;")
        else:
            plain.append(char)
            index += 1
    if open_tags:
        raise MarkupError(f'Can\'t find end tag corresponding to start tag "{open_tags[-1]}"')
    return "".join(plain)


def apply_html_tag(inside: str, open_tags: list[str], offset: int) -> None:
    """Open or close one tag (the text between < and >), keeping tags properly nested."""
    if inside.startswith("/"):
        name = inside[1:].strip().lower()
        if not open_tags:
            raise MarkupError(f'Unexpected end tag "</{name}>" at byte offset {offset}')
        if name != open_tags[-1]:
            raise MarkupError(f'Unmatched end tag at byte offset {offset}, '
                              f'expected "</{open_tags[-1]}>", found "</{name}>"')
        open_tags.pop()
        return
    match = HTML_START_TAG.fullmatch(inside)
    if not match or match.group(1).lower() not in HTML_TAGS:
        tag = re.match(r"[^\s/]*", inside).group()
        raise MarkupError(f'Unsupported start tag "{tag}" at byte offset {offset}')
    name = match.group(1).lower()
    attributes = {key.lower(): (value or "").strip("\"'")
                  for key, value in HTML_ATTRIBUTE.findall(match.group(2))}
    check_html_tag(name, attributes, open_tags, offset)
    open_tags.append(name)


def check_html_tag(name: str, attributes: dict, open_tags: list[str], offset: int) -> None:
    """Raise MarkupError for a tag without its required attribute or nested where Telegram forbids it."""
    required = {"a": ("href", None), "span": ("class", "tg-spoiler"), "tg-emoji": ("emoji-id", None)}
    if name in required:
        key, wanted = required[name]
        if key not in attributes or (wanted and attributes[key] != wanted):
            expected = f'{key}="{wanted}"' if wanted else key
            raise MarkupError(f'Tag "{name}" must have attribute {expected} at byte offset {offset}')
    inside_code = open_tags and (open_tags[-1] == "code" or (open_tags[-1] == "pre" and name != "code"))
    if inside_code:  # only <pre><code class="language-..."> may nest; code holds no other entities
        raise MarkupError(f'Tag "{name}" can\'t be nested in "{open_tags[-1]}" at byte offset {offset}')


def html_entity(text: str, index: int) -> tuple[str, int]:
    """Decode the entity at text[index] ('&'); return it and its length in characters."""
    match = re.match(r"&(#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[a-zA-Z]+);", text[index:])
    if not match:
        raise MarkupError(f"Character '&' at byte offset {byte_offset(text, index)} must be escaped as &amp;")
    body = match.group(1)
    if body.startswith("#"):
        code = int(body[2:], 16) if body[1] in "xX" else int(body[1:])
        if not 0 < code <= 0x10FFFF:
            raise MarkupError(f"Invalid character reference &{body}; at byte offset {byte_offset(text, index)}")
        return chr(code), match.end()
    if body not in HTML_NAMED_ENTITIES:
        raise MarkupError(f'Unsupported HTML entity "&{body};" at byte offset {byte_offset(text, index)}')
    return HTML_NAMED_ENTITIES[body], match.end()


MARKDOWN_V2_RESERVED = set("_*[]()~`>#+-=|{}.!")
MARKDOWN_V2_MARKERS = {"__": "Underline", "||": "Spoiler", "*": "Bold", "_": "Italic", "~": "Strikethrough"}


def parse_markdown_v2(text: str) -> str:
    """Return the plain text of MarkdownV2; raise MarkupError at an unescaped reserved character or open entity."""
    plain, open_entities, index = [], [], 0  # open_entities: [(name, byte offset)]
    expandable_quote = False
    while index < len(text):
        char, pair = text[index], text[index:index + 2]
        at_line_start = index == 0 or text[index - 1] == "\n"
        if char == "\\" and len(pair) == 2 and 0 < ord(pair[1]) < 127:  # any ASCII character may be escaped
            plain.append(pair[1])
            index += 2
        elif char == "`":
            code, index = markdown_v2_code(text, index)
            plain.append(code)
        elif at_line_start and text.startswith("**>", index):
            expandable_quote, index = True, index + 3
        elif at_line_start and char == ">":
            index += 1
        elif pair == "||" and expandable_quote and text[index + 2:index + 3] in ("", "\n") \
                and "Spoiler" not in [name for name, _ in open_entities]:
            expandable_quote, index = False, index + 2
        elif pair in MARKDOWN_V2_MARKERS or char in MARKDOWN_V2_MARKERS:
            marker = pair if pair in MARKDOWN_V2_MARKERS else char
            toggle_entity(open_entities, MARKDOWN_V2_MARKERS[marker], byte_offset(text, index))
            index += len(marker)
        elif char == "[" or pair == "![":
            open_entities.append(("TextUrl" if char == "[" else "CustomEmoji", byte_offset(text, index)))
            index += 1 if char == "[" else 2
        elif char == "]" and open_entities and open_entities[-1][0] in ("TextUrl", "CustomEmoji"):
            open_entities.pop()
            index = markdown_v2_url_end(text, index + 1)
        elif char in MARKDOWN_V2_RESERVED:
            raise MarkupError(f"Character '{char}' is reserved and must be escaped with the preceding '\\'")
        else:
            plain.append(char)
            index += 1
    if open_entities:
        name, offset = open_entities[-1]
        raise MarkupError(f"Can't find end of {name} entity at byte offset {offset}")
    return "".join(plain)


def toggle_entity(open_entities: list, name: str, offset: int) -> None:
    """Close the entity if it is the innermost open one, else open it; refuse crossed entities."""
    if open_entities and open_entities[-1][0] == name:
        open_entities.pop()
    elif name in [open_name for open_name, _ in open_entities]:
        inner, inner_offset = open_entities[-1]
        raise MarkupError(f"Can't find end of {inner} entity at byte offset {inner_offset}")
    else:
        open_entities.append((name, offset))


def markdown_v2_code(text: str, start: int) -> tuple[str, int]:
    """Read a `code` or ```pre``` entity at text[start]; return its content and the index after it."""
    fence = "```" if text.startswith("```", start) else "`"
    content, index = [], start + len(fence)
    while index < len(text):
        if text[index] == "\\" and index + 1 < len(text):
            content.append(text[index + 1])
            index += 2
        elif text.startswith(fence, index):
            body = "".join(content)
            if fence == "```" and "\n" in body and re.fullmatch(r"[\w+-]*", body.split("\n", 1)[0]):
                body = body.split("\n", 1)[1]  # the first line names the language
            return body, index + len(fence)
        elif text[index] == "`":
            raise MarkupError("Character '`' is reserved and must be escaped with the preceding '\\'")
        else:
            content.append(text[index])
            index += 1
    name = "Pre" if fence == "```" else "Code"
    raise MarkupError(f"Can't find end of {name} entity at byte offset {byte_offset(text, start)}")


def markdown_v2_url_end(text: str, index: int) -> int:
    """Skip the (url) after a link's ]; return the index after its closing parenthesis."""
    if not text.startswith("(", index):
        raise MarkupError(f"Expected '(' after the link text at byte offset {byte_offset(text, index)}")
    position = index + 1
    while position < len(text):
        if text[position] == "\\":
            position += 2
        elif text[position] == ")":
            return position + 1
        else:
            position += 1
    raise MarkupError(f"Can't find end of a URL at byte offset {byte_offset(text, index)}")


def parse_markdown(text: str) -> str:
    """Return the plain text of legacy Markdown: *bold*, _italic_, `code`, ```pre```, [text](url)."""
    plain, index = [], 0
    while index < len(text):
        char = text[index]
        if char == "\\" and text[index + 1:index + 2] in ("_", "*", "`", "["):
            plain.append(text[index + 1])
            index += 2
            continue
        closer = {"*": "*", "_": "_", "`": "`", "[": ")"}.get(char)
        if text.startswith("```", index):
            char = closer = "```"
        if closer is None:
            plain.append(char)
            index += 1
            continue
        end = text.find(closer, index + len(char))
        if end < 0 or (char == "[" and "](" not in text[index:end]):
            raise MarkupError(f"Can't find end of the entity starting at byte offset {byte_offset(text, index)}")
        inner = text[index + len(char):end]
        plain.append(inner.split("](", 1)[0] if char == "[" else inner)
        index = end + len(closer)
    return "".join(plain)


# ---------------------------------------------------------------- rate limits

class TokenBucket:
    """Allow rate_per_s events a second on average, with bursts of up to `burst`."""

    def __init__(self, rate_per_s: float, burst: int):
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.tokens = float(burst)
        self.updated = time.monotonic()

    def wait_s(self) -> float:
        """Return how long until one event is allowed (0 if now)."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate_per_s)
        self.updated = now
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate_per_s

    def take(self) -> None:
        """Spend one event."""
        self.tokens -= 1


# ---------------------------------------------------------------- HTTP layer

class _Server(ThreadingHTTPServer):
    """The listening socket; `generation` tells requests of an earlier listen apart."""

    daemon_threads = True
    allow_reuse_address = True  # come_back() rebinds the port while old connections linger

    def __init__(self, port: int, standin: "BotApiStandIn", generation: int):
        self.standin = standin
        self.generation = generation
        super().__init__(("127.0.0.1", port), _Handler)

    def server_bind(self):
        """Bind without HTTPServer's reverse DNS lookup of the host, which can stall."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class _Handler(BaseHTTPRequestHandler):
    """Turn one HTTP request into a stand-in call and write Telegram's JSON answer."""

    def do_GET(self):
        """Serve GET and POST alike, as Telegram does."""
        url = urlsplit(self.path)
        raw = dict(parse_qsl(url.query, keep_blank_values=True))
        match = re.fullmatch(r"/bot([^/]+)/([^/]+)", url.path)
        try:
            raw.update(self._body_params())
        except ApiError as error:
            return self._write(error.status, error.payload())
        token, method = match.groups() if match else (None, url.path)
        answer = self.server.standin.answer(token, method, raw, self.server.generation,
                                            connected=lambda: client_connected(self.connection))
        if answer is None:
            self.close_connection = True  # gone away: the client sees a dropped connection
            return
        self._write(*answer)

    do_POST = do_GET

    def _body_params(self) -> dict:
        """Read a form or JSON body into a dict of parameters."""
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if not body:
            return {}
        if content_type == "application/json":
            try:
                params = json.loads(body)
            except ValueError:
                raise bad_request("can't parse JSON body") from None
            if not isinstance(params, dict):
                raise bad_request("the JSON body must be an object")
            return params
        if content_type == "application/x-www-form-urlencoded":
            return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        raise bad_request(f"the stand-in does not read {content_type or 'untyped'} bodies")

    def _write(self, status: int, payload: dict) -> None:
        """Send the JSON answer; a client that already hung up is no error."""
        body = json.dumps(payload).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, format, *args):
        """Stay quiet: tests read api.requests, not access logs."""


# ---------------------------------------------------------------- the stand-in

class BotApiStandIn:
    """A Telegram Bot API server for one bot token, with a test-side API to play users and faults."""

    def __init__(self, token: str = "123456:TEST", port: int | None = None, *, bot_username: str = "standin_bot"):
        self.token = token
        self.port = port or 0
        self.spec = Spec()
        bot_id = token.split(":")[0]
        self.bot_user = {"id": int(bot_id) if bot_id.isdigit() else 1, "is_bot": True,
                         "first_name": "Stand-in Bot", "username": bot_username}
        self._changed = threading.Condition(threading.RLock())  # RLock: predicates may call messages()
        self._server: _Server | None = None
        self._generation = 0
        self._handlers = {
            "getMe": self._get_me, "getUpdates": self._get_updates, "sendMessage": self._send_message,
            "editMessageText": self._edit_message_text, "editMessageReplyMarkup": self._edit_message_reply_markup,
            "answerCallbackQuery": self._answer_callback_query, "deleteMessage": self._delete_message,
            "setMyCommands": self._set_my_commands, "getMyCommands": self._get_my_commands,
            "deleteWebhook": self._true, "close": self._true, "logOut": self._true,
        }
        self._init_state()

    def _init_state(self) -> None:
        """Start with no updates, messages, records or faults."""
        self._updates: list[dict] = []
        self._update_ids = itertools.count(FIRST_UPDATE_ID)
        self._callback_ids = itertools.count(FIRST_CALLBACK_ID)
        self._poll_tickets = itertools.count(1)
        self._newest_poll = 0
        self._waiting_polls = 0
        self._allowed_updates: list[str] | None = None
        self._sent: dict[object, list[dict]] = {}
        self._user_messages: dict[object, dict[int, dict]] = {}
        self._last_message_id: dict[object, int] = {}
        self._chats: dict[object, dict] = {}
        self._users: dict[int, dict] = {}
        self._callbacks: dict[str, dict] = {}
        self._callback_answers: list[dict] = []
        self._commands: dict[tuple[str, str], list[dict]] = {}
        self._requests: list[tuple[str, dict]] = []
        self._rejections: list[tuple[str, dict, str]] = []
        self._failures: list[tuple[str, dict, int, str]] = []
        self._faults: list[dict] = []
        self._delays: dict[str | None, float] = {}
        self._limits_on = False
        self._global_bucket = TokenBucket(GLOBAL_SEND_RATE_PER_S, GLOBAL_SEND_RATE_PER_S)
        self._chat_buckets: dict[object, TokenBucket] = {}

    # -- lifecycle

    @property
    def url(self) -> str:
        """The base URL to give the bot as TELEGRAM_API_URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "BotApiStandIn":
        """Listen on 127.0.0.1 (a free port unless one was given) and serve in a background thread."""
        if self._server is None:
            self._listen()
        return self

    def stop(self) -> None:
        """Stop listening and drop requests in flight; safe to call twice."""
        self.go_away()

    def go_away(self) -> None:
        """Close the listening socket and drop requests in flight: clients get refused connections."""
        server, self._server = self._server, None
        with self._changed:
            self._generation += 1
            self._changed.notify_all()
        if server is not None:
            server.shutdown()
            server.server_close()

    def come_back(self) -> None:
        """Listen again on the same port."""
        self.start()

    def _listen(self) -> None:
        """Bind the port and run the accept loop in a daemon thread."""
        with self._changed:
            self._generation += 1
            server = _Server(self.port, self, self._generation)
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": SERVE_POLL_INTERVAL_S},
                         name=f"telegram-standin-{self.port}", daemon=True).start()

    def __enter__(self) -> "BotApiStandIn":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- playing users

    def push_message(self, user_id: int, text: str, *, language_code: str = "en", username: str | None = None,
                     first_name: str = "Test", chat_id=None) -> dict:
        """Queue an update with a message from the user (chat = the user's private chat by default)."""
        chat_id = user_id if chat_id is None else chat_id
        user = {"id": user_id, "is_bot": False, "first_name": first_name, "language_code": language_code}
        if username:
            user["username"] = username
        with self._changed:
            self._users[user_id] = user
            self._chats.setdefault(chat_id, chat_object(chat_id, user))
            message = {"message_id": self._next_message_id(chat_id), "from": user, "chat": self._chats[chat_id],
                       "date": int(time.time()), "text": text}
            command = LEADING_COMMAND.match(text)
            if command:
                message["entities"] = [{"type": "bot_command", "offset": 0, "length": utf16_len(command.group())}]
            self._user_messages.setdefault(chat_id, {})[message["message_id"]] = message
            return self._push_update({"message": message})

    def push_callback(self, user_id: int, data: str, *, message_id: int, chat_id=None,
                      language_code: str = "en") -> str:
        """Queue a button press on the bot's message; return the callback query id."""
        chat_id = user_id if chat_id is None else chat_id
        with self._changed:
            record = self._sent_record(chat_id, message_id)
            if record is None or record["deleted"]:
                raise AssertionError(f"no live bot message {message_id} in chat {chat_id} to press a button on\n"
                                     + self._describe_chat(chat_id))
            user = {**self._users.get(user_id, {"id": user_id, "is_bot": False, "first_name": "Test"}),
                    "language_code": language_code}
            query_id = str(next(self._callback_ids))
            self._callbacks[query_id] = {"answered": False, "chat_id": chat_id, "message_id": message_id}
            self._push_update({"callback_query": {
                "id": query_id, "from": user, "message": self._message_object(record),
                "chat_instance": str(abs(hash((self.bot_user["id"], chat_id)))), "data": data}})
            return query_id

    def press(self, user_id: int, label: str, *, chat_id=None, language_code: str = "en") -> str:
        """Press the callback button labelled `label` on the newest bot message that has it."""
        chat_id = user_id if chat_id is None else chat_id
        with self._changed:
            for record in reversed(self._sent.get(chat_id, [])):
                data = None if record["deleted"] else button_data(record["reply_markup"], label)
                if data is not None:
                    return self.push_callback(user_id, data, message_id=record["message_id"], chat_id=chat_id,
                                              language_code=language_code)
            raise AssertionError(f"no button {label!r} in chat {chat_id}\n" + self._describe_chat(chat_id))

    # -- what the bot did

    @property
    def waiting_polls(self) -> int:
        """How many getUpdates calls are blocked in a long poll right now (1 = the bot is listening)."""
        with self._changed:
            return self._waiting_polls

    def messages(self, chat_id) -> list[dict]:
        """Return what the bot sent to the chat, in order, edits applied (copies)."""
        with self._changed:
            return copy.deepcopy(self._sent.get(chat_id, []))

    def chats(self) -> list:
        """Every chat the bot has sent a message to, in the order it first did."""
        with self._changed:
            return list(self._sent)

    def wait_for(self, chat_id, predicate=None, *, contains: str | None = None, timeout: float = 10.0,
                 after: int = 0) -> dict:
        """Return the first message sent to the chat (index >= after) that matches, waiting up to timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for record in self._sent.get(chat_id, [])[after:]:
                    candidate = copy.deepcopy(record)
                    if (contains is None or contains in record["text"] or contains in record["plain_text"]) \
                            and (predicate is None or predicate(candidate)):
                        return candidate
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(remaining)
            wanted = " and ".join(filter(None, [contains and f"containing {contains!r}",
                                                predicate and f"matching {getattr(predicate, '__name__', predicate)}"]))
            raise AssertionError(f"no message {wanted or 'at all'} (index >= {after}) reached chat {chat_id} "
                                 f"within {timeout} s\n" + self._describe_chat(chat_id))

    @property
    def callback_answers(self) -> list[dict]:
        """Parameters of every accepted answerCallbackQuery."""
        with self._changed:
            return copy.deepcopy(self._callback_answers)

    @property
    def commands(self) -> dict[str, list[dict]]:
        """Commands set for the default scope, by language_code ("" = for all languages)."""
        with self._changed:
            return {lang: copy.deepcopy(cmds) for (scope, lang), cmds in self._commands.items() if scope == "default"}

    @property
    def all_commands(self) -> dict[tuple[str, str], list[dict]]:
        """Commands by (scope, language_code); scope is "default", "all_private_chats", "chat:<id>", ..."""
        with self._changed:
            return copy.deepcopy(self._commands)

    @property
    def requests(self) -> list[tuple[str, dict]]:
        """(method, parameters as Python values) of every accepted request, getUpdates included."""
        with self._changed:
            return copy.deepcopy(self._requests)

    def calls(self, method: str) -> list[dict]:
        """Parameters of the accepted requests of one method."""
        return [params for name, params in self.requests if name == method]

    @property
    def rejections(self) -> list[tuple[str, dict, str]]:
        """(method, raw parameters, description) of every request answered 400, 401 or 404."""
        with self._changed:
            return copy.deepcopy(self._rejections)

    @property
    def failures(self) -> list[tuple[str, dict, int, str]]:
        """(method, raw parameters, status, description) of injected faults and rate-limit answers."""
        with self._changed:
            return copy.deepcopy(self._failures)

    # -- faults

    def fail_next(self, method: str | None = None, status: int = 502, count: int = 1,
                  retry_after: int | None = None, description: str | None = None) -> None:
        """Answer the next `count` calls of `method` (None = any method) with an error, without acting on them."""
        self._known_method(method)
        if status == 429:
            retry_after = DEFAULT_RETRY_AFTER_S if retry_after is None else retry_after
            description = description or f"Too Many Requests: retry after {retry_after}"
        else:
            retry_after = None
            description = description or STATUS_DESCRIPTIONS.get(status, "Internal Server Error")
        with self._changed:
            self._faults.append({"method": method, "remaining": count,
                                 "error": ApiError(status, description, retry_after)})

    def set_delay(self, seconds: float, method: str | None = None) -> None:
        """Answer calls of `method` (None = every method) only after `seconds`; 0 ends the delay."""
        self._known_method(method)
        with self._changed:
            if seconds:
                self._delays[method] = seconds
            else:
                self._delays.pop(method, None)

    def enforce_limits(self, on: bool = True) -> None:
        """Answer sendMessage 429 beyond ~30 messages/s overall or ~1/s per chat (bursts of 3)."""
        with self._changed:
            self._limits_on = on
            self._global_bucket = TokenBucket(GLOBAL_SEND_RATE_PER_S, GLOBAL_SEND_RATE_PER_S)
            self._chat_buckets = {}

    def _known_method(self, method: str | None) -> None:
        """Catch a test's typo in a method name early."""
        if method is not None and method not in self._handlers:
            raise ValueError(f"the stand-in has no method {method!r}; it has {sorted(self._handlers)}")

    # -- serving one request

    def answer(self, token: str | None, method: str, raw: dict, generation: int,
               connected=lambda: True) -> tuple[int, dict] | None:
        """Answer one API call: (HTTP status, JSON body), or None to drop the connection."""
        ticket = next(self._poll_tickets) if method == "getUpdates" else 0  # taken on arrival, see _get_updates
        try:
            self._check_address(token, method)
            if not self._pause(self._delay_of(method), generation):
                return None
            self._raise_fault(method)
            params = check_params(self.spec, method, raw)
            with self._changed:  # record the request together with its effect, so tests never see one alone
                result = self._handlers[method](params, ticket=ticket, generation=generation, connected=connected)
                if result is not DROP:
                    self._requests.append((method, params))
        except ApiError as error:
            self._record_error(method, raw, error)
            return error.status, error.payload()
        return None if result is DROP else (200, {"ok": True, "result": result})

    def _check_address(self, token: str | None, method: str) -> None:
        """Refuse a wrong token (401) or a method the spec does not have (404), as Telegram does."""
        if token is None:
            raise ApiError(404, "Not Found")
        if token != self.token:
            raise ApiError(401, "Unauthorized")
        if method not in self.spec.methods:
            raise ApiError(404, "Not Found")

    def _delay_of(self, method: str) -> float:
        """Return the configured delay for the method."""
        with self._changed:
            return self._delays.get(method, self._delays.get(None, 0.0))

    def _pause(self, seconds: float, generation: int) -> bool:
        """Wait `seconds` unless the server goes away first; return whether it is still up."""
        deadline = time.monotonic() + seconds
        with self._changed:
            while self._generation == generation:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return True
                self._changed.wait(remaining)
        return False

    def _raise_fault(self, method: str) -> None:
        """Raise the next injected fault that applies to the method, if any."""
        with self._changed:
            for fault in self._faults:
                if fault["method"] in (None, method):
                    fault["remaining"] -= 1
                    if fault["remaining"] <= 0:
                        self._faults.remove(fault)
                    raise fault["error"]

    def _record_error(self, method: str, raw: dict, error: ApiError) -> None:
        """Keep the bot's mistakes in rejections and our own faults in failures."""
        with self._changed:
            if error.status in REJECTION_STATUSES:
                self._rejections.append((method, dict(raw), error.description))
            elif error.status != 409:
                self._failures.append((method, dict(raw), error.status, error.description))

    # -- methods

    def _true(self, params: dict, **_) -> bool:
        """Methods that only need to succeed."""
        return True

    def _get_me(self, params: dict, **_) -> dict:
        """The bot's own user."""
        return {**self.bot_user, "can_join_groups": True, "can_read_all_group_messages": False,
                "supports_inline_queries": False}

    def _get_updates(self, params: dict, *, ticket: int, generation: int, connected, **_):
        """Confirm updates below offset, then return pending ones, waiting up to `timeout` seconds for one."""
        limit = min(max(params.get("limit", MAX_UPDATES_PER_POLL), 1), MAX_UPDATES_PER_POLL)
        deadline = time.monotonic() + min(max(params.get("timeout", 0), 0), MAX_POLL_TIMEOUT_S)
        with self._changed:
            # Like Telegram, a newer poll ends an older one with 409; tickets are taken on arrival so a
            # delayed, abandoned poll cannot end the live one.
            self._newest_poll = max(self._newest_poll, ticket)
            self._changed.notify_all()
            self._confirm(params.get("offset"))
            if "allowed_updates" in params:
                self._allowed_updates = params["allowed_updates"] or None
            while True:
                if self._generation != generation or not connected():
                    return DROP  # gone away, or the client hung up (a killed bot): stop counting it as waiting
                if self._newest_poll != ticket:
                    raise ApiError(409, CONFLICT)
                deliverable = self._deliverable()
                remaining = deadline - time.monotonic()
                if deliverable or remaining <= 0:
                    return copy.deepcopy(deliverable[:limit])
                self._waiting_polls += 1
                try:
                    self._changed.wait(min(remaining, CLIENT_CHECK_INTERVAL_S))
                finally:
                    self._waiting_polls -= 1

    def _confirm(self, offset: int | None) -> None:
        """Forget updates below offset (a negative offset keeps only the last -offset)."""
        if offset is None:
            return
        if offset < 0:
            self._updates = self._updates[offset:]
        else:
            self._updates = [update for update in self._updates if update["update_id"] >= offset]

    def _deliverable(self) -> list[dict]:
        """Drop updates of kinds the bot did not ask for (as Telegram does); return the rest."""
        if self._allowed_updates is not None:
            self._updates = [update for update in self._updates if update_kind(update) in self._allowed_updates]
        return self._updates

    def _send_message(self, params: dict, **_) -> dict:
        """Record a message to the chat and return it as Telegram would."""
        chat_id = params["chat_id"]
        check_chat_id(chat_id)
        plain = visible_text(params["text"], params.get("parse_mode"))
        with self._changed:
            self._check_send_rate(chat_id)
            record = {"message_id": self._next_message_id(chat_id), "chat_id": chat_id, "text": params["text"],
                      "plain_text": plain, "parse_mode": params.get("parse_mode"),
                      "reply_markup": params.get("reply_markup"), "date": int(time.time()),
                      "edited": 0, "deleted": False}
            self._sent.setdefault(chat_id, []).append(record)
            self._changed.notify_all()
            return self._message_object(record)

    def _edit_message_text(self, params: dict, **_) -> dict:
        """Replace a message's text (and keyboard: none given = removed)."""
        if "rich_message" in params:
            raise bad_request("the stand-in does not support rich_message")
        plain = visible_text(params.get("text", ""), params.get("parse_mode"))
        with self._changed:
            record = self._editable(params)
            new = {"text": params["text"], "plain_text": plain, "parse_mode": params.get("parse_mode"),
                   "reply_markup": params.get("reply_markup")}
            if all(record[key] == new[key] for key in ("text", "plain_text", "reply_markup")):
                raise bad_request(NOT_MODIFIED)
            return self._apply_edit(record, new)

    def _edit_message_reply_markup(self, params: dict, **_) -> dict:
        """Replace a message's inline keyboard (none given = removed)."""
        with self._changed:
            record = self._editable(params)
            if record["reply_markup"] == params.get("reply_markup"):
                raise bad_request(NOT_MODIFIED)
            return self._apply_edit(record, {"reply_markup": params.get("reply_markup")})

    def _editable(self, params: dict) -> dict:
        """Return the stored bot message an edit names, or raise Telegram's error."""
        if "inline_message_id" in params:
            raise bad_request("MESSAGE_ID_INVALID")
        if "chat_id" not in params:
            raise bad_request("chat_id is empty")
        if "message_id" not in params:
            raise bad_request("message identifier is not specified")
        chat_id, message_id = params["chat_id"], params["message_id"]
        if message_id in self._user_messages.get(chat_id, {}):
            raise bad_request("message can't be edited")
        record = self._sent_record(chat_id, message_id)
        if record is None or record["deleted"]:
            raise bad_request("message to edit not found")
        return record

    def _apply_edit(self, record: dict, changes: dict) -> dict:
        """Update the stored message in place and return it as Telegram would."""
        record.update(changes)
        record["edited"] += 1
        record["edit_date"] = int(time.time())
        self._changed.notify_all()
        return self._message_object(record)

    def _answer_callback_query(self, params: dict, **_) -> bool:
        """Record the answer to a pushed callback query; each may be answered once."""
        if len(params.get("text", "")) > MAX_CALLBACK_ANSWER_CHARS:
            raise bad_request("MESSAGE_TOO_LONG")
        with self._changed:
            query = self._callbacks.get(params["callback_query_id"])
            if query is None or query["answered"]:
                raise bad_request("query is too old and response timeout expired or query ID is invalid")
            query["answered"] = True
            self._callback_answers.append(params)
            self._changed.notify_all()
        return True

    def _delete_message(self, params: dict, **_) -> bool:
        """Mark a bot message (or a user's message) deleted."""
        chat_id, message_id = params["chat_id"], params["message_id"]
        with self._changed:
            record = self._sent_record(chat_id, message_id) or self._user_messages.get(chat_id, {}).get(message_id)
            if record is None or record.get("deleted"):
                raise bad_request("message to delete not found")
            record["deleted"] = True
            self._changed.notify_all()
        return True

    def _set_my_commands(self, params: dict, **_) -> bool:
        """Check and store the command list of a scope and language."""
        commands = params["commands"]
        if len(commands) > MAX_COMMANDS:
            raise bad_request("too many commands")
        for command in commands:
            check_command(command)
        with self._changed:
            self._commands[self._commands_key(params)] = commands
        return True

    def _get_my_commands(self, params: dict, **_) -> list[dict]:
        """Return the command list of a scope and language."""
        with self._changed:
            return copy.deepcopy(self._commands.get(self._commands_key(params), []))

    def _commands_key(self, params: dict) -> tuple[str, str]:
        """Key command lists by scope ("default", "chat:42", ...) and language_code ("" = any)."""
        language = params.get("language_code", "")
        if language and not re.fullmatch(r"[a-z]{2}", language):
            raise bad_request("LANG_CODE_INVALID")
        scope = params.get("scope") or {"type": "default"}
        return ":".join([scope["type"]] + [str(scope[k]) for k in ("chat_id", "user_id") if k in scope]), language

    # -- bookkeeping (callers hold the lock)

    def _push_update(self, content: dict) -> dict:
        """Queue an update and wake long polls."""
        update = {"update_id": next(self._update_ids), **content}
        self._updates.append(update)
        self._changed.notify_all()
        return copy.deepcopy(update)

    def _next_message_id(self, chat_id) -> int:
        """Message ids count up per chat, shared by the user's and the bot's messages."""
        self._last_message_id[chat_id] = self._last_message_id.get(chat_id, 0) + 1
        return self._last_message_id[chat_id]

    def _sent_record(self, chat_id, message_id: int) -> dict | None:
        """Return the stored bot message, or None."""
        return next((r for r in self._sent.get(chat_id, []) if r["message_id"] == message_id), None)

    def _message_object(self, record: dict) -> dict:
        """Render a stored bot message as a Telegram Message."""
        chat_id = record["chat_id"]
        message = {"message_id": record["message_id"], "from": self.bot_user,
                   "chat": self._chats.get(chat_id, chat_object(chat_id)), "date": record["date"],
                   "text": record["plain_text"]}
        if "edit_date" in record:
            message["edit_date"] = record["edit_date"]
        if record["reply_markup"] and "inline_keyboard" in record["reply_markup"]:
            message["reply_markup"] = record["reply_markup"]  # Telegram echoes only inline keyboards
        return copy.deepcopy(message)

    def _check_send_rate(self, chat_id) -> None:
        """Raise 429 when enforce_limits is on and the global or the chat's budget is spent."""
        if not self._limits_on:
            return
        chat_bucket = self._chat_buckets.setdefault(chat_id, TokenBucket(CHAT_SEND_RATE_PER_S, CHAT_SEND_BURST))
        wait_s = max(self._global_bucket.wait_s(), chat_bucket.wait_s())
        if wait_s > 0:
            raise too_many_requests(max(1, math.ceil(wait_s)))
        self._global_bucket.take()
        chat_bucket.take()

    def _describe_chat(self, chat_id) -> str:
        """Everything sent to the chat and every rejected request for it, for assertion messages."""
        lines = [f"sent to chat {chat_id}:"] + [f"  [{index}] {describe_record(record)}"
                                                for index, record in enumerate(self._sent.get(chat_id, []))]
        if len(lines) == 1:
            lines.append("  (nothing)")
        rejected = [(method, description) for method, raw, description in self._rejections
                    if str(raw.get("chat_id")) == str(chat_id)]
        lines += [f"rejected for chat {chat_id}: {method}: {description}" for method, description in rejected]
        return "\n".join(lines)


def client_connected(sock: socket.socket) -> bool:
    """Tell whether the HTTP client is still there: a hung-up socket reads as end of file."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return not readable or sock.recv(1, socket.MSG_PEEK) != b""
    except OSError:
        return False


def chat_object(chat_id, user: dict | None = None) -> dict:
    """A private chat with the user (or a group for a negative id)."""
    if isinstance(chat_id, int) and chat_id < 0:
        return {"id": chat_id, "type": "group", "title": f"Group {chat_id}"}
    chat = {"id": chat_id, "type": "private"}
    if user:
        chat.update({k: user[k] for k in ("first_name", "username") if k in user})
    return chat


def update_kind(update: dict) -> str:
    """The update's kind: "message", "callback_query", ..."""
    return next(key for key in update if key != "update_id")


def check_command(command: dict) -> None:
    """Raise Telegram's error for a command name or description out of bounds."""
    if not COMMAND_PATTERN.fullmatch(command["command"]):
        raise bad_request(f"BOT_COMMAND_INVALID: {command['command']!r} must be 1-32 lowercase letters, "
                          "digits or underscores")
    if not 1 <= len(command["description"].strip()) <= MAX_COMMAND_DESCRIPTION_CHARS:
        raise bad_request(f"BOT_COMMAND_DESCRIPTION_INVALID: the description of /{command['command']} "
                          f"must be 1-{MAX_COMMAND_DESCRIPTION_CHARS} characters")


def button_data(markup: dict | None, label: str) -> str | None:
    """Return the callback_data of the inline button labelled exactly `label`, or None."""
    for row in (markup or {}).get("inline_keyboard", []):
        for button in row:
            if button["text"] == label and "callback_data" in button:
                return button["callback_data"]
    return None


def describe_record(record: dict) -> str:
    """One line about a stored bot message."""
    flags = [f"edited x{record['edited']}" if record["edited"] else "", "deleted" if record["deleted"] else ""]
    buttons = [[button["text"] for button in row] for row in (record["reply_markup"] or {}).get("inline_keyboard", [])]
    return " ".join(filter(None, [f"#{record['message_id']}", repr(record["text"]),
                                  f"buttons={buttons}" if buttons else "", *flags]))
