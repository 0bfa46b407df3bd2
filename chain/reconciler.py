"""Withdrawal reconciler: settle BROADCAST withdrawals by whichever of their attempts is mined.

A transfer attempt's receipt with enough confirmations -> CONFIRMED (user told); a
reverted one, or a nonce another transaction spent -> FAILED with exactly one refund
(user and admins told); a mined cancel -> APPROVED again, amount still held, sent
later at a new nonce. Bytes the node has forgotten are sent again, never re-signed;
an attempt unmined for WITHDRAWAL_STUCK_S is replaced at the same nonce. A refund
for a spent nonce waits for the chain's settled view: behind a load-balanced RPC one
backend may say "no receipt" for a transaction another has mined. One row's error
is recorded on it and stops no other row.
"""
import logging

from chain import nonce_audit, sender
from chain.rpc import NONCE_USED
from db import hot_wallet, notifications, withdrawal_attempts, withdrawals

log = logging.getLogger(__name__)


def reconcile(wctx) -> int:
    """Settle BROADCAST withdrawals from their receipts; re-send bytes the node has forgotten."""
    chain = wctx.chain
    with wctx.transaction() as conn:
        rows = withdrawals.with_status(conn, withdrawals.BROADCAST, 100)
    if not rows:
        return 0
    head = chain.head()
    settled = []
    for row in rows:
        sender.isolated(wctx, row, "reconciling", lambda: settled.append(reconcile_one(wctx, row, head)))
    return sum(settled)


def reconcile_one(wctx, row: dict, head: int) -> int:
    """Settle one withdrawal from the receipts of its attempts; 1 when it was settled now."""
    chain = wctx.chain
    with wctx.transaction() as conn:
        attempts = withdrawal_attempts.at_current_nonce(conn, row)
    mined, receipt = next(((a, r) for a in attempts if (r := chain.receipt(a["tx_hash"])) is not None),
                          (None, None))
    if receipt is None:
        latest = attempts[0]
        if not chain.transaction_known(latest["tx_hash"]):
            resend_forgotten(wctx, row, latest, attempts, head)
        elif latest["age_s"] >= wctx.settings.withdrawal_stuck_s:
            sender.unstick(wctx, row, attempts)
        return 0
    if head - receipt["blockNumber"] + 1 < wctx.settings.confirmations:
        return 0
    if mined["kind"] == withdrawal_attempts.CANCEL:
        release(wctx, row, mined, receipt["blockNumber"])
    else:
        settle(wctx, {**row, "tx_hash": mined["tx_hash"]}, succeeded=receipt["status"] == 1,
               attempt=mined, block=receipt["blockNumber"])
    return 1


def resend_forgotten(wctx, row: dict, latest: dict, attempts: list[dict], head: int) -> None:
    """The node lost our newest attempt (restart, mempool eviction): send the same bytes again."""
    chain = wctx.chain
    with wctx.transaction() as conn:
        wctx.fence(conn)  # a worker that lost the lease sends nothing
    log.warning("withdrawal #%s: node does not know tx %s; re-sending the same bytes", row["id"], latest["tx_hash"])
    if chain.send_raw(bytes(latest["raw_tx"]), row["nonce"]) == NONCE_USED:
        settle_spent_nonce(wctx, row, attempts, head)


def release(wctx, row: dict, cancel: dict, block: int) -> None:
    """A cancel spent the withdrawal's nonce: back to APPROVED, sent again after WITHDRAWAL_STUCK_S."""
    retry_after = wctx.settings.withdrawal_stuck_s
    problem = f"nonce {row['nonce']} freed by cancel {cancel['tx_hash']}; sent again at a new nonce"
    with wctx.transaction() as conn:
        change = withdrawals.release_nonce(conn, row["id"], cancel, block, retry_after, problem)
        if not change.changed:
            return
        notifications.enqueue_for_admins(conn, wctx.settings.admin_ids, "admin_withdrawal_released",
                                         {"id": row["id"], "nonce": row["nonce"], "tx_hash": cancel["tx_hash"],
                                          "seconds": retry_after}, f"withdrawal-released:{row['id']}:{row['nonce']}")
    log.warning("withdrawal #%s: %s", row["id"], problem)


def settle_spent_nonce(wctx, row: dict, attempts: list[dict], head: int) -> None:
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
    ours = {a["tx_hash"] for a in attempts}
    if any(chain.receipt(tx_hash) is not None for tx_hash in ours):
        return  # ours after all; the receipt path settles it
    try:
        consumer = nonce_audit.find(chain, nonce, head)
    except LookupError as exc:  # the node contradicts itself (a lagging backend): decide nothing now
        log.warning("withdrawal #%s: %s; waiting", row["id"], exc)
        return
    if consumer.tx_hash in ours:
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


def settle(wctx, row: dict, succeeded: bool, reason: str = "transaction reverted on chain",
           attempt: dict | None = None, block: int | None = None) -> None:
    """CONFIRMED (user told, with the full hash) or FAILED (refunded once, user and admins told).

    `attempt` is the stored attempt mined in `block`; row["tx_hash"] is the transaction that settled it.
    """
    amount = wctx.amount(row["amount"])
    symbol = wctx.token.symbol
    with wctx.transaction() as conn:
        if succeeded:
            change = withdrawals.confirm(conn, row["id"], attempt, block)
            if change.changed:
                notifications.enqueue(conn, row["user_id"], "notify_withdrawal_confirmed",
                                      {"id": row["id"], "amount": amount, "symbol": symbol, "tx_hash": row["tx_hash"]},
                                      f"withdrawal-confirmed:{row['id']}")
            return
        change = withdrawals.fail(conn, row["id"], reason, attempt, block)
        if not change.changed:
            return
        notifications.enqueue(conn, row["user_id"], "notify_withdrawal_failed",
                              {"id": row["id"], "amount": amount, "symbol": symbol,
                               "total": wctx.amount(row["amount"] + row["fee"])},
                              f"withdrawal-failed:{row['id']}")
        notifications.enqueue_for_admins(conn, wctx.settings.admin_ids, "admin_withdrawal_failed",
                                         {"id": row["id"], "tx_hash": row["tx_hash"], "user_id": row["user_id"],
                                          "reason": reason}, f"withdrawal-failed:{row['id']}:admin")
    log.warning("withdrawal #%s failed (%s); refunded", row["id"], reason)
