"""Withdrawal sender and reconciler: every withdrawal reaches the chain at most once.

Order of events for one withdrawal: sign -> commit (nonce, hash, raw bytes: SIGNED)
-> send -> commit BROADCAST -> receipt with enough confirmations -> CONFIRMED, or
a reverted receipt -> FAILED with one refund. After a crash anywhere, the stored
bytes are sent again; a second transaction is never signed for the same withdrawal.
"""
import logging
import time

from chain import NONCE_USED
from db import notifications, service_status, withdrawals
from errors import InvalidTransition

log = logging.getLogger(__name__)


class WithdrawalSender:
    def __init__(self, wctx):
        self.wctx = wctx
        self.funds_problem: dict | None = None

    def run(self) -> int:
        """Re-send anything signed but not yet broadcast, then send the next approved withdrawal."""
        self.rebroadcast_signed()
        return self.send_next()

    def rebroadcast_signed(self) -> None:
        with self.wctx.transaction() as conn:
            signed = withdrawals.with_status(conn, withdrawals.SIGNED)
        for row in signed:
            self._broadcast(row["id"], bytes(row["raw_tx"]))

    def send_next(self) -> int:
        chain = self.wctx.chain
        with self.wctx.transaction() as conn:
            row = withdrawals.next_approved(conn)
            highest = withdrawals.highest_nonce(conn)
        if row is None:
            return 0
        gas_price = chain.gas_price()
        if not self._hot_wallet_covers(row, gas_price):
            return 0
        nonce = max(chain.pending_nonce(), -1 if highest is None else highest + 1)
        signed = chain.sign_transfer(row["to_address"], row["amount"], nonce, gas_price)
        try:
            with self.wctx.transaction() as conn:  # committed before a single byte leaves
                withdrawals.mark_signed(conn, row["id"], nonce=nonce, tx_hash=signed.tx_hash, raw_tx=signed.raw)
        except InvalidTransition:
            log.info("withdrawal #%s changed state while signing (rejected?); not sent", row["id"])
            return 0
        log.info("withdrawal #%s signed: nonce %s, tx %s", row["id"], nonce, signed.tx_hash)
        self._broadcast(row["id"], signed.raw)
        return 1

    def _broadcast(self, withdrawal_id: int, raw: bytes) -> None:
        """Send, then record BROADCAST; whether the nonce was free is settled by the reconciler."""
        outcome = self.wctx.chain.send_raw(raw)
        with self.wctx.transaction() as conn:
            withdrawals.mark_broadcast(conn, withdrawal_id)
        log.info("withdrawal #%s broadcast (%s)", withdrawal_id, outcome)

    def _hot_wallet_covers(self, row: dict, gas_price: int) -> bool:
        """Token balance for the amount and native balance for gas; otherwise alert admins, wait."""
        chain = self.wctx.chain
        token_balance = chain.token_balance(chain.hot_wallet)
        native_balance = chain.native_balance(chain.hot_wallet)
        if token_balance >= row["amount"] and native_balance >= chain.gas_cost(gas_price):
            if self.funds_problem:
                self._report_funds(None)
            return True
        problem = {"withdrawal": row["id"], "token_balance": self.wctx.amount(token_balance),
                   "native_balance": str(native_balance), "address": chain.hot_wallet}
        log.warning("hot wallet short of funds for withdrawal #%s: %s", row["id"], problem)
        self._report_funds(problem)
        return False

    def _report_funds(self, problem: dict | None) -> None:
        """Record the shortage for /status; alert admins if the last alert is older than the interval."""
        self.funds_problem = problem
        interval = self.wctx.settings.low_funds_alert_interval_s
        now = time.time()
        with self.wctx.transaction() as conn:
            previous = service_status.get(conn, "hot_wallet")
            last_alert = previous["status"].get("alerted_at", 0) if previous else 0
            alert = problem is not None and now - last_alert >= interval
            service_status.put(conn, "hot_wallet", {"short": problem is not None, **(problem or {}),
                                                    "alerted_at": now if alert else last_alert})
            if not alert:
                return
            for admin_id in self.wctx.settings.admin_ids:  # the key makes a retried alert harmless
                notifications.enqueue(conn, admin_id, "admin_low_funds",
                                      {"address": problem["address"], "id": problem["withdrawal"],
                                       "token_balance": problem["token_balance"],
                                       "native_balance": problem["native_balance"], "symbol": self.wctx.token.symbol},
                                      f"low-funds:{int(now)}:{admin_id}")


def reconcile(wctx) -> int:
    """Settle BROADCAST withdrawals from their receipts; re-send bytes the node has forgotten."""
    chain = wctx.chain
    with wctx.transaction() as conn:
        rows = withdrawals.with_status(conn, withdrawals.BROADCAST, 100)
    if not rows:
        return 0
    head = chain.head()
    settled = 0
    for row in rows:
        receipt = chain.receipt(row["tx_hash"])
        if receipt is None:
            if not chain.transaction_known(row["tx_hash"]):
                resend_forgotten(wctx, row)
            continue
        if head - receipt["blockNumber"] + 1 < wctx.settings.confirmations:
            continue
        settle(wctx, row, succeeded=receipt["status"] == 1)
        settled += 1
    return settled


def resend_forgotten(wctx, row: dict) -> None:
    """The node lost our transaction (restart, mempool eviction): send the same bytes again.

    If the node says the nonce is spent while our hash has no receipt, another
    transaction from the hot wallet took that nonce: ours can never be mined, so the
    withdrawal fails with its refund and admins are told to look at the wallet.
    """
    chain = wctx.chain
    log.warning("withdrawal #%s: node does not know tx %s; re-sending the same bytes", row["id"], row["tx_hash"])
    if chain.send_raw(bytes(row["raw_tx"])) != NONCE_USED or chain.receipt(row["tx_hash"]) is not None:
        return
    log.error("withdrawal #%s: nonce %s was used by another transaction from the hot wallet; refunding",
              row["id"], row["nonce"])
    settle(wctx, row, succeeded=False, reason=f"nonce {row['nonce']} used by another transaction")


def settle(wctx, row: dict, succeeded: bool, reason: str = "transaction reverted on chain") -> None:
    """CONFIRMED (user told, with the full hash) or FAILED (refunded once, user and admins told)."""
    amount = wctx.amount(row["amount"])
    symbol = wctx.token.symbol
    with wctx.transaction() as conn:
        if succeeded:
            change = withdrawals.confirm(conn, row["id"])
            if change.changed:
                notifications.enqueue(conn, row["user_id"], "notify_withdrawal_confirmed",
                                      {"id": row["id"], "amount": amount, "symbol": symbol, "tx_hash": row["tx_hash"]},
                                      f"withdrawal-confirmed:{row['id']}")
            return
        change = withdrawals.fail(conn, row["id"], reason)
        if not change.changed:
            return
        notifications.enqueue(conn, row["user_id"], "notify_withdrawal_failed",
                              {"id": row["id"], "amount": amount, "symbol": symbol,
                               "total": wctx.amount(row["amount"] + row["fee"])},
                              f"withdrawal-failed:{row['id']}")
        for admin_id in wctx.settings.admin_ids:
            notifications.enqueue(conn, admin_id, "admin_withdrawal_failed",
                                  {"id": row["id"], "tx_hash": row["tx_hash"], "user_id": row["user_id"],
                                   "reason": reason},
                                  f"withdrawal-failed:{row['id']}:admin:{admin_id}")
    log.warning("withdrawal #%s failed (%s); refunded", row["id"], reason)
