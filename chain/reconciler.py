"""Withdrawal reconciler: settle BROADCAST withdrawals from their receipts.

A receipt with enough confirmations -> CONFIRMED (user told); a reverted receipt,
or a nonce another transaction spent -> FAILED with exactly one refund (user and
admins told). Bytes the node has forgotten are sent again, never re-signed. A refund
for a spent nonce waits for the chain's settled view: behind a load-balanced RPC one
backend may say "no receipt" for a transaction another has mined.
"""
import logging

from chain import nonce_audit
from chain.rpc import NONCE_USED
from db import hot_wallet, notifications, withdrawals

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
                resend_forgotten(wctx, row, head)
            continue
        if head - receipt["blockNumber"] + 1 < wctx.settings.confirmations:
            continue
        settle(wctx, row, succeeded=receipt["status"] == 1)
        settled += 1
    return settled


def resend_forgotten(wctx, row: dict, head: int) -> None:
    """The node lost our transaction (restart, mempool eviction): send the same bytes again."""
    chain = wctx.chain
    log.warning("withdrawal #%s: node does not know tx %s; re-sending the same bytes", row["id"], row["tx_hash"])
    if chain.send_raw(bytes(row["raw_tx"]), row["nonce"]) == NONCE_USED:
        settle_spent_nonce(wctx, row, head)


def settle_spent_nonce(wctx, row: dict, head: int) -> None:
    """Our nonce is spent, yet the node shows no receipt for our transaction: decide on the settled view.

    Only once the nonce was consumed at least CONFIRMATIONS deep, with still no receipt
    for our attempt: if the consuming transaction pays the same recipient the same
    amount it is ours (an attempt a restored database lost) and the withdrawal is paid;
    otherwise another transaction took the nonce, ours can never be mined, and the
    withdrawal fails with its refund (admins told). Anything less certain waits.
    """
    chain, nonce = wctx.chain, row["nonce"]
    settled_block = head - wctx.settings.confirmations
    if settled_block < 0 or chain.nonce_at(settled_block) <= nonce:
        return  # not consumed deep enough yet
    if chain.receipt(row["tx_hash"]) is not None:
        return  # ours after all; the receipt path settles it
    try:
        consumer = nonce_audit.find(chain, nonce, head)
    except LookupError as exc:  # the node contradicts itself (a lagging backend): decide nothing now
        log.warning("withdrawal #%s: %s; waiting", row["id"], exc)
        return
    if consumer.tx_hash == row["tx_hash"].lower():
        return  # the node lags on the receipt of a transaction it has mined: wait
    if consumer.recipient and consumer.recipient.lower() == row["to_address"] and consumer.amount == row["amount"]:
        log.warning("withdrawal #%s: nonce %s was spent by %s paying the same recipient and amount; paid",
                    row["id"], nonce, consumer.tx_hash)
        with wctx.transaction() as conn:
            hot_wallet.record(conn, chain.hot_wallet, nonce, consumer.tx_hash, hot_wallet.MATCHED,
                              "reconciler: the nonce's transaction pays this withdrawal", row["id"])
        settle(wctx, {**row, "tx_hash": consumer.tx_hash}, succeeded=True)
        return
    log.error("withdrawal #%s: nonce %s was used by another transaction (%s) from the hot wallet; refunding",
              row["id"], nonce, consumer.tx_hash)
    settle(wctx, row, succeeded=False, reason=f"nonce {nonce} used by another transaction")


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
