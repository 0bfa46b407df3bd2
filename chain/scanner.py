"""Deposit monitor: scan Transfer logs from a persisted cursor and credit each exactly once.

The cursor and the credits of a chunk commit in one transaction, so a crash or an
outage at any point resumes from the last committed block: no block is skipped,
none credited twice (the (tx_hash, log_index) key would refuse it anyway).
"""
import logging
from datetime import timedelta

from chain.rpc import RangeRefused
from db import chain_cursor, deposits, ledger, notifications, wallets

log = logging.getLogger(__name__)

MAX_CHUNK_BLOCKS = 100_000


def stream_name(chain) -> str:
    return f"{stream_prefix(chain)}{chain.deposit_address}".lower()


def stream_prefix(chain) -> str:
    return f"deposits:{chain.token.address}:".lower()


class DepositMonitor:
    def __init__(self, wctx):
        self.wctx = wctx
        self.chunk = wctx.settings.scan_chunk_blocks
        self.problem: str | None = None  # shown in status: e.g. the node is behind our cursor
        self.scanned_to: int | None = None  # the last block scanned and credited
        self.finalized: int | None = None  # the node's finalized block: credits up to it cannot be reorged away

    def scan(self) -> int:
        """Scan every block with enough confirmations since the cursor; return transfers recorded."""
        chain, settings = self.wctx.chain, self.wctx.settings
        head = chain.head()
        last, last_hash = self._cursor(head)
        self.scanned_to, self.finalized = last, chain.finalized_block()
        if head < last:
            self.problem = f"chain head {head} is below the scanned cursor {last}: node reset or wrong RPC"
            log.error("deposit scan paused: %s; nothing is skipped or credited again until it catches up",
                      self.problem)
            return 0
        if last_hash is not None and chain.block_hash(last) != last_hash:
            self._stop_for_deep_reorg(last, last_hash)
            return 0
        self.problem = None
        safe = head - settings.confirmations + 1  # a transfer in block B has head - B + 1 confirmations
        recorded = 0
        start = last + 1
        while start <= safe and not self.wctx.stopping():
            end = min(start + self.chunk - 1, safe)
            try:
                transfers = chain.transfer_logs(start, end)
            except RangeRefused:
                if self.chunk == 1:
                    raise
                self.chunk = max(1, self.chunk // 2)
                log.info("eth_getLogs range refused; chunk now %s blocks", self.chunk)
                continue
            if not self._still_canonical(transfers):
                log.warning("blocks %s-%s changed under us (reorg); rescanning next run", start, end)
                return recorded
            recorded += self._record(transfers, end, self._hash_to_keep(end))
            self.scanned_to = end
            start = end + 1
            self.chunk = min(self.chunk * 2, settings.scan_chunk_blocks, MAX_CHUNK_BLOCKS)
        return recorded

    def caught_up(self) -> bool:
        """True when every block with enough confirmations has been scanned."""
        chain = self.wctx.chain
        head = chain.head()
        with self.wctx.transaction() as conn:
            cursor = chain_cursor.get(conn, stream_name(chain))
        return cursor is not None and cursor["last_block"] >= head - self.wctx.settings.confirmations + 1

    def _cursor(self, head: int) -> tuple[int, str | None]:
        """The last scanned block and its hash; a new deployment starts at SCAN_START_BLOCK or the head."""
        stream = stream_name(self.wctx.chain)
        with self.wctx.transaction() as conn:
            cursor = chain_cursor.get(conn, stream)
            if cursor is not None:
                return cursor["last_block"], cursor["block_hash"]
            former = chain_cursor.furthest_with_prefix(conn, stream_prefix(self.wctx.chain))
            if former is not None:  # a new deposit address: go on where the old one's scan stopped, never the head
                chain_cursor.set_cursor(conn, stream, former["last_block"], former["block_hash"])
                log.warning("deposit address changed: scanning %s continues after block %s (from %s)",
                            self.wctx.chain.deposit_address, former["last_block"], former["stream"])
                return former["last_block"], former["block_hash"]
            start = self.wctx.settings.scan_start_block
            first = head if start is None else start
            chain_cursor.set_cursor(conn, stream, max(first - 1, 0), None)
        log.info("deposit scanning starts at block %s", first)
        return max(first - 1, 0), None

    def _stop_for_deep_reorg(self, block: int, scanned_hash: str) -> None:
        """The last block we scanned is no longer on the chain: credits behind it may be gone. Stop, alert once."""
        self.problem = (f"block {block} changed after it was scanned (a reorganisation deeper than CONFIRMATIONS, "
                        f"or another node): crediting stopped")
        log.error("deposit scan stopped: %s; scanned hash %s", self.problem, scanned_hash)
        with self.wctx.transaction() as conn:
            notifications.enqueue_for_admins(conn, self.wctx.settings.admin_ids, "admin_deep_reorg", {"block": block},
                                             f"deep-reorg:{stream_name(self.wctx.chain)}:{block}:{scanned_hash}")

    def _hash_to_keep(self, end: int) -> str | None:
        """The cursor block's hash, compared on the next run to catch a deep reorg; none for a final block."""
        if self.finalized is not None and end <= self.finalized:
            return None
        return self.wctx.chain.block_hash(end)

    def _still_canonical(self, transfers) -> bool:
        """Every log's block is still the one the node calls canonical (a removed log is never credited).

        Blocks at or below the node's finalized block cannot be reorganised away: not asked about, so a
        catch-up over old blocks costs one call per chunk, not one per block holding a transfer."""
        hashes = {}
        for transfer in transfers:
            if self.finalized is not None and transfer.block_number <= self.finalized:
                continue
            if transfer.block_number not in hashes:
                hashes[transfer.block_number] = self.wctx.chain.block_hash(transfer.block_number)
            if hashes[transfer.block_number] != transfer.block_hash:
                return False
        return True

    def _record(self, transfers, end: int, end_hash: str | None) -> int:
        decimals, symbol = self.wctx.token.decimals, self.wctx.token.symbol
        with self.wctx.transaction() as conn:
            for transfer in transfers:
                if transfer.amount <= 0:
                    log.info("ignoring a zero-value transfer %s:%s", transfer.tx_hash, transfer.log_index)
                    continue
                result = deposits.record_transfer(conn, transfer)
                deposit = result.deposit
                if result.credited and deposit["user_id"] is not None:
                    self._notify_credit(conn, deposit, decimals, symbol)
                elif result.credited:
                    log.warning("unattributed transfer of %s from %s (deposit #%s)", transfer.amount,
                                transfer.from_address, deposit["id"])
                    self._notify_sent_before_proof(conn, deposit, symbol)
            chain_cursor.set_cursor(conn, stream_name(self.wctx.chain), end, end_hash)
        return len(transfers)

    def _notify_sent_before_proof(self, conn, deposit: dict, symbol: str) -> None:
        """The address's owner proved it only after this transfer was mined: an admin decides."""
        binding = wallets.current_for_address(conn, deposit["from_address"])
        if binding is None:
            return
        notifications.enqueue(conn, binding["user_id"], "notify_sent_before_proof",
                              {"id": deposit["id"], "amount": self.wctx.amount(deposit["credited_amount"]),
                               "symbol": symbol}, f"deposit-before-proof:{deposit['id']}")

    def _notify_credit(self, conn, deposit: dict, decimals: int, symbol: str) -> None:
        balance = ledger.balance(conn, deposit["user_id"])
        notifications.enqueue(conn, deposit["user_id"], "notify_deposit_credited",
                              {"id": deposit["id"], "amount": self.wctx.amount(deposit["credited_amount"]),
                               "balance": self.wctx.amount(balance), "symbol": symbol},
                              f"deposit-credited:{deposit['id']}")


def finish_network_recovery(wctx, monitor: DepositMonitor) -> int:
    """After an outage, once the scan has caught up: unmatched PENDING_NETWORK_RECOVERY requests reopen."""
    if not monitor.caught_up():
        return 0
    with wctx.transaction() as conn:
        reopened = deposits.resume_network_recovery(conn, timedelta(hours=wctx.settings.deposit_request_ttl_h))
    if reopened:
        log.info("network recovery: %s deposit request(s) not found on chain went back to PENDING", len(reopened))
    return len(reopened)


def expire_requests(wctx) -> int:
    with wctx.transaction() as conn:
        return len(deposits.expire_requests(conn))
