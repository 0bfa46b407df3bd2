"""Token metadata (symbol, decimals): read from the contract, cached in the database for when the RPC is down."""
import logging
from dataclasses import dataclass

from web3 import Web3

from chain.rpc import ERC20_ABI, connect
from core.errors import TokenInfoUnavailable
from db import system_settings
from db.pool import transaction

log = logging.getLogger(__name__)

CACHE_KEY = "token_metadata"


@dataclass(frozen=True)
class TokenInfo:
    address: str
    symbol: str
    decimals: int


def read_token_info(w3: Web3, token_address: str) -> TokenInfo:
    """Symbol and decimals from the token contract."""
    contract = w3.eth.contract(address=Web3.to_checksum_address(token_address), abi=ERC20_ABI)
    decimals = contract.functions.decimals().call()
    symbol = contract.functions.symbol().call()
    return TokenInfo(token_address, symbol, int(decimals))


def load_token_info(settings, pool) -> TokenInfo:
    """From the contract when the RPC answers (refreshing the cached copy), else the cached copy."""
    try:
        info = read_token_info(connect(settings), settings.token_address)
    except Exception as exc:  # any RPC trouble: fall back to the cached copy
        log.warning("token metadata from the RPC failed (%s); using the cached copy", type(exc).__name__)
        return _cached(pool, settings.token_address)
    with transaction(pool) as conn:
        system_settings.put(conn, CACHE_KEY, {"address": info.address, "symbol": info.symbol,
                                              "decimals": info.decimals}, None)
    return info


def _cached(pool, token_address: str) -> TokenInfo:
    with transaction(pool) as conn:
        cached = system_settings.get(conn, CACHE_KEY)
    if not cached or cached.get("address", "").lower() != token_address.lower():
        raise TokenInfoUnavailable("the RPC is unreachable and none are cached")
    return TokenInfo(token_address, cached["symbol"], int(cached["decimals"]))
