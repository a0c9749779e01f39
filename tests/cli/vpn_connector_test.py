#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# A VPN capture run by the connector (vpn_ keys in a tunnel file): traffic, /metrics, /status, reload, --check.
"""vpn_connector_test.py PYTUN  (meson: vpn-connector, suite cli)

In the network lab's SSH topology (client -- bastion with a real sshd and
ip_forward=0 -- lan), `pytun --config_ini` runs in the client namespace
with one tunnel file that captures the lan's subnets (vpn_subnets). The
client's route to the lan leads to the bastion, which drops what it would
have to forward, so every connection that reaches the lan is the capture's.
Checked:
- before the connector runs, the lan cannot be reached directly;
- an echo to a lan address (IPv4, and IPv6 where the lab has it) comes back
  whole; a closed lan port gives the client a reset, counted as a failed
  connection;
- /metrics (names as operator_test.py checks them), /api/v1/tunnels and
  /status show the capture installed with nft on its port, the captured
  connections and the bytes;
- with sshd stopped, a captured connection is reset at once and counted as
  reset while down; the counts outlive the SSH session, and the tunnel
  serves again when sshd is back;
- --check without CAP_NET_ADMIN warns that the capture cannot be installed;
- a tunnel file with bad vpn_ keys is reported by --check as file:line: key,
  and a SIGHUP with it in place is rejected while the capture keeps working;
- SIGHUP after an exclusion is added restarts the tunnel with the new
  capture: the excluded address is not captured, the rest still is;
- SIGHUP after the tunnel file is removed removes the rules: the
  namespace's `nft list ruleset` (and iptables-save, when installed) are
  exactly as before the connector started, and the lan is unreachable again;
- SIGTERM ends the connector with status 0.
Exits 77 without root (netlab).
"""

import json
import os
import re
import shutil
import signal
import socket
import sys
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "support"))
import netlab  # noqa: E402
from testcheck import Failure, check, wait_until  # noqa: E402
from operator_test import metric_name_problems  # noqa: E402  (the naming rules of cli-metrics)

INSPECTION_PORT = 18089  # in the client namespace, where nothing else listens
CLOSED_PORT = 1          # nothing listens there in the lan
PAYLOAD = os.urandom(256 * 1024)


def http_get(ns, path):
    """GET from the connector's status API inside the client namespace (no proxy from the environment)."""
    def get():
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open("http://127.0.0.1:%d%s" % (INSPECTION_PORT, path), timeout=10) as r:
            return r.read().decode()
    return ns.call(get)


def api_forward(ns):
    """The VPN tunnel's forward in /api/v1/tunnels, or None."""
    try:
        tunnels = json.loads(http_get(ns, "/api/v1/tunnels"))["tunnels"]
    except (OSError, ValueError):
        return None
    for t in tunnels:
        if t["name"] == "corp" and t["forwards"]:
            return dict(t["forwards"][0], state=t["state"], started_times=t["started_times"])
    return None


def sample(text, series):
    m = re.search(r"^%s (\S+)$" % re.escape(series), text, re.M)
    return float(m.group(1)) if m else None


def echo(ns, host, port, payload):
    """Send payload to host:port from inside ns, return what came back before EOF."""
    def body():
        with socket.create_connection((host, port), timeout=10) as s:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            got = bytearray()
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return bytes(got)
                got += chunk
    return ns.call(body)


def outcome(ns, host, port):
    """How a connection from ns to host:port ends: 'echo', 'reset', 'refused', 'unreachable', 'closed'
    or 'timeout' (a reset after the capture's local accept reads as 'reset')."""
    def body():
        try:
            with socket.create_connection((host, port), timeout=5) as s:
                s.sendall(b"x")
                s.shutdown(socket.SHUT_WR)
                return "echo" if s.recv(16) == b"x" else "closed"
        except (ConnectionResetError, BrokenPipeError):
            return "reset"
        except ConnectionRefusedError:
            return "refused"
        except socket.timeout:
            return "timeout"
        except OSError as e:
            return "unreachable" if e.errno in (101, 113) else "error %s" % e  # ENETUNREACH, EHOSTUNREACH
    return ns.call(body)


