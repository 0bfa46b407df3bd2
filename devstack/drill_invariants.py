"""The drill's verdict: invariants computed from what the world shows, never from the product's counters.

Inputs are plain data the drill collected: messages the Bot API stand-in accepted (in
order), token Transfer events read from the chain, and rows of the ledger, deposits,
withdrawals and users tables. Each function returns what broke, so the final table can
name it. No I/O here: tests/test_drill.py checks this logic on its own.
"""
import collections
import re
from dataclasses import dataclass, field

REFUNDED = ("REJECTED", "CANCELLED", "FAILED")  # a withdrawal whose hold went back to the balance
FINAL = ("CONFIRMED", *REFUNDED)
UNHANDLED = re.compile(r"unhandled", re.IGNORECASE)
TRACEBACK = "Traceback (most recent call last)"
CHAINED = ("The above exception was the direct cause", "During handling of the above exception")
# what handlers/middlewares.py logs, traceback included, for an update that met a database outage
OUTAGE_REPLY = re.compile(r"handlers\.middlewares: update for chat \d+ failed: .*(PoolTimeout|OperationalError|"
                          r"connection|Connection)")


@dataclass(frozen=True)
class Notice:
    """A notice that must reach `chat_id` exactly once, as `text`; `label` names it in the report."""

    chat_id: int
    text: str
    label: str


@dataclass
class NoticeTally:
    expected: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    allowed: list[str] = field(default_factory=list)  # duplicated by a kill -9 while being sent


def tally_notices(expected: list[Notice], sent: list[tuple[int, str]], kills: list[int]) -> NoticeTally:
    """Match each expected notice to the messages sent (chat, text), in send order.

    `kills`: for each kill -9 of the worker, how many messages had been sent by then. A
    notice sent once before a kill and once more after it is the one send in flight the
    README allows to repeat: reported apart, at most one per kill.
    """
    wanted = collections.defaultdict(list)
    for notice in expected:
        wanted[(notice.chat_id, notice.text)].append(notice)
    seen = collections.defaultdict(list)
    for index, (chat_id, text) in enumerate(sent):
        if (chat_id, text) in wanted:
            seen[(chat_id, text)].append(index)
    tally, unused_kills = NoticeTally(expected=len(expected)), sorted(kills)
    for where, notices in wanted.items():
        copies = seen.get(where, [])
        tally.lost += [n.label for n in notices[len(copies):]]
        extra = len(copies) - len(notices)
        if extra <= 0:
            continue
        label = notices[0].label
        if extra == 1 and len(notices) == 1:
            kill = next((k for k in unused_kills if copies[0] < k <= copies[1]), None)
            if kill is not None:
                unused_kills.remove(kill)
                tally.allowed.append(label)
                continue
        tally.duplicated += [label] * extra
    return tally


@dataclass
class DepositTally:
    transfers: int = 0
    missed: list[str] = field(default_factory=list)
    double: list[str] = field(default_factory=list)


def tally_deposits(transfers: list[dict], owners: dict[str, int], ledger: list[dict]) -> DepositTally:
    """Every transfer from a proven wallet to the deposit address is credited once, to its owner, in full.

    transfers: chain Transfer events to the deposit address (tx_hash, log_index, from, value).
    owners: sender address (any case) -> user id of the wallet's owner.
    ledger: ledger entries of kind 'deposit' (idempotency_key, user_id, amount).
    """
    owners = {address.lower(): user for address, user in owners.items()}
    credits = collections.defaultdict(list)
    for entry in ledger:
        credits[entry["idempotency_key"]].append(entry)
    tally, on_chain = DepositTally(), set()
    for transfer in transfers:
        owner = owners.get(transfer["from"].lower())
        if owner is None:
            continue  # not one of ours: kept unattributed, credited by nobody
        tally.transfers += 1
        key = f"deposit:{transfer['tx_hash'].lower()}:{transfer['log_index']}"
        on_chain.add(key)
        name = f"{int(transfer['value'])} units from user {owner} (tx {transfer['tx_hash'][:10]})"
        mine = [c for c in credits.get(key, []) if c["user_id"] == owner]
        paid = sum(int(c["amount"]) for c in mine)
        if not mine or paid < int(transfer["value"]):
            tally.missed.append(name)
        if len(credits.get(key, [])) > 1 or paid > int(transfer["value"]) or len(mine) < len(credits.get(key, [])):
            tally.double.append(name)
    tally.double += [f"credit {key} matches no transfer on chain" for key in credits if key not in on_chain]
    return tally


@dataclass
class WithdrawalTally:
    withdrawals: int = 0
    transfers: int = 0
    double_sent: list[str] = field(default_factory=list)
    not_paid: list[str] = field(default_factory=list)
    strays: list[str] = field(default_factory=list)


