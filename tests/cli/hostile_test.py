#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# The pytun command under hostile load and hostile input (issue 14): floods
# of idle connections under the soft descriptor limit systemd gives services,
# a flood of failing connections, a typo'd secret on reload, and config
# files that are FIFOs, hold NUL bytes or are far too large.
#   hostile_test.py BINARY CASE   (meson registers one test per case)
import io
import os
import resource
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import zipfile

from clitest import Env, Failure, Skip, check, echo_roundtrip, kill_pid, main, sshd_fixture, wait_until


def http_get(port, path, timeout=5):
    """(status, body) of GET path; (0, b"") when nothing answered in time."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


def metric(text, series):
    for line in text.decode(errors="replace").splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return -1


def open_idle(port, count, within=20):
    """Up to `count` connections to 127.0.0.1:port that say nothing, made within `within` s
    (a server that stopped accepting only fills its backlog)."""
    socks = []
    end = time.monotonic() + within
    for _ in range(count):
        if time.monotonic() > end:
            break
        s = socket.socket()
        s.settimeout(1)
        try:
            s.connect(("127.0.0.1", port))
        except OSError:
            s.close()
            continue
        socks.append(s)
    return socks


def stop(env, proc):
    kill_pid(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(20)
    except subprocess.TimeoutExpired:
        kill_pid(proc.pid, signal.SIGKILL)
        proc.wait()
        raise Failure("pytun did not stop within 20 s of SIGTERM")


def one_tunnel(env, prefix=()):
    """sshd, an echo service, one tunnel T to it, pytun started: (echo, bastion port, process)."""
    env.sshd()
    echo = env.echo()
    env.connector_ini()
    port = sshd_fixture.free_port()
    env.tunnel_ini("t", "T", port, echo.port)
    return echo, port, env.start(["--config_ini", "connector.ini"], prefix=prefix)


def prlimit_prefix(soft, hard):
    if not os.path.exists("/usr/bin/prlimit"):
        raise Skip("prlimit (util-linux) is missing")
    return ["/usr/bin/prlimit", "--nofile=%d:%d" % (soft, hard), "--"]


# --------------------------------------------------------------------------
def case_fd_flood(binary):
    """1,100 idle connections to one tunnel and 1,100 to the status port,
    pytun limited to 1024 descriptors (soft and hard): the bystander tunnel
    keeps echoing and /readyz keeps answering."""
    with Env(binary) as env:
        env.sshd()
        flood_svc, bystander_svc, third_svc = env.echo(), env.echo(), env.echo()
        env.connector_ini()
        pf, pb, pt = sshd_fixture.free_port(), sshd_fixture.free_port(), sshd_fixture.free_port()
        env.tunnel_ini("flood", "Flood", pf, flood_svc.port)
        env.tunnel_ini("bystander", "Bystander", pb, bystander_svc.port)
        env.tunnel_ini("third", "Third", pt, third_svc.port)
        proc = env.start(["--config_ini", "connector.ini"], prefix=prlimit_prefix(1024, 1024))
        check(wait_until(lambda: all(echo_roundtrip(p) for p in (pf, pb, pt)), 30), "three tunnels serve")
        socks = open_idle(pf, 1100)
        check(len(socks) >= 1000, "1,100 idle connections made to the flooded tunnel (%d)" % len(socks))
        socks += open_idle(env.inspection_port, 1100)
        # Let pytun take in the whole flood (the bastion opens a channel per connection).
        wait_until(lambda: metric(http_get(env.inspection_port, "/metrics")[1],
                                  'pytun_tunnel_connections_refused_total{tunnel="Flood"}') > 0, 30)
        ok = sum(echo_roundtrip(pb, timeout=5) for _ in range(11))
        check(ok == 11, "the bystander tunnel echoes during the flood: %d of 11" % ok)
        status, body = http_get(env.inspection_port, "/readyz")
        check(status in (200, 503) and b'"ready"' in body, "/readyz answers during the flood (%d)" % status)
        status, text = http_get(env.inspection_port, "/metrics")
        refused = metric(text, 'pytun_tunnel_connections_refused_total{tunnel="Flood"}')
        check(refused > 0, "the flood's surplus is refused and counted (%d)" % refused)
        check(metric(text, "pytun_descriptors_limit") == 1024, "/metrics shows the descriptor limit")
        check(metric(text, 'pytun_tunnel_connections_refused_total{tunnel="Bystander"}') == 0,
              "nothing of the bystander's was refused")
        for s in socks:
            s.close()
        check(wait_until(lambda: echo_roundtrip(pf), 30), "the flooded tunnel serves again afterwards")
        logs = env.log("main_connector") + env.log("flood") + env.log("bystander")
        check("unreachable: Too many open files" not in logs,
              "no local service is blamed for pytun's own descriptor shortage")
        check("short of file descriptors" in env.log("main_connector"), "the shortage is reported once, as pytun's")
        check(stop(env, proc) == 0, "exit 0 after the flood")


def case_fd_limit_raised(binary):
    """Soft 1024, hard 4096: pytun raises the soft limit and says so."""
    with Env(binary) as env:
        echo, port, proc = one_tunnel(env, prefix=prlimit_prefix(1024, 4096))
        check(wait_until(lambda: echo_roundtrip(port), 30), "the tunnel serves")
        check("descriptor limit raised from 1024 to 4096" in env.log("main_connector"), "the raise is logged")
        status, text = http_get(env.inspection_port, "/metrics")
        check(metric(text, "pytun_descriptors_limit") == 4096, "/metrics shows the raised limit")
        check(stop(env, proc) == 0, "exit 0")
        # Too small a limit for the tunnels configured: --check and the start say so.
        # 300 bastion ports other than the first tunnel's (`port`, a random free one): a port asked
        # for twice is an error of its own, which --check would report instead.
        extra_ports = [p for p in range(20000, 20301) if p != port][:300]
        for i, bastion_port in enumerate(extra_ports):
            env.tunnel_ini("x%03d" % i, "X%03d" % i, bastion_port, echo.port)
        r = env.run(["--config_ini", "connector.ini", "--check"], preexec_fn=lambda: resource.setrlimit(
            resource.RLIMIT_NOFILE, (1024, 1024)))
        check(r.returncode == 0 and "descriptor limit 1024 cannot hold 301 tunnel(s)" in r.stderr,
              "--check warns that 1024 descriptors cannot hold 301 tunnels: %r" % r.stderr[-300:])


# --------------------------------------------------------------------------
def case_log_flood(binary):
    """2,000 connections to a tunnel whose local service is down make a
    handful of log lines, not 2,000."""
    with Env(binary) as env:
        env.sshd()
        env.connector_ini()
        port = sshd_fixture.free_port()
        dead = sshd_fixture.free_port()
        env.tunnel_ini("dead", "Dead", port, dead)
        proc = env.start(["--config_ini", "connector.ini"])
        check(wait_until(lambda: "tunnel up" in env.log("dead"), 30), "the tunnel is up")
        made = 0
        for _ in range(2000):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    s.sendall(b"x")
                    made += 1
                    # Until pytun has given up on it (the bastion closes it): a loop that
                    # opens faster than pytun fails them only fills libssh2's queue of
                    # forwarded connections, whose overflow the bastion refuses unseen.
                    while s.recv(4096):
                        pass
            except OSError:
                pass
        check(made >= 1900, "2,000 failing connections made (%d)" % made)
        status, text = http_get(env.inspection_port, "/metrics")
        check(wait_until(lambda: metric(http_get(env.inspection_port, "/metrics")[1],
                                        'pytun_tunnel_connections_failed_total{tunnel="Dead"}') >= made * 0.9, 30),
              "the failures are counted")
        lines = [ln for ln in env.log("dead").splitlines() if "cannot reach" in ln]
        check(1 <= len(lines) <= 6, "the failures make %d log lines (at most 6), not %d" % (len(lines), made))
        check(wait_until(lambda: "more like this" in env.log("dead"), 25), "the count of the others is logged")
        check(stop(env, proc) == 0, "exit 0")


# --------------------------------------------------------------------------
def case_secret_typo(binary):
    """`smtp_password Secret...` (the = forgotten) plus SIGHUP: the reload is
    rejected and the secret is in no log and no archive."""
    secret = "Typo-S3cret-4711"
    with Env(binary) as env:
        echo, port, proc = one_tunnel(env)
        check(wait_until(lambda: echo_roundtrip(port), 30), "the tunnel serves")
        env.connector_ini(inspection_port=env.inspection_port, extra="smtp_password %s\n" % secret)
        env.write("tunnels/extra.txt", "api_token:%s\nsmtp_password %s\n" % (secret, secret))
        kill_pid(proc.pid, signal.SIGHUP)
        check(wait_until(lambda: "reload rejected" in env.log("main_connector"), 15), "the reload is rejected")
        check("connector.ini:" in env.log("main_connector") and "smtp_password" in env.log("main_connector"),
              "the diagnostic names the file, line and key")
        for name in os.listdir(env.path("logs")):
            with open(env.path("logs", name), errors="replace") as f:
                check(secret not in f.read(), "the secret is not in logs/%s" % name)
        for path in ("/logs", "/configs"):
            status, body = http_get(env.inspection_port, path, timeout=20)
            check(status == 200, "%s answers" % path)
            with zipfile.ZipFile(io.BytesIO(body)) as z:
                for n in z.namelist():
                    check(secret.encode() not in z.read(n), "the secret is not in %s:%s" % (path, n))
        check(echo_roundtrip(port), "the tunnel still serves")
        check(stop(env, proc) == 0, "exit 0")


# --------------------------------------------------------------------------
def case_check_input(binary):
    """--check on a FIFO, on NUL and control bytes in values, on a junk file
    far too large: a clear error naming file:line: key, fast, short."""
    with Env(binary) as env:
        env.sshd()
        echo = env.echo()
        env.connector_ini()
        env.tunnel_ini("good", "Good", sshd_fixture.free_port(), echo.port)
        os.mkfifo(env.path("fifo.ini"))
        try:
            r = env.run(["--config_ini", "fifo.ini", "--check"], timeout=10)
        except subprocess.TimeoutExpired:
            raise Failure("--check on a FIFO hangs")
        check(r.returncode == 1 and "FIFO" in r.stderr, "--check on a FIFO: 1, says it is a FIFO: %r" % r.stderr)

        text = open(env.path("tunnels/good.ini")).read().replace("server_host = 127.0.0.1",
                                                                 "server_host = 127.0.0.1\0evil")
        env.write("tunnels/good.ini", text)
        r = env.run(["--config_ini", "connector.ini", "--check"])
        check(r.returncode == 1, "a NUL byte in server_host fails --check")
        check("good.ini:3: server_host: contains a control character" in r.stderr,
              "the error names file:line: key: %r" % r.stderr)
        check("evil" not in r.stderr, "the value is not echoed")
        env.write("tunnels/good.ini", text.replace("127.0.0.1\0evil", "127.0.0.1\x1b[2J"))
        r = env.run(["--config_ini", "connector.ini", "--check"])
        check(r.returncode == 1 and "\x1b" not in r.stderr + r.stdout, "an ESC byte is refused, never printed")
        os.remove(env.path("tunnels/good.ini"))

        junk = env.path("tunnels/junk.ini")
        with open(junk, "wb") as f:
            for _ in range(64):
                f.write((b"garbage line without equals sign " * 30 + b"\n") * 1024)
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t0 = time.monotonic()
        r = env.run(["--config_ini", "connector.ini", "--check"])
        secs = time.monotonic() - t0
        rss_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        check(r.returncode == 1 and "junk.ini" in r.stderr and "larger than" in r.stderr,
              "a %d MiB junk tunnel file is refused as too large" % (os.path.getsize(junk) >> 20))
        check(len(r.stderr) + len(r.stdout) < 4096, "the report is short (%d bytes)" % (len(r.stderr) + len(r.stdout)))
        check(rss_mib < 200 or before / 1024 >= 200, "--check stays small (max RSS %.0f MiB)" % rss_mib)
        print("junk file: %.2f s, max RSS %.0f MiB" % (secs, rss_mib))
        os.remove(junk)
        # Below the size limit, many bad lines: the report stays bounded.
        with open(junk, "w") as f:
            f.write("[tunnel]\n" + ("x" * 2000 + "\n") * 400)
        r = env.run(["--config_ini", "connector.ini", "--check"])
        check(r.returncode == 1 and len(r.stderr) < 16384,
              "400 long bad lines: at most 20 problems per file, none quoted whole (%d bytes)" % len(r.stderr))


def raise_own_limit():
    """The floods open thousands of sockets here, and sshd (started from here)
    holds one per forwarded connection: take the hard limit, as pytun does."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 8192:
        return False
    target = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return True


if __name__ == "__main__":
    if not raise_own_limit():
        print("SKIP: the test needs a descriptor limit of 8192 or more for its own sockets")
        raise SystemExit(77)
    raise SystemExit(main({
        "fd-flood": case_fd_flood,
        "fd-limit": case_fd_limit_raised,
        "log-flood": case_log_flood,
        "secret-typo": case_secret_typo,
        "check-input": case_check_input,
    }))
