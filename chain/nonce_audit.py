"""Hot wallet transactions the database does not account for, and what they paid.

After the database is restored from a backup, the chain can hold transactions the
restored database never saw: withdrawals that were paid after the backup, which the
restored rows show as unpaid. The sender stops while that is so (chain/sender.py);
`python dr.py reconcile` finds each such transaction by its nonce and matches it,
one to one and oldest first, to an unpaid withdrawal with the same recipient and
amount. A match that could belong to more than one user is listed, not applied.
"""
from dataclasses import dataclass, field

from chain.rpc import to_hex
from db import audit, hot_wallet, withdrawals

OPERATOR_ID = 0  # audit actor for what an operator did from the command line (not a Telegram user)


@dataclass(frozen=True)
class ChainTransaction:
    nonce: int
    tx_hash: str
    block: int
    recipient: str | None  # of the token transfer it makes; None when it is no token transfer
    amount: int | None


@dataclass
class Plan:
    matched: list = field(default_factory=list)    # (ChainTransaction, withdrawal row)
    ambiguous: list = field(default_factory=list)  # (ChainTransaction, [withdrawal rows])
    unmatched: list = field(default_factory=list)  # ChainTransaction


def unknown_transactions(chain, first_unknown: int) -> tuple[list[ChainTransaction], int]:
    """Mined hot wallet transactions from nonce `first_unknown` on, and how many more wait in the mempool."""
    mined = chain.nonce_at("latest")
    pending = chain.pending_nonce() - mined
    head = chain.head()
    return [find(chain, nonce, head) for nonce in range(first_unknown, mined)], max(pending, 0)


def find(chain, nonce: int, head: int) -> ChainTransaction:
    """The mined transaction with this nonce: the first block whose count passes it, then that block."""
    low, high = 0, head
    while low < high:  # the count only grows with the block number
        middle = (low + high) // 2
        if chain.nonce_at(middle) > nonce:
            high = middle
        else:
            low = middle + 1
    for tx in chain.block_transactions(low):
        if tx["from"].lower() == chain.hot_wallet.lower() and tx["nonce"] == nonce:
            transfer = chain.decode_token_transfer(tx)
            return ChainTransaction(nonce, to_hex(tx["hash"]), low, *(transfer or (None, None)))
    raise LookupError(f"no transaction with nonce {nonce} in block {low}")


def match(transactions: list[ChainTransaction], unpaid: list[dict]) -> Plan:
    """Pair each transaction with the oldest unpaid withdrawal of its recipient and amount."""
    plan, taken = Plan(), set()
    for tx in sorted(transactions, key=lambda t: t.nonce):
        candidates = [w for w in unpaid if w["id"] not in taken and tx.recipient is not None
                      and w["to_address"] == tx.recipient.lower() and int(w["amount"]) == tx.amount]
        if not candidates:
            plan.unmatched.append(tx)
        elif len({w["user_id"] for w in candidates}) > 1:
            plan.ambiguous.append((tx, candidates))
        else:
            taken.add(candidates[0]["id"])
            plan.matched.append((tx, candidates[0]))
    return plan


def resolve(plan: Plan, choices: dict[int, int]) -> Plan:
    """Apply the operator's --match NONCE=WITHDRAWAL choices to ambiguous transactions."""
    resolved = Plan(matched=list(plan.matched), unmatched=list(plan.unmatched))
    for tx, candidates in plan.ambiguous:
        chosen = [w for w in candidates if w["id"] == choices.get(tx.nonce)]
        if chosen:
            resolved.matched.append((tx, chosen[0]))
        else:
            resolved.ambiguous.append((tx, candidates))
    return resolved


def record(wctx, plan: Plan, apply_matched: bool, accept_unmatched: bool,
           decided_by: str) -> tuple[int, list[ChainTransaction]]:
    """Record matched and/or unmatched transactions in nonce order; stop at the first one left open.

    The recorded nonces stay contiguous, so the sender resumes only once every unknown
    transaction is accounted for. Returns how many were recorded and which remain.
    """
    chain = wctx.chain
    decisions = {tx.nonce: (tx, w) for tx, w in plan.matched} if apply_matched else {}
    if accept_unmatched:
        decisions.update({tx.nonce: (tx, None) for tx in plan.unmatched})
    everything = sorted([tx for tx, _ in plan.matched] + [tx for tx, _ in plan.ambiguous] + plan.unmatched,
                        key=lambda t: t.nonce)
    recorded = 0
    for position, tx in enumerate(everything):
        if tx.nonce not in decisions:
            return recorded, everything[position:]
        _, withdrawal = decisions[tx.nonce]
        raw = chain.raw_transaction(tx.tx_hash) if withdrawal else None
        with wctx.transaction() as conn:
            _record_one(conn, chain.hot_wallet, tx, withdrawal, raw, decided_by)
        recorded += 1
    return recorded, []


def _record_one(conn, address: str, tx: ChainTransaction, withdrawal: dict | None, raw: bytes | None,
                decided_by: str) -> None:
    details = {"nonce": tx.nonce, "tx_hash": tx.tx_hash, "block": tx.block, "by": decided_by}
    if withdrawal is None:
        hot_wallet.record(conn, address, tx.nonce, tx.tx_hash, hot_wallet.ACCEPTED, decided_by)
        audit.record(conn, actor_id=OPERATOR_ID, action="reconcile_accept", details=details)
        return
    withdrawals.paid_on_chain(conn, withdrawal["id"], from_address=address, nonce=tx.nonce, tx_hash=tx.tx_hash,
                              raw_tx=raw)
    hot_wallet.record(conn, address, tx.nonce, tx.tx_hash, hot_wallet.MATCHED, decided_by, withdrawal["id"])
    audit.record(conn, actor_id=OPERATOR_ID, action="reconcile_paid", target_user_id=withdrawal["user_id"],
                 details={**details, "withdrawal": withdrawal["id"]})
