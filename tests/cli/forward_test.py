#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Forwards end to end against a real sshd, echo services and SOCKS clients:
# `pytun forward` (each kind, several at once, exit codes, a graceful stop,
# a busy local port, IPv6, a bastion that goes away) and tunnel files that
# declare forwards (run mode, status API, secrets, reload, --check,
# --test_tunnels, --test_connections).
#   forward_test.py BINARY CASE   (meson registers one test per case)
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import zipfile
import io

from clitest import (Env, Failure, Skip, check, echo_roundtrip, kill_pid, main, port_accepts, sshd_fixture,
                     wait_until)

import socks_burst  # tests/support, on the path through clitest


def forward_args(info, *forwards, remote=None, key=None, known_hosts=None):
    """`pytun forward` against the fixture's bastion with its key and known_hosts."""
    return ["forward", "-r", remote or "%s@127.0.0.1:%d" % (info["user"], info["port"]),
            "-i", key or info["key_ed25519"], "--known-hosts", known_hosts or info["known_hosts_bracketed"],
            *forwards]


class Forwarder:
    """A running `pytun forward`, its stderr (and stdout) in a file of its own."""

    def __init__(self, env, args, name="forward"):
        self.log = env.path(name + ".stderr")
        with open(self.log, "ab") as err:
            self.proc = env.start(args, stderr=err)

    def text(self):
        with open(self.log, errors="replace") as f:
            return f.read()

    def wait_for(self, fragment, timeout=30, count=1):
        """Until `fragment` is in the output `count` times; fails early if pytun exits."""
        ok = wait_until(lambda: self.text().count(fragment) >= count or self.proc.poll() is not None, timeout)
        if self.text().count(fragment) < count:
            raise Failure("no %r in the output of pytun forward (%s) after %d s:\n%s"
                          % (fragment, "exited with %s" % self.proc.returncode if self.proc.poll() is not None
                             else "running", timeout, self.text()[-3000:]))
        return ok

    def stop(self, sig=signal.SIGTERM, timeout=20):
        t0 = time.monotonic()
        kill_pid(self.proc.pid, sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise Failure("pytun forward did not exit within %d s of %s" % (timeout, sig.name))
        return rc, time.monotonic() - t0


def stream_echo(port, size, host="127.0.0.1", sock=None):
    """`size` random bytes through an echo at host:port, sent while the answer is read: True when they come
    back intact (sha256)."""
    data = os.urandom(size)
    s = sock or socket.create_connection((host, port), timeout=30)

    def send():
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    got = hashlib.sha256()
    n = 0
    try:
        while True:
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            got.update(chunk)
            n += len(chunk)
    except OSError:
        return False
    finally:
        sender.join(30)
        s.close()
    return n == size and got.digest() == hashlib.sha256(data).digest()


def socks_echo(proxy, destination, count=1, size=65536, **auth):
    """SOCKS5 connections through `proxy` to an echo at `destination`: the burst's result."""
    return socks_burst.burst(proxy, destination, count=count, size=size, timeout=30, **auth)


def socks_reply(result):
    """The SOCKS reply of the first failure, or None."""
    return result["failures"][0].get("socks_reply") if result["failures"] else None


def held_port(host="127.0.0.1"):
    """A listening socket that keeps its port busy until closed."""
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.bind((host, 0))
    s.listen(4)
    return s, s.getsockname()[1]


# --------------------------------------------------------------------------
def case_kinds(binary):
    """Every kind over one connection, data through each; --allow covers -D and reverse SOCKS."""
    with Env(binary) as env:
        info = env.sshd()
        echo, other = env.echo(), env.echo()
        lp, lp2, dp, rp, rsp = (sshd_fixture.free_port() for _ in range(5))
        allow = "127.0.0.1:%d" % echo.port
        fw = Forwarder(env, forward_args(info, "-L", "%d:127.0.0.1:%d" % (lp, echo.port),
                                         "-L", "127.0.0.1:%d:localhost:%d" % (lp2, echo.port),
                                         "-D", str(dp),
                                         "-R", "%d:127.0.0.1:%d" % (rp, echo.port),
                                         "-R", str(rsp), "--allow", allow))
        fw.wait_for("connected to")
        out = fw.text()
        print(out)
        for line in ("  L 127.0.0.1:%d -> 127.0.0.1:%d: listening on 127.0.0.1:%d" % (lp, echo.port, lp),
                     "  D 127.0.0.1:%d (SOCKS): listening on 127.0.0.1:%d" % (dp, dp),
                     "  R localhost:%d -> 127.0.0.1:%d: the bastion listens on port %d" % (rp, echo.port, rp),
                     "  R localhost:%d (SOCKS): the bastion listens on port %d" % (rsp, rsp)):
            check(line in out, "printed when up: %r" % line.strip())

        check(stream_echo(lp, 8 << 20), "-L: 8 MiB through and back, intact")
        check(stream_echo(lp2, 1 << 20), "-L to a name the bastion resolves: 1 MiB intact")
        r = socks_echo(("127.0.0.1", dp), ("127.0.0.1", echo.port), count=20)
        check(r["ok"] == 20, "-D: 20 SOCKS5 connections echo 64 KiB each: %s" % r["failures"][:2])
        r = socks_echo(("127.0.0.1", dp), ("127.0.0.1", other.port))
        check(socks_reply(r) == 2, "-D: a destination outside --allow gets SOCKS reply 0x02: %s" % r["failures"])
        check(stream_echo(rp, 4 << 20), "-R: 4 MiB from the bastion's port to the echo here, intact")
        r = socks_echo(("127.0.0.1", rsp), ("127.0.0.1", echo.port), count=10)
        check(r["ok"] == 10, "-R reverse SOCKS: 10 connections to an allowed destination echo: %s"
              % r["failures"][:2])
        r = socks_echo(("127.0.0.1", rsp), ("127.0.0.1", other.port))
        check(socks_reply(r) == 2 and other.accepted == 0,
              "-R reverse SOCKS: a destination outside --allow gets 0x02 and is never connected")
        rc, secs = fw.stop()
        check(rc == 0, "SIGTERM: exit 0 (%.1f s)" % secs)
        check(not port_accepts(lp) and not port_accepts(dp), "the local ports are closed")


# --------------------------------------------------------------------------
def case_sigterm(binary):
    """SIGTERM with a transfer in flight: the listener closes, the transfer finishes intact, exit 0.
    SIGINT and SIGHUP stop it too."""
    with Env(binary) as env:
        info = env.sshd()
        echo = env.echo()
        lp = sshd_fixture.free_port()
        fw = Forwarder(env, forward_args(info, "-L", "%d:127.0.0.1:%d" % (lp, echo.port), "--grace", "20"))
        fw.wait_for("connected to")
        size = 48 << 20
        data = os.urandom(size)
        s = socket.create_connection(("127.0.0.1", lp), timeout=30)
        first_mib = threading.Event()

        def send():
            try:
                for i in range(0, size, 1 << 16):
                    if i == 2 << 20:
                        first_mib.wait(30)  # SIGTERM is sent while the rest is still to go
                    s.sendall(data[i:i + (1 << 16)])
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        got = hashlib.sha256()
        n = 0
        signalled = None
        while True:
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            got.update(chunk)
            n += len(chunk)
            if signalled is None and n >= 1 << 20:
                kill_pid(fw.proc.pid, signal.SIGTERM)
                signalled = time.monotonic()
                check(wait_until(lambda: not port_accepts(lp), 10), "after SIGTERM the listener is closed")
                first_mib.set()
        sender.join(30)
        s.close()
        check(signalled is not None, "SIGTERM was sent mid-transfer")
        check(n == size and got.digest() == hashlib.sha256(data).digest(),
              "the connection open at SIGTERM finished: %d MiB back, intact" % (n >> 20))
        rc = fw.proc.wait(30)
        check(rc == 0, "exit 0 after the connection finished (%.1f s after SIGTERM)" % (time.monotonic() - signalled))
        check("stopping; open connections get up to 20 s" in fw.text(), "says it is stopping and for how long")

        for sig in (signal.SIGINT, signal.SIGHUP):
            fw = Forwarder(env, forward_args(info, "-L", "%d:127.0.0.1:%d" % (lp, echo.port)), name=sig.name)
            fw.wait_for("connected to")
            check(echo_roundtrip(lp), "%s run: serves" % sig.name)
            rc, secs = fw.stop(sig)
            check(rc == 0, "%s: exit 0 (%.1f s)" % (sig.name, secs))


# --------------------------------------------------------------------------
def case_errors(binary):
    """Exit 2 for a command line that cannot work (saying what to write), 1 for what the bastion, its
    host key or the key refuse (saying why), before any retry loop."""
    with Env(binary) as env:
        info = env.sshd()
        usage = [
            (["forward"], "--remote"),
            (forward_args(info), "nothing to forward"),
            (forward_args(info, "-L", "8080:db"), "-L '8080:db': expected [BIND:]PORT:HOST:HOSTPORT"),
            (forward_args(info, "-D", "1080:db:1"), "-D '1080:db:1': expected [BIND:]PORT"),
            (forward_args(info, "-L", "99999:db:1"), "is not a port"),
            (forward_args(info, "-R", "1080"), "--allow"),
            (forward_args(info, "-D", "1080", "--allow", "10.0.0.0/33"), "--allow '10.0.0.0/33': mask must be 0-32"),
            (forward_args(info, "-L", "8080:db:1", "--allow", "10.0.0.0/8"), "--allow applies to SOCKS forwards"),
            (forward_args(info, "-L", "8080:db:1", "-D", "8080"), "127.0.0.1:8080 is also where"),
            (forward_args(info, "-D", "1080", "--socks-user", "u"), "go together"),
            (forward_args(info, "-D", "1080", "--max-sessions", "0"), "--max-sessions"),
            (forward_args(info, "-D", "1080", "--min-sessions", "5", "--max-sessions", "4"),
             "--min-sessions 5 is more than --max-sessions 4"),
            (forward_args(info, "-D", "1080", remote="u@127.0.0.1:"), "is not a port"),
            (forward_args(info, "-D", "1080", remote="u@[::1"), "'[' without ']'"),
            (forward_args(info, "-D", "1080", "--no-such-option"), "--no-such-option"),
        ]
        for args, fragment in usage:
            r = env.run(args, timeout=30)
            check(r.returncode == 2 and fragment in r.stderr,
                  "exit 2 naming %r for %s: %s" % (fragment, " ".join(args[5:] or args), r.stderr.strip()[-300:]))

        lp = sshd_fixture.free_port()
        fwd = ("-L", "%d:127.0.0.1:22" % lp)
        secret = env.write("empty-password", "\n")
        permanent = [
            (forward_args(info, *fwd, known_hosts=info["known_hosts_unknown"]), "is not known"),
            (forward_args(info, *fwd, known_hosts=info["known_hosts_changed"]), "has CHANGED"),
            (forward_args(info, *fwd, known_hosts=env.path("no-known-hosts")), "no-known-hosts"),
            (forward_args(info, *fwd, key=env.path("no-such-key")), env.path("no-such-key")),
            (forward_args(info, *fwd, key=info["key_unauthorized"]), "did not accept the key"),
            (forward_args(info, "-D", str(lp), "--socks-user", "u", "--socks-password-file", secret),
             "first line is empty"),
        ]
        for args, fragment in permanent:
            t0 = time.monotonic()
            r = env.run(args, timeout=60)
            check(r.returncode == 1 and fragment in r.stderr,
                  "exit 1 naming %r (%.1f s): %s" % (fragment, time.monotonic() - t0, r.stderr.strip()[-300:]))
            check(not port_accepts(lp), "nothing left listening on %d" % lp)


# --------------------------------------------------------------------------
def case_busy_port(binary):
    """A busy local port: the other forwards serve and it is said which one does not and why; it
    serves once the port is free. Alone, it is exit 1 naming address and port."""
    with Env(binary) as env:
        info = env.sshd()
        echo = env.echo()
        held, busy = held_port()
        lp, dp = sshd_fixture.free_port(), sshd_fixture.free_port()
        fw = Forwarder(env, forward_args(info, "-L", "%d:127.0.0.1:%d" % (busy, echo.port), "-D", str(dp),
                                         "-L", "%d:127.0.0.1:%d" % (lp, echo.port)))
        fw.wait_for("connected to")
        out = fw.text()
        print(out)
        check("L 127.0.0.1:%d -> 127.0.0.1:%d: NOT serving" % (busy, echo.port) in out
              and "127.0.0.1:%d" % busy in out.split("NOT serving", 1)[1] and "in use" in out,
              "the busy forward is NOT serving, naming 127.0.0.1:%d and why" % busy)
        check(stream_echo(lp, 1 << 20), "the other -L serves")
        check(socks_echo(("127.0.0.1", dp), ("127.0.0.1", echo.port))["ok"] == 1, "the -D serves")
        held.close()
        fw.wait_for("listening on 127.0.0.1:%d" % busy, timeout=30)
        check(stream_echo(busy, 1 << 20), "once the port is free the forward serves by itself")
        rc, _ = fw.stop()
        check(rc == 0, "SIGTERM: exit 0")

        held, busy = held_port()
        r = env.run(forward_args(info, "-L", "%d:127.0.0.1:%d" % (busy, echo.port)), timeout=60)
        check(r.returncode == 1 and "127.0.0.1:%d" % busy in r.stderr and "in use" in r.stderr,
              "the only forward on a busy port: exit 1 naming 127.0.0.1:%d: %s" % (busy, r.stderr.strip()))
        held.close()


# --------------------------------------------------------------------------
def case_ipv6(binary):
    """An IPv6 bastion in -r, IPv6 bind addresses and targets in the specs, SOCKS5 to an IPv6 address."""
    try:
        probe, _ = held_port("::1")
        probe.close()
    except OSError as e:
        raise Skip("no IPv6 loopback here: %s" % e)
    with Env(binary) as env:
        port = sshd_fixture.free_port()
        info = env.sshd(port=port, listen=[("127.0.0.1", port), ("::1", port)], host_names=["127.0.0.1", "::1"])
        echo6 = env.echo("::1")
        lp, dp, rp = (sshd_fixture.free_port() for _ in range(3))
        fw = Forwarder(env, forward_args(info, "-L", "[::1]:%d:[::1]:%d" % (lp, echo6.port), "-D", "[::1]:%d" % dp,
                                         "-R", "%d:[::1]:%d" % (rp, echo6.port),
                                         remote="%s@[::1]:%d" % (info["user"], port)))
        fw.wait_for("connected to %s@[::1]:%d" % (info["user"], port))
        out = fw.text()
        print(out)
        check("L [::1]:%d -> [::1]:%d: listening on [::1]:%d" % (lp, echo6.port, lp) in out,
              "IPv6 forwards are printed with brackets")
        check(stream_echo(lp, 1 << 20, host="::1"), "-L [::1]:PORT:[::1]:PORT: 1 MiB intact")
        r = socks_echo(("::1", dp), ("::1", echo6.port), count=5)
        check(r["ok"] == 5, "-D on [::1], SOCKS5 CONNECT to an IPv6 address: %s" % r["failures"][:1])
        check(stream_echo(rp, 1 << 20), "-R to an IPv6 target: 1 MiB intact")
        rc, _ = fw.stop()
        check(rc == 0, "exit 0")


# --------------------------------------------------------------------------
def case_reconnect(binary):
    """Started while the bastion is down it keeps trying; when the bastion goes away every forward comes
    back by itself."""
    with Env(binary) as env:
        info = env.sshd()
        echo = env.echo()
        env.stop_sshd()
        lp, dp = sshd_fixture.free_port(), sshd_fixture.free_port()
        fw = Forwarder(env, forward_args(info, "-L", "%d:127.0.0.1:%d" % (lp, echo.port), "-D", str(dp)))
        fw.wait_for("cannot connect:")
        check(fw.proc.poll() is None, "a bastion that is down is retried, not fatal")
        env.restart_sshd()
        fw.wait_for("connected to", timeout=60)
        check(echo_roundtrip(lp), "-L serves once the bastion is up")
        env.stop_sshd()
        fw.wait_for("connection lost:", timeout=60)
        env.restart_sshd()
        fw.wait_for("connected to", timeout=60, count=2)
        check(wait_until(lambda: echo_roundtrip(lp), 30), "-L serves again after the bastion came back")
        check(socks_echo(("127.0.0.1", dp), ("127.0.0.1", echo.port))["ok"] == 1, "-D serves again")
        rc, _ = fw.stop()
        check(rc == 0, "exit 0")


# --------------------------------------------------------------------------
def connections_to(port):
    """Established TCP connections from this machine to `port` (pytun's sessions to the bastion)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "01" and int(fields[2].rsplit(":", 1)[1], 16) == port:
                    count += 1
    return count


def case_warm(binary):
    """--min-sessions keeps that many SSH connections open with no traffic at all, a burst grows the pool
    to --max-sessions at most, and a warm connection the bastion drops is replaced by itself."""
    with Env(binary) as env:
        info = env.sshd()
        echo = env.echo()
        dp = sshd_fixture.free_port()
        fw = Forwarder(env, forward_args(info, "-D", str(dp), "--min-sessions", "3", "--max-sessions", "5"))
        fw.wait_for("connected to")
        check(wait_until(lambda: connections_to(info["port"]) == 3, 30),
              "3 SSH connections to the bastion before any traffic (%d)" % connections_to(info["port"]))
        burst = socks_echo(("127.0.0.1", dp), ("127.0.0.1", echo.port), count=40, size=32)
        check(burst["ok"] == 40, "a burst of 40 through the warm pool: %s" % burst)
        check(3 <= connections_to(info["port"]) <= 5, "at most --max-sessions after the burst (%d)"
              % connections_to(info["port"]))
        # The bastion drops all but the two oldest connections (the tunnel's own is the oldest), below
        # the warm minimum: the pool opens what is missing, without a restart.
        children = sorted(sshd_fixture._children(env.sshd_proc.pid))
        check(len(children) >= 3, "the bastion runs one process per connection (%s)" % children)
        for pid in children[2:]:
            kill_pid(pid, signal.SIGKILL)
        check(wait_until(lambda: connections_to(info["port"]) == 3, 30),
              "back to 3 connections after the bastion dropped %d (%d)" % (len(children) - 2,
                                                                           connections_to(info["port"])))
        check(socks_echo(("127.0.0.1", dp), ("127.0.0.1", echo.port))["ok"] == 1, "still serves")
        check("connection lost" not in fw.text(), "the tunnel's own connection was not disturbed")
        rc, _ = fw.stop()
        check(rc == 0, "exit 0 after SIGTERM (%s); its output:\n%s" % (rc, fw.text()[-4000:]))
        check(wait_until(lambda: connections_to(info["port"]) == 0, 10), "no connection left after SIGTERM")


def get(port, path):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=10) as r:
        return r.read()


def metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def forwards_tunnel(env, lp, dp, rp, rsp, echo_port, extra=""):
    """tunnels/db.ini: forwards only, SOCKS with an allowlist and a login."""
    return env.tunnel_ini("db", "DB and SOCKS", 0, 0, section="tunnel", forwards_only=True, extra=(
        "local_forward = %d:127.0.0.1:%d\n"
        "dynamic_forward = %d\n"
        "remote_forward = %d:127.0.0.1:%d, %d   # the second is reverse SOCKS\n"
        "socks_allow = 127.0.0.1:%d\n"
        "socks_user = alice\n"
        "socks_password = \"Socks-Pa55 #1\"\n%s" % (lp, echo_port, dp, rp, echo_port, rsp, echo_port, extra)))


def case_config(binary):
    """A tunnel file with forwards beside a classic one: both serve, the status API shows each forward,
    the SOCKS password is in no log and no archive, SIGHUP applies a changed forward and rejects a bad one."""
    with Env(binary) as env:
        env.sshd()
        echo, other = env.echo(), env.echo()
        env.connector_ini()
        p1 = sshd_fixture.free_port()
        env.tunnel_ini("ldap", "LDAP", p1, echo.port)
        lp, lp2, dp, rp, rsp = (sshd_fixture.free_port() for _ in range(5))
        db = forwards_tunnel(env, lp, dp, rp, rsp, echo.port)
        os.chmod(db, 0o600)
        proc = env.start(["--config_ini", "connector.ini"])
        check(wait_until(lambda: echo_roundtrip(p1) and echo_roundtrip(lp), 30),
              "the classic tunnel and the local_forward serve")
        check(stream_echo(lp, 4 << 20), "local_forward: 4 MiB intact")
        auth = {"username": "alice", "password": "Socks-Pa55 #1"}
        r = socks_echo(("127.0.0.1", dp), ("127.0.0.1", echo.port), count=5, **auth)
        check(r["ok"] == 5, "dynamic_forward with socks_user/socks_password: 5 echoes %s" % r["failures"][:1])
        r = socks_echo(("127.0.0.1", dp), ("127.0.0.1", echo.port))
        check(r["ok"] == 0 and r["failures"][0]["stage"] == "method", "without the login: refused at the method")
        check(socks_reply(socks_echo(("127.0.0.1", dp), ("127.0.0.1", other.port), **auth)) == 2,
              "outside socks_allow: 0x02")
        check(stream_echo(rp, 1 << 20), "remote_forward: 1 MiB intact")
        r = socks_echo(("127.0.0.1", rsp), ("127.0.0.1", echo.port), count=3)
        check(r["ok"] == 3, "remote_forward without target: reverse SOCKS serves %s" % r["failures"][:1])

        port = env.inspection_port
        status = json.loads(get(port, "/status"))
        check(status["DB and SOCKS"] == {"remote_host": "", "remote_port": 0, "status": True},
              "/status: a tunnel of forwards only has no local service; status says every forward serves: %s"
              % status["DB and SOCKS"])
        check(status["LDAP"] == {"remote_host": "127.0.0.1", "remote_port": echo.port, "status": True},
              "/status: the classic tunnel is as before")
        api = {t["name"]: t for t in json.loads(get(port, "/api/v1/tunnels"))["tunnels"]}
        forwards = api["DB and SOCKS"]["forwards"]
        check([(f["description"], f["serving"], f["bound_port"]) for f in forwards] == [
            ("L 127.0.0.1:%d -> 127.0.0.1:%d" % (lp, echo.port), True, lp),
            ("D 127.0.0.1:%d (SOCKS)" % dp, True, dp),
            ("R localhost:%d -> 127.0.0.1:%d" % (rp, echo.port), True, rp),
            ("R localhost:%d (SOCKS)" % rsp, True, rsp)], "/api/v1/tunnels lists each forward: %s" % forwards)
        check(forwards[0]["bytes"]["from_service"] >= 4 << 20 and forwards[0]["connections"]["total"] >= 2,
              "per forward: bytes and connections of its own: %s" % forwards[0])
        check(api["DB and SOCKS"]["sessions"] >= 1 and api["LDAP"]["forwards"][0]["serving"],
              "sessions, and the classic tunnel's one forward")
        text = get(port, "/metrics").decode()
        label = 'tunnel="DB and SOCKS",forward="L 127.0.0.1:%d -> 127.0.0.1:%d"' % (lp, echo.port)
        check(metric(text, "pytun_forward_up{%s}" % label) == 1
              and metric(text, "pytun_forward_sent_bytes_total{%s}" % label) >= 4 << 20
              and metric(text, "pytun_forward_listen_port{%s}" % label) == lp
              and metric(text, 'pytun_tunnel_sessions{tunnel="DB and SOCKS"}') >= 1,
              "/metrics: pytun_forward_* with tunnel and forward labels, pytun_tunnel_sessions")

        # The SOCKS password: in no log, redacted from /configs.
        logs = "".join(env.log(n) for n in ("main_connector", "db", "ldap"))
        check("Socks-Pa55" not in logs and "Socks-Pa55" not in open(env.path("pytun.stderr")).read(),
              "socks_password is in no log")
        archive = zipfile.ZipFile(io.BytesIO(get(port, "/configs")))
        db_ini = archive.read("tunnels/db.ini").decode()
        check("Socks-Pa55" not in db_ini and 'socks_password = "***REDACTED***"' in db_ini,
              "/configs: socks_password redacted")

        # Reload: LDAP keeps a connection open; DB's local_forward moves to another port.
        held = socket.create_connection(("127.0.0.1", p1), timeout=10)
        held.sendall(b"before")
        check(held.recv(100) == b"before", "a connection through LDAP")
        with open(db) as f:
            text = f.read().replace("local_forward = %d:" % lp, "local_forward = %d:" % lp2)
        env.write("tunnels/db.ini", text, 0o600)
        kill_pid(proc.pid, signal.SIGHUP)
        check(wait_until(lambda: "restarted DB and SOCKS; stopped -; kept LDAP" in env.log("main_connector"), 20),
              "SIGHUP: the changed tunnel restarts, the other is kept")
        check(wait_until(lambda: echo_roundtrip(lp2), 30) and not port_accepts(lp),
              "the local_forward moved to its new port")
        held.sendall(b"after")
        check(held.recv(100) == b"after", "the LDAP connection survived the reload")
        env.write("tunnels/db.ini", text + "dynamic_forward = 1080:nope\n", 0o600)
        kill_pid(proc.pid, signal.SIGHUP)
        check(wait_until(lambda: "reload rejected" in env.log("main_connector"), 20), "a bad forward: reload rejected")
        check("db.ini:16: dynamic_forward: '1080:nope'" in env.log("main_connector"),
              "the rejection names file:line: key and the value")
        check(echo_roundtrip(lp2), "DB still serves as before")
        held.close()
        kill_pid(proc.pid, signal.SIGTERM)
        check(proc.wait(20) == 0, "SIGTERM: exit 0")


def case_config_check(binary):
    """--check lists forwards and reports their mistakes; --test_tunnels checks each forward without
    traffic; --test_connections skips a tunnel that has no local service."""
    with Env(binary) as env:
        info = env.sshd()
        echo = env.echo()
        env.connector_ini()
        lp, dp, rp, rsp = (sshd_fixture.free_port() for _ in range(4))
        forwards_tunnel(env, lp, dp, rp, rsp, echo.port)
        r = env.run(["--config_ini", "connector.ini", "--check"])
        check(r.returncode == 0 and "DB and SOCKS: 127.0.0.1:%d (" % info["port"] in r.stdout
              and "    L 127.0.0.1:%d -> 127.0.0.1:%d\n" % (lp, echo.port) in r.stdout
              and "    R localhost:%d (SOCKS)\n" % rsp in r.stdout,
              "--check: valid, the forwards listed: %s" % r.stdout)
        check(not port_accepts(lp), "--check bound nothing")

        r = env.run(["--config_ini", "connector.ini", "--test_tunnels"])
        print(r.stdout)
        check(r.returncode == 0 and "ok     DB and SOCKS" in r.stdout
              and "ok     L 127.0.0.1:%d -> 127.0.0.1:%d: listening on port %d, the bastion reached 127.0.0.1:%d"
              % (lp, echo.port, lp, echo.port) in r.stdout
              and "ok     R localhost:%d (SOCKS): the bastion listens on port %d" % (rsp, rsp) in r.stdout,
              "--test_tunnels: each forward started; the bastion reached the local_forward's target")
        check(echo.accepted == 1, "one connection reached the target, and no payload was needed")
        r = env.run(["--config_ini", "connector.ini", "--test_connections"])
        check(r.returncode == 0 and "no remote_host (forwards only)" in r.stdout,
              "--test_connections: a tunnel of forwards only has nothing to probe here: %s" % r.stdout)

        # A dead target and a busy local port: FAILED, exit 4, each named.
        held, busy = held_port()
        dead = sshd_fixture.free_port()
        forwards_tunnel(env, lp, dp, rp, rsp, echo.port,
                        extra="local_forward = 127.0.0.1:%d:127.0.0.1:%d, %d:127.0.0.1:%d\n" % (
                            sshd_fixture.free_port(), dead, busy, echo.port))
        r = env.run(["--config_ini", "connector.ini", "--test_tunnels"], timeout=120)
        print(r.stdout)
        busy_line = [ln for ln in r.stdout.splitlines() if "FAILED L 127.0.0.1:%d ->" % busy in ln]
        check(r.returncode == 4 and "FAILED DB and SOCKS" in r.stdout
              and "the bastion could not connect to 127.0.0.1:%d" % dead in r.stdout
              and busy_line and "cannot listen on 127.0.0.1:%d" % busy in busy_line[0],
              "--test_tunnels: a dead target and a busy port are FAILED, exit 4")
        held.close()

        # Mistakes in forward keys: file:line: key: what to write.
        forwards_tunnel(env, lp, dp, rp, rsp, echo.port, extra="local_forward = 8080:db\nsocks_allow = 10.0.0.0/33\n")
        r = env.run(["--config_ini", "connector.ini", "--check"])
        check(r.returncode == 1 and "db.ini:16: local_forward: '8080:db': expected [BIND:]PORT:HOST:HOSTPORT"
              in r.stderr and "db.ini:17: socks_allow: '10.0.0.0/33': mask must be 0-32" in r.stderr,
              "--check: 1, each mistake as file:line: key: message: %s" % r.stderr)
        check("Socks-Pa55" not in r.stdout + r.stderr, "the SOCKS password is never printed")


# --------------------------------------------------------------------------
def case_example(binary):
    """examples/forward_proxy.cpp, the embedding example: a local forward and a SOCKS proxy over one
    connection."""
    example = os.environ.get("PYTUN_FORWARD_PROXY", "")
    if not os.access(example, os.X_OK):
        raise Skip("PYTUN_FORWARD_PROXY not set to the built example (run through meson test)")
    with Env(binary) as env:
        info = env.sshd()
        echo = env.echo()
        lp, dp = sshd_fixture.free_port(), sshd_fixture.free_port()
        out = env.path("example.out")
        with open(out, "wb") as f:
            proc = subprocess.Popen([example, "--server-host", "127.0.0.1", "--server-port", str(info["port"]),
                                     "--user", info["user"], "--key", info["key_ed25519"],
                                     "--known-hosts", info["known_hosts_bracketed"],
                                     "--local", "%d:127.0.0.1:%d" % (lp, echo.port), "--socks", str(dp),
                                     "--allow", "127.0.0.1"], stdin=subprocess.DEVNULL, stdout=f, stderr=f)
        env.procs.append(proc)
        text = lambda: open(out, errors="replace").read()  # noqa: E731
        check(wait_until(lambda: "READY" in text() or proc.poll() is not None, 30) and "READY" in text(),
              "the example connects: %s" % text())
        check("L 127.0.0.1:%d -> 127.0.0.1:%d: listening on port %d" % (lp, echo.port, lp) in text()
              and "D 127.0.0.1:%d (SOCKS): listening on port %d" % (dp, dp) in text(),
              "it prints where each forward listens")
        check(stream_echo(lp, 1 << 20), "its local forward: 1 MiB intact")
        check(socks_echo(("127.0.0.1", dp), ("127.0.0.1", echo.port))["ok"] == 1, "its SOCKS proxy")
        kill_pid(proc.pid, signal.SIGTERM)
        check(proc.wait(15) == 0 and "stopped: 2 connections" in text(), "SIGTERM: exit 0: %s" % text())


if __name__ == "__main__":
    sys.exit(main({
        "kinds": case_kinds,
        "sigterm": case_sigterm,
        "errors": case_errors,
        "busy-port": case_busy_port,
        "ipv6": case_ipv6,
        "reconnect": case_reconnect,
        "warm": case_warm,
        "config": case_config,
        "config-check": case_config_check,
        "example": case_example,
    }))
