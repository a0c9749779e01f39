#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Bastions behind a proxy or a jump host, through the pytun command: `proxy`
# in [pytun] and in a tunnel file (tinyproxy with Basic authentication),
# `proxy = none`, the https_proxy / no_proxy environment, and pytun forward
# -J / --proxy (a second sshd as the jump host, microsocks as SOCKS5). The
# proxy's password must be in no log line, /status, /api/v1/tunnels,
# /metrics, /configs archive or --check output.
#   proxy_test.py BINARY CASE   (meson registers one test per case)
import io
import json
import os
import signal
import sys
import urllib.request
import zipfile

from clitest import Env, Skip, check, echo_roundtrip, kill_pid, main, sshd_fixture, wait_until

import proxy_fixture  # tests/support, on the path through clitest

USER = "pxuser"
PASSWORD = "Px-pw.7f3a9"


def proxy(env, kind, user=None, password=None, bind=None, name=None):
    """A real proxy of `kind` (http: tinyproxy, socks5: microsocks), stopped by PID with the test."""
    try:
        info = proxy_fixture.prepare(kind, env.path(name or kind), user, password, bind)
    except proxy_fixture.MissingTool as e:
        raise Skip(str(e))
    proc = proxy_fixture.start(info)
    env.procs.append(proc)
    return info


def proxy_log(info):
    with open(info["log"], errors="replace") as f:
        return f.read()


def sshd_log(info):
    with open(info["sshd_log"], errors="replace") as f:
        return f.read()


def login(info, address):
    """What sshd logs when the fixture's user logs in from `address` (a connection alone is not a login:
    the fixture's readiness check connects too)."""
    return "Accepted publickey for %s from %s port" % (info["user"], address)


def second_sshd(env, name="jump"):
    """Another sshd (the jump host), stopped with the test."""
    try:
        info = sshd_fixture.prepare(env.path(name))
    except sshd_fixture.MissingTool as e:
        raise Skip(str(e))
    proc = sshd_fixture.start_sshd(info)
    env.cleanups.append(lambda: sshd_fixture.stop_sshd(proc))
    return info


def get(port, path):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=10) as r:
        return r.read()


def everything_shown(env, port, logs):
    """What an operator or a monitoring system sees: log files, stderr, the status API, the archive."""
    shown = {name: env.log(name) for name in logs}
    with open(env.path("pytun.stderr"), errors="replace") as f:
        shown["stderr"] = f.read()
    for path in ("/status", "/api/v1/tunnels", "/metrics"):
        shown[path] = get(port, path).decode(errors="replace")
    archive = zipfile.ZipFile(io.BytesIO(get(port, "/configs")))
    for name in archive.namelist():
        shown["/configs " + name] = archive.read(name).decode(errors="replace")
    return shown


