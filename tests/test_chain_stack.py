"""The local chain stack itself: anvil, the TestToken contract, chain helpers and the TCP proxy."""
import os
import time
from pathlib import Path

import pytest
import requests

from devstack import chaintools as ct
from devstack.anvil import AnvilNode, anvil_binary, state_file_is_valid
from devstack.tcpproxy import TcpProxy

USER_KEY = ct.DEV_PRIVATE_KEYS[1]
USER = ct.address_of(USER_KEY)
OPERATOR = ct.address_of(ct.DEV_PRIVATE_KEYS[2])
SHORT_TIMEOUT_S = 0.5


def wait_for(predicate, timeout_s: float, what: str):
    """Poll until `predicate()` is truthy; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not (result := predicate()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)
    return result


def funded_token(w3, amount: int) -> str:
    """A fresh 6-decimal token with `amount` minted to USER."""
    token = ct.deploy_token(w3, ct.DEPLOYER_KEY, "Tether USD", "USDT", 6)
    ct.mint(w3, token, ct.DEPLOYER_KEY, USER, amount)
    return token


def test_tokens_report_their_symbol_and_decimals(w3, token6, token18):
    for token in (token6, token18):
        contract = ct.token_contract(w3, token.address)
        assert contract.functions.symbol().call() == token.symbol
        assert contract.functions.decimals().call() == token.decimals
    assert (token6.decimals, token18.decimals) == (6, 18)


def test_mint_and_transfer_are_decoded_transfer_events(w3, token6):
    start = w3.eth.block_number
    ct.mint(w3, token6.address, ct.DEPLOYER_KEY, USER, 10_000_000)
    tx_hash = ct.transfer(w3, token6.address, USER_KEY, OPERATOR, 2_500_000)

    assert ct.balance_of(w3, token6.address, USER) == 7_500_000
    assert ct.balance_of(w3, token6.address, OPERATOR) == 2_500_000
    minted, moved = ct.transfer_events(w3, token6.address, from_block=start)
    assert (minted["from"], minted["to"], minted["value"]) == ("0x" + "0" * 40, USER, 10_000_000)
    assert (moved["from"], moved["to"], moved["value"]) == (USER, OPERATOR, 2_500_000)
    assert moved["tx_hash"] == tx_hash
    assert moved["log_index"] == 0
    assert moved["block_number"] == w3.eth.get_transaction_receipt(tx_hash).blockNumber


def test_only_the_deployer_can_mint(w3, token18):
    tx_hash = ct.mint(w3, token18.address, USER_KEY, USER, 1)
    assert w3.eth.get_transaction_receipt(tx_hash).status == 0
    assert ct.balance_of(w3, token18.address, USER) == 0


def test_mine_adds_blocks(w3):
    before = w3.eth.block_number
    ct.mine(w3, 12)
    assert w3.eth.block_number == before + 12


def test_revert_to_snapshot_removes_a_transfer(w3, token18):
    ct.mint(w3, token18.address, ct.DEPLOYER_KEY, USER, 10**18)
    snapshot_id = ct.snapshot(w3)
    ct.transfer(w3, token18.address, USER_KEY, OPERATOR, 4 * 10**17)
    assert len(ct.transfer_events(w3, token18.address)) == 2

    ct.revert(w3, snapshot_id)

    assert [e["to"] for e in ct.transfer_events(w3, token18.address)] == [USER]
    assert ct.balance_of(w3, token18.address, OPERATOR) == 0


def test_set_fail_transfers_makes_a_transfer_revert(w3, token6):
    ct.mint(w3, token6.address, ct.DEPLOYER_KEY, USER, 5_000_000)
    ct.set_fail_transfers(w3, token6.address, ct.DEPLOYER_KEY, True)

    tx_hash = ct.transfer(w3, token6.address, USER_KEY, OPERATOR, 1_000_000)

    assert w3.eth.get_transaction_receipt(tx_hash).status == 0
    assert ct.balance_of(w3, token6.address, USER) == 5_000_000
    ct.set_fail_transfers(w3, token6.address, ct.DEPLOYER_KEY, False)
    assert w3.eth.get_transaction_receipt(
        ct.transfer(w3, token6.address, USER_KEY, OPERATOR, 1_000_000)).status == 1


def test_fund_eth_sets_a_balance(w3):
    fresh = ct.address_of("0x" + "77" * 32)
    ct.fund_eth(w3, fresh, 3 * 10**18)
    assert w3.eth.get_balance(fresh) == 3 * 10**18


def test_anvil_runs_the_native_binary(anvil):
    """Freezing must stop the process that serves JSON-RPC, not a node.js wrapper."""
    assert anvil_binary().read_bytes()[:4] == b"\x7fELF"
    assert Path(os.readlink(f"/proc/{anvil.process.pid}/exe")) == anvil_binary().resolve()
    assert ct.connect(anvil.url).eth.chain_id == 31337


def test_graceful_restart_keeps_the_chain(own_anvil):
    w3 = ct.connect(own_anvil.url)
    token = funded_token(w3, 1_000_000)
    height = w3.eth.block_number

    own_anvil.restart()

    assert ct.balance_of(w3, token, USER) == 1_000_000
    assert w3.eth.block_number == height
    assert len(ct.transfer_events(w3, token)) == 1


def test_kill_9_after_dump_state_keeps_the_chain(own_anvil):
    w3 = ct.connect(own_anvil.url)
    token = funded_token(w3, 1_000_000)
    ct.transfer(w3, token, USER_KEY, OPERATOR, 400_000)
    own_anvil.dump_state()

    own_anvil.restart(hard=True)

    assert ct.balance_of(w3, token, OPERATOR) == 400_000
    assert [e["value"] for e in ct.transfer_events(w3, token)] == [1_000_000, 400_000]
    assert w3.eth.get_transaction_count(USER) == 1  # nonces survive too


def test_kill_9_keeps_the_chain_up_to_the_last_periodic_write(own_anvil):
    w3 = ct.connect(own_anvil.url)
    token = funded_token(w3, 1_000_000)
    minted_at_ns = time.time_ns()
    wait_for(lambda: written_after(own_anvil.state_path, minted_at_ns), 3.0, "a periodic state write")

    own_anvil.restart(hard=True)

    assert ct.balance_of(w3, token, USER) == 1_000_000


def written_after(path: Path, moment_ns: int) -> bool:
    """True when `path` was completely rewritten after `moment_ns`."""
    return path.exists() and path.stat().st_mtime_ns > moment_ns and state_file_is_valid(path)


def test_kill_9_without_periodic_writes_loses_the_chain(tmp_path):
    """anvil writes --state only on a graceful exit unless --state-interval is given."""
    node = AnvilNode(state_path=tmp_path / "state.json", state_interval_s=None).start()
    try:
        w3 = ct.connect(node.url)
        ct.mine(w3, 5)
        node.restart(hard=True)
        assert w3.eth.block_number == 0
    finally:
        node.close()


def test_a_truncated_state_file_falls_back_to_the_last_good_copy(own_anvil):
    w3 = ct.connect(own_anvil.url)
    token = funded_token(w3, 1_000_000)
    own_anvil.dump_state()
    own_anvil.kill()
    own_anvil.state_path.write_bytes(own_anvil.state_path.read_bytes()[:100])  # a write cut short

    own_anvil.start()

    assert ct.balance_of(w3, token, USER) == 1_000_000


def test_freeze_makes_rpc_time_out_and_thaw_restores_it(own_anvil):
    w3 = ct.connect(own_anvil.url, timeout_s=SHORT_TIMEOUT_S)
    height = w3.eth.block_number
    own_anvil.freeze()
    try:
        started = time.monotonic()
        with pytest.raises(requests.Timeout):
            w3.eth.block_number
        assert time.monotonic() - started < SHORT_TIMEOUT_S + 1.0
    finally:
        own_anvil.thaw()
    assert w3.eth.block_number == height


@pytest.fixture
def proxy(anvil):
    proxy = TcpProxy(target_port=anvil.port).start()
    yield proxy
    proxy.stop()


def test_proxy_cut_fails_fast_while_direct_calls_work(w3, proxy):
    through_proxy = ct.connect(proxy.url, timeout_s=5)
    assert through_proxy.eth.chain_id == 31337

    proxy.cut()
    started = time.monotonic()
    with pytest.raises(requests.ConnectionError):
        through_proxy.eth.block_number
    assert time.monotonic() - started < 1.0
    assert w3.eth.block_number >= 0

    proxy.restore()
    assert through_proxy.eth.block_number == w3.eth.block_number


def test_proxy_cut_drops_an_open_connection(proxy):
    session = requests.Session()
    body = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}
    assert session.post(proxy.url, json=body, timeout=5).json()["result"] == "0x7a69"

    proxy.cut()
    with pytest.raises(requests.ConnectionError):
        session.post(proxy.url, json=body, timeout=5)
    proxy.restore()
    assert session.post(proxy.url, json=body, timeout=5).json()["result"] == "0x7a69"
