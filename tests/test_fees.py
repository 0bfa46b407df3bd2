"""Fee arithmetic for first attempts and same-nonce replacements (pure logic)."""
from core import fees
from core.fees import Fees


def test_suggested_fees_are_eip1559_when_the_chain_has_a_base_fee():
    offered = fees.suggested(base_fee=10, priority_fee=2, gas_price=99)
    assert offered == Fees(max_fee=22, priority_fee=2) and offered.eip1559
    assert offered.transaction_fields() == {"type": 2, "maxFeePerGas": 22, "maxPriorityFeePerGas": 2}
    assert fees.suggested(base_fee=None, priority_fee=2, gas_price=99) == fees.legacy(99)
    assert fees.legacy(99).transaction_fields() == {"gasPrice": 99}


def test_a_replacement_raises_every_fee_field_by_more_than_ten_percent():
    previous = Fees(max_fee=1000, priority_fee=100)
    for network in (Fees(max_fee=900, priority_fee=50), Fees(max_fee=1000, priority_fee=100)):
        new = fees.replacement(previous, network)
        assert new.max_fee * 10 >= previous.max_fee * 11 and new.priority_fee * 10 >= previous.priority_fee * 11
        assert fees.replaces(new, previous)
    assert fees.replacement(previous, Fees(max_fee=5000, priority_fee=700)) == Fees(max_fee=5000, priority_fee=700)


def test_a_replacement_of_a_legacy_transaction():
    new = fees.replacement(fees.legacy(1000), Fees(max_fee=800, priority_fee=10))
    assert new.eip1559 and new.priority_fee >= 1100 and new.max_fee >= new.priority_fee
    assert fees.replaces(new, fees.legacy(1000))
    assert fees.replacement(fees.legacy(1000), fees.legacy(900)) == fees.legacy(1126)


def test_tiny_fees_still_rise():
    new = fees.replacement(Fees(max_fee=1, priority_fee=0), Fees(max_fee=1, priority_fee=0))
    assert new.max_fee >= 2 and new.priority_fee >= 1


def test_the_cap_is_never_passed_and_a_capped_bump_is_no_replacement():
    previous = Fees(max_fee=900, priority_fee=100)
    capped = fees.capped(fees.replacement(previous, previous), cap=950)
    assert capped.max_fee == 950 and capped.priority_fee <= 950
    assert not fees.replaces(capped, previous)
    assert fees.capped(fees.legacy(500), cap=400) == fees.legacy(400)
    assert fees.capped(Fees(max_fee=100, priority_fee=200), cap=1000) == Fees(max_fee=100, priority_fee=100)


def test_cost_uses_the_most_a_unit_of_gas_can_cost():
    assert Fees(max_fee=30, priority_fee=2).cost(21_000) == 630_000
    assert fees.legacy(7).cost(100) == 700
