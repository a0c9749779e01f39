#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Self-test of the network lab: SSH topology with delay, no route to the lan, relay latency, ssh -D burst, cleanup.
"""netlab_selftest.py  (meson: netlab-selftest, suite integration; --child: a lab to be killed)

Builds the SSH topology with 10 ms of delay each way and checks what tests
rely on: the client cannot reach the lan directly; the relay adds at least
the delay (a lower bound only: a loaded machine may add more, never less)
and carries bytes intact, in order, with half-close; 100 SOCKS connections
through `ssh -D` all get their echo; IPv6; a second client; cutting and
restoring a link; packet counters; stopping and restarting sshd; the
machine's own namespace is untouched; and after the Lab, whether it ended
normally, by an exception, by SIGTERM or by SIGKILL, no namespace or process
of it remains.
"""

import hashlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import netlab  # noqa: E402
import socks_burst  # noqa: E402
from testcheck import Failure, check, wait_until  # noqa: E402

DELAY_MS = 10
SOCKS_PORT = 1080
PROBE_PORT = 7000  # a second relay in the bastion, straight to the lan's echo
BURST = 100


def alive(pid):
    """Is `pid` a running (not zombie) process?"""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def lab_pids(lab):
    """Every process in the lab's namespaces (those it started and their children)."""
    pids = []
    for ns in lab.namespaces:
        pids += netlab._pids_in_namespace(netlab._namespace_key(f"/run/netns/{ns.name}"))
    return pids


def spawn_sleeper(lab, ns):
    """A process in `ns`; returns its PID once it is in there (ip netns exec has joined)."""
    proc = ns.spawn(["sleep", "600"])
    check(wait_until(lambda: proc.pid in lab_pids(lab), 10), f"a process runs in {ns.name}")
    return proc.pid


def check_gone(names, pids, how):
    left = [n for n in netlab.netns_names() if n in names]
    check(not left, f"{how}: no namespace of the lab remains (ip netns list; left: {left})")
    running = [p for p in pids if alive(p)]
    check(not running, f"{how}: none of the lab's {len(pids)} processes runs (left: {running})")
    files = [n for n in names if os.path.exists(netlab._etc_netns(n))]
    check(not files, f"{how}: no /etc/netns/NAME of the lab remains (left: {files})")


def ping_pong(sock, rounds, size=32):
    """Round-trip times (ms) of `size`-byte messages echoed back over `sock`."""
    rtts = []
    for _ in range(rounds):
        msg = os.urandom(size)
        t0 = time.perf_counter()
        sock.sendall(msg)
        got = b""
        while len(got) < size:
            chunk = sock.recv(size - len(got))
            if not chunk:
                raise Failure("the echo closed during the ping-pong")
            got += chunk
        rtts.append((time.perf_counter() - t0) * 1000)
        if got != msg:
            raise Failure("the ping-pong echo differs from what was sent")
    return rtts


def echo_through(sock, data):
    """Send data, half-close, read until EOF; returns what came back."""
    back = bytearray()

    def reader():
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                return
            back.extend(chunk)

    t = threading.Thread(target=reader)
    t.start()
    sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)
    t.join(60)
    return bytes(back)


def root_namespace_clean(lab):
    """Nothing of the lab in the machine's own namespace: links, addresses, nft tables."""
    links = subprocess.run([lab.ip_path, "-o", "link"], capture_output=True, text=True).stdout
    addrs = subprocess.run([lab.ip_path, "-o", "addr"], capture_output=True, text=True).stdout
    rules = subprocess.run([lab.nft_path, "list", "tables"], capture_output=True, text=True).stdout
    ours = [ifname for ns in lab.namespaces for ifname in ns.ifnames if ifname != "lo"]
    return (not any(f": {name}@" in links or f": {name}:" in links for name in ours)
            and "198.18." not in addrs and "198.19." not in addrs and "fd00:198:" not in addrs
            and "pytun_" not in rules)


def check_backpressure(lab, topo):
    """A receiver that does not read: the relay stops reading the sender instead of
    holding everything; once the receiver reads, every byte arrives in order."""
    listener = topo.bastion.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    relay = lab.delay_relay(topo.bastion, [("0.0.0.0", PROBE_PORT + 2)], listener.getsockname(), DELAY_MS,
                            max_buffer=1 << 20)
    start_reading = threading.Event()
    received = hashlib.sha256()
    counts = {"received": 0}

    def receiver():
        conn, _ = listener.accept()
        with conn:
            start_reading.wait(60)
            while chunk := conn.recv(1 << 20):
                received.update(chunk)
                counts["received"] += len(chunk)

    thread = threading.Thread(target=receiver)
    thread.start()
    sent = hashlib.sha256()
    total = 0
    block = os.urandom(1 << 20)
    with topo.client.create_connection((topo.ssh_host, PROBE_PORT + 2), 10) as s:
        s.setblocking(False)
        last_progress = time.monotonic()
        while total < 256 << 20 and time.monotonic() - last_progress < 1.0:
            try:
                n = s.send(block)
            except BlockingIOError:
                time.sleep(0.01)
                continue
            sent.update(block[:n])
            total += n
            last_progress = time.monotonic()
        check(total < 64 << 20, f"the relay holds back a sender whose receiver does not read "
                                f"(accepted {total >> 20} MiB, kernel buffers included; bound 64 MiB)")
        start_reading.set()
        s.setblocking(True)
        s.shutdown(socket.SHUT_WR)
        thread.join(60)
    listener.close()
    check(counts["received"] == total and received.digest() == sent.digest(),
          f"once the receiver reads, all {total >> 20} MiB arrive intact")
    topo.bastion.stop(relay)


