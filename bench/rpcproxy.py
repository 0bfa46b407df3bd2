"""A JSON-RPC proxy in front of a node that counts the calls passing through it, by method."""
import collections
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests


class CountingProxy:
    """Forwards every POST to `target_url` and counts its JSON-RPC calls (each member of a batch counts)."""

    def __init__(self, target_url: str):
        self.target_url = target_url
        self._lock = threading.Lock()
        self._counts: collections.Counter = collections.Counter()
        self._local = threading.local()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True

    @property
    def url(self) -> str:
        """Where to point the RPC client instead of the node."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "CountingProxy":
        """Serve in a daemon thread."""
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         name="rpc-counting-proxy", daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving and close the port."""
        self._server.shutdown()
        self._server.server_close()

    def counts(self) -> collections.Counter:
        """Calls by method since the last reset()."""
        with self._lock:
            return collections.Counter(self._counts)

    def reset(self) -> None:
        """Start counting afresh."""
        with self._lock:
            self._counts.clear()

    def forward(self, body: bytes) -> tuple[int, bytes]:
        """Count the calls in `body`, pass it on; the node's status and answer."""
        calls = json.loads(body)
        with self._lock:
            self._counts.update(call.get("method") for call in (calls if isinstance(calls, list) else [calls]))
        session = getattr(self._local, "session", None) or requests.Session()
        self._local.session = session
        answer = session.post(self.target_url, data=body, headers={"Content-Type": "application/json"}, timeout=30)
        return answer.status_code, answer.content

    def _handler_class(self):
        """The request handler, bound to this proxy."""
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            """POST in, the node's answer out."""

            protocol_version = "HTTP/1.1"  # keep-alive, as web3's session expects

            def setup(self):
                super().setup()
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no 40 ms delayed-ACK stalls

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, content = proxy.forward(body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, format, *args):
                """Quiet."""

        return Handler
