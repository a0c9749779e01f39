#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Loopback sink, source and echo services for the benchmark (stdlib only).
"""Fast local services that the tunnels under test forward to.

They are kept in a separate process (see ``main``) so that their work does
not compete with the measuring client for the Python GIL. Each connection
gets its own thread; the data paths use large preallocated buffers,
``recv_into`` and ``sendall`` of memoryviews so that the services are not the
bottleneck (``bench/run.py`` measures them without a tunnel and prints the
figure).

Protocols (all integers are 8-byte big-endian):
  sink:   client sends N, then N bytes; the sink answers N once all arrived.
  source: client sends N; the source sends N bytes and closes.
  echo:   everything received is sent back until EOF.
"""

import argparse
import json
import os
import socket
import struct
import sys
import threading

CHUNK = 1 << 20  # 1 MiB: big enough that per-syscall overhead is negligible
HEADER = struct.Struct(">Q")


def recv_exact(sock, n):
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        r = sock.recv_into(view[got:])
        if r == 0:
            raise ConnectionError("peer closed after %d of %d bytes" % (got, n))
        got += r
    return bytes(buf)


def _sink(conn):
    (n,) = HEADER.unpack(recv_exact(conn, HEADER.size))
    view = memoryview(bytearray(CHUNK))
    got = 0
    while got < n:
        r = conn.recv_into(view, min(CHUNK, n - got))
        if r == 0:
            break
        got += r
    conn.sendall(HEADER.pack(got))


# Shared, read-only payload for the source: random so that nothing along the
# path could benefit from compressible data.
_SOURCE_DATA = memoryview(os.urandom(CHUNK))


def _source(conn):
    (n,) = HEADER.unpack(recv_exact(conn, HEADER.size))
    left = n
    while left >= CHUNK:
        conn.sendall(_SOURCE_DATA)
        left -= CHUNK
    if left:
        conn.sendall(_SOURCE_DATA[:left])
    # Wait for the client to close first so our close never turns into a RST
    # that could discard data still queued towards the client.
    conn.settimeout(60)
    try:
        conn.recv(1)
    except OSError:
        pass


def _echo(conn):
    view = memoryview(bytearray(256 * 1024))
    while True:
        r = conn.recv_into(view)
        if r == 0:
            return
        conn.sendall(view[:r])


def _serve_conn(handler, conn):
    try:
        with conn:
            handler(conn)
    except OSError:
        pass  # the client gave up; the benchmark reports it on its side


def _accept_loop(listener, handler):
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=_serve_conn, args=(handler, conn), daemon=True).start()


HANDLERS = {"sink": _sink, "source": _source, "echo": _echo}


def start_services(host="127.0.0.1"):
    """Start all services in daemon threads; return {name: port}.

    An IPv6 host ("::" in the network lab) also accepts IPv4 (dual stack)."""
    ports = {}
    for name, handler in HANDLERS.items():
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        listener.bind((host, 0))
        listener.listen(4096)
        ports[name] = listener.getsockname()[1]
        threading.Thread(target=_accept_loop, args=(listener, handler), daemon=True).start()
    return ports


def main():
    """Run as a child process: print the ports as one JSON line, serve until
    stdin closes (so the services never outlive the benchmark).

        services.py [--host ADDR]   (default 127.0.0.1)"""
    parser = argparse.ArgumentParser(description="sink, source and echo services")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    ports = start_services(parser.parse_args().host)
    sys.stdout.write(json.dumps(ports) + "\n")
    sys.stdout.flush()
    try:
        sys.stdin.buffer.read()
    except KeyboardInterrupt:
        pass
    os._exit(0)


if __name__ == "__main__":
    main()
