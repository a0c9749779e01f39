#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# `pytun vpn --dns` and `-N` end to end in the network lab, with a real DNS server (dnsmasq) in the LAN.
"""vpn_dns_test.py PYTUN CASE  (meson: vpn-dns-CASE, suite integration)

The lab: client -- bastion (real sshd, ip_forward=0) -- lan, with dnsmasq
in the lan (authoritative for lan.test: a name only it knows, NXDOMAIN for
the rest, a name with an answer too large for UDP). The bastion's
/etc/resolv.conf names the lan's dnsmasq; the client's names 198.18.250.53,
an address nothing answers on (the client routes it to the bastion, which
does not forward): whatever answers in the client came through the tunnel.
An nft counter on the client's link counts port-53 packets leaving it: the
direct route, which must see none while pytun runs.

Cases:
  resolve   getent and dig resolve the lan's name in the client (IPv4 and
            IPv6 nameservers), NXDOMAIN
            stays NXDOMAIN, the large answer comes with TC over UDP and whole
            over TCP; before pytun is up the same query gets no answer.
  to-ns     the bastion's resolv.conf names a dead resolver: --to-ns
            IP:PORT (dnsmasq on 5353) is the one asked.
  no-ns     the bastion's resolv.conf cannot be read (the key may only run
            a forced command) and no --to-ns: pytun says so, answers SERVFAIL, and the capture works.
  down      sshd stopped: SERVFAIL at once, nothing to the direct route;
            sshd back: names resolve again, without restarting pytun.
  hostile   garbage, a response, a 64-byte label, an oversized query, a
            TCP frame left half-sent: answered (FORMERR) or dropped, while
            good queries from other clients keep being answered.
  router    -l 0.0.0.0:PORT: a host behind the client, which routes for it,
            gets its queries answered (UDP and TCP) and its connection
            carried.
  auto-nets only -N: the bastion's lan routes are captured (echo through them,
            IPv4 and IPv6); with -x ADDRESS/32 that address is not,
            and the log names what -N added.
"""

import json
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SUPPORT = os.path.join(os.path.dirname(HERE), "support")
sys.path.insert(0, SUPPORT)
import netlab  # noqa: E402
from testcheck import check, wait_until  # noqa: E402

FAKE_NS = "198.18.250.53"  # the client's nameserver: routed to the bastion, which drops it
FAKE_NET = "198.18.250.0/24"
FAKE_NS6 = "fd00:198:250::53"  # its IPv6 twin
FAKE_NET6 = "fd00:198:250::/64"
ZONE = "lan.test"
SECRET_IP = "198.18.77.7"  # what secret.lan.test is (an answer, never contacted)
BIG_RECORDS = 40  # TXT records of 200 bytes: about 9 KB, more than any UDP answer here
UP_TIMEOUT = 30.0

NOERROR, FORMERR, SERVFAIL, NXDOMAIN = 0, 1, 2, 3


# --- DNS messages ----------------------------------------------------------------

def wire_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def make_query(name: str, qtype: int = 1, qid: int | None = None, edns: int | None = None) -> bytes:
    qid = random.randrange(65536) if qid is None else qid
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 1 if edns else 0)
    body = wire_name(name) + struct.pack("!HH", qtype, 1)
    if edns:
        body += b"\0" + struct.pack("!HHIH", 41, edns, 0, 0)
    return header + body


class Reply:
    def __init__(self, data: bytes):
        self.data = data
        self.id, flags, self.qd, self.an, self.ns, self.ar = struct.unpack("!HHHHHH", data[:12])
        self.rcode = flags & 0x0F
        self.tc = bool(flags & 0x0200)
        self.qr = bool(flags & 0x8000)

    def __repr__(self):
        return f"<reply id {self.id} rcode {self.rcode} tc {self.tc} an {self.an} {len(self.data)} bytes>"


