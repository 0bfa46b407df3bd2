"""Process-tree helpers: find every descendant through /proc, signal them all, pick free ports."""
import os
import signal
import socket
import time
from pathlib import Path


def descendants(pid: int) -> list[int]:
    """All live descendants of `pid` (PostgreSQL backends call setsid, so process groups miss them)."""
    children = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # field 4 (ppid) follows the ")" that closes the command name
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def signal_tree(pid: int, sig: int) -> None:
    """Send `sig` to `pid` and every descendant (children first, so none slips away)."""
    for target in descendants(pid)[::-1] + [pid]:
        try:
            os.kill(target, sig)
        except ProcessLookupError:
            pass


def freeze(pid: int) -> None:
    signal_tree(pid, signal.SIGSTOP)


def thaw(pid: int) -> None:
    signal_tree(pid, signal.SIGCONT)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout_s: float, what: str, interval_s: float = 0.05) -> None:
    """Poll `predicate` until it is true; raise TimeoutError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
