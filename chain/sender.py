"""Withdrawal sender: every withdrawal is paid at most once.

Order of events for one withdrawal: sign -> commit the attempt (nonce, hash, raw
bytes, fees: SIGNED) -> send -> commit BROADCAST; the reconciler takes it from there.
After a crash anywhere, the stored bytes are sent again. Further attempts are only
ever made at the same nonce (a re-priced replacement, or a cancel that transfers
nothing to the hot wallet itself), so at most one of them can be mined.

Only the active worker acts: signing, sending and replacing each check the worker lease
(holder and epoch) in the transaction that records them (LeaseLost otherwise).

Each row stands alone: a row the node refuses with an unexpected error gets its
problem recorded, admins alerted once, and its nonce freed by a cancel, so the rows
behind it are still sent.
"""
import logging
import time

from web3.exceptions import Web3RPCError

from chain.rpc import NO_GAS_FUNDS, UNDERPRICED, WITHDRAWAL_GAS_LIMIT, SignedTransfer, is_transport_failure
from core import fees as fee_rules
from core.errors import BreakerOpen, InvalidTransition, LeaseLost
from core.fees import GWEI, Fees
from db import hot_wallet, notifications, service_status, withdrawal_attempts, withdrawals

PROBLEM_TEXT_MAX = 300

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
        """Send the newest attempt of every row signed but not yet sent; one row's failure stops no other."""
        with self.wctx.transaction() as conn:
            signed = withdrawals.with_status(conn, withdrawals.SIGNED)
        for row in signed:
            isolated(self.wctx, row, "sending", lambda: send_latest(self.wctx, row))

    def send_next(self) -> int:
        signed = self.sign_next()
        if signed is None:
            return 0
        withdrawal_id, _ = signed
        with self.wctx.transaction() as conn:
            row = withdrawals.get(conn, withdrawal_id)
        isolated(self.wctx, row, "sending", lambda: send_latest(self.wctx, row))
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
        fees = fee_rules.capped(chain.fees(), fee_cap(self.wctx))
        if not self._hot_wallet_covers(row, fees):
            return None
        nonce = max(chain_nonce, known_next)  # the node may have forgotten signed transactions: never reuse
        signed = chain.sign_transfer(row["to_address"], row["amount"], nonce, fees)
        try:
            with self.wctx.transaction() as conn:  # committed before a single byte leaves
                self.wctx.fence(conn)  # only the active worker signs: a stale one gets LeaseLost here
                withdrawals.mark_signed(conn, row["id"], from_address=chain.hot_wallet, nonce=nonce,
                                        tx_hash=signed.tx_hash, raw_tx=signed.raw, fees=fees)
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
            notifications.enqueue_for_admins(conn, self.wctx.settings.admin_ids, "admin_nonce_ahead",
                                             {"address": problem["address"], "unknown": problem["unknown"],
                                              "chain_nonce": problem["chain_nonce"], "known": problem["known_next"]},
                                             f"nonce-ahead:{problem['address']}:{problem['known_next']}")

    def _hot_wallet_covers(self, row: dict, fees: Fees) -> bool:
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
        gas_needed = fees.cost(WITHDRAWAL_GAS_LIMIT) * (committed["count"] + 1)
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
            notifications.enqueue_for_admins(  # the key makes a retried alert harmless
                conn, self.wctx.settings.admin_ids, "admin_low_funds",
                {"address": problem["address"], "id": problem["withdrawal"], "token_balance": problem["token_balance"],
                 "native_balance": problem["native_balance"], "symbol": self.wctx.token.symbol,
                 "committed": problem["committed"]}, f"low-funds:{int(now)}")


def fee_cap(wctx) -> int:
    return wctx.settings.withdrawal_max_fee_gwei * GWEI


def isolated(wctx, row: dict, doing: str, action) -> None:
    """Run `action` for one row; an error that is not an RPC outage is recorded on that row alone."""
    try:
        action()
    except (BreakerOpen, LeaseLost):
        raise  # not this row's problem: a dependency is down, or another worker is the active one
    except Exception as exc:
        if is_transport_failure(exc):
            raise  # an outage: every row would fail the same way; the breaker handles it
        log.exception("withdrawal #%s: %s failed", row["id"], doing)
        note_problem(wctx, row, "error", f"{doing} failed: {type(exc).__name__}: {exc}")


def note_problem(wctx, row: dict, kind: str, text: str) -> None:
    """Record what stops this withdrawal and alert admins once per kind of problem at its nonce."""
    text = text[:PROBLEM_TEXT_MAX]
    with wctx.transaction() as conn:
        withdrawals.note_problem(conn, row["id"], text)
        notifications.enqueue_for_admins(conn, wctx.settings.admin_ids, "admin_withdrawal_problem",
                                         {"id": row["id"], "nonce": row["nonce"], "problem": text},
                                         f"withdrawal-problem:{row['id']}:{row['nonce']}:{kind}")
    log.warning("withdrawal #%s: %s", row["id"], text)


