#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Benchmark pytun against the OpenSSH client (ssh -N -R) on loopback.
"""Compare pytun's reverse tunnel with ``ssh -N -R`` in one interleaved run.

Everything runs on 127.0.0.1: a throwaway sshd (tests/support/sshd_fixture.py)
is the bastion, bench/services.py provides sink, source and echo services, and
each contender forwards a bastion port to one of them. See bench/README.md.

Only the Python standard library is used.
"""

import argparse
import json
import os
import platform
import re
import selectors
import shutil
import signal
import socket
import statistics
import struct
import select
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
import services  # noqa: E402  (bench/services.py)

MiB = 1 << 20
GiB = 1 << 30
HEADER = struct.Struct(">Q")
CLK_TCK = os.sysconf("SC_CLK_TCK")
CIPHER = "aes128-ctr"
MAC = "hmac-sha2-256"
START_TIMEOUT = 15.0  # seconds for a tunnel to come up
STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL


def log(msg):
    sys.stderr.write("[bench %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


class PhaseError(Exception):
    """A phase did not finish correctly or in time; reported, not fatal."""


class StartError(PhaseError):
    """A contender's tunnel did not come up."""


# --------------------------------------------------------------------------
# Process bookkeeping: every process we start is registered here and ended by
# PID in cleanup(), whatever happens.

_PROCS = []


def spawn(args, **kw):
    proc = subprocess.Popen(args, **kw)
    _PROCS.append(proc)
    return proc


def stop_proc(proc, sig=signal.SIGTERM, timeout=STOP_TIMEOUT):
    """End one process we started, by PID; return its exit status."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    if proc in _PROCS:
        _PROCS.remove(proc)
    return proc.returncode


def cleanup_all():
    for proc in list(_PROCS):
        try:
            stop_proc(proc, timeout=2.0)
        except OSError:
            pass


# --------------------------------------------------------------------------
# /proc helpers


def cpu_seconds(pid):
    """utime + stime of a process (all its threads) in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


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


def tcp_listening(port, host="127.0.0.1"):
    """True if something listens on host:port (read from /proc/net/tcp, so
    checking does not open a connection through the tunnel)."""
    want = "%s:%04X" % ("".join("%02X" % int(b) for b in reversed(host.split("."))), port)
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                parts = line.split()
                if parts[1] == want and parts[3] == "0A":
                    return True
    except OSError:
        pass
    return False


def listen_overflows():
    """TcpExt ListenOverflows of this network namespace: SYNs dropped because
    an accept queue was full (tells whether a backlog shaped the result)."""
    try:
        with open("/proc/net/netstat") as f:
            lines = f.read().splitlines()
        for names, values in zip(lines[::2], lines[1::2]):
            if names.startswith("TcpExt:"):
                return int(dict(zip(names.split()[1:], values.split()[1:]))["ListenOverflows"])
    except (OSError, KeyError, ValueError):
        pass
    return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------
# Contenders


class Tunnel:
    """One running tunnel process forwarding bastion_port -> service_port."""

    def __init__(self, proc, bastion_port, stderr_path):
        self.proc = proc
        self.pid = proc.pid
        self.bastion_port = bastion_port
        self.stderr_path = stderr_path

    def stderr_tail(self, n=600):
        try:
            return Path(self.stderr_path).read_text(errors="replace")[-n:].strip()
        except OSError:
            return ""

    def stop(self):
        return stop_proc(self.proc)


class Contender:
    name = "?"

    def __init__(self, fx, workdir):
        self.fx = fx  # FixtureInfo
        self.workdir = workdir
        self.counter = 0
        self.consecutive_start_failures = 0
        self.notes = []

    def _stderr_file(self):
        self.counter += 1
        return os.path.join(self.workdir, "%s-%d.stderr" % (self.name, self.counter))

    def start(self, service_port):
        raise NotImplementedError

    def start_many(self, service_port, n):
        """Start n tunnels for the memory-per-tunnel phase; return a list of
        Tunnel objects, or None if the contender cannot do this (yet)."""
        return None

    def note(self, msg):
        if msg not in self.notes:
            self.notes.append(msg)
            log("%s: %s" % (self.name, msg))


class OpenSSH(Contender):
    name = "OpenSSH"

    def command(self, bastion_port, service_port):
        return [
            "ssh", "-N",
            "-R", "127.0.0.1:%d:127.0.0.1:%d" % (bastion_port, service_port),
            "-c", CIPHER, "-m", MAC,
            "-o", "ExitOnForwardFailure=yes",
            "-o", "ControlMaster=no", "-o", "ControlPath=none",
        ] + self.fx.ssh_args

    def _launch(self, service_port):
        port = free_port()
        err = self._stderr_file()
        proc = spawn(self.command(port, service_port), stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=open(err, "wb"))
        return Tunnel(proc, port, err)

    def _wait(self, tun, deadline):
        while time.monotonic() < deadline:
            if tun.proc.poll() is not None:
                raise StartError("ssh exited with %s: %s" % (tun.proc.returncode, tun.stderr_tail()))
            if tcp_listening(tun.bastion_port):
                return tun
            time.sleep(0.02)
        tun.stop()
        raise StartError("ssh: bastion port not listening after %.0f s" % START_TIMEOUT)

    def start(self, service_port):
        tun = self._launch(service_port)
        return self._wait(tun, time.monotonic() + START_TIMEOUT)

    def start_many(self, service_port, n):
        # Batches below sshd's default MaxStartups (10) so that no
        # unauthenticated connection is dropped.
        tunnels = []
        try:
            while len(tunnels) < n:
                batch = [self._launch(service_port) for _ in range(min(8, n - len(tunnels)))]
                tunnels.extend(batch)
                deadline = time.monotonic() + START_TIMEOUT
                for tun in batch:
                    self._wait(tun, deadline)
        except BaseException:
            for tun in tunnels:
                tun.stop()
            raise
        return tunnels


class Pytun(Contender):
    name = "pytun"

    def __init__(self, fx, workdir, binary, log_level=None):
        super().__init__(fx, workdir)
        self.binary = binary
        self.log_level = log_level

    def command(self, bastion_port, service_port):
        cmd = [
            str(self.binary),
            "--server-host", "127.0.0.1",
            "--server-port", str(self.fx.port),
            "--user", self.fx.user,
            "--key", self.fx.key,
            "--known-hosts", self.fx.known_hosts,
            "--bind-address", "127.0.0.1",
            "--listen-port", str(bastion_port),
            "--remote-host", "127.0.0.1",
            "--remote-port", str(service_port),
        ]
        if self.log_level:
            cmd += ["--log-level", self.log_level]
        return cmd

    def start(self, service_port):
        if not os.access(self.binary, os.X_OK):
            raise StartError("binary not found or not executable: %s" % self.binary)
        port = free_port()
        err = self._stderr_file()
        proc = spawn(self.command(port, service_port), stdin=subprocess.DEVNULL,
                     stdout=subprocess.PIPE, stderr=open(err, "wb"))
        tun = Tunnel(proc, port, err)
        ready = threading.Event()
        lines = []

        def drain():  # keeps reading so that a chatty stdout never blocks it
            for raw in proc.stdout:
                line = raw.decode(errors="replace").rstrip("\n")
                lines.append(line)
                if line == "READY listen_port=%d" % port:
                    ready.set()
        threading.Thread(target=drain, daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if ready.wait(0.02):
                return tun
            if proc.poll() is not None:
                ready.wait(0.2)  # let the drain thread catch a last line
                if ready.is_set():
                    break
                raise StartError("exited with %s before READY; stdout=%r stderr=%r"
                                 % (proc.returncode, lines[-3:], tun.stderr_tail()))
        tun.stop()
        raise StartError("no 'READY listen_port=%d' within %.0f s; stdout=%r stderr=%r"
                         % (port, START_TIMEOUT, lines[-3:], tun.stderr_tail()))

    def start_many(self, service_port, n):
        """All n tunnels in one process (bench/many_tunnels, a TunnelManager)."""
        binary = Path(self.binary).parent / "many_tunnels"
        if not os.access(binary, os.X_OK):
            binary = REPO_ROOT / "build" / "bench" / "many_tunnels"
        if not os.access(binary, os.X_OK):
            return None
        err = self._stderr_file()
        cmd = [str(binary), "--count", str(n),
               "--server-host", "127.0.0.1", "--server-port", str(self.fx.port),
               "--user", self.fx.user, "--key", self.fx.key, "--known-hosts", self.fx.known_hosts,
               "--remote-host", "127.0.0.1", "--remote-port", str(service_port)]
        proc = spawn(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=open(err, "wb"))
        tun = Tunnel(proc, 0, err)
        deadline = time.monotonic() + START_TIMEOUT + n * 0.2
        line = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 0.1)
            if ready:
                line = proc.stdout.readline()
                if line.startswith(b"READY count="):
                    return [tun]
            if proc.poll() is not None:
                break
        tun.stop()
        raise StartError("many_tunnels did not report READY for %d tunnels; stderr=%r" % (n, tun.stderr_tail()))


# --------------------------------------------------------------------------
# Client-side measurements


def _remaining(deadline):
    left = deadline - time.monotonic()
    if left <= 0:
        raise PhaseError("deadline exceeded")
    return left


def upload(port, nbytes, deadline):
    """Send nbytes to the sink through port; return seconds until the sink
    confirmed it received them all."""
    chunk = memoryview(os.urandom(services.CHUNK))
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=_remaining(deadline)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
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


def download(port, nbytes, deadline):
    """Ask the source for nbytes through port; return seconds until all
    arrived."""
    view = memoryview(bytearray(services.CHUNK))
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=_remaining(deadline)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(HEADER.pack(nbytes))
        got = 0
        while got < nbytes:
            s.settimeout(min(_remaining(deadline), 30))
            r = s.recv_into(view, min(len(view), nbytes - got))
            if r == 0:
                raise PhaseError("source stream ended after %d of %d bytes" % (got, nbytes))
            got += r
    return time.perf_counter() - t0


def latency(port, samples, deadline):
    """Sequential connect + 32-byte echo + close; return a list of ms."""
    payload = os.urandom(32)
    out = []
    for _ in range(samples):
        t0 = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port), timeout=min(_remaining(deadline), 10)) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
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


