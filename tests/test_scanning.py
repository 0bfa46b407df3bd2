"""The scanner's canonical-chain check (pure logic: a chain that answers block hashes from a table)."""
from types import SimpleNamespace

from chain.scanner import DepositMonitor
from db.deposits import Transfer


class HashTable:
    """block_hash() from a dict, counting the questions."""

    def __init__(self, hashes: dict[int, str]):
        self.hashes, self.asked = hashes, []

    def block_hash(self, number: int) -> str | None:
        self.asked.append(number)
        return self.hashes.get(number)


def monitor(chain: HashTable, finalized: int | None) -> DepositMonitor:
    wctx = SimpleNamespace(chain=chain, settings=SimpleNamespace(scan_chunk_blocks=500))
    scanner = DepositMonitor(wctx)
    scanner.finalized = finalized
    return scanner


def transfer(block: int, block_hash: str) -> Transfer:
    return Transfer(tx_hash=f"0x{block:064x}", log_index=0, block_number=block, block_hash=block_hash,
                    from_address="0x" + "1" * 40, amount=1)


def test_blocks_past_finality_are_not_asked_about_and_newer_ones_are():
    chain = HashTable({200: "0xbb", 201: "0xcc"})
    logs = [transfer(100, "0xaa"), transfer(150, "0xdd"), transfer(200, "0xbb"), transfer(200, "0xbb"),
            transfer(201, "0xcc")]
    assert monitor(chain, finalized=150)._still_canonical(logs)
    assert chain.asked == [200, 201]  # one question per unfinalized block, none for final ones


def test_a_log_from_a_block_the_node_no_longer_calls_canonical_is_refused():
    chain = HashTable({200: "0xbb"})
    assert not monitor(chain, finalized=150)._still_canonical([transfer(200, "0xold")])
    assert not monitor(HashTable({100: "0xaa"}), finalized=None)._still_canonical([transfer(100, "0xold")])
