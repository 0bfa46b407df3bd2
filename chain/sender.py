"""Withdrawal sender: every withdrawal reaches the chain at most once.

Order of events for one withdrawal: sign -> commit (nonce, hash, raw bytes: SIGNED)
-> send -> commit BROADCAST; the reconciler takes it from there. After a crash
anywhere, the stored bytes are sent again; a second transaction is never signed
for the same withdrawal.
"""
import logging
import time

from chain.rpc import SignedTransfer
from core.errors import InvalidTransition
from db import hot_wallet, notifications, service_status, withdrawals

log = logging.getLogger(__name__)


class WithdrawalSender:
    def __init__(self, wctx):
        self.wctx = wctx
        self.funds_problem: dict | None = None
        self.nonce_problem: dict | None = None
        self._nonce_reported = False  # the stored flags are rewritten on the first run after a start
        self._funds_reported = False

    def run(self) -> int:
        """Re-send anything signed but not yet broadcast, then send the next approved withdrawal."""
        self.rebroadcast_signed()
        return self.send_next()

    def rebroadcast_signed(self) -> None:
        with self.wctx.transaction() as conn:
            signed = withdrawals.with_status(conn, withdrawals.SIGNED)
        for row in signed:
            self._broadcast(row["id"], bytes(row["raw_tx"]), row["nonce"])

    def send_next(self) -> int:
        signed = self.sign_next()
        if signed is None:
            return 0
        withdrawal_id, transfer = signed
        self._broadcast(withdrawal_id, transfer.raw, transfer.nonce)
        return 1

    def sign_next(self) -> tuple[int, SignedTransfer] | None:
        """Sign the oldest approved withdrawal and commit the signed bytes; None when nothing may be signed now."""
        chain = self.wctx.chain
        chain_nonce = chain.pending_nonce()
        with self.wctx.transaction() as conn:
            known_next = hot_wallet.next_nonce(conn, chain.hot_wallet)
            row = withdrawals.next_approved(conn)
        if not self._nonces_accounted_for(chain_nonce, known_next):
            return None
        if row is None:
            if self.funds_problem or not self._funds_reported:
                self._report_funds(None)  # nothing waits for funds: a flag from before is stale
            return None
        gas_price = chain.gas_price()
        if not self._hot_wallet_covers(row, gas_price):
            return None
        nonce = max(chain_nonce, known_next)  # the node may have forgotten signed transactions: never reuse
        signed = chain.sign_transfer(row["to_address"], row["amount"], nonce, gas_price)
        try:
            with self.wctx.transaction() as conn:  # committed before a single byte leaves
                withdrawals.mark_signed(conn, row["id"], from_address=chain.hot_wallet, nonce=nonce,
                                        tx_hash=signed.tx_hash, raw_tx=signed.raw)
        except InvalidTransition:
            log.info("withdrawal #%s changed state while signing (rejected?); not sent", row["id"])
            return None
        log.info("withdrawal #%s signed: nonce %s, tx %s", row["id"], nonce, signed.tx_hash)
        return row["id"], signed

    def _nonces_accounted_for(self, chain_nonce: int, known_next: int) -> bool:
        """False while the chain shows hot wallet transactions the database does not know (a restore)."""
        problem = None
        if chain_nonce > known_next:
            problem = {"address": self.wctx.chain.hot_wallet, "chain_nonce": chain_nonce, "known_next": known_next,
                       "unknown": chain_nonce - known_next}
            log.error("hot wallet %s has sent %s transaction(s) the database does not know; sending stopped until "
                      "`python dr.py reconcile`", problem["address"], problem["unknown"])
        if problem != self.nonce_problem or not self._nonce_reported:
            self._report_nonce_problem(problem)
        return problem is None

    def _report_nonce_problem(self, problem: dict | None) -> None:
        """Record it for /status and dr.py status; alert admins once per gap."""
        self.nonce_problem, self._nonce_reported = problem, True
        with self.wctx.transaction() as conn:
            service_status.put(conn, "hot_wallet_nonce", {"ahead": problem is not None, **(problem or {})})
            if problem is None:
                return
            for admin_id in self.wctx.settings.admin_ids:
                notifications.enqueue(conn, admin_id, "admin_nonce_ahead",
                                      {"address": problem["address"], "unknown": problem["unknown"],
                                       "chain_nonce": problem["chain_nonce"], "known": problem["known_next"]},
                                      f"nonce-ahead:{problem['address']}:{problem['known_next']}:{admin_id}")

    def _broadcast(self, withdrawal_id: int, raw: bytes, nonce: int) -> None:
        """Send, then record BROADCAST; whether the nonce was free is settled by the reconciler."""
        outcome = self.wctx.chain.send_raw(raw, nonce)
        with self.wctx.transaction() as conn:
            withdrawals.mark_broadcast(conn, withdrawal_id)
        log.info("withdrawal #%s broadcast (%s)", withdrawal_id, outcome)

    def _hot_wallet_covers(self, row: dict, gas_price: int) -> bool:
        """Tokens and gas for this withdrawal on top of those already signed or sent; otherwise alert, wait.

        Signed and broadcast withdrawals count until they are confirmed: while one sits in the
        mempool the balance still shows its tokens (once mined, it is counted twice for a few
        blocks, which only makes the check stricter).
        """
        chain = self.wctx.chain
        with self.wctx.transaction() as conn:
            committed = withdrawals.committed_on_chain(conn)
        token_balance = chain.token_balance(chain.hot_wallet)
        native_balance = chain.native_balance(chain.hot_wallet)
        tokens_needed = row["amount"] + committed["amount"]
        gas_needed = chain.gas_cost(gas_price) * (committed["count"] + 1)
        if token_balance >= tokens_needed and native_balance >= gas_needed:
            if self.funds_problem or not self._funds_reported:
                self._report_funds(None)
            return True
        problem = {"withdrawal": row["id"], "token_balance": self.wctx.amount(token_balance),
                   "native_balance": str(native_balance), "address": chain.hot_wallet,
                   "committed": self.wctx.amount(committed["amount"])}
        log.warning("hot wallet short of funds for withdrawal #%s: %s", row["id"], problem)
        self._report_funds(problem)
        return False

    def _report_funds(self, problem: dict | None) -> None:
        """Record the shortage for /status; alert admins if the last alert is older than the interval."""
        self.funds_problem, self._funds_reported = problem, True
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
                                       "native_balance": problem["native_balance"], "symbol": self.wctx.token.symbol,
                                       "committed": problem["committed"]},
                                      f"low-funds:{int(now)}:{admin_id}")