def concurrent(port, nconn, size, deadline):
    """nconn simultaneous connections, each sending `size` bytes to the echo
    service while reading the echo back; one thread, selectors. Returns
    (intact, failed, wall_seconds, completion_seconds)."""
    base = memoryview(os.urandom(size + 8 * 512))
    sel = selectors.DefaultSelector()
    conns = {}
    done_at = []  # seconds from start at which each connection completed
    t0 = time.perf_counter()
    for i in range(nconn):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = s.connect_ex(("127.0.0.1", port))
        off = (i % 512) * 8  # a distinct payload per connection
        st = {"sock": s, "out": base[off:off + size], "sent": 0,
              "buf": bytearray(size), "got": 0, "ok": None}
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


# --------------------------------------------------------------------------
# Phases for one contender in one run


def measure_transfer(contender, svc_port, direction, nbytes, phase_timeout):
    tun = contender.start(svc_port)
    try:
        deadline = time.monotonic() + phase_timeout
        cpu0 = cpu_seconds(tun.pid)
        fn = upload if direction == "up" else download
        secs = fn(tun.bastion_port, nbytes, deadline)
        cpu1 = cpu_seconds(tun.pid)
        if tun.proc.poll() is not None:
            raise PhaseError("tunnel process died during the transfer")
        return {"mib_s": nbytes / MiB / secs, "seconds": secs,
                "cpu_s_per_gib": (cpu1 - cpu0) / (nbytes / GiB)}
    finally:
        check_exit(contender, tun)


