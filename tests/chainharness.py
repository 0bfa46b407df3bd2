"""Run worker.py as a real subprocess against anvil, PostgreSQL and the Bot API stand-in."""
import json
import os
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import requests

from devstack import chaintools, procs
from tests.botharness import ADMIN_ID, BOT_TOKEN, Db, ProgramProcess
from tests.walletharness import bind_proven_at

HOT_WALLET_KEY = chaintools.DEV_PRIVATE_KEYS[1]
HOT_WALLET = chaintools.address_of(HOT_WALLET_KEY)
USER_KEYS = chaintools.DEV_PRIVATE_KEYS[2:]


class WorkerProcess(ProgramProcess):
    """python worker.py; started once it logs that its jobs are scheduled."""

    script = "worker.py"

    def __init__(self, api, database_url: str, rpc_url: str, token_address: str, accept_history: bool = True,
                 **env):
        self.accept_history = accept_history
        super().__init__({
            **os.environ, "ENV_FILE": "/nonexistent/.env", "BOT_TOKEN": BOT_TOKEN, "TELEGRAM_API_URL": api.url,
            "DATABASE_URL": database_url, "RPC_URL": rpc_url, "TOKEN_ADDRESS": token_address,
            "HOT_WALLET_PRIVATE_KEY": HOT_WALLET_KEY, "ADMIN_IDS": str(ADMIN_ID), "CONFIRMATIONS": "2",
            "WORKER_INTERVAL_S": "0.2", "RPC_TIMEOUT_S": "1", "BREAKER_RESET_S": "1", "BREAKER_FAILURES": "2",
            "DB_POOL_TIMEOUT_S": "2", "DB_CONNECT_TIMEOUT_S": "2", "DB_QUERY_TIMEOUT_S": "5",
            "STATE_DIR": tempfile.mkdtemp(prefix="worker-state-"),
            "REDIS_URL": f"redis://127.0.0.1:{procs.free_port()}/0",  # none unless a test gives one
            **{key: str(value) for key, value in env.items()},
        })

    def ready(self) -> bool:
        return "worker started" in self.log(since_start=True)

    def start(self):
        if self.accept_history:
            accept_hot_wallet_history(self.env["DATABASE_URL"], self.env["RPC_URL"])
        return super().start()


def accept_hot_wallet_history(database_url: str, rpc_url: str) -> None:
    """Earlier tests sent from the shared dev hot wallet: accept those nonces, as an operator accepts a
    wallet's past with `dr.py reconcile --accept-unmatched` (in one statement here, for speed)."""
    try:
        sent = chaintools.connect(rpc_url, timeout_s=2).eth.get_transaction_count(HOT_WALLET, "pending")
    except requests.RequestException:
        return  # the RPC path is cut: accepted at the first start already
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("""INSERT INTO hot_wallet_transactions (address, nonce, decision, decided_by)
                        SELECT %s, n, 'ACCEPTED', 'tests: history of the shared dev hot wallet'
                        FROM generate_series(0, %s - 1) AS n
                        WHERE n >= (SELECT coalesce(max(nonce) + 1, 0) FROM withdrawals)
                        ON CONFLICT DO NOTHING""", (HOT_WALLET.lower(), sent))


def user_with_wallet(db: Db, user_id: int, wallet_key: str, balance: int = 0, head: int = 0) -> str:
    """Register a user who proved the wallet of `wallet_key` at chain head `head`; return its address."""
    address = chaintools.address_of(wallet_key)
    db.rows("INSERT INTO users (id, username, language) VALUES (%s, %s, 'en')", (user_id, f"u{user_id}"))
    bind_proven_at(db.url, user_id, wallet_key, head)
    if balance:
        db.fund(user_id, balance, f"test:fund:{user_id}")
    return address


class RpcProxy:
    """A JSON-RPC proxy in front of a node: `answer(request)` may return a reply of its own
    (a JSON-RPC response body as a dict); None forwards the request to the node."""

    def __init__(self, target_url: str, answer):
        self.target_url, self.answer = target_url, answer
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = json.loads(body)
                own = proxy.answer(request) if isinstance(request, dict) else None
                if own is not None:
                    reply = json.dumps({"jsonrpc": "2.0", "id": request.get("id"), **own}).encode()
                else:
                    reply = requests.post(proxy.target_url, data=body, timeout=10,
                                          headers={"Content-Type": "application/json"}).content
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
