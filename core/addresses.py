"""EVM address parsing: lowercase hex, or mixed case that passes the EIP-55 checksum."""
import re

from eth_utils import to_checksum_address

from core.errors import AddressError

ZERO_ADDRESS = "0x" + "0" * 40
_HEX_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


def parse_address(text: str) -> str:
    """Return the EIP-55 checksummed form of `text`, or raise AddressError."""
    candidate = text.strip()
    if not _HEX_ADDRESS.fullmatch(candidate):
        raise AddressError("not an EVM address (0x followed by 40 hex digits)")
    checksummed = to_checksum_address(candidate)
    hex_part = candidate[2:]
    mixed_case = hex_part != hex_part.lower() and hex_part != hex_part.upper()
    if mixed_case and candidate != checksummed:
        raise AddressError("mixed-case address fails its EIP-55 checksum")
    return checksummed


def canonical(address: str) -> str:
    """Return the lowercase form stored in the database."""
    return address.lower()


def is_zero(address: str) -> bool:
    return canonical(address) == ZERO_ADDRESS
