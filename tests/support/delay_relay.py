#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# TCP relay that holds every chunk for a fixed delay in each direction: latency where the kernel has no netem.
"""Add latency to TCP connections in userspace.

Each connection accepted on a listen address is relayed to one destination;
every chunk read from either side is written to the other side `delay`
seconds after it was read (never earlier), so a ping-pong over the relay
takes at least 2 x delay longer than without it. Order is kept, a half-close
(FIN) travels like data (delayed, after the bytes before it), a reset of one
side resets the other, and a refused destination resets the client.

Buffering is bounded: when a direction holds more than `max_buffer` bytes
(queued for the delay plus the destination's unsent write buffer), the relay
stops reading that direction's source until half of it has gone out, so a
fast sender meets TCP backpressure instead of growing the relay's memory.
The most one direction can carry is therefore about max_buffer / delay
(4 MiB / 10 ms = 400 MiB/s with the defaults).

Standard library only. As a program (the network lab starts it inside a
namespace):

    delay_relay.py --listen ADDR:PORT [--listen ADDR:PORT]... --connect ADDR2:PORT2 --delay-ms D
                   [--max-buffer BYTES]

It prints one JSON line when it listens ({"listening": ["ADDR:PORT", ...]},
with the real ports when PORT is 0) and runs until SIGTERM or SIGINT.
As a module: `DelayRelay(listen, connect, delay_ms)`, `await relay.start()`,
`relay.close()`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import signal
import socket
import struct
import sys

DEFAULT_MAX_BUFFER = 4 << 20  # bytes held per direction of one connection

_EOF = b""     # queue marker: the source half-closed
_RESET = None  # queue marker: the source failed; reset the destination


def parse_endpoint(text: str) -> tuple[str, int]:
    """'ADDR:PORT' or '[V6ADDR]:PORT' -> (addr, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{text!r}: expected ADDR:PORT (IPv6 as [ADDR]:PORT)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise ValueError(f"{text!r}: the address is missing")
    return host, int(port)


def format_endpoint(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _reset(transport: asyncio.Transport) -> None:
    """Close with an RST (SO_LINGER 0), as a peer that failed would."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()


class _Direction:
    """What one side reads, written to the other side `delay` seconds later."""

    def __init__(self, conn: _Connection, delay: float, max_buffer: int):
        self.conn = conn
        self.loop = conn.loop
        self.delay = delay
        self.max_buffer = max_buffer
        self.queue: collections.deque = collections.deque()  # (due time, bytes | _EOF | _RESET)
        self.held = 0  # bytes in the queue
        self.src: asyncio.Transport | None = None
        self.dst: asyncio.Transport | None = None  # None until the upstream connection is made
        self.timer: asyncio.TimerHandle | None = None
        self.src_paused = False
        self.ended = False     # EOF or reset queued: the source sends nothing more
        self.finished = False  # EOF or reset delivered, or the destination is gone

    def push(self, data) -> None:
        if self.ended or self.finished:
            return
        self.ended = data is _RESET or data == _EOF
        self.queue.append((self.loop.time() + self.delay, data))
        self.held += len(data or b"")
        self.throttle()
        self._schedule()

    def set_destination(self, dst: asyncio.Transport) -> None:
        self.dst = dst
        self._schedule()

    def _schedule(self) -> None:
        if self.timer is None and self.queue and self.dst is not None:
            self.timer = self.loop.call_at(self.queue[0][0], self._release)

    def _release(self) -> None:
        """Write everything that is due, in arrival order."""
        self.timer = None
        now = self.loop.time()
        while self.queue and self.queue[0][0] <= now and not self.finished:
            _, data = self.queue.popleft()
            if data is _RESET:
                self.stop()
                _reset(self.dst)
                self.conn.close()
                return
            if data == _EOF:
                self.finished = True
                try:
                    if self.dst.can_write_eof():
                        self.dst.write_eof()
                except OSError:
                    # Reset while we did not read from it (after its own EOF): it is gone.
                    self.conn.close()
                    return
                self.conn.maybe_done()
            else:
                self.dst.write(data)
                self.held -= len(data)
        self.throttle()
        self._schedule()

    def backlog(self) -> int:
        unsent = 0
        if self.dst is not None and not self.dst.is_closing():
            unsent = self.dst.get_write_buffer_size()
        return self.held + unsent

    def throttle(self) -> None:
        """Pause the source above max_buffer, resume it at half: bounded memory, TCP backpressure."""
        if self.src is None or self.src.is_closing():
            return
        backlog = self.backlog()
        if not self.src_paused and backlog > self.max_buffer:
            self.src.pause_reading()
            self.src_paused = True
        elif self.src_paused and backlog <= self.max_buffer // 2:
            self.src.resume_reading()
            self.src_paused = False

    def stop(self) -> None:
        """Drop what is queued; nothing more is written."""
        self.finished = True
        self.queue.clear()
        self.held = 0
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class _Side(asyncio.Protocol):
    """One socket of a relayed connection: feeds `inbound`, is written by `outbound`."""

    def __init__(self, conn: _Connection, inbound: _Direction, outbound: _Direction):
        self.conn = conn
        self.inbound = inbound    # data read here goes there
        self.outbound = outbound  # data written here comes from there
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport):
        self.transport = transport
        # Above half the budget the transport asks us to stop; resume_writing
        # then re-checks the reader it throttled.
        transport.set_write_buffer_limits(high=self.outbound.max_buffer // 2)
        self.inbound.src = transport
        self.conn.side_connected(self)

    def data_received(self, data):
        self.inbound.push(data)

    def eof_received(self):
        self.inbound.push(_EOF)
        return True  # keep the other direction open: half-close

    def pause_writing(self):
        self.outbound.throttle()

    def resume_writing(self):
        self.outbound.throttle()

    def connection_lost(self, exc):
        self.conn.side_lost(self, exc)


class _Connection:
    """A client connection and its upstream, with one _Direction each way."""

    def __init__(self, relay: DelayRelay):
        self.relay = relay
        self.loop = relay.loop
        delay = relay.delay_ms / 1000.0
        self.up = _Direction(self, delay, relay.max_buffer)    # client -> upstream
        self.down = _Direction(self, delay, relay.max_buffer)  # upstream -> client
        self.client = _Side(self, inbound=self.up, outbound=self.down)
        self.upstream = _Side(self, inbound=self.down, outbound=self.up)
        self.closed = False

    def side_connected(self, side: _Side) -> None:
        if side is self.client:
            self.down.set_destination(side.transport)
            self.relay.connections.add(self)
            task = self.loop.create_task(self._connect_upstream())
            self.relay.tasks.add(task)
            task.add_done_callback(self.relay.tasks.discard)
        else:
            self.up.set_destination(side.transport)

    async def _connect_upstream(self) -> None:
        host, port = self.relay.connect
        try:
            await self.loop.create_connection(lambda: self.upstream, host, port)
        except OSError:
            # Refused or unreachable: the client learns it as a reset, one delay later.
            self.up.stop()
            self.down.push(_RESET)

    def side_lost(self, side: _Side, exc) -> None:
        side.outbound.stop()  # nothing can be written to it any more
        # The other side sees the failure (or the end) after the delay; ignored
        # if this side's EOF is already on its way.
        side.inbound.push(_RESET if exc is not None else _EOF)
        self.maybe_done()

    def maybe_done(self) -> None:
        """Close both sockets once each direction has delivered its EOF (or died)."""
        if self.up.finished and self.down.finished:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.up.stop()
        self.down.stop()
        for side in (self.client, self.upstream):
            if side.transport is not None:
                side.transport.close()  # flushes what was already written
        self.relay.connections.discard(self)


class DelayRelay:
    """Listen on `listen` addresses and relay each connection to `connect`, `delay_ms` each way."""

    def __init__(self, listen: list[tuple[str, int]], connect: tuple[str, int], delay_ms: float,
                 max_buffer: int = DEFAULT_MAX_BUFFER):
        if delay_ms < 0:
            raise ValueError("delay_ms must be >= 0")
        if max_buffer < 1024:
            raise ValueError("max_buffer must be at least 1024 bytes")
        self.listen = list(listen)
        self.connect = connect
        self.delay_ms = delay_ms
        self.max_buffer = max_buffer
        self.loop: asyncio.AbstractEventLoop | None = None
        self.servers: list[asyncio.Server] = []
        self.connections: set[_Connection] = set()
        self.tasks: set[asyncio.Task] = set()

    async def start(self) -> list[tuple[str, int]]:
        """Bind every listen address; return the (address, port) pairs bound."""
        self.loop = asyncio.get_running_loop()
        bound = []
        for host, port in self.listen:
            server = await self.loop.create_server(lambda: _Connection(self).client, host, port,
                                                   reuse_address=True, backlog=4096)
            self.servers.append(server)
            bound += [s.getsockname()[:2] for s in server.sockets]
        return bound

    def close(self) -> None:
        """Stop listening and drop every relayed connection."""
        for server in self.servers:
            server.close()
        for conn in list(self.connections):
            conn.close()
        for task in list(self.tasks):
            task.cancel()


async def _serve(args) -> int:
    relay = DelayRelay(args.listen, args.connect, args.delay_ms, args.max_buffer)
    bound = await relay.start()
    print(json.dumps({"listening": [format_endpoint(h, p) for h, p in bound]}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    relay.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", action="append", required=True, type=parse_endpoint,
                        metavar="ADDR:PORT", help="where to accept connections (repeatable)")
    parser.add_argument("--connect", required=True, type=parse_endpoint, metavar="ADDR:PORT",
                        help="where each connection is relayed to")
    parser.add_argument("--delay-ms", type=float, required=True, help="delay added in each direction")
    parser.add_argument("--max-buffer", type=int, default=DEFAULT_MAX_BUFFER,
                        help="bytes held per direction before reading pauses (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(_serve(args))
    except OSError as e:
        print(f"delay_relay: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
