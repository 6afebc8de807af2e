"""A TCP proxy on 127.0.0.1 whose connections a test can cut, to drop a live gRPC stream the way
a network failure or a restarted load balancer would, while the server stays up."""

from __future__ import annotations

import socket
import threading

#: Bytes read from one side before they are written to the other.
CHUNK_BYTES = 65536


class Proxy:
    """Forwards every connection to `target` (host:port); `drop()` cuts the open ones, new
    connections are still accepted. A context manager that stops it."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self._target = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def drop(self) -> int:
        """Cuts every open connection; returns how many sockets were cut."""
        with self._lock:
            cut, self._open = self._open, []
        for sock in cut:
            _close(sock)
        return len(cut)

    def stop(self) -> None:
        self._stopped = True
        _close(self._listener)
        self.drop()

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                downstream, _ = self._listener.accept()
                upstream = socket.create_connection(self._target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                if self._stopped:
                    return
                continue
            with self._lock:
                self._open += [downstream, upstream]
            for source, sink in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while chunk := source.recv(CHUNK_BYTES):
            sink.sendall(chunk)
    except OSError:
        pass
    _close(source)
    _close(sink)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
