"""The i18n catalog: both languages for every key, same placeholders, and the #id contract."""
import re
import string

import pytest

from core.i18n import CATALOG, LANGUAGES, t
from handlers import keyboards


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


@pytest.mark.parametrize("key", sorted(CATALOG))
def test_every_key_in_both_languages_with_the_same_placeholders(key):
    entry = CATALOG[key]
    assert set(entry) == set(LANGUAGES)
    assert all(entry[lang].strip() for lang in LANGUAGES)
    assert placeholders(entry["en"]) == placeholders(entry["ru"])


@pytest.mark.parametrize("key", sorted(CATALOG))
def test_hash_marks_only_ids(key):
    for text in CATALOG[key].values():
        for match in re.finditer("#", text):
            assert text[match.start():].startswith("#{id}"), f"{key}: '#' must only precede an id"


def test_unknown_language_falls_back_to_english():
    assert t("de", "cancelled") == CATALOG["cancelled"]["en"]


def test_callback_data_is_parsed_strictly():
    assert keyboards.parse("m:deposit").args == ("deposit",)
    assert keyboards.parse("ap:17").kind == "approve"
    assert keyboards.parse("wc:0a1b2c3d").args == ("0a1b2c3d",)
    for forged in ["", None, "ap:", "ap:-1", "ap:1;drop", "m:root", "wc:XYZ", "x" * 65, "dl:1:2:3", "ap:1 "]:
        assert keyboards.parse(forged) is None


def test_keyboard_callback_data_fits_telegram_limit():
    markups = [keyboards.main_menu("ru"), keyboards.languages(), keyboards.withdraw_all("en"),
               keyboards.withdraw_confirm("ru", "0a1b2c3d"), keyboards.approve_reject("en", 10**17),
               keyboards.deposit_levels("ru", [(10**8, 9999, "10", "99")], "USDT")]
    for markup in markups:
        for row in markup.keyboard:
            for button in row:
                assert len(button.callback_data.encode()) <= 64
                assert keyboards.parse(button.callback_data) is not None


def test_database_errors_map_to_replies_by_type():
    from core.errors import DatabaseError, DatabaseInterfaceError, DatabaseOperationalError
    from handlers.middlewares import error_reply_key
    assert error_reply_key(DatabaseOperationalError("x")) == "db_operational"
    assert error_reply_key(DatabaseInterfaceError("x")) == "db_interface"
    assert error_reply_key(DatabaseError("x")) == "db_error"
    assert error_reply_key(RuntimeError("x")) == "internal_error"
    assert t("ru", "db_interface") == "Проблемы с подключением к базе данных, попробуйте позже."