def test_topology():
    with netlab.Lab() as lab:
        topo = lab.ssh_topology(delay_ms=DELAY_MS, clients=2)
        names = [ns.name for ns in lab.namespaces]
        check(all(n.startswith(f"pytun-{os.getpid()}-") for n in names) and set(names) <= set(netlab.netns_names()),
              f"namespaces named pytun-<pid>-<serial>-<role>: {names}")
        check(topo.bastion.sysctl("net.ipv4.ip_forward") == "0", "the bastion does not forward (ip_forward=0)")

        with topo.bastion.create_connection((topo.lan_ip, topo.echo_port), 5) as s:
            check(ping_pong(s, 1) is not None, "the bastion reaches the lan's echo service")
        try:
            topo.client.create_connection((topo.lan_ip, topo.echo_port), 3).close()
            check(False, "a direct connection from the client to the lan fails")
        except OSError as e:
            check(e.errno == 101, f"a direct connection from the client to the lan fails: {e}")

        # The relay: at least the delay each way; bytes intact, in order, half-close.
        probe = lab.delay_relay(topo.bastion, [("0.0.0.0", PROBE_PORT)], (topo.lan_ip, topo.echo_port), DELAY_MS)
        with topo.client.create_connection((topo.ssh_host, PROBE_PORT), 10) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            rtts = ping_pong(s, 20)
        print(f"relay ping-pong at {DELAY_MS} ms each way: min {min(rtts):.1f} ms, "
              f"median {statistics.median(rtts):.1f} ms, max {max(rtts):.1f} ms")
        check(min(rtts) >= 2 * DELAY_MS - 0.5, f"every round trip through the relay takes >= 2 x {DELAY_MS} ms")
        data = os.urandom(4 << 20)
        with topo.client.create_connection((topo.ssh_host, PROBE_PORT), 10) as s:
            back = echo_through(s, data)
        check(hashlib.sha256(back).digest() == hashlib.sha256(data).digest(),
              "4 MiB through the relay and back: intact, in order, EOF after the half-close")
        refused = lab.delay_relay(topo.bastion, [("0.0.0.0", PROBE_PORT + 1)], (topo.lan_ip, 9), DELAY_MS)
        with topo.client.create_connection((topo.ssh_host, PROBE_PORT + 1), 10) as s:
            try:
                got = s.recv(1)
                check(False, f"a refused destination behind the relay resets the client (got {got!r})")
            except ConnectionResetError:
                check(True, "a refused destination behind the relay resets the client")
        topo.bastion.stop(refused)
        topo.bastion.stop(probe)
        check_backpressure(lab, topo)

        # ssh -D through the topology's relay; 100 connections at once.
        ssh = topo.client.spawn(topo.ssh_command("-N", "-D", f"127.0.0.1:{SOCKS_PORT}"))
        topo.client.wait_listening(SOCKS_PORT, proc=ssh)
        r = topo.client.run([sys.executable, socks_burst.__file__, "--proxy", f"127.0.0.1:{SOCKS_PORT}",
                             "--to", f"{topo.lan_ip}:{topo.echo_port}", "-n", str(BURST)], check=False)
        result = json.loads(r.stdout)
        print(f"ssh -D burst of {BURST} at {2 * DELAY_MS} ms RTT: p50 {result['p50_ms']} ms, "
              f"p99 {result['p99_ms']} ms, min {result['min_ms']} ms, failed {result['failed']}")
        check(r.returncode == 0 and result["ok"] == BURST and not result["failures"],
              f"all {BURST} SOCKS connections through ssh -D got their 32-byte echo "
              f"(failures: {result['failures'][:3]})")
        check(result["min_ms"] >= 2 * DELAY_MS - 0.5,
              f"each SOCKS echo took at least one round trip through the relay ({2 * DELAY_MS} ms)")
        busy_pids = lab_pids(lab)
        check(len(busy_pids) >= 5, f"processes run in the lab (sshd and its session, ssh, relay, services): "
                                   f"{len(busy_pids)}")

        # IPv6 end to end: sshd by its ULA address, the lan's echo by its own.
        r = topo.client.run(topo.ssh_command(host=topo.ssh_host6, command=("true",)), check=False)
        check(r.returncode == 0, f"ssh to the bastion's IPv6 address works (known_hosts names it): {r.stderr.strip()}")
        six = topo.client.call(socks_burst.burst, ("127.0.0.1", SOCKS_PORT), (topo.lan_ip6, topo.echo_port), 5)
        check(six["ok"] == 5, f"SOCKS to the lan's IPv6 address through ssh -D ({six['failures'][:1]})")

        client2 = topo.clients[1]
        r = client2.run(topo.ssh_command(client="client2", command=("true",)), check=False)
        check(r.returncode == 0 and topo.ssh_hosts["client2"] != topo.ssh_host,
              f"a second client reaches sshd over its own link ({topo.ssh_hosts['client2']}) {r.stderr.strip()}")

        # Cut and restore, with packet counters on both ends.
        link = topo.links["client"]
        sent, received = link.counter(topo.client), link.counter(topo.bastion)
        link.cut("drop")
        before_tx, before_rx = sent.read()["tx_packets"], received.read()["rx_packets"]
        try:
            topo.client.create_connection((topo.ssh_host, topo.ssh_port), 1).close()
            check(False, "a dropped link carries nothing")
        except OSError:
            pass
        check(sent.read()["tx_packets"] > before_tx and received.read()["rx_packets"] == before_rx,
              "cut (nft drop): the client's SYNs leave (counted) and never arrive (not counted)")
        check(root_namespace_clean(lab), "the machine's own namespace has no link, address or table of the lab")
        link.restore()
        topo.client.create_connection((topo.ssh_host, topo.ssh_port), 5).close()
        check(received.read()["rx_packets"] > before_rx, "restore: the client connects to sshd again")

        lan_link = topo.links["lan"]
        lan_link.cut("down")
        try:
            topo.bastion.create_connection((topo.lan_ip, topo.echo_port), 1).close()
            check(False, "a link set down carries nothing")
        except OSError:
            pass
        lan_link.restore()
        with topo.bastion.create_connection((topo.lan_ip6, topo.echo_port), 5) as s:
            ping_pong(s, 1)
        check("default via" in topo.lan.ip("route", "show", "default"),
              "restore (after down): addresses and the lan's default route are back")

        # The bastion goes away (sessions included) and comes back.
        topo.stop_sshd()
        check(wait_until(lambda: ssh.poll() is not None, 15), "stop_sshd: the bastion goes away, its sessions "
                                                             "with it (ssh -D exits)")
        topo.start_sshd()
        r = topo.client.run(topo.ssh_command(command=("true",)), check=False)
        check(r.returncode == 0, f"start_sshd: the bastion serves again {r.stderr.strip()}")

        names, pids = [ns.name for ns in lab.namespaces], sorted(set(busy_pids + lab_pids(lab)))
    check_gone(names, pids, "after the Lab")