def case_config(binary):
    """[pytun]'s proxy (tinyproxy, Basic auth) serves a tunnel, `proxy = none` another, both beside an
    https_proxy that points nowhere; the password is shown nowhere; a wrong password on reload is a
    clear error in the tunnel's log."""
    with Env(binary) as env:
        bastion = env.sshd()
        echo = env.echo()
        http = proxy(env, "http", USER, PASSWORD, bind="127.0.0.3")
        url = "http://%s:%s@127.0.0.1:%d" % (USER, PASSWORD, http["port"])
        env.connector_ini(extra="proxy = %s\n" % url)
        p1, p2 = sshd_fixture.free_port(), sshd_fixture.free_port()
        env.tunnel_ini("proxied", "Proxied", p1, echo.port)
        env.tunnel_ini("direct", "Direct", p2, echo.port, extra="proxy = none\n")

        r = env.run(["--config_ini", "connector.ini", "--check"])
        check(r.returncode == 0 and "Proxied: 127.0.0.1:%d port %d -> 127.0.0.1:%d through the proxy "
              "http://%s@127.0.0.1:%d (" % (bastion["port"], p1, echo.port, USER, http["port"]) in r.stdout,
              "--check shows the route with the proxy's user, not its password: %s" % r.stdout)
        check("Direct: 127.0.0.1:%d port %d -> 127.0.0.1:%d (" % (bastion["port"], p2, echo.port) in r.stdout,
              "--check: proxy = none connects directly")
        check(PASSWORD not in r.stdout + r.stderr, "--check never prints the password")

        environment = dict(os.environ, https_proxy="http://127.0.0.1:9")  # keys win over the environment
        proc = env.start(["--config_ini", "connector.ini"], env=environment)
        check(wait_until(lambda: echo_roundtrip(p1) and echo_roundtrip(p2), 30), "both tunnels serve")
        check("CONNECT 127.0.0.1:%d" % bastion["port"] in proxy_log(http) or
              "127.0.0.1:%d" % bastion["port"] in proxy_log(http), "tinyproxy carried a connection to the bastion")
        log = sshd_log(bastion)
        check(login(bastion, "127.0.0.3") in log and login(bastion, "127.0.0.1") in log,
              "sshd saw the proxied tunnel log in from tinyproxy's 127.0.0.3, the direct one from 127.0.0.1")
        check("through the proxy http://%s@127.0.0.1:%d" % (USER, http["port"]) in env.log("proxied"),
              "the tunnel's log says how it connects")

        shown = everything_shown(env, env.inspection_port, ("main_connector", "proxied", "direct"))
        leaks = [where for where, text in shown.items() if PASSWORD in text]
        check(not leaks, "the proxy password is in none of %s (found in %s)" % (sorted(shown), leaks))
        check("proxy = http://%s:***REDACTED***@127.0.0.1:%d" % (USER, http["port"]) in shown["/configs connector.ini"],
              "/configs: the URL's password redacted, the rest kept: %s" % shown["/configs connector.ini"])

        # A wrong password: the tunnel restarts on SIGHUP and says why, without either password.
        with open(env.path("connector.ini")) as f:
            text = f.read()
        env.write("connector.ini", text.replace(PASSWORD, "wrong-Secret-42"), 0o600)
        kill_pid(proc.pid, signal.SIGHUP)
        expected = "did not accept the user name '%s'" % USER
        check(wait_until(lambda: expected in env.log("proxied"), 30),
              "the tunnel's log: the proxy refused the user (%s)" % env.log("proxied")[-2000:])
        logs = "".join(env.log(n) for n in ("main_connector", "proxied", "direct"))
        check("wrong-Secret-42" not in logs and PASSWORD not in logs, "no password in the logs")
        api = {t["name"]: t for t in json.loads(get(env.inspection_port, "/api/v1/tunnels"))["tunnels"]}
        check(expected in json.dumps(api["Proxied"]) and "wrong-Secret-42" not in json.dumps(api),
              "/api/v1/tunnels: the error, without the password: %s" % api["Proxied"])
        check(echo_roundtrip(p2), "the direct tunnel is untouched")
        kill_pid(proc.pid, signal.SIGTERM)
        check(proc.wait(20) == 0, "SIGTERM: exit 0")


def case_environment(binary):
    """https_proxy serves tunnels that set no proxy, unless no_proxy exempts the bastion; a variable that
    does not parse stops the start naming it, unless no tunnel would use it."""
    with Env(binary) as env:
        bastion = env.sshd()
        echo = env.echo()
        http = proxy(env, "http", bind="127.0.0.3")
        env.connector_ini()
        port = sshd_fixture.free_port()
        env.tunnel_ini("ldap", "LDAP", port, echo.port)
        base = {k: v for k, v in os.environ.items() if k.lower() not in ("https_proxy", "all_proxy", "no_proxy")}

        via = dict(base, https_proxy="127.0.0.1:%d" % http["port"])  # no scheme: HTTP, as curl reads it
        r = env.run(["--config_ini", "connector.ini", "--check"], env=via)
        check(r.returncode == 0 and "through the proxy http://127.0.0.1:%d" % http["port"] in r.stdout
              and "tunnels that set no proxy use http://127.0.0.1:%d from https_proxy" % http["port"] in r.stdout,
              "--check: the environment's proxy: %s" % r.stdout)
        proc = env.start(["--config_ini", "connector.ini"], env=via)
        check(wait_until(lambda: echo_roundtrip(port), 30), "the tunnel serves through https_proxy")
        check(login(bastion, "127.0.0.3") in sshd_log(bastion), "by way of tinyproxy")
        kill_pid(proc.pid, signal.SIGTERM)
        check(proc.wait(20) == 0, "SIGTERM: exit 0")

        carried = sshd_log(bastion).count(login(bastion, "127.0.0.3"))
        exempt = dict(via, no_proxy="localhost, 127.0.0.0/8")
        r = env.run(["--config_ini", "connector.ini", "--test_tunnels"], env=exempt)
        check(r.returncode == 0 and "ok     LDAP" in r.stdout and "through the proxy" not in r.stdout,
              "no_proxy 127.0.0.0/8: --test_tunnels connects directly: %s" % r.stdout)
        check(sshd_log(bastion).count(login(bastion, "127.0.0.3")) == carried, "tinyproxy carried nothing")

        bad = dict(base, all_proxy="ftp://127.0.0.1:21")
        r = env.run(["--config_ini", "connector.ini"], env=bad, timeout=30)
        check(r.returncode == 1 and "the environment variable all_proxy is not a usable proxy" in r.stderr
              and "proxy = none" in r.stderr, "an unusable all_proxy stops the start, naming it: %s" % r.stderr)
        env.connector_ini(extra="proxy = none\n")
        r = env.run(["--config_ini", "connector.ini", "--check"], env=bad)
        check(r.returncode == 0, "proxy = none in [pytun]: the environment is not read: %s" % r.stderr)


