#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Measures the network lab's delay relay (latency added, throughput) and the ssh -D burst at a given RTT.
"""Figures for the network lab (tests/support/netlab.py); prints JSON.

    lab_bench.py relay [--delay-ms 10] [--rounds 200] [--mib 256]
        On 127.0.0.1 (no namespaces, no root): 32-byte ping-pong RTT directly
        to an echo service and through delay_relay.py at 0 and D ms each way;
        bulk upload (to the sink) and download (from the source) through the
        relay at 0 and D ms.

    lab_bench.py burst [--delay-ms 10] [-n 100] [--runs 5]
        In the lab's SSH topology (root): `ssh -N -D` in the client, the
        bastion's sshd behind the relay, the echo service in the lan; after one
        warm-up connection, `runs` bursts of n SOCKS connections started
        together (socks_burst.py), each its time until its 32-byte echo.

Both print the load average next to the figures: on a busy machine every
process on the path wakes later, so the medians grow; the minimum is the
path's own cost.
"""

import argparse
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
SUPPORT = os.path.join(os.path.dirname(BENCH_DIR), "tests", "support")
sys.path.insert(0, BENCH_DIR)
sys.path.insert(0, SUPPORT)
import services  # noqa: E402  (bench/services.py)
import socks_burst  # noqa: E402  (tests/support/socks_burst.py)

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


def bench_burst(args):
    import netlab  # needs root; imported here so `relay` runs anywhere

    with netlab.Lab() as lab:
        topo = lab.ssh_topology(delay_ms=args.delay_ms)
        ssh = topo.client.spawn(topo.ssh_command("-N", "-D", "127.0.0.1:1080"))
        topo.client.wait_listening(1080, proc=ssh)
        destination = (topo.lan_ip, topo.echo_port)
        topo.client.call(socks_burst.burst, ("127.0.0.1", 1080), destination, 1)  # warm-up
        runs = []
        for _ in range(args.runs):
            r = topo.client.run([sys.executable, socks_burst.__file__, "--proxy", "127.0.0.1:1080",
                                 "--to", "%s:%d" % destination, "-n", str(args.count)], check=False)
            one = json.loads(r.stdout)
            runs.append({k: one[k] for k in ("ok", "failed", "min_ms", "p50_ms", "p99_ms", "max_ms")})
        return {"contender": "ssh -D", "delay_ms_each_way": args.delay_ms, "connections": args.count,
                "load_average": load_average(), "runs": runs,
                "median_p50_ms": statistics.median(r["p50_ms"] for r in runs if r["p50_ms"] is not None),
                "median_p99_ms": statistics.median(r["p99_ms"] for r in runs if r["p99_ms"] is not None),
                "failed": sum(r["failed"] for r in runs)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    relay = sub.add_parser("relay")
    relay.add_argument("--delay-ms", type=float, default=10)
    relay.add_argument("--rounds", type=int, default=200)
    relay.add_argument("--mib", type=int, default=256)
    burst = sub.add_parser("burst")
    burst.add_argument("--delay-ms", type=float, default=10)
    burst.add_argument("-n", "--count", type=int, default=100)
    burst.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    result = bench_relay(args) if args.what == "relay" else bench_burst(args)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
