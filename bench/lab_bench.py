#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Measures what the network lab's delay relay adds (latency, throughput).
"""Figures for the network lab's delay relay (tests/support/delay_relay.py); prints JSON.

    lab_bench.py relay [--delay-ms 10] [--rounds 200] [--mib 256]
        On 127.0.0.1 (no namespaces, no root): 32-byte ping-pong RTT directly
        to an echo service and through delay_relay.py at 0 and D ms each way;
        bulk upload (to the sink) and download (from the source) through the
        relay at 0 and D ms.

It prints the load average next to the figures: on a busy machine every
process on the path wakes later, so the medians grow; the minimum is the
path's own cost. The SOCKS burst through the lab's SSH topology, pytun -D
beside ssh -D, is a phase of bench/run.py (--kinds D --phases burst).
"""

import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
SUPPORT = os.path.join(os.path.dirname(BENCH_DIR), "tests", "support")
sys.path.insert(0, BENCH_DIR)
sys.path.insert(0, SUPPORT)
import services  # noqa: E402  (bench/services.py)
import socks_burst  # noqa: E402  (tests/support/socks_burst.py: percentile)

MiB = 1 << 20


def load_average():
    return os.getloadavg()[0]


def summary(values):
    ordered = sorted(values)
    return {"min": round(ordered[0], 3), "p50": round(socks_burst.percentile(ordered, 50), 3),
            "p99": round(socks_burst.percentile(ordered, 99), 3), "max": round(ordered[-1], 3)}


def start_relay(port, delay_ms):
    args = [sys.executable, os.path.join(SUPPORT, "delay_relay.py"), "--listen", "127.0.0.1:0",
            "--connect", f"127.0.0.1:{port}", "--delay-ms", str(delay_ms)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    listening = json.loads(proc.stdout.readline())["listening"][0]
    return proc, int(listening.rsplit(":", 1)[1])


def stop(proc):
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def rtts_ms(port, rounds):
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        out = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            s.sendall(b"x" * 32)
            got = 0
            while got < 32:
                got += len(s.recv(32 - got))
            out.append((time.perf_counter() - t0) * 1000)
        return out


def upload_mib_s(port, nbytes):
    chunk = memoryview(bytearray(MiB))
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        t0 = time.perf_counter()
        s.sendall(services.HEADER.pack(nbytes))
        left = nbytes
        while left:
            n = min(left, MiB)
            s.sendall(chunk[:n])
            left -= n
        (got,) = services.HEADER.unpack(services.recv_exact(s, 8))
        seconds = time.perf_counter() - t0
    if got != nbytes:
        raise RuntimeError(f"sink received {got} of {nbytes} bytes")
    return nbytes / MiB / seconds


def download_mib_s(port, nbytes):
    buf = memoryview(bytearray(MiB))
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        t0 = time.perf_counter()
        s.sendall(services.HEADER.pack(nbytes))
        got = 0
        while got < nbytes:
            n = s.recv_into(buf)
            if n == 0:
                break
            got += n
        seconds = time.perf_counter() - t0
    if got != nbytes:
        raise RuntimeError(f"source sent {got} of {nbytes} bytes")
    return nbytes / MiB / seconds


def bench_relay(args):
    svc = subprocess.Popen([sys.executable, os.path.join(BENCH_DIR, "services.py")], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True)
    relays = []
    try:
        ports = json.loads(svc.stdout.readline())
        result = {"delay_ms": args.delay_ms, "load_average": load_average(),
                  "rtt_ms": {"direct": summary(rtts_ms(ports["echo"], args.rounds))}}
        for delay in (0, args.delay_ms):
            relay, port = start_relay(ports["echo"], delay)
            relays.append(relay)
            result["rtt_ms"][f"relay_{delay:g}ms"] = summary(rtts_ms(port, args.rounds))
            up_relay, up_port = start_relay(ports["sink"], delay)
            down_relay, down_port = start_relay(ports["source"], delay)
            relays += [up_relay, down_relay]
            result[f"upload_mib_s_relay_{delay:g}ms"] = round(upload_mib_s(up_port, args.mib * MiB), 1)
            result[f"download_mib_s_relay_{delay:g}ms"] = round(download_mib_s(down_port, args.mib * MiB), 1)
        result["upload_mib_s_direct"] = round(upload_mib_s(ports["sink"], args.mib * MiB), 1)
        result["download_mib_s_direct"] = round(download_mib_s(ports["source"], args.mib * MiB), 1)
        return result
    finally:
        for relay in relays:
            stop(relay)
        svc.stdin.close()
        stop(svc)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    relay = sub.add_parser("relay")
    relay.add_argument("--delay-ms", type=float, default=10)
    relay.add_argument("--rounds", type=int, default=200)
    relay.add_argument("--mib", type=int, default=256)
    args = parser.parse_args()
    result = bench_relay(args)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