def case_forward(binary):
    """pytun forward -J through a second sshd, reached through a SOCKS5 proxy with a login: data flows,
    each connection went the way asked; mistakes exit 2, a wrong jump host key 1 naming the jump host."""
    with Env(binary) as env:
        bastion = env.sshd()
        jump = second_sshd(env)
        echo = env.echo()
        socks = proxy(env, "socks5", USER, PASSWORD, bind="127.0.0.4")
        with open(bastion["key_ed25519"] + ".pub") as f:
            pub = f.read()
        with open(jump["authorized_keys"], "a") as f:
            f.write(pub)  # the tunnel's key serves both hops
        both = env.path("known_hosts_both")
        with open(both, "w") as out:
            for info in (bastion, jump):
                with open(info["known_hosts_bracketed"]) as f:
                    out.write(f.read())
        local = sshd_fixture.free_port()
        remote = "%s@127.0.0.1:%d" % (bastion["user"], bastion["port"])
        hop = "127.0.0.1:%d" % jump["port"]
        socks_url = "socks5://%s:%s@127.0.0.1:%d" % (USER, PASSWORD, socks["port"])
        args = ["forward", "-r", remote, "-J", hop, "--proxy", socks_url, "-i", bastion["key_ed25519"],
                "--known-hosts", both, "-L", "%d:127.0.0.1:%d" % (local, echo.port)]
        err = open(env.path("forward.stderr"), "ab")
        proc = env.start(args, stderr=err)
        check(wait_until(lambda: echo_roundtrip(local), 30), "-L serves through the jump host")

        def output():
            with open(env.path("forward.stderr"), errors="replace") as f:
                return f.read()
        connected = ("connected to %s through the jump host %s@%s (reached through the proxy socks5://%s@127.0.0.1:%d)"
                     % (remote, bastion["user"], hop, USER, socks["port"]))
        check(wait_until(lambda: connected in output(), 20), "the route is printed: %s" % output())
        check(PASSWORD not in output(), "never the password")
        check(login(jump, "127.0.0.4") in sshd_log(jump), "microsocks carried the jump connection")
        check(login(bastion, "127.0.0.1") in sshd_log(bastion) and "127.0.0.4" not in sshd_log(bastion),
              "the bastion was reached from the jump host, not through the proxy")
        kill_pid(proc.pid, signal.SIGTERM)
        check(proc.wait(20) == 0, "SIGTERM: exit 0")

        for bad, expected in ((["-J", "a,b"], "-J 'a,b': one jump host only"),
                              (["--proxy", "ftp://x:1"], "--proxy: unknown proxy scheme 'ftp'")):
            r = env.run(["forward", "-r", remote, "-i", bastion["key_ed25519"], "--known-hosts", both,
                         "-L", "%d:127.0.0.1:%d" % (local, echo.port)] + bad)
            check(r.returncode == 2 and expected in r.stderr, "%s: exit 2 naming the option: %s" % (bad, r.stderr))

        # The known_hosts file lacks the jump host: exit 1, and the message names the jump host.
        r = env.run(["forward", "-r", remote, "-J", hop, "-i", bastion["key_ed25519"],
                     "--known-hosts", bastion["known_hosts_bracketed"], "-L", "%d:127.0.0.1:%d" % (local, echo.port)],
                    timeout=60)
        check(r.returncode == 1 and "the jump host %s@%s" % (bastion["user"], hop) in r.stderr,
              "an unknown jump host key: exit 1 naming the jump host: %s" % r.stderr)


if __name__ == "__main__":
    sys.exit(main({"config": case_config, "environment": case_environment, "forward": case_forward}))
