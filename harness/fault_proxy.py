"""A byte-level fault proxy (anyio TCP) for what HTTP frameworks cannot fake: reset after N bytes, truncate,
stall, slow-loris, garbage.

A :class:`FaultProxy` listens on ``127.0.0.1:<free port>`` in its own thread and event loop (the structure of
``harness/netem.py``) and forwards every accepted connection to ``target``. Point a client at
:attr:`FaultProxy.host` instead of the server's address, then :meth:`FaultProxy.add` faults::

    with FaultProxy(registry.host) as proxy:
        proxy.add(Fault("reset", after_bytes=100_000, match=b"GET /v2/repo/blobs/"))
        ...  # talk to proxy.host

Model:

- **Client → server bytes always pass through**, unchanged. The start of each request is held back until its
  head is complete (``\\r\\n\\r\\n``) or :data:`MATCH_WINDOW` bytes arrived, so that a fault can be chosen
  before the server sees the request (only while some pending fault has a ``match``; otherwise nothing is
  held).
- **Faults are chosen per request.** HTTP/1.1 clients keep connections alive (httpx2 sends a blob ``GET`` on
  the connection that served a manifest), so matching only a connection's first bytes would miss most
  requests. A new request starts when the client sends bytes after the server has sent some (or when the
  connection opens); no pipelining is assumed. The proxy's faults are scanned in the order they were added:
  the first with uses left (``times``; ``-1`` = unlimited) whose ``match`` occurs in the request's first
  bytes (or that has no ``match``) is *armed* for that request and one use is consumed. A ``"none"`` fault
  consumes a use and changes nothing (e.g. "let the first matching request through, reset the second").
  For a client that opens one connection per request (or whose connection a fault has killed) "per
  request" is "per connection".
- **Faults apply to the server → client direction**, to the response of the request that armed them, once
  ``after_bytes`` bytes of that response (status line and headers included) have passed:

  ``reset``      both sockets are closed abruptly (``SO_LINGER`` 0: the client gets a TCP RST, and bytes
                 still queued in the proxy may be lost, so the client receives *at most* ``after_bytes``).
  ``truncate``   the first ``after_bytes`` bytes are delivered, then a clean end of stream (FIN); the
                 server's connection is dropped; the connection closes once the client closes its side.
  ``stall``      nothing more is forwarded for ``stall_seconds``, with the connection open; then as
                 ``truncate``.
  ``slowloris``  the rest of the response is forwarded, intact, at ``rate_bytes_per_s``.
  ``garbage``    the rest of the response is replaced by as many random bytes (same length, wrong content).

  ``respond``    the request never reaches the server: the proxy answers it itself with ``status`` (a spec error
                 body, ``headers`` added, ``Connection: close``) and closes the connection: a load balancer
                 or CDN answering 429/503 in front of a registry. For requests without a body (GET, HEAD,
                 POST of a mount or a session); ``after_bytes`` does not apply.

  A fault is consumed even if the response ends before ``after_bytes`` (it then never fires). ``garbage``
  and ``slowloris`` last until the client's next request on the connection.
- :attr:`FaultProxy.stats`: ``connections`` (accepted), ``requests`` (request starts seen),
  ``faults_armed``, ``faults_triggered`` (faults that fired: ``after_bytes`` reached), ``bytes_up``
  (delivered to the target), ``bytes_down`` (delivered to clients, garbage included).
- :meth:`FaultProxy.stop` closes the listener and every connection (stalls included) and joins the thread.
"""

from __future__ import annotations

import contextlib
import http
import json
import os
import socket
import struct
import threading
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Literal, get_args

import anyio
from anyio.abc import SocketAttribute, SocketStream

from harness.loopserver import LoopbackServer, parse_target

__all__ = ["MATCH_WINDOW", "Fault", "FaultKind", "FaultProxy"]

FaultKind = Literal["reset", "truncate", "stall", "slowloris", "garbage", "respond", "none"]

READ_SIZE = 64 * 1024
"""Largest chunk read from a socket at once."""
MATCH_WINDOW = 4096
"""A request's first bytes held back (at most) to decide whether a ``match`` applies."""
SLOW_TICK = 0.05
"""``slowloris`` sends one piece per tick (at least one byte)."""

_ERRORS = (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError)


