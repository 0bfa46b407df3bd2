"""Token amounts: integer base units inside, plain decimal text outside. No floats anywhere."""
import re

from core.errors import AmountError

MAX_DECIMALS = 36
MAX_INTEGER_DIGITS = 18  # 10**18 whole tokens is far beyond any real supply
_DECIMAL_TEXT = re.compile(r"([0-9]+)(?:\.([0-9]+))?")


def parse_amount(text: str, decimals: int, *, allow_zero: bool = False) -> int:
    """Parse `text` like "12.5" into base units of a token with `decimals` decimals."""
    _check_decimals(decimals)
    if not isinstance(text, str):
        raise AmountError("amount must be text")
    match = _DECIMAL_TEXT.fullmatch(text.strip())
    if not match:
        raise AmountError("amount must be a plain decimal number like 12 or 12.5")
    whole, fraction = match.group(1), match.group(2) or ""
    if len(whole.lstrip("0")) > MAX_INTEGER_DIGITS:
        raise AmountError("amount is too large")
    if len(fraction.rstrip("0")) > decimals:
        raise AmountError(f"amount has more than {decimals} decimal places")
    fraction = fraction[:decimals].ljust(decimals, "0")
    units = int(whole) * 10**decimals + (int(fraction) if fraction else 0)
    if units == 0 and not allow_zero:
        raise AmountError("amount must be greater than zero")
    return units


def format_amount(units: int, decimals: int) -> str:
    """Render base units as a plain decimal: no exponent, no separators, no trailing zeros."""
    _check_decimals(decimals)
    if isinstance(units, bool) or not isinstance(units, int):
        raise AmountError("base units must be an int")
    sign = "-" if units < 0 else ""
    whole, fraction = divmod(abs(units), 10**decimals)
    text = str(whole)
    if decimals and fraction:
        text += "." + str(fraction).rjust(decimals, "0").rstrip("0")
    return sign + text


def _check_decimals(decimals: int) -> None:
    if isinstance(decimals, bool) or not isinstance(decimals, int) or not 0 <= decimals <= MAX_DECIMALS:
        raise AmountError(f"token decimals must be an int between 0 and {MAX_DECIMALS}")
