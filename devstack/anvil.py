"""A throwaway anvil (local EVM JSON-RPC node) on 127.0.0.1, run from node_modules.

State persistence: with `state_path` anvil loads that file at start and writes it on a
graceful stop (SIGTERM). kill -9 skips that final write, so anvil also rewrites the file
every `state_interval_s` seconds (default 1): after kill -9 the chain comes back as of the
last periodic write, losing at most that interval. Call dump_state() right before a
kill -9 to lose nothing. anvil's own writes are not atomic, so a kill -9 in the middle of
one can leave a truncated file; start() then falls back to the last good copy.
"""
import gzip
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import requests

from devstack.service import Service

REPO_ROOT = Path(__file__).resolve().parent.parent
NODE_MODULES = REPO_ROOT / "node_modules"
ANVIL_PACKAGE = NODE_MODULES / "@foundry-rs" / "anvil"
CHAIN_ID = 31337
DEV_MNEMONIC = "test test test test test test test test test test test junk"
DEV_ACCOUNTS = 10
READY_TIMEOUT_S = 1.0
RPC_TIMEOUT_S = 10.0
DEFAULT_STATE_INTERVAL_S = 1
NPM_CI = ["npm", "ci", "--no-audit", "--no-fund"]

NPM_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
NPM_OS = {"linux": "linux", "darwin": "darwin"}


def ensure_node_modules() -> None:
    """Run `npm ci` in the repository root when the anvil package is not installed."""
    if ANVIL_PACKAGE.exists():
        return
    if shutil.which("npm") is None:
        raise RuntimeError("npm is not installed: install Node.js 20+ and run `npm ci` in the repository root")
    result = subprocess.run(NPM_CI, cwd=REPO_ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"`npm ci` failed in {REPO_ROOT}:\n{result.stdout}\n{result.stderr}")


def native_package_name() -> str:
    """The npm package holding anvil's native binary for this OS and CPU."""
    system, machine = NPM_OS.get(sys.platform), NPM_ARCH.get(platform.machine().lower())
    if system is None or machine is None:
        raise RuntimeError(f"anvil has no npm build for {sys.platform}/{platform.machine()}")
    return f"anvil-{system}-{machine}"


def anvil_binary() -> Path:
    """Path of the native anvil executable (not the node wrapper, so SIGSTOP freezes the server)."""
    binary = NODE_MODULES / "@foundry-rs" / native_package_name() / "bin" / "anvil"
    if not binary.exists():
        raise RuntimeError(f"{binary} is missing: run `npm ci` in {REPO_ROOT}")
    if sys.platform == "linux" and binary.read_bytes()[:4] != b"\x7fELF":
        raise RuntimeError(f"{binary} is not a native executable: run `npm ci` in {REPO_ROOT} again")
    return binary


def rpc_call(url: str, method: str, params: list | None = None, timeout_s: float = RPC_TIMEOUT_S):
    """One raw JSON-RPC call; raises RuntimeError on an error answer."""
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}
    answer = requests.post(url, json=body, timeout=timeout_s).json()
    if "error" in answer:
        raise RuntimeError(f"{method} failed: {answer['error']}")
    return answer["result"]


def state_file_is_valid(path: Path) -> bool:
    """True when `path` holds a complete JSON document (anvil state files are plain JSON)."""
    try:
        json.loads(path.read_bytes())
        return True
    except (OSError, ValueError):
        return False


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so a crash leaves either the old or the new file."""
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, path)


class AnvilNode(Service):
    """anvil with chain id 31337 and the well-known dev accounts; automine unless block_time_s."""

    name = "anvil"

    def __init__(self, port: int | None = None, state_path: str | Path | None = None,
                 block_time_s: float | None = None,
                 state_interval_s: int | None = DEFAULT_STATE_INTERVAL_S):
        self.binary = anvil_binary()  # before super(), which creates a data directory
        super().__init__(port)
        self.state_path = Path(state_path) if state_path is not None else None
        self.block_time_s = block_time_s
        self.state_interval_s = state_interval_s

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def good_state_path(self) -> Path | None:
        """Last state file known to be complete, kept beside state_path."""
        return self.state_path.with_name(self.state_path.name + ".good") if self.state_path else None

    def command(self) -> list[str]:
        cmd = [str(self.binary), "--host", "127.0.0.1", "--port", str(self.port),
               "--chain-id", str(CHAIN_ID), "--mnemonic", DEV_MNEMONIC,
               "--accounts", str(DEV_ACCOUNTS), "--color", "never",
               "--hardfork", "cancun"]  # Prague's block-hash history contract makes every new block slower
        if self.block_time_s is not None:
            cmd += ["--block-time", str(self.block_time_s)]
        if self.state_path is not None:
            cmd += ["--state", str(self.state_path)]
            if self.state_interval_s:
                cmd += ["--state-interval", str(self.state_interval_s)]
        return cmd

    def start(self) -> "AnvilNode":
        if not self.running() and self.state_path is not None:
            self._prepare_state_file()
        return super().start()

    def ready(self) -> bool:
        try:
            return int(rpc_call(self.url, "eth_chainId", timeout_s=READY_TIMEOUT_S), 16) == CHAIN_ID
        except (requests.RequestException, ValueError, RuntimeError):
            return False

    def dump_state(self) -> None:
        """Write the current chain to state_path now (anvil_dumpState), atomically."""
        if self.state_path is None:
            raise RuntimeError("this AnvilNode has no state_path")
        compressed = bytes.fromhex(rpc_call(self.url, "anvil_dumpState")[2:])
        state = gzip.decompress(compressed)
        write_atomically(self.state_path, state)
        write_atomically(self.good_state_path, state)

    def _prepare_state_file(self) -> None:
        """Keep a copy of a complete state file; replace a truncated one by that copy."""
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        if not self.state_path.exists():
            return
        if state_file_is_valid(self.state_path):
            write_atomically(self.good_state_path, self.state_path.read_bytes())
        elif self.good_state_path.exists():
            write_atomically(self.state_path, self.good_state_path.read_bytes())
        else:
            self.state_path.unlink()
