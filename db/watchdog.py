"""Deadlines for database work: a frozen server must not block a thread forever.

A SIGSTOPped PostgreSQL still has its TCP connections acknowledged by the kernel,
so neither keepalives nor tcp_user_timeout notice, and psycopg waits on the socket
indefinitely. The watchdog thread shuts the socket down when a deadline passes:
the waiting call then fails with OperationalError and the pool discards the
connection.
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
            log.warning("database call overran its deadline: closing its connection")
            sever(conn)


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
