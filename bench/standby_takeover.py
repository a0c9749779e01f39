#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Measures how long an active-standby pair of pytun connectors takes to serve again when the active goes away.
"""Takeover time of a standby connector, in the network lab; prints JSON.

    sudo bench/standby_takeover.py [--pytun build/tools/pytun/pytun] [--rounds 3]
        [--client-alive-interval 5] [--client-alive-count-max 2] [--keep-alive 5]

Two clients of the lab's SSH topology (tests/support/netlab.py) each run a
pytun connector with the same tunnel (`standby = true`, bastion port 10389 on
the bastion's loopback -> an echo service in the client's namespace). One
holds the port (the active), the other is standby. The bastion's sshd runs
with the ClientAliveInterval / ClientAliveCountMax given. Then, per round:

  kill  the active's process is SIGKILLed: its kernel closes the TCP
        connection, sshd frees the port at once, the standby binds it on
        its next retry (every 1-2 s).
  cut   the active's link drops every frame (silently): only sshd's
        ClientAlive probes can notice, after about interval x (count_max + 1)
        seconds; then the standby binds the port.

The figure is the time from the event to the first echo that comes back
through the bastion port (tried every 50 ms from inside the bastion), with
the time the standby's status API said `up`. After each round the lost
connector is brought back (restarted, or its link restored) and becomes the
standby, so rounds alternate which client is active.
"""

import argparse
import json
import os
import signal
import socket
import sys
import time
import urllib.request

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
sys.path.insert(0, os.path.join(REPO, "tests", "support"))
import netlab  # noqa: E402

BASTION_PORT = 10389
API_PORT = 9999


def echo_once(port, timeout=1.0):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"ping\n")
            return s.recv(16) == b"ping\n"
    except OSError:
        return False


def api_state(ns):
    def get():
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/api/v1/tunnels" % API_PORT, timeout=2) as r:
                return json.load(r)["tunnels"][0]["state"]
        except (OSError, ValueError, IndexError, KeyError):
            return None
    return ns.call(get)


class Connector:
    def __init__(self, lab, topo, role, pytun, keep_alive):
        self.role, self.pytun = role, pytun
        self.ns = next(c for c in topo.clients if c.role == role)
        service = lab.start_services(self.ns, "127.0.0.1")["echo"]
        d = lab.path(role)
        os.makedirs(os.path.join(d, "tunnels"), exist_ok=True)
        key = os.path.join(d, "tunnels", "key")
        with open(topo.key, "rb") as src, open(key, "wb") as dst:
            dst.write(src.read())
        os.chmod(key, 0o600)
        with open(os.path.join(d, "connector.ini"), "w") as f:
            f.write("[pytun]\ntunnel_manager_id = %s\ntunnel_dirs = tunnels\nlog_path = logs\n"
                    "inspection_port = %d\nstandby = true\n" % (role, API_PORT))
        with open(os.path.join(d, "tunnels", "ldap.ini"), "w") as f:
            f.write("[tunnel]\ntunnel_name = ldap\nserver_host = %s\nserver_port = %d\nport = %d\n"
                    "remote_host = 127.0.0.1\nremote_port = %d\nusername = %s\nkeyfile = key\n"
                    "server_key = %s\nkeep_alive_time = %d\n"
                    % (topo.ssh_hosts[role], topo.ssh_port, BASTION_PORT, service, topo.user, topo.known_hosts,
                       keep_alive))
        self.config = os.path.join(d, "connector.ini")
        self.proc = None

    def start(self):
        with open(os.devnull, "wb") as quiet:
            self.proc = self.ns.spawn([self.pytun, "--config_ini", self.config], stdout=quiet, stderr=quiet)

    def state(self):
        return api_state(self.ns)


