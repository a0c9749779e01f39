#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Network lab for tests and benchmarks: namespaces, veth links, latency, an SSH topology, cleanup by PID.
"""Network namespaces that a test creates, uses and removes, whatever happens.

    with netlab.Lab() as lab:
        topo = lab.ssh_topology(delay_ms=10)          # client -- bastion (sshd) -- lan
        ssh = topo.client.spawn(topo.ssh_command("-N", "-D", "127.0.0.1:1080"))
        topo.client.wait_listening(1080, proc=ssh)
        with topo.client.create_connection((topo.lan_ip, topo.echo_port), 5) as s: ...

What a Lab creates:
- namespaces named pytun-<pid>-<serial>-<role> (serial counts per process,
  so parallel runs and several labs never clash), loopback up;
- veth pairs created directly inside their two namespaces (`ip -n`), link k
  numbered per lab with 198.(18 + k // 256).(k % 256).0/24 (.1 on the first
  namespace, .2 on the second) and fd00:198:(18 + k // 256):(k % 256)::/64
  (::1, ::2; DAD off, so addresses work at once); the interface in a
  namespace is named after the namespace it leads to: to-<role>;
- routes, sysctls, nft tables: only inside its namespaces;
- on request (`Namespace.resolv_conf`), /etc/netns/NAME/resolv.conf, which
  `ip netns exec` bind-mounts over /etc/resolv.conf for the programs it
  starts in NAME (removed with the namespace).

Nothing is added to the machine's own namespace: no address, route, rule or
interface. Every process the lab starts (`Namespace.spawn`) is tracked by
PID and ended by PID (SIGTERM, SIGKILL after STOP_GRACE, reaped); anything
else still running in a lab namespace at the end (sshd's per-connection
children) is found by the namespace it is in and ended the same way; then
the namespaces are deleted. That happens when the `with` block ends
(normally or by an exception), on SIGTERM/SIGINT to the test (turned into
SystemExit/KeyboardInterrupt so the `with` unwinds), at interpreter exit,
and, if the test is SIGKILLed (meson's timeout does that 0.5 s after its
SIGTERM), by a guard process in its own session that waits for the test to
die and removes what is left.

A Lab needs root, `ip`, `nft` and `sysctl`; without them `Lab()` prints why
and raises LabUnavailable, a SystemExit with code 77 (meson: skipped).
Standard library only.
"""

from __future__ import annotations

import atexit
import ctypes
import ipaddress
import itertools
import json
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import sshd_fixture  # noqa: E402  (tests/support/sshd_fixture.py)
from testcheck import wait_until  # noqa: E402

DELAY_RELAY = os.path.join(HERE, "delay_relay.py")
SERVICES = os.path.join(REPO, "bench", "services.py")

EXIT_SKIP = 77
PREFIX = "pytun-"
SSH_PORT = 2222           # the bastion's SSH port as clients see it
SSHD_BEHIND_RELAY = 2200  # where sshd listens (127.0.0.1) when a relay adds delay
STOP_GRACE = 3.0          # seconds between SIGTERM and SIGKILL
MAX_LINKS = 512           # /24s in 198.18.0.0/15

_serial = itertools.count()
_NAMESPACE_NAME = re.compile(r"^[a-z][a-z0-9]{0,15}$")


class LabError(RuntimeError):
    """A lab operation failed (the message names the command and its error)."""


class LabUnavailable(SystemExit):
    """The lab cannot run here; uncaught, the test exits 77 (skipped)."""

    def __init__(self, reason: str):
        super().__init__(EXIT_SKIP)
        self.reason = reason
        print(f"netlab: skipping: {reason}", file=sys.stderr, flush=True)


