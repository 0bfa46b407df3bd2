"""Amount parsing and formatting: integer base units only, decimals 6 and 18."""
import pytest

from core.errors import AmountError
from core.amounts import format_amount, parse_amount


@pytest.mark.parametrize("text, decimals, units", [
    ("1", 6, 1_000_000),
    ("0.5", 6, 500_000),
    ("1234.56", 6, 1_234_560_000),
    ("0.000001", 6, 1),
    ("10.100000", 6, 10_100_000),          # trailing zeros beyond nothing are fine
    ("1", 18, 10**18),
    ("0.000000000000000001", 18, 1),
    ("123456789.123456789123456789", 18, 123456789_123456789123456789),
    ("  42  ", 6, 42_000_000),
    ("007", 6, 7_000_000),
])
def test_parse_amount(text, decimals, units):
    assert parse_amount(text, decimals) == units
    assert isinstance(parse_amount(text, decimals), int)


@pytest.mark.parametrize("text", [
    "-5", "0", "0.0", "1e309", "1E3", "NaN", "nan", "inf", "Infinity", "1,5", "1 000", "0x10",
    "9" * 40, "", " ", ".5", "5.", "+5", "1.2.3", "١٢", "5\n6", "1_000", "１",
    "'; DROP TABLE users; --",
])
def test_parse_amount_rejects(text):
    with pytest.raises(AmountError):
        parse_amount(text, 6)


def test_more_decimals_than_the_token_has_is_rejected():
    with pytest.raises(AmountError, match="decimal places"):
        parse_amount("0.0000001", 6)
    assert parse_amount("0.0000001", 18) == 10**11


def test_zero_only_when_allowed():
    assert parse_amount("0", 6, allow_zero=True) == 0
    with pytest.raises(AmountError):
        parse_amount("0", 6)


def test_non_text_is_rejected():
    with pytest.raises(AmountError):
        parse_amount(1.5, 6)


@pytest.mark.parametrize("units, decimals, text", [
    (100_000_000, 6, "100"),
    (500_000, 6, "0.5"),
    (1_234_560_000, 6, "1234.56"),
    (1, 6, "0.000001"),
    (0, 6, "0"),
    (10**18, 18, "1"),
    (1, 18, "0.000000000000000001"),
    (12_345 * 10**18 + 10**17, 18, "12345.1"),
    (2**256 - 1, 18, "115792089237316195423570985008687907853269984665640564039457.584007913129639935"),
    (-1_500_000, 6, "-1.5"),
    (7, 0, "7"),
])
def test_format_amount(units, decimals, text):
    assert format_amount(units, decimals) == text


@pytest.mark.parametrize("decimals", [6, 18])
def test_round_trip(decimals):
    for text in ["1", "0.5", "1234.56", "99.99", "10000"]:
        assert format_amount(parse_amount(text, decimals), decimals) == text


def test_format_refuses_floats_and_bools():
    with pytest.raises(AmountError):
        format_amount(1.5, 6)
    with pytest.raises(AmountError):
        format_amount(True, 6)


def test_bad_decimals_refused():
    with pytest.raises(AmountError):
        parse_amount("1", -1)
    with pytest.raises(AmountError):
        format_amount(1, 99)
