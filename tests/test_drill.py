"""The drill's verdict logic (devstack/drill_invariants.py) on its own: no services, plain data."""
from devstack.drill_invariants import (Notice, all_hold, balance_mismatches, invariant_rows, log_errors,
                                       render_rows, tally_deposits, tally_notices, tally_withdrawals)

ALICE, BOB = "0x" + "a" * 40, "0x" + "b" * 40
TX1, TX2, TX3 = ("0x" + c * 64 for c in "123")


def notices(*pairs) -> list[Notice]:
    return [Notice(chat, text, f"key:{chat}:{text}") for chat, text in pairs]


# -- notices

def test_each_expected_notice_sent_once_is_clean():
    tally = tally_notices(notices((1, "a"), (2, "b")), [(2, "b"), (9, "reply"), (1, "a")], kills=[])
    assert (tally.expected, tally.lost, tally.duplicated, tally.allowed) == (2, [], [], [])


def test_a_missing_notice_is_lost_and_a_second_copy_is_a_duplicate():
    tally = tally_notices(notices((1, "a"), (2, "b")), [(1, "a"), (1, "a"), (3, "b")], kills=[])
    assert tally.lost == ["key:2:b"] and tally.duplicated == ["key:1:a"]


def test_identical_notices_expected_twice_need_two_copies():
    expected = [Notice(1, "same", "k1"), Notice(1, "same", "k2")]
    assert tally_notices(expected, [(1, "same")], []).lost == ["k2"]
    assert tally_notices(expected, [(1, "same")] * 2, []).duplicated == []


def test_a_duplicate_straddling_a_kill_is_allowed_once_per_kill():
    sent = [(1, "a"), (9, "x"), (1, "a"), (2, "b"), (2, "b")]
    tally = tally_notices(notices((1, "a"), (2, "b")), sent, kills=[2])
    assert tally.allowed == ["key:1:a"]          # sent before the kill (index 0) and after it (index 2)
    assert tally.duplicated == ["key:2:b"]       # both copies after the kill: a real duplicate


def test_two_duplicates_across_one_kill_allow_only_one():
    sent = [(1, "a"), (2, "b"), (1, "a"), (2, "b")]
    tally = tally_notices(notices((1, "a"), (2, "b")), sent, kills=[2])
    assert len(tally.allowed) == 1 and len(tally.duplicated) == 1


def test_three_copies_are_never_excused():
    tally = tally_notices(notices((1, "a")), [(1, "a"), (1, "a"), (1, "a")], kills=[1, 2])
    assert tally.allowed == [] and tally.duplicated == ["key:1:a", "key:1:a"]


# -- deposits

def transfer(tx, sender, value, log_index=0) -> dict:
    return {"tx_hash": tx, "log_index": log_index, "from": sender, "value": value, "to": "0x" + "d" * 40}


def credit(tx, user, amount, log_index=0) -> dict:
    return {"idempotency_key": f"deposit:{tx}:{log_index}", "user_id": user, "amount": amount}


def test_every_transfer_credited_once_to_its_owner():
    tally = tally_deposits([transfer(TX1, ALICE, 5), transfer(TX2, BOB.upper().replace("0X", "0x"), 7)],
                           {ALICE: 1, BOB: 2}, [credit(TX1, 1, 5), credit(TX2, 2, 7)])
    assert (tally.transfers, tally.missed, tally.double) == (2, [], [])


def test_an_uncredited_transfer_is_missed_and_a_stranger_is_ignored():
    tally = tally_deposits([transfer(TX1, ALICE, 5), transfer(TX2, "0x" + "c" * 40, 9)], {ALICE: 1}, [])
    assert tally.transfers == 1 and len(tally.missed) == 1 and tally.double == []


def test_credits_beyond_the_transfer_are_double():
    tally = tally_deposits([transfer(TX1, ALICE, 5)], {ALICE: 1},
                           [credit(TX1, 1, 5), credit(TX1, 1, 5), credit(TX3, 1, 4)])
    assert tally.missed == [] and len(tally.double) == 2  # the same transfer twice; one from nowhere


def test_a_credit_to_the_wrong_user_is_both_missed_and_double():
    tally = tally_deposits([transfer(TX1, ALICE, 5)], {ALICE: 1}, [credit(TX1, 2, 5)])
    assert len(tally.missed) == 1 and len(tally.double) == 1


# -- withdrawals

