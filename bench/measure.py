#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Measuring code shared by the benchmarks (run.py, vpn.py): the client side of each phase, /proc readings, fixture glue.
"""What bench/run.py and bench/vpn.py measure with, and how.

The client side of every phase (upload to the sink, download from the source,
connect+echo latency, N concurrent echo connections) works on an Entry: where
the measuring client connects (an address, and for a SOCKS forward the
destination to ask for). Run inside a network namespace with
netlab.Namespace.call, the sockets are made there. CPU and memory come from
/proc. Only the Python standard library is used.
"""

import argparse
import os
import platform
import re
import selectors
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR.parent / "tests" / "support"))
import services  # noqa: E402  (bench/services.py)
import socks_burst  # noqa: E402  (tests/support/socks_burst.py)
import sshd_fixture  # noqa: E402  (tests/support/sshd_fixture.py)

MiB = 1 << 20
GiB = 1 << 30
HEADER = struct.Struct(">Q")
CLK_TCK = os.sysconf("SC_CLK_TCK")
CIPHER = "aes128-ctr"
MAC = "hmac-sha2-256"
START_TIMEOUT = 15.0  # seconds for a tunnel to come up


def log(msg):
    sys.stderr.write("[bench %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


class PhaseError(Exception):
    """A phase did not finish correctly or in time; reported, not fatal."""


class StartError(PhaseError):
    """A contender's tunnel did not come up."""


# --------------------------------------------------------------------------
# /proc helpers


def cpu_times(pid):
    """(utime + stime of a process, all its threads; cutime + cstime, its
    children that have ended and been waited for) in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime, stime, cutime, cstime are fields 14 to 17.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK, (int(fields[13]) + int(fields[14])) / CLK_TCK


def cpu_seconds(pid):
    """utime + stime of a process (all its threads) in seconds."""
    return cpu_times(pid)[0]


def status_kib(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def pss_kib(pid):
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def listen_overflows():
    """TcpExt ListenOverflows of this thread's network namespace (netlab's
    Namespace.call runs it in a lab namespace): SYNs dropped because an
    accept queue was full (tells whether a backlog shaped the result)."""
    try:
        with open("/proc/thread-self/net/netstat") as f:
            lines = f.read().splitlines()
        for names, values in zip(lines[::2], lines[1::2]):
            if names.startswith("TcpExt:"):
                return int(dict(zip(names.split()[1:], values.split()[1:]))["ListenOverflows"])
    except (OSError, KeyError, ValueError):
        pass
    return None


# --------------------------------------------------------------------------
# Where the contenders run, and what the measuring client connects to


class Entry:
    """Where the measuring client connects to reach a service through a
    tunnel: a port on `host` (127.0.0.1, or the service's own IPv4 address
    when a VPN captures it) and, for a SOCKS forward (-D), the service's
    address to ask for (SOCKS5 CONNECT, no authentication)."""

    def __init__(self, port, socks_to=None, host="127.0.0.1"):
        self.host = host
        self.port = port
        self.socks_to = socks_to

    def exchanges(self):
        """(bytes to send, length of the answer) before the service's bytes:
        the SOCKS5 greeting and the CONNECT request. Both answers begin
        05 00 (no authentication; succeeded); the reply to CONNECT with an
        IPv4 bound address, which ssh -D and pytun send, is 10 bytes."""
        if self.socks_to is None:
            return []
        return [(b"\x05\x01\x00", 2), (socks_burst.connect_request(*self.socks_to), 10)]

    def connect(self, timeout):
        s = socket.create_connection((self.host, self.port), timeout=timeout)
        try:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for out, size in self.exchanges():
                s.sendall(out)
                check_socks_answer(services.recv_exact(s, size))
        except BaseException:
            s.close()
            raise
        return s


def check_socks_answer(answer):
    if answer[:2] != b"\x05\x00":
        raise PhaseError("SOCKS answer %s instead of 05 00 (success)" % answer.hex())


# --------------------------------------------------------------------------
# Client-side measurements


def _remaining(deadline):
    left = deadline - time.monotonic()
    if left <= 0:
        raise PhaseError("deadline exceeded")
    return left


def upload(entry, nbytes, deadline):
    """Send nbytes to the sink through entry; return seconds until the sink
    confirmed it received them all."""
    chunk = memoryview(os.urandom(services.CHUNK))
    t0 = time.perf_counter()
    with entry.connect(_remaining(deadline)) as s:
        s.sendall(HEADER.pack(nbytes))
        left = nbytes
        while left > 0:
            s.settimeout(min(_remaining(deadline), 30))
            n = min(left, len(chunk))
            s.sendall(chunk[:n])
            left -= n
        s.settimeout(_remaining(deadline))
        (got,) = HEADER.unpack(services.recv_exact(s, HEADER.size))
    elapsed = time.perf_counter() - t0
    if got != nbytes:
        raise PhaseError("sink received %d of %d bytes" % (got, nbytes))
    return elapsed


def download(entry, nbytes, deadline):
    """Ask the source for nbytes through entry; return seconds until all
    arrived."""
    view = memoryview(bytearray(services.CHUNK))
    t0 = time.perf_counter()
    with entry.connect(_remaining(deadline)) as s:
        s.sendall(HEADER.pack(nbytes))
        got = 0
        while got < nbytes:
            s.settimeout(min(_remaining(deadline), 30))
            r = s.recv_into(view, min(len(view), nbytes - got))
            if r == 0:
                raise PhaseError("source stream ended after %d of %d bytes" % (got, nbytes))
            got += r
    return time.perf_counter() - t0


def latency(entry, samples, deadline):
    """Sequential connect (and SOCKS exchange) + 32-byte echo + close; return
    a list of ms."""
    payload = os.urandom(32)
    out = []
    for _ in range(samples):
        t0 = time.perf_counter()
        with entry.connect(min(_remaining(deadline), 10)) as s:
            s.sendall(payload)
            echoed = services.recv_exact(s, 32)
        out.append((time.perf_counter() - t0) * 1000.0)
        if echoed != payload:
            raise PhaseError("echo returned different bytes")
    return out


def round_trips(entry, samples, deadline):
    """On one open connection: `samples` sequential 32-byte requests, each
    timed until its echo is back (the tunnel's per-message latency, without
    the connect); return a list of ms."""
    payload = os.urandom(32)
    out = []
    with entry.connect(min(_remaining(deadline), 10)) as s:
        for _ in range(samples):
            s.settimeout(min(_remaining(deadline), 10))
            t0 = time.perf_counter()
            s.sendall(payload)
            echoed = services.recv_exact(s, 32)
            out.append((time.perf_counter() - t0) * 1000.0)
            if echoed != payload:
                raise PhaseError("echo returned different bytes")
    return out


def percentile(values, p):
    """Nearest-rank percentile (p in 0..100)."""
    v = sorted(values)
    k = max(0, min(len(v) - 1, int(round(p / 100.0 * len(v) + 0.5)) - 1))
    return v[k]


def _exchange(sel, st, events):
    """One step of a connection's SOCKS exchanges (Entry.exchanges): send the
    next message once writable, then read its answer."""
    out, size = st["pre"][0]
    s = st["sock"]
    if not st["pre_sent"]:
        if events & selectors.EVENT_WRITE:
            s.sendall(out)  # a few bytes into an empty socket buffer
            st["pre_sent"] = True
            sel.modify(s, selectors.EVENT_READ, st)
        return
    if events & selectors.EVENT_READ:
        data = s.recv(size - len(st["answer"]))
        if not data:
            raise ConnectionError("closed during the SOCKS exchange")
        st["answer"] += data
        if len(st["answer"]) == size:
            if st["answer"][:2] != b"\x05\x00":
                raise ConnectionError("SOCKS answer %s" % st["answer"].hex())
            st["pre"].pop(0)
            st["answer"], st["pre_sent"] = b"", False
            sel.modify(s, selectors.EVENT_READ | selectors.EVENT_WRITE, st)


def concurrent(entry, nconn, size, deadline):
    """nconn simultaneous connections, each sending `size` bytes to the echo
    service while reading the echo back (after its SOCKS exchange, through
    -D); one thread, selectors. Returns (intact, failed, wall_seconds,
    completion_seconds)."""
    base = memoryview(os.urandom(size + 8 * 512))
    sel = selectors.DefaultSelector()
    conns = {}
    done_at = []  # seconds from start at which each connection completed
    t0 = time.perf_counter()
    for i in range(nconn):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = s.connect_ex((entry.host, entry.port))
        off = (i % 512) * 8  # a distinct payload per connection
        st = {"sock": s, "out": base[off:off + size], "sent": 0,
              "buf": bytearray(size), "got": 0, "ok": None,
              "pre": entry.exchanges(), "pre_sent": False, "answer": b""}
        if err not in (0, 115):  # EINPROGRESS
            st["ok"] = False
            s.close()
            continue
        conns[s.fileno()] = st
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, st)
    active = len(conns)
    while active and time.monotonic() < deadline:
        for key, events in sel.select(timeout=0.5):
            st = key.data
            s = st["sock"]
            try:
                if st["pre"]:
                    _exchange(sel, st, events)
                    continue
                if events & selectors.EVENT_WRITE and st["sent"] < size:
                    st["sent"] += s.send(st["out"][st["sent"]:st["sent"] + 256 * 1024])
                    if st["sent"] == size:
                        sel.modify(s, selectors.EVENT_READ, st)
                if events & selectors.EVENT_READ:
                    r = s.recv_into(memoryview(st["buf"])[st["got"]:])
                    if r == 0:
                        raise ConnectionError("closed early")
                    st["got"] += r
                    if st["got"] == size:
                        st["ok"] = st["buf"] == st["out"]
                        done_at.append(time.perf_counter() - t0)
                        sel.unregister(s)
                        s.close()
                        active -= 1
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                st["ok"] = False
                sel.unregister(s)
                s.close()
                active -= 1
    wall = time.perf_counter() - t0
    for st in conns.values():
        if st["ok"] is None:  # deadline hit
            st["ok"] = False
            try:
                sel.unregister(st["sock"])
            except (KeyError, ValueError):
                pass
            st["sock"].close()
    sel.close()
    intact = sum(1 for st in conns.values() if st["ok"])
    return intact, nconn - intact, wall, sorted(done_at)


def comm(pid):
    try:
        return Path("/proc/%d/comm" % pid).read_text().strip()
    except OSError:
        return ""


# --------------------------------------------------------------------------
# Fixture glue


class FixtureInfo:
    """What the contenders need from an sshd made by
    tests/support/sshd_fixture.py, reached at `host`."""

    def __init__(self, info, host="127.0.0.1"):
        self.info = info
        self.host = host
        self.port = int(info["port"])
        self.user = str(info["user"])
        self.key = info["key_ed25519"]
        self.known_hosts = info["known_hosts_bracketed"]
        self.ssh_args = list(sshd_fixture.ssh_base_args(info)) + [host]


def restrict_server_crypto(info):
    """Make sshd offer only CIPHER and MAC, so that pytun (which has no cipher
    option) negotiates the same algorithms that `ssh -c/-m` asks for.
    Prepended because sshd_config uses the first value it reads."""
    cfg = info.get("sshd_config")
    if not cfg or not os.path.isfile(cfg):
        return "sshd_config not found in fixture info; server crypto not restricted"
    text = Path(cfg).read_text()
    Path(cfg).write_text("Ciphers %s\nMACs %s\n%s" % (CIPHER, MAC, text))
    return "sshd restricted to Ciphers %s, MACs %s" % (CIPHER, MAC)


# --------------------------------------------------------------------------
# Tables: rows of strings, the first column a label, the others right-aligned


def text_table(head, rows):
    """Lines of a plain-text table."""
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    fmt = "  ".join("%%-%ds" % w if i == 0 else "%%%ds" % w for i, w in enumerate(widths))
    return [fmt % tuple(head), "  ".join("-" * w for w in widths)] + [fmt % tuple(r) for r in rows]


def markdown_table(head, rows):
    """Lines of a Markdown table; the last column (e.g. "better") left-aligned."""
    out = ["| %s |" % " | ".join(head), "|---|%s---|" % ("---:|" * (len(head) - 2))]
    return out + ["| %s |" % " | ".join(r) for r in rows]


# --------------------------------------------------------------------------
# Environment


def _cmd_output(args):
    try:
        p = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, timeout=5)
        return (p.stdout + p.stderr).decode(errors="replace").strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def environment(pytun_binary):
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    libssh2 = _cmd_output(["pkg-config", "--modversion", "libssh2"]) or "?"
    deb = _cmd_output(["dpkg-query", "-W", "-f", "${Version}", "libssh2-1"])
    if deb and "no packages" not in deb:
        libssh2 += " (Debian libssh2-1 %s)" % deb
    linked = version = ""
    if os.path.isfile(pytun_binary):
        m = re.search(r"(libssh2\S*) => (\S+)", _cmd_output(["ldd", str(pytun_binary)]))
        linked = ("uses " + m.group(2)) if m else "no dynamic libssh2"
        try:
            p = subprocess.run([str(pytun_binary), "--version"], stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=5)
            if p.returncode == 0 and p.stdout.strip():
                version = p.stdout.decode(errors="replace").strip().splitlines()[0]
        except (OSError, subprocess.TimeoutExpired):
            pass
    return {
        "openssh": _cmd_output(["ssh", "-V"]),
        "libssh2": libssh2,
        "pytun_libssh2": linked,
        "pytun_version": version,
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def parse_size(text):
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?)(?:i?B)?\s*", text, re.I)
    if not m:
        raise argparse.ArgumentTypeError("bad size: %r" % text)
    mult = {"": 1, "K": 1 << 10, "M": MiB, "G": GiB}[m.group(2).upper()]
    return int(float(m.group(1)) * mult)