def rulesets(ns):
    """The namespace's nft ruleset and, where installed, iptables-save / ip6tables-save (counters left out)."""
    out = {"nft": ns.run(["nft", "list", "ruleset"]).stdout}
    for tool in ("iptables-save", "ip6tables-save"):
        if shutil.which(tool):
            text = ns.run([tool], check=False).stdout
            out[tool] = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    return out


def connector_files(lab, topo, subnets):
    conf = lab.path("conf")
    os.makedirs(os.path.join(conf, "tunnels"))
    shutil.copyfile(topo.key, os.path.join(conf, "tunnels", "vpn.key"))
    os.chmod(os.path.join(conf, "tunnels", "vpn.key"), 0o600)
    shutil.copyfile(topo.known_hosts, os.path.join(conf, "tunnels", "known_hosts"))
    with open(os.path.join(conf, "connector.ini"), "w") as f:
        f.write("[pytun]\ntunnel_manager_id = vpn-connector-test\ntunnel_dirs = tunnels\nlog_path = %s\n"
                "log_level = DEBUG\ninspection_port = %d\ninspection_localhost_only = yes\n"
                % (lab.path("logs"), INSPECTION_PORT))
    os.chmod(os.path.join(conf, "connector.ini"), 0o600)
    vpn = os.path.join(conf, "tunnels", "vpn.ini")
    with open(vpn, "w") as f:
        f.write("[tunnel]\ntunnel_name = corp\nserver_host = %s\nserver_port = %d\nusername = %s\n"
                "keyfile = vpn.key\nserver_key = known_hosts\nkeep_alive_time = 2\n"
                "vpn_subnets = %s\nvpn_method = nft\n" % (topo.ssh_host, topo.ssh_port, topo.user, subnets))
    return os.path.join(conf, "connector.ini"), vpn


def log_tail(lab):
    """The ends of pytun's stderr and of every log file it wrote."""
    text = ""
    logs = lab.path("logs")
    names = [os.path.join("logs", n) for n in sorted(os.listdir(logs))] if os.path.isdir(logs) else []
    for name in ["pytun.stderr"] + names:
        try:
            with open(lab.path(name), errors="replace") as f:
                text += "--- %s\n%s" % (name, f.read()[-3000:])
        except OSError:
            pass
    return text