def test_exception():
    try:
        with netlab.Lab() as lab:
            ns = lab.namespace("boom")
            names, pids = [ns.name], [spawn_sleeper(lab, ns)]
            ns.resolv_conf("nameserver 198.18.250.53\n")
            seen = ns.run(["cat", "/etc/resolv.conf"]).stdout
            check(seen == "nameserver 198.18.250.53\n", "resolv_conf: what programs started there read as /etc/resolv.conf")
            raise RuntimeError("a failing test")
    except RuntimeError:
        pass
    check_gone(names, pids, "after an exception")


def child():
    """Run by test_signal: a lab with a process, then wait to be killed."""
    lab = netlab.Lab()
    ns = lab.namespace("victim")
    ns.resolv_conf("nameserver 198.18.250.53\n")
    print(json.dumps({"names": [ns.name], "pids": [spawn_sleeper(lab, ns)]}), flush=True)
    time.sleep(600)
    return 0


def test_signal(sig):
    proc = subprocess.Popen([sys.executable, __file__, "--child"], stdout=subprocess.PIPE, text=True)
    try:
        line = next((ln for ln in proc.stdout if ln.startswith("{")), "")
        check(line, "the child reports its lab")
        state = json.loads(line)
        check(set(state["names"]) <= set(netlab.netns_names()), f"the child's lab is up ({state['names']})")
        proc.send_signal(sig)
        rc = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    name = signal.Signals(sig).name
    if sig == signal.SIGKILL:  # the guard cleans up after the process died
        wait_until(lambda: not set(state["names"]) & set(netlab.netns_names())
                          and not any(alive(p) for p in state["pids"]), 20)
    else:
        check(rc == 128 + sig, f"{name}: the test process exits {128 + sig} (got {rc})")
    check_gone(state["names"], state["pids"], f"after {name}")


def main():
    if sys.argv[1:] == ["--child"]:
        return child()
    reason = netlab.unavailable_reason() or (None if netlab._tool("ssh") else "ssh not found (openssh-client)")
    if reason:
        print(f"netlab_selftest: skipping: {reason}")
        return netlab.EXIT_SKIP
    try:
        test_topology()
        test_exception()
        test_signal(signal.SIGTERM)
        test_signal(signal.SIGKILL)
    except Failure as e:
        print(f"FAIL: {e}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
