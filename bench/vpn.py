#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# The VPN benchmark: pytun vpn, sshuttle and one ssh -L to a LAN behind a bastion, side by side in the network lab.
"""Compare `pytun vpn` with sshuttle and with one `ssh -L`, in one interleaved run.

    sudo python3 bench/vpn.py [--quick] [--runs 1] [--bytes 1G] [--json FILE] [--markdown FILE]

The network lab (tests/support/netlab.py): client -- bastion (a real sshd,
ip_forward=0) -- lan (bench/services.py: sink, source, echo). The client has
a route to the lan through the bastion, which drops what it would have to
forward, so nothing reaches the lan except through a tunnel (checked before
anything is measured). Contenders, each started fresh in the client
namespace for every phase and stopped with SIGTERM:

  pytun vpn  pytun vpn -r USER@BASTION:PORT -i KEY --known-hosts FILE LAN/24
             (RUNTIME_DIRECTORY set to a directory of its own); ready at its
             stdout line "pytun vpn: up"
  sshuttle   sshuttle --method nft -r USER@BASTION:PORT -e 'ssh ...' LAN/24
             (Debian's 1.1.1; the same key and known_hosts); ready at
             "Connected to server." on stderr
  ssh -L     ssh -N -L 127.0.0.1:P:LAN_IP:PORT, one process with one forward
             per service; ready when its ports listen

and then, for all, when an echo through the tunnel comes back and the
client's and bastion's namespaces have gone quiet (at most 3 s). The measuring
client (bench/measure.py, the same code as bench/run.py) runs on a thread of
this process inside the client namespace and connects to the services' LAN
addresses (ssh -L: to its local ports). The bastion's sshd offers only
aes128-ctr and hmac-sha2-256 (ssh is also told -c/-m), and OpenSSH's default
MaxStartups 10:30:100, as a stock bastion does.

Phases, interleaved per phase (pytun vpn, sshuttle, ssh -L, then the next):
  up, down     one connection moves --bytes to the sink / from the source;
               MiB/s, and CPU s/GiB of every process in the client namespace
               (the contender and its children: sshuttle's ssh and firewall
               helper) plus every process in the bastion's (sshd and its
               children: sshuttle's server-side Python), from /proc/PID/stat
  echo         latency: --latency-samples sequential connect + 32-byte echo +
               close (p50, p99), and as many 32-byte request/responses on one
               open connection; then --concurrent connections opened at the
               same instant, each echoing --concurrent-bytes: how many came
               back intact, and the client namespace's listen-queue overflows
  burst        a second lab topology whose sshd is behind a delay relay
               (--burst-delay-ms each way, 20 ms RTT): one warm-up connection,
               --burst-singles single connect+echo, then --burst connections
               started together (tests/support/socks_burst.py without a proxy,
               as its own process), each timed from connect() to its echo

The table has each contender's median over --runs, the ratios pytun/ssh -L
and pytun/sshuttle, and issue 11's target for the row with whether it is met.
--check (the smoke test) exits 1 when a contender that could run failed to
start or failed a phase. Exits 77 without root, the lab's tools or sshuttle.
Only the Python standard library is used.
"""

import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(REPO_ROOT / "tests" / "support"))
import netlab  # noqa: E402  (tests/support/netlab.py)
import socks_burst  # noqa: E402  (tests/support/socks_burst.py)
import sshd_fixture  # noqa: E402  (tests/support/sshd_fixture.py)
from measure import (  # noqa: E402  (bench/measure.py: what run.py and vpn.py share)
    CIPHER, GiB, MAC, MiB, START_TIMEOUT, Entry, PhaseError, StartError, concurrent, cpu_times, download,
    environment, latency, listen_overflows, log, markdown_table, parse_size, percentile, restrict_server_crypto,
    round_trips, text_table, upload)
from testcheck import wait_until  # noqa: E402  (tests/support/testcheck.py)

