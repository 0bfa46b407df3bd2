"""Matching hot wallet transactions the database lost to unpaid withdrawals: one to one, oldest first."""
from chain.nonce_audit import ChainTransaction, match, resolve

ALICE, BOB = "0x" + "a1" * 20, "0x" + "b0" * 20


def tx(nonce: int, recipient: str | None, amount: int | None) -> ChainTransaction:
    return ChainTransaction(nonce, "0x" + f"{nonce:064x}", 100 + nonce, recipient, amount)


def withdrawal(withdrawal_id: int, user_id: int, to: str, amount: int) -> dict:
    return {"id": withdrawal_id, "user_id": user_id, "to_address": to, "amount": amount, "status": "APPROVED"}


def test_each_transaction_pays_the_oldest_matching_withdrawal_once():
    unpaid = [withdrawal(1, 7, ALICE, 5), withdrawal(2, 7, ALICE, 5), withdrawal(3, 8, BOB, 6)]
    plan = match([tx(11, ALICE, 5), tx(10, ALICE, 5), tx(12, BOB, 6)], unpaid)
    assert [(t.nonce, w["id"]) for t, w in plan.matched] == [(10, 1), (11, 2), (12, 3)]
    assert plan.ambiguous == [] and plan.unmatched == []


def test_no_match_for_another_amount_recipient_or_a_non_token_transaction():
    unpaid = [withdrawal(1, 7, ALICE, 5)]
    plan = match([tx(1, ALICE, 6), tx(2, BOB, 5), tx(3, None, None), tx(4, ALICE, 5), tx(5, ALICE, 5)], unpaid)
    assert [t.nonce for t in plan.unmatched] == [1, 2, 3, 5]  # the second payment of 5 finds nothing left
    assert [(t.nonce, w["id"]) for t, w in plan.matched] == [(4, 1)]


def test_a_payment_that_could_be_two_users_is_listed_until_the_operator_chooses():
    unpaid = [withdrawal(1, 7, ALICE, 5), withdrawal(2, 8, ALICE, 5)]
    plan = match([tx(3, ALICE, 5)], unpaid)
    assert plan.matched == [] and [(t.nonce, [w["id"] for w in c]) for t, c in plan.ambiguous] == [(3, [1, 2])]
    assert resolve(plan, {3: 99}).ambiguous == plan.ambiguous  # not a candidate: still open
    chosen = resolve(plan, {3: 2})
    assert [(t.nonce, w["id"]) for t, w in chosen.matched] == [(3, 2)] and chosen.ambiguous == []