def _tool(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")


def unavailable_reason() -> str | None:
    """Why a Lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for name, package in (("ip", "iproute2"), ("nft", "nftables"), ("sysctl", "procps")):
        if _tool(name) is None:
            return f"{name} not found (install {package})"
    return None


def netns_names() -> list[str]:
    """Every named network namespace on the machine (`ip netns list`)."""
    try:
        return sorted(os.listdir("/run/netns"))
    except FileNotFoundError:
        return []


# --------------------------------------------------------------------------
# Ending processes that live in a namespace: by PID, identified by namespace.

def _namespace_key(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _pids_in_namespace(key: tuple[int, int]) -> list[int]:
    """Processes whose network namespace is `key` (what `ip netns pids` reads); zombies have none."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid() and _namespace_key(f"/proc/{entry}/ns/net") == key:
            pids.append(int(entry))
    return pids


def _signal_in_namespace(pid: int, key: tuple[int, int], sig: int) -> None:
    """Signal `pid` only if it is still the process in our namespace (pidfd: no PID-reuse race)."""
    try:
        fd = os.pidfd_open(pid)
    except (ProcessLookupError, AttributeError, OSError):
        return
    try:
        if _namespace_key(f"/proc/{pid}/ns/net") == key:
            signal.pidfd_send_signal(fd, sig)
    except ProcessLookupError:
        pass
    finally:
        os.close(fd)


def _etc_netns(name: str) -> str:
    """Where `ip netns exec` finds files to bind-mount over /etc for namespace `name`."""
    return f"/etc/netns/{name}"


def _remove_namespace(ip: str, name: str) -> str | None:
    """End what runs in namespace `name`, then delete it. Returns an error message or None."""
    if name.startswith(PREFIX):  # only what a lab made (Namespace.resolv_conf)
        shutil.rmtree(_etc_netns(name), ignore_errors=True)
    path = f"/run/netns/{name}"
    key = _namespace_key(path)
    if key is None:
        return None
    for sig, grace in ((signal.SIGTERM, STOP_GRACE), (signal.SIGKILL, 5.0)):
        pids = _pids_in_namespace(key)
        if not pids:
            break
        for pid in pids:
            _signal_in_namespace(pid, key, sig)
        wait_until(lambda: not _pids_in_namespace(key), grace)
    left = _pids_in_namespace(key)
    r = subprocess.run([ip, "netns", "del", name], stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if r.returncode != 0:
        return f"ip netns del {name}: {r.stderr.strip()}"
    if left:
        return f"namespace {name} deleted, but processes {left} did not end"
    return None


def _stop_processes(procs: list[subprocess.Popen], grace: float = STOP_GRACE) -> None:
    """SIGTERM each (by PID), SIGKILL those still running after `grace`, reap all."""
    running = [p for p in procs if p.poll() is None]
    for p in running:
        try:
            p.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
    end = time.monotonic() + grace
    for p in running:
        try:
            p.wait(max(0.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    for p in procs:
        for pipe in (p.stdin, p.stdout, p.stderr):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass  # unflushed input for a process that is gone


# --------------------------------------------------------------------------
# Code that runs inside a namespace on a thread of this process.

def _setns_net(fd: int) -> None:
    if hasattr(os, "setns"):  # Python >= 3.12
        os.setns(fd, os.CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _proc_net_address(hexaddr: str) -> str:
    raw = bytes.fromhex(hexaddr)
    # /proc/net/tcp{,6} print each 32-bit word in host (little-endian) order.
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)


def _listening_here(port: int, host: str | None) -> bool:
    """Does a TCP socket listen on port (and host, or a wildcard) in this thread's namespace?"""
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/thread-self/net/{table}") as f:
                lines = f.read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] != "0A":  # TCP_LISTEN
                continue
            addr, _, port_hex = fields[1].partition(":")
            if int(port_hex, 16) != port:
                continue
            if host is None or _proc_net_address(addr) in (host, "0.0.0.0", "::"):
                return True
    return False


def _established_here(port: int) -> int:
    """TCP connections in this thread's namespace whose local port is `port`, established."""
    count = 0
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/thread-self/net/{table}") as f:
                lines = f.read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "01" and int(fields[1].rpartition(":")[2], 16) == port:  # TCP_ESTABLISHED
                count += 1
    return count


def _wait_listening_here(port: int, host: str | None, timeout: float, proc, what: str) -> None:
    end = time.monotonic() + timeout
    while not _listening_here(port, host):
        if proc is not None and proc.poll() is not None:
            raise LabError(f"{what} exited with {proc.returncode} before listening on port {port}")
        if time.monotonic() > end:
            raise LabError(f"nothing listens on port {port} in {what} after {timeout} s")
        time.sleep(0.02)


# --------------------------------------------------------------------------
# SIGTERM/SIGINT: unwind the test (so every Lab closes), but never in the
# middle of a Lab.close(): the signal is then acted on when it has finished.

_live_labs: list[Lab] = []
_closing = 0
_pending_signal: int | None = None


def _exception_for(signum: int) -> BaseException:
    return KeyboardInterrupt() if signum == signal.SIGINT else SystemExit(128 + signum)


def _on_signal(signum, _frame):
    global _pending_signal
    if _closing:
        _pending_signal = signum
        return
    raise _exception_for(signum)


def _install_signal_handlers() -> None:
    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may; the guard process still covers this test
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_signal)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_signal)


def _close_all_labs() -> None:
    for lab in list(reversed(_live_labs)):
        try:
            lab.close()
        except Exception as e:  # noqa: BLE001 (at exit: report and go on)
            print(f"netlab: at exit: {e}", file=sys.stderr)


atexit.register(_close_all_labs)


def _guard_main() -> int:
    """Run by a Lab in its own session: remove the namespaces it was told
    about (lines 'add NAME' / 'forget NAME' on stdin) once the Lab's process
    has gone (EOF), if it did not remove them itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    names: list[str] = []
    for line in sys.stdin:
        verb, _, name = line.strip().partition(" ")
        if verb == "add":
            names.append(name)
        elif verb == "forget" and name in names:
            names.remove(name)
    ip = _tool("ip")
    for name in reversed(names):
        print(f"netlab guard: the test died; removing namespace {name}", file=sys.stderr, flush=True)
        error = _remove_namespace(ip, name)
        if error:
            print(f"netlab guard: {error}", file=sys.stderr, flush=True)
    return 0


# --------------------------------------------------------------------------

class Namespace:
    """One network namespace of a Lab."""

    def __init__(self, lab: Lab, name: str, role: str):
        self.lab = lab
        self.name = name
        self.role = role
        self.routes: list[tuple[str, str]] = []  # (destination, gateway), re-applied by Link.restore
        self.ifnames: set[str] = {"lo"}
        self._counters: dict[str, PacketCounter] = {}

    def __repr__(self):
        return f"<Namespace {self.name}>"

    # Commands ------------------------------------------------------------
    def run(self, args: list[str], *, input: str | None = None, timeout: float = 60,
            check: bool = True) -> subprocess.CompletedProcess:
        """Run a command inside the namespace and wait for it (text output captured)."""
        return self.lab._run([self.lab.ip_path, "netns", "exec", self.name, *args], input=input,
                             timeout=timeout, check=check, where=self.name)

    def ip(self, *args: str) -> str:
        """`ip -n NAME ARGS...`; returns its output."""
        return self.lab._run([self.lab.ip_path, "-n", self.name, *args], where=self.name).stdout

    def nft(self, script: str) -> None:
        """Apply an nft script (one transaction) inside the namespace."""
        self.run([self.lab.nft_path, "-f", "-"], input=script)

    def sysctl(self, key: str, value=None) -> str:
        """Set `key` (when a value is given) inside the namespace; return its value."""
        if value is not None:
            self.run([self.lab.sysctl_path, "-q", "-w", f"{key}={value}"])
        return self.run([self.lab.sysctl_path, "-n", key]).stdout.strip()

    def resolv_conf(self, text: str) -> str:
        """Give the programs started here from now on (spawn, run) `text` as their
        /etc/resolv.conf (what `ip netns exec` does with /etc/netns/NAME/resolv.conf);
        those already running keep theirs. Returns the file's path."""
        directory = _etc_netns(self.name)
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, "resolv.conf")
        with open(path, "w") as f:
            f.write(text)
        return path

    def route(self, destination: str, gateway: str) -> None:
        """Add (or replace) a route, e.g. route("198.18.1.0/24", "198.18.0.2"), route("default", gw)."""
        family = ["-6"] if ":" in gateway else []
        self.ip(*family, "route", "replace", destination, "via", gateway)
        if (destination, gateway) not in self.routes:
            self.routes.append((destination, gateway))

    # Processes -----------------------------------------------------------
    def spawn(self, args: list[str], **popen_kw) -> subprocess.Popen:
        """Start a long-lived process inside the namespace (`ip netns exec` execs it, so
        proc.pid is the program's own PID); the lab ends it by PID at the latest on close."""
        popen_kw.setdefault("stdin", subprocess.DEVNULL)
        self.lab._check_open()
        proc = subprocess.Popen([self.lab.ip_path, "netns", "exec", self.name, *args], **popen_kw)
        self.lab.processes.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, grace: float = STOP_GRACE) -> int:
        """End one process started by spawn (SIGTERM, SIGKILL after `grace`); return its status."""
        _stop_processes([proc], grace)
        if proc in self.lab.processes:
            self.lab.processes.remove(proc)
        return proc.returncode

    def pids(self) -> list[int]:
        """Every process in this namespace now (those the lab started and their children)."""
        key = _namespace_key(f"/run/netns/{self.name}")
        return _pids_in_namespace(key) if key else []

    # In-process code and sockets inside the namespace --------------------
    def call(self, fn, *args, **kwargs):
        """Run fn(*args, **kwargs) on a new thread that has joined this namespace; return its
        result (or raise its exception). Sockets it creates stay in the namespace."""
        outcome: dict = {}

        def body():
            try:
                fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    _setns_net(fd)
                finally:
                    os.close(fd)
                outcome["value"] = fn(*args, **kwargs)
            except BaseException as e:  # noqa: BLE001 (handed to the caller)
                outcome["error"] = e

        # A daemon: if a signal unwinds the caller meanwhile, the exit does not wait for it.
        thread = threading.Thread(target=body, name=f"netns {self.name}", daemon=True)
        thread.start()
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    def socket(self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM) -> socket.socket:
        return self.call(socket.socket, family, type)

    def create_connection(self, address: tuple[str, int], timeout: float | None = None) -> socket.socket:
        """socket.create_connection from inside the namespace."""
        return self.call(socket.create_connection, address, timeout)

    def listening(self, port: int, host: str | None = None) -> bool:
        """Does a TCP socket listen on `port` (on `host` or a wildcard address) here?"""
        return self.call(_listening_here, port, host)

    def wait_listening(self, port: int, host: str | None = None, timeout: float = 15.0,
                       proc: subprocess.Popen | None = None) -> None:
        """Wait until something listens on `port` here; fail early if `proc` exits."""
        what = "the namespace"
        if proc is not None:  # spawn's args: ip netns exec NAME PROGRAM ...
            program = proc.args[4] if isinstance(proc.args, list) and len(proc.args) > 4 else proc.pid
            what = f"{os.path.basename(str(program))} (pid {proc.pid})"
        self.call(_wait_listening_here, port, host, timeout, proc,
                  f"{what} {self.name}" if proc is None else f"{what} in {self.name}")

    # Counting -------------------------------------------------------------
    def packet_counter(self, ifname: str) -> PacketCounter:
        """Counters of IP packets in and out of interface `ifname` (nft, inside this namespace)."""
        if ifname not in self._counters:
            self._counters[ifname] = PacketCounter(self, ifname)
        return self._counters[ifname]

    def _new_ifname(self, peer_role: str, index: int) -> str:
        name = f"to-{peer_role}"[:15]
        if name in self.ifnames:
            name = f"to{index}-{peer_role}"[:15]
        self.ifnames.add(name)
        return name


