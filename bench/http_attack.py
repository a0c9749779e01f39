#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# The status server under a slow-client attack: N slow-header clients (one
# header byte a second, reconnecting when cut off) and M silent ones
# (connect, say nothing) against a running `pytun`, while a well-behaved
# client asks for /status, /healthz and /readyz; prints the latency
# percentiles and failures. A program that prints numbers, not a test.
#   bench/http_attack.py [--pytun build/tools/pytun/pytun] [--slow 500] [--silent 200] [--seconds 30]
import argparse
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "support"))
import sshd_fixture  # noqa: E402


class Attack:
    """Keeps `slow` slow-header and `silent` silent connections open, reconnecting each one the server cuts."""

    def __init__(self, port, slow, silent):
        self.port, self.want = port, {"slow": slow, "silent": silent}
        self.sel = selectors.DefaultSelector()
        self.count = {"slow": 0, "silent": 0}
        self.cut = 0
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)

    def open(self, kind):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", self.port))
        except BlockingIOError:
            pass
        except OSError:
            s.close()
            return
        self.sel.register(s, selectors.EVENT_READ, kind)
        self.count[kind] += 1
        if kind == "slow":
            try:
                s.send(b"GET /status HTTP/1.1\r\nX-a: ")
            except OSError:
                pass

    def run(self):
        last_drip = 0.0
        while not self.stop:
            for kind, n in self.want.items():
                while self.count[kind] < n:
                    self.open(kind)
            for key, _ in self.sel.select(0.05):
                s = key.fileobj
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                if not data:   # cut off (408/503 and close): come back at once
                    self.sel.unregister(s)
                    s.close()
                    self.count[key.data] -= 1
                    self.cut += 1
            if time.monotonic() - last_drip >= 1.0:
                last_drip = time.monotonic()
                for key in list(self.sel.get_map().values()):
                    if key.data == "slow":
                        try:
                            key.fileobj.send(b"a")
                        except OSError:
                            pass
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()


def get(port, path, timeout):
    """(answered, ms): the route's own answer arrived; a 503 from an overloaded server is not one
    (but /readyz's 503 "not ready", which carries "ready", is)."""
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=timeout) as r:
            r.read()
            ok = True
    except urllib.error.HTTPError as e:
        ok = path == "/readyz" and e.code == 503 and b'"ready"' in e.read()
    except OSError:
        ok = False
    return ok, (time.monotonic() - t0) * 1000


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pytun", default=os.path.join(REPO, "build", "tools", "pytun", "pytun"))
    ap.add_argument("--slow", type=int, default=500)
    ap.add_argument("--silent", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--timeout", type=float, default=10, help="per probe request")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="pytun-attack-")
    port = sshd_fixture.free_port()
    os.makedirs(os.path.join(tmp, "tunnels"))
    with open(os.path.join(tmp, "connector.ini"), "w") as f:
        f.write("[pytun]\ntunnel_manager_id = attack\ntunnel_dirs = tunnels\nlog_path = logs\n"
                "inspection_port = %d\n" % port)
    proc = subprocess.Popen([args.pytun, "--config_ini", os.path.join(tmp, "connector.ini")],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=tmp, start_new_session=True)
    try:
        end = time.monotonic() + 20
        while time.monotonic() < end and not get(port, "/healthz", 1)[0]:
            time.sleep(0.1)
        quiet = [get(port, "/status", args.timeout)[1] for _ in range(20)]
        attack = Attack(port, args.slow, args.silent)
        attack.thread.start()
        time.sleep(3)  # let the attack fill the server
        results = {"/status": [], "/healthz": [], "/readyz": []}
        failures = {k: 0 for k in results}
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            for path in results:
                ok, ms = get(port, path, args.timeout)
                if ok:
                    results[path].append(ms)
                else:
                    failures[path] += 1
                    results[path].append(args.timeout * 1000)
        attack.stop = True
        attack.thread.join()
        print("pytun: %s" % args.pytun)
        print("without attack: /status p50 %.1f ms, p99 %.1f ms" % (percentile(quiet, 50), percentile(quiet, 99)))
        print("attack: %d slow-header + %d silent clients, %d connections cut and reopened"
              % (args.slow, args.silent, attack.cut))
        for path, ms in results.items():
            print("  %-8s %4d requests, %3d not answered (refused, or nothing within %.0f s; counted as %.0f s):"
              " p50 %.1f ms, p99 %.1f ms, max %.1f ms"
              % (path, len(ms), failures[path], args.timeout, args.timeout, percentile(ms, 50), percentile(ms, 99),
                 max(ms) if ms else float("nan")))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