EXIT_SKIP = 77
SSH_L_PORTS = {"sink": 10001, "source": 10002, "echo": 10003}  # ssh -L's ports in the client namespace
PROBE = b"ping"
SETTLE_TIMEOUT = 3.0  # s a fresh tunnel gets to finish its start-up work (settle())
PHASES = ("up", "down", "latency", "concurrent", "burst")


# --------------------------------------------------------------------------
# Contenders: how each is started in the client namespace and reached


class Tunnel:
    """One running contender in a lab topology."""

    def __init__(self, contender, topo, proc, stdout_path, stderr_path):
        self.contender = contender
        self.topo = topo
        self.proc = proc
        self.stdout_path = stdout_path
        self.stderr_path = stderr_path

    def output(self, which="stderr"):
        try:
            return Path(self.stdout_path if which == "stdout" else self.stderr_path).read_text(errors="replace")
        except OSError:
            return ""

    def entry(self, service):
        return self.contender.entry(self.topo, service)


class Contender:
    name = "?"

    def __init__(self, workdir):
        self.workdir = workdir
        self.counter = 0
        self.notes = []
        self.errors = 0

    def unavailable(self):
        """Why this contender cannot run here, or None."""
        return None

    def command(self, topo):
        raise NotImplementedError

    def environment(self):
        return None

    def signalled_ready(self, tun):
        """Has the contender said that it is up (before the echo probe)?"""
        raise NotImplementedError

    def entry(self, topo, service):
        """What the measuring client connects to: the service's own LAN address."""
        return Entry(topo.services[service], host=topo.lan_ip)

    def launch(self, topo):
        self.counter += 1
        base = os.path.join(self.workdir, "%s-%d" % (self.name.replace(" ", "-"), self.counter))
        with open(base + ".stdout", "wb") as out, open(base + ".stderr", "wb") as err:
            proc = topo.client.spawn(self.command(topo), stdout=out, stderr=err, env=self.environment())
        return Tunnel(self, topo, proc, base + ".stdout", base + ".stderr")

    def note(self, msg):
        if msg not in self.notes:
            self.notes.append(msg)
            log("%s: %s" % (self.name, msg))


def bastion(topo):
    return "%s@%s:%d" % (topo.user, topo.ssh_host, topo.ssh_port)