def send_latest(wctx, row: dict) -> None:
    """Send the newest attempt at the row's nonce."""
    with wctx.transaction() as conn:
        wctx.fence(conn)  # a worker that lost the lease sends nothing
        attempts = withdrawal_attempts.at_current_nonce(conn, row)
    send(wctx, row, attempts[0], attempts)


def send(wctx, row: dict, attempt: dict, attempts: list[dict], reprice: bool = True) -> None:
    """Send one stored attempt and record BROADCAST; whether its nonce was free is settled by the reconciler.

    Fees the node finds too low are raised once at once (again on the next run); a
    transfer the node refuses outright is cancelled, so its nonce blocks nobody.
    """
    try:
        outcome = wctx.chain.send_raw(bytes(attempt["raw_tx"]), attempt["nonce"])
    except Web3RPCError as exc:
        note_problem(wctx, row, "refused", f"the node refused {attempt['kind'].lower()} {attempt['tx_hash']}: {exc}")
        if attempt["kind"] == withdrawal_attempts.TRANSFER and reprice:
            replace(wctx, row, attempts, withdrawal_attempts.CANCEL)
        return
    if outcome == UNDERPRICED:
        note_problem(wctx, row, "underpriced", f"the node wants higher fees than {attempt['tx_hash']} offers")
        if reprice:
            replace(wctx, row, attempts, attempt["kind"])
        return
    if outcome == NO_GAS_FUNDS:
        note_problem(wctx, row, "no-gas", "the hot wallet cannot pay the gas; top it up with the native coin")
        return
    with wctx.transaction() as conn:
        wctx.fence(conn)
        withdrawals.mark_broadcast(conn, row["id"])
    log.info("withdrawal #%s: %s attempt %s broadcast (%s)", row["id"], attempt["kind"].lower(),
             attempt["tx_hash"], outcome)


def replace(wctx, row: dict, attempts: list[dict], kind: str) -> None:
    """Sign a new attempt at the row's nonce, above the newest one's fees, store it, then send it.

    kind TRANSFER re-prices the payment; kind CANCEL transfers nothing to the hot wallet
    itself, which spends the nonce without paying anyone. Never above WITHDRAWAL_MAX_FEE_GWEI.
    """
    chain, latest = wctx.chain, attempts[0]
    network = chain.fees()
    previous = withdrawal_attempts.fees_of(latest) or chain.transaction_fees(latest["tx_hash"]) or network
    fees = fee_rules.capped(fee_rules.replacement(previous, network), fee_cap(wctx))
    if not fee_rules.replaces(fees, previous):
        note_problem(wctx, row, "fee-cap", f"nonce {row['nonce']} cannot be re-priced: its fee is at the "
                                           f"WITHDRAWAL_MAX_FEE_GWEI cap ({wctx.settings.withdrawal_max_fee_gwei})")
        return
    if kind == withdrawal_attempts.TRANSFER:
        signed = chain.sign_transfer(row["to_address"], row["amount"], row["nonce"], fees)
    else:
        signed = chain.sign_cancel(row["nonce"], fees)
    with wctx.transaction() as conn:  # stored before it is sent, like the first attempt
        wctx.fence(conn)
        attempt = withdrawals.add_attempt(conn, row["id"], kind, tx_hash=signed.tx_hash, raw_tx=signed.raw,
                                          fees=fees)
        current = withdrawals.get(conn, row["id"])
    log.warning("withdrawal #%s: nonce %s, new %s attempt %s at %s wei per gas", row["id"], row["nonce"],
                kind.lower(), signed.tx_hash, fees.per_gas)
    send(wctx, current, {**attempt, "age_s": 0.0}, [attempt, *attempts], reprice=False)


def unstick(wctx, row: dict, attempts: list[dict]) -> None:
    """The newest attempt stayed unmined for WITHDRAWAL_STUCK_S: re-price it, or, after
    WITHDRAWAL_REPRICE_MAX re-pricings, cancel it (freeing the nonce; the withdrawal is sent again later)."""
    transfers = sum(1 for a in attempts if a["kind"] == withdrawal_attempts.TRANSFER)
    cancelling = attempts[0]["kind"] == withdrawal_attempts.CANCEL
    if not cancelling and transfers <= wctx.settings.withdrawal_reprice_max:
        replace(wctx, row, attempts, withdrawal_attempts.TRANSFER)
        return
    if not cancelling:
        note_problem(wctx, row, "stuck", f"nonce {row['nonce']} unmined after {transfers} attempt(s); "
                                         f"freeing it with a cancel, the withdrawal will be sent again")
    replace(wctx, row, attempts, withdrawal_attempts.CANCEL)
