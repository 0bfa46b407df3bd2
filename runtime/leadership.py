"""Which worker is active: the lease in PostgreSQL, renewed by a thread of its own.

The active worker renews every RENEW_S; it stops acting (chain and delivery jobs) once
it has not renewed for STEP_DOWN_S, which is before the lease expires at TTL_S, so the
two never act at once on our side. A frozen or partitioned worker cannot step down,
so every chain action also checks the lease in the transaction that records it.
"""
import logging
import os
import socket
import threading
import time

from core.errors import BreakerOpen, DatabaseError, LeaseLost
from db import leases

log = logging.getLogger(__name__)

TTL_S = 6.0  # a standby takes over within TTL_S + RENEW_S of the last renewal
RENEW_S = 1.0
STEP_DOWN_S = 4.0


class WorkerLease:
    def __init__(self, transaction, site: str, holder: str | None = None, clock=time.monotonic):
        self._transaction = transaction  # a breaker-guarded transaction
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}"
        self.site = site
        self._clock = clock
        self.epoch: int | None = None
        self._renewed_at = float("-inf")
        self._role = None
        self._last_error = None

    def active(self) -> bool:
        """Whether this process may act now: it holds the lease and renewed it recently."""
        return self.epoch is not None and self._clock() - self._renewed_at < STEP_DOWN_S

    def renew(self) -> bool:
        """Take or renew the lease once; log each change of role. True while active."""
        began = self._clock()  # the lease runs from the database's now(), which is later than this
        try:
            with self._transaction() as conn:
                epoch = leases.take(conn, self.holder, self.site, TTL_S)
        except (BreakerOpen, DatabaseError) as exc:
            self._last_error = exc  # keep acting until STEP_DOWN_S has passed without a renewal
        else:
            self.epoch = epoch
            if epoch is not None:
                self._renewed_at = began
        self._log_change()
        return self.active()

    def _log_change(self) -> None:
        role = (self.active(), self.epoch)
        if role == self._role:
            return
        self._role = role
        if self.active():
            log.warning("worker lease: active (epoch %s, %s)", self.epoch, self.holder)
        elif self.epoch is None:
            log.warning("worker lease: held by another worker; standing by")
        else:
            log.warning("worker lease: not renewed for %.0f s (%s); stepping down", STEP_DOWN_S, self._last_error)

    def fence(self, conn) -> None:
        """Inside the transaction that records a chain action: LeaseLost unless we still hold the lease."""
        if not self.active():
            raise LeaseLost(f"{self.holder} is not the active worker")
        leases.check(conn, self.holder, self.epoch)

    def release(self) -> None:
        try:
            with self._transaction() as conn:
                leases.release(conn, self.holder)
        except (BreakerOpen, DatabaseError) as exc:
            log.info("worker lease not released (%s); it expires in %.0f s", exc, TTL_S)
        self.epoch = None

    def keep(self, stop: threading.Event) -> None:
        """The lease thread: renew every RENEW_S until stop; then release it."""
        while not stop.is_set():
            self.renew()
            stop.wait(RENEW_S)
        self.release()

    def report(self) -> dict:
        return {"role": "active" if self.active() else "standby", "epoch": self.epoch, "holder": self.holder}