@dataclass
class Fault:
    """What to do to a response; see the module docstring for the semantics of each ``kind``."""

    kind: FaultKind
    after_bytes: int = 0
    """Bytes of the server → client stream (of the armed request's response) passed before the fault starts."""
    times: int = 1
    """How many requests (in practice connections) get the fault, then traffic passes through; -1 = all."""
    match: bytes | None = None
    """Only requests whose first bytes contain this (e.g. ``b"GET /v2/r/blobs/"``)."""
    stall_seconds: float = 30.0
    """For ``stall``: how long the connection stays open and silent before it closes."""
    rate_bytes_per_s: float = 64
    """For ``slowloris``."""
    status: int = 429
    """For ``respond``: the status answered (e.g. 429 or 503)."""
    headers: dict[str, str] = field(default_factory=dict)
    """For ``respond``: headers added to the answer (e.g. ``Retry-After``)."""

    def answer(self) -> bytes:
        """The whole HTTP/1.1 response a ``respond`` fault sends."""
        code = {429: "TOOMANYREQUESTS", 503: "UNAVAILABLE"}.get(self.status, "UNKNOWN")
        body = json.dumps({"errors": [{"code": code, "message": f"injected {self.status}", "detail": None}]})
        lines = [f"HTTP/1.1 {self.status} {http.HTTPStatus(self.status).phrase}", "Content-Type: application/json"]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        lines += [f"Content-Length: {len(body)}", "Connection: close", "", body]
        return "\r\n".join(lines).encode()

    def __post_init__(self) -> None:
        if self.kind not in get_args(FaultKind):
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {get_args(FaultKind)}")
        if self.after_bytes < 0:
            raise ValueError(f"after_bytes must be >= 0, got {self.after_bytes}")
        if self.times == 0 or self.times < -1:
            raise ValueError(f"times must be >= 1 or -1 (all), got {self.times}")
        if self.match is not None and (not isinstance(self.match, bytes) or not self.match):
            raise ValueError(f"match must be non-empty bytes or None, got {self.match!r}")
        if not self.stall_seconds >= 0:
            raise ValueError(f"stall_seconds must be >= 0, got {self.stall_seconds}")
        if not self.rate_bytes_per_s > 0:
            raise ValueError(f"rate_bytes_per_s must be > 0, got {self.rate_bytes_per_s}")
        if not 400 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP error (400-599), got {self.status}")


@dataclass
class _Entry:
    """A fault of the proxy's list and its uses left (-1 = unlimited)."""

    fault: Fault
    remaining: int


@dataclass
class _Conn:
    """Per-connection state, shared by its two directions (one event loop: no locking)."""

    down_seen: int = 0  # bytes received from the server so far
    server_spoke: bool = True  # the server sent bytes since the client last did: the next client bytes open a request
    fault: Fault | None = None
    fault_at: int = 0  # value of down_seen at which the armed fault fires
    fired: bool = False


