#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# pytun vpn's other ways to run: router mode, -D with a pid file, @FILE/-s/-X arguments, --disable-ipv6.
"""vpn_modes_test.py PYTUN  (meson: vpn-modes, suite integration)

In the network lab (client, bastion with sshd and ip_forward=0, lan behind
it; a "home" namespace behind the client, routed through it):
1. Router mode: `-l 0.0.0.0:PORT` in the client captures what the client
   forwards for home: home reaches the lan's echo service by its real IPv4
   and IPv6 addresses, although the bastion forwards nothing.
2. `-D --pidfile`: the command returns once up, having printed the up line;
   the pid file names the running daemon; SIGTERM to it removes the rules
   (the ruleset is as before) and the pid file.
3. Arguments from files: `@FILE` (one argument per line), `-s FILE` (the
   subnet) and `-X FILE` (the lan's echo port): the excluded port is not
   captured (the bastion does not forward, so it is unreachable), the lan's
   other services are.
4. UDP to a captured subnet is refused at once and no datagram leaves.
5. systemd Type=notify: READY=1 once the rules are in and the connection is
   up, WATCHDOG=1 while it runs, STOPPING=1 on SIGTERM.
6. `--disable-ipv6`: an IPv6 subnet on the command line is blocked, not
   carried and not leaked: the connection is refused at once, and no packet
   to it leaves the client's link.
"""

import os
import signal
import socket
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "support"))
import netlab  # noqa: E402
from testcheck import check, wait_until  # noqa: E402


def ruleset(ns):
    """`nft list ruleset` without the test's own counters (their counts move)."""
    tables = [line.split()[1:] for line in ns.run(["nft", "list", "tables"]).stdout.splitlines()]
    return "".join(ns.run(["nft", "list", "table", family, name]).stdout
                   for family, name in tables if name != "vpntest_leak")


def echo(ns, ip, port):
    with ns.create_connection((ip, port), 5) as s:
        s.sendall(b"ping")
        return s.recv(16)


