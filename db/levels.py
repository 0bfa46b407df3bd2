"""Deposit levels: versioned tiers of whole-token amounts; exactly one version is current.

Levels are contiguous: written 10-100,100-1000,1000-10000 they mean [10, 100),
[100, 1000), [1000, 10000], each upper bound excluded except the last's, so every
amount from the lowest bound to the highest falls in exactly one level. The
database refuses a version that is not contiguous (migrations/0009).
"""
from dataclasses import dataclass

from core.amounts import parse_amount
from core.errors import AmountError

SQL_CURRENT = """
SELECT l.version, l.level, l.min_tokens::text AS min_tokens, l.max_tokens::text AS max_tokens
FROM deposit_levels l JOIN deposit_level_versions v USING (version)
WHERE v.is_current ORDER BY l.level
"""
SQL_RETIRE = "UPDATE deposit_level_versions SET is_current = false WHERE is_current"
SQL_NEW_VERSION = "INSERT INTO deposit_level_versions (is_current, created_by) VALUES (true, %s) RETURNING version"
SQL_INSERT_LEVEL = """
INSERT INTO deposit_levels (version, level, min_tokens, max_tokens) VALUES (%s, %s, %s::numeric, %s::numeric)
"""
SQL_LOCK_VERSIONS = "LOCK TABLE deposit_level_versions IN SHARE ROW EXCLUSIVE MODE"


@dataclass(frozen=True)
class Level:
    version: int
    level: int
    min_tokens: str  # whole-token decimal text, e.g. "10" or "0.5"
    max_tokens: str

    def bounds(self, decimals: int) -> tuple[int, int]:
        """(min, max) in base units of a token with `decimals` decimals."""
        return parse_amount(self.min_tokens, decimals), parse_amount(self.max_tokens, decimals)

    def contains(self, amount: int, decimals: int, last: bool) -> bool:
        """low <= amount < high; the last level also holds its upper bound."""
        low, high = self.bounds(decimals)
        return low <= amount < high or (last and amount == high)


def current(conn) -> list[Level]:
    return [Level(**row) for row in conn.execute(SQL_CURRENT).fetchall()]


def level_for(levels: list[Level], amount: int, decimals: int) -> Level | None:
    """The level whose range holds `amount` base units, or None."""
    return next((lvl for lvl in levels if lvl.contains(amount, decimals, lvl is levels[-1])), None)


def parse_ranges(text: str) -> list[tuple[str, str]]:
    """Parse "10-100,100-1000" into [("10", "100"), ("100", "1000")]: ascending, each starting where the one
    before ends."""
    ranges = []
    for part in text.split(","):
        low, sep, high = part.strip().partition("-")
        if not sep:
            raise AmountError(f"{part.strip()!r} is not a range like 10-100")
        low_units = parse_amount(low, 18)
        high_units = parse_amount(high, 18)
        if high_units <= low_units:
            raise AmountError(f"{part.strip()}: the upper bound must be above the lower one")
        if ranges and low_units != parse_amount(ranges[-1][1], 18):
            raise AmountError(f"{part.strip()}: each level starts where the one before ends "
                              f"({ranges[-1][1]}), so no amount falls between levels")
        ranges.append((low.strip(), high.strip()))
    return ranges


def replace(conn, ranges: list[tuple[str, str]], admin_id: int) -> int:
    """Make `ranges` the current levels as a new version; deposits keep the version they were made under."""
    if not ranges:
        raise AmountError("at least one level is needed")
    conn.execute(SQL_LOCK_VERSIONS)  # two admins at once: one waits, both versions stay whole
    conn.execute(SQL_RETIRE)
    version = conn.execute(SQL_NEW_VERSION, (admin_id,)).fetchone()["version"]
    for number, (low, high) in enumerate(ranges, start=1):
        conn.execute(SQL_INSERT_LEVEL, (version, number, low, high))
    return version
