#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# SOCKS5 burst client: N connections started at once, time until each gets its echo back.
"""Open N SOCKS5 connections at the same instant and time each one's echo.

Every connection: TCP connect to the proxy, SOCKS5 greeting (no
authentication, or RFC 1929 username/password when given), CONNECT to the
destination (IPv4, IPv6 or a name the proxy resolves), then PAYLOAD random
bytes, then wait until the same bytes come back. Its time is from its own
connect() call to the last byte of the echo. All sockets are created first
and connected in one tight loop; one selector loop then drives them all.
Without a proxy (None; no --proxy) each connection goes to the destination
itself and sends the payload at once: the same burst through a port forward
(ssh -L) or a transparent proxy (a VPN capturing the destination).

As a module: burst(proxy, destination, count=100) -> dict (see below).
As a program (prints that dict as JSON; exit 0 when every connection got its
echo, 1 otherwise, 2 on bad arguments):

    socks_burst.py [--proxy HOST:PORT] --to HOST:PORT [-n 100] [--size 32] [--timeout 30]
                   [--username U --password P]

Result: count, ok, failed, p50_ms, p99_ms, min_ms, max_ms, mean_ms (over the
connections that got their echo; null when none did), times_ms (per
connection, null where it failed) and failures: [{index, stage, error,
socks_reply?}] where stage is connect, method, auth, reply or echo and
socks_reply is the proxy's reply code (5 = connection refused, ...).
Standard library only.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import json
import math
import os
import resource
import selectors
import socket
import struct
import sys
import time

SOCKS_REPLIES = {
    0x01: "general SOCKS server failure",
    0x02: "connection not allowed by ruleset",
    0x03: "network unreachable",
    0x04: "host unreachable",
    0x05: "connection refused",
    0x06: "TTL expired",
    0x07: "command not supported",
    0x08: "address type not supported",
}


def parse_endpoint(text: str) -> tuple[str, int]:
    """'HOST:PORT' or '[V6ADDR]:PORT' -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"{text!r}: expected HOST:PORT (IPv6 as [ADDR]:PORT)")
    return host.strip("[]"), int(port)


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p99 of 100 values is the 99th smallest)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100.0 * len(ordered)) - 1)]


def connect_request(host: str, port: int) -> bytes:
    """A SOCKS5 CONNECT request for host:port (IPv4, IPv6 or a name the proxy resolves)."""
    try:
        addr = ipaddress.ip_address(host)
        atyp, raw = (0x01, addr.packed) if addr.version == 4 else (0x04, addr.packed)
    except ValueError:
        name = host.encode("idna")
        if len(name) > 255:
            raise ValueError(f"destination name longer than 255 bytes: {host}") from None
        atyp, raw = 0x03, bytes([len(name)]) + name
    return bytes([0x05, 0x01, 0x00, atyp]) + raw + struct.pack(">H", port)


class _Connection:
    """One SOCKS connection's state: what to send next and how many bytes to await."""

    def __init__(self, index: int, payload: bytes):
        self.index = index
        self.payload = payload
        self.sock: socket.socket | None = None
        self.stage = "connect"
        self.out = b""     # still to send
        self.inbuf = b""   # received, not yet consumed
        self.start = 0.0
        self.ms: float | None = None
        self.failure: dict | None = None

    def fail(self, error: str, socks_reply: int | None = None) -> None:
        self.failure = {"index": self.index, "stage": self.stage, "error": error}
        if socks_reply is not None:
            self.failure["socks_reply"] = socks_reply

    @property
    def done(self) -> bool:
        return self.ms is not None or self.failure is not None


