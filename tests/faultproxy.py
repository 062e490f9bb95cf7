"""A loopback TCP proxy in front of one of our real servers (Redis, S3), for fault-window tests.

It forwards bytes both ways, and on demand it is ``down`` (every connection, new or open, is
closed at once: the server looks unreachable) or cuts the answer to one request (the request
reaches the server and runs there, its answer never comes back: a lost reply). Nothing of
faxrelay's is replaced; the faults are the network's.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator


class FaultProxy:
    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (host, target_port)
        self._listener = socket.create_server((host, 0))
        self.port = int(self._listener.getsockname()[1])
        self.down = False
        self._cut_marker: bytes | None = None
        self.cuts = 0  # answers cut so far
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url_host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set_down(self, down: bool) -> None:
        self.down = down
        if down:
            self._drop_all()

    def cut_answer_to(self, marker: bytes) -> None:
        """The next request that contains ``marker`` reaches the server; its answer is dropped
        and the connection closed (the client sees a connection error and may send it again)."""
        self._cut_marker = marker

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self._drop_all()

    def _drop_all(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.down:
                client.close()
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._conns |= {client, server}
            cut = threading.Event()
            threading.Thread(
                target=self._pump, args=(client, server, cut, True), daemon=True
            ).start()
            threading.Thread(
                target=self._pump, args=(server, client, cut, False), daemon=True
            ).start()

    def _pump(
        self, source: socket.socket, sink: socket.socket, cut: threading.Event, upstream: bool
    ) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if upstream and self._cut_marker is not None and self._cut_marker in data:
                    self._cut_marker = None
                    cut.set()  # its answer (the next bytes back) is dropped
                elif not upstream and cut.is_set():
                    self.cuts += 1
                    break
                sink.sendall(data)
        except OSError:
            pass
        for conn in (source, sink):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()


@contextlib.contextmanager
def fault_proxy(target_port: int) -> Iterator[FaultProxy]:
    proxy = FaultProxy(target_port)
    try:
        yield proxy
    finally:
        proxy.close()
