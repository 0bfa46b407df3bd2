"""Test and demo helpers for a local anvil chain: deploy, mint and move TestToken, steer the node."""
import functools
import json
from dataclasses import dataclass
from pathlib import Path

from eth_account import Account
from eth_account.messages import encode_defunct
from web3 import Web3

from core.wallet_proof import proof_text
from devstack.anvil import DEV_ACCOUNTS, DEV_MNEMONIC

ARTIFACT_PATH = Path(__file__).resolve().parent.parent / "contracts" / "TestToken.json"
HTTP_TIMEOUT_S = 10.0
RECEIPT_TIMEOUT_S = 30.0
TX_GAS = 3_000_000  # fixed, so a transfer that reverts is still mined (estimateGas would refuse it)

def dev_private_keys(count: int = DEV_ACCOUNTS, first: int = 0) -> list[str]:
    """Keys of anvil's dev accounts, derived from its public test mnemonic (never real money).

    Indexes past DEV_ACCOUNTS give more keys of the same mnemonic: unfunded, fine for signing.
    """
    Account.enable_unaudited_hdwallet_features()
    return [Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}").key.to_0x_hex()
            for index in range(first, first + count)]


DEV_PRIVATE_KEYS = dev_private_keys()
DEPLOYER_KEY = DEV_PRIVATE_KEYS[0]


@dataclass(frozen=True)
class DeployedToken:
    """A TestToken on chain: where it is and how it presents itself."""

    address: str
    symbol: str
    decimals: int


def address_of(private_key: str) -> str:
    """Checksummed address of a private key."""
    return Account.from_key(private_key).address


def sign_wallet_proof(private_key: str, telegram_id: int) -> str:
    """What a user's wallet answers to "sign message" for the bot's proof text (EIP-191)."""
    message = encode_defunct(text=proof_text(address_of(private_key), telegram_id))
    return Account.sign_message(message, private_key).signature.to_0x_hex()


def connect(url: str, timeout_s: float = HTTP_TIMEOUT_S) -> Web3:
    """A Web3 client with an explicit timeout and no hidden retries."""
    provider = Web3.HTTPProvider(url, request_kwargs={"timeout": timeout_s},
                                 exception_retry_configuration=None)
    return Web3(provider)


@functools.cache
def token_artifact() -> dict:
    """The committed {abi, bytecode} of contracts/TestToken.sol."""
    return json.loads(ARTIFACT_PATH.read_text())


def token_contract(w3: Web3, token: str):
    """A web3 contract object for the TestToken at `token`."""
    return w3.eth.contract(address=Web3.to_checksum_address(token), abi=token_artifact()["abi"])


def send(w3: Web3, private_key: str, tx: dict):
    """Sign and send `tx` from `private_key`, wait for the receipt (reverted ones included)."""
    sender = address_of(private_key)
    tx = {"gas": TX_GAS, "gasPrice": w3.eth.gas_price, **tx, "from": sender,
          "nonce": w3.eth.get_transaction_count(sender, "pending"), "chainId": w3.eth.chain_id}
    signed = Account.sign_transaction(tx, private_key)
    tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    return w3.eth.wait_for_transaction_receipt(tx_hash, timeout=RECEIPT_TIMEOUT_S, poll_latency=0.05)


def call_tx(w3: Web3, private_key: str, function) -> dict:
    """Run a contract function call as a transaction from `private_key`; return the receipt."""
    return send(w3, private_key, function.build_transaction({"from": address_of(private_key),
                                                             "gas": TX_GAS, "gasPrice": w3.eth.gas_price}))


def deploy_token(w3: Web3, deployer_key: str, name: str, symbol: str, decimals: int) -> str:
    """Deploy a TestToken; return its checksummed address."""
    artifact = token_artifact()
    factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    receipt = call_tx(w3, deployer_key, factory.constructor(name, symbol, decimals))
    if receipt.status != 1:
        raise RuntimeError(f"deploying {symbol} reverted")
    return receipt.contractAddress


def deploy_token_info(w3: Web3, name: str, symbol: str, decimals: int,
                      deployer_key: str = DEPLOYER_KEY) -> DeployedToken:
    """Deploy a TestToken and describe it."""
    return DeployedToken(deploy_token(w3, deployer_key, name, symbol, decimals), symbol, decimals)


def mint(w3: Web3, token: str, deployer_key: str, to: str, amount: int) -> str:
    """Mint `amount` base units to `to`; return the tx hash (0x hex)."""
    receipt = call_tx(w3, deployer_key, token_contract(w3, token).functions.mint(
        Web3.to_checksum_address(to), amount))
    return receipt.transactionHash.to_0x_hex()


def transfer(w3: Web3, token: str, from_key: str, to: str, amount: int) -> str:
    """Transfer `amount` base units from `from_key`'s account; wait for the receipt; return tx hash."""
    receipt = call_tx(w3, from_key, token_contract(w3, token).functions.transfer(
        Web3.to_checksum_address(to), amount))
    return receipt.transactionHash.to_0x_hex()


def set_fail_transfers(w3: Web3, token: str, deployer_key: str, fail: bool) -> None:
    """Make every `transfer` of the token revert (True) or work again (False)."""
    receipt = call_tx(w3, deployer_key, token_contract(w3, token).functions.setFailTransfers(fail))
    if receipt.status != 1:
        raise RuntimeError("setFailTransfers reverted")


def balance_of(w3: Web3, token: str, owner: str) -> int:
    """Token balance of `owner` in base units."""
    return token_contract(w3, token).functions.balanceOf(Web3.to_checksum_address(owner)).call()


def transfer_events(w3: Web3, token: str, from_block: int = 0) -> list[dict]:
    """Decoded Transfer logs of the token from `from_block` to latest, in chain order."""
    event = token_contract(w3, token).events.Transfer()
    logs = w3.eth.get_logs({"address": Web3.to_checksum_address(token), "fromBlock": from_block,
                            "toBlock": "latest", "topics": [event.topic]})
    return [decoded_transfer(event.process_log(log)) for log in logs]


def decoded_transfer(entry) -> dict:
    """A Transfer log as a plain dict."""
    return {"from": entry.args["from"], "to": entry.args["to"], "value": entry.args["value"],
            "tx_hash": entry.transactionHash.to_0x_hex(), "log_index": entry.logIndex,
            "block_number": entry.blockNumber}


def node_request(w3: Web3, method: str, params: list | None = None):
    """Call a node-specific JSON-RPC method; raise on an error answer."""
    return w3.manager.request_blocking(method, params or [])


def mine(w3: Web3, blocks: int = 1) -> None:
    """Mine `blocks` empty blocks at once (anvil_mine)."""
    node_request(w3, "anvil_mine", [hex(blocks)])


def snapshot(w3: Web3) -> str:
    """Take an EVM snapshot; return its id for revert()."""
    return node_request(w3, "evm_snapshot")


def revert(w3: Web3, snapshot_id: str) -> None:
    """Roll the chain back to a snapshot (which is used up by this)."""
    if node_request(w3, "evm_revert", [snapshot_id]) is not True:
        raise RuntimeError(f"evm_revert({snapshot_id}) found no such snapshot")


def fund_eth(w3: Web3, to: str, wei: int) -> None:
    """Set the ETH balance of `to` to `wei` (anvil_setBalance)."""
    node_request(w3, "anvil_setBalance", [Web3.to_checksum_address(to), hex(wei)])
