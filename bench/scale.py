#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Scale benchmark: N reverse tunnels in one process against one sshd.
"""N reverse tunnels (default 1,000) in one pytun process (bench/many_tunnels,
a TunnelManager) against one loopback sshd with MaxStartups and MaxSessions
raised, each asking for its own bastion port from a range. Measures:

  - the time until all serve after start, and the process's RSS/PSS then;
  - CPU at idle: the process's CPU seconds over --idle seconds, in % of a core;
  - a bastion restart: sshd (listener and every session) stopped, away for
    --outage seconds, started again on the same port; the time from sshd
    accepting TCP again until all N serve, and the logins sshd saw;
  - a sample of the bastion ports relays to the service afterwards.

    python3 bench/scale.py [--count 1000] [--outage 10] [--idle 30] [--json FILE]

Needs build/bench/many_tunnels (ninja -C build). Goals (issue 13, item 6):
<= 100 MiB RSS, all serving within 30 s of sshd listening again, idle CPU
<= 1 % of a core.
"""

import argparse
import json
import os
import random
import re
import resource
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests" / "support"))
import sshd_fixture  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import cpu_seconds, pss_kib, status_kib  # noqa: E402


def log(msg):
    print("[scale %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


class Echo:
    """A loopback echo service: one thread per connection (only a sample connects)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    @staticmethod
    def _serve(c):
        with c:
            while data := c.recv(65536):
                c.sendall(data)


def echo_through(port, payload=b"scale\n", timeout=5):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(payload)
            got = b""
            while len(got) < len(payload):
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
            return got == payload
    except OSError:
        return False


def free_port_range(count):
    """A base port with `count` free ports above it (checked by binding each)."""
    for _ in range(50):
        base = random.randrange(20000, 60000 - count)
        ok = True
        for p in range(base, base + count):
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                ok = False
                break
            finally:
                s.close()
        if ok:
            return base
    raise RuntimeError("no range of %d free ports found" % count)


def logins(sshd_log):
    """Successful and failed logins in sshd's log so far."""
    text = Path(sshd_log).read_text(errors="replace")
    return len(re.findall(r"Accepted publickey", text)), len(re.findall(r"Failed publickey|Connection closed by authenticating", text))


class Many:
    """bench/many_tunnels and its "UP n" lines, read by a thread."""

    def __init__(self, binary, fx, count, service_port, port_base, stderr):
        self.up = 0
        self.changes = []  # (monotonic, up)
        self.cond = threading.Condition()
        cmd = [str(binary), "--count", str(count), "--server-host", "127.0.0.1", "--server-port", str(fx["port"]),
               "--user", str(fx["user"]), "--key", fx["key_ed25519"], "--known-hosts", fx["known_hosts_bracketed"],
               "--remote-host", "127.0.0.1", "--remote-port", str(service_port), "--port-base", str(port_base)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
                                     start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            m = re.match(rb"UP (\d+)", line)
            if m:
                with self.cond:
                    self.up = int(m.group(1))
                    self.changes.append((time.monotonic(), self.up))
                    self.cond.notify_all()

    def wait_up(self, n, timeout):
        """Monotonic time when `up` reached n, or None."""
        end = time.monotonic() + timeout
        with self.cond:
            while self.up < n:
                left = end - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    return None
                self.cond.wait(min(left, 0.5))
            return next(t for t, u in reversed(self.changes) if u >= n)

    def wait_down(self, timeout):
        end = time.monotonic() + timeout
        with self.cond:
            while self.up > 0 and time.monotonic() < end:
                self.cond.wait(0.5)
        return self.up == 0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--outage", type=float, default=10, help="seconds sshd stays away (default 10)")
    ap.add_argument("--idle", type=float, default=30, help="seconds of idle CPU measurement (default 30)")
    ap.add_argument("--binary", default=str(REPO_ROOT / "build" / "bench" / "many_tunnels"))
    ap.add_argument("--json", help="write the results here too")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the work directory (sshd's and pytun's logs)")
    args = ap.parse_args(argv)
    if not os.access(args.binary, os.X_OK):
        print("no %s: build it first (ninja -C build)" % args.binary, file=sys.stderr)
        return 2
    need = args.count * 4 + 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, need), hard), hard))

    res = {"count": args.count, "outage_s": args.outage}
    with tempfile.TemporaryDirectory(prefix="pytun-scale-") as tmp:
        if args.keep_tmp:
            tmp = tempfile.mkdtemp(prefix="pytun-scale-kept-")
            log("work directory kept: %s" % tmp)
        info = sshd_fixture.prepare(os.path.join(tmp, "sshd"))
        cfg = Path(info["sshd_config"])
        # sshd uses the first value it reads: raise the limits in front.
        cfg.write_text("MaxStartups %d\nMaxSessions %d\nPerSourceMaxStartups none\n%s"
                       % (args.count * 2, 100, cfg.read_text()))
        sshd = sshd_fixture.start_sshd(info)
        echo = Echo()
        base = free_port_range(args.count)
        stderr = open(os.path.join(tmp, "many.stderr"), "wb")
        many = Many(args.binary, info, args.count, echo.port, base, stderr)
        try:
            t0 = time.monotonic()
            at = many.wait_up(args.count, 300)
            if at is None:
                raise SystemExit("only %d of %d tunnels up after 300 s" % (many.up, args.count))
            res["start_all_up_s"] = round(at - t0, 2)
            time.sleep(2)
            res["rss_mib"] = round(status_kib(many.proc.pid, "VmRSS") / 1024, 1)
            res["pss_mib"] = round(pss_kib(many.proc.pid) / 1024, 1)
            res["rss_kib_per_tunnel"] = round(status_kib(many.proc.pid, "VmRSS") / args.count, 1)
            log("%d tunnels up in %.1f s; RSS %.1f MiB, PSS %.1f MiB"
                % (args.count, res["start_all_up_s"], res["rss_mib"], res["pss_mib"]))

            c0 = cpu_seconds(many.proc.pid)
            time.sleep(args.idle)
            res["idle_cpu_pct"] = round(100 * (cpu_seconds(many.proc.pid) - c0) / args.idle, 2)
            log("idle CPU %.2f %% of a core over %.0f s" % (res["idle_cpu_pct"], args.idle))

            sample = random.sample(range(args.count), min(20, args.count))
            res["sample_ok_before"] = sum(echo_through(base + i) for i in sample)

            ok_before, _ = logins(info["sshd_log"])
            sshd_fixture.stop_sshd(sshd, sessions=True)
            stopped = time.monotonic()
            if not many.wait_down(60):
                log("still %d up 60 s after sshd stopped" % many.up)
            time.sleep(max(0.0, args.outage - (time.monotonic() - stopped)))
            ok_mid, failed_mid = logins(info["sshd_log"])
            sshd = sshd_fixture.start_sshd(info)
            listening = time.monotonic()
            at = many.wait_up(args.count, 300)
            if at is None:
                res["restart_all_up_s"] = None
                log("only %d of %d up 300 s after sshd listened again" % (many.up, args.count))
            else:
                res["restart_all_up_s"] = round(max(0.0, at - listening), 2)
                half = next(t for t, u in many.changes if t >= listening and u >= args.count // 2)
                res["restart_half_up_s"] = round(max(0.0, half - listening), 2)
                log("after %.0f s away: all %d serve %.1f s after sshd listens again (half after %.1f s)"
                    % (args.outage, args.count, res["restart_all_up_s"], res["restart_half_up_s"]))
            ok_after, failed_after = logins(info["sshd_log"])
            res["logins_during_outage"] = ok_mid - ok_before
            res["logins_after_restart"] = ok_after - ok_mid
            res["failed_logins"] = failed_after
            res["sample_ok_after"] = sum(echo_through(base + i) for i in sample)
            res["sample_size"] = len(sample)
        finally:
            many.stop()
            sshd_fixture.stop_sshd(sshd, sessions=True)
            stderr.close()
    print(json.dumps(res, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