def udp_ask(ns, server: str, message: bytes, timeout: float = 3.0, port: int = 53) -> Reply | None:
    """One UDP query from inside namespace `ns`; None without an answer in time."""
    def ask():
        with socket.socket(socket.AF_INET6 if ":" in server else socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.sendto(message, (server, port))
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                try:
                    data, peer = s.recvfrom(65535)
                except (socket.timeout, ConnectionRefusedError):
                    return None
                # The answer must seem to come from the nameserver asked.
                if peer[:2] == (server, port) and len(data) >= 12 and data[:2] == message[:2]:
                    return Reply(data)
            return None
    return ns.call(ask)


def recv_exact(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def tcp_ask(ns, server: str, message: bytes, timeout: float = 5.0) -> Reply | None:
    def ask():
        try:
            with socket.create_connection((server, 53), timeout) as s:
                s.sendall(struct.pack("!H", len(message)) + message)
                (length,) = struct.unpack("!H", recv_exact(s, 2))
                return Reply(recv_exact(s, length))
        except OSError:
            return None
    return ns.call(ask)


# --- the lab ---------------------------------------------------------------------

class DnsLab:
    """The topology, dnsmasq in the lan, resolv.conf files, the leak counter."""

    def __init__(self, lab: netlab.Lab, bastion_resolv: str | None = "lan", dnsmasq_ports=(53,)):
        self.lab = lab
        self.topo = topo = lab.ssh_topology(client_route_to_lan=True)
        self.client, self.bastion, self.lan = topo.client, topo.bastion, topo.lan
        link = topo.links["client"]
        self.client.route(FAKE_NET, link.b_ip)  # a leak would leave by this link
        resolv = f"nameserver {FAKE_NS}\n"
        if lab.ipv6:
            self.client.route(FAKE_NET6, link.b_ip6)
            resolv += f"nameserver {FAKE_NS6}\n"
        self.client.resolv_conf(resolv)
        for port in dnsmasq_ports:
            self.start_dnsmasq(port)
        # sshd reads the bastion's resolv.conf for its sessions' commands:
        # restart it so `ip netns exec` gives it the lab's file.
        if bastion_resolv is not None:
            target = topo.lan_ip if bastion_resolv == "lan" else bastion_resolv
            self.bastion.resolv_conf(f"# the lab's\nsearch {ZONE}\nnameserver {target}\n")
            topo.stop_sshd()
            topo.start_sshd()
        self.client_if = link.ifname_of(self.client)
        self.client.nft(f"""table inet dnsleak {{
    counter leaked {{}}
    chain post {{
        type filter hook postrouting priority 300; policy accept;
        oifname "{self.client_if}" udp dport 53 counter name leaked
        oifname "{self.client_if}" tcp dport 53 counter name leaked
    }}
}}""")
        self.runtime = tempfile.mkdtemp(prefix="pytun-vpn-dns-")
        self.pytun = None
        self.log_path = lab.path("pytun.log")

    def start_dnsmasq(self, port: int):
        big = []
        for i in range(BIG_RECORDS):
            big.append(f"--txt-record=big.{ZONE},{i:03d}" + "x" * 197)
        args = [shutil.which("dnsmasq") or "/usr/sbin/dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
                "--no-resolv", "--no-hosts", "--no-poll", "--pid-file=", "--user=root", "--group=root",
                f"--port={port}", f"--listen-address={self.topo.lan_ip}", "--bind-interfaces",
                f"--local=/{ZONE}/", f"--host-record=secret.{ZONE},{SECRET_IP}",
                "--log-queries", "--log-facility=-", *big]
        proc = self.lan.spawn(args, stdout=subprocess.DEVNULL, stderr=open(self.lab.path(f"dnsmasq-{port}.log"), "w"))
        self.lan.call(wait_udp_tcp_listening, self.topo.lan_ip, port, proc)

    def leaked(self) -> int:
        out = self.client.run(["nft", "-j", "list", "counter", "inet", "dnsleak", "leaked"]).stdout
        for item in json.loads(out)["nftables"]:
            if "counter" in item:
                return item["counter"]["packets"]
        raise AssertionError(f"no counter in {out}")

    def start_pytun(self, pytun: str, *options: str, subnets=(), expect_up=True):
        topo = self.topo
        env = dict(os.environ, RUNTIME_DIRECTORY=self.runtime)
        args = [pytun, "vpn", "-r", f"{topo.user}@{topo.ssh_host}:{topo.ssh_port}", "-i", topo.key,
                "--known-hosts", topo.known_hosts, "-v", *options, *subnets]
        self.log = open(self.log_path, "w")
        self.pytun = self.client.spawn(args, stdout=subprocess.PIPE, stderr=self.log, env=env, text=True)
        if expect_up:
            line = read_line(self.pytun, UP_TIMEOUT)
            if not line.startswith("pytun vpn: up"):
                raise AssertionError(f"pytun vpn did not come up ({line.strip()!r}); its log:\n{self.log_text()}")
            check(True, f"pytun vpn is up: {line.strip()!r}")
            self.up_line = line
        return self.pytun

    def log_text(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def stop_pytun(self):
        if self.pytun is not None:
            status = self.client.stop(self.pytun)
            self.pytun = None
            check(status == 0, f"pytun vpn exits 0 on SIGTERM (got {status})")
            ruleset = self.client.run(["nft", "list", "ruleset"]).stdout
            check("pytun" not in ruleset, "its rules are gone")

    def close(self):
        shutil.rmtree(self.runtime, ignore_errors=True)


def wait_udp_tcp_listening(host: str, port: int, proc, timeout: float = 10.0):
    def ready():
        if proc.poll() is not None:
            raise AssertionError(f"dnsmasq exited with {proc.returncode}")
        try:
            with socket.create_connection((host, port), 0.5):
                return True
        except OSError:
            return False
    if not wait_until(ready, timeout, 0.05):
        raise AssertionError(f"dnsmasq does not listen on {host}:{port}")


def read_line(proc: subprocess.Popen, timeout: float) -> str:
    """The next stdout line of `proc` within `timeout` ("" when it ends first)."""
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return result[0] if result else ""


def dig(ns, *args: str) -> subprocess.CompletedProcess:
    return ns.run(["dig", "+time=3", "+tries=1", *args], check=False, timeout=30)


# --- cases -------------------------------------------------------------------------

def case_resolve(pytun: str, lab: netlab.Lab):
    d = DnsLab(lab)
    try:
        secret = f"secret.{ZONE}"
        r = udp_ask(d.bastion, d.topo.lan_ip, make_query(secret))
        check(r is not None and r.rcode == NOERROR and r.an == 1, f"the lan's dnsmasq knows {secret} ({r})")
        check(udp_ask(d.client, FAKE_NS, make_query(secret), timeout=1.5) is None,
              "before pytun: the client's nameserver does not answer (nothing answers there directly)")
        d.start_pytun(pytun, "--dns", subnets=[d.topo.lan_subnet])
        check("DNS on" in d.up_line, "the up line says DNS on")
        leaked_before = d.leaked()

        r = d.client.run(["getent", "hosts", secret], check=False)
        check(r.returncode == 0 and SECRET_IP in r.stdout,
              f"getent hosts {secret} in the client (the C library's stub, resolv.conf -> {FAKE_NS}): {r.stdout.strip()}")
        r = dig(d.client, "+short", secret)
        check(r.stdout.strip() == SECRET_IP, f"dig {secret} answers {SECRET_IP} ({r.stdout.strip()!r})")
        r = dig(d.client, "+tcp", "+short", secret)
        check(r.stdout.strip() == SECRET_IP, f"dig +tcp {secret} answers {SECRET_IP} too")

        r = udp_ask(d.client, FAKE_NS, make_query(f"nothing.{ZONE}"))
        check(r is not None and r.rcode == NXDOMAIN, f"nothing.{ZONE}: NXDOMAIN stays NXDOMAIN ({r})")
        r = dig(d.client, f"nothing.{ZONE}")
        check("status: NXDOMAIN" in r.stdout, "dig sees NXDOMAIN too")

        big = f"big.{ZONE}"
        r = udp_ask(d.client, FAKE_NS, make_query(big, qtype=16))
        check(r is not None and r.tc and r.an == 0 and len(r.data) <= 512,
              f"{big} TXT over UDP without EDNS0: TC, within 512 bytes ({r})")
        r = udp_ask(d.client, FAKE_NS, make_query(big, qtype=16, edns=1232))
        check(r is not None and r.tc and len(r.data) <= 1232, f"with EDNS0 1232: TC, within 1232 bytes ({r})")
        r = tcp_ask(d.client, FAKE_NS, make_query(big, qtype=16))
        check(r is not None and not r.tc and r.rcode == NOERROR and r.an == BIG_RECORDS,
              f"over TCP: whole, {BIG_RECORDS} TXT records ({r})")
        r = dig(d.client, "+noedns", "+short", big, "TXT")  # dig retries over TCP on TC
        check(len(r.stdout.strip().splitlines()) == BIG_RECORDS, f"dig follows TC to TCP and gets all {BIG_RECORDS}")
        # Many clients at once: each gets its own answer (the IDs were rewritten and mapped back).
        results = []

        def one(i):
            q = make_query(secret if i % 2 else f"n{i}.{ZONE}", qid=i)
            results.append((i, udp_ask(d.client, FAKE_NS, q)))
        threads = [threading.Thread(target=one, args=(i,)) for i in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        good = [i for i, r in results if r is not None and r.id == i and r.rcode == (NOERROR if i % 2 else NXDOMAIN)]
        check(len(good) == 40, f"40 queries at once: every one answered with its own ID and rcode ({len(good)})")
        check(leaked_before >= 1, f"the counter sees a query by the direct route (before pytun: {leaked_before})")
        if lab.ipv6:
            r = udp_ask(d.client, FAKE_NS6, make_query(secret))
            check(r is not None and r.rcode == NOERROR and r.an == 1,
                  f"over IPv6 too: the answer comes from [{FAKE_NS6}]:53 ({r})")
        check(d.leaked() == leaked_before, "no DNS packet left by the client's link (the direct route) since")
        d.stop_pytun()
        check(udp_ask(d.client, FAKE_NS, make_query(secret), timeout=1.5) is None,
              "after SIGTERM: the nameserver is unreachable again (the capture is gone)")
    finally:
        d.close()


def case_to_ns(pytun: str, lab: netlab.Lab):
    d = DnsLab(lab, bastion_resolv="198.18.1.99", dnsmasq_ports=(5353,))  # the bastion's resolver: nobody
    try:
        d.start_pytun(pytun, "--dns", "--to-ns", f"{d.topo.lan_ip}:5353", subnets=[d.topo.lan_subnet])
        r = udp_ask(d.client, FAKE_NS, make_query(f"secret.{ZONE}"))
        check(r is not None and r.rcode == NOERROR and r.an == 1, f"--to-ns {d.topo.lan_ip}:5353 answers ({r})")
        check(f"{d.topo.lan_ip}:5353" in d.log_text(), "the log names the resolver --to-ns gave")
        check(d.leaked() == 0, "nothing left by the direct route")
        d.stop_pytun()
    finally:
        d.close()


def case_no_ns(pytun: str, lab: netlab.Lab):
    d = DnsLab(lab, bastion_resolv=None)
    try:
        # The bastion's sshd runs with the machine's /etc/resolv.conf, which
        # we must not touch: the command's failure is made with a key that may
        # run nothing but one command (a forced command), so `cat` fails.
        topo = d.topo
        keys = topo.sshd.get("authorized_keys")
        if not keys or not os.path.exists(keys):
            print(f"vpn_dns_test: no authorized_keys path in the fixture ({sorted(topo.sshd)}); skipping")
            return netlab.EXIT_SKIP
        with open(keys) as f:
            lines = f.read().splitlines()
        with open(keys, "w") as f:
            f.write("\n".join('command="exit 3" ' + line if line.strip() else line for line in lines) + "\n")
        d.start_pytun(pytun, "--dns", subnets=[topo.lan_subnet])
        check(wait_until(lambda: "SERVFAIL" in d.log_text() and "--to-ns" in d.log_text(), 5),
              "pytun says it cannot read the server's resolver and what to do (--to-ns)")
        r = udp_ask(d.client, FAKE_NS, make_query(f"secret.{ZONE}"))
        check(r is not None and r.rcode == SERVFAIL, f"queries are answered SERVFAIL ({r})")
        check(d.leaked() == 0, "nothing left by the direct route")
        # A forced command binds exec requests only: direct-tcpip channels still open.
        with d.client.create_connection((topo.lan_ip, topo.echo_port), 10) as s:
            s.sendall(b"ping\n")
            check(recv_exact(s, 5) == b"ping\n", "the capture works all the same (echo in the lan)")
        d.stop_pytun()
    finally:
        d.close()


def case_down(pytun: str, lab: netlab.Lab):
    d = DnsLab(lab)
    try:
        secret = f"secret.{ZONE}"
        d.start_pytun(pytun, "--dns", subnets=[d.topo.lan_subnet])
        r = udp_ask(d.client, FAKE_NS, make_query(secret))
        check(r is not None and r.rcode == NOERROR, "resolves while sshd runs")
        d.topo.stop_sshd()

        def servfail():
            r = udp_ask(d.client, FAKE_NS, make_query(secret), timeout=1)
            return r is not None and r.rcode == SERVFAIL
        check(wait_until(servfail, 10, 0.2), "sshd down: SERVFAIL")
        started = time.monotonic()
        r = udp_ask(d.client, FAKE_NS, make_query(secret))
        check(r is not None and r.rcode == SERVFAIL and time.monotonic() - started < 1.0,
              "at once (no waiting for a timeout)")
        r = tcp_ask(d.client, FAKE_NS, make_query(secret))
        check(r is not None and r.rcode == SERVFAIL, "over TCP too")
        check(d.leaked() == 0, "no DNS packet went to the direct route meanwhile")
        d.topo.start_sshd()

        def resolves():
            r = udp_ask(d.client, FAKE_NS, make_query(secret), timeout=1)
            return r is not None and r.rcode == NOERROR and r.an == 1
        check(wait_until(resolves, 20, 0.2), "sshd back: resolves again without restarting pytun")
        check(d.leaked() == 0, "and still nothing to the direct route")
        d.stop_pytun()
    finally:
        d.close()


def case_hostile(pytun: str, lab: netlab.Lab):
    d = DnsLab(lab)
    try:
        secret = f"secret.{ZONE}"
        d.start_pytun(pytun, "--dns", subnets=[d.topo.lan_subnet])
        stop = threading.Event()
        good = {"ok": 0, "bad": 0}

        def steady():  # another client asking all along
            i = 0
            while not stop.is_set():
                i += 1
                r = udp_ask(d.client, FAKE_NS, make_query(secret, qid=i % 65536))
                good["ok" if r is not None and r.rcode == NOERROR and r.an == 1 else "bad"] += 1
        worker = threading.Thread(target=steady, daemon=True)
        worker.start()

        def udp_raw(payload: bytes, timeout=1.0):
            def send():
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.settimeout(timeout)
                    s.sendto(payload, (FAKE_NS, 53))
                    try:
                        return Reply(s.recv(65535))
                    except (socket.timeout, ValueError, struct.error):
                        return None
            return d.client.call(send)

        check(udp_raw(b"\x01\x02\x03") is None, "3 bytes of garbage: dropped")
        check(udp_raw(os.urandom(11)) is None, "11 random bytes (shorter than a header): dropped")
        response = bytearray(make_query(secret))
        response[2] |= 0x80
        check(udp_raw(bytes(response)) is None, "a response sent as a query: dropped")
        r = udp_raw(make_query("a" * 64 + ".lan.test"))
        check(r is not None and r.rcode == FORMERR, f"a 64-byte label: FORMERR ({r})")
        r = udp_raw(make_query(secret) + b"\0" * 5000)
        check(r is None or r.rcode == FORMERR, f"a 5 KB query: FORMERR or dropped ({r})")
        r = udp_raw(make_query(secret)[:20])
        check(r is not None and r.rcode == FORMERR, f"a query cut inside its question: FORMERR ({r})")
        for _ in range(200):  # a burst of random junk
            udp_raw(os.urandom(random.randrange(1, 600)), timeout=0.01)

        def tcp_half():
            s = socket.create_connection((FAKE_NS, 53), 5)
            s.sendall(struct.pack("!H", 65535) + b"\0" * 100)  # a frame that never completes
            return s
        held = [d.client.call(tcp_half) for _ in range(5)]
        r = tcp_ask(d.client, FAKE_NS, make_query(secret))
        check(r is not None and r.rcode == NOERROR, "with 5 half-sent TCP frames held open, TCP queries are answered")

        def tcp_junk():
            with socket.create_connection((FAKE_NS, 53), 5) as s:
                s.settimeout(3)
                s.sendall(struct.pack("!H", 5) + b"\x01\x02\x03\x04\x05" + struct.pack("!H", 0))
                q = make_query(secret, qid=4242)
                s.sendall(struct.pack("!H", len(q)) + q)
                (length,) = struct.unpack("!H", recv_exact(s, 2))
                return Reply(recv_exact(s, length))
        r = d.client.call(tcp_junk)
        check(r.id == 4242 and r.rcode == NOERROR, "junk frames on a TCP connection: the good query after them is answered")
        time.sleep(1)  # the steady client goes on meanwhile
        stop.set()
        worker.join(10)
        for s in held:
            s.close()
        check(good["ok"] > 5 and good["bad"] == 0,
              f"the other client's {good['ok']} queries were all answered meanwhile ({good['bad']} not)")
        check(d.pytun.poll() is None, "pytun runs on")
        check(d.leaked() == 0, "nothing left by the direct route")
        d.stop_pytun()
    finally:
        d.close()


def case_router(pytun: str, lab: netlab.Lab):
    d = DnsLab(lab)
    try:
        # A machine of the client's LAN that uses the client as its router.
        host = lab.namespace("host")
        link = lab.link(d.client, host)
        host.route(FAKE_NET, link.a_ip)
        host.route(d.topo.lan_subnet, link.a_ip)
        secret = f"secret.{ZONE}"
        d.start_pytun(pytun, "--dns", "-l", "0.0.0.0:12300", subnets=[d.topo.lan_subnet])
        r = udp_ask(host, FAKE_NS, make_query(secret))
        check(r is not None and r.rcode == NOERROR and r.an == 1,
              f"router mode: a LAN host's query to {FAKE_NS} is answered through the tunnel ({r})")
        r = tcp_ask(host, FAKE_NS, make_query(f"big.{ZONE}", qtype=16))
        check(r is not None and r.an == BIG_RECORDS, "and over TCP")
        with host.create_connection((d.topo.lan_ip, d.topo.echo_port), 10) as s:
            s.sendall(b"routed\n")
            check(recv_exact(s, 7) == b"routed\n", "the LAN host's connection to the lan is carried too")
        check(d.leaked() == 0, "nothing left by the client's link to the bastion directly")
        d.stop_pytun()
    finally:
        d.close()


def case_auto_nets(pytun: str, lab: netlab.Lab):
    d = DnsLab(lab, bastion_resolv=None, dnsmasq_ports=())
    try:
        topo = d.topo

        def direct():
            try:
                with topo.client.create_connection((topo.lan_ip, topo.echo_port), 2):
                    return True
            except OSError:
                return False
        check(not direct(), "before pytun: the lan cannot be reached from the client directly")
        d.start_pytun(pytun, "-N")
        check(topo.lan_subnet in d.up_line or topo.lan_subnet in d.log_text(),
              f"-N captures the bastion's lan route {topo.lan_subnet}:\n{d.up_line}")
        with topo.client.create_connection((topo.lan_ip, topo.echo_port), 10) as s:
            s.sendall(b"hello -N\n")
            check(recv_exact(s, 9) == b"hello -N\n", "echo in the lan through the tunnel with only -N given")
        if topo.lan_ip6:
            with topo.client.create_connection((topo.lan_ip6, topo.echo_port), 10) as s:
                s.sendall(b"v6\n")
                check(recv_exact(s, 3) == b"v6\n", "and its IPv6 route too")
        ruleset = topo.client.run(["nft", "list", "ruleset"]).stdout
        check("127.0.0.0/8" not in ruleset and "fe80::/10" not in ruleset,
              "loopback and link-local routes are not captured")
        d.stop_pytun()
        # An exclude narrower than the bastion's route wins over it.
        d.start_pytun(pytun, "-N", "-x", f"{topo.lan_ip}/32")
        check(f"(not {topo.lan_ip}/32)" in d.up_line, f"-N with -x: the exclude is listed ({d.up_line.strip()})")
        check(not direct(), f"-x {topo.lan_ip}/32 is not captured: it is not reached")
        if topo.lan_ip6:
            with topo.client.create_connection((topo.lan_ip6, topo.echo_port), 10) as s:
                s.sendall(b"v6\n")
                check(recv_exact(s, 3) == b"v6\n", "the rest of the bastion's routes still is")
        d.stop_pytun()
    finally:
        d.close()


CASES = {
    "resolve": case_resolve,
    "to-ns": case_to_ns,
    "no-ns": case_no_ns,
    "down": case_down,
    "hostile": case_hostile,
    "auto-nets": case_auto_nets,
    "router": case_router,
}


def main():
    pytun, case = os.path.abspath(sys.argv[1]), sys.argv[2]
    reason = netlab.unavailable_reason()
    for tool, package in (("dnsmasq", "dnsmasq-base"), ("dig", "bind9-dnsutils")):
        if not reason and not (shutil.which(tool) or os.path.exists(f"/usr/sbin/{tool}")):
            reason = f"{tool} not found (install {package})"
    if reason:
        print(f"vpn_dns_test: skipping: {reason}")
        return netlab.EXIT_SKIP
    with netlab.Lab() as lab:
        return CASES[case](pytun, lab) or 0


if __name__ == "__main__":
    sys.exit(main())
