"""Bot reply latency: /balance from registered users to the real bot.py, healthy and through outages of
Redis (killed, frozen) and PostgreSQL (stopped); latency = push_message until the reply is at the stand-in."""
import json
import math
import time
from pathlib import Path

from bench.report import Row, ms, progress
from bench.stack import Stack, add_users, database, deploy_token, program_env, settings_of
from devstack import procs

REQUESTS = 200
USERS = 50
FIRST_USER = 3_000_001
LEAD_IN_S = 1.0  # the outage's first second carries unmeasured traffic; measuring starts after it
REPLY_TIMEOUT_S = 30.0
RECOVERY_TIMEOUT_S = 90.0
BOT_SETTINGS = {"RATE_LIMIT_UPDATES": 10_000,  # 200 requests in a few seconds are no flood here
                "BREAKER_RESET_S": 2}  # only how soon a breaker closes after an outage (probes run in the background)


def ask(api, user: int) -> tuple[float, str | None]:
    """Send /balance as `user`; seconds until the reply reached the stand-in, and its text (None: no reply)."""
    before = len(api.messages(user))
    started = time.perf_counter()
    api.push_message(user, "/balance")
    try:
        reply = api.wait_for(user, after=before, timeout=REPLY_TIMEOUT_S)
    except AssertionError:
        return REPLY_TIMEOUT_S, None
    return time.perf_counter() - started, reply["text"]


def measure(api, users: list[int]) -> list[tuple[float, str | None]]:
    """REQUESTS requests one after another, round robin over the users."""
    return [ask(api, users[n % len(users)]) for n in range(REQUESTS)]


def lead_in(api, user: int) -> list[float]:
    """Unmeasured requests through the outage's first second, so the bot meets the outage before we measure."""
    started, latencies = time.monotonic(), []
    while time.monotonic() - started < LEAD_IN_S:
        latencies.append(ask(api, user)[0])
    return latencies


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def breaker_state(state_dir: Path, name: str) -> str | None:
    """A breaker's state from bot.py's status file (None before its first report)."""
    try:
        return json.loads((state_dir / "bot.json").read_text())["breakers"][name]["state"]
    except (OSError, ValueError, KeyError):
        return None


def wait_closed(state_dir: Path, name: str) -> None:
    """Wait until bot.py reports the dependency's breaker closed again."""
    procs.wait_until(lambda: breaker_state(state_dir, name) == "CLOSED", RECOVERY_TIMEOUT_S,
                     f"bot.py's {name} breaker to close")


def summary(results: list[tuple[float, str | None]]) -> tuple[float, float, str]:
    """p50, p99 and the cell text (with replies missing or served from the cache)."""
    latencies = [latency for latency, _ in results]
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    missing = sum(1 for _, text in results if text is None)
    cached = sum(1 for _, text in results if text and " as of " in text)
    extra = "".join([f", {missing} unanswered" if missing else "", f", {cached} from cache" if cached else ""])
    return p50, p99, f"p50 {ms(p50)}, p99 {ms(p99)}{extra}"


def scenarios(pg, cache, api, users: list[int], state_dir: Path) -> dict:
    """Healthy, then each outage in turn (repaired before the next); results by scenario."""
    spare = users[-1]  # carries the lead-in traffic, never measured
    measured = users[:-1]
    results = {"healthy": measure(api, measured)}
    for name, start, repair, breaker in (
            ("Redis killed (kill -9)", cache.kill, cache.start, "redis"),
            ("Redis frozen (SIGSTOP)", cache.freeze, cache.thaw, "redis"),
            ("PostgreSQL stopped", pg.stop, pg.start, "postgresql")):
        progress(f"latency: {name}")
        start()
        try:
            first_second = lead_in(api, spare)
            results[name] = (measure(api, measured), first_second)
        finally:
            repair()
        wait_closed(state_dir, breaker)
    return results


def run() -> list[Row]:
    """bot.py on the full stack; 200 /balance requests per scenario."""
    with Stack() as stack:
        pg, cache, node, api = stack.postgres(), stack.redis(), stack.anvil(), stack.standin()
        url = database(pg)
        _, token = deploy_token(node)
        users = add_users(url, FIRST_USER, USERS + 1)
        state_dir = stack.dir / "state"
        env = program_env(api, url, cache.url(), node.url, token, state_dir, **BOT_SETTINGS)
        stack.program("bot.py", env, lambda program: api.waiting_polls > 0)
        for user in users:  # registered, read once from PostgreSQL: cached as the bot caches users
            ask(api, user)
        progress("latency: healthy")
        results = scenarios(pg, cache, api, users, state_dir)
    return rows_of(results)


def settings_words() -> str:
    """The bot settings that shape outage latency, as this run used them."""
    settings = settings_of(**BOT_SETTINGS)
    return (f"BREAKER_FAILURES={settings.breaker_failures} BREAKER_RESET_S={settings.breaker_reset_s:g} "
            f"REDIS_TIMEOUT_S={settings.redis_timeout_s:g} DB_POOL_TIMEOUT_S={settings.db_pool_timeout_s:g}")


def rows_of(results: dict) -> list[Row]:
    """One row per scenario: p50/p99, and p99 against the healthy p99."""
    _, healthy_p99, healthy_text = summary(results.pop("healthy"))
    rows = [Row("latency", "bot.py settings", settings_words()),
            Row("latency", f"/balance x {REQUESTS}, everything up", healthy_text)]
    for name, (outcome, first_second) in results.items():
        _, p99, text = summary(outcome)
        text += f"; 1st second: {len(first_second)} unmeasured, slowest {ms(max(first_second))}"
        postgres = name.startswith("PostgreSQL")
        target, met = ("p99 <= 100 ms", p99 <= 0.1) if postgres else ("p99 <= 1.5x healthy", p99 <= 1.5 * healthy_p99)
        rows.append(Row("latency", f"/balance x {REQUESTS}, {name}, from its 2nd second", text,
                        f"healthy p99 {ms(healthy_p99)}", p99 / healthy_p99, target, met))
    return rows