def ended(pid):
    """Gone, or a zombie waiting for whoever adopted it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def fails(ns, ip, port, timeout=2):
    try:
        echo(ns, ip, port)
    except OSError as e:
        return e
    return None


class Vpn:
    def __init__(self, lab, topo, pytun):
        self.lab, self.topo, self.pytun = lab, topo, pytun
        self.rundir = lab.path("run")
        os.makedirs(self.rundir, exist_ok=True)

    def args(self, *extra):
        t = self.topo
        return ["env", f"RUNTIME_DIRECTORY={self.rundir}", self.pytun, "vpn", "-r",
                f"{t.user}@{t.ssh_host}:{t.ssh_port}", "-i", t.key, "--known-hosts", t.known_hosts, *extra]

    def start(self, *extra):
        """Spawned in the client; returns (process, up line)."""
        log = open(self.lab.path("vpn-%d.log" % time.monotonic_ns()), "w")
        proc = self.topo.client.spawn(self.args(*extra), stdout=subprocess.PIPE, stderr=log, text=True)
        line = proc.stdout.readline().strip()
        check(line.startswith("pytun vpn: up"), f"pytun vpn {' '.join(extra)}: up line (got {line!r}; "
                                                f"log {log.name})")
        return proc, line


def router_mode(lab, topo, vpn):
    home = lab.namespace("home")
    link = lab.link(topo.client, home)
    home.route("default", link.ip_of(topo.client))
    topo.client.sysctl("net.ipv4.ip_forward", 1)
    targets = [topo.lan_ip]
    if lab.ipv6:
        home.route("default", link.ip6_of(topo.client))
        topo.client.sysctl("net.ipv6.conf.all.forwarding", 1)
        targets.append(topo.lan_ip6)
    for ip in targets:
        check(fails(home, ip, topo.echo_port) is not None, f"before the VPN, home cannot reach {ip}")
    subnets = [topo.lan_subnet] + ([topo.lan_subnet6] if lab.ipv6 else [])
    proc, _ = vpn.start("-l", "0.0.0.0:12311", *subnets)
    for ip in targets:
        check(echo(home, ip, topo.echo_port) == b"ping", f"router mode: home reaches {ip} through the tunnel")
    check(topo.client.stop(proc) == 0, "router mode: SIGTERM, exit 0")
    for ip in targets:
        check(fails(home, ip, topo.echo_port) is not None, f"after the VPN, home cannot reach {ip} again")
    print("router mode: home reached", ", ".join(targets))


def daemon_mode(lab, topo, vpn, before):
    pidfile = lab.path("vpn.pid")
    r = topo.client.run(vpn.args("-D", "--pidfile", pidfile, topo.lan_subnet), timeout=60, check=False)
    check(r.returncode == 0 and r.stdout.startswith("pytun vpn: up: capturing " + topo.lan_subnet),
          f"-D: exit 0 once up, with the up line (exit {r.returncode}, {r.stdout!r}, {r.stderr!r})")
    pid = int(open(pidfile).read())
    check(os.path.exists(f"/proc/{pid}"), f"-D: the pid file names a running process ({pid})")
    check(echo(topo.client, topo.lan_ip, topo.echo_port) == b"ping", "-D: the daemon carries connections")
    os.kill(pid, signal.SIGTERM)
    check(wait_until(lambda: ended(pid), 15), "-D: the daemon ends after SIGTERM")
    check(not os.path.exists(pidfile), "-D: the daemon removed its pid file")
    check(ruleset(topo.client) == before, "-D: SIGTERM left the ruleset as before")
    print("daemon: up line, pid file, SIGTERM clean")


def argument_files(lab, topo, vpn, before):
    # The lan's echo port is excluded, its other services are not: the bastion
    # forwards nothing, so only what is captured can be reached.
    excluded = f"{topo.lan_ip}/32:{topo.echo_port}"
    args_file, subnets_file, exclude_file = lab.path("args"), lab.path("subnets"), lab.path("exclude")
    with open(args_file, "w") as f:
        f.write("-s\n%s\n-X\n%s\n" % (subnets_file, exclude_file))
    with open(subnets_file, "w") as f:
        f.write("# the lan\n%s\n" % topo.lan_subnet)
    with open(exclude_file, "w") as f:
        f.write("%s  # its echo service\n" % excluded)
    proc, line = vpn.start("@" + args_file)
    check(f"(not {excluded})" in line, f"-X FILE: the up line names the exclude: {line!r}")
    with topo.client.create_connection((topo.lan_ip, topo.services["source"]), 5) as s:
        s.sendall(struct.pack("!Q", 1000))  # bench/services.py: the source sends what the header asks
        check(len(s.recv(1024)) > 0, "-s FILE: the lan is captured (its source service sends)")
    check(fails(topo.client, topo.lan_ip, topo.echo_port) is not None,
          f"-X FILE: {excluded} is not captured (unreachable directly)")
    check(topo.client.stop(proc) == 0 and ruleset(topo.client) == before, "@FILE run: SIGTERM, exit 0, ruleset")
    print("argument files: @FILE, -s, -X")


def leak_counters(ns, topo):
    """nft counters (in a table of the test's own) of packets leaving `ns` for the lan
    that the VPN must never let out: UDP to its IPv4 subnet, anything to its IPv6 one."""
    ipv6 = f'chain post6 {{ type filter hook postrouting priority 500; ip6 daddr {topo.lan_subnet6} counter name "to_lan6"; }}' if topo.lan_subnet6 else ""
    ns.nft(f"""
table inet vpntest_leak {{
    counter udp_lan {{ }}
    counter to_lan6 {{ }}
    chain post {{ type filter hook postrouting priority 500; ip daddr {topo.lan_subnet} meta l4proto udp counter name "udp_lan"; }}
    {ipv6}
}}
""")

    def read(name):
        out = ns.run(["nft", "list", "counter", "inet", "vpntest_leak", name]).stdout
        return int(out.split("packets", 1)[1].split()[0])
    return read


def udp_send(ns, ip):
    """One datagram to ip:9; the error the sender sees, or None."""
    def body():
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            try:
                s.sendto(b"leak?", (ip, 9))
            except OSError as e:
                return e
        return None
    return ns.call(body)


def udp_blocked(lab, topo, vpn, before, leaked):
    proc, _ = vpn.start(topo.lan_subnet)
    sent = leaked("udp_lan")
    error = udp_send(topo.client, topo.lan_ip)
    check(error is not None and leaked("udp_lan") == sent,
          f"UDP to a captured subnet is refused ({error!r}) and not sent")
    check(topo.client.stop(proc) == 0 and ruleset(topo.client) == before, "UDP run: SIGTERM, ruleset")
    check(udp_send(topo.client, topo.lan_ip) is None and leaked("udp_lan") > sent,
          "without the VPN the same datagram leaves (the counter counts)")
    print("UDP to a captured subnet: blocked, not leaked")


def ipv6_disabled(lab, topo, vpn, before, leaked):
    proc, _ = vpn.start("--disable-ipv6", topo.lan_subnet, topo.lan_subnet6)
    sent = leaked("to_lan6")
    error = fails(topo.client, topo.lan_ip6, topo.echo_port)
    check(error is not None, "--disable-ipv6: the IPv6 subnet is not carried")
    check(echo(topo.client, topo.lan_ip, topo.echo_port) == b"ping", "--disable-ipv6: IPv4 still is")
    check(leaked("to_lan6") == sent, f"--disable-ipv6: no packet to {topo.lan_subnet6} left the client")
    check(topo.client.stop(proc) == 0 and ruleset(topo.client) == before, "--disable-ipv6: SIGTERM, ruleset")
    # The counter counts: without the VPN the same connect sends packets (dropped by the bastion).
    fails(topo.client, topo.lan_ip6, topo.echo_port)
    check(leaked("to_lan6") > sent, "the leak counter sees a direct attempt (it can fail)")
    print(f"--disable-ipv6: refused at once ({error!r}), nothing left the client")


def systemd_notify(lab, topo, vpn, before):
    """Type=notify: READY=1 once the rules are in and the SSH connection is up, then
    WATCHDOG=1 while it runs, STOPPING=1 on SIGTERM."""
    path = lab.path("notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.5)
    got = []

    def receive_until(pred, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end and not pred():
            try:
                got.append(sock.recv(4096).decode())
            except socket.timeout:
                pass
        return pred()

    proc = topo.client.spawn(vpn.args(topo.lan_subnet), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env=dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="1000000"))
    check(receive_until(lambda: any("READY=1" in m for m in got), 30), "systemd: READY=1 arrives")
    check(ruleset(topo.client) != before and echo(topo.client, topo.lan_ip, topo.echo_port) == b"ping",
          "systemd: at READY=1 the rules are in and connections are carried")
    n = sum("WATCHDOG=1" in m for m in got)
    check(receive_until(lambda: sum("WATCHDOG=1" in m for m in got) >= n + 2, 5), "systemd: WATCHDOG=1 keeps coming")
    proc.send_signal(signal.SIGTERM)
    check(receive_until(lambda: any("STOPPING=1" in m for m in got), 10), "systemd: SIGTERM, STOPPING=1")
    check(topo.client.stop(proc) == 0 and ruleset(topo.client) == before, "systemd: exit 0, ruleset as before")
    sock.close()
    print("systemd notify: READY, WATCHDOG, STOPPING")


def main():
    pytun = os.path.abspath(sys.argv[1])
    reason = netlab.unavailable_reason()
    if reason:
        print(f"vpn_modes_test: skipping: {reason}")
        return netlab.EXIT_SKIP
    with netlab.Lab() as lab:
        topo = lab.ssh_topology(client_route_to_lan=True)
        vpn = Vpn(lab, topo, pytun)
        leaked = leak_counters(topo.client, topo)
        before = ruleset(topo.client)
        daemon_mode(lab, topo, vpn, before)
        systemd_notify(lab, topo, vpn, before)
        argument_files(lab, topo, vpn, before)
        udp_blocked(lab, topo, vpn, before, leaked)
        if lab.ipv6:
            ipv6_disabled(lab, topo, vpn, before, leaked)
        router_mode(lab, topo, vpn)
    return 0


if __name__ == "__main__":
    sys.exit(main())