class _Burst:
    def __init__(self, proxy, destination, count, size, username, password):
        self.proxy = proxy
        self.connect_to = proxy or destination
        self.request = connect_request(*destination)
        self.auth = None
        if username is not None:
            u, p = username.encode(), (password or "").encode()
            if len(u) > 255 or len(p) > 255:
                raise ValueError("username and password are limited to 255 bytes each (RFC 1929)")
            self.auth = bytes([0x01, len(u)]) + u + bytes([len(p)]) + p
        self.greeting = bytes([0x05, 0x01, 0x02 if self.auth else 0x00])
        self.conns = [_Connection(i, os.urandom(size)) for i in range(count)]
        self.sel = selectors.DefaultSelector()

    def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.connect_to[0] else socket.AF_INET
        for c in self.conns:  # sockets first, so the connects below leave together
            c.sock = socket.socket(family, socket.SOCK_STREAM)
            c.sock.setblocking(False)
            c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for c in self.conns:
            c.start = time.perf_counter()
            err = c.sock.connect_ex(self.connect_to)
            if err not in (0, errno.EINPROGRESS):
                c.fail(os.strerror(err))
                self._close(c)
            else:
                self.sel.register(c.sock, selectors.EVENT_WRITE, c)

    def run(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        while self.sel.get_map():
            left = end - time.monotonic()
            if left <= 0:
                break
            for key, _ in self.sel.select(left):
                c = key.data
                try:
                    self._advance(c)
                except OSError as e:
                    c.fail(e.strerror or str(e))
                if c.done:
                    self._close(c)
                else:
                    self.sel.modify(c.sock, selectors.EVENT_WRITE if c.out else selectors.EVENT_READ, c)
        for c in self.conns:
            if not c.done:
                c.fail(f"no answer within {timeout} s")
                self._close(c)

    def _close(self, c: _Connection) -> None:
        try:
            self.sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass  # never registered (its connect failed at once)
        c.sock.close()

    def _advance(self, c: _Connection) -> None:
        if c.stage == "connect":
            err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise OSError(err, os.strerror(err))
            c.stage, c.out = ("method", self.greeting) if self.proxy else ("echo", c.payload)
        if c.out:
            sent = c.sock.send(c.out)
            c.out = c.out[sent:]
            return
        data = c.sock.recv(65536)
        if not data:
            c.fail("the proxy closed the connection")
            return
        c.inbuf += data
        self._consume(c)

    def _consume(self, c: _Connection) -> None:
        """Act on complete answers in c.inbuf; leave partial ones for the next read."""
        while not c.done and not c.out:
            if c.stage == "method":
                if len(c.inbuf) < 2:
                    return
                ver, method = c.inbuf[0], c.inbuf[1]
                c.inbuf = c.inbuf[2:]
                if ver != 0x05 or method != self.greeting[2]:
                    c.fail(f"the proxy chose method 0x{method:02x} (version {ver})")
                    return
                c.stage, c.out = ("auth", self.auth) if self.auth else ("reply", self.request)
            elif c.stage == "auth":
                if len(c.inbuf) < 2:
                    return
                status = c.inbuf[1]
                c.inbuf = c.inbuf[2:]
                if status != 0:
                    c.fail(f"username/password refused (status {status})")
                    return
                c.stage, c.out = "reply", self.request
            elif c.stage == "reply":
                if len(c.inbuf) < 5:
                    return
                ver, rep, atyp = c.inbuf[0], c.inbuf[1], c.inbuf[3]
                if ver != 0x05:
                    c.fail(f"not a SOCKS5 reply (version {ver})")
                    return
                if rep != 0:
                    c.fail(f"SOCKS reply 0x{rep:02x} ({SOCKS_REPLIES.get(rep, 'unknown')})", rep)
                    return
                length = {0x01: 4 + 4 + 2, 0x04: 4 + 16 + 2, 0x03: 4 + 1 + c.inbuf[4] + 2}.get(atyp)
                if length is None:
                    c.fail(f"reply with unknown address type {atyp}")
                    return
                if len(c.inbuf) < length:
                    return
                c.inbuf = c.inbuf[length:]
                c.stage, c.out = "echo", c.payload
            elif c.stage == "echo":
                if len(c.inbuf) < len(c.payload):
                    return
                if c.inbuf[:len(c.payload)] != c.payload:
                    c.fail("the echo differs from what was sent")
                    return
                c.ms = (time.perf_counter() - c.start) * 1000.0

    def report(self) -> dict:
        times = [c.ms for c in self.conns if c.ms is not None]
        return {
            "proxy": "%s:%d" % self.proxy if self.proxy else None,
            "count": len(self.conns),
            "ok": len(times),
            "failed": len(self.conns) - len(times),
            "p50_ms": _round(percentile(times, 50)),
            "p99_ms": _round(percentile(times, 99)),
            "min_ms": _round(min(times) if times else None),
            "max_ms": _round(max(times) if times else None),
            "mean_ms": _round(sum(times) / len(times) if times else None),
            "times_ms": [_round(c.ms) for c in self.conns],
            "failures": [c.failure for c in self.conns if c.failure is not None],
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


def burst(proxy: tuple[str, int] | None, destination: tuple[str, int], count: int = 100, size: int = 32,
          timeout: float = 30.0, username: str | None = None, password: str | None = None) -> dict:
    """Start `count` SOCKS5 connections through `proxy` (None: plain TCP) to `destination` at once;
    see the module doc."""
    if count < 1 or size < 1:
        raise ValueError("count and size must be >= 1")
    _raise_fd_limit(count + 64)
    b = _Burst(proxy, destination, count, size, username, password)
    try:
        b.start()
        b.run(timeout)
    finally:
        b.sel.close()
        for c in b.conns:
            if c.sock is not None:
                c.sock.close()
    result = b.report()
    result["destination"] = "%s:%d" % destination
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proxy", type=parse_endpoint, metavar="HOST:PORT",
                        help="the SOCKS5 proxy (without it: plain TCP connections to --to)")
    parser.add_argument("--to", required=True, type=parse_endpoint, metavar="HOST:PORT",
                        help="destination (an echo service), through the proxy when one is given")
    parser.add_argument("-n", "--count", type=int, default=100)
    parser.add_argument("--size", type=int, default=32, help="payload bytes per connection")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds for the whole burst")
    parser.add_argument("--username")
    parser.add_argument("--password")
    args = parser.parse_args(argv)
    try:
        result = burst(args.proxy, args.to, args.count, args.size, args.timeout, args.username, args.password)
    except ValueError as e:
        print(f"socks_burst: {e}", file=sys.stderr)
        return 2
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0 if result["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
