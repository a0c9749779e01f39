#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# `pytun vpn` end to end in network namespaces: capture, traffic, excludes, resets, IPv6, rules after exit and crash.
"""vpn_test.py BINARY CASE   (meson: vpn-CASE, suite cli; root and the network lab, else 77)

Every case builds the lab's SSH topology (tests/support/netlab.py): a client,
a bastion running a real sshd with ip_forward=0, a LAN behind it with echo,
sink, source (and here an HTTP server). The client has a route to the LAN
through the bastion, which drops what it does not forward: a direct
connection from the client to the LAN never arrives, so whatever reaches the
LAN went through `pytun vpn`'s SSH channels. `pytun vpn` runs only inside the
client namespace, with RUNTIME_DIRECTORY (its journals) in the lab's
temporary directory.
"""

import errno
import hashlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "support"))
import netlab  # noqa: E402
import socks_burst  # noqa: E402
from testcheck import Failure, check, wait_until  # noqa: E402

EXIT_SKIP = 77
HTTP_PORT = 8080
REFUSED_PORT = 9      # nothing listens there in the LAN
UP_PREFIX = "pytun vpn: up"
DIRECT_TIMEOUT = 2.0  # a direct connection to the LAN is dropped by the bastion: it times out
BULK = 64 << 20
BURST = 200
OUTAGE = 8.0          # seconds the bastion is away in the outage cases
WARM_SESSIONS = 12    # pytun vpn's default --min-sessions (TransparentForward::default_min_sessions)


