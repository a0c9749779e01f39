#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Active-standby connectors (issue 13 item 2): two pytun processes with the
# same tunnel against one real sshd race for its port; the one that lost is
# `standby` (status API, metrics, readiness, no alert, no new logins), takes
# over when the active is killed (one "standby took over" webhook, the
# counter), and without `standby = true` a refused port is an error as before.
#   standby_test.py BINARY CASE   (meson registers one test per case)
import json
import os
import re
import signal
import time
import urllib.error
import urllib.request

from clitest import (Env, Failure, check, echo_roundtrip, kill_pid, main, port_accepts, read_json_files,
                     sshd_fixture, wait_until)

TUNNEL = "ldap"


def http(port, path):
    """(HTTP status, body text); (None, "") when nothing answers."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return None, ""


def tunnel_state(port):
    code, body = http(port, "/api/v1/tunnels")
    if code != 200:
        return None
    for t in json.loads(body)["tunnels"]:
        if t["name"] == TUNNEL:
            return t
    return None


def metric(port, name, **labels):
    """The value of one sample of /metrics, or None."""
    _, body = http(port, "/metrics")
    want = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
    for line in body.splitlines():
        m = re.match(r'^([a-z_]+)\{([^}]*)\} (\S+)$', line)
        if m and m.group(1) == name and ",".join(sorted(m.group(2).split(","))) == want:
            return float(m.group(3))
    return None


def logins(info):
    """Successful logins sshd has logged so far."""
    with open(info["sshd_log"], errors="replace") as f:
        return f.read().count("Accepted publickey for ")


def refused_listens(info):
    """tcpip-forward requests sshd could not serve (the port is bound by another session)."""
    with open(info["sshd_log"], errors="replace") as f:
        return f.read().count("cannot listen to port")


class Connector:
    """One pytun process with its own directory, status port and logs, and the tunnel `ldap`."""

    def __init__(self, env, label, bastion_port, service_port, http_port, standby, extra=""):
        self.env = env
        self.label = label
        self.api = sshd_fixture.free_port()
        d = label
        env.write(os.path.join(d, "connector.ini"),
                  "[pytun]\n"
                  "tunnel_manager_id = site-%s\n"
                  "tunnel_dirs = tunnels\n"
                  "log_path = logs\n"
                  "log_level = DEBUG\n"
                  "inspection_port = %d\n"
                  "http_url = http://127.0.0.1:%d/alert\nhttp_user = hook\nhttp_password = s3cret\n"
                  "%s" % (label, self.api, http_port, "standby = true\n" if standby else ""), 0o600)
        # The tunnel file of both connectors is the same; [pytun]'s standby applies to it.
        env.tunnel_ini(TUNNEL, TUNNEL, bastion_port, service_port, tunnel_dir=os.path.join(d, "tunnels"), extra=extra)
        self.stderr = env.path(label + ".stderr")
        with open(self.stderr, "ab") as err:
            self.proc = env.start(["--config_ini", env.path(d, "connector.ini")], stderr=err)

    def state(self):
        t = tunnel_state(self.api)
        return t["state"] if t else None

    def wait_state(self, state, timeout):
        if not wait_until(lambda: self.state() == state or self.proc.poll() is not None, timeout, 0.05):
            with open(self.stderr, errors="replace") as f:
                raise Failure("connector %s is %s, not %s, after %d s (exit %s):\n%s"
                              % (self.label, self.state(), state, timeout, self.proc.poll(), f.read()[-3000:]))


def alerts(out):
    return [json.loads(p["body"]) for p in read_json_files(out, "post-")]


def test_takeover(binary):
    with Env(binary) as env:
        info = env.sshd()
        echo = env.echo()
        hook_port, hook_out = env.webhook()
        port = sshd_fixture.free_port()

        a = Connector(env, "a", port, echo.port, hook_port, standby=True)
        a.wait_state("up", 30)
        b = Connector(env, "b", port, echo.port, hook_port, standby=True)
        b.wait_state("standby", 30)
        check(a.state() == "up", "A serves the bastion port, B is standby (GET /api/v1/tunnels)")
        check(echo_roundtrip(port), "data through the bastion port reaches the service")

        logins_standby = logins(info)
        check(logins_standby == 2, "sshd saw one login per connector (%d)" % logins_standby)
        # B asks for the port every 1-2 s on its one session: several refusals, no new login.
        refused = refused_listens(info)
        check(wait_until(lambda: refused_listens(info) >= refused + 3, 20, 0.1),
              "B asked for the port again %d times on the bastion" % (refused_listens(info) - refused))
        check(logins(info) == logins_standby, "no login while B is standby (sshd's log: still %d)" % logins(info))

        code, body = http(b.api, "/status")
        status = json.loads(body)
        check(code == 200 and status[TUNNEL]["state"] == "standby" and status[TUNNEL]["remote_port"] == echo.port,
              "B's /status marks the tunnel standby: %s" % status[TUNNEL])
        check("state" not in json.loads(http(a.api, "/status")[1])[TUNNEL], "A's /status keeps the original's shape")
        for c in (a, b):
            code, body = http(c.api, "/readyz")
            check(code == 200, "%s: /readyz is 200 (%s)" % (c.label, body))
        check(metric(b.api, "pytun_tunnel_state", tunnel=TUNNEL, state="standby") == 1, "B: standby state metric 1")
        check(metric(b.api, "pytun_tunnel_up", tunnel=TUNNEL) == 0, "B: pytun_tunnel_up 0 (it does not serve)")
        check(metric(b.api, "pytun_tunnel_takeovers_total", tunnel=TUNNEL) == 0, "B: no takeover yet")
        check(metric(a.api, "pytun_tunnel_up", tunnel=TUNNEL) == 1, "A: pytun_tunnel_up 1")
        check(alerts(hook_out) == [], "no alert from either connector")

        # The active dies: the kernel closes its socket, sshd frees the port, B binds it.
        t0 = time.monotonic()
        kill_pid(a.proc.pid, signal.SIGKILL)
        a.proc.wait(10)
        b.wait_state("up", 20)
        took = time.monotonic() - t0
        check(echo_roundtrip(port), "B serves %.1f s after A was killed: data reaches the service" % took)
        check(logins(info) == logins_standby, "B took over on its standby session: no new login")
        check(metric(b.api, "pytun_tunnel_takeovers_total", tunnel=TUNNEL) == 1, "B: pytun_tunnel_takeovers_total 1")
        check(metric(b.api, "pytun_tunnel_up", tunnel=TUNNEL) == 1, "B: pytun_tunnel_up 1")
        check(wait_until(lambda: len(alerts(hook_out)) >= 1, 15, 0.05), "an alert arrived")
        got = alerts(hook_out)
        check(len(got) == 1, "exactly one alert: %s" % got)
        alert = got[0]
        check(alert["event"] == "took_over" and alert["message"] == "Standby took over"
              and alert["tunnel_manager_id"] == "site-b" and alert["tunnel_name"] == TUNNEL,
              "it is B's \"standby took over\": %s" % alert)
        check(alert["bastion"] == "127.0.0.1:%d" % info["port"] and alert["port"] == port
              and alert["standby_seconds"] >= 1 and alert["state"] == "up",
              "it names the bastion, the port and how long B was standby")
        check(http(b.api, "/readyz")[0] == 200, "B: /readyz 200")


def test_multi(binary):
    """A connection with two reverse forwards is standby as a whole when one port is taken: it holds neither,
    and serves both once the other connector is gone."""
    with Env(binary) as env:
        env.sshd()
        echo = env.echo()
        hook_port, _ = env.webhook()
        taken, free = sshd_fixture.free_port(), sshd_fixture.free_port()
        a = Connector(env, "a", taken, echo.port, hook_port, standby=True)
        a.wait_state("up", 30)
        b = Connector(env, "b", free, echo.port, hook_port, standby=True,
                      extra="remote_forward = %d:127.0.0.1:%d\n" % (taken, echo.port))
        b.wait_state("standby", 30)
        forwards = tunnel_state(b.api)["forwards"]
        check(len(forwards) == 2 and not any(f["serving"] for f in forwards)
              and all(f["error"].startswith("standby:") for f in forwards),
              "B serves neither forward: %s" % [(f["description"], f["error"]) for f in forwards])
        check(wait_until(lambda: not port_accepts(free), 10), "B gave back the port the bastion granted it (%d)" % free)
        kill_pid(a.proc.pid, signal.SIGKILL)
        a.proc.wait(10)
        b.wait_state("up", 20)
        check(echo_roundtrip(taken) and echo_roundtrip(free), "B serves both ports after the takeover")
        check(all(f["serving"] for f in tunnel_state(b.api)["forwards"]), "both forwards serve")


def test_off(binary):
    """Without standby = true a refused port is an error, as before: backing off, /readyz 503, a down alert."""
    with Env(binary) as env:
        env.sshd()
        echo = env.echo()
        hook_port, hook_out = env.webhook()
        port = sshd_fixture.free_port()
        a = Connector(env, "a", port, echo.port, hook_port, standby=False)
        a.wait_state("up", 30)
        b = Connector(env, "b", port, echo.port, hook_port, standby=False)
        b.wait_state("backing_off", 30)
        t = tunnel_state(b.api)
        check("refused to listen on port %d" % port in t["last_error"]["message"],
              "B backs off with the refusal: %s" % t["last_error"]["message"][:120])
        code, _ = http(b.api, "/readyz")
        check(code == 503, "B: /readyz 503")
        check(metric(b.api, "pytun_tunnel_state", tunnel=TUNNEL, state="standby") == 0, "B: never standby")
        check(wait_until(lambda: any(x["event"] == "down" for x in alerts(hook_out)), 15, 0.05),
              "B sends a down alert")
        check(all(x["tunnel_manager_id"] == "site-b" for x in alerts(hook_out)), "only B alerts")


if __name__ == "__main__":
    raise SystemExit(main({"takeover": test_takeover, "multi": test_multi, "off": test_off}))
