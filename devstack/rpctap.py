"""A TCP proxy in front of the RPC node that can be cut, and can act once when a JSON-RPC method passes.

The drill puts it between bot.py / worker.py and anvil: cut() is an RPC outage, and
arm("eth_sendRawTransaction", kill_worker, on="response") kills the worker at the moment
its withdrawal reached the node (the node mined it; the worker never hears so).
"""
import socket
import threading

from devstack import tcpproxy
from devstack.tcpproxy import TcpProxy

DROP = object()  # an action returning this swallows the request or answer it fired on and cuts the link
REQUEST, RESPONSE = "request", "response"


class RpcTap(TcpProxy):
    """A TcpProxy whose armed actions run once, when a request naming their JSON-RPC method passes.

    on=REQUEST: right before the request is forwarded to the node. on=RESPONSE: right before
    the node's answer to it is passed back (the node has acted; the caller does not know yet).
    """

    def __init__(self, target_port: int, listen_port: int | None = None):
        super().__init__(target_port, listen_port)
        self._armed: dict[bytes, tuple] = {}
        self._arm_lock = threading.Lock()

    def arm(self, method: str, action, on: str = REQUEST) -> threading.Event:
        """Run `action` once when `method` passes; the event is set after it ran."""
        if on not in (REQUEST, RESPONSE):
            raise ValueError(f"on must be {REQUEST!r} or {RESPONSE!r}")
        fired = threading.Event()
        with self._arm_lock:
            self._armed[f'"{method}"'.encode()] = (action, fired, on)
        return fired

    def disarm(self) -> None:
        with self._arm_lock:
            self._armed.clear()

    def _take(self, chunk: bytes) -> list[tuple]:
        with self._arm_lock:
            return [self._armed.pop(marker) for marker in [m for m in self._armed if m in chunk]]

    @staticmethod
    def _run(triggers: list[tuple]) -> bool:
        """Run the actions; False when one of them says DROP."""
        forward = True
        for action, fired, _ in triggers:
            try:
                if action() is DROP:
                    forward = False
            finally:
                fired.set()
        return forward

    def _open_link(self, client: socket.socket) -> None:
        client.settimeout(None)
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=tcpproxy.CONNECT_TIMEOUT_S)
        except OSError:
            tcpproxy.close_quietly(client)
            return
        upstream.settimeout(None)
        if not self._track(client, upstream):
            return
        on_response: list[tuple] = []  # triggers waiting for the node's answer on this link
        backward = threading.Thread(target=self._pump_answers, args=(upstream, client, on_response), daemon=True)
        backward.start()
        self._pump_requests(client, upstream, on_response)
        backward.join()
        self._untrack(client, upstream)

    def _pump_requests(self, source: socket.socket, sink: socket.socket, on_response: list) -> None:
        def step(chunk: bytes) -> bool:
            triggers = self._take(chunk)
            on_response.extend(t for t in triggers if t[2] == RESPONSE)
            return self._run([t for t in triggers if t[2] == REQUEST])
        self._pump(source, sink, step)

    def _pump_answers(self, source: socket.socket, sink: socket.socket, on_response: list) -> None:
        def step(_chunk: bytes) -> bool:
            triggers, on_response[:] = list(on_response), []
            return self._run(triggers)
        self._pump(source, sink, step)

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, step) -> None:
        """Copy bytes like tcpproxy.pump; `step(chunk)` False drops the chunk and cuts the link."""
        try:
            while chunk := source.recv(tcpproxy.CHUNK_BYTES):
                if not step(chunk):
                    break
                sink.sendall(chunk)
            else:
                sink.shutdown(socket.SHUT_WR)
                return
        except OSError:
            pass
        tcpproxy.shutdown_quietly(source)
        tcpproxy.shutdown_quietly(sink)