def run(pytun):
    with netlab.Lab() as lab:
        topo = lab.ssh_topology(client_route_to_lan=True)  # the bastion drops what it would forward
        client = topo.client
        lan6 = topo.lan_ip6
        subnets = topo.lan_subnet + (", " + topo.lan_subnet6 if lan6 else "")
        main_file, vpn_file = connector_files(lab, topo, subnets)
        env = dict(os.environ, RUNTIME_DIRECTORY=lab.path("run"))

        before = rulesets(client)
        check(outcome(client, topo.lan_ip, topo.echo_port) in ("unreachable", "timeout"),
              "before the connector runs, the lan's echo service cannot be reached from the client")

        with open(lab.path("pytun.stderr"), "wb") as err:
            proc = client.spawn([pytun, "--config_ini", main_file], stdout=err, stderr=err, env=env)
        try:
            check(wait_until(lambda: (api_forward(client) or {}).get("serving"), 30),
                  "the VPN forward serves (/api/v1/tunnels)")
            fwd = api_forward(client)
            cap = fwd["capture"]
            check(fwd["description"] == "VPN " + subnets.replace(", ", " "),
                  "it is described by its subnets: %s" % fwd["description"])
            check(cap["installed"] and cap["method"] == "nft" and cap["port"] == fwd["bound_port"] > 0,
                  "the capture is installed with nft on its port %s" % cap["port"])
            table = client.run(["nft", "list", "tables"]).stdout
            check("pytun_vpn_corp" in table, "its table is in the namespace's ruleset: %s" % table.split())

            got = echo(client, topo.lan_ip, topo.echo_port, PAYLOAD)
            check(got == PAYLOAD, "256 KiB to the lan's echo service by its real address come back whole")
            echoes = 1
            if lan6:
                check(echo(client, lan6, topo.echo_port, b"over IPv6\n") == b"over IPv6\n",
                      "an echo to the lan's IPv6 address comes back")
                echoes += 1
            check(outcome(client, topo.lan_ip, CLOSED_PORT) in ("reset", "refused"),
                  "a closed lan port gives the client a reset")

            text = http_get(client, "/metrics")
            problems = metric_name_problems(text)
            check(not problems, "metric names follow Prometheus naming: %s" % (problems or "ok"))
            f = 'tunnel="corp",forward="%s"' % fwd["description"]

            def metrics_show():
                t = http_get(client, "/metrics")
                return (sample(t, "pytun_forward_captured_connections_total{%s}" % f) == echoes + 1 and
                        sample(t, "pytun_forward_connections_failed_total{%s}" % f) == 1 and
                        sample(t, "pytun_forward_sent_bytes_total{%s}" % f) >= len(PAYLOAD) and
                        sample(t, "pytun_forward_received_bytes_total{%s}" % f) >= len(PAYLOAD))
            check(wait_until(metrics_show, 10),
                  "/metrics counts %d captured connections, 1 that failed, 256 KiB each way" % (echoes + 1))
            text = http_get(client, "/metrics")
            check(sample(text, 'pytun_forward_capture_installed{%s,method="nft"}' % f) == 1,
                  "pytun_forward_capture_installed{method=\"nft\"} is 1")
            check(sample(text, "pytun_forward_listen_port{%s}" % f) == cap["port"],
                  "pytun_forward_listen_port is the capture's port")
            check(sample(text, 'pytun_forward_capture_resets_total{%s,reason="tunnel_down"}' % f) == 0,
                  "no connection was reset for a tunnel down yet")
            status = json.loads(http_get(client, "/status"))
            vpn = status["corp"].get("vpn", {})
            check(status["corp"]["status"] is True and vpn.get("installed") is True and
                  vpn.get("method") == "nft" and vpn.get("port") == cap["port"] and
                  vpn["bytes"]["to_service"] >= len(PAYLOAD),
                  "/status: the tunnel is well, and its \"vpn\" entry shows the capture and its bytes")

            # sshd away: captured connections are reset at once, and counted across sessions.
            topo.stop_sshd()
            check(wait_until(lambda: (api_forward(client) or {}).get("state") not in ("up", "degraded"), 20),
                  "with sshd stopped the tunnel is down")
            # A new attempt has a new session's status: the capture must show in it too.
            attempts = api_forward(client)["started_times"]
            check(wait_until(lambda: (api_forward(client) or {}).get("started_times", 0) > attempts, 30, step=0.1),
                  "the connector tries again (start attempt %d)" % (attempts + 1))
            check(outcome(client, topo.lan_ip, topo.echo_port) == "reset",
                  "a captured connection while the tunnel is down is reset (fail-closed)")
            text = http_get(client, "/metrics")
            check(sample(text, 'pytun_forward_capture_resets_total{%s,reason="tunnel_down"}' % f) == 1,
                  "pytun_forward_capture_resets_total{reason=\"tunnel_down\"} counted it")
            check(sample(text, 'pytun_forward_capture_installed{%s,method="nft"}' % f) == 1,
                  "the rules stay in place while the tunnel is down")
            topo.start_sshd()
            check(wait_until(lambda: outcome(client, topo.lan_ip, topo.echo_port) == "echo", 30, step=0.2),
                  "with sshd back, captured connections are echoed again")
            text = http_get(client, "/metrics")
            captured = sample(text, "pytun_forward_captured_connections_total{%s}" % f)
            check(captured is not None and captured >= echoes + 3,
                  "the captured count outlives the SSH session (%s)" % captured)

            # --check as root without CAP_NET_ADMIN: a warning that names the capture's line.
            lines = open(vpn_file).read().splitlines()
            subnets_line = 1 + next(i for i, line in enumerate(lines) if line.startswith("vpn_subnets"))
            r = client.run(["setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin", pytun,
                            "--config_ini", main_file, "--check"], check=False)
            out = r.stdout + r.stderr
            check(r.returncode == 0 and "vpn.ini:%d: vpn_subnets: the VPN capture cannot be installed by this user "
                  "here" % subnets_line in out and "CAP_NET_ADMIN" in out,
                  "--check without CAP_NET_ADMIN warns at vpn.ini:%d (exit %d)" % (subnets_line, r.returncode))

            # A bad tunnel file: --check names it; a reload with it is rejected, the capture goes on.
            bad = os.path.join(os.path.dirname(vpn_file), "bad.ini")
            with open(vpn_file) as src, open(bad, "w") as dst:
                dst.write(src.read().replace("tunnel_name = corp", "tunnel_name = bad")
                          .replace("vpn_method = nft", "vpn_method = pf\nvpn_exclude = 10.0.0.0/33"))
            lines = open(bad).read().splitlines()
            method_line = 1 + next(i for i, line in enumerate(lines) if line.startswith("vpn_method"))
            r = client.run([pytun, "--config_ini", main_file, "--check"], check=False)
            out = r.stdout + r.stderr
            check(r.returncode == 1 and "bad.ini:%d: vpn_method: 'pf' is not a capture method" % method_line in out
                  and "bad.ini:%d: vpn_exclude: '10.0.0.0/33': mask must be 0-32" % (method_line + 1) in out,
                  "--check reports the bad keys as file:line: key (exit %d)" % r.returncode)
            os.kill(proc.pid, signal.SIGHUP)
            check(wait_until(lambda: "reload rejected" in log_tail(lab), 10),
                  "a SIGHUP with the bad file is rejected")
            check(outcome(client, topo.lan_ip, topo.echo_port) == "echo", "and the capture still carries connections")
            os.remove(bad)

            # The file changed: SIGHUP restarts the tunnel with the new capture.
            with open(vpn_file, "a") as f:
                f.write("vpn_exclude = %s/32\n" % topo.lan_ip)
            os.kill(proc.pid, signal.SIGHUP)
            check(wait_until(lambda: "-x %s/32" % topo.lan_ip in (api_forward(client) or {}).get("description", "")
                             and api_forward(client)["serving"], 30, step=0.2),
                  "after SIGHUP with vpn_exclude added, the tunnel serves the new capture")
            table = client.run(["nft", "list", "table", "inet", "pytun_vpn_corp"]).stdout
            check(re.search(r"ip daddr %s\b(?!/)" % re.escape(topo.lan_ip), table) is not None,
                  "its rules name the excluded address")
            check(outcome(client, topo.lan_ip, topo.echo_port) in ("unreachable", "timeout"),
                  "the excluded lan address is not captured any more (its direct route leads nowhere)")
            if lan6:
                check(echo(client, lan6, topo.echo_port, b"still\n") == b"still\n",
                      "the lan's IPv6 address is still captured")

            # The tunnel file removed: SIGHUP stops it, and its rules go.
            os.remove(vpn_file)
            os.kill(proc.pid, signal.SIGHUP)
            check(wait_until(lambda: rulesets(client) == before, 15, step=0.2),
                  "after SIGHUP without the tunnel file the namespace's rulesets are exactly as before")
            check(wait_until(lambda: api_forward(client) is None, 10), "the tunnel is gone from /api/v1/tunnels")
            check(outcome(client, topo.lan_ip, topo.echo_port) in ("unreachable", "timeout"),
                  "the lan cannot be reached any more")
            os.kill(proc.pid, signal.SIGTERM)
            check(wait_until(lambda: proc.poll() is not None, 15) and proc.returncode == 0,
                  "SIGTERM ends the connector with status 0 (%s)" % proc.returncode)
            check(rulesets(client) == before, "and the rulesets are still as before")
        except Failure:
            print(log_tail(lab), file=sys.stderr)
            raise
        finally:
            if proc.poll() is None:
                client.stop(proc)


def main():
    if len(sys.argv) != 2:
        print("usage: vpn_connector_test.py PYTUN", file=sys.stderr)
        return 2
    reason = netlab.unavailable_reason()
    if reason:
        print("vpn_connector_test: skipping: %s" % reason)
        return netlab.EXIT_SKIP
    try:
        run(os.path.abspath(sys.argv[1]))
    except Failure as e:
        print("FAIL: %s" % e)
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
