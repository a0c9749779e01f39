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
import shutil
import signal
import socket
import statistics
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
sys.path.insert(0, str(REPO_ROOT / "tests" / "support"))
import socks_burst  # noqa: E402  (tests/support/socks_burst.py)
import sshd_fixture  # noqa: E402  (tests/support/sshd_fixture.py)
from measure import (  # noqa: E402  (bench/measure.py: what run.py and vpn.py share)
    CIPHER, GiB, MAC, MiB, START_TIMEOUT, Entry, FixtureInfo, PhaseError, StartError, comm, concurrent,
    cpu_seconds, download, environment, latency, listen_overflows, log, markdown_table, parse_size, percentile,
    pss_kib, restrict_server_crypto, status_kib, text_table, upload)

STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL


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
# Loopback helpers


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


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Site:
    """Where contenders run and the bastion they use: the loopback sshd, or
    the network lab's client namespace (see LabSite)."""

    def __init__(self, fx, spawn_fn, stop_fn, listening_fn):
        self.fx = fx
        self.spawn = spawn_fn
        self.stop = stop_fn
        self.listening = listening_fn


class Tunnel:
    """One running contender process and the entry its tunnel offers."""

    def __init__(self, proc, entry, stderr_path, site):
        self.proc = proc
        self.pid = proc.pid
        self.entry = entry
        self.stderr_path = stderr_path
        self.site = site

    def stderr_tail(self, n=600):
        try:
            return Path(self.stderr_path).read_text(errors="replace")[-n:].strip()
        except OSError:
            return ""

    def stop(self):
        return self.site.stop(self.proc)


KIND_FLAG = {"R": "-R", "L": "-L", "D": "-D"}


def forward_argument(kind, entry_port, target):
    """OpenSSH's (and `pytun forward`'s) spelling of one forward."""
    if kind == "D":
        return "127.0.0.1:%d" % entry_port
    return "127.0.0.1:%d:%s:%d" % (entry_port, target[0], target[1])


class Contender:
    name = "?"
    kinds = ("R", "L", "D")

    def __init__(self, workdir):
        self.workdir = workdir
        self.counter = 0
        self.consecutive_start_failures = 0
        self.notes = []

    def _stderr_file(self):
        self.counter += 1
        return os.path.join(self.workdir, "%s-%d.stderr" % (self.name, self.counter))

    def command(self, kind, entry_port, target, fx):
        raise NotImplementedError

    def start(self, kind, target, site):
        """A fresh tunnel of `kind` to target (host, port), ready to use."""
        tun = self._launch(kind, target, site)
        return self._wait_listening(tun, time.monotonic() + START_TIMEOUT)

    def _launch(self, kind, target, site):
        port = free_port()
        err = self._stderr_file()
        proc = site.spawn(self.command(kind, port, target, site.fx), stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=open(err, "wb"))
        return Tunnel(proc, Entry(port, target if kind == "D" else None), err, site)

    def _wait_listening(self, tun, deadline):
        """Ready when the entry port listens (read from /proc/net/tcp, so the
        check opens no connection through the tunnel)."""
        while time.monotonic() < deadline:
            if tun.proc.poll() is not None:
                raise StartError("%s exited with %s: %s" % (self.name, tun.proc.returncode, tun.stderr_tail()))
            if tun.site.listening(tun.entry.port):
                return tun
            time.sleep(0.02)
        tun.stop()
        raise StartError("%s: port %d not listening after %.0f s" % (self.name, tun.entry.port, START_TIMEOUT))

    def start_many(self, service_port, n):
        """Start n reverse tunnels for the memory-per-tunnel phase; return a
        list of Tunnel objects, or None if the contender cannot do this."""
        return None

    def note(self, msg):
        if msg not in self.notes:
            self.notes.append(msg)
            log("%s: %s" % (self.name, msg))


class OpenSSH(Contender):
    name = "OpenSSH"

    def command(self, kind, entry_port, target, fx):
        return [
            "ssh", "-N", KIND_FLAG[kind], forward_argument(kind, entry_port, target),
            "-c", CIPHER, "-m", MAC,
            "-o", "ExitOnForwardFailure=yes",
            "-o", "ControlMaster=no", "-o", "ControlPath=none",
        ] + fx.ssh_args

    def start_many(self, service_port, n):
        # Batches below sshd's default MaxStartups (10) so that no
        # unauthenticated connection is dropped.
        tunnels = []
        try:
            while len(tunnels) < n:
                batch = [self._launch("R", ("127.0.0.1", service_port), LOOPBACK)
                         for _ in range(min(8, n - len(tunnels)))]
                tunnels.extend(batch)
                deadline = time.monotonic() + START_TIMEOUT
                for tun in batch:
                    self._wait_listening(tun, deadline)
        except BaseException:
            for tun in tunnels:
                tun.stop()
            raise
        return tunnels