def check_exit(contender, tun):
    rc = tun.stop()
    if rc not in (0, -signal.SIGTERM, 255) and contender.name == "pytun":
        contender.note("exit status %s after SIGTERM (contract says 0)" % rc)
    elif rc == -signal.SIGTERM and contender.name == "pytun":
        contender.note("killed by SIGTERM instead of exiting 0 (no handler?)")


def measure_echo_phases(contender, echo_port, args):
    """Idle memory, then latency, then concurrency, on one tunnel."""
    res = {}
    tun = contender.start(echo_port)
    try:
        time.sleep(args.settle)  # let the process reach its idle state
        res["idle_rss_mib"] = status_kib(tun.pid, "VmRSS") / 1024.0
        pss = pss_kib(tun.pid)
        res["idle_pss_mib"] = pss / 1024.0 if pss is not None else None
        if "latency" in args.phases:
            try:
                ms = latency(tun.bastion_port, args.latency_samples,
                             time.monotonic() + args.latency_timeout)
                res["latency_p50_ms"] = percentile(ms, 50)
                res["latency_p99_ms"] = percentile(ms, 99)
                res["latency_samples_ms"] = [round(x, 4) for x in ms]
            except (OSError, PhaseError) as e:
                res["latency_error"] = str(e)
                log("%s latency failed: %s" % (contender.name, e))
        if "concurrent" in args.phases:
            try:
                ovf0 = listen_overflows()
                cpu0 = cpu_seconds(tun.pid)
                intact, failed, wall, done_at = concurrent(tun.bastion_port, args.concurrent, args.concurrent_bytes,
                                                  time.monotonic() + args.concurrent_timeout)
                ovf1 = listen_overflows()
                if tun.proc.poll() is None:
                    res["concurrent_cpu_s"] = cpu_seconds(tun.pid) - cpu0
                if ovf0 is not None and ovf1 is not None:
                    res["concurrent_listen_overflows"] = ovf1 - ovf0
                res["concurrent_intact"] = intact
                res["concurrent_wall_s"] = wall
                if done_at:
                    res["concurrent_completion_p50_s"] = percentile(done_at, 50)
                    res["concurrent_completion_p90_s"] = percentile(done_at, 90)
                if failed:
                    log("%s concurrent: %d of %d not intact" % (contender.name, failed, args.concurrent))
            except (OSError, PhaseError) as e:
                res["concurrent_error"] = str(e)
                log("%s concurrent failed: %s" % (contender.name, e))
            if tun.proc.poll() is None:
                res["peak_rss_mib"] = status_kib(tun.pid, "VmHWM") / 1024.0
    finally:
        check_exit(contender, tun)
    return res


