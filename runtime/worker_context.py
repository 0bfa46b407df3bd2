"""The worker's context: what its jobs (and `dr.py recover`) need, built in one place.

The PostgreSQL and RPC circuit breakers are injected by the caller: they live in
dr.py, above this layer.
"""
import contextlib
import logging
import threading
from dataclasses import dataclass

from telebot import TeleBot

from botapi import client
from chain.rpc import Chain, connect
from chain.token import TokenInfo
from core.amounts import format_amount
from core.errors import LeaseLost
from core.settings import SettingsWatcher
from db.pool import open_pool, transaction
from runtime.startup import token_info_or_exit

log = logging.getLogger(__name__)


@dataclass
class WorkerContext:
    watcher: SettingsWatcher
    pool: object
    chain: Chain
    bot: TeleBot
    token: TokenInfo
    stop: threading.Event
    pg_breaker: object
    redis_breaker: object = None  # set by worker.py, which uses Redis (dr.py recover builds its own)
    lease: object = None  # runtime.leadership.WorkerLease: set by whoever acts on the chain

    def fence(self, conn) -> None:
        """In the transaction recording a chain action: LeaseLost unless this process is the active worker."""
        if self.lease is None:
            raise LeaseLost("this process holds no worker lease")
        self.lease.fence(conn)

    @property
    def settings(self):
        return self.watcher.current()

    @contextlib.contextmanager
    def transaction(self):
        """One transaction through the PostgreSQL breaker (BreakerOpen at once while it is open)."""
        with self.pg_breaker.guard():
            with transaction(self.pool) as conn:
                yield conn

    def amount(self, units: int) -> str:
        return format_amount(int(units), self.token.decimals)

    def stopping(self) -> bool:
        return self.stop.is_set()


def build_worker_context(settings, application_name: str, rpc_breaker, pg_breaker) -> WorkerContext:
    """Pool (its transactions guarded by `pg_breaker`), token, the chain client guarded by `rpc_breaker`,
    and the Bot API client."""
    pool = open_pool(settings, application_name)
    token = token_info_or_exit(settings, pool, application_name)
    node = Chain(connect(settings), rpc_breaker, token_address=settings.token_address,
                 deposit_address=settings.deposit_address, chain_id=settings.chain_id,
                 previous_deposit_addresses=settings.previous_deposit_addresses,
                 hot_wallet_key=settings.hot_wallet_private_key.reveal())
    client.configure(settings.telegram_api_url, settings.telegram_read_timeout_s)
    watcher = SettingsWatcher(settings, on_error=lambda exc: log.error("ignoring bad .env edit: %s", exc))
    return WorkerContext(watcher=watcher, pool=pool, chain=node, token=token, stop=threading.Event(),
                         bot=TeleBot(settings.bot_token.reveal(), threaded=False) if settings.bot_token else None,
                         pg_breaker=pg_breaker)