def _nft_name(ifname: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", ifname)


class PacketCounter:
    """nft counters of the IP packets that enter (prerouting) and leave (postrouting) one
    interface of a lab namespace. Packets a capture redirects to a local listener never
    leave through the interface and are not counted as sent."""

    def __init__(self, ns: Namespace, ifname: str):
        self.ns = ns
        self.ifname = ifname
        self.table = "pytun_count_" + _nft_name(ifname)
        ns.nft(f"""
table inet {self.table} {{
    counter rx {{ }}
    counter tx {{ }}
    chain pre {{ type filter hook prerouting priority -500; iifname "{ifname}" counter name "rx"; }}
    chain post {{ type filter hook postrouting priority 500; oifname "{ifname}" counter name "tx"; }}
}}
""")

    def read(self) -> dict[str, int]:
        """{'rx_packets', 'rx_bytes', 'tx_packets', 'tx_bytes'} since the counter was made."""
        out = self.ns.run([self.ns.lab.nft_path, "-j", "list", "counters", "table", "inet", self.table]).stdout
        counts = {}
        for item in json.loads(out)["nftables"]:
            c = item.get("counter")
            if c and c.get("table") == self.table:
                counts[c["name"] + "_packets"] = c["packets"]
                counts[c["name"] + "_bytes"] = c["bytes"]
        return counts


class Link:
    """A veth pair between namespaces a and b, with one /24 and one /64."""

    def __init__(self, lab: Lab, index: int, a: Namespace, b: Namespace, a_if: str, b_if: str):
        self.lab = lab
        self.index = index
        self.a, self.b = a, b
        self.a_if, self.b_if = a_if, b_if
        net = f"198.{18 + index // 256}.{index % 256}"
        net6 = f"fd00:198:{18 + index // 256}:{index % 256}::"
        self.subnet, self.a_ip, self.b_ip = f"{net}.0/24", f"{net}.1", f"{net}.2"
        # Compressed, as programs print them (fd00:198:18::2 for link 0).
        self.subnet6 = str(ipaddress.IPv6Network(net6 + "/64"))
        self.a_ip6, self.b_ip6 = (str(ipaddress.IPv6Address(net6 + n)) for n in ("1", "2"))
        self.cut_method: str | None = None

    def __repr__(self):
        return f"<Link {self.a.role}:{self.a_if} {self.a_ip} -- {self.b.role}:{self.b_if} {self.b_ip}>"

    def ends(self):
        return ((self.a, self.a_if, self.a_ip, self.a_ip6), (self.b, self.b_if, self.b_ip, self.b_ip6))

    def _end(self, ns: Namespace):
        for end in self.ends():
            if end[0] is ns:
                return end
        raise LabError(f"{ns.name} is not an end of {self!r}")

    def ip_of(self, ns: Namespace) -> str:
        """The IPv4 address `ns` has on this link."""
        return self._end(ns)[2]

    def ip6_of(self, ns: Namespace) -> str:
        return self._end(ns)[3]

    def ifname_of(self, ns: Namespace) -> str:
        return self._end(ns)[1]

    def counter(self, ns: Namespace) -> PacketCounter:
        """Packet counters on `ns`'s end of this link."""
        return ns.packet_counter(self.ifname_of(ns))

    def _configure(self) -> None:
        for ns, ifname, ip4, ip6 in self.ends():
            ns.ip("addr", "replace", f"{ip4}/24", "dev", ifname)
            if self.lab.ipv6:
                ns.ip("-6", "addr", "replace", f"{ip6}/64", "dev", ifname, "nodad")
            ns.ip("link", "set", ifname, "up")

    def cut(self, method: str = "drop") -> None:
        """Cut the link. "drop": an nft ingress rule on both ends drops every frame,
        silently (senders see no error, as with a dead cable far away). "down":
        both interfaces administratively down (the kernel then drops the routes
        through them; restore() puts them back)."""
        if self.cut_method is not None:
            raise LabError(f"{self!r} is already cut")
        if method == "drop":
            for ns, ifname, _, _ in self.ends():
                ns.nft(f"""
table netdev pytun_cut_{_nft_name(ifname)} {{
    chain ingress {{ type filter hook ingress device "{ifname}" priority -500; policy drop; }}
}}
""")
        elif method == "down":
            for ns, ifname, _, _ in self.ends():
                ns.ip("link", "set", ifname, "down")
        else:
            raise ValueError(f"cut method {method!r}: use 'drop' or 'down'")
        self.cut_method = method

    def restore(self) -> None:
        """Undo cut(): the link carries traffic again with its addresses and routes."""
        if self.cut_method == "drop":
            for ns, ifname, _, _ in self.ends():
                ns.nft(f"delete table netdev pytun_cut_{_nft_name(ifname)}")
        elif self.cut_method == "down":
            self._configure()
            for ns in (self.a, self.b):
                for destination, gateway in ns.routes:
                    ns.route(destination, gateway)
        self.cut_method = None


class SshTopology:
    """What Lab.ssh_topology built. Attributes:

    client, clients, bastion, lan      Namespaces (lan is None without one)
    links                              {client role or "lan": Link}
    ssh_host, ssh_host6, ssh_port      where the (first) client reaches sshd
    ssh_hosts                          {client role: bastion IPv4 on its link}
    sshd                               sshd_fixture info: user, key_*, known_hosts_* ...
    user, key, known_hosts             the ones a test normally wants
    bastion_lan_ip, lan_ip, lan_ip6, lan_subnet, lan_subnet6
    services, echo_port                bench/services.py ports in the lan (echo, sink, source)
    delay_ms, relay                    the delay relay process (None without delay)
    """

    def __init__(self, lab: Lab):
        self.lab = lab
        self.sshd_proc: subprocess.Popen | None = None
        self.relay: subprocess.Popen | None = None
        self.lan: Namespace | None = None
        self.services: dict[str, int] = {}

    def start_sshd(self) -> subprocess.Popen:
        """(Re)start sshd in the bastion; returns once it listens."""
        port = SSHD_BEHIND_RELAY if self.delay_ms > 0 else SSH_PORT
        self.sshd_proc = sshd_fixture.start_sshd(self.sshd, spawn=self.bastion.spawn,
                                                 ready=lambda: self.bastion.listening(port))
        return self.sshd_proc

    def stop_sshd(self, sessions: bool = True) -> int:
        """Stop sshd by PID and, unless `sessions` is False, its per-connection children:
        the bastion goes away (with False they live on, as after `systemctl restart`)."""
        sshd_fixture.stop_sshd(self.sshd_proc, sessions=sessions)
        return self.bastion.stop(self.sshd_proc)

    def sshd_connections(self) -> int:
        """SSH connections sshd holds now, of every client (TCP connections established to
        the port sshd listens on; behind a delay relay, one per client connection)."""
        return self.bastion.call(_established_here, SSHD_BEHIND_RELAY if self.delay_ms > 0 else SSH_PORT)

    def ssh_command(self, *options: str, command: tuple[str, ...] = (), client: str = "client",
                    host: str | None = None) -> list[str]:
        """The OpenSSH client command line for `client` (run it there with spawn/run):
        the fixture's key and known_hosts, then options, the bastion (its address on
        that client's link, or `host`, e.g. ssh_host6), the remote command."""
        return [_tool("ssh") or "ssh", *sshd_fixture.ssh_base_args(self.sshd), *options,
                host or self.ssh_hosts[client], *command]


class Lab:
    """Namespaces, links and processes that all go away with the Lab (use it with `with`)."""

    def __init__(self):
        reason = unavailable_reason()
        if reason:
            raise LabUnavailable(reason)
        self.ip_path = _tool("ip")
        self.nft_path = _tool("nft")
        self.sysctl_path = _tool("sysctl")
        self.ipv6 = os.path.isdir("/proc/sys/net/ipv6")
        self.namespaces: list[Namespace] = []
        self.links: list[Link] = []
        self.processes: list[subprocess.Popen] = []
        self.workdir = tempfile.mkdtemp(prefix="pytun-netlab-")
        self._guard: subprocess.Popen | None = None
        self._closed = False
        _live_labs.append(self)
        _install_signal_handlers()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def path(self, name: str) -> str:
        """A path in the lab's temporary directory (removed on close)."""
        return os.path.join(self.workdir, name)

    # Building --------------------------------------------------------------
    def namespace(self, role: str) -> Namespace:
        """A new namespace, loopback up; `role` (a-z0-9, up to 16) ends its name."""
        self._check_open()
        if not _NAMESPACE_NAME.match(role):
            raise ValueError(f"namespace role {role!r}: use a-z and 0-9, starting with a letter, up to 16")
        name = f"{PREFIX}{os.getpid()}-{next(_serial)}-{role}"
        self._guard_tell(f"add {name}")  # before it exists: never a moment unguarded
        r = subprocess.run([self.ip_path, "netns", "add", name], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True)
        if r.returncode != 0:
            if not self.namespaces and "Operation not permitted" in r.stderr:
                raise LabUnavailable(f"ip netns add: {r.stderr.strip()}")
            raise LabError(f"ip netns add {name}: {r.stderr.strip()}")
        ns = Namespace(self, name, role)
        self.namespaces.append(ns)
        ns.ip("link", "set", "lo", "up")
        if self.ipv6:  # links made later inherit "default": their addresses work at once
            ns.run([self.sysctl_path, "-q", "-w", "net.ipv6.conf.default.accept_dad=0",
                    "net.ipv6.conf.all.accept_dad=0"])
        return ns

    def link(self, a: Namespace, b: Namespace) -> Link:
        """A veth pair between a and b, addressed and up (see the module docstring)."""
        self._check_open()
        index = len(self.links)
        if index >= MAX_LINKS:
            raise LabError(f"more than {MAX_LINKS} links: 198.18.0.0/15 is used up")
        a_if, b_if = a._new_ifname(b.role, index), b._new_ifname(a.role, index)
        self._run([self.ip_path, "-n", a.name, "link", "add", a_if, "type", "veth",
                   "peer", "name", b_if, "netns", b.name], where=a.name)
        link = Link(self, index, a, b, a_if, b_if)
        self.links.append(link)
        link._configure()
        return link

    def delay_relay(self, ns: Namespace, listen: list[tuple[str, int]], connect: tuple[str, int],
                    delay_ms: float, max_buffer: int | None = None) -> subprocess.Popen:
        """Start delay_relay.py inside `ns`; returns once it listens (proc.listening has the
        bound ADDR:PORT strings, useful with port 0)."""
        args = [sys.executable, DELAY_RELAY, "--connect", _endpoint(*connect), "--delay-ms", str(delay_ms)]
        for host, port in listen:
            args += ["--listen", _endpoint(host, port)]
        if max_buffer is not None:
            args += ["--max-buffer", str(max_buffer)]
        proc = ns.spawn(args, stdout=subprocess.PIPE)
        proc.listening = self._first_json_line(proc, "delay relay")["listening"]
        return proc

    def start_services(self, ns: Namespace, host: str = "0.0.0.0") -> dict[str, int]:
        """bench/services.py (echo, sink, source) inside `ns` on `host`; returns {name: port}."""
        proc = ns.spawn([sys.executable, SERVICES, "--host", host], stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE)
        return self._first_json_line(proc, "services")

    def ssh_topology(self, delay_ms: float = 0, *, lan: bool = True, clients: int = 1,
                     bastion_forwarding: bool = False, client_route_to_lan: bool = False) -> SshTopology:
        """client(s) -- bastion (a real sshd) -- lan (echo, sink, source services).

        Addresses: client k <-> bastion on link k (client 198.18.k.1, bastion
        198.18.k.2); bastion <-> lan on the next link (bastion .1, lan .2); the
        lan's default route points at the bastion. The bastion does not
        forward (ip_forward=0) unless `bastion_forwarding`; the clients have
        no route to the lan unless `client_route_to_lan` (a route via the
        bastion, which then drops the packets unless it forwards).

        sshd listens on port SSH_PORT of every bastion address; with
        `delay_ms`, the clients reach it through a delay relay in the bastion
        (delay_ms each way, so the RTT grows by 2 x delay_ms) and sshd itself
        listens on 127.0.0.1:SSHD_BEHIND_RELAY.
        """
        if clients < 1:
            raise ValueError("clients must be >= 1")
        topo = SshTopology(self)
        topo.delay_ms = delay_ms
        topo.bastion = self.namespace("bastion")
        topo.clients = [self.namespace("client" if i == 0 else f"client{i + 1}") for i in range(clients)]
        topo.client = topo.clients[0]
        topo.links = {c.role: self.link(c, topo.bastion) for c in topo.clients}
        topo.ssh_hosts = {role: link.b_ip for role, link in topo.links.items()}
        topo.ssh_host = topo.ssh_hosts["client"]
        topo.ssh_host6 = topo.links["client"].b_ip6 if self.ipv6 else None
        topo.ssh_port = SSH_PORT
        forwarding = 1 if bastion_forwarding else 0
        topo.bastion.sysctl("net.ipv4.ip_forward", forwarding)
        if self.ipv6:
            topo.bastion.sysctl("net.ipv6.conf.all.forwarding", forwarding)
        if lan:
            topo.lan = self.namespace("lan")
            lan_link = topo.links["lan"] = self.link(topo.bastion, topo.lan)
            topo.bastion_lan_ip, topo.lan_ip, topo.lan_subnet = lan_link.a_ip, lan_link.b_ip, lan_link.subnet
            topo.lan_ip6 = lan_link.b_ip6 if self.ipv6 else None
            topo.lan_subnet6 = lan_link.subnet6 if self.ipv6 else None
            topo.lan.route("default", lan_link.a_ip)
            if self.ipv6:
                topo.lan.route("default", lan_link.a_ip6)
            if client_route_to_lan:
                for c in topo.clients:
                    c.route(lan_link.subnet, topo.links[c.role].b_ip)
                    if self.ipv6:
                        c.route(lan_link.subnet6, topo.links[c.role].b_ip6)

        wildcard = [("0.0.0.0", SSH_PORT)] + ([("::", SSH_PORT)] if self.ipv6 else [])
        behind_relay = ("127.0.0.1", SSHD_BEHIND_RELAY)
        names = [link.b_ip for link in (topo.links[c.role] for c in topo.clients)]
        if self.ipv6:
            names += [topo.links[c.role].b_ip6 for c in topo.clients]
        try:
            # A directory per topology: a second one in the same lab must not replace the first's keys.
            topo.sshd = sshd_fixture.prepare(self.path(f"sshd-{len(self.namespaces)}"), SSH_PORT,
                                             listen=[behind_relay] if delay_ms > 0 else wildcard,
                                             host_names=names)
        except sshd_fixture.MissingTool as e:
            raise LabUnavailable(str(e)) from None
        topo.user, topo.key = topo.sshd["user"], topo.sshd["key_ed25519"]
        topo.known_hosts = topo.sshd["known_hosts_bracketed"]
        topo.start_sshd()
        if delay_ms > 0:
            topo.relay = self.delay_relay(topo.bastion, wildcard, behind_relay, delay_ms)
        if lan:
            topo.services = self.start_services(topo.lan, "::" if self.ipv6 else "0.0.0.0")
            topo.echo_port = topo.services["echo"]
        return topo

    # Ending ----------------------------------------------------------------
    def close(self) -> None:
        """End every process, remove every namespace (and with them their links,
        rules and counters), remove the temporary directory. Idempotent."""
        global _closing, _pending_signal
        if self._closed:
            return
        self._closed = True
        _closing += 1
        errors = []
        try:
            _stop_processes(list(reversed(self.processes)))
            self.processes.clear()
            for ns in reversed(self.namespaces):
                error = _remove_namespace(self.ip_path, ns.name)
                if error:
                    errors.append(error)
                else:
                    self._guard_tell(f"forget {ns.name}")
            self._stop_guard()
            shutil.rmtree(self.workdir, ignore_errors=True)
        finally:
            _closing -= 1
            if self in _live_labs:
                _live_labs.remove(self)
        if errors:
            raise LabError("; ".join(errors))
        if _pending_signal is not None and not _closing:
            signum, _pending_signal = _pending_signal, None
            raise _exception_for(signum)

    # Internals -------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise LabError("the lab is closed")

    def _run(self, args: list[str], *, input: str | None = None, timeout: float = 60,
             check: bool = True, where: str = "") -> subprocess.CompletedProcess:
        r = subprocess.run(args, input=input, stdin=None if input is not None else subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise LabError(f"{' '.join(args)} (in {where or 'the lab'}) failed with {r.returncode}: "
                           f"{(r.stderr or r.stdout).strip()}")
        return r

    def _guard_tell(self, line: str) -> None:
        if self._guard is None:
            # Own session: meson's timeout kills the test's process group, not this.
            self._guard = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--guard"],
                                           stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                           start_new_session=True, text=True)
        self._guard.stdin.write(line + "\n")
        self._guard.stdin.flush()

    def _stop_guard(self) -> None:
        if self._guard is None:
            return
        self._guard.stdin.close()  # EOF: nothing left to guard, it exits
        try:
            self._guard.wait(10)
        except subprocess.TimeoutExpired:
            _stop_processes([self._guard])

    def _first_json_line(self, proc: subprocess.Popen, what: str, timeout: float = 15.0) -> dict:
        """The first line a spawned helper prints (its ports), within `timeout`."""
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                raise LabError(f"{what} printed nothing within {timeout} s")
        line = proc.stdout.readline()
        if not line:
            raise LabError(f"{what} exited with {proc.wait()} before it was ready")
        return json.loads(line)


def _endpoint(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


if __name__ == "__main__":
    if sys.argv[1:] == ["--guard"]:
        sys.exit(_guard_main())
    print(__doc__)
    sys.exit(2)
