#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# The pytun command end to end: real sshd, services, SMTP and webhook receivers.
#   cli_test.py BINARY CASE   (meson registers one test per case)
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from clitest import (Env, Failure, LOG_LINE, Skip, check, echo_roundtrip, kill_pid, main, port_accepts,
                     read_json_files, session_processes, sshd_fixture, wait_until)



def get_json(port, path):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as r:
        return json.load(r)


def get_status_json(port, path):
    """(HTTP status, JSON body), also for error statuses such as /readyz's 503."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)
    except OSError:
        return None, None


def keygen(path, *args, passphrase=""):
    """ssh-keygen as a user runs it."""
    subprocess.run(["ssh-keygen", "-q", "-N", passphrase] + list(args) + ["-f", path], check=True,
                   stdin=subprocess.DEVNULL, capture_output=True)
    return path


def stop_pytun(env, proc, timeout=15):
    t0 = time.monotonic()
    kill_pid(proc.pid, signal.SIGTERM)
    try:
        rc = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise Failure("pytun did not exit within %d s of SIGTERM" % timeout)
    if rc != 0:  # say why, before the temporary directory goes
        try:
            with open(env.path("pytun.stderr"), errors="replace") as f:
                tail = f.read()[-4000:]
        except OSError:
            tail = "(no pytun.stderr)"
        print("pytun exited with %s after SIGTERM; its stderr ends:\n%s" % (rc, tail))
    return rc, time.monotonic() - t0


# --------------------------------------------------------------------------
def case_original_install(binary):
    with Env(binary) as env:
        info = env.sshd()
        echo1, echo2 = env.echo(), env.echo()
        smtp_port, smtp_out = env.smtp()
        hook_port, hook_out = env.webhook()
        env.connector_ini(smtp_port=smtp_port, http_port=hook_port)
        p1, p2 = sshd_fixture.free_port(), sshd_fixture.free_port()
        env.tunnel_ini("ldap", "LDAP Tunnel", p1, echo1.port, section="connector")
        env.tunnel_ini("db", "Db Tunnel", p2, echo2.port, section="tunnel")
        env.write("tunnels/README.txt", "not a tunnel\n")
        proc = env.start(["--config_ini", "connector.ini"])
        check(wait_until(lambda: echo_roundtrip(p1) and echo_roundtrip(p2), 30),
              "both tunnels of the original-style installation serve")
        st = get_json(env.inspection_port, "/status")
        check(st.get("tunnel_manager_id") == "cli-test-manager", "/status answers with tunnel_manager_id")
        check(st.get("LDAP Tunnel", {}).get("remote_port") == echo1.port, "/status lists the tunnel by name")
        # A tunnel goes down: the bastion stops. Both channels get the alert.
        env.stop_sshd()
        check(wait_until(lambda: any("is down" in m["data"] for m in read_json_files(smtp_out, "msg-")), 60),
              "the down e-mail arrives")
        mails = read_json_files(smtp_out, "msg-")
        check(any("Manager id: cli-test-manager" in m["data"] for m in mails), "the e-mail names the manager id")
        check(wait_until(lambda: any("Connector Down" in p["body"] for p in read_json_files(hook_out, "post-")),
                         30), "the down webhook arrives")
        post = [json.loads(p["body"]) for p in read_json_files(hook_out, "post-")][0]
        check(post["tunnel_manager_id"] == "cli-test-manager" and post["tunnel_name"] in ("LDAP Tunnel", "Db Tunnel"),
              "the webhook body has tunnel_name and tunnel_manager_id")
        env.restart_sshd()
        check(wait_until(lambda: echo_roundtrip(p1) and echo_roundtrip(p2), 60), "tunnels serve again")
        rc, secs = stop_pytun(env, proc)
        check(rc == 0, "SIGTERM: exit 0 (got %s after %.2f s)" % (rc, secs))
        logs = sorted(os.listdir(env.path("logs")))
        check(logs == ["db.log", "ldap.log", "main_connector.log"], "log files are named after the configs: %s" % logs)
        main_log, ldap_log = env.log("main_connector"), env.log("ldap")
        for name, text in (("main_connector.log", main_log), ("ldap.log", ldap_log)):
            lines = [ln for ln in text.splitlines() if ln]
            check(lines and all(LOG_LINE.match(ln) for ln in lines),
                  "%s: every line has UTC time, pid, logger, level (%d lines)" % (name, len(lines)))
            check(all(LOG_LINE.match(ln).group(1) == str(proc.pid) for ln in lines), "%s: the pid is pytun's" % name)
        check("[LDAP Tunnel]" in ldap_log and "[Db Tunnel]" not in ldap_log, "ldap.log holds only its tunnel")
        check("[debug]" in ldap_log, "tunnel log_level=DEBUG is honoured")
        check("s3cret" not in main_log + ldap_log, "no password in the logs")
        stderr = open(env.path("pytun.stderr")).read()
        check("[LDAP Tunnel]" not in stderr and "[pytun]" not in stderr,
              "log_to_console = False: nothing logged on the console")


# --------------------------------------------------------------------------
def case_exit_codes(binary):
    with Env(binary) as env:
        env.sshd()
        echo = env.echo()
        smtp_port, smtp_out = env.smtp()
        hook_port, hook_out = env.webhook()
        env.connector_ini(name="none.ini")
        env.connector_ini(smtp_port=smtp_port, http_port=hook_port, name="alerts.ini")
        dead = sshd_fixture.free_port()
        env.connector_ini(smtp_port=dead, http_port=dead, name="dead.ini")
        env.tunnel_ini("svc", "Service", sshd_fixture.free_port(), echo.port)

        r = env.run(["--version"])
        check(r.returncode == 0 and r.stdout.startswith("pytun ") and "libssh2 1." in r.stdout
              and "OpenSSL 3" in r.stdout, "--version: 0, pytun + libssh2 + OpenSSL: %r" % r.stdout)
        check(env.run(["-v"]).returncode == 0, "-v: 0")
        r = env.run(["--help"])
        check(r.returncode == 0 and "--test_connectors" in r.stdout, "--help: 0 and lists the flags")
        check(env.run(["--no-such-flag"]).returncode == 2, "unknown flag: usage error 2")

        check(env.run(["--config_ini", "none.ini", "--test_smtp"]).returncode == 2, "--test_smtp, no SMTP: 2")
        check(env.run(["--config_ini", "none.ini", "--test_http"]).returncode == 2, "--test_http, no webhook: 2")
        r = env.run(["--config_ini", "alerts.ini", "--test_smtp"])
        check(r.returncode == 0 and read_json_files(smtp_out, "msg-"), "--test_smtp: 0 and the e-mail arrives")
        r = env.run(["--config_ini", "alerts.ini", "--test_http"])
        check(r.returncode == 0 and read_json_files(hook_out, "post-"), "--test_http: 0 and the webhook arrives")
        r = env.run(["--config_ini", "dead.ini", "--test_smtp"], timeout=120)
        check(r.returncode == 1, "--test_smtp, server down: 1 (%s)" % r.stdout.strip())
        r = env.run(["--config_ini", "dead.ini", "--test_http"], timeout=120)
        check(r.returncode == 1, "--test_http, receiver down: 1 (%s)" % r.stdout.strip())

        check(env.run(["--config_ini", "none.ini", "--test_connections"]).returncode == 0,
              "--test_connections, service up: 0")
        r = env.run(["--config_ini", "none.ini", "--test_tunnels"])
        check(r.returncode == 0, "--test_tunnels, all work: 0 (%s)" % r.stdout.strip())
        check(env.run(["--config_ini", "none.ini", "--test_connectors"]).returncode == 0, "--test_connectors: 0")
        r = env.run(["--config_ini", "none.ini", "--test_all"])
        check(r.returncode == 0 and "[ ok ] local services" in r.stdout and "[skip] e-mail alerts" in r.stdout
              and "Press Enter" not in r.stdout, "--test_all: 0, readable report, no wait without a terminal")

        echo.close()
        r = env.run(["--config_ini", "none.ini", "--test_connections"])
        check(r.returncode == 3 and "FAILED" in r.stdout, "--test_connections, service down: 3")
        r = env.run(["--config_ini", "none.ini", "--test_all"])
        check(r.returncode == 0 and "[FAIL] local services" in r.stdout and "->" in r.stdout,
              "--test_all with a failure: 0, says what failed and what to do")
        # The bastion refuses the key.
        env.tunnel_ini("svc", "Service", sshd_fixture.free_port(), echo.port, key=env.sshd_info["key_unauthorized"])
        r = env.run(["--config_ini", "none.ini", "--test_tunnels"])
        check(r.returncode == 4 and "FAILED" in r.stdout, "--test_tunnels, key refused: 4 (%s)" % r.stdout.strip())
        env.stop_sshd()
        check(env.run(["--config_ini", "none.ini", "--test_connectors"]).returncode == 4,
              "--test_connectors, bastion down: 4")
        r = env.run(["--config_ini", "missing.ini", "--test_smtp"])
        check(r.returncode == 1 and "missing.ini" in r.stderr, "a test flag with an unreadable config: 1")


# --------------------------------------------------------------------------
def case_check(binary):
    with Env(binary) as env:
        info = env.sshd()
        echo = env.echo()
        held = socket.socket()
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        inspection = held.getsockname()[1]
        env.connector_ini(inspection_port=inspection)
        tport = sshd_fixture.free_port()
        env.tunnel_ini("good", "Good", tport, echo.port)
        env.stop_sshd()
        r = env.run(["--config_ini", "connector.ini", "--check"])
        check(r.returncode == 0 and "1 tunnel" in r.stdout,
              "--check on a valid config: 0, without the bastion and with the status port taken")
        check(not port_accepts(tport), "--check bound no tunnel port")
        # Broken: problems in the main file and in two tunnel files.
        env.write("connector.ini", open(env.path("connector.ini")).read()
                  + "log_to_console = maybe\nsmtp_security = starttls-please\n")
        env.write("tunnels/bad1.ini", "[tunnel]\nserver_host = 127.0.0.1\nport = 99999\nremote_host = x\n"
                  "username = u\nkeyfile = nokey\n")
        env.write("tunnels/bad2.ini", "[connector]\nconnector_name = \"Bad Two\"\nserver_port = 22\n"
                  "remote_host = 127.0.0.1\nusername = %s\nkeyfile = good.key\nkeep_alive_time = soon\n"
                  % info["user"])
        t0 = time.monotonic()
        r = env.run(["--config_ini", "connector.ini", "--check"])
        print(r.stderr)
        check(r.returncode == 1, "--check on broken configs: 1 (%.2f s)" % (time.monotonic() - t0))
        err = r.stderr
        for fragment in ("connector.ini:", "log_to_console", "smtp_security", "bad1.ini:3: port", "bad1.ini:",
                         "keyfile", "bad2.ini:", "server_host", "keep_alive_time"):
            check(fragment in err, "the report names %r" % fragment)
        check(all(":" in ln for ln in err.splitlines() if ln), "every line is file:line: key: message")
        check(not os.path.exists(env.path("logs")), "--check created no log directory")
        held.close()


# --------------------------------------------------------------------------
def case_migrated(binary):
    """A connector set up exactly as the original README says: an RSA 4096 key
    from ssh-keygen, paths with ~, inline comments; a default OpenSSH bastion."""
    with Env(binary) as env:
        info = env.sshd()
        echo = env.echo()
        home = env.path("home")
        os.makedirs(os.path.join(home, ".ssh"), mode=0o700)
        key = keygen(os.path.join(home, ".ssh", "id_rsa"), "-t", "rsa", "-b", "4096")
        with open(info["authorized_keys"], "a") as f:
            f.write(open(key + ".pub").read())
        shutil.copyfile(info["known_hosts_bracketed"], os.path.join(home, ".ssh", "known_hosts"))
        env.connector_ini()
        port = sshd_fixture.free_port()
        env.write("tunnels/ldap.ini",
                  "[connector]\n"
                  "connector_name = LDAP # shown in alerts\n"
                  "server_host = 127.0.0.1\n"
                  "server_port=%d\n"
                  "port=%d # Port to listen on SSH server\n"
                  "remote_host = 127.0.0.1\n"
                  "remote_port=%d # the LDAP server\n"
                  "username = %s\n"
                  "keyfile = ~/.ssh/id_rsa\n"
                  "server_key = ~/.ssh/known_hosts\n"
                  "keep_alive_time = 5\n" % (info["port"], port, echo.port, info["user"]))
        environ = dict(os.environ, HOME=home)  # the user pytun runs as
        r = env.run(["--config_ini", "connector.ini", "--check"], env=environ)
        print(r.stdout + r.stderr)
        check(r.returncode == 0 and "1 tunnel" in r.stdout, "--check: valid (RSA key, ~ paths, inline comments)")
        proc = env.start(["--config_ini", "connector.ini"], env=environ)
        check(wait_until(lambda: echo_roundtrip(port), 30), "the tunnel serves through the default OpenSSH bastion")
        check("authenticated with the RSA key as rsa-sha2-512" in env.log("ldap"),
              "the RSA key signed with SHA-512 (tunnel log)")
        rc, _ = stop_pytun(env, proc)
        check(rc == 0, "exit 0")


# --------------------------------------------------------------------------
def case_check_files(binary):
    """--check catches what only the running connector would meet."""
    with Env(binary) as env:
        info = env.sshd()
        echo = env.echo()
        hook_port, _ = env.webhook()
        env.connector_ini(http_port=hook_port)
        env.tunnel_ini("good", "Good", sshd_fixture.free_port(), echo.port)
        r = env.run(["--config_ini", "connector.ini", "--check"])
        check(r.returncode == 0, "a good configuration is valid: %s" % r.stderr)

        # Alerts configured, libcurl missing: a libcurl.so.4 that is no library.
        env.write("nolib/libcurl.so.4", "")
        r = env.run(["--config_ini", "connector.ini", "--check"],
                    env=dict(os.environ, LD_LIBRARY_PATH=env.path("nolib")))
        print(r.stderr)
        check(r.returncode == 1 and "connector.ini:10: http_url: webhook alerts need libcurl" in r.stderr,
              "libcurl missing: an error at http_url")
        env.connector_ini(inspection_port=env.inspection_port)  # no alerts from here on

        # Files that are not what the keys need, one tunnel each (keyfile: line 9, server_key: line 10).
        keygen(env.path("encrypted"), "-t", "ed25519", passphrase="a passphrase")
        env.tunnel_ini("enc", "Enc", sshd_fixture.free_port(), echo.port, key=env.path("encrypted"))
        env.tunnel_ini("pub", "Pub", sshd_fixture.free_port(), echo.port, key=info["key_ed25519"] + ".pub")
        for name, known_hosts in (("hostpub", info["host_key_ed25519"] + ".pub"),
                                  ("conf", info["sshd_config"])):
            path = env.tunnel_ini(name, name, sshd_fixture.free_port(), echo.port)
            shutil.copyfile(known_hosts, env.path("tunnels", name + ".kh"))
            env.write(path, open(path).read().replace("server_key = known_hosts", "server_key = %s.kh" % name))
        r = env.run(["--config_ini", "connector.ini", "--check"])
        err = r.stderr
        print(err)
        check(r.returncode == 1, "--check: 1")
        enc = [ln for ln in err.splitlines() if "enc.ini:9: keyfile:" in ln]
        check(enc and "encrypted with a passphrase" in enc[0] and "ssh-keygen -p -N ''" in enc[0],
              "encrypted key: an error with the fix (an unencrypted copy)")
        check("key_passphrase" not in err and "give the passphrase" not in err,
              "no passphrase setting is suggested (there is none)")
        check("pub.ini:9: keyfile:" in err and "holds a public key" in err, "a .pub file as keyfile")
        check("hostpub.ini:10: server_key:" in err and "bare public key" in err, "a .pub file as server_key")
        check("conf.ini:10: server_key:" in err and "no known_hosts lines" in err,
              "a server_key that is not a known_hosts file")
        for name in ("enc", "pub", "hostpub", "conf"):
            os.unlink(env.path("tunnels", name + ".ini"))

        # An unwritable log_path, seen by the user the service runs as.
        if os.geteuid() != 0 or shutil.which("setpriv") is None:
            print("note: not root or no setpriv; the log_path case needs another user")
            return
        os.makedirs(env.path("rootlogs"), mode=0o755)
        text = open(env.path("connector.ini")).read().replace("log_path: logs", "log_path: rootlogs/pytun")
        env.write("connector.ini", text, 0o600)
        for root, dirs, files in os.walk(env.path("tunnels")):
            for n in dirs + files:
                os.chown(os.path.join(root, n), 65534, 65534)
        for p in (env.path("tunnels"), env.path("connector.ini")):
            os.chown(p, 65534, 65534)
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
                            env.binary, "--config_ini", "connector.ini", "--check"],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, cwd=env.tmp)
        print(r.stderr)
        check(r.returncode == 1 and "connector.ini:5: log_path: " in r.stderr
              and "cannot be created by user" in r.stderr and "uid 65534" in r.stderr
              and "rootlogs is not writable" in r.stderr and "install -d -o " in r.stderr,
              "log_path the service user cannot create: an error with the fix")


# --------------------------------------------------------------------------
def case_reload_degraded(binary):
    """A tunnel restarted by SIGHUP keeps watching its local service, in both orders."""
    with Env(binary) as env:
        env.sshd()
        hook_port, hook_out = env.webhook()
        env.connector_ini(http_port=hook_port, extra="http_rate_limit = 0\n")
        for order in ("down, then reload", "reload, then down"):
            echo = env.echo()
            port = sshd_fixture.free_port()
            env.tunnel_ini("svc", "Svc", port, echo.port, keep_alive=1)
            posts_before = len(read_json_files(hook_out, "post-"))
            proc = env.start(["--config_ini", "connector.ini"])
            check(wait_until(lambda: echo_roundtrip(port)
                             and get_status_json(env.inspection_port, "/readyz")[0] == 200, 30),
                  order + ": serving, ready")

            def degraded():
                code, body = get_status_json(env.inspection_port, "/readyz")
                return code == 503 and [t["state"] for t in body["not_up"]] == ["degraded"]

            def reload():
                env.tunnel_ini("svc", "Svc", port, echo.port, keep_alive=2)  # a change: the tunnel restarts
                mark = env.log("main_connector").count("restarted Svc")
                kill_pid(proc.pid, signal.SIGHUP)
                check(wait_until(lambda: env.log("main_connector").count("restarted Svc") > mark, 15),
                      order + ": SIGHUP restarted the tunnel")

            if order == "down, then reload":
                echo.close()
                check(wait_until(degraded, 5), order + ": degraded before the reload")
                reload()
            else:
                reload()
                check(wait_until(lambda: echo_roundtrip(port), 15), order + ": serving after the reload")
                echo.close()
            # Within the check interval (2 s now) and from then on: degraded, /readyz 503.
            check(wait_until(degraded, 3), order + ": degraded, /readyz 503")
            time.sleep(3)  # more probes of the dead service: it stays that way
            check(degraded(), order + ": still degraded after more checks")
            check(wait_until(lambda: len(read_json_files(hook_out, "post-")) > posts_before, 5),
                  order + ": an alert arrives")
            posts = [json.loads(p["body"]) for p in read_json_files(hook_out, "post-")[posts_before:]]
            events = [p["event"] for p in posts]
            check(events == ["degraded"], order + ": exactly one alert, 'degraded' (got %s)" % events)
            rc, _ = stop_pytun(env, proc)
            check(rc == 0, order + ": exit 0")


# --------------------------------------------------------------------------
def case_sigterm(binary):
    with Env(binary) as env:
        env.sshd()
        echo = env.echo()
        env.connector_ini(extra="grace_period_ms = 3000\n")
        port = sshd_fixture.free_port()
        env.tunnel_ini("t", "T", port, echo.port)
        proc = env.start(["--config_ini", "connector.ini"])
        check(wait_until(lambda: echo_roundtrip(port), 30), "the tunnel serves")
        # Traffic in flight: connections streaming through the tunnel.
        socks = []
        for _ in range(8):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(os.urandom(1 << 20))
            socks.append(s)
        rc, secs = stop_pytun(env, proc)
        for s in socks:
            s.close()
        check(rc == 0, "SIGTERM during traffic: exit 0")
        check(secs < 3.0 + 2.0, "exit within the grace period (3 s) plus a margin: %.2f s" % secs)
        check(session_processes(proc.pid) == [], "no process of pytun's session left")
        check("SIGTERM: stopping" in env.log("main_connector") and "stopped" in env.log("main_connector"),
              "the shutdown is logged")
        proc = env.start(["--config_ini", "connector.ini"])
        check(wait_until(lambda: echo_roundtrip(port), 30), "the tunnel serves again")
        kill_pid(proc.pid, signal.SIGINT)
        check(proc.wait(15) == 0, "SIGINT: exit 0")


# --------------------------------------------------------------------------
def case_reload(binary):
    with Env(binary) as env:
        env.sshd()
        echo_a, echo_a2, echo_b = env.echo(), env.echo(), env.echo()
        env.connector_ini()
        pa, pb = sshd_fixture.free_port(), sshd_fixture.free_port()
        env.tunnel_ini("a", "A", pa, echo_a.port)
        env.tunnel_ini("b", "B", pb, echo_b.port)
        proc = env.start(["--config_ini", "connector.ini"])
        check(wait_until(lambda: echo_roundtrip(pa) and echo_roundtrip(pb), 30), "both tunnels serve")
        # A connection through B that must survive both reloads.
        b = socket.create_connection(("127.0.0.1", pb), timeout=10)

        def b_alive(tag):
            b.sendall(tag)
            got = b""
            while len(got) < len(tag):
                chunk = b.recv(100)
                if not chunk:
                    return False
                got += chunk
            return got == tag

        check(b_alive(b"before"), "B's connection works")
        env.tunnel_ini("a", "A", pa, echo_a2.port)   # A now points at another service
        kill_pid(proc.pid, signal.SIGHUP)
        check(wait_until(lambda: "reload: started -; restarted A; stopped -; kept B" in env.log("main_connector"),
                         15), "SIGHUP: A restarted, B kept")
        check(wait_until(lambda: echo_roundtrip(pa) and echo_a2.accepted > 0, 30),
              "A serves from its new local service")
        check(b_alive(b"after-change"), "B's connection survived the reload")
        check("[pytun] section" not in env.log("main_connector"), "a tunnel-only change: no [pytun] warning")
        env.connector_ini(inspection_port=env.inspection_port, extra="alert_reminder_interval = 120\n")
        kill_pid(proc.pid, signal.SIGHUP)
        check(wait_until(lambda: "changes to the [pytun] section" in env.log("main_connector"), 15),
              "SIGHUP after a [pytun] change (alert_reminder_interval): says it needs a restart")
        check(b_alive(b"after-main-change"), "B's connection is unaffected")
        env.write("tunnels/a.ini", open(env.path("tunnels/a.ini")).read() + "remote_port = 70000\nport = none\n")
        kill_pid(proc.pid, signal.SIGHUP)
        check(wait_until(lambda: "reload rejected" in env.log("main_connector"), 15),
              "SIGHUP with a broken config: rejected")
        check("a.ini:" in env.log("main_connector"), "the rejection lists the diagnostics with file:line")
        check(proc.poll() is None, "pytun keeps running")
        before = echo_a2.accepted
        check(echo_roundtrip(pa) and echo_a2.accepted == before + 1, "A still serves, unchanged")
        check(b_alive(b"after-broken"), "B's connection is still there")
        b.close()
        rc, _ = stop_pytun(env, proc)
        check(rc == 0, "exit 0")


# --------------------------------------------------------------------------
def sign_mac(tmp, key, mac):
    data = os.path.join(tmp, "mac.txt")
    with open(data, "w") as f:
        f.write(mac)
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sigopt", "rsa_padding_mode:pss", "-sigopt",
                          "rsa_pss_saltlen:max", "-sigopt", "rsa_mgf1_md:sha256", "-sign", key, data],
                         check=True, capture_output=True).stdout
    blob = json.dumps({"payload": mac, "sig": base64.b64encode(sig).decode()})
    return base64.b64encode(blob.encode()).decode()


def case_device(binary):
    if os.geteuid() != 0:
        raise Skip("needs root for a network namespace")
    if subprocess.run(["ip", "-V"], capture_output=True).returncode != 0:
        raise Skip("ip (iproute2) not installed")
    with Env(binary) as env:
        ns = "pytun-cli-%d" % os.getpid()
        veth = "pyc%d" % (os.getpid() % 100000)
        mac = "02:18:00:00:00:2a"

        def ip(*args):
            subprocess.run(["ip"] + list(args), check=True)

        ip("netns", "add", ns)
        env.cleanups.append(lambda: subprocess.run(["ip", "netns", "del", ns], check=False))
        ip("link", "add", veth, "type", "veth", "peer", "name", veth + "n")
        env.cleanups.append(lambda: subprocess.run(["ip", "link", "del", veth], check=False,
                                                   stderr=subprocess.DEVNULL))
        ip("link", "set", veth + "n", "netns", ns)
        inns = ["ip", "netns", "exec", ns]
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "link", "set", veth + "n", "address", mac)
        ip("-n", ns, "addr", "add", "198.18.0.2/30", "dev", veth + "n")
        ip("-n", ns, "link", "set", veth + "n", "up")

        for bits, name in ((2048, "dev"), (2048, "other")):
            subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:%d" % bits,
                            "-out", env.path(name + ".key")], check=True, capture_output=True)
            subprocess.run(["openssl", "pkey", "-in", env.path(name + ".key"), "-pubout", "-out",
                            env.path(name + ".pub.pem")], check=True, capture_output=True)
        hook_port, hook_out = env.webhook(prefix=inns)
        info = env.sshd()  # not reachable from the namespace; the tunnel just retries
        echo = env.echo()
        env.tunnel_ini("t", "T", sshd_fixture.free_port(), echo.port)
        del info

        def run_with(signature, expect_ok, what):
            env.connector_ini(http_port=hook_port, extra="signature = %s\nmac_address_pub_key = dev.pub.pem\n"
                              % signature)
            before = len(read_json_files(hook_out, "post-"))
            proc = env.start(["--config_ini", "connector.ini"], prefix=inns)
            if expect_ok:
                check(wait_until(lambda: "device authorized: MAC " + mac in env.log("main_connector"), 15),
                      what + ": authorized, the MAC is logged")
                st = json.loads(subprocess.run(inns + ["curl", "-s", "http://127.0.0.1:%d/status"
                                                       % env.inspection_port], capture_output=True,
                                               text=True).stdout)
                check(st.get("mac_address") == mac, "/status shows the authorized MAC")
                check(proc.poll() is None, what + ": pytun runs")
                rc, _ = stop_pytun(env, proc)
                check(rc == 0, what + ": clean exit")
            else:
                rc = proc.wait(20)
                check(rc == 1, what + ": exit 1 (got %s)" % rc)
                check("[critical] Connector down! The device where it is installed is not allowed to run it."
                      in env.log("main_connector"), what + ": critical log line")
                check(wait_until(lambda: len(read_json_files(hook_out, "post-")) > before, 10),
                      what + ": the alert arrives")
                body = json.loads(read_json_files(hook_out, "post-")[-1]["body"])
                check("not allowed to run it" in body["message"], what + ": alert text %r" % body["message"])

        run_with(sign_mac(env.tmp, env.path("dev.key"), mac), True, "right MAC, right key")
        run_with(sign_mac(env.tmp, env.path("dev.key"), "02:18:00:00:00:99"), False, "wrong MAC")
        run_with(sign_mac(env.tmp, env.path("other.key"), mac), False, "signature by another key")


# --------------------------------------------------------------------------
def case_make_key(binary):
    with Env(binary) as env:
        info = env.sshd()
        echo = env.echo()
        env.connector_ini()
        p1, p2 = sshd_fixture.free_port(), sshd_fixture.free_port()
        # An existing tunnel (old key): the new key goes next to the file.
        env.tunnel_ini("one", "Tunnel One", p1, echo.port, extra="bind_address = 127.0.0.1\n")
        r = env.run(["--make-key", "tunnels/one.ini"])
        print(r.stderr)
        check(r.returncode == 0, "--make-key: 0")
        line = r.stdout.strip()
        check(line.startswith('restrict,port-forwarding,permitlisten="127.0.0.1:%d",command="/bin/false" ' % p1)
              and " ssh-ed25519 AAAA" in line and line.endswith("pytun-Tunnel-One"),
              "prints the restricted authorized_keys line: %s" % line)
        key = env.path("tunnels", "one_ed25519")
        check(os.path.exists(key) and os.stat(key).st_mode & 0o077 == 0, "the key is next to the config, 0600")
        r2 = env.run(["--make-key", "tunnels/one.ini"])
        check(r2.returncode == 1 and "not overwriting" in r2.stderr, "refuses to overwrite")
        with open(info["authorized_keys"], "w") as f:   # only the restricted key is accepted now
            f.write(line + "\n")
        text = open(env.path("tunnels/one.ini")).read().replace("keyfile = one.key", "keyfile = one_ed25519")
        env.write("tunnels/one.ini", text)
        r = env.run(["--config_ini", "connector.ini", "--test_tunnels"])
        check(r.returncode == 0, "the key binds its own port: %s" % r.stdout.strip())
        # The same key asking for another port is refused.
        env.write("tunnels/two.ini", text.replace("port = %d" % p1, "port = %d" % p2)
                  .replace("Tunnel One", "Tunnel Two"))
        r = env.run(["--config_ini", "connector.ini", "--test_tunnels"])
        check(r.returncode == 4 and "ok     Tunnel One" in r.stdout and "FAILED Tunnel Two" in r.stdout,
              "another port with the same key is refused: %s" % r.stdout.strip())
        os.unlink(env.path("tunnels/two.ini"))
        # Nothing else: no command (local forwards need PermitOpen on the bastion: docs/migration.md).
        base = ["ssh"] + sshd_fixture.ssh_base_args(info, key) + ["-o", "ConnectTimeout=5"]
        r = subprocess.run(base + ["127.0.0.1", "echo", "shell-ok"], capture_output=True, text=True, timeout=30,
                           stdin=subprocess.DEVNULL)
        check("shell-ok" not in r.stdout, "the key cannot run commands")
        # A new tunnel whose keyfile does not exist yet gets the key there.
        env.write("tunnels/three.ini", text.replace("keyfile = one_ed25519", "keyfile = keys/three  # new")
                  .replace("Tunnel One", "Tunnel Three").replace("port = %d" % p1, "port = %d" % p2))
        os.makedirs(env.path("tunnels", "keys"))
        r = env.run(["--make-key", "tunnels/three.ini"])
        print(r.stdout, r.stderr)
        check(r.returncode == 0 and os.path.exists(env.path("tunnels", "keys", "three"))
              and "pytun-Tunnel-Three" in r.stdout, "a missing keyfile is created where it is configured")


# --------------------------------------------------------------------------
def case_systemd(binary):
    # The unit itself is checked with systemd-analyze by cli-install (operator_test.py).
    with Env(binary) as env:
        env.sshd()
        echo = env.echo()
        env.connector_ini()
        env.tunnel_ini("t", "T", sshd_fixture.free_port(), echo.port)
        sock_path = env.path("notify.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(sock_path)
        sock.settimeout(1)
        environ = dict(os.environ, NOTIFY_SOCKET=sock_path, WATCHDOG_USEC="1000000")
        t0 = time.monotonic()
        proc = env.start(["--config_ini", "connector.ini"], env=environ)
        got = []

        def receive_until(pred, timeout):
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                try:
                    got.append(sock.recv(4096).decode())
                except socket.timeout:
                    continue
                if pred():
                    return True
            return pred()

        check(receive_until(lambda: any("READY=1" in m for m in got), 15),
              "READY=1 arrives (%.2f s after start)" % (time.monotonic() - t0))
        check(receive_until(lambda: any("STATUS=1 of 1 tunnels up" in m for m in got), 30),
              "STATUS=1 of 1 tunnels up")
        n = sum("WATCHDOG=1" in m for m in got)
        check(receive_until(lambda: sum("WATCHDOG=1" in m for m in got) >= n + 2, 5), "WATCHDOG=1 keeps coming")
        kill_pid(proc.pid, signal.SIGHUP)
        check(receive_until(lambda: any("RELOADING=1" in m for m in got), 10), "SIGHUP: RELOADING=1")
        rc, _ = stop_pytun(env, proc)
        receive_until(lambda: any("STOPPING=1" in m for m in got), 2)
        check(rc == 0 and any("STOPPING=1" in m for m in got), "SIGTERM: STOPPING=1, exit 0")
        sock.close()

        # An abstract socket ("@name"), and a watchdog meant for another
        # process (WATCHDOG_PID is not ours): READY still arrives, WATCHDOG not.
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        name = "pytun-test-notify-%d" % os.getpid()
        sock.bind("\0" + name)
        sock.settimeout(1)
        got.clear()
        environ = dict(os.environ, NOTIFY_SOCKET="@" + name, WATCHDOG_USEC="200000", WATCHDOG_PID="1")
        proc = env.start(["--config_ini", "connector.ini"], env=environ)
        check(receive_until(lambda: any("READY=1" in m for m in got), 15), "abstract NOTIFY_SOCKET: READY=1")
        receive_until(lambda: False, 1.5)
        check(not any("WATCHDOG=1" in m for m in got), "WATCHDOG_PID of another process: no WATCHDOG=1")
        rc, _ = stop_pytun(env, proc)
        check(rc == 0, "exit 0")
        sock.close()


# --------------------------------------------------------------------------
def case_demo_smoke(binary):
    demo = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                        "scripts", "demo.py")
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, demo, "--smoke", "--binary", os.path.abspath(binary)],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=90)
    secs = time.monotonic() - t0
    print(r.stdout + r.stderr)
    if r.returncode == 77:
        raise Skip("demo: missing tool")
    check(r.returncode == 0 and "OK" in r.stdout, "demo --smoke: exit 0")
    check(secs < 60, "within 60 s (%.1f s)" % secs)
    check("curl http://127.0.0.1:" in r.stdout and "/status" in r.stdout and "/ui" in r.stdout,
          "prints the curl line, the status URL and the dashboard URL")


if __name__ == "__main__":
    sys.exit(main({
        "original-install": case_original_install,
        "exit-codes": case_exit_codes,
        "check": case_check,
        "check-files": case_check_files,
        "migrated": case_migrated,
        "reload-degraded": case_reload_degraded,
        "sigterm": case_sigterm,
        "reload": case_reload,
        "device": case_device,
        "make-key": case_make_key,
        "systemd": case_systemd,
        "demo-smoke": case_demo_smoke,
    }))
