"""Transaction fees: EIP-1559 where the chain has a base fee, legacy gas price otherwise; bumps for replacements.

Pure arithmetic, no RPC. A replacement at the same nonce is accepted by nodes only
when every fee field rises by at least 10 %; bumps here add 12.5 % (and one wei) so
rounding never leaves a replacement a hair short.
"""
from dataclasses import dataclass

GWEI = 10**9
BUMP_NUMERATOR, BUMP_DENOMINATOR = 9, 8  # +12.5 %


@dataclass(frozen=True)
class Fees:
    max_fee: int | None = None       # maxFeePerGas (EIP-1559)
    priority_fee: int | None = None  # maxPriorityFeePerGas (EIP-1559)
    gas_price: int | None = None     # legacy transactions

    @property
    def eip1559(self) -> bool:
        return self.max_fee is not None

    @property
    def per_gas(self) -> int:
        """The most one unit of gas can cost."""
        return self.max_fee if self.eip1559 else self.gas_price

    def cost(self, gas_limit: int) -> int:
        return self.per_gas * gas_limit

    def transaction_fields(self) -> dict:
        if self.eip1559:
            return {"type": 2, "maxFeePerGas": self.max_fee, "maxPriorityFeePerGas": self.priority_fee}
        return {"gasPrice": self.gas_price}


def legacy(gas_price: int) -> Fees:
    return Fees(gas_price=gas_price)


def suggested(base_fee: int | None, priority_fee: int, gas_price: int) -> Fees:
    """What to offer now: room for the base fee to double over the next blocks, plus the tip."""
    if base_fee is None:
        return legacy(gas_price)
    return Fees(max_fee=2 * base_fee + priority_fee, priority_fee=priority_fee)


def capped(fees: Fees, cap: int) -> Fees:
    """Never offer more than `cap` per gas."""
    if fees.eip1559:
        max_fee = min(fees.max_fee, cap)
        return Fees(max_fee=max_fee, priority_fee=min(fees.priority_fee, max_fee))
    return legacy(min(fees.gas_price, cap))


def _bump(value: int) -> int:
    return value * BUMP_NUMERATOR // BUMP_DENOMINATOR + 1


def replacement(previous: Fees, network: Fees) -> Fees:
    """Fees for a transaction replacing `previous` at its nonce: above it by the bump, and at least today's."""
    if not network.eip1559:
        return legacy(max(network.gas_price, _bump(previous.per_gas)))
    old_tip = previous.priority_fee if previous.eip1559 else previous.gas_price
    priority_fee = max(network.priority_fee, _bump(old_tip))
    max_fee = max(network.max_fee, _bump(previous.per_gas), priority_fee)
    return Fees(max_fee=max_fee, priority_fee=priority_fee)


def replaces(new: Fees, previous: Fees) -> bool:
    """Whether a node would take `new` as a replacement of `previous` (every fee field up by 10 %)."""
    old_tip = previous.priority_fee if previous.eip1559 else previous.gas_price
    new_tip = new.priority_fee if new.eip1559 else new.gas_price
    return new.per_gas * 10 >= previous.per_gas * 11 and new_tip * 10 >= old_tip * 11