class Pytun(Contender):
    """-R: the engine program (examples/reverse_tunnel.cpp, --pytun, or the
    pre-refactor one, --baseline); -L and -D: the `pytun forward` command
    (--command), as a user runs it."""

    def __init__(self, workdir, binary, command=None, log_level=None, forward_args=(), name="pytun"):
        self.name = name
        super().__init__(workdir)
        self.binary = binary
        self.command_binary = command
        self.log_level = log_level
        self.forward_args = list(forward_args)
        self.kinds = ("R", "L", "D") if command is not None else ("R",)

    def command(self, kind, entry_port, target, fx):
        if kind != "R":
            return [str(self.command_binary), "forward", "-r", "%s@%s:%d" % (fx.user, fx.host, fx.port),
                    "-i", fx.key, "--known-hosts", fx.known_hosts, *self.forward_args,
                    KIND_FLAG[kind], forward_argument(kind, entry_port, target)]
        cmd = [
            str(self.binary),
            "--server-host", fx.host,
            "--server-port", str(fx.port),
            "--user", fx.user,
            "--key", fx.key,
            "--known-hosts", fx.known_hosts,
            "--bind-address", "127.0.0.1",
            "--listen-port", str(entry_port),
            "--remote-host", target[0],
            "--remote-port", str(target[1]),
        ]
        if self.log_level:
            cmd += ["--log-level", self.log_level]
        return cmd

    def start(self, kind, target, site):
        binary = self.binary if kind == "R" else self.command_binary
        if not os.access(binary, os.X_OK):
            raise StartError("binary not found or not executable: %s" % binary)
        if kind != "R":
            return super().start(kind, target, site)
        # The engine program says when its bastion port listens.
        port = free_port()
        err = self._stderr_file()
        proc = site.spawn(self.command(kind, port, target, site.fx), stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=open(err, "wb"))
        tun = Tunnel(proc, Entry(port), err, site)
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
        fx = LOOPBACK.fx
        err = self._stderr_file()
        cmd = [str(binary), "--count", str(n),
               "--server-host", fx.host, "--server-port", str(fx.port),
               "--user", fx.user, "--key", fx.key, "--known-hosts", fx.known_hosts,
               "--remote-host", "127.0.0.1", "--remote-port", str(service_port)]
        proc = spawn(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=open(err, "wb"))
        tun = Tunnel(proc, Entry(0), err, LOOPBACK)
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
# Phases for one contender in one run


def loopback_target(port):
    return ("127.0.0.1", port)


def measure_transfer(contender, kind, svc_port, direction, nbytes, phase_timeout):
    tun = contender.start(kind, loopback_target(svc_port), LOOPBACK)
    try:
        deadline = time.monotonic() + phase_timeout
        cpu0 = cpu_seconds(tun.pid)
        fn = upload if direction == "up" else download
        secs = fn(tun.entry, nbytes, deadline)
        cpu1 = cpu_seconds(tun.pid)
        if tun.proc.poll() is not None:
            raise PhaseError("tunnel process died during the transfer")
        return {"mib_s": nbytes / MiB / secs, "seconds": secs,
                "cpu_s_per_gib": (cpu1 - cpu0) / (nbytes / GiB)}
    finally:
        check_exit(contender, tun)


def check_exit(contender, tun):
    rc = tun.stop()
    if isinstance(contender, Pytun):
        if rc == -signal.SIGTERM:
            contender.note("killed by SIGTERM instead of exiting 0 (no handler?)")
        elif rc not in (0, -signal.SIGTERM, 255):
            contender.note("exit status %s after SIGTERM (contract says 0)" % rc)


