"""The web3 client: token contract access over JSON-RPC (web3.py 8), explicit timeouts, no hidden retries.

Every call to the node goes through the circuit breaker the caller injects.
Errors are classified once, here: transport failures (no usable answer) are
outages and count against the breaker; Web3RPCError/ContractLogicError mean the
node answered and do not.
"""
import json
from dataclasses import dataclass

import requests
from eth_account import Account
from web3 import Web3
from web3.exceptions import BlockNotFound, TransactionNotFound, Web3RPCError

from core import fees as fee_rules
from core.fees import Fees
from db.deposits import Transfer

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
]
TRANSFER_TOPIC = "0x" + Web3.keccak(text="Transfer(address,address,uint256)").hex().removeprefix("0x")
WITHDRAWAL_GAS_LIMIT = 100_000  # an ERC-20 transfer needs ~35-55k; fixed so signing needs no estimate
CANCEL_GAS_LIMIT = 21_000  # a plain transfer of nothing to the hot wallet itself
RANGE_REFUSED_HINTS = ("range", "too many", "limit", "exceed", "10000", "response size")
ALREADY_KNOWN_HINTS = ("already known", "known transaction", "already imported")
UNDERPRICED_HINTS = ("underpriced", "fee cap", "feecap", "less than block base fee", "max fee per gas less",
                     "gas price too low", "fee too low")
NO_GAS_FUNDS_HINTS = ("insufficient funds",)
SENT, ALREADY_KNOWN, NONCE_USED, NONCE_AHEAD = "sent", "already known", "nonce used", "nonce ahead"
UNDERPRICED, NO_GAS_FUNDS = "underpriced", "insufficient funds for gas"


class RangeRefused(Exception):
    """The node refused an eth_getLogs range (too many blocks or results)."""


def is_transport_failure(exc: BaseException) -> bool:
    """True when the node gave no usable answer: counts as an outage for the breaker."""
    if isinstance(exc, requests.HTTPError):
        status = exc.response.status_code if exc.response is not None else 500
        return status >= 500 or status == 429
    return isinstance(exc, (requests.RequestException, json.JSONDecodeError))


@dataclass(frozen=True)
class SignedTransfer:
    tx_hash: str
    raw: bytes
    nonce: int


def connect(settings) -> Web3:
    """A Web3 client with an explicit timeout and web3's own retries switched off."""
    provider = Web3.HTTPProvider(settings.rpc_url.reveal(), request_kwargs={"timeout": settings.rpc_timeout_s},
                                 exception_retry_configuration=None)
    return Web3(provider)