def tally_withdrawals(hot_transfers: list[dict], rows: list[dict]) -> WithdrawalTally:
    """Each withdrawal is paid by exactly one transfer from the hot wallet; none is paid twice.

    hot_transfers: chain Transfer events from the hot wallet (tx_hash, to, value).
    rows: the withdrawals table (id, status, to_address, amount, tx_hash).
    A transfer is a withdrawal's payment when it is its recorded transaction, or when it is a
    transaction no withdrawal recorded that pays the same recipient the same amount (a second
    signature would look like that).
    """
    known = {row["tx_hash"].lower(): row for row in rows if row.get("tx_hash")}
    payments = collections.defaultdict(list)
    tally = WithdrawalTally(withdrawals=len(rows), transfers=len(hot_transfers))
    for transfer in hot_transfers:
        row = known.get(transfer["tx_hash"].lower())
        if row is None:
            row = next((r for r in rows if r["to_address"].lower() == transfer["to"].lower()
                        and int(r["amount"]) == int(transfer["value"])), None)
        if row is None:
            tally.strays.append(f"{int(transfer['value'])} units to {transfer['to']} (tx {transfer['tx_hash'][:10]})")
        else:
            payments[row["id"]].append(transfer)
    for row in rows:
        paid = payments.get(row["id"], [])
        if len(paid) > 1:
            tally.double_sent.append(f"withdrawal #{row['id']}: {len(paid)} transfers")
        if row["status"] in REFUNDED and paid:
            tally.double_sent.append(f"withdrawal #{row['id']}: refunded and paid")
        if row["status"] not in FINAL or (row["status"] == "CONFIRMED" and not paid):
            tally.not_paid.append(f"withdrawal #{row['id']} ({row['status']})")
    return tally


def balance_mismatches(users: list[dict], transfers: list[dict], owners: dict[str, int],
                       withdrawals: list[dict]) -> list[str]:
    """Users whose balance differs from what the chain and their withdrawals say it must be:
    deposits seen on chain minus amount + fee of every withdrawal that was not refunded."""
    owners = {address.lower(): user for address, user in owners.items()}
    expected = collections.Counter()
    for transfer in transfers:
        owner = owners.get(transfer["from"].lower())
        if owner is not None:
            expected[owner] += int(transfer["value"])
    for row in withdrawals:
        if row["status"] not in REFUNDED:
            expected[row["user_id"]] -= int(row["amount"]) + int(row["fee"])
    return [f"user {user['id']}: balance {int(user['balance'])}, the chain says {expected[user['id']]}"
            for user in users if int(user["balance"]) != expected[user["id"]]]


def log_errors(name: str, text: str) -> list[str]:
    """Each traceback in a process log (a chained one counted once, named by the line before it) and each
    line that says "unhandled"."""
    found, context, chained = [], "", False
    for line in text.splitlines():
        if line.startswith(TRACEBACK):
            if not chained:
                found.append(f"{name}: traceback after: {context.strip()[:150]}")
            chained = False
        elif line.startswith(CHAINED):
            chained = True
        elif line.strip() and not line[0].isspace():
            if UNHANDLED.search(line):
                found.append(f"{name}: {line.strip()[:150]}")
            context = line
    return found


@dataclass(frozen=True)
class Row:
    label: str
    count: int
    detail: str = ""
    examples: tuple = ()
    allowed_max: int = 0  # this many are allowed (a duplicate caused by a kill -9)
    note: str = ""  # said under the row: what the broken ones were

    @property
    def ok(self) -> bool:
        return self.count <= self.allowed_max


def invariant_rows(notices: NoticeTally, deposits: DepositTally, withdrawals: WithdrawalTally,
                   balances: list[str], errors: list[str], kills: int) -> list[Row]:
    """The final table, one row per invariant."""
    return [
        Row("notifications lost", len(notices.lost), f"of {notices.expected} expected", tuple(notices.lost)),
        Row("notifications duplicated", len(notices.duplicated), "", tuple(notices.duplicated)),
        Row("  duplicated by a worker kill -9 (allowed)", len(notices.allowed), f"at most {kills}",
            tuple(notices.allowed), allowed_max=kills),
        Row("deposits missed", len(deposits.missed), f"of {deposits.transfers} transfers on chain",
            tuple(deposits.missed)),
        Row("deposits double-credited", len(deposits.double), "", tuple(deposits.double)),
        Row("balances off the chain's account", len(balances), "deposits - withdrawals", tuple(balances)),
        Row("withdrawals double-sent", len(withdrawals.double_sent) + len(withdrawals.strays),
            f"{withdrawals.transfers} hot wallet transfers", tuple(withdrawals.double_sent + withdrawals.strays)),
        Row("withdrawals not paid", len(withdrawals.not_paid), f"of {withdrawals.withdrawals}",
            tuple(withdrawals.not_paid)),
        Row("unhandled errors in the logs", len(errors), "Traceback / unhandled", tuple(errors),
            note=outage_note(errors)),
    ]


def outage_note(errors: list[str]) -> str:
    """Name the tracebacks that are the bot's reply path for an update caught by a database outage."""
    outage = sum(1 for error in errors if OUTAGE_REPLY.search(error))
    if not outage:
        return ""
    return (f"{outage} of them: updates in flight as PostgreSQL went down, answered with technical works but "
            f"logged at ERROR with a traceback (handlers/middlewares.py)")


def render_rows(rows: list[Row]) -> list[str]:
    """The table as text lines, examples of anything broken under its row."""
    width = max(len(row.label) for row in rows) + 2
    lines = []
    for row in rows:
        mark = "ok" if row.ok else "FAIL"
        lines.append(f"  {row.label.ljust(width, '.')} {row.count:>4}  {mark:<4}  {row.detail}".rstrip())
        if row.count and (not row.ok or row.allowed_max):
            if row.note:
                lines.append(f"      {row.note}")
            lines += [f"      - {example}" for example in row.examples[:5]]
            if len(row.examples) > 5:
                lines.append(f"      ... and {len(row.examples) - 5} more")
    return lines


def all_hold(rows: list[Row]) -> bool:
    return all(row.ok for row in rows)
