"""A loopback TCP proxy in front of an S3-API server that behaves more like S3 over a network.

It adds a delay before every request, and can cut every Nth response at a chosen place (in the
header, mid-body, or one byte short of the end), stall (answer nothing, or stop mid-body) or
answer 500 the way transient network faults and overloaded servers do; a test's hook can see
each request before the server does (to rewrite an object between two GETs, say). Each request
goes to the server on a connection of its own; the client's connection is kept alive between
responses, as S3's is. Responses are streamed through, so a large object never sits whole in the
proxy.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Callable

CUT_PLACES = ("header", "mid-body", "last-byte")
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)
_CLOSE = re.compile(rb"\r\nconnection:\s*close", re.IGNORECASE)
_ERROR_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
    b"<Message>We encountered an internal error. Please try again.</Message></Error>"
)
_INTERNAL_ERROR = (
    b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_ERROR_BODY), _ERROR_BODY)
)


def is_object_get(request_head: bytes) -> bool:
    """A GetObject: a GET of a key, not a listing (`?list-type=2`) nor a bucket."""
    line = request_head.split(b"\r\n", 1)[0]
    method, target = line.split(b" ")[:2]
    return method == b"GET" and b"list-type" not in target and target.count(b"/") >= 2


class FaultyProxy:
    """Start with `with FaultyProxy(upstream) as proxy:`; `proxy.endpoint` is its URL.

    `cut_every=N` cuts every Nth response that `cut_when` picks (object GETs by default) at
    `cut_at`; `stall_at` ("header" or "mid-body") makes every picked response stall until the
    proxy stops. `fail_when` picks requests the proxy answers itself with S3's 500 InternalError.
    `on_request` is called with each request's head before the server gets the request. The
    settings may change while it runs.
    """

    def __init__(
        self,
        upstream: str,
        latency: float = 0.0,
        cut_every: int = 0,
        cut_at: str = "mid-body",
        stall_at: str | None = None,
        cut_when: Callable[[bytes], bool] = is_object_get,
        bandwidth: float = 0.0,
        fail_when: Callable[[bytes], bool] | None = None,
        on_request: Callable[[bytes], None] | None = None,
    ) -> None:
        host, port = upstream.rsplit("//", 1)[-1].split(":")
        self.upstream = (host, int(port))
        self.latency = latency
        self.cut_every = cut_every
        self.cut_at = cut_at
        self.stall_at = stall_at
        self.cut_when = cut_when
        # Bytes per second per response (0: unlimited), as one S3 connection gives tens of MB/s.
        self.bandwidth = bandwidth
        self.fail_when = fail_when
        self.on_request = on_request
        self.picked = 0  # responses `cut_when` picked
        self.cuts = 0
        self.failed = 0  # requests answered with a 500
        self.requests: list[bytes] = []  # request heads, in arrival order
        self.in_flight = 0  # requests relayed at this moment
        self.peak_in_flight = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def __enter__(self) -> FaultyProxy:
        self._spawn(self._accept)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        for thread in list(self._threads):
            thread.join(10)
        assert not any(t.is_alive() for t in self._threads), "a proxy thread did not end"

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name="test-proxy", daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    @contextlib.contextmanager
    def _tracked(self, sock: socket.socket) -> Iterator[socket.socket]:
        with self._lock:
            self._sockets.add(sock)
        try:
            yield sock
        finally:
            with self._lock:
                self._sockets.discard(sock)
            sock.close()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._spawn(self._serve_client, client)

    def _serve_client(self, client: socket.socket) -> None:
        with self._tracked(client), contextlib.suppress(OSError):
            reader = _Reader(client)
            while not self._stopping.is_set():
                request = reader.message()
                if request is None:
                    return
                with self._lock:
                    self.requests.append(request[: request.find(b"\r\n\r\n")])
                with self._lock:
                    self.in_flight += 1
                    self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
                try:
                    if self.latency:
                        time.sleep(self.latency)
                    if not self._relay(request, client):
                        return
                finally:
                    with self._lock:
                        self.in_flight -= 1

    def _fault_for(self, request: bytes) -> str | None:
        if not self.cut_when(request):
            return None
        with self._lock:
            self.picked += 1
            if self.stall_at is not None:
                return "stall-" + self.stall_at
            if self.cut_every and self.picked % self.cut_every == 0:
                self.cuts += 1
                return self.cut_at
        return None

    def _relay(self, request: bytes, client: socket.socket) -> bool:
        """Forwards one request and streams its response back; False once `client` is done."""
        if self.on_request is not None:
            self.on_request(request)
        if self.fail_when is not None and self.fail_when(request):
            with self._lock:
                self.failed += 1
            client.sendall(_INTERNAL_ERROR)
            return True
        fault = self._fault_for(request)
        if fault == "stall-header":
            self._stopping.wait()
            return False
        with self._tracked(socket.create_connection(self.upstream)) as server:
            server.sendall(request)
            reader = _Reader(server)
            head = reader.head()
            if head is None:
                return False
            if fault == "header":
                client.sendall(head[: len(head) // 2])
                return False
            length_match = _CONTENT_LENGTH.search(head)
            length = int(length_match.group(1)) if length_match else None
            client.sendall(head)
            limit = _cut_point(fault, length)
            sent = 0
            started = time.monotonic()
            for chunk in reader.body(length):
                if self.bandwidth:
                    time.sleep(max(0.0, started + sent / self.bandwidth - time.monotonic()))
                if limit is not None and sent + len(chunk) >= limit:
                    client.sendall(chunk[: limit - sent])
                    if fault == "stall-mid-body":
                        self._stopping.wait()
                    return False
                client.sendall(chunk)
                sent += len(chunk)
            return length is not None and not _CLOSE.search(head)


def _cut_point(fault: str | None, length: int | None) -> int | None:
    if fault is None or length is None:
        return None
    if fault in ("mid-body", "stall-mid-body"):
        return length // 2
    if fault == "last-byte":
        return max(length - 1, 0)
    return None


class _Reader:
    """HTTP/1.1 messages off a socket: heads, and bodies by Content-Length."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""

    def head(self) -> bytes | None:
        while b"\r\n\r\n" not in self._buffer:
            chunk = self._sock.recv(65536)
            if not chunk:
                return None
            self._buffer += chunk
        end = self._buffer.index(b"\r\n\r\n") + 4
        head, self._buffer = self._buffer[:end], self._buffer[end:]
        return head

    def body(self, length: int | None) -> Iterator[bytes]:
        """The body in chunks: `length` bytes, or to the end of the connection."""
        left = length
        while left is None or left > 0:
            if self._buffer:
                chunk, self._buffer = self._buffer, b""
            else:
                chunk = self._sock.recv(1 << 20)
                if not chunk:
                    return
            if left is not None:
                chunk, self._buffer = chunk[:left], chunk[left:]
                left -= len(chunk)
            yield chunk

    def message(self) -> bytes | None:
        head = self.head()
        if head is None:
            return None
        match = _CONTENT_LENGTH.search(head)
        return head + b"".join(self.body(int(match.group(1)) if match else 0))


def main() -> None:
    """`python tests/s3_proxy.py UPSTREAM_URL [LATENCY [BYTES_PER_SECOND]]`: serves until stdin
    closes (for the benches)."""
    import sys

    upstream = sys.argv[1]
    latency, bandwidth = (float(arg) for arg in [*sys.argv[2:4], "0", "0"][:2])
    with FaultyProxy(upstream, latency=latency, bandwidth=bandwidth) as proxy:
        print(proxy.endpoint, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
