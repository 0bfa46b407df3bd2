"""Token contract access over JSON-RPC (web3.py): explicit timeouts, no hidden retries."""
import json
from dataclasses import dataclass

import requests
from web3 import Web3

ERC20_ABI = [
    {"name": "decimals", "type": "function", "stateMutability": "view", "inputs": [],
     "outputs": [{"name": "", "type": "uint8"}]},
    {"name": "symbol", "type": "function", "stateMutability": "view", "inputs": [],
     "outputs": [{"name": "", "type": "string"}]},
    {"name": "balanceOf", "type": "function", "stateMutability": "view",
     "inputs": [{"name": "owner", "type": "address"}], "outputs": [{"name": "", "type": "uint256"}]},
    {"name": "transfer", "type": "function", "stateMutability": "nonpayable",
     "inputs": [{"name": "to", "type": "address"}, {"name": "value", "type": "uint256"}],
     "outputs": [{"name": "", "type": "bool"}]},
    {"name": "Transfer", "type": "event", "anonymous": False,
     "inputs": [{"name": "from", "type": "address", "indexed": True},
                {"name": "to", "type": "address", "indexed": True},
                {"name": "value", "type": "uint256", "indexed": False}]},
]

# Transport failures: the node did not answer, or answered like a broken proxy. web3's
# Web3RPCError and ContractLogicError are not here: they mean the node answered.
TRANSPORT_ERRORS = (requests.RequestException, json.JSONDecodeError)


class RpcUnavailable(Exception):
    """The RPC node could not be reached or gave no usable answer."""


@dataclass(frozen=True)
class TokenInfo:
    address: str
    symbol: str
    decimals: int


def connect(settings) -> Web3:
    """A Web3 client with an explicit timeout and web3's own retries switched off."""
    provider = Web3.HTTPProvider(settings.rpc_url.reveal(), request_kwargs={"timeout": settings.rpc_timeout_s},
                                 exception_retry_configuration=None)
    return Web3(provider)


def read_token_info(w3: Web3, token_address: str) -> TokenInfo:
    """Symbol and decimals from the token contract; RpcUnavailable when the node does not answer."""
    contract = w3.eth.contract(address=Web3.to_checksum_address(token_address), abi=ERC20_ABI)
    try:
        decimals = contract.functions.decimals().call()
        symbol = contract.functions.symbol().call()
    except TRANSPORT_ERRORS as exc:
        raise RpcUnavailable(f"{type(exc).__name__}") from exc
    return TokenInfo(token_address, symbol, int(decimals))