def run_bounded(args, env, timeout):
    """Run a command that should exit by itself; a Failure (not a hang) if it keeps running."""
    try:
        return subprocess.run(args, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise Failure(f"{' '.join(args)} still ran after {timeout} s (stderr: {e.stderr!r})") from None


# --- the lab ---------------------------------------------------------------------

class VpnLab:
    """The topology, an HTTP server in the LAN, and the pieces of a `pytun vpn` command line."""

    def __init__(self, lab, binary):
        self.lab = lab
        self.binary = binary
        self.topo = topo = lab.ssh_topology(client_route_to_lan=True)
        self.client, self.bastion, self.lan = topo.client, topo.bastion, topo.lan
        self.client_if = topo.links["client"].ifname_of(topo.client)
        self.runtime = lab.path("runtime")
        os.makedirs(self.runtime)
        self.env = dict(os.environ, RUNTIME_DIRECTORY=self.runtime)
        self.echo = (topo.lan_ip, topo.echo_port)
        self.echo6 = (topo.lan_ip6, topo.echo_port)
        self.remote = f"{topo.user}@{topo.ssh_host}:{topo.ssh_port}"
        self.vpns = []  # every pytun vpn started, for the log of a failure

    def base_args(self):
        t = self.topo
        return [self.binary, "vpn", "-r", self.remote, "-i", t.key, "--known-hosts", t.known_hosts]

    def start(self, *args):
        """`pytun vpn -r ... -i ... --known-hosts ... -v ARGS` in the client."""
        vpn = Vpn(self, [*self.base_args(), "-v", *args], f"vpn{len(self.vpns) + 1}")
        self.vpns.append(vpn)
        return vpn

    def run(self, args, timeout=30):
        """A `pytun` command that exits (e.g. `vpn --cleanup`) in the client: CompletedProcess."""
        return run_bounded([self.lab.ip_path, "netns", "exec", self.client.name, self.binary, *args],
                           self.env, timeout)

    def start_http(self):
        """python3 -m http.server in the LAN (both families) serving one file; returns its content."""
        root = self.lab.path("www")
        os.makedirs(root)
        body = os.urandom(16).hex() + "\n"
        with open(os.path.join(root, "hello.txt"), "w") as f:
            f.write(body)
        proc = self.lan.spawn([sys.executable, "-m", "http.server", str(HTTP_PORT), "--bind", "::",
                               "--directory", root], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.lan.wait_listening(HTTP_PORT, proc=proc)
        return body

    def lan_address(self, suffix):
        """A second IPv4 address of the LAN namespace, on its link's /24 (198.18.1.SUFFIX)."""
        link = self.topo.links["lan"]
        address = link.b_ip.rsplit(".", 1)[0] + f".{suffix}"
        self.lan.ip("addr", "add", f"{address}/24", "dev", link.ifname_of(self.lan))
        return address


class Vpn:
    """A running `pytun vpn`: its stdout lines (a reader thread) and stderr (a file)."""

    def __init__(self, vl, args, name):
        self.name = name
        self.log = vl.lab.path(name + ".stderr")
        with open(self.log, "ab") as err:
            self.proc = vl.client.spawn(args, env=vl.env, stdout=subprocess.PIPE, stderr=err, text=True)
        self.lines = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def stderr(self):
        with open(self.log, errors="replace") as f:
            return f.read()

    def describe(self):
        state = f"exited with {self.proc.returncode}" if self.proc.poll() is not None else "running"
        return (f"pytun vpn ({state}); stdout: {self.lines}\nstderr (last 3000 characters):\n"
                f"{self.stderr()[-3000:]}")

    def up_line(self):
        return next((line for line in self.lines if line.startswith(UP_PREFIX)), None)

    def wait_up(self, timeout=30):
        """Until the one stdout line 'pytun vpn: up...'; fails early if pytun exits."""
        wait_until(lambda: self.up_line() or self.proc.poll() is not None, timeout)
        line = self.up_line()
        if not line:
            raise Failure(f"no line starting with {UP_PREFIX!r} on stdout within {timeout} s: {self.describe()}")
        return line

    def wait_stderr(self, fragment, timeout=30):
        if not wait_until(lambda: fragment in self.stderr() or self.proc.poll() is not None, timeout) \
                or fragment not in self.stderr():
            raise Failure(f"no {fragment!r} in pytun vpn's stderr within {timeout} s: {self.describe()}")

    def signal(self, sig, timeout=20):
        """Send `sig` by PID and wait for the exit; returns the exit status."""
        try:
            self.proc.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise Failure(f"pytun vpn did not exit within {timeout} s of {sig.name}: {self.describe()}") from None


# --- probes (they run in the client namespace) -------------------------------------

def connect_outcome(ns, address, timeout=DIRECT_TIMEOUT):
    """What a client sees connecting to `address` and waiting for data:
    'timeout', 'refused', 'reset', 'eof', 'unreachable', 'blocked' or 'connected' (data came)."""
    def probe():
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            try:
                s.connect(address)
                s.sendall(b"ping\n")
                data = s.recv(64)
            except ConnectionRefusedError:
                return "refused"
            except (ConnectionResetError, BrokenPipeError):
                return "reset"
            except (socket.timeout, TimeoutError):
                return "timeout"
            except OSError as e:
                if e.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
                    return "unreachable"
                if e.errno in (errno.EPERM, errno.EACCES):
                    return "blocked"  # a local firewall rule rejected or dropped it
                raise
            return "connected" if data else "eof"
    return ns.call(probe)


def udp_send(ns, address):
    """One UDP datagram to `address`: None when it was sent, else the error (a local reject)."""
    def send():
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            try:
                s.sendto(b"not carried\n", address)
            except OSError as e:
                return e.strerror
        return None
    return ns.call(send)


def echo_once(ns, address, payload=b"hello through pytun vpn\n", timeout=10):
    """One connection: payload out, half-close, everything back until EOF; True when it matches."""
    def run():
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.settimeout(timeout)
                s.connect(address)
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
                got = b""
                while chunk := s.recv(65536):
                    got += chunk
                return got == payload
        except OSError:
            return False
    return ns.call(run)


def bulk_echo(ns, address, size):
    """`size` random bytes to an echo while its answer is read: (sha256 sent, sha256 received, bytes back)."""
    def run():
        sent, back = hashlib.sha256(), hashlib.sha256()
        count = 0
        with socket.create_connection(address, 30) as s:
            def send():
                left = size
                while left:
                    chunk = os.urandom(min(left, 1 << 20))
                    sent.update(chunk)
                    s.sendall(chunk)
                    left -= len(chunk)
                s.shutdown(socket.SHUT_WR)
            sender = threading.Thread(target=send, daemon=True)
            sender.start()
            while chunk := s.recv(1 << 20):
                back.update(chunk)
                count += len(chunk)
            sender.join(60)
        return sent.hexdigest(), back.hexdigest(), count
    return ns.call(run)


def http_get(ns, host, path):
    host_part = f"[{host}]" if ":" in host else host
    return ns.call(lambda: urllib.request.urlopen(f"http://{host_part}:{HTTP_PORT}{path}", timeout=10).read().decode())


# --- firewall state ------------------------------------------------------------------

COUNTER_VALUES = re.compile(r"(packets|bytes) \d+|\[\d+:\d+\]")


def rulesets(ns):
    """nft list ruleset, iptables-save, ip6tables-save in `ns`, without the comments
    (dates) and counter values (traffic, not rules)."""
    out = {}
    for name, args in (("nft list ruleset", [netlab._tool("nft"), "list", "ruleset"]),
                       ("iptables-save", [netlab._tool("iptables-save")]),
                       ("ip6tables-save", [netlab._tool("ip6tables-save")])):
        text = ns.run(args).stdout
        lines = [COUNTER_VALUES.sub(lambda m: m.group(1) or "[0:0]", line) for line in text.splitlines()
                 if not line.startswith("#")]
        out[name] = "\n".join(lines)
    return out


def diff_rulesets(before, after):
    return "; ".join(f"{name}: before\n{before[name]}\nafter\n{after[name]}" for name in before
                     if before[name] != after[name])


def pytun_rules(ns):
    """pytun's own tables and chains in `ns` (nft tables pytun_vpn_*, iptables chains PYTUN-*)."""
    now = rulesets(ns)
    return [line.strip() for text in now.values() for line in text.splitlines()
            if "pytun_vpn_" in line or line.startswith(":PYTUN-")]


class LanCounter:
    """An nft counter of the packets leaving the client's veth for the LAN's addresses
    (a table of the test's own): what a capture redirects never leaves, so any
    count is a packet that went the direct way."""

    TABLE = "vpntest_direct"

    def __init__(self, vl):
        t = vl.topo
        self.ns = vl.client
        rules = f'oifname "{vl.client_if}" ip daddr {t.lan_subnet} counter name "lan"'
        if t.lan_subnet6:
            rules += f'\n        oifname "{vl.client_if}" ip6 daddr {t.lan_subnet6} counter name "lan"'
        self.ns.nft(f"""
table inet {self.TABLE} {{
    counter lan {{ }}
    chain post {{
        type filter hook postrouting priority 500;
        {rules}
    }}
}}
""")

    def packets(self):
        out = self.ns.run([netlab._tool("nft"), "list", "counter", "inet", self.TABLE, "lan"]).stdout
        return int(re.search(r"packets (\d+)", out).group(1))


# --- cases -----------------------------------------------------------------------------

def commands_run(topo):
    """How many sessions sshd started with a command (its log at LogLevel VERBOSE)."""
    with open(topo.sshd["sshd_log"], errors="replace") as f:
        return f.read().count("Starting session: command")


def case_traffic(vl):
    """Item 1: nothing reaches the LAN directly; through pytun vpn: echo, 64 MiB both ways
    intact, 200 connections at once, an HTTP GET, all to the LAN's real addresses."""
    t = vl.topo
    body = vl.start_http()
    outcome = connect_outcome(vl.client, vl.echo)
    check(outcome in ("timeout", "unreachable"),
          f"before pytun vpn, a direct connection from the client to the LAN's echo {vl.echo} fails ({outcome})")
    vpn = vl.start(t.lan_subnet)
    line = vpn.wait_up()
    check(t.lan_subnet in line and f"through {vl.remote}" in line and "method nft" in line and "DNS off" in line,
          f"the up line names the subnet, the bastion, DNS off and the method: {line!r}")
    check(len([x for x in vpn.lines if x.startswith(UP_PREFIX)]) == 1, "pytun vpn prints one up line")
    # Bursts (docs/vpn.md): WARM_SESSIONS SSH connections stay open by default, and each runs `true` once,
    # which is what makes sshd turn on TCP_NODELAY for it.
    check(wait_until(lambda: t.sshd_connections() == WARM_SESSIONS, 20),
          f"{WARM_SESSIONS} SSH connections kept open while idle by default (sshd holds {t.sshd_connections()})")
    check(wait_until(lambda: commands_run(t) >= WARM_SESSIONS, 20),
          f"each of them ran a command on the bastion (sshd.log: {commands_run(t)} sessions with a command)")
    check(echo_once(vl.client, vl.echo), f"an echo to the LAN's {t.lan_ip}:{t.echo_port} through the tunnel")
    vpn.wait_stderr(f"-> {t.lan_ip}:{t.echo_port}", 10)
    check(re.search(r"connection #\d+: \S+ -> " + re.escape(f"{t.lan_ip}:{t.echo_port}"), vpn.stderr()),
          "-v logs the connection with its original destination")
    check(wait_until(lambda: re.search(r"connection #\d+: ended after [\d.]+ s \([^)]*\): \d+ bytes out, \d+ bytes in",
                                       vpn.stderr()), 10),
          "-v logs its end: duration, how, bytes each way")

    t0 = time.monotonic()
    sent, back, count = bulk_echo(vl.client, vl.echo, BULK)
    seconds = time.monotonic() - t0
    check(count == BULK and sent == back,
          f"{BULK >> 20} MiB out and {count >> 20} MiB back through the echo with equal sha256 "
          f"({seconds:.1f} s, {2 * BULK / seconds / (1 << 20):.0f} MiB/s both ways together)")

    r = vl.client.call(socks_burst.burst, None, vl.echo, BURST, 32, 60.0)
    check(r["ok"] == BURST and not r["failures"],
          f"{BURST} connections opened at the same instant all get their echo "
          f"(p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms; failures {r['failures'][:3]})")

    got = http_get(vl.client, t.lan_ip, "/hello.txt")
    check(got == body, f"HTTP GET http://{t.lan_ip}:{HTTP_PORT}/hello.txt through the tunnel: {got!r}")
    check(vpn.proc.poll() is None, "pytun vpn still runs")
    check(vpn.signal(signal.SIGTERM) == 0, "SIGTERM: exit 0")


def case_exclude(vl):
    """Item 2: -x leaves an address uncaptured; a refused port resets the client; an IPv6 subnet;
    UDP to a captured subnet and IPv6 under --disable-ipv6 are blocked, not leaked."""
    t = vl.topo
    excluded = vl.lan_address(3)
    check(vl.bastion.call(lambda: socket.create_connection((excluded, t.echo_port), 5).close()) is None,
          f"the LAN's second address {excluded} serves the echo (from the bastion)")
    counter = LanCounter(vl)
    args = [t.lan_subnet, "-x", f"{excluded}/32"]
    if t.lan_subnet6:
        args.append(t.lan_subnet6)
    vpn = vl.start(*args)
    line = vpn.wait_up()
    check(f"not {excluded}/32" in line, f"the up line names the exclude: {line!r}")
    check(echo_once(vl.client, vl.echo), f"{t.lan_ip} (captured) answers through the tunnel")
    before = counter.packets()
    outcome = connect_outcome(vl.client, (excluded, t.echo_port))
    check(outcome == "timeout", f"-x {excluded}/32: a connection to it is not captured, it goes direct "
                                f"and the bastion drops it ({outcome})")
    check(counter.packets() > before, "its SYNs left the client's interface directly (nft counter)")
    before = counter.packets()
    outcome = connect_outcome(vl.client, (t.lan_ip, REFUSED_PORT))
    check(outcome in ("refused", "reset"),
          f"a refused port in the LAN ({t.lan_ip}:{REFUSED_PORT}): the client gets a TCP reset, "
          f"not EOF after a connect ({outcome})")
    check(counter.packets() == before, "the refused connection did not go out directly")
    vpn.wait_stderr("connection #", 5)
    if t.lan_subnet6:
        check(echo_once(vl.client, vl.echo6), f"IPv6: an echo to [{t.lan_ip6}]:{t.echo_port} through the tunnel")
        sent, back, count = bulk_echo(vl.client, vl.echo6, 4 << 20)
        check(sent == back and count == 4 << 20, "IPv6: 4 MiB intact both ways")
        outcome = connect_outcome(vl.client, (t.lan_ip6, REFUSED_PORT))
        check(outcome in ("refused", "reset"), f"IPv6: a refused port resets the client ({outcome})")
        check(counter.packets() == before, "no IPv6 packet to the LAN went out directly")
    for address in [(t.lan_ip, 53)] + ([(t.lan_ip6, 53)] if t.lan_ip6 else []):
        error = udp_send(vl.client, address)
        check(counter.packets() == before, f"UDP to {address} (a captured subnet, not carried) is blocked, "
                                           f"not leaked ({error})")
    check(vpn.signal(signal.SIGTERM) == 0, "SIGTERM: exit 0")
    if not t.lan_subnet6:
        return
    vpn = vl.start("--disable-ipv6", t.lan_subnet, t.lan_subnet6)
    vpn.wait_up()
    check(echo_once(vl.client, vl.echo), "--disable-ipv6: IPv4 is carried")
    outcome = connect_outcome(vl.client, vl.echo6)
    check(outcome in ("refused", "blocked", "unreachable") and counter.packets() == before,
          f"--disable-ipv6: a connection to the IPv6 subnet is blocked at once, nothing leaves ({outcome})")
    check(vpn.signal(signal.SIGTERM) == 0, "SIGTERM: exit 0")


def case_bastion_subnet(vl):
    """Item 3: a subnet that contains the bastion's own address: up, carries, reconnects."""
    t = vl.topo
    everything = "198.18.0.0/15"  # the client's link (the bastion: 198.18.0.2) and the LAN
    counter = LanCounter(vl)
    vpn = vl.start(everything)
    line = vpn.wait_up()
    check(f"capturing {everything} through" in line,
          f"with {everything}, which contains the bastion {t.ssh_host}, the tunnel comes up: {line!r}")
    check(echo_once(vl.client, vl.echo), "and carries connections to the LAN")
    check(counter.packets() == 0, "nothing went to the LAN directly")
    t.stop_sshd()
    check(wait_until(lambda: connect_outcome(vl.client, vl.echo) in ("reset", "refused"), 10),
          "sshd stopped: captured connections are reset")
    t.start_sshd()
    listening = time.monotonic()
    back = wait_until(lambda: echo_once(vl.client, vl.echo, timeout=2), 15)
    check(back, f"sshd back: pytun reconnects to {t.ssh_host} although the capture covers it "
                f"({time.monotonic() - listening:.1f} s after sshd listened)")
    check(counter.packets() == 0, "still nothing went to the LAN directly")
    check(vpn.signal(signal.SIGTERM) == 0, "SIGTERM: exit 0")


def case_sigterm(vl):
    """Item 4: SIGTERM leaves the ruleset exactly as it was; nothing left in the journal directory;
    a second run of the same capture is refused without disturbing the first."""
    before = rulesets(vl.client)
    vpn = vl.start(vl.topo.lan_subnet)
    vpn.wait_up()
    check(pytun_rules(vl.client), f"while up, pytun's rules are in the client's ruleset: {pytun_rules(vl.client)}")
    check(echo_once(vl.client, vl.echo), "a connection through the tunnel")
    installed = rulesets(vl.client)
    second = vl.start("-l", "12299", vl.topo.lan_subnet)  # the same capture: same bastion and user
    try:
        rc = second.proc.wait(30)
    except subprocess.TimeoutExpired:
        rc = None
    check(rc == 1 and f"pid {vpn.proc.pid}" in second.stderr() and not second.up_line(),
          f"a second pytun vpn for the same bastion in this namespace exits 1 naming the first ({rc})")
    check(rulesets(vl.client) == installed and echo_once(vl.client, vl.echo),
          "and leaves the first one's rules alone: it still carries")
    check(vpn.signal(signal.SIGTERM) == 0, "SIGTERM: exit 0")
    after = rulesets(vl.client)
    check(after == before, "after SIGTERM nft list ruleset, iptables-save and ip6tables-save are exactly as "
                           "before " + diff_rulesets(before, after))
    check(not os.listdir(os.path.join(vl.runtime, "vpn")) if os.path.isdir(os.path.join(vl.runtime, "vpn"))
          else True, "no journal is left")
    vpn = vl.start(vl.topo.lan_subnet)
    vpn.wait_up()
    check(vpn.signal(signal.SIGINT) == 0 and rulesets(vl.client) == before, "SIGINT: the same")


def case_sigterm_slow_shell(vl):
    """Item 4 with a bastion whose shell does not finish the `true` each SSH connection runs (a forced
    command that goes on, a login script stuck on a lock): up and carrying all the same, and SIGTERM
    exits at once, not after the 5 s grace period that connections get, with the ruleset as before."""
    with open(vl.topo.sshd["sshd_config"], "a") as f:
        f.write("ForceCommand sleep 20\n")
    vl.topo.stop_sshd()
    vl.topo.start_sshd()
    before = rulesets(vl.client)
    vpn = vl.start(vl.topo.lan_subnet)
    vpn.wait_up()
    check(echo_once(vl.client, vl.echo), "a connection through the tunnel")
    forced = lambda: open(vl.topo.sshd["sshd_log"], errors="replace").read().count("Starting session: forced-command")
    check(wait_until(lambda: forced() >= 12, 10), f"the 12 warm SSH connections each run the forced command "
                                                   f"({forced()})")
    started = time.monotonic()
    rc = vpn.signal(signal.SIGTERM)
    took = time.monotonic() - started
    check(rc == 0 and took < 2.5, f"SIGTERM with no connection open: exit 0 within 2.5 s ({rc} after {took:.1f} s; "
                                  f"connections get 5 s)")
    check(rulesets(vl.client) == before, "the ruleset is as before")


def case_crash(vl):
    """Item 4: after SIGKILL the rules stay; the next start removes them first; so does --cleanup,
    also when the journal is gone too (rules restored by netfilter-persistent, /run emptied)."""
    before = rulesets(vl.client)
    journals = os.path.join(vl.runtime, "vpn")
    for round_ in ("next start", "--cleanup", "--cleanup without a journal"):
        vpn = vl.start(vl.topo.lan_subnet)
        vpn.wait_up()
        installed = rulesets(vl.client)
        check(vpn.signal(signal.SIGKILL) == -signal.SIGKILL, "SIGKILL")
        check(rulesets(vl.client) == installed and pytun_rules(vl.client),
              "after SIGKILL pytun's rules are still there (nobody removed them)")
        outcome = connect_outcome(vl.client, vl.echo)
        check(outcome in ("refused", "reset", "timeout"),
              f"and they still capture: the LAN is cut off, not reached directly ({outcome})")
        if round_ == "next start":
            vpn = vl.start(vl.topo.lan_subnet)
            vpn.wait_up()
            said = [x for x in vpn.stderr().splitlines() if "removed the capture" in x]
            check(said, f"the next start says it removed what the killed run left: {said}")
            check(echo_once(vl.client, vl.echo), "and carries connections")
            check(vpn.signal(signal.SIGTERM) == 0, "SIGTERM: exit 0")
            after = rulesets(vl.client)
            check(after == before, "then SIGTERM leaves the ruleset exactly as before the first run "
                                   "(the leftover is gone, not doubled) " + diff_rulesets(before, after))
        else:
            if round_ == "--cleanup without a journal":
                check(os.listdir(journals), f"the killed run's journal is in {journals}")
                for name in os.listdir(journals):
                    os.remove(os.path.join(journals, name))
            r = vl.run(["vpn", "--cleanup"])
            check(r.returncode == 0, f"{round_}: pytun vpn --cleanup exits 0 ({r.returncode}): {r.stdout}{r.stderr}")
            check("removed" in r.stdout + r.stderr, f"and says what it removed: {r.stdout}{r.stderr}")
            after = rulesets(vl.client)
            check(after == before, "the ruleset is exactly as before " + diff_rulesets(before, after))
            r = vl.run(["vpn", "--cleanup"])
            check(r.returncode == 0, f"a second --cleanup has nothing to do and exits 0: {r.stdout}{r.stderr}")
    check(not os.listdir(journals), "no journal is left")


def host_firewall(ns):
    """Rules of the host's own (iptables, both families) that pytun must leave alone."""
    for tool, address in (("iptables", "198.19.255.1"), ("ip6tables", "fd00:198:19:ff::1")):
        path = netlab._tool(tool)
        ns.run([path, "-w", "-t", "nat", "-A", "OUTPUT", "-d", address, "-p", "tcp", "-j", "RETURN"])
        ns.run([path, "-w", "-A", "OUTPUT", "-d", address, "-j", "DROP"])


def rule_lines(text):
    """The lines of a ruleset that are rules or chains of their own (not a table's
    built-in chains with their policy, which iptables-nft never removes)."""
    out = []
    for line in text.splitlines():
        words = line.strip()
        if line.startswith("-A") or "pytun" in line.lower():
            out.append(line)  # an iptables rule, anything of pytun's
        elif line.startswith("\t\t") and not words.startswith("type ") and words != "}":
            out.append(line)  # an nft rule (chains hold their type line and their rules two tabs in)
    return out


def case_nat(vl):
    """Item 4: --method nat (iptables): up, carries, SIGTERM restores iptables-save exactly;
    SIGKILL then --cleanup too."""
    # A namespace without any iptables rule: iptables-nft creates the built-in chains
    # of nat and filter on first use and never removes them; nothing else may stay.
    t = vl.topo
    vpn = vl.start("--method", "nat", t.lan_subnet, *([t.lan_subnet6] if t.lan_subnet6 else []))
    line = vpn.wait_up()
    check("method nat" in line, f"the up line says method nat: {line!r}")
    check(any(x.startswith(":PYTUN-") for x in pytun_rules(vl.client)),
          f"iptables chains PYTUN-*: {pytun_rules(vl.client)}")
    check(echo_once(vl.client, vl.echo), "a connection through the tunnel")
    if t.lan_subnet6:
        check(echo_once(vl.client, vl.echo6), "and one over IPv6 (ip6tables)")
        outcome = connect_outcome(vl.client, (t.lan_ip6, REFUSED_PORT))
        check(outcome in ("refused", "reset"), f"a refused IPv6 port resets the client ({outcome})")
    check(vpn.signal(signal.SIGTERM) == 0, "SIGTERM: exit 0")
    left = {name: rule_lines(text) for name, text in rulesets(vl.client).items()}
    check(not any(left.values()), f"from a namespace without rules: not one rule or chain of pytun's is left "
                                  f"(only the built-in chains iptables-nft made): {left}")

    host_firewall(vl.client)
    before = rulesets(vl.client)
    vpn = vl.start("--method", "nat", vl.topo.lan_subnet)
    vpn.wait_up()
    check(echo_once(vl.client, vl.echo), "with the host's own iptables rules in place: a connection")
    check(vpn.signal(signal.SIGTERM) == 0, "SIGTERM: exit 0")
    after = rulesets(vl.client)
    check(after == before, "after SIGTERM iptables-save, ip6tables-save and nft list ruleset are exactly as before "
                           "(the host's own rules kept) " + diff_rulesets(before, after))
    vpn = vl.start("--method", "nat", vl.topo.lan_subnet)
    vpn.wait_up()
    check(vpn.signal(signal.SIGKILL) == -signal.SIGKILL and pytun_rules(vl.client), "SIGKILL leaves the chains")
    r = vl.run(["vpn", "--cleanup"])
    after = rulesets(vl.client)
    check(r.returncode == 0 and "removed" in r.stdout and after == before,
          f"--cleanup removes them, the host's rules stay ({r.returncode}: {r.stdout.strip()} {r.stderr.strip()}) "
          + diff_rulesets(before, after))


def outage(vl, fail_open):
    t = vl.topo
    counter = LanCounter(vl)
    vpn = vl.start(*(["--fail-open"] if fail_open else []), t.lan_subnet, *([t.lan_subnet6] if t.lan_subnet6 else []))
    vpn.wait_up()
    check(echo_once(vl.client, vl.echo), "before the outage: an echo through the tunnel")
    # An established connection across the outage: it goes with the SSH connection.
    t.stop_sshd()
    if fail_open:
        check(wait_until(lambda: not pytun_rules(vl.client), 10),
              "--fail-open: with the bastion gone the capture is lifted")
        away = time.monotonic()
        before = counter.packets()
        outcome = connect_outcome(vl.client, vl.echo)
        check(outcome == "timeout" and counter.packets() > before,
              f"and a connection to the LAN goes the direct way (counted on the client's interface; {outcome})")
        time.sleep(max(0.0, OUTAGE - (time.monotonic() - away)))  # the same outage as fail-closed
    else:
        check(wait_until(lambda: connect_outcome(vl.client, vl.echo) in ("reset", "refused"), 10),
              "sshd stopped: a captured connection is reset")
        # Probes for OUTAGE seconds: long enough for pytun's retries to back off.
        outcomes = []
        end = time.monotonic() + OUTAGE
        while time.monotonic() < end:
            for address in [vl.echo, (t.lan_ip, REFUSED_PORT)] + ([vl.echo6] if t.lan_ip6 else []):
                t0 = time.monotonic()
                outcomes.append((connect_outcome(vl.client, address), time.monotonic() - t0))
            time.sleep(0.2)  # pacing the probes, not waiting for a condition
        bad = [(o, round(s, 3)) for o, s in outcomes if o not in ("reset", "refused") or s >= 1.0]
        check(not bad, f"during {OUTAGE} s of outage all {len(outcomes)} captured connections (IPv4, IPv6, "
                       f"a refused port) were reset at once (slowest {max(s for _, s in outcomes):.3f} s; "
                       f"other outcomes: {bad[:5]})")
        check(counter.packets() == 0, "and not one packet to the LAN left the client directly (fail-closed)")
        check(pytun_rules(vl.client), "the rules stay in place")
    t.start_sshd()
    listening = time.monotonic()
    back = wait_until(lambda: echo_once(vl.client, vl.echo, timeout=1), 5.0, step=0.1)
    took = time.monotonic() - listening
    check(back, f"new connections work again within 5 s of sshd listening, pytun not restarted ({took:.1f} s)")
    check(vpn.proc.poll() is None and len([x for x in vpn.lines if x.startswith(UP_PREFIX)]) == 1,
          "the same pytun vpn process, one up line")
    if not fail_open:
        check(counter.packets() == 0, "over the whole outage nothing went out the direct route")
    else:
        check(pytun_rules(vl.client), "--fail-open: the capture is back")
    if t.lan_ip6:
        check(echo_once(vl.client, vl.echo6), "IPv6 after the outage")
    check(vpn.signal(signal.SIGTERM) == 0, "SIGTERM: exit 0")


def case_outage(vl):
    """Item 5: sshd restarted while running: fail-closed resets, no leak, back within 5 s."""
    outage(vl, fail_open=False)


def case_fail_open(vl):
    """Item 5, --fail-open: the capture is lifted during the outage and comes back."""
    outage(vl, fail_open=True)


def case_usage(vl):
    """Item 6: bad command lines exit 2 with a clear message; non-root exits 1 (root or CAP_NET_ADMIN)."""
    t = vl.topo
    before = rulesets(vl.client)
    base = vl.base_args()[1:]
    bad = [
        (base, "no subnet", ("subnet",)),
        ([*base, "198.18.1.0/33"], "a bad CIDR", ("198.18.1.0/33",)),
        ([*base, "--method", "pf", t.lan_subnet], "a bad --method", ("pf", "method")),
        (["vpn", "-i", t.key, "--known-hosts", t.known_hosts, t.lan_subnet], "no -r", ("-r",)),
        ([*base, "-x", "not/a/cidr", t.lan_subnet], "a bad -x", ("not/a/cidr",)),
    ]
    for args, what, fragments in bad:
        r = vl.run(args)
        check(r.returncode == 2 and all(f.lower() in r.stderr.lower() for f in fragments) and not r.stdout,
              f"{what}: exit 2, stderr names {fragments}, nothing on stdout ({r.returncode}: {r.stderr.strip()!r})")
        check(len(r.stderr.strip().splitlines()) <= 3, f"{what}: a short message, not the whole help")
    check(rulesets(vl.client) == before, "none of them touched the firewall")

    # Not root: a copy of the key and known_hosts that nobody may read, so only privileges are missing.
    setpriv = netlab._tool("setpriv")
    if not setpriv:
        print("setpriv not found (util-linux): the non-root check is left out")
        return
    home = tempfile.mkdtemp(prefix="pytun-vpn-nobody-")
    try:
        os.chmod(home, 0o755)
        key = os.path.join(home, "id_ed25519")
        known = os.path.join(home, "known_hosts")
        shutil.copy(t.key, key)
        shutil.copy(t.known_hosts, known)
        nobody = pwd.getpwnam("nobody").pw_uid
        for path in (key, known):
            os.chown(path, nobody, -1)
        os.chmod(key, 0o600)
        drop = [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--inh-caps=-all"]
        r = run_bounded([vl.lab.ip_path, "netns", "exec", vl.client.name, *drop, vl.binary, "vpn", "-r",
                         vl.remote, "-i", key, "--known-hosts", known, t.lan_subnet], vl.env, 30)
        check(r.returncode == 1 and "root" in r.stderr and "CAP_NET_ADMIN" in r.stderr and not r.stdout,
              f"as nobody without capabilities: exit 1, saying it needs root or CAP_NET_ADMIN "
              f"({r.returncode}: {r.stderr.strip()!r})")
        r = run_bounded([vl.lab.ip_path, "netns", "exec", vl.client.name, *drop, vl.binary, "vpn", "--cleanup"],
                        vl.env, 30)
        check(r.returncode == 1 and "CAP_NET_ADMIN" in r.stderr,
              f"--cleanup as nobody: exit 1, the same reason ({r.returncode}: {r.stderr.strip()!r})")
    finally:
        shutil.rmtree(home, ignore_errors=True)
    check(rulesets(vl.client) == before, "the firewall is as before")


CASES = {
    "usage": case_usage,
    "traffic": case_traffic,
    "exclude": case_exclude,
    "bastion-subnet": case_bastion_subnet,
    "sigterm": case_sigterm,
    "sigterm-slow-shell": case_sigterm_slow_shell,
    "crash": case_crash,
    "nat": case_nat,
    "outage": case_outage,
    "fail-open": case_fail_open,
}


def main():
    if len(sys.argv) != 3 or sys.argv[2] not in CASES:
        print(f"usage: {sys.argv[0]} BINARY {{{'|'.join(CASES)}}}", file=sys.stderr)
        return 2
    binary, case = os.path.abspath(sys.argv[1]), sys.argv[2]
    reason = netlab.unavailable_reason()
    for tool, package in (("iptables-save", "iptables"), ("ip6tables-save", "iptables")):
        if not reason and not netlab._tool(tool):
            reason = f"{tool} not found (install {package})"
    if reason:
        print(f"SKIP: {reason}")
        return EXIT_SKIP
    try:
        with netlab.Lab() as lab:
            vl = VpnLab(lab, binary)
            try:
                CASES[case](vl)
            except Failure:
                for vpn in vl.vpns:  # before the lab and its files go
                    print(f"--- {vpn.name}: {vpn.describe()}")
                raise
    except Failure as e:
        print(f"FAIL: {e}", flush=True)
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
