"""Deadlines for database work: a frozen server must not block a thread forever.

A SIGSTOPped PostgreSQL still has its TCP connections acknowledged by the kernel,
so neither keepalives nor tcp_user_timeout notice, and psycopg waits on the socket
indefinitely. The watchdog thread shuts the socket down when a deadline passes:
the waiting call then fails with OperationalError and the pool discards the
connection.

Deciding to sever and severing happen under the same lock the guarded block takes
on its way out, so a block that finished in time is never severed afterwards (its
connection may already serve another thread); a connection that was severed is
closed by its own thread as the block ends, so the pool never hands it out again.
"""
import heapq
import itertools
import logging
import os
import socket
import threading
import time
from contextlib import contextmanager

log = logging.getLogger(__name__)


class Watchdog:
    def __init__(self):
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, object]] = []
        self._active: set[int] = set()
        self._severed: set[int] = set()
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    @contextmanager
    def guard(self, conn, timeout_s: float):
        """Sever `conn` if the block is still running after `timeout_s` seconds."""
        entry_id = next(self._ids)
        with self._cond:
            self._ensure_thread()
            self._active.add(entry_id)
            heapq.heappush(self._heap, (time.monotonic() + timeout_s, entry_id, conn))
            self._cond.notify()
        try:
            yield conn
        finally:
            with self._cond:
                self._active.discard(entry_id)
                severed = entry_id in self._severed
                self._severed.discard(entry_id)
            if severed:
                conn.close()  # closed here, by its own thread: the pool discards it

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="db-watchdog", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                deadline, entry_id, conn = self._heap[0]
                now = time.monotonic()
                if entry_id not in self._active:
                    heapq.heappop(self._heap)
                    continue
                if deadline > now:
                    self._cond.wait(deadline - now)
                    continue
                heapq.heappop(self._heap)
                self._active.discard(entry_id)
                self._severed.add(entry_id)
                sever(conn)  # still under the lock: the block cannot have ended and given the connection away
            log.warning("database call overran its deadline: its connection was cut")


def sever(conn) -> None:
    """Shut the connection's socket down from outside, waking whatever thread waits on it."""
    try:
        fd = conn.pgconn.socket
    except Exception:  # already closed: nothing waits on it
        return
    dup = socket.socket(fileno=os.dup(fd))
    try:
        dup.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        dup.close()


WATCHDOG = Watchdog()