def run_contender_once(contender, ports, args):
    res = {}
    try:
        if {"idle", "latency", "concurrent"} & set(args.phases):
            res.update(measure_echo_phases(contender, ports["echo"], args))
        for direction, svc in (("up", "sink"), ("down", "source")):
            if direction not in args.phases:
                continue
            try:
                r = measure_transfer(contender, ports[svc], direction, args.bytes, args.transfer_timeout)
                res[direction + "_mib_s"] = r["mib_s"]
                res[direction + "_cpu_s_per_gib"] = r["cpu_s_per_gib"]
                log("%s %s: %.1f MiB/s, %.2f CPU s/GiB" % (contender.name, direction, r["mib_s"], r["cpu_s_per_gib"]))
            except (OSError, PhaseError) as e:
                if isinstance(e, StartError):
                    raise
                res[direction + "_error"] = str(e)
                log("%s %s failed: %s" % (contender.name, direction, e))
        contender.consecutive_start_failures = 0
    except (OSError, PhaseError) as e:
        res["error"] = str(e)
        contender.consecutive_start_failures += 1
        log("%s failed: %s" % (contender.name, e))
    return res


def measure_rss_tunnels(contender, echo_port, counts):
    out = {}
    for n in counts:
        try:
            tunnels = contender.start_many(echo_port, n)
        except (OSError, PhaseError) as e:
            out[str(n)] = {"error": str(e)}
            log("%s: %d tunnels failed: %s" % (contender.name, n, e))
            continue
        if tunnels is None:
            out[str(n)] = None
            continue
        try:
            time.sleep(1.0)
            pids = sorted({t.pid for t in tunnels})
            rss = sum(status_kib(p, "VmRSS") for p in pids) / 1024.0
            pss = sum(pss_kib(p) or 0 for p in pids) / 1024.0
            out[str(n)] = {"rss_mib": rss, "pss_mib": pss, "processes": len(pids)}
            log("%s: %d tunnels: RSS %.1f MiB, PSS %.1f MiB in %d processes" % (contender.name, n, rss, pss, len(pids)))
        finally:
            for t in tunnels:
                t.stop()
    return out