def withdrawal(wid, status, to, amount, tx=None, user=1, fee=0) -> dict:
    return {"id": wid, "status": status, "to_address": to, "amount": amount, "tx_hash": tx, "user_id": user,
            "fee": fee}


def payment(tx, to, value) -> dict:
    return {"tx_hash": tx, "to": to, "value": value}


def test_one_transfer_per_confirmed_withdrawal_is_clean():
    tally = tally_withdrawals([payment(TX1, ALICE, 5)], [withdrawal(1, "CONFIRMED", ALICE, 5, TX1)])
    assert (tally.double_sent, tally.not_paid, tally.strays) == ([], [], [])


def test_a_second_signature_paying_the_same_withdrawal_is_double_sent():
    tally = tally_withdrawals([payment(TX1, ALICE, 5), payment(TX2, ALICE, 5)],
                              [withdrawal(1, "CONFIRMED", ALICE, 5, TX1)])
    assert tally.double_sent == ["withdrawal #1: 2 transfers"]


def test_unfinished_and_unpaid_withdrawals_and_strays_are_reported():
    tally = tally_withdrawals([payment(TX3, BOB, 99)],
                              [withdrawal(1, "BROADCAST", ALICE, 5, TX1), withdrawal(2, "CONFIRMED", ALICE, 6, TX2),
                               withdrawal(3, "REJECTED", ALICE, 7)])
    assert tally.not_paid == ["withdrawal #1 (BROADCAST)", "withdrawal #2 (CONFIRMED)"]
    assert len(tally.strays) == 1


def test_balances_follow_the_chain_minus_withdrawals_not_refunded():
    transfers = [transfer(TX1, ALICE, 50), transfer(TX2, ALICE, 10)]
    rows = [withdrawal(1, "CONFIRMED", ALICE, 5, TX3, fee=1), withdrawal(2, "REJECTED", ALICE, 7)]
    assert balance_mismatches([{"id": 1, "balance": 54}], transfers, {ALICE: 1}, rows) == []
    assert balance_mismatches([{"id": 1, "balance": 64}], transfers, {ALICE: 1}, rows) != []


# -- logs and the table

def test_a_chained_traceback_counts_once_named_by_its_log_line():
    log = ("2026-01-01 00:00:00,000 ERROR handlers: update for chat 7 failed: boom\n"
           "Traceback (most recent call last):\n  File \"x\", line 1\n    self.gen.throw(typ, value, traceback)\n"
           "ValueError: boom\n\nThe above exception was the direct cause of the following exception:\n\n"
           "Traceback (most recent call last):\n  File \"y\"\nRuntimeError: boom\n"
           "2026-01-01 00:00:01,000 WARNING dr: redis breaker CLOSED -> OPEN\n"
           "2026-01-01 00:00:02,000 ERROR worker: unhandled exception in job\n")
    found = log_errors("bot.log", log)
    assert len(found) == 2 and "update for chat 7 failed" in found[0] and "unhandled" in found[1]
    assert log_errors("bot.log", "2026-01-01 00:00:00,000 INFO bot: all fine\n") == []


def test_tracebacks_of_updates_caught_by_a_database_outage_are_named_but_still_counted():
    log = ("2026-01-01 00:00:00,000 ERROR handlers.middlewares: update for chat 7 failed: PoolTimeout: couldn't get "
           "a connection after 2.00 sec\nTraceback (most recent call last):\n  File \"x\"\nPoolTimeout: x\n")
    errors = log_errors("bot.log", log)
    rows = invariant_rows(tally_notices([], [], []), tally_deposits([], {}, []), tally_withdrawals([], []), [],
                          errors, kills=0)
    assert not all_hold(rows)
    assert any("1 of them: updates in flight as PostgreSQL went down" in line for line in render_rows(rows))


def test_the_verdict_passes_only_when_everything_is_zero_but_allowed_duplicates():
    clean = tally_notices(notices((1, "a")), [(1, "a"), (1, "a")], kills=[1])
    deposits = tally_deposits([], {}, [])
    withdrawals = tally_withdrawals([], [])
    rows = invariant_rows(clean, deposits, withdrawals, [], [], kills=1)
    assert all_hold(rows) and any("allowed" in line for line in render_rows(rows))
    assert not all_hold(invariant_rows(clean, deposits, withdrawals, [], ["bot.log: Traceback"], kills=1))
    assert not all_hold(invariant_rows(clean, deposits, withdrawals, [], [], kills=0))