class Chain:
    """The token, the deposit address and the hot wallet, as the worker sees them."""

    def __init__(self, w3: Web3, breaker, *, token_address: str, deposit_address: str, chain_id: int,
                 hot_wallet_key: str | None = None, previous_deposit_addresses: tuple = ()):
        self.w3 = w3
        self.breaker = breaker
        self.token = w3.eth.contract(address=Web3.to_checksum_address(token_address), abi=ERC20_ABI)
        self.deposit_address = Web3.to_checksum_address(deposit_address)
        self.watched_addresses = [self.deposit_address] + [
            Web3.to_checksum_address(a) for a in previous_deposit_addresses if a.lower() != deposit_address.lower()]
        self.chain_id = chain_id
        self._account = Account.from_key(hot_wallet_key) if hot_wallet_key else None

    @property
    def hot_wallet(self) -> str:
        return self._account.address

    def _rpc(self, function, *args):
        return self.breaker.call(function, *args)

    # --- reading
    def head(self) -> int:
        return self._rpc(lambda: self.w3.eth.block_number)

    def block_hash(self, number: int) -> str | None:
        """Hash of the canonical block at `number`, or None if the node has no such block."""
        block = self._rpc(lambda: self.w3.eth.get_block(number))
        return to_hex(block["hash"]) if block else None

    def finalized_block(self) -> int | None:
        """The newest block the node calls finalized (it can no longer be reorged away); None without the tag."""
        try:
            return int(self._rpc(lambda: self.w3.eth.get_block("finalized"))["number"])
        except (BlockNotFound, Web3RPCError):
            return None

    def transfer_logs(self, from_block: int, to_block: int) -> list[Transfer]:
        """Token Transfer logs to the deposit address (and former ones) in [from_block, to_block]."""
        recipients = ["0x" + address[2:].lower().rjust(64, "0") for address in self.watched_addresses]
        query = {"fromBlock": from_block, "toBlock": to_block, "address": self.token.address,
                 "topics": [TRANSFER_TOPIC, None, recipients]}
        try:
            entries = self._rpc(self.w3.eth.get_logs, query)
        except Web3RPCError as exc:
            if any(hint in str(exc).lower() for hint in RANGE_REFUSED_HINTS):
                raise RangeRefused(str(exc)) from exc
            raise
        return [_transfer(entry) for entry in entries if not entry.get("removed")]

    def token_balance(self, address: str) -> int:
        return self._rpc(self.token.functions.balanceOf(Web3.to_checksum_address(address)).call)

    def native_balance(self, address: str) -> int:
        return self._rpc(self.w3.eth.get_balance, Web3.to_checksum_address(address))

    def pending_nonce(self) -> int:
        return self._rpc(self.w3.eth.get_transaction_count, self.hot_wallet, "pending")

    def nonce_at(self, block: int | str) -> int:
        """How many transactions the hot wallet had sent as of `block` (a number, or "latest")."""
        return self._rpc(self.w3.eth.get_transaction_count, self.hot_wallet, block)

    def block_transactions(self, number: int) -> list:
        block = self._rpc(lambda: self.w3.eth.get_block(number, full_transactions=True))
        return list(block["transactions"]) if block else []

    def raw_transaction(self, tx_hash: str) -> bytes:
        return bytes(self._rpc(self.w3.eth.get_raw_transaction, tx_hash))

    def decode_token_transfer(self, tx) -> tuple[str, int] | None:
        """(recipient, amount) when `tx` calls token.transfer, else None."""
        if not tx.get("to") or tx["to"].lower() != self.token.address.lower():
            return None
        try:
            function, args = self.token.decode_function_input(tx["input"])
        except ValueError:
            return None
        if function.fn_name != "transfer":
            return None
        return Web3.to_checksum_address(args["to"]), int(args["value"])

    def fees(self) -> Fees:
        """Fees to offer now: EIP-1559 when the latest block has a base fee, else the legacy gas price."""
        base_fee = self._rpc(lambda: self.w3.eth.get_block("latest")).get("baseFeePerGas")
        if base_fee is None:
            return fee_rules.legacy(self._rpc(lambda: self.w3.eth.gas_price))
        return fee_rules.suggested(base_fee, self._rpc(lambda: self.w3.eth.max_priority_fee), 0)

    def transaction_fees(self, tx_hash: str) -> Fees | None:
        """The fees of a transaction the node knows, or None."""
        try:
            tx = self._rpc(self.w3.eth.get_transaction, tx_hash)
        except TransactionNotFound:
            return None
        if tx.get("maxFeePerGas") is not None:
            return Fees(max_fee=int(tx["maxFeePerGas"]), priority_fee=int(tx["maxPriorityFeePerGas"]))
        return fee_rules.legacy(int(tx["gasPrice"]))

    def receipt(self, tx_hash: str) -> dict | None:
        """The receipt (status, blockNumber), or None while the transaction is not mined."""
        try:
            return self._rpc(self.w3.eth.get_transaction_receipt, tx_hash)
        except TransactionNotFound:
            return None

    def transaction_known(self, tx_hash: str) -> bool:
        """Whether the node knows the transaction at all (mined or in its mempool)."""
        try:
            return self._rpc(self.w3.eth.get_transaction, tx_hash) is not None
        except TransactionNotFound:
            return False

    # --- writing
    def sign_transfer(self, to: str, amount: int, nonce: int, fees: Fees) -> SignedTransfer:
        """Sign token.transfer(to, amount) from the hot wallet; pure computation, no RPC."""
        data = self.token.encode_abi("transfer", args=[Web3.to_checksum_address(to), amount])
        return self._sign({"to": self.token.address, "data": data, "value": 0, "gas": WITHDRAWAL_GAS_LIMIT}, nonce,
                          fees)

    def sign_cancel(self, nonce: int, fees: Fees) -> SignedTransfer:
        """Sign a transfer of nothing to the hot wallet itself: it spends `nonce` and pays no one."""
        return self._sign({"to": self.hot_wallet, "data": b"", "value": 0, "gas": CANCEL_GAS_LIMIT}, nonce, fees)

    def _sign(self, tx: dict, nonce: int, fees: Fees) -> SignedTransfer:
        signed = self._account.sign_transaction({**tx, **fees.transaction_fields(), "nonce": nonce,
                                                 "chainId": self.chain_id})
        return SignedTransfer(to_hex(signed.hash), bytes(signed.raw_transaction), nonce)

    def send_raw(self, raw: bytes, nonce: int) -> str:
        """Broadcast signed bytes: SENT, ALREADY_KNOWN (the node has them), NONCE_USED (the nonce is
        spent: by these very bytes if they were mined, otherwise by another transaction),
        NONCE_AHEAD (the node refuses a nonce past the wallet's next one), UNDERPRICED (the fees
        are below what the node takes now) or NO_GAS_FUNDS. Any other refusal is raised
        (Web3RPCError): the node answered, and the caller decides about that row alone.

        Whether a refused nonce is too low or too high is read from the node's transaction
        count, not guessed from the wording of its error.
        """
        try:
            self._rpc(self.w3.eth.send_raw_transaction, raw)
        except Web3RPCError as exc:
            message = str(exc).lower()
            if any(hint in message for hint in ALREADY_KNOWN_HINTS):
                return ALREADY_KNOWN
            if "nonce" in message:
                return NONCE_USED if self.nonce_at("latest") > nonce else NONCE_AHEAD
            if any(hint in message for hint in UNDERPRICED_HINTS):
                return UNDERPRICED
            if any(hint in message for hint in NO_GAS_FUNDS_HINTS):
                return NO_GAS_FUNDS
            raise
        return SENT


def to_hex(value) -> str:
    text = value.hex() if hasattr(value, "hex") else str(value)
    return (text if text.startswith("0x") else "0x" + text).lower()


def _transfer(entry) -> Transfer:
    topics = entry["topics"]
    data = entry["data"]
    value = int(to_hex(data), 16) if data not in (b"", "0x") else 0
    return Transfer(tx_hash=to_hex(entry["transactionHash"]), log_index=int(entry["logIndex"]),
                    block_number=int(entry["blockNumber"]), block_hash=to_hex(entry["blockHash"]),
                    from_address="0x" + to_hex(topics[1])[-40:], amount=value)
