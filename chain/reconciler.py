"""Withdrawal reconciler: settle BROADCAST withdrawals from their receipts.

A receipt with enough confirmations -> CONFIRMED (user told); a reverted receipt,
or a nonce another transaction spent -> FAILED with exactly one refund (user and
admins told). Bytes the node has forgotten are sent again, never re-signed.
"""
import logging

from chain.rpc import NONCE_USED
from db import notifications, withdrawals

log = logging.getLogger(__name__)


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
