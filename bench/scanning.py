"""Deposit scanning: 10,000 blocks holding 1,000 transfers to the deposit address, scanned by the product's
DepositMonitor (chunked eth_getLogs) against one eth_getLogs per block; RPC calls counted by a proxy."""
import threading
import time

import requests

import dr
from bench.report import Row, progress
from bench.rpcproxy import CountingProxy
from bench.stack import DECIMALS, HOT_WALLET_KEY, Stack, database, deploy_token, settings_of
from chain import scanner
from db import users, wallets
from db.pool import transaction
from devstack import chaintools
from runtime.leadership import WorkerLease
from runtime.worker_context import build_worker_context

BLOCKS = 10_000
TRANSFERS = 1_000
SENDER_KEY = chaintools.DEV_PRIVATE_KEYS[2]
SENDER_USER_ID = 5001
UNIT = 10**DECIMALS
TRANSFER_GAS = 100_000


def rpc(session: requests.Session, url: str, method: str, params: list):
    """One raw JSON-RPC call; raises on an error answer."""
    answer = session.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params},
                          timeout=30).json()
    if "error" in answer:
        raise RuntimeError(f"{method}: {answer['error']}")
    return answer["result"]


def transfer_calls(w3, token: str, to: str) -> list[dict]:
    """TRANSFERS token transfers of 1 unit each from the sender (an unlocked anvil dev account)."""
    data = chaintools.token_contract(w3, token).encode_abi("transfer", args=[to, UNIT])
    sender = chaintools.address_of(SENDER_KEY)
    return [{"from": sender, "to": token, "data": data, "gas": hex(TRANSFER_GAS)}] * TRANSFERS


def build_chain(w3, url: str, token: str, deposit_address: str) -> int:
    """Mine BLOCKS blocks, one transfer to the deposit address every BLOCKS // TRANSFERS; the first block."""
    chaintools.mint(w3, token, chaintools.DEPLOYER_KEY, chaintools.address_of(SENDER_KEY), TRANSFERS * UNIT)
    first = w3.eth.block_number + 1
    empty = hex(BLOCKS // TRANSFERS - 1)
    with requests.Session() as session:
        for call in transfer_calls(w3, token, deposit_address):
            rpc(session, url, "eth_sendTransaction", [call])  # automine: a block of its own
            rpc(session, url, "anvil_mine", [empty])
    if w3.eth.block_number != first + BLOCKS - 1:
        raise RuntimeError(f"expected head {first + BLOCKS - 1}, got {w3.eth.block_number}")
    return first


def bind_sender(pool, head: int) -> None:
    """The sender is a user who proved the wallet before the transfers: each one is credited to them."""
    with transaction(pool) as conn:
        users.register(conn, SENDER_USER_ID, "bench_sender", "en")
        wallets.bind(conn, SENDER_USER_ID, chaintools.address_of(SENDER_KEY),
                     chaintools.sign_wallet_proof(SENDER_KEY, SENDER_USER_ID), head)


def hold_worker_lease(wctx, stop: threading.Event) -> threading.Thread:
    """Act as the active worker while scanning, as worker.py and `dr.py recover` do."""
    wctx.lease = WorkerLease(wctx.transaction, site="bench-scanning")
    if not wctx.lease.renew():
        raise RuntimeError("the worker lease is held by another process")
    thread = threading.Thread(target=wctx.lease.keep, args=(stop,), name="bench-lease", daemon=True)
    thread.start()
    return thread


def timed_calls(proxy: CountingProxy, function) -> tuple[object, float, dict]:
    """Run `function`; its result, seconds and RPC calls by method."""
    proxy.reset()
    started = time.perf_counter()
    result = function()
    return result, time.perf_counter() - started, proxy.counts()


def block_by_block(chain, first: int, last: int) -> int:
    """One eth_getLogs per block through the product's own client; transfers found."""
    return sum(len(chain.transfer_logs(block, block)) for block in range(first, last + 1))


def described(counts: dict) -> str:
    """Calls by method, most first."""
    return ", ".join(f"{method} {n}" for method, n in counts.most_common())


def scan_both(settings, proxy: CountingProxy, first: int) -> dict:
    """The product's scan, then the block-by-block one, through the proxy; {name: (found, seconds, calls)}."""
    wctx = build_worker_context(settings, "bench-scan", dr.rpc_breaker(settings), dr.pg_breaker(settings))
    stop, lease = threading.Event(), None
    try:
        lease = hold_worker_lease(wctx, stop)
        bind_sender(wctx.pool, first - 1)
        progress("scanning: the product's DepositMonitor.scan")
        ours = timed_calls(proxy, scanner.DepositMonitor(wctx).scan)
        progress("scanning: block by block")
        plain = timed_calls(proxy, lambda: block_by_block(wctx.chain, first, first + BLOCKS - 1))
        return {"ours": ours, "plain": plain}
    finally:
        stop.set()
        if lease is not None:
            lease.join(10)
        wctx.pool.close()


def run() -> list[Row]:
    """Build the chain, then scan it both ways through the counting proxy."""
    with Stack() as stack:
        pg, node = stack.postgres(), stack.anvil(long_chain=True)
        url = database(pg)
        w3, token = deploy_token(node)
        progress(f"scanning: mining {BLOCKS:,} blocks with {TRANSFERS:,} transfers")
        first = build_chain(w3, node.url, token, chaintools.address_of(HOT_WALLET_KEY))
        proxy = CountingProxy(node.url).start()
        try:
            settings = settings_of(DATABASE_URL=url, RPC_URL=proxy.url, TOKEN_ADDRESS=token,
                                   HOT_WALLET_PRIVATE_KEY=HOT_WALLET_KEY, CONFIRMATIONS=1, SCAN_START_BLOCK=first)
            results = scan_both(settings, proxy, first)
        finally:
            proxy.stop()
    return rows_of(results, settings.scan_chunk_blocks)


def rows_of(results: dict, chunk: int) -> list[Row]:
    """RPC calls against blocks/chunk, and time against the block-by-block scan."""
    (found, ours_s, ours_calls), (plain_found, plain_s, plain_calls) = results["ours"], results["plain"]
    ours_n, plain_n = sum(ours_calls.values()), sum(plain_calls.values())
    chunks = -(-BLOCKS // chunk)
    return [
        Row("scanning", f"RPC calls, {BLOCKS:,} blocks / {TRANSFERS:,} transfers (SCAN_CHUNK_BLOCKS {chunk})",
            f"{ours_n:,} ({described(ours_calls)})", f"{plain_n:,} (1 getLogs/block)", ours_n / plain_n,
            f"~{chunks} (blocks/chunk) + a few", found == TRANSFERS and ours_n <= chunks + 5),
        Row("scanning", f"time; transfers found: ours {found:,}, block by block {plain_found:,}",
            f"{ours_s:.2f} s (credits them)", f"{plain_s:.2f} s (records nothing)", ours_s / plain_s, "-"),
    ]