def measure_command_memory(fx, tmp, binary, service_port, settle):
    """Idle memory of the `pytun` command itself with one tunnel: what an
    operator runs, with its status server, health checks and log files on
    (the configuration scripts/demo.py writes). Returns None if not built."""
    if not os.access(binary, os.X_OK):
        return None
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    import demo  # noqa: E402 (the one place that writes a demo installation)
    workdir = tempfile.mkdtemp(prefix="command-", dir=tmp)
    bastion_port = free_port()
    config = demo.write_config(workdir, fx.info, bastion_port, service_port, free_port())
    err = os.path.join(workdir, "stderr")
    proc = spawn([str(binary), "--config_ini", config], stdin=subprocess.DEVNULL,
                 stdout=subprocess.DEVNULL, stderr=open(err, "wb"))
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not tcp_listening(bastion_port):
            if time.monotonic() > deadline or proc.poll() is not None:
                return {"error": "no tunnel within %.0f s (exit %s)" % (START_TIMEOUT, proc.poll())}
            time.sleep(0.05)
        time.sleep(settle)
        res = {"rss_mib": status_kib(proc.pid, "VmRSS") / 1024.0, "pss_mib": (pss_kib(proc.pid) or 0) / 1024.0,
               "threads": len(os.listdir("/proc/%d/task" % proc.pid))}
        log("pytun command, 1 tunnel: RSS %.1f MiB, PSS %.1f MiB, %d threads"
            % (res["rss_mib"], res["pss_mib"], res["threads"]))
        return res
    finally:
        stop_proc(proc)


def measure_direct(ports, args):
    """The services without any tunnel: the ceiling of this setup."""
    nbytes = min(args.bytes, GiB)
    res = {}
    for direction, svc, fn in (("up", "sink", upload), ("down", "source", download)):
        try:
            res[direction + "_mib_s"] = nbytes / MiB / fn(ports[svc], nbytes, time.monotonic() + 60)
        except (OSError, PhaseError) as e:
            res[direction + "_error"] = str(e)
    try:
        ms = latency(ports["echo"], args.latency_samples, time.monotonic() + 30)
        res["latency_p50_ms"] = percentile(ms, 50)
        res["latency_p99_ms"] = percentile(ms, 99)
    except (OSError, PhaseError) as e:
        res["latency_error"] = str(e)
    return res


# --------------------------------------------------------------------------
# Fixture glue


class FixtureInfo:
    """What the contenders need from tests/support/sshd_fixture.py."""

    def __init__(self, fixture, info):
        self.info = info
        self.port = int(info["port"])
        self.user = str(info["user"])
        args = list(fixture.ssh_base_args(info))
        # The fixture's own key names first; the ssh arguments say the same.
        self.key = info.get("key_ed25519") or _arg_after(args, "-i")
        self.known_hosts = info.get("known_hosts_bracketed") or _opt_value(args, "UserKnownHostsFile")
        if not _has_destination(args):  # the fixture leaves the host to us
            args.append("127.0.0.1" if "-l" in args else "%s@127.0.0.1" % self.user)
        self.ssh_args = args
        if not self.key or not self.known_hosts:
            raise RuntimeError("cannot find user key / known_hosts in fixture info: %r" % info)


def _arg_after(args, flag):
    for i, a in enumerate(args[:-1]):
        if a == flag:
            return args[i + 1]
    return None


def _opt_value(args, name):
    for i, a in enumerate(args):
        val = args[i + 1] if a == "-o" and i + 1 < len(args) else (a[2:] if a.startswith("-o") else "")
        if val.lower().startswith(name.lower() + "="):
            return val.split("=", 1)[1].split()[0]
    return None


def _has_destination(args):
    return bool(args) and not args[-1].startswith("-") and ("@" in args[-1] or args[-1] in ("127.0.0.1", "localhost"))


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


def load_fixture():
    path = REPO_ROOT / "tests" / "support" / "sshd_fixture.py"
    if not path.is_file():
        raise SystemExit("bench: %s is missing (it comes from the test fixture branch)" % path)
    sys.path.insert(0, str(path.parent))
    import sshd_fixture
    return sshd_fixture


# --------------------------------------------------------------------------
# Environment and report


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