class PytunVpn(Contender):
    name = "pytun vpn"

    def __init__(self, workdir, binary, extra_args):
        super().__init__(workdir)
        self.binary = binary
        self.extra_args = extra_args

    def unavailable(self):
        if not os.access(self.binary, os.X_OK):
            return "%s not built" % self.binary
        # A binary without the command prints its general help (exit 0) for `vpn --help`.
        r = subprocess.run([self.binary, "vpn", "--help"], stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if r.returncode != 0 or "Usage: pytun vpn" not in r.stdout:
            return "%s has no vpn command" % self.binary
        return None

    def command(self, topo):
        return [self.binary, "vpn", "-r", bastion(topo), "-i", topo.key, "--known-hosts", topo.known_hosts,
                *self.extra_args, topo.lan_subnet]

    def environment(self):
        # Its journal of installed rules goes to a directory of its own, never /run/pytun.
        runtime = tempfile.mkdtemp(prefix="runtime-", dir=self.workdir)
        return dict(os.environ, RUNTIME_DIRECTORY=runtime)

    def signalled_ready(self, tun):
        return any(line.startswith("pytun vpn: up") for line in tun.output("stdout").splitlines())


class Sshuttle(Contender):
    name = "sshuttle"

    def unavailable(self):
        return None if shutil.which("sshuttle") else "sshuttle not installed (Debian package sshuttle)"

    def command(self, topo):
        ssh = ["ssh", *sshd_fixture.ssh_base_args(topo.sshd), "-c", CIPHER, "-m", MAC]
        return ["sshuttle", "--method", "nft", "-r", bastion(topo), "-e", shlex.join(ssh), topo.lan_subnet]

    def signalled_ready(self, tun):
        # Its rules go in right after this line; the echo probe then waits for them.
        return "Connected to server." in tun.output()


class SshForward(Contender):
    name = "ssh -L"

    def command(self, topo):
        forwards = []
        for service, port in SSH_L_PORTS.items():
            forwards += ["-L", "127.0.0.1:%d:%s:%d" % (port, topo.lan_ip, topo.services[service])]
        return topo.ssh_command("-N", "-c", CIPHER, "-m", MAC, "-o", "ControlMaster=no",
                                "-o", "ControlPath=none", *forwards)

    def signalled_ready(self, tun):
        return all(tun.topo.client.listening(port, "127.0.0.1") for port in SSH_L_PORTS.values())

    def entry(self, topo, service):
        return Entry(SSH_L_PORTS[service])


# --------------------------------------------------------------------------
# Starting and stopping, with what each leaves behind


def echo_probe(host, port, timeout=1.0):
    """One connect + 4-byte echo (run inside a namespace with Namespace.call)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(PROBE)
            got = b""
            while len(got) < len(PROBE):
                data = s.recv(len(PROBE) - len(got))
                if not data:
                    return False
                got += data
            return got == PROBE
    except OSError:
        return False


def ruleset(ns):
    return ns.run([ns.lab.nft_path, "list", "ruleset"]).stdout


def start(contender, topo):
    """A fresh tunnel of `contender` in `topo`, through which an echo has come back."""
    tun = contender.launch(topo)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if tun.proc.poll() is not None:
            stop(tun)
            raise StartError("%s exited with %s before it was up: %s"
                             % (contender.name, tun.proc.returncode, tun.output()[-600:].strip()))
        if contender.signalled_ready(tun):
            echo = tun.entry("echo")
            if topo.client.call(echo_probe, echo.host, echo.port):
                settle(topo)
                return tun
        if time.monotonic() > deadline:
            stop(tun)
            raise StartError("%s: no echo through it after %.0f s: %s"
                             % (contender.name, START_TIMEOUT, tun.output()[-600:].strip()))
        time.sleep(0.05)


def settle(topo):
    """Until what a fresh tunnel does once at its start has ended, at most
    SETTLE_TIMEOUT: under 5 % of a CPU used in the client and bastion
    namespaces over 0.25 s. pytun's warm SSH sessions each run a command on
    the bastion (docs/vpn.md), sshuttle starts its server-side Python: the
    phases measure the tunnel, not its start."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while time.monotonic() < deadline:
        client0, server0 = cpu_snapshot(topo.client), cpu_snapshot(topo.bastion)
        time.sleep(0.25)
        used = cpu_used(client0, cpu_snapshot(topo.client)) + cpu_used(server0, cpu_snapshot(topo.bastion))
        if used < 0.05 * 0.25:
            return


def stop(tun):
    """SIGTERM; then its children must end and the client's ruleset must be as
    before it started (noted and put back otherwise, so that the next
    contender is not captured by what this one left)."""
    c, client = tun.contender, tun.topo.client
    rc = client.stop(tun.proc)
    if isinstance(c, PytunVpn) and rc != 0:
        c.note("exit status %s after SIGTERM (the command says 0)" % rc)
    if not wait_until(lambda: not client.pids(), 5.0):
        left = client.pids()
        c.note("processes %s still ran 5 s after it ended; killed" % left)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_until(lambda: not client.pids(), 5.0)
    after = ruleset(client)
    if after != tun.topo.baseline_ruleset:
        c.note("left firewall rules behind after SIGTERM:\n%s" % after.strip())
        client.nft("flush ruleset\n" + tun.topo.baseline_ruleset)


# --------------------------------------------------------------------------
# Phases


def cpu_snapshot(ns):
    """{pid: cpu_times(pid)} of every process in the namespace now."""
    snap = {}
    for pid in ns.pids():
        try:
            snap[pid] = cpu_times(pid)
        except (OSError, IndexError, ValueError):
            pass  # ended meanwhile
    return snap


def cpu_used(before, after):
    """CPU seconds the processes used between two snapshots: each one's own
    time, plus what its children that ended meanwhile used (cutime, cstime).
    A child that was already running at the first snapshot and ended before
    the second is counted whole; one that was never waited for is lost."""
    total = 0.0
    for pid, (own, children) in after.items():
        own0, children0 = before.get(pid, (0.0, 0.0))
        total += own - own0 + children - children0
    return total


def measure_transfer(contender, topo, direction, args):
    tun = start(contender, topo)
    try:
        entry = tun.entry("sink" if direction == "up" else "source")
        client0, server0 = cpu_snapshot(topo.client), cpu_snapshot(topo.bastion)
        fn = upload if direction == "up" else download
        secs = topo.client.call(fn, entry, args.bytes, time.monotonic() + args.transfer_timeout)
        client = cpu_used(client0, cpu_snapshot(topo.client))
        server = cpu_used(server0, cpu_snapshot(topo.bastion))
        if tun.proc.poll() is not None:
            raise PhaseError("%s ended during the transfer" % contender.name)
    finally:
        stop(tun)
    gib = args.bytes / GiB
    return {direction + "_mib_s": args.bytes / MiB / secs, direction + "_seconds": secs,
            direction + "_cpu_s_per_gib": (client + server) / gib,
            direction + "_client_cpu_s_per_gib": client / gib, direction + "_server_cpu_s_per_gib": server / gib}


def measure_echo(contender, topo, args):
    """Latency, then the connections opened at the same instant, on one tunnel."""
    res = {}
    tun = start(contender, topo)
    try:
        entry = tun.entry("echo")
        if "latency" in args.phases:
            ms = topo.client.call(latency, entry, args.latency_samples, time.monotonic() + args.latency_timeout)
            res.update(latency_p50_ms=percentile(ms, 50), latency_p99_ms=percentile(ms, 99),
                       latency_samples_ms=[round(x, 4) for x in ms])
            ms = topo.client.call(round_trips, entry, args.latency_samples, time.monotonic() + args.latency_timeout)
            res.update(latency_rr_p50_ms=percentile(ms, 50), latency_rr_p99_ms=percentile(ms, 99),
                       latency_rr_samples_ms=[round(x, 4) for x in ms])
        if "concurrent" in args.phases:
            overflows0 = topo.client.call(listen_overflows)
            intact, failed, wall, done_at = topo.client.call(
                concurrent, entry, args.concurrent, args.concurrent_bytes,
                time.monotonic() + args.concurrent_timeout)
            overflows1 = topo.client.call(listen_overflows)
            res.update(concurrent_intact=intact, concurrent_wall_s=wall, concurrent_completion_s=done_at)
            if overflows0 is not None and overflows1 is not None:
                res["concurrent_listen_overflows"] = overflows1 - overflows0
            if failed:
                log("%s: %d of %d connections opened at once not intact" % (contender.name, failed, args.concurrent))
    finally:
        stop(tun)
    return res


def run_burst(topo, entry, count):
    """socks_burst.py without a proxy, as its own process in the client namespace
    (its timing is not disturbed by this one's threads); its JSON result."""
    r = topo.client.run([sys.executable, socks_burst.__file__, "--to", "%s:%d" % (entry.host, entry.port),
                         "-n", str(count)], check=False)
    try:
        return json.loads(r.stdout)
    except ValueError:
        raise PhaseError("socks_burst.py printed no result (exit %s): %s" % (r.returncode, r.stderr.strip()))


def measure_burst(contender, topo, args):
    tun = start(contender, topo)
    try:
        entry = tun.entry("echo")
        if run_burst(topo, entry, 1)["failed"]:
            raise PhaseError("the warm-up connection failed")
        singles = [run_burst(topo, entry, 1)["min_ms"] for _ in range(args.burst_singles)]
        if None in singles:
            raise PhaseError("a single connection failed")
        load = os.getloadavg()[0]
        r = run_burst(topo, entry, args.burst)
    finally:
        stop(tun)
    log("%s: burst of %d at %g ms RTT: p50 %s ms, p99 %s ms, %d failed (load %.1f)"
        % (contender.name, args.burst, 2 * args.burst_delay_ms, r["p50_ms"], r["p99_ms"], r["failed"], load))
    return {"burst_single_ms": statistics.median(singles) if singles else None, "burst_p50_ms": r["p50_ms"],
            "burst_p99_ms": r["p99_ms"], "burst_failed": r["failed"], "burst_times_ms": r["times_ms"],
            "burst_load": load}


def run_phase(phase, contender, lab_topos, args):
    """One phase for one contender: its results, or {"PHASE_error": why}."""
    try:
        if phase in ("up", "down"):
            res = measure_transfer(contender, lab_topos["plain"], phase, args)
            log("%s %s: %.1f MiB/s, %.2f CPU s/GiB (client %.2f, bastion %.2f)"
                % (contender.name, phase, res[phase + "_mib_s"], res[phase + "_cpu_s_per_gib"],
                   res[phase + "_client_cpu_s_per_gib"], res[phase + "_server_cpu_s_per_gib"]))
            return res
        if phase == "echo":
            res = measure_echo(contender, lab_topos["plain"], args)
            log("%s: latency p50 %s ms, p99 %s ms; %s of %d at once intact"
                % (contender.name, fmt_opt(res.get("latency_p50_ms"), "%.3f"),
                   fmt_opt(res.get("latency_p99_ms"), "%.3f"), res.get("concurrent_intact", "-"), args.concurrent))
            return res
        return measure_burst(contender, lab_topos["burst"], args)
    except (OSError, PhaseError, netlab.LabError) as e:
        contender.errors += 1
        log("%s %s failed: %s" % (contender.name, phase, e))
        return {phase + "_error": str(e)}


def fmt_opt(value, fmt):
    return "-" if value is None else fmt % value


# --------------------------------------------------------------------------
# The lab


def stock_bastion(topo, args):
    """The bastion as shipped: OpenSSH's default MaxStartups (the test fixture
    raises it), and only the cipher and MAC that ssh is told to use."""
    topo.stop_sshd()
    config = Path(topo.sshd["sshd_config"])
    config.write_text("MaxStartups 10:30:100\n" + config.read_text())
    crypto = restrict_server_crypto(topo.sshd)
    topo.start_sshd()
    topo.baseline_ruleset = ruleset(topo.client)
    # Nothing may reach the lan except through a tunnel, or a success would not be the tunnel's.
    if topo.client.call(echo_probe, topo.lan_ip, topo.services["echo"]):
        raise SystemExit("vpn.py: the client reaches %s without a tunnel; the lab is not what it should be"
                         % topo.lan_ip)
    return crypto


def build_lab(lab, args, results):
    topos = {"plain": lab.ssh_topology(client_route_to_lan=True)}
    results["server_crypto"] = stock_bastion(topos["plain"], args)
    if "burst" in args.phases:
        topos["burst"] = lab.ssh_topology(delay_ms=args.burst_delay_ms, client_route_to_lan=True)
        stock_bastion(topos["burst"], args)
    return topos


# --------------------------------------------------------------------------
# Report

# (key, label, format, better). Labels with {n}, {k}, {rtt} are filled in from the arguments.
METRICS = [
    ("up_mib_s", "upload MiB/s", "%.1f", "higher"),
    ("down_mib_s", "download MiB/s", "%.1f", "higher"),
    ("up_cpu_s_per_gib", "CPU s/GiB upload, client + bastion", "%.2f", "lower"),
    ("up_client_cpu_s_per_gib", "  of which the client", "%.2f", "lower"),
    ("up_server_cpu_s_per_gib", "  of which the bastion", "%.2f", "lower"),
    ("down_cpu_s_per_gib", "CPU s/GiB download, client + bastion", "%.2f", "lower"),
    ("down_client_cpu_s_per_gib", "  of which the client", "%.2f", "lower"),
    ("down_server_cpu_s_per_gib", "  of which the bastion", "%.2f", "lower"),
    ("latency_p50_ms", "connect+echo latency p50 ms", "%.3f", "lower"),
    ("latency_p99_ms", "connect+echo latency p99 ms", "%.3f", "lower"),
    ("latency_rr_p50_ms", "request/response on one connection p50 ms", "%.3f", "lower"),
    ("latency_rr_p99_ms", "request/response on one connection p99 ms", "%.3f", "lower"),
    ("concurrent_intact", "{n} opened at once: intact (x {k} KiB)", "%d", "higher"),
    ("concurrent_wall_s", "{n} opened at once: wall time s", "%.2f", "lower"),
    ("concurrent_listen_overflows", "{n} opened at once: listen-queue overflows", "%d", "lower"),
    ("burst_single_ms", "{rtt} ms RTT: single connect+echo ms", "%.1f", "lower"),
    ("burst_p50_ms", "burst of {b} at {rtt} ms RTT: p50 ms", "%.1f", "lower"),
    ("burst_p99_ms", "burst of {b} at {rtt} ms RTT: p99 ms", "%.1f", "lower"),
    ("burst_failed", "burst of {b}: failed", "%d", "lower"),
]
PYTUN, SSHUTTLE, SSH = "pytun vpn", "sshuttle", "ssh -L"


def target(key, m, args):
    """Issue 11's target for a row, and whether the medians `m` ({contender: value}) meet it."""
    p, s, o = m.get(PYTUN), m.get(SSHUTTLE), m.get(SSH)

    def met(ok):
        return "-" if ok is None else ("yes" if ok else "NO")
    if key in ("up_mib_s", "down_mib_s"):
        ok = None if None in (p, s, o) or not s or not o else p >= 0.6 * o and p >= 4 * s
        return ">= 0.6x ssh -L, >= 4x sshuttle", met(ok)
    if key in ("up_cpu_s_per_gib", "down_cpu_s_per_gib"):
        return "<= 1/5 of sshuttle", met(None if None in (p, s) else p <= s / 5)
    if key == "latency_p50_ms":
        return "<= 1 ms and <= sshuttle", met(None if None in (p, s) else p <= 1.0 and p <= s)
    if key == "concurrent_intact":
        return "all %d" % args.concurrent, met(None if p is None else p == args.concurrent)
    if key == "burst_p99_ms":
        return "<= 300 ms", met(None if p is None else p <= 300)
    return "", ""


def medians(runs):
    out = {}
    for key, *_ in METRICS:
        values = [r[key] for r in runs if r.get(key) is not None]
        out[key] = statistics.median(values) if values else None
    return out


def build_rows(results, args):
    names = list(results["contenders"])
    ratios = [(PYTUN, other) for other in (SSH, SSHUTTLE) if PYTUN in names and other in names]
    head = ["metric", *names, *("pytun/%s" % other for _, other in ratios), "target (issue 11)", "met",
            "better"]
    rows = []
    for key, label, fmt, better in METRICS:
        if key.split("_")[0] not in args.phases:  # each key begins with its phase
            continue
        m = {n: results["contenders"][n]["median"].get(key) for n in names}
        cells = [fmt % m[n] if m[n] is not None else "failed" if results["contenders"][n]["ran"] else "n/a"
                 for n in names]
        cells += ["%.2f" % (m[a] / m[b]) if m[a] is not None and m[b] else "-" for a, b in ratios]
        rows.append([label.format(n=args.concurrent, k=args.concurrent_bytes // 1024, b=args.burst,
                                  rtt="%g" % (2 * args.burst_delay_ms)),
                     *cells, *target(key, m, args), better])
    return head, rows


def describe(results, args):
    env = results["environment"]
    loads = results["loads"]
    lines = [
        "Medians of %d run(s), interleaved per phase; %d MiB per transfer; ratio pytun/other (throughput: >1 means "
        "pytun is faster; CPU, latency: <1 means pytun uses less)." % (args.runs, args.bytes // MiB),
        "Network lab: client -- bastion (sshd, ip_forward=0) -- lan; %s; OpenSSH's default MaxStartups."
        % results.get("server_crypto", ""),
        "CPU: every process in the client namespace (the contender and its children) plus every process in the "
        "bastion's (sshd and its children, sshuttle's server-side Python).",
        "Versions: %s; sshuttle %s; libssh2 %s%s." % (env["openssh"], results.get("sshuttle_version") or "-",
                                                      env["libssh2"], ("; pytun: " + env["pytun_version"])
                                                      if env.get("pytun_version") else ""),
        "Machine: %d CPUs, %s, Linux %s, Python %s." % (env["nproc"], env["cpu"], env["kernel"], env["python"]),
        "Load average (1 min): %.1f at the start, %.1f-%.1f during the phases, %.1f at the end."
        % (loads[0], min(loads), max(loads), loads[-1]),
    ]
    if "burst" in args.phases:
        lines.append("Burst: %g ms each way through the lab's delay relay in front of sshd; %d connections to the "
                     "echo service started together, each timed from its connect() to its 32-byte echo; a fresh "
                     "tunnel, one warm-up and %d single connections first."
                     % (args.burst_delay_ms, args.burst, args.burst_singles))
    for name, c in results["contenders"].items():
        if not c["ran"]:
            lines.append("%s not run: %s." % (name, c["unavailable"]))
        for err in sorted({v for r in c["runs"] for k, v in r.items() if k.endswith("_error")}):
            lines.append("%s error: %s" % (name, err))
        for note in c["notes"]:
            lines.append("%s note: %s" % (name, note))
    return lines


def render_text(results, args):
    head, rows = build_rows(results, args)
    return "\n".join(text_table(head, rows) + [""] + describe(results, args))


def render_markdown(results, args):
    head, rows = build_rows(results, args)
    return "\n".join(markdown_table(head, rows) + [""] + ["- " + line for line in describe(results, args)]) + "\n"


# --------------------------------------------------------------------------


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pytun", default=str(REPO_ROOT / "build" / "tools" / "pytun" / "pytun"),
                    help="the pytun command (default build/tools/pytun/pytun)")
    ap.add_argument("--vpn-args", default="", help="extra arguments for `pytun vpn`, e.g. '-v'")
    ap.add_argument("--contenders", default="pytun,sshuttle,ssh", help="comma list of pytun,sshuttle,ssh")
    ap.add_argument("--phases", default=",".join(PHASES), help="comma list of %s (default all)" % ",".join(PHASES))
    ap.add_argument("--runs", type=int, default=1, help="interleaved runs; medians are reported (default 1)")
    ap.add_argument("--bytes", type=parse_size, default=GiB, help="bytes per transfer, e.g. 1G, 64M (default 1G)")
    ap.add_argument("--latency-samples", type=int, default=200)
    ap.add_argument("--concurrent", type=int, default=200, help="connections opened at once (default 200)")
    ap.add_argument("--concurrent-bytes", type=parse_size, default=256 * 1024, help="echoed per connection (256K)")
    ap.add_argument("--burst", type=int, default=100, help="connections per burst (default 100)")
    ap.add_argument("--burst-delay-ms", type=float, default=10, help="delay each way (default 10: 20 ms RTT)")
    ap.add_argument("--burst-singles", type=int, default=10, help="single connections before the burst (10)")
    ap.add_argument("--min-rate", type=float, default=5.0,
                    help="MiB/s below which a transfer is abandoned (sets its deadline; default 5)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 8 MiB per transfer, 20 latency samples, 200 x 16 KiB at once, 2 singles")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 when a contender that could run failed to start or failed a phase (the smoke test)")
    ap.add_argument("--json", metavar="FILE", help="write the raw results as JSON")
    ap.add_argument("--markdown", metavar="FILE", help="write the table as Markdown")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the contenders' logs (the directory is printed)")
    args = ap.parse_args(argv)
    if args.quick:
        args.bytes, args.runs, args.latency_samples, args.concurrent_bytes = 8 * MiB, 1, 20, 16 * 1024
        args.burst_singles = 2
    args.phases = [p for p in args.phases.split(",") if p]
    args.contenders = [c for c in args.contenders.split(",") if c]
    bad = (set(args.phases) - set(PHASES)) | (set(args.contenders) - {"pytun", "sshuttle", "ssh"})
    if bad:
        ap.error("unknown phase or contender: %s" % ", ".join(sorted(bad)))
    args.pytun = os.path.abspath(args.pytun)
    args.vpn_args = shlex.split(args.vpn_args)
    args.transfer_timeout = 20.0 + args.bytes / MiB / args.min_rate
    args.latency_timeout = 10.0 + args.latency_samples * 0.5
    args.concurrent_timeout = 30.0 + args.concurrent * args.concurrent_bytes / MiB / args.min_rate
    return args


def make_contenders(args, workdir):
    made = {"pytun": lambda: PytunVpn(workdir, args.pytun, args.vpn_args), "sshuttle": lambda: Sshuttle(workdir),
            "ssh": lambda: SshForward(workdir)}
    return [made[name]() for name in ("pytun", "sshuttle", "ssh") if name in args.contenders]


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    reason = netlab.unavailable_reason()
    if reason is None and shutil.which("sshuttle") is None and "sshuttle" in args.contenders:
        reason = "sshuttle not installed (Debian package sshuttle; scripts/setup installs it)"
    if reason:
        print("vpn.py: skipping: %s" % reason, file=sys.stderr)
        return EXIT_SKIP
    workdir = tempfile.mkdtemp(prefix="pytun-vpnbench-")
    sshuttle_version = subprocess.run(["sshuttle", "--version"], capture_output=True, text=True).stdout.strip() \
        if shutil.which("sshuttle") else None
    results = {"args": {k: v for k, v in vars(args).items()}, "environment": environment(args.pytun),
               "sshuttle_version": sshuttle_version, "loads": [os.getloadavg()[0]], "contenders": {}}
    contenders = make_contenders(args, workdir)
    try:
        with netlab.Lab() as lab:
            topos = build_lab(lab, args, results)
            for c in contenders:
                why = c.unavailable()
                results["contenders"][c.name] = {"ran": why is None, "unavailable": why, "runs": [],
                                                 "command": c.command(topos["plain"])}
                if why:
                    log("%s not run: %s" % (c.name, why))
            running = [c for c in contenders if results["contenders"][c.name]["ran"]]
            groups = [p for p in ("up", "down") if p in args.phases]
            if {"latency", "concurrent"} & set(args.phases):
                groups.append("echo")
            if "burst" in args.phases:
                groups.append("burst")
            for i in range(args.runs):
                per_run = {c.name: {} for c in running}
                for phase in groups:
                    for c in running:  # interleaved: pytun vpn, sshuttle, ssh -L, then the next phase
                        log("run %d/%d: %s, %s" % (i + 1, args.runs, c.name, phase))
                        per_run[c.name].update(run_phase(phase, c, topos, args))
                    results["loads"].append(os.getloadavg()[0])
                for c in running:
                    results["contenders"][c.name]["runs"].append(per_run[c.name])
        for c in contenders:
            entry = results["contenders"][c.name]
            entry["median"] = medians(entry["runs"])
            entry["notes"] = c.notes
        results["loads"].append(os.getloadavg()[0])
        print(render_text(results, args))
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
        if args.markdown:
            Path(args.markdown).write_text(render_markdown(results, args))
        if args.check and any(c.errors for c in contenders):
            print("vpn.py: --check: %s failed a phase"
                  % ", ".join(c.name for c in contenders if c.errors), file=sys.stderr)
            return 1
        return 0
    finally:
        if args.keep_tmp:
            log("kept %s" % workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
