"""A TCP relay between a client and a real server that can cut connections, to test what a
dropped connection does (a real network fault, not a stand-in for our code)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable

# (connection number, direction "up"/"down", bytes already relayed that way) -> cut now?
Cut = Callable[[int, str, int], bool]


class CuttingProxy:
    def __init__(self, target_port: int, cut: Cut) -> None:
        self._target = target_port
        self._cut = cut
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections = 0
        self.cuts = 0
        self.requests: list[bytes] = []  # the first bytes each connection sent (its request)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> CuttingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                number = self.connections
            server = socket.create_connection(("127.0.0.1", self._target))
            for src, dst, way in ((client, server, "up"), (server, client, "down")):
                threading.Thread(target=self._pump, args=(number, src, dst, way),
                                 daemon=True).start()

    def _pump(self, number: int, src: socket.socket, dst: socket.socket, way: str) -> None:
        relayed = 0
        try:
            while data := src.recv(65536):
                if way == "up" and relayed == 0:
                    with self._lock:
                        self.requests.append(data[:2048])
                if self._cut(number, way, relayed + len(data)):
                    with self._lock:
                        self.cuts += 1
                    half = max(0, len(data) // 2)
                    dst.sendall(data[:half])
                    break
                dst.sendall(data)
                relayed += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