# (key, label, better, format)
METRICS = [
    ("up_mib_s", "upload MiB/s", "higher", "%.1f"),
    ("down_mib_s", "download MiB/s", "higher", "%.1f"),
    ("up_cpu_s_per_gib", "CPU s/GiB, upload", "lower", "%.2f"),
    ("down_cpu_s_per_gib", "CPU s/GiB, download", "lower", "%.2f"),
    ("latency_p50_ms", "connect+echo latency p50 ms", "lower", "%.3f"),
    ("latency_p99_ms", "connect+echo latency p99 ms", "lower", "%.3f"),
    ("concurrent_intact", "concurrent conns intact", "higher", "%d"),
    ("concurrent_wall_s", "concurrent wall time s", "lower", "%.2f"),
    ("concurrent_cpu_s", "concurrent: CPU s of the contender", "lower", "%.2f"),
    ("concurrent_listen_overflows", "concurrent: listen-queue overflows", "lower", "%d"),
    ("idle_rss_mib", "idle RSS MiB (1 tunnel)", "lower", "%.2f"),
    ("idle_pss_mib", "idle PSS MiB (1 tunnel)", "lower", "%.2f"),
    ("peak_rss_mib", "peak RSS MiB (after concurrent)", "lower", "%.2f"),
]


def medians(runs):
    out = {}
    for key, *_ in METRICS:
        vals = [r[key] for r in runs if r.get(key) is not None]
        out[key] = statistics.median(vals) if vals else None
    return out


def build_rows(results, args):
    names = [c for c in ("pytun", "OpenSSH") if c in results["contenders"]]
    med = {n: results["contenders"][n]["median"] for n in names}
    rows = []
    for key, label, better, fmt in METRICS:
        if (key.startswith("concurrent") or key == "peak_rss_mib") and "concurrent" not in args.phases:
            continue
        if key.startswith(("up_", "down_")) and key.split("_")[0] not in args.phases:
            continue
        if key.startswith("latency") and "latency" not in args.phases:
            continue
        if key == "concurrent_intact":
            label = "concurrent conns intact (of %d x %d KiB)" % (args.concurrent, args.concurrent_bytes // 1024)
        cells = []
        for n in ("pytun", "OpenSSH"):
            v = med.get(n, {}).get(key) if n in med else None
            cells.append(fmt % v if v is not None else ("failed" if n in med else "-"))
        p, o = med.get("pytun", {}).get(key), med.get("OpenSSH", {}).get(key)
        ratio = "%.2f" % (p / o) if p is not None and o else "-"
        rows.append((label, cells[0], cells[1], ratio, better))
    rss = results.get("rss_tunnels", {})
    for n in sorted({k for per in rss.values() for k in per}, key=int):
        pvals = rss.get("pytun", {}).get(n)
        vals = rss.get("OpenSSH", {}).get(n)
        for what in ("rss_mib", "pss_mib"):
            def cell(v):
                if v is None:
                    return "n/a"
                if "error" in v:
                    return "failed"
                return "%.1f" % v[what]
            p_ok = pvals and "error" not in pvals
            o_ok = vals and "error" not in vals
            ratio = "%.2f" % (pvals[what] / vals[what]) if p_ok and o_ok and vals[what] else "-"
            rows.append(("%s MiB, %s tunnel(s)" % (what[:3].upper(), n),
                         cell(pvals) if "pytun" in rss else "-", cell(vals) if "OpenSSH" in rss else "-",
                         ratio, "lower"))
    cmd = results.get("command_memory")
    if cmd is not None:
        ssh = med.get("OpenSSH", {})
        for what, key in (("RSS", "idle_rss_mib"), ("PSS", "idle_pss_mib")):
            v = cmd.get(what.lower() + "_mib")
            o = ssh.get(key)
            rows.append(("idle %s MiB, the pytun command (1 tunnel)" % what, "%.2f" % v if v is not None else "failed",
                         "%.2f" % o if o is not None else "-", "%.2f" % (v / o) if v is not None and o else "-",
                         "lower"))
    return rows


def render_text(results, args):
    rows = build_rows(results, args)
    head = ("metric", "pytun", "OpenSSH", "pytun/OpenSSH", "better")
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(5)]
    lines = []
    fmt = "  ".join("%%-%ds" % w if i == 0 else "%%%ds" % w for i, w in enumerate(widths))
    lines.append(fmt % head)
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append(fmt % r)
    lines.append("")
    lines.extend(describe(results, args))
    return "\n".join(lines)


def render_markdown(results, args):
    rows = build_rows(results, args)
    out = ["| metric | pytun | OpenSSH | pytun/OpenSSH | better |",
           "|---|---:|---:|---:|---|"]
    for r in rows:
        out.append("| %s |" % " | ".join(r))
    out.append("")
    out.extend("- " + line for line in describe(results, args) if line)
    return "\n".join(out) + "\n"