def measure_echo_phases(contender, kind, echo_port, args):
    """Idle memory, then latency, then concurrency, on one tunnel."""
    res = {}
    tun = contender.start(kind, loopback_target(echo_port), LOOPBACK)
    try:
        time.sleep(args.settle)  # let the process reach its idle state
        res["idle_rss_mib"] = status_kib(tun.pid, "VmRSS") / 1024.0
        pss = pss_kib(tun.pid)
        res["idle_pss_mib"] = pss / 1024.0 if pss is not None else None
        if "latency" in args.phases:
            try:
                ms = latency(tun.entry, args.latency_samples, time.monotonic() + args.latency_timeout)
                res["latency_p50_ms"] = percentile(ms, 50)
                res["latency_p99_ms"] = percentile(ms, 99)
                res["latency_samples_ms"] = [round(x, 4) for x in ms]
            except (OSError, PhaseError) as e:
                res["latency_error"] = str(e)
                log("%s %s latency failed: %s" % (contender.name, kind, e))
        if "concurrent" in args.phases:
            try:
                ovf0 = listen_overflows()
                cpu0 = cpu_seconds(tun.pid)
                intact, failed, wall, done_at = concurrent(tun.entry, args.concurrent, args.concurrent_bytes,
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
                    log("%s %s concurrent: %d of %d not intact" % (contender.name, kind, failed, args.concurrent))
            except (OSError, PhaseError) as e:
                res["concurrent_error"] = str(e)
                log("%s %s concurrent failed: %s" % (contender.name, kind, e))
            if tun.proc.poll() is None:
                res["peak_rss_mib"] = status_kib(tun.pid, "VmHWM") / 1024.0
    finally:
        check_exit(contender, tun)
    return res


class LabSite(Site):
    """The network lab for the burst (tests/support/netlab.py): client --
    bastion (sshd behind a delay relay, delay_ms each way) -- lan (echo).
    Built once per run; each contender gets a fresh process in the client
    namespace per run. The bastion is a stock one where it matters: OpenSSH's
    default MaxStartups (10:30:100; the test fixture raises it) and the same
    cipher and MAC as on loopback."""

    def __init__(self, args):
        import netlab  # needs root: imported only when the burst runs
        self.lab = netlab.Lab()
        try:
            self.topo = topo = self.lab.ssh_topology(delay_ms=args.burst_delay_ms)
            topo.stop_sshd()
            config = Path(topo.sshd["sshd_config"])
            config.write_text("MaxStartups 10:30:100\n" + config.read_text())
            if not args.no_restrict_crypto:
                restrict_server_crypto(topo.sshd)
            topo.start_sshd()
            self.destination = (topo.lan_ip, topo.echo_port)
            fx = FixtureInfo(topo.sshd, topo.ssh_host)
            super().__init__(fx, topo.client.spawn, topo.client.stop, topo.client.listening)
        except BaseException:
            self.lab.close()
            raise

    def close(self):
        self.lab.close()

    def burst(self, port, count):
        """socks_burst.py as its own process in the client namespace (its
        timing is not disturbed by this one's threads); its JSON result."""
        r = self.topo.client.run([sys.executable, socks_burst.__file__, "--proxy", "127.0.0.1:%d" % port,
                                  "--to", "%s:%d" % self.destination, "-n", str(count)], check=False)
        try:
            return json.loads(r.stdout)
        except ValueError:
            raise PhaseError("socks_burst.py printed no result (exit %s): %s" % (r.returncode, r.stderr.strip()))

    def bastion_cost(self):
        """The bastion's SSH connections, and its sshd processes with their
        memory, the listener not counted."""
        pids = [p for p in self.topo.bastion.pids() if p != self.topo.sshd_proc.pid and comm(p) == "sshd"]
        return {"sessions": self.topo.sshd_connections(), "processes": len(pids),
                "rss_mib": sum(status_kib(p, "VmRSS") or 0 for p in pids) / 1024.0,
                "pss_mib": sum(pss_kib(p) or 0 for p in pids) / 1024.0}


def measure_burst(contender, lab, args):
    """The latency burst at delay_ms each way: a fresh -D tunnel in the lab,
    one warm-up connection, single sequential connections, then a burst of
    --burst connections started together (cold: pytun's pool holds only its
    own session) and a second one at once (warm: the pool has grown); the
    bastion's sshd processes before and after; how long until the bastion is
    back to one connection."""
    res = {}
    tun = contender.start("D", lab.destination, lab)
    try:
        if lab.burst(tun.entry.port, 1)["failed"]:
            raise PhaseError("the warm-up connection through %s -D failed" % contender.name)
        singles = [lab.burst(tun.entry.port, 1)["min_ms"] for _ in range(args.burst_singles)]
        if None in singles:
            raise PhaseError("a single connection through %s -D failed" % contender.name)
        res["burst_single_ms"] = statistics.median(singles)
        before = lab.bastion_cost()
        res["burst_idle_processes"] = before["processes"]
        res["burst_load"] = os.getloadavg()[0]
        cold = lab.burst(tun.entry.port, args.burst)
        after = lab.bastion_cost()
        warm = lab.burst(tun.entry.port, args.burst)
        settled_at = time.monotonic()
        after_warm = lab.bastion_cost()
        if after_warm["processes"] > after["processes"]:
            after = after_warm
        for prefix, r in (("burst", cold), ("burst_warm", warm)):
            res[prefix + "_p50_ms"] = r["p50_ms"]
            res[prefix + "_p99_ms"] = r["p99_ms"]
            res[prefix + "_failed"] = r["failed"]
            res[prefix + "_times_ms"] = r["times_ms"]
        res["burst_sessions"] = after["sessions"]
        res["burst_processes"] = after["processes"]
        res["burst_rss_mib"] = after["rss_mib"]
        res["burst_pss_mib"] = after["pss_mib"]
        log("%s -D burst of %d at %g ms RTT: p50 %s ms, p99 %s ms, failed %d; warm p99 %s ms; single %.1f ms; "
            "bastion %d sessions, %d sshd processes, RSS %.0f MiB (load %.1f)"
            % (contender.name, args.burst, 2 * args.burst_delay_ms, cold["p50_ms"], cold["p99_ms"], cold["failed"],
               warm["p99_ms"], res["burst_single_ms"], after["sessions"], after["processes"], after["rss_mib"],
               res["burst_load"]))
        if after["sessions"] <= before["sessions"]:
            res["burst_linger_s"] = 0.0  # nothing extra to wait for (ssh -D: one connection throughout)
        elif args.burst_linger > 0:
            # Extra sessions close after the pool's idle timeout (the reap
            # timer adds up to its interval).
            deadline = settled_at + args.burst_linger
            while lab.topo.sshd_connections() > before["sessions"] and time.monotonic() < deadline:
                time.sleep(0.2)
            if lab.topo.sshd_connections() <= before["sessions"]:
                res["burst_linger_s"] = time.monotonic() - settled_at
            else:
                contender.note("extra sessions still open %.0f s after the burst" % args.burst_linger)
    finally:
        check_exit(contender, tun)
    return res


def run_contender_once(contender, kind, ports, args, lab):
    res = {}
    try:
        if {"idle", "latency", "concurrent"} & set(args.phases):
            res.update(measure_echo_phases(contender, kind, ports["echo"], args))
        for direction, svc in (("up", "sink"), ("down", "source")):
            if direction not in args.phases:
                continue
            try:
                r = measure_transfer(contender, kind, ports[svc], direction, args.bytes, args.transfer_timeout)
                res[direction + "_mib_s"] = r["mib_s"]
                res[direction + "_cpu_s_per_gib"] = r["cpu_s_per_gib"]
                log("%s %s %s: %.1f MiB/s, %.2f CPU s/GiB"
                    % (contender.name, KIND_FLAG[kind], direction, r["mib_s"], r["cpu_s_per_gib"]))
            except (OSError, PhaseError) as e:
                if isinstance(e, StartError):
                    raise
                res[direction + "_error"] = str(e)
                log("%s %s %s failed: %s" % (contender.name, KIND_FLAG[kind], direction, e))
        if kind == "D" and "burst" in args.phases and lab is not None:
            try:
                res.update(measure_burst(contender, lab, args))
            except (OSError, PhaseError) as e:
                if isinstance(e, StartError):
                    raise
                res["burst_error"] = str(e)
                log("%s -D burst failed: %s" % (contender.name, e))
        contender.consecutive_start_failures = 0
    except (OSError, PhaseError) as e:
        res["error"] = str(e)
        contender.consecutive_start_failures += 1
        log("%s %s failed: %s" % (contender.name, KIND_FLAG[kind], e))
    res["load_average"] = os.getloadavg()[0]
    return res


def measure_rss_tunnels(contender, echo_port, counts, idle_seconds):
    """Memory of N tunnels, and the CPU they take while idle (keepalives, health checks, timers)
    over `idle_seconds`, in % of one core."""
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
            if idle_seconds > 0:
                cpu0, t0 = sum(cpu_seconds(p) for p in pids), time.monotonic()
                time.sleep(idle_seconds)
                cpu = sum(cpu_seconds(p) for p in pids) - cpu0
                out[str(n)]["idle_cpu_percent"] = 100.0 * cpu / (time.monotonic() - t0)
            log("%s: %d tunnels: RSS %.1f MiB, PSS %.1f MiB in %d processes, idle CPU %s %% of a core"
                % (contender.name, n, rss, pss, len(pids), "%.2f" % out[str(n)]["idle_cpu_percent"]
                   if "idle_cpu_percent" in out[str(n)] else "-"))
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
            res[direction + "_mib_s"] = nbytes / MiB / fn(Entry(ports[svc]), nbytes, time.monotonic() + 60)
        except (OSError, PhaseError) as e:
            res[direction + "_error"] = str(e)
    try:
        ms = latency(Entry(ports["echo"]), args.latency_samples, time.monotonic() + 30)
        res["latency_p50_ms"] = percentile(ms, 50)
        res["latency_p99_ms"] = percentile(ms, 99)
    except (OSError, PhaseError) as e:
        res["latency_error"] = str(e)
    return res


# (key, label, better, format, phase): a row shows when its phase ran. The
# burst rows belong to -D only; labels with {n} and {rtt} name the burst.
METRICS = [
    ("up_mib_s", "upload MiB/s", "higher", "%.1f", "up"),
    ("down_mib_s", "download MiB/s", "higher", "%.1f", "down"),
    ("up_cpu_s_per_gib", "CPU s/GiB, upload", "lower", "%.2f", "up"),
    ("down_cpu_s_per_gib", "CPU s/GiB, download", "lower", "%.2f", "down"),
    ("latency_p50_ms", "connect+echo latency p50 ms", "lower", "%.3f", "latency"),
    ("latency_p99_ms", "connect+echo latency p99 ms", "lower", "%.3f", "latency"),
    ("concurrent_intact", "concurrent conns intact", "higher", "%d", "concurrent"),
    ("concurrent_wall_s", "concurrent wall time s", "lower", "%.2f", "concurrent"),
    ("concurrent_cpu_s", "concurrent: CPU s of the contender", "lower", "%.2f", "concurrent"),
    ("concurrent_listen_overflows", "concurrent: listen-queue overflows", "lower", "%d", "concurrent"),
    ("idle_rss_mib", "idle RSS MiB (1 tunnel)", "lower", "%.2f", "idle"),
    ("idle_pss_mib", "idle PSS MiB (1 tunnel)", "lower", "%.2f", "idle"),
    ("peak_rss_mib", "peak RSS MiB (after concurrent)", "lower", "%.2f", "concurrent"),
    ("burst_single_ms", "{rtt} ms RTT: single connect+echo ms", "lower", "%.1f", "burst"),
    ("burst_p50_ms", "burst of {n} at {rtt} ms RTT: p50 ms", "lower", "%.1f", "burst"),
    ("burst_p99_ms", "burst of {n} at {rtt} ms RTT: p99 ms", "lower", "%.1f", "burst"),
    ("burst_failed", "burst of {n}: failed", "lower", "%d", "burst"),
    ("burst_warm_p50_ms", "second burst at once: p50 ms", "lower", "%.1f", "burst"),
    ("burst_warm_p99_ms", "second burst at once: p99 ms", "lower", "%.1f", "burst"),
    ("burst_warm_failed", "second burst: failed", "lower", "%d", "burst"),
    ("burst_idle_processes", "bastion before the burst: sshd processes", "lower", "%d", "burst"),
    ("burst_sessions", "bastion after the bursts: SSH connections", "lower", "%d", "burst"),
    ("burst_processes", "bastion after the bursts: sshd processes", "lower", "%d", "burst"),
    ("burst_rss_mib", "bastion after the bursts: sshd RSS MiB", "lower", "%.1f", "burst"),
    ("burst_pss_mib", "bastion after the bursts: sshd PSS MiB", "lower", "%.1f", "burst"),
    ("burst_linger_s", "bastion back to 1 connection after s", "lower", "%.1f", "burst"),
]
KIND_ONLY = {"burst": "D"}  # phases that only one kind has
CONTENDER_ORDER = ("pytun", "pytun-warm", "OpenSSH", "baseline")


def medians(runs):
    out = {}
    for key, *_ in METRICS:
        vals = [r[key] for r in runs if r.get(key) is not None]
        out[key] = statistics.median(vals) if vals else None
    return out


def columns(results):
    """The contenders in the table, and the ratios it shows: pytun/OpenSSH,
    and pytun/baseline when the pre-refactor engine ran."""
    names = [n for n in CONTENDER_ORDER if any(n in k["contenders"] for k in results["kinds"].values())]
    ratios = [(mine, other) for mine, other in (("pytun", "OpenSSH"), ("pytun", "baseline"),
                                                ("pytun-warm", "OpenSSH")) if mine in names and other in names]
    return names, ratios


def build_rows(results, args):
    names, ratios = columns(results)
    rows = []

    def row(label, values, fmt, better):
        cells = [fmt % values[n] if values.get(n) is not None else values.get("_" + n, "-") for n in names]
        for a, b in ratios:
            va, vb = values.get(a), values.get(b)
            cells.append("%.2f" % (va / vb) if va is not None and vb else "-")
        rows.append((label, *cells, better))

    for kind in args.kinds:
        contenders = results["kinds"][kind]["contenders"]
        for key, label, better, fmt, phase in METRICS:
            if phase not in args.phases or KIND_ONLY.get(phase, kind) != kind:
                continue
            if key == "concurrent_intact":
                label = "concurrent conns intact (of %d x %d KiB)" % (args.concurrent, args.concurrent_bytes // 1024)
            values = {}
            for n, c in contenders.items():
                values[n] = c["median"].get(key)
                values["_" + n] = "failed"  # shown when it ran but has no value
            label = label.format(n=args.burst, rtt="%g" % (2 * args.burst_delay_ms))
            row("%s %s" % (KIND_FLAG[kind], label), values, fmt, better)
    rss = results.get("rss_tunnels", {})
    for n in sorted({k for per in rss.values() for k in per}, key=int):
        for what, label, fmt in (("rss_mib", "RSS MiB", "%.1f"), ("pss_mib", "PSS MiB", "%.1f"),
                                 ("idle_cpu_percent", "idle CPU % of a core", "%.2f")):
            values = {}
            for name, per in rss.items():
                v = per.get(n)
                values["_" + name] = "n/a" if v is None else "failed"
                if v is not None and "error" not in v and what in v:
                    values[name] = v[what]
            if what == "idle_cpu_percent" and not any(name in values for name in rss):
                continue  # not measured (--rss-idle 0)
            row("-R %s, %s tunnel(s)" % (label, n), values, fmt, "lower")
    cmd = results.get("command_memory")
    if cmd is not None:
        ssh = results["kinds"]["R"]["contenders"].get("OpenSSH", {}).get("median", {})
        for what, key in (("RSS", "idle_rss_mib"), ("PSS", "idle_pss_mib")):
            row("-R idle %s MiB, the pytun command (1 tunnel)" % what,
                {"pytun": cmd.get(what.lower() + "_mib"), "_pytun": "failed", "OpenSSH": ssh.get(key)},
                "%.2f", "lower")
    return rows


def header(results):
    names, ratios = columns(results)
    return ("metric", *names, *("%s/%s" % r for r in ratios), "better")


def render_text(results, args):
    return "\n".join(text_table(header(results), build_rows(results, args)) + [""] + describe(results, args))


def render_markdown(results, args):
    out = markdown_table(header(results), build_rows(results, args)) + [""]
    out.extend("- " + line for line in describe(results, args) if line)
    return "\n".join(out) + "\n"


def describe(results, args):
    env = results["environment"]
    d = results.get("direct", {})
    commands = "; ".join("%s %s: %s" % (name, KIND_FLAG[kind], " ".join(c["command"][:4]) + " ...")
                         for kind, k in results["kinds"].items() for name, c in k["contenders"].items()
                         if name != "OpenSSH")
    loads = [r["load_average"] for k in results["kinds"].values() for c in k["contenders"].values()
             for r in c["runs"] if "load_average" in r]
    lines = [
        "Medians of %d interleaved run(s)%s; ratio = pytun/other "
        "(throughput: >1 means pytun is faster; latency, CPU, memory: <1 means pytun uses less)."
        % (args.runs, "; %d MiB per transfer" % (args.bytes // MiB) if {"up", "down"} & set(args.phases) else ""),
        "OpenSSH client: ssh -N -R/-L/-D ... -c %s -m %s. %s." % (CIPHER, MAC, results.get("server_crypto", "")),
        "pytun: %s." % commands,
        "Versions: %s; libssh2 %s%s%s." % (
            env["openssh"], env["libssh2"],
            ("; pytun: " + env["pytun_version"]) if env.get("pytun_version") else "",
            (" (binary %s)" % env["pytun_libssh2"]) if env.get("pytun_libssh2") else ""),
        "Machine: %d CPUs, %s, Linux %s, Python %s." % (env["nproc"], env["cpu"], env["kernel"], env["python"]),
        "Load average (1 min): %.1f at the start, %.1f-%.1f after the runs, %.1f at the end."
        % (results["load_start"], min(loads or [0]), max(loads or [0]), results.get("load_end", 0)),
    ]
    if "D" in args.kinds and "burst" in args.phases:
        lines.append("Burst: network lab, %g ms each way through a delay relay, the bastion with OpenSSH's default "
                     "MaxStartups; %d SOCKS5 connections to an echo service started together, each timed from its "
                     "connect() to its 32-byte echo; a fresh -D process per run, one warm-up connection and %d single "
                     "ones first." % (args.burst_delay_ms, args.burst, args.burst_singles)
                     + ("" if results.get("lab") is None else " Not run: %s." % results["lab"]))
    if d:
        def f(k, fmt):
            return fmt % d[k] if d.get(k) is not None else "failed"
        lines.append("Services alone, no tunnel (the ceiling of this setup): upload %s MiB/s, download %s MiB/s, "
                     "latency p50 %s ms." % (f("up_mib_s", "%.0f"), f("down_mib_s", "%.0f"), f("latency_p50_ms", "%.3f")))
        for key in ("up_mib_s", "down_mib_s"):
            best = max([c["median"].get(key) or 0 for k in results["kinds"].values()
                        for c in k["contenders"].values()] + [0])
            if d.get(key) and best and d[key] < 2 * best:
                lines.append("WARNING: the services alone reached only %.0f MiB/s (%s), less than twice the best "
                             "tunnel (%.0f MiB/s): the machine is busy or the services limit the result."
                             % (d[key], key.split("_")[0], best))
    for kind, k in results["kinds"].items():
        for name, c in k["contenders"].items():
            errs = sorted({v for r in c["runs"] for key, v in r.items() if key.endswith("error")})
            for e in errs:
                lines.append("%s %s error: %s" % (name, KIND_FLAG[kind], e))
    for name, notes in results.get("notes", {}).items():
        for n in notes:
            lines.append("%s note: %s" % (name, n))
    return lines


# --------------------------------------------------------------------------


PHASES = ("idle", "latency", "concurrent", "up", "down", "burst")


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pytun", default=str(REPO_ROOT / "build" / "bench" / "reverse_tunnel"),
                    help="-R: the engine program (default: build/bench/reverse_tunnel, examples/reverse_tunnel.cpp "
                         "linked as bench/meson.build says)")
    ap.add_argument("--baseline", metavar="PATH",
                    help="-R: another engine program run beside --pytun in the same interleaved run (e.g. the "
                         "pre-refactor build); the table adds its column and pytun/baseline")
    ap.add_argument("--command", default=str(REPO_ROOT / "build" / "tools" / "pytun" / "pytun"),
                    help="the pytun command: -L and -D run `pytun forward`; -R measures its idle memory with one "
                         "tunnel (skipped if not built)")
    ap.add_argument("--forward-args", default="",
                    help="extra arguments for `pytun forward`, e.g. '--max-sessions 16'")
    ap.add_argument("--warm-args", default="",
                    help="-L and -D: also run `pytun forward` with these arguments added, as a contender of its "
                         "own (pytun-warm) in the same interleaved run, e.g. '--min-sessions 8 --max-sessions 16'")
    ap.add_argument("--pytun-log-level", default=None, help="passed as --log-level to the -R engine program")
    ap.add_argument("--kinds", default="R,L,D", help="comma list of forward kinds R,L,D (default all)")
    ap.add_argument("--contenders", default="pytun,ssh", help="comma list of pytun,ssh (default both)")
    ap.add_argument("--runs", type=int, default=3, help="interleaved runs; medians are reported (default 3)")
    ap.add_argument("--bytes", type=parse_size, default=GiB, help="bytes per transfer, e.g. 1G, 64M (default 1G)")
    ap.add_argument("--latency-samples", type=int, default=200)
    ap.add_argument("--concurrent", type=int, default=500, help="simultaneous connections (default 500)")
    ap.add_argument("--concurrent-bytes", type=parse_size, default=256 * 1024, help="echoed per connection (256K)")
    ap.add_argument("--phases", default=",".join(PHASES),
                    help="comma list of %s (default all; burst: -D only, needs root)" % ",".join(PHASES))
    ap.add_argument("--burst", type=int, default=100, help="SOCKS connections per burst (default 100)")
    ap.add_argument("--burst-delay-ms", type=float, default=10, help="lab delay each way (default 10: 20 ms RTT)")
    ap.add_argument("--burst-singles", type=int, default=10,
                    help="single sequential connections in the lab before the burst (default 10)")
    ap.add_argument("--burst-linger", type=float, default=60,
                    help="seconds to wait for the bastion to be back to one connection after the bursts "
                         "(0: do not wait; default 60)")
    ap.add_argument("--rss-tunnels", default="",
                    help="-R: also measure memory for N tunnels, e.g. 1,10,100 (OpenSSH: N ssh processes summed)")
    ap.add_argument("--rss-idle", type=float, default=10.0,
                    help="-R with --rss-tunnels: seconds over which the N tunnels' idle CPU is measured "
                         "(0: not measured; default 10)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 64 MiB, 1 run, 50 latency samples, 100 concurrent, no waiting for the "
                         "bastion to shrink")
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
        args.burst_linger = 0
    args.phases = [p for p in args.phases.split(",") if p]
    args.kinds = [k.upper().lstrip("-") for k in args.kinds.split(",") if k]
    args.contenders = [c for c in args.contenders.split(",") if c]
    bad = set(args.phases) - set(PHASES)
    bad |= set(args.contenders) - {"pytun", "ssh"}
    bad |= set(args.kinds) - set(KIND_FLAG)
    if bad:
        ap.error("unknown phase/contender/kind: %s" % ", ".join(sorted(bad)))
    args.forward_args = args.forward_args.split()
    args.warm_args = args.warm_args.split()
    args.rss_tunnels = [int(n) for n in args.rss_tunnels.split(",") if n]
    args.transfer_timeout = 20.0 + args.bytes / MiB / args.min_rate
    args.latency_timeout = 10.0 + args.latency_samples * 0.5
    args.concurrent_timeout = 30.0 + args.concurrent * args.concurrent_bytes / MiB / args.min_rate
    return args


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt("SIGTERM")


def open_lab(args, results):
    """The network lab for the burst, or None (the reason is reported)."""
    if "D" not in args.kinds or "burst" not in args.phases:
        return None
    import netlab
    try:
        return LabSite(args)
    except netlab.LabUnavailable as e:
        results["lab"] = e.reason
    except (OSError, netlab.LabError, sshd_fixture.MissingTool) as e:
        results["lab"] = str(e)
    log("burst skipped: %s" % results["lab"])
    return None


def main(argv=None):
    global LOOPBACK
    args = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    tmp = tempfile.mkdtemp(prefix="pytun-bench-")
    results = {"args": {k: v for k, v in vars(args).items()}, "environment": environment(args.pytun),
               "load_start": os.getloadavg()[0], "kinds": {}}
    svc_proc = None
    lab = None
    try:
        svc_proc = spawn([sys.executable, str(BENCH_DIR / "services.py")], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE)
        line = svc_proc.stdout.readline()
        if not line:
            raise SystemExit("bench: services did not start")
        ports = json.loads(line)
        log("services on 127.0.0.1: %s" % ports)

        info = sshd_fixture.prepare(os.path.join(tmp, "sshd"))
        if not args.no_restrict_crypto:
            results["server_crypto"] = restrict_server_crypto(info)
        spawned_sshd = sshd_fixture.start_sshd(info)
        _PROCS.append(spawned_sshd)
        LOOPBACK = Site(FixtureInfo(info), spawn, stop_proc, tcp_listening)
        log("sshd on 127.0.0.1:%d (pid %d)" % (LOOPBACK.fx.port, spawned_sshd.pid))
        lab = open_lab(args, results)

        if not args.no_direct:
            results["direct"] = measure_direct(ports, args)
            log("services alone: %s" % {k: round(v, 3) if isinstance(v, float) else v
                                        for k, v in results["direct"].items()})

        contenders = []
        if "pytun" in args.contenders:
            contenders.append(Pytun(tmp, Path(args.pytun), Path(args.command), args.pytun_log_level,
                                    args.forward_args))
            if args.warm_args:
                warm = Pytun(tmp, Path(args.pytun), Path(args.command), args.pytun_log_level,
                             args.forward_args + args.warm_args, name="pytun-warm")
                warm.kinds = ("L", "D")
                contenders.append(warm)
            if args.baseline:
                contenders.append(Pytun(tmp, Path(args.baseline), name="baseline"))
        if "ssh" in args.contenders:
            contenders.append(OpenSSH(tmp))
        for kind in args.kinds:
            results["kinds"][kind] = {"contenders": {
                c.name: {"runs": [], "command": c.command(kind, 0, ("127.0.0.1", 0), LOOPBACK.fx)}
                for c in contenders if kind in c.kinds}}

        for i in range(args.runs):
            for kind in args.kinds:
                for c in contenders:  # interleaved: pytun, (baseline,) ssh, pytun, ...
                    if kind not in c.kinds:
                        continue
                    if c.consecutive_start_failures >= 2:
                        c.note("skipped after repeated start failures")
                        continue
                    log("run %d/%d: %s %s" % (i + 1, args.runs, c.name, KIND_FLAG[kind]))
                    results["kinds"][kind]["contenders"][c.name]["runs"].append(
                        run_contender_once(c, kind, ports, args, lab))

        if "pytun" in args.contenders and "R" in args.kinds and "idle" in args.phases:
            results["command_memory"] = measure_command_memory(LOOPBACK.fx, tmp, Path(args.command), ports["echo"],
                                                               max(args.settle, 1.0))

        if args.rss_tunnels and "R" in args.kinds:
            results["rss_tunnels"] = {}
            for c in contenders:
                if c.name != "baseline":
                    results["rss_tunnels"][c.name] = measure_rss_tunnels(c, ports["echo"], args.rss_tunnels,
                                                                         args.rss_idle)

        for k in results["kinds"].values():
            for entry in k["contenders"].values():
                entry["median"] = medians(entry["runs"])
        results["notes"] = {c.name: c.notes for c in contenders if c.notes}
        results["load_end"] = os.getloadavg()[0]

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
        if lab is not None:
            lab.close()
        if args.keep_tmp:
            log("kept %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


LOOPBACK = None  # the loopback Site, set by main()


if __name__ == "__main__":
    sys.exit(main())
