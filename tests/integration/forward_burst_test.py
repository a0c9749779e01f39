#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# The latency burst of issue 10: 100 SOCKS connections at once through `pytun forward -D` at 20 ms RTT, ssh -D beside it.
"""forward_burst_test.py PYTUN  (meson: forward-burst, suite integration)

In the network lab's SSH topology with 10 ms of delay each way (20 ms RTT
between the client and sshd), `pytun forward -D` runs in the client
namespace. After one warm-up connection, 100 SOCKS5 connections start
together (tests/support/socks_burst.py) to the lan's echo service; every
one must get its 32-byte echo. libssh2 opens one channel at a time per
session, so the burst is carried by the session pool: the bastion must see
more than one connection from pytun during the burst, and never more than
--max-sessions. Then `ssh -D` does the same in the same lab.

Timing is printed, not asserted (bench/run.py --kinds D --phases burst
measures it); what is asserted is that no connection failed and that the
pool grew within its bound. The lab ends every process and namespace,
whatever happens.
"""

import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SUPPORT = os.path.join(os.path.dirname(HERE), "support")
sys.path.insert(0, SUPPORT)
import netlab  # noqa: E402
import socks_burst  # noqa: E402
from testcheck import check  # noqa: E402

DELAY_MS = 10
BURST = 100
MAX_SESSIONS = 8  # pytun forward's default --max-sessions, given explicitly
PYTUN_PORT, SSH_PORT = 1080, 1081


def burst(topo, port):
    """socks_burst.py as its own process in the client (the test's threads do not slow it)."""
    r = topo.client.run([sys.executable, socks_burst.__file__, "--proxy", f"127.0.0.1:{port}",
                         "--to", f"{topo.lan_ip}:{topo.echo_port}", "-n", str(BURST)], check=False)
    try:
        return json.loads(r.stdout)
    except ValueError:
        raise AssertionError(f"socks_burst.py printed no result (exit {r.returncode}): {r.stderr.strip()}")


def describe(name, r):
    return (f"{name}: {r['ok']} of {r['count']} echoed, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
            f"min {r['min_ms']} ms, max {r['max_ms']} ms")


def main():
    pytun = os.path.abspath(sys.argv[1])
    reason = netlab.unavailable_reason() or (None if shutil.which("ssh") else "ssh not found (openssh-client)")
    if reason:
        print(f"forward_burst_test: skipping: {reason}")
        return netlab.EXIT_SKIP
    with netlab.Lab() as lab:
        topo = lab.ssh_topology(delay_ms=DELAY_MS)
        with open(lab.path("pytun.stderr"), "wb") as log:
            proc = topo.client.spawn([pytun, "forward", "-r", f"{topo.user}@{topo.ssh_host}:{topo.ssh_port}",
                                      "-i", topo.key, "--known-hosts", topo.known_hosts,
                                      "--max-sessions", str(MAX_SESSIONS), "-D", f"127.0.0.1:{PYTUN_PORT}"],
                                     stderr=log)
        try:
            topo.client.wait_listening(PYTUN_PORT, proc=proc)
            warm = topo.client.call(socks_burst.burst, ("127.0.0.1", PYTUN_PORT), (topo.lan_ip, topo.echo_port), 1)
            check(warm["ok"] == 1, f"a first SOCKS connection through pytun -D is echoed ({warm['failures']})")
            check(topo.sshd_connections() == 1, "before the burst pytun holds one connection to the bastion")

            result = burst(topo, PYTUN_PORT)
            sessions = topo.sshd_connections()  # extra sessions stay until idle for 30 s
            print(describe(f"pytun -D burst of {BURST} at {2 * DELAY_MS} ms RTT", result)
                  + f"; {sessions} connections to the bastion after it", flush=True)
            check(result["ok"] == BURST and not result["failures"],
                  f"all {BURST} SOCKS connections through pytun -D got their 32-byte echo "
                  f"(failures: {result['failures'][:3]})")
            check(1 < sessions <= MAX_SESSIONS,
                  f"the burst was spread over more than one and at most {MAX_SESSIONS} connections to the "
                  f"bastion ({sessions})")
            check(proc.poll() is None, "pytun forward still runs")
        except BaseException:
            sys.stderr.write("pytun's stderr:\n" + open(lab.path("pytun.stderr"), errors="replace").read()[-3000:])
            raise
        check(topo.client.stop(proc) == 0, "pytun forward exits 0 on SIGTERM")

        # The reference, same lab, same warm-up: printed, not asserted.
        ssh = topo.client.spawn(topo.ssh_command("-N", "-D", f"127.0.0.1:{SSH_PORT}"))
        topo.client.wait_listening(SSH_PORT, proc=ssh)
        topo.client.call(socks_burst.burst, ("127.0.0.1", SSH_PORT), (topo.lan_ip, topo.echo_port), 1)
        print(describe(f"ssh -D burst of {BURST} (reference)", burst(topo, SSH_PORT)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
