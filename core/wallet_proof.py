"""Proof of wallet ownership: an EIP-191 (personal_sign) signature over one fixed line of text.

The text names the address in EIP-55 form and the Telegram user id, so a signature
proves that the key holder wants this address linked to this Telegram account and
can be replayed for nothing else.
"""
import re

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import to_checksum_address

from core.errors import SignatureError

_SIGNATURE = re.compile(r"0x[0-9a-fA-F]{130}")


def proof_text(address: str, telegram_id: int) -> str:
    """The exact line the wallet must sign (English in every language)."""
    return f"Link wallet {to_checksum_address(address)} to Telegram user {telegram_id}"


def parse_signature(text: str) -> str:
    """The signature in `text` as lowercase 0x + 130 hex digits, or SignatureError."""
    candidate = text.strip()
    if not _SIGNATURE.fullmatch(candidate):
        raise SignatureError("a signature is 0x followed by 130 hex digits")
    return candidate.lower()


def signer(text: str, signature: str) -> str | None:
    """The EIP-55 address whose key made `signature` over `text`; None if it recovers to nothing."""
    try:
        return Account.recover_message(encode_defunct(text=text), signature=parse_signature(signature))
    except SignatureError:
        raise
    except Exception:  # a malformed v, r or s: no key made this signature
        return None


def proves(address: str, telegram_id: int, signature: str) -> bool:
    """True when `signature` is `address`'s key signing the link to `telegram_id`."""
    return signer(proof_text(address, telegram_id), signature) == to_checksum_address(address)