def wait(cond, timeout, step=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return cond()


def set_client_alive(topo, interval, count_max):
    path = topo.sshd["sshd_config"]
    with open(path) as f:
        lines = [ln for ln in f.read().splitlines() if not ln.startswith("ClientAlive")]
    lines += ["ClientAliveInterval %d" % interval, "ClientAliveCountMax %d" % count_max]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    topo.stop_sshd()
    topo.start_sshd()


def takeover(topo, active, standby, event, quiet, timeout):
    """Make `active` go away by `event`; seconds until an echo passes the bastion port, and until the
    standby's API said up."""
    t0 = time.monotonic()
    if event == "kill":
        os.kill(active.proc.pid, signal.SIGKILL)
    else:
        topo.links[active.role].cut("drop")
    served = None
    api_up = None
    end = t0 + timeout
    while time.monotonic() < end and (served is None or api_up is None):
        # With --quiet the port gets no client until the standby says up (see --help).
        if served is None and (not quiet or api_up is not None) and topo.bastion.call(echo_once, BASTION_PORT, 0.5):
            served = time.monotonic() - t0
        if api_up is None and standby.state() == "up":
            api_up = time.monotonic() - t0
        time.sleep(0.05)
    if served is None:
        with open(topo.sshd["sshd_log"], errors="replace") as f:
            tail = f.read().splitlines()[-15:]
        print("%s: no takeover within %d s; standby %s is %s; sshd's log ends:\n  %s"
              % (event, timeout, standby.role, standby.state(), "\n  ".join(tail)), file=sys.stderr)
    # Bring the lost one back as the new standby.
    if event == "kill":
        active.ns.stop(active.proc)
        active.start()
    else:
        topo.links[active.role].restore()
    if not wait(lambda: active.state() == "standby", max(120, timeout)):
        raise SystemExit("%s did not come back as standby (state %s)" % (active.role, active.state()))
    return served, api_up


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pytun", default=os.path.join(REPO, "build", "tools", "pytun", "pytun"))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--client-alive-interval", type=int, default=5)
    p.add_argument("--client-alive-count-max", type=int, default=2)
    p.add_argument("--keep-alive", type=int, default=5, help="keep_alive_time of both connectors")
    p.add_argument("--events", default="kill,cut")
    p.add_argument("--tcp-retries2", type=int, default=None,
                   help="net.ipv4.tcp_retries2 in the bastion's namespace (the kernel's default is 15)")
    p.add_argument("--timeout", type=float, default=120, help="seconds to wait for each takeover")
    p.add_argument("--quiet", action="store_true",
                   help="no client tries the bastion port until the standby's status says up")
    args = p.parse_args()
    pytun = os.path.abspath(args.pytun)
    try:
        lab = netlab.Lab()
    except netlab.LabUnavailable as e:
        print("lab unavailable: %s" % e, file=sys.stderr)
        return 77
    with lab:
        topo = lab.ssh_topology(clients=2, lan=False)
        set_client_alive(topo, args.client_alive_interval, args.client_alive_count_max)
        if args.tcp_retries2 is not None:
            topo.bastion.sysctl("net.ipv4.tcp_retries2", args.tcp_retries2)
        a = Connector(lab, topo, "client", pytun, args.keep_alive)
        b = Connector(lab, topo, "client2", pytun, args.keep_alive)
        a.start()
        if not wait(lambda: a.state() == "up", 60):
            raise SystemExit("the first connector did not come up (state %s)" % a.state())
        b.start()
        if not wait(lambda: b.state() == "standby", 60):
            raise SystemExit("the second connector did not become standby (state %s)" % b.state())
        results = {"sshd": {"ClientAliveInterval": args.client_alive_interval,
                            "ClientAliveCountMax": args.client_alive_count_max,
                            "tcp_retries2": args.tcp_retries2 if args.tcp_retries2 is not None else "default"},
                   "clients_during_takeover": not args.quiet,
                   "keep_alive_time": args.keep_alive, "load_average": round(os.getloadavg()[0], 1)}
        active, standby = a, b
        for event in args.events.split(","):
            rows = []
            for _ in range(args.rounds):
                served, api_up = takeover(topo, active, standby, event, args.quiet, args.timeout)
                rows.append({"served_s": None if served is None else round(served, 2),
                             "status_up_s": None if api_up is None else round(api_up, 2)})
                active, standby = standby, active
            results[event] = rows
        results["load_average_end"] = round(os.getloadavg()[0], 1)
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