def _linger_zero(stream: SocketStream) -> None:
    """Make the next close of ``stream`` send a RST instead of a FIN (best effort)."""
    with contextlib.suppress(Exception):
        sock = stream.extra(SocketAttribute.raw_socket)  # noqa: S610
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class FaultProxy(LoopbackServer):
    """A TCP proxy on 127.0.0.1 that injects byte-level faults into responses; see the module docstring."""

    stats: dict[str, int]

    def __init__(self, target: str) -> None:
        super().__init__("fault-proxy")
        self.target = target
        self._target_host, self._target_port = parse_target(target)
        self.stats = {
            "connections": 0,
            "requests": 0,
            "faults_armed": 0,
            "faults_triggered": 0,
            "bytes_down": 0,
            "bytes_up": 0,
        }
        self._faults: list[_Entry] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FaultProxy({self.host or 'not started'} -> {self.target})"

    # ------------------------------------------------------------------ faults (any thread)

    def add(self, fault: Fault) -> None:
        """Append ``fault`` to the list (faults are tried in the order they were added)."""
        with self._lock:
            self._faults.append(_Entry(fault, fault.times))

    def clear(self) -> None:
        """Forget every fault (faults already armed on open connections still apply)."""
        with self._lock:
            self._faults.clear()

    def pending(self) -> list[tuple[Fault, int]]:
        """The faults with uses left, and how many (-1 = unlimited)."""
        with self._lock:
            return [(e.fault, e.remaining) for e in self._faults if e.remaining != 0]

    def _wants_head(self) -> bool:
        with self._lock:
            return any(e.remaining != 0 and e.fault.match is not None for e in self._faults)

    def _arm(self, conn: _Conn, head: bytes) -> None:
        """Choose the fault for the request starting with ``head`` (or none) and consume one use of it."""
        self.stats["requests"] += 1
        with self._lock:
            for entry in self._faults:
                if entry.remaining == 0 or (entry.fault.match is not None and entry.fault.match not in head):
                    continue
                if entry.remaining > 0:
                    entry.remaining -= 1
                conn.fault, conn.fault_at, conn.fired = entry.fault, conn.down_seen + entry.fault.after_bytes, False
                self.stats["faults_armed"] += 1
                return

    # ------------------------------------------------------------------ lifecycle (caller's thread)

    async def _handle(self, client: SocketStream) -> None:
        self.stats["connections"] += 1
        async with client:
            try:
                upstream = await anyio.connect_tcp(self._target_host, self._target_port)
            except OSError:
                return  # target refused: the client sees its connection closed
            conn = _Conn()
            async with upstream, anyio.create_task_group() as tg:
                scope = tg.cancel_scope
                tg.start_soon(self._guard, self._up(client, upstream, conn, scope), scope)
                tg.start_soon(self._guard, self._down(client, upstream, conn, scope), scope)
        # both directions ended, one failed, or a fault ended the connection: both sockets are closed

    @staticmethod
    async def _guard(work: Awaitable[None], connection: anyio.CancelScope) -> None:
        """Run one direction; a socket error (reset, broken pipe) closes the whole connection."""
        try:
            await work
        except _ERRORS:
            connection.cancel()

    async def _up(
        self, client: SocketStream, upstream: SocketStream, conn: _Conn, connection: anyio.CancelScope
    ) -> None:
        """Client → server: forward everything (but a ``respond`` fault's request); hold each request's start
        until its fault is chosen."""
        head = bytearray()
        holding = False
        while True:
            try:
                data = await client.receive(READ_SIZE)
            except anyio.EndOfStream:
                if holding:
                    self._arm(conn, bytes(head))
                    await self._send_up(upstream, bytes(head))
                await upstream.send_eof()
                return
            if conn.server_spoke:  # a new request: the previous response's fault (if any) is over
                conn.server_spoke, conn.fault, holding = False, None, True
                head.clear()
            if holding:
                head += data
                if self._wants_head() and b"\r\n\r\n" not in head and len(head) < MATCH_WINDOW:
                    continue
                self._arm(conn, bytes(head))
                data, holding = bytes(head), False
                if conn.fault is not None and conn.fault.kind == "respond":
                    conn.fired = True
                    self.stats["faults_triggered"] += 1
                    await self._send_down(client, conn.fault.answer())
                    connection.cancel()  # the answer said Connection: close
                    return
            await self._send_up(upstream, data)

    async def _send_up(self, upstream: SocketStream, data: bytes) -> None:
        await self._send_counted(upstream, data, "bytes_up")

    async def _send_down(self, client: SocketStream, data: bytes) -> None:
        await self._send_counted(client, data, "bytes_down")

    async def _send_counted(self, stream: SocketStream, data: bytes, counter: str) -> None:
        """Count ``data`` before sending it (a test reading the counter once its peer has the bytes must see
        them: the proxy runs in another thread), and take it back if the send failed."""
        if not data:
            return
        self.stats[counter] += len(data)
        try:
            await stream.send(data)
        except BaseException:
            self.stats[counter] -= len(data)
            raise

    async def _down(
        self, client: SocketStream, upstream: SocketStream, conn: _Conn, connection: anyio.CancelScope
    ) -> None:
        """Server → client: forward, until the armed fault's offset; then apply it."""
        while True:
            try:
                data = await upstream.receive(READ_SIZE)
            except anyio.EndOfStream:
                await client.send_eof()
                return
            start = conn.down_seen
            conn.down_seen += len(data)
            conn.server_spoke = True
            fault = conn.fault
            if fault is None or fault.kind == "none":
                await self._send_down(client, data)
                continue
            if not conn.fired:
                clean = conn.fault_at - start
                if clean >= len(data):
                    await self._send_down(client, data)
                    continue
                await self._send_down(client, data[: max(clean, 0)])
                data = data[max(clean, 0) :]
                conn.fired = True
                self.stats["faults_triggered"] += 1
                if fault.kind == "reset":
                    _linger_zero(client)
                    _linger_zero(upstream)
                    connection.cancel()  # leaving the connection's blocks closes (aborts) both sockets
                    return
                if fault.kind in ("truncate", "stall"):
                    if fault.kind == "stall":
                        await anyio.sleep(fault.stall_seconds)
                    await client.send_eof()  # FIN after what was delivered; the client closes its side
                    await upstream.aclose()
                    return
            if fault.kind == "garbage":
                await self._send_down(client, os.urandom(len(data)))
            else:  # slowloris
                await self._trickle(client, data, fault.rate_bytes_per_s)

    async def _trickle(self, client: SocketStream, data: bytes, rate: float) -> None:
        piece = max(1, int(rate * SLOW_TICK))
        for i in range(0, len(data), piece):
            chunk = data[i : i + piece]
            await self._send_down(client, chunk)
            await anyio.sleep(len(chunk) / rate)