def describe(results, args):
    env = results["environment"]
    d = results.get("direct", {})
    lines = [
        "Medians of %d interleaved run(s); %s MiB per transfer; ratio = pytun/OpenSSH "
        "(throughput: >1 means pytun is faster; latency, CPU, memory: <1 means pytun uses less)."
        % (args.runs, args.bytes // MiB),
        "OpenSSH client: ssh -N -R ... -c %s -m %s. %s." % (CIPHER, MAC, results.get("server_crypto", "")),
        "Versions: %s; libssh2 %s%s%s." % (
            env["openssh"], env["libssh2"],
            ("; pytun: " + env["pytun_version"]) if env.get("pytun_version") else "",
            (" (binary %s)" % env["pytun_libssh2"]) if env.get("pytun_libssh2") else ""),
        "Machine: %d CPUs, %s, Linux %s, Python %s." % (env["nproc"], env["cpu"], env["kernel"], env["python"]),
    ]
    if d:
        def f(k, fmt):
            return fmt % d[k] if d.get(k) is not None else "failed"
        lines.append("Services alone, no tunnel (the ceiling of this setup): upload %s MiB/s, download %s MiB/s, "
                     "latency p50 %s ms." % (f("up_mib_s", "%.0f"), f("down_mib_s", "%.0f"), f("latency_p50_ms", "%.3f")))
        for key in ("up_mib_s", "down_mib_s"):
            best = max([c["median"].get(key) or 0 for c in results["contenders"].values()] + [0])
            if d.get(key) and best and d[key] < 2 * best:
                lines.append("WARNING: the services alone reached only %.0f MiB/s (%s), less than twice the best "
                             "tunnel (%.0f MiB/s): the machine is busy or the services limit the result."
                             % (d[key], key.split("_")[0], best))
    for name, c in results["contenders"].items():
        errs = sorted({v for r in c["runs"] for k, v in r.items() if k.endswith("error")})
        for e in errs:
            lines.append("%s error: %s" % (name, e))
        for n in c.get("notes", []):
            lines.append("%s note: %s" % (name, n))
    return lines


# --------------------------------------------------------------------------


def parse_size(text):
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?)(?:i?B)?\s*", text, re.I)
    if not m:
        raise argparse.ArgumentTypeError("bad size: %r" % text)
    mult = {"": 1, "K": 1 << 10, "M": MiB, "G": GiB}[m.group(2).upper()]
    return int(float(m.group(1)) * mult)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pytun", default=str(REPO_ROOT / "build" / "bench" / "reverse_tunnel"),
                    help="reverse_tunnel binary (default: build/bench/reverse_tunnel, examples/reverse_tunnel.cpp linked as bench/meson.build says)")
    ap.add_argument("--command", default=str(REPO_ROOT / "build" / "tools" / "pytun" / "pytun"),
                    help="the pytun command, for its idle memory with one tunnel (skipped if not built)")
    ap.add_argument("--pytun-log-level", default=None, help="passed as --log-level to pytun")
    ap.add_argument("--contenders", default="pytun,ssh", help="comma list of pytun,ssh (default both)")
    ap.add_argument("--runs", type=int, default=3, help="interleaved runs; medians are reported (default 3)")
    ap.add_argument("--bytes", type=parse_size, default=GiB, help="bytes per transfer, e.g. 1G, 64M (default 1G)")
    ap.add_argument("--latency-samples", type=int, default=200)
    ap.add_argument("--concurrent", type=int, default=500, help="simultaneous connections (default 500)")
    ap.add_argument("--concurrent-bytes", type=parse_size, default=256 * 1024, help="echoed per connection (256K)")
    ap.add_argument("--phases", default="idle,latency,concurrent,up,down",
                    help="comma list of idle,latency,concurrent,up,down (default all)")
    ap.add_argument("--rss-tunnels", default="",
                    help="also measure memory for N tunnels, e.g. 1,10,100 (OpenSSH: N ssh processes summed)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 64 MiB, 1 run, 50 latency samples, 100 concurrent")
    ap.add_argument("--no-direct", action="store_true", help="skip measuring the services without a tunnel")
    ap.add_argument("--no-restrict-crypto", action="store_true",
                    help="do not restrict sshd to %s/%s" % (CIPHER, MAC))
    ap.add_argument("--min-rate", type=float, default=5.0,
                    help="MiB/s below which a transfer is abandoned (sets its deadline; default 5)")
    ap.add_argument("--settle", type=float, default=0.5, help="seconds to wait before reading idle memory")
    ap.add_argument("--json", metavar="FILE", help="write raw results as JSON")
    ap.add_argument("--markdown", metavar="FILE", help="write the table as Markdown")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temporary directory (logs)")
    args = ap.parse_args(argv)
    if args.quick:
        args.bytes, args.runs, args.latency_samples, args.concurrent = 64 * MiB, 1, 50, 100
    args.phases = [p for p in args.phases.split(",") if p]
    args.contenders = [c for c in args.contenders.split(",") if c]
    bad = set(args.phases) - {"idle", "latency", "concurrent", "up", "down"}
    bad |= set(args.contenders) - {"pytun", "ssh"}
    if bad:
        ap.error("unknown phase/contender: %s" % ", ".join(sorted(bad)))
    args.rss_tunnels = [int(n) for n in args.rss_tunnels.split(",") if n]
    args.transfer_timeout = 20.0 + args.bytes / MiB / args.min_rate
    args.latency_timeout = 10.0 + args.latency_samples * 0.5
    args.concurrent_timeout = 30.0 + args.concurrent * args.concurrent_bytes / MiB / args.min_rate
    return args


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt("SIGTERM")


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    fixture = load_fixture()
    tmp = tempfile.mkdtemp(prefix="pytun-bench-")
    results = {"args": {k: v for k, v in vars(args).items()}, "environment": environment(args.pytun),
               "contenders": {}}
    svc_proc = None
    try:
        svc_proc = spawn([sys.executable, str(BENCH_DIR / "services.py")], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE)
        line = svc_proc.stdout.readline()
        if not line:
            raise SystemExit("bench: services did not start")
        ports = json.loads(line)
        log("services on 127.0.0.1: %s" % ports)

        info = fixture.prepare(os.path.join(tmp, "sshd"))
        if not args.no_restrict_crypto:
            results["server_crypto"] = restrict_server_crypto(info)
        spawned_sshd = fixture.start_sshd(info)
        _PROCS.append(spawned_sshd)
        fx = FixtureInfo(fixture, info)
        log("sshd on 127.0.0.1:%d (pid %d)" % (fx.port, spawned_sshd.pid))

        if not args.no_direct:
            results["direct"] = measure_direct(ports, args)
            log("services alone: %s" % {k: round(v, 3) if isinstance(v, float) else v
                                        for k, v in results["direct"].items()})

        contenders = []
        if "pytun" in args.contenders:
            contenders.append(Pytun(fx, tmp, Path(args.pytun), args.pytun_log_level))
        if "ssh" in args.contenders:
            contenders.append(OpenSSH(fx, tmp))
        for c in contenders:
            results["contenders"][c.name] = {"runs": [], "command": c.command(0, 0)}

        for i in range(args.runs):
            for c in contenders:  # interleaved: pytun, ssh, pytun, ssh, ...
                if c.consecutive_start_failures >= 2:
                    c.note("skipped after repeated start failures")
                    continue
                log("run %d/%d: %s" % (i + 1, args.runs, c.name))
                results["contenders"][c.name]["runs"].append(run_contender_once(c, ports, args))

        if "pytun" in args.contenders and "idle" in args.phases:
            results["command_memory"] = measure_command_memory(fx, tmp, Path(args.command), ports["echo"],
                                                               max(args.settle, 1.0))

        if args.rss_tunnels:
            results["rss_tunnels"] = {}
            for c in contenders:
                results["rss_tunnels"][c.name] = measure_rss_tunnels(c, ports["echo"], args.rss_tunnels)

        for c in contenders:
            entry = results["contenders"][c.name]
            entry["median"] = medians(entry["runs"])
            entry["notes"] = c.notes

        text = render_text(results, args)
        print(text)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
        if args.markdown:
            Path(args.markdown).write_text(render_markdown(results, args))
        return 0
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        if svc_proc is not None and svc_proc.stdin:
            try:
                svc_proc.stdin.close()
            except OSError:
                pass
        cleanup_all()
        if args.keep_tmp:
            log("kept %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
