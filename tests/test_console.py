"""`make chat` (python -m devstack chat): its own .env that dr.py can be pointed at, users keep their
language, other users' messages show as they arrive, Ctrl-C stops everything cleanly."""
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from devstack.procs import wait_until

ROOT = Path(__file__).resolve().parent.parent


class Console:
    def __init__(self):
        self.process = subprocess.Popen([sys.executable, "-m", "devstack", "chat"], cwd=ROOT, text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        env={**os.environ, "ENV_FILE": "/nonexistent/.env"})
        self.output = ""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        """Chunks, not lines: a prompt has no newline until the next answer."""
        while chunk := os.read(self.process.stdout.fileno(), 4096):
            self.output += chunk.decode(errors="replace")

    def type(self, line: str, then: str, timeout: float = 20) -> None:
        mark = len(self.output)
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        wait_until(lambda: then in self.output[mark:], timeout, f"{then!r} after {line!r} in {self.output[-600:]}")

    def answers(self, line: str, expected: str) -> bool:
        """Type `line` and wait for the bot's answer (the next prompt); whether it contains `expected`."""
        mark = len(self.output)
        self.type(line, then="--- bot")
        wait_until(lambda: "]> " in self.output[mark:].split("--- bot", 1)[1], 10, "the answer to end")
        return expected in self.output[mark:]


def test_the_console_has_its_own_env_for_dr_py_and_stops_cleanly_on_ctrl_c():
    console = Console()
    try:
        wait_until(lambda: "dr.py status" in console.output, 90, "the stack to come up")
        env_file = re.search(r"ENV_FILE=(\S+) ", console.output).group(1)
        assert Path(env_file).parent != ROOT and "BOT_TOKEN=" in Path(env_file).read_text()
        console.type(":as 1002 ru", then="[user 1002 ru]>")
        console.type("/start", then="Добро пожаловать")
        console.type(":as 1001", then="[user 1001 en]>")
        console.type(":as 1002", then="[user 1002 ru]>")  # kept its own language
        maintenance = subprocess.run([sys.executable, "dr.py", "maintenance", "on"], cwd=ROOT, text=True,
                                     capture_output=True, env={**os.environ, "ENV_FILE": env_file}, timeout=60)
        assert maintenance.returncode == 0, maintenance.stderr
        assert "BLOCKCHAIN_MAINTENANCE_MODE=true" in Path(env_file).read_text()
        console.type(":as 999", then="[user 999 en]>")
        wait_until(lambda: console.answers("/withdraw 5", "temporarily unavailable"), 20,
                   "the running bot to follow the stack's .env (within 5 s)")
        began = time.monotonic()
        console.process.send_signal(signal.SIGINT)
        console.process.wait(20)
        assert time.monotonic() - began < 15
        wait_until(lambda: "stopping..." in console.output, 5, "the goodbye")
        assert "Traceback" not in console.output and not Path(env_file).exists()
    finally:
        if console.process.poll() is None:
            console.process.kill()
