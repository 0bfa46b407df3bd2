"""A server process we own: start, graceful stop, kill -9, freeze/thaw, restart."""
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from devstack import procs

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


class Service:
    """Subclasses give command() and ready(); the process runs in its own session."""

    name = "service"

    def __init__(self, port: int | None = None):
        self.port = port or procs.free_port()
        self.base_dir = Path(tempfile.mkdtemp(prefix=f"{self.name}-stack-", dir="/tmp"))
        self.base_dir.chmod(0o755)
        self.log_path = self.base_dir / f"{self.name}.log"
        self.process: subprocess.Popen | None = None

    # -- subclass hooks
    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def graceful_signal(self) -> int:
        return signal.SIGTERM

    # -- lifecycle
    def start(self) -> "Service":
        if self.running():
            return self
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        procs.wait_until(self._ready_or_dead, START_TIMEOUT_S, f"{self.name} on port {self.port}")
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited at start; log:\n{self.log_tail()}")
        return self

    def stop(self) -> None:
        """Graceful stop: the server's own shutdown signal, then wait."""
        if not self.running():
            return
        self.thaw()  # a frozen server cannot shut down
        self.process.send_signal(self.graceful_signal())
        self.process.wait(STOP_TIMEOUT_S)

    def kill(self) -> None:
        """kill -9 the server and every process it started, as a crash would."""
        if self.process is None or self.process.poll() is not None:
            return
        tree = procs.descendants(self.process.pid)
        procs.signal_tree(self.process.pid, signal.SIGKILL)
        self.process.wait(STOP_TIMEOUT_S)
        procs.wait_until(lambda: not any(procs.alive(pid) for pid in tree), STOP_TIMEOUT_S,
                         f"{self.name} children to die")

    def freeze(self) -> None:
        procs.freeze(self.process.pid)

    def thaw(self) -> None:
        if self.process is not None and self.process.poll() is None:
            procs.thaw(self.process.pid)

    def restart(self, hard: bool = False) -> "Service":
        if hard:
            self.kill()
        else:
            self.stop()
        return self.start()

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def close(self) -> None:
        """Stop for good and remove the data directory."""
        try:
            self.thaw()
            self.kill()
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _ready_or_dead(self) -> bool:
        return self.process.poll() is not None or self.ready()


def as_user(user: str) -> list[str]:
    """Command prefix to run as `user` when we are root (PostgreSQL refuses to run as root)."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"]
