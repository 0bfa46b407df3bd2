"""A threaded TCP forwarder on 127.0.0.1 whose link can be cut and restored, to fake a network outage.

cut() closes every open connection and the listening socket, so new connections are
refused at once (no hang); restore() listens again on the same port.
"""
import socket
import threading

from devstack import procs

CONNECT_TIMEOUT_S = 2.0
ACCEPT_POLL_S = 0.2
CHUNK_BYTES = 65536


class TcpProxy:
    """Forward 127.0.0.1:listen_port to 127.0.0.1:target_port."""

    def __init__(self, target_port: int, listen_port: int | None = None):
        self.target_port = target_port
        self.listen_port = listen_port or procs.free_port()
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listen_port}"

    def start(self) -> "TcpProxy":
        """Begin listening and forwarding."""
        if self._listener is not None:
            return self
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.listen_port))
        listener.listen(64)
        listener.settimeout(ACCEPT_POLL_S)
        self._listener = listener
        self._accept_thread = threading.Thread(target=self._accept_loop, args=(listener,),
                                               name=f"tcpproxy-{self.listen_port}", daemon=True)
        self._accept_thread.start()
        return self

    def cut(self) -> None:
        """Drop every connection and stop listening: new connections are refused."""
        listener, self._listener = self._listener, None
        if listener is not None:
            close_quietly(listener)
        if self._accept_thread is not None:
            self._accept_thread.join()
            self._accept_thread = None
        with self._lock:
            connections, self._connections = self._connections, set()
        for conn in connections:
            shutdown_quietly(conn)  # wakes the link's threads, which then close it

    def restore(self) -> "TcpProxy":
        """Listen again on the same port after cut()."""
        return self.start()

    def stop(self) -> None:
        """Shut the proxy down for good."""
        self.cut()

    def _accept_loop(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._open_link, args=(client,), daemon=True).start()

    def _open_link(self, client: socket.socket) -> None:
        """Connect to the target and pump bytes both ways; a failed connect drops the client."""
        client.settimeout(None)
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=CONNECT_TIMEOUT_S)
        except OSError:
            close_quietly(client)
            return
        upstream.settimeout(None)
        if not self._track(client, upstream):
            return
        backward = threading.Thread(target=pump, args=(upstream, client), daemon=True)
        backward.start()
        pump(client, upstream)
        backward.join()
        self._untrack(client, upstream)

    def _track(self, *sockets: socket.socket) -> bool:
        """Remember open sockets so cut() can close them; refuse if a cut happened meanwhile."""
        with self._lock:
            if self._listener is None:
                for sock in sockets:
                    close_quietly(sock)
                return False
            self._connections.update(sockets)
            return True

    def _untrack(self, *sockets: socket.socket) -> None:
        """Close and forget the sockets of a finished connection."""
        with self._lock:
            self._connections.difference_update(sockets)
        for sock in sockets:
            close_quietly(sock)


def pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy bytes from source to sink until EOF, then pass the EOF on; on error drop both."""
    try:
        while chunk := source.recv(CHUNK_BYTES):
            sink.sendall(chunk)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        shutdown_quietly(source)
        shutdown_quietly(sink)


def shutdown_quietly(sock: socket.socket) -> None:
    """End both directions of a socket, ignoring errors (it may already be closed)."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def close_quietly(sock: socket.socket) -> None:
    """Shut down and close a socket, ignoring errors."""
    shutdown_quietly(sock)
    sock.close()
