#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Demo behind scripts/demo: a throwaway sshd, a local web page, and the pytun command between them.
"""Show a pytun reverse tunnel end to end, entirely on 127.0.0.1.

A throwaway OpenSSH server plays the bastion, a small HTTP service plays the
thing behind the firewall, and `pytun` (run with a generated connector.ini and
tunnel directory, as an operator would) forwards a bastion port to it. Then
`curl http://127.0.0.1:<bastion port>/` reaches the service through the
tunnel. With --smoke (or PYTUN_DEMO_SMOKE=1) it checks that by itself and
exits: 0 when everything worked.
"""

import argparse
import hashlib
import http.server
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests" / "support"))
import sshd_fixture  # noqa: E402  (tests/support/sshd_fixture.py)

PAGE = b"Hello from the service behind the tunnel\n"
SMOKE_BYTES = 8 << 20
READY_TIMEOUT = 20.0
SMOKE_DEADLINE = 55  # seconds; the whole smoke run must end within 60 s


class DemoError(Exception):
    pass


def say(msg=""):
    print(msg, flush=True)


# --------------------------------------------------------------------------
# The service behind the tunnel


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "pytun-demo"

    def do_GET(self):
        self._reply(PAGE, "text/plain; charset=utf-8")

    def do_POST(self):
        """Answer with the sha256 of the body, so the sender can check that
        every byte came through."""
        left = int(self.headers.get("Content-Length", "0"))
        digest = hashlib.sha256()
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 20))
            if not chunk:
                break
            digest.update(chunk)
            left -= len(chunk)
        self._reply((digest.hexdigest() + "\n").encode(), "text/plain")

    def _reply(self, body, ctype):
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        sys.stderr.write("service: %s %s\n" % (self.address_string(), fmt % args))


def start_service():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# --------------------------------------------------------------------------
# The tunnel


def write_config(tmp, info, bastion_port, service_port, inspection_port):
    """A connector.ini and a tunnel directory, as an installation has them."""
    conf = os.path.join(tmp, "pytun")
    tunnels = os.path.join(conf, "tunnels")
    os.makedirs(tunnels)
    shutil.copyfile(info["key_ed25519"], os.path.join(tunnels, "demo_ed25519"))
    os.chmod(os.path.join(tunnels, "demo_ed25519"), 0o600)
    shutil.copyfile(info["known_hosts_bracketed"], os.path.join(tunnels, "known_hosts"))
    with open(os.path.join(conf, "connector.ini"), "w") as f:
        f.write("[pytun]\n"
                "tunnel_manager_id = demo\n"
                "tunnel_dirs = tunnels   # relative to this file\n"
                "log_path = logs\n"
                "log_level = INFO\n"
                "log_to_console = true\n"
                "inspection_port = %d\n" % inspection_port)
    with open(os.path.join(tunnels, "demo.ini"), "w") as f:
        f.write("[tunnel]\n"
                "tunnel_name = \"Demo web page\"\n"
                "server_host = 127.0.0.1\n"
                "server_port = %d\n"
                "port = %d   # the bastion listens here\n"
                "remote_host = 127.0.0.1\n"
                "remote_port = %d   # the service behind the tunnel\n"
                "username = %s\n"
                "keyfile = demo_ed25519\n"
                "server_key = known_hosts\n"
                "keep_alive_time = 10\n"
                "log_level = INFO\n" % (info["port"], bastion_port, service_port, info["user"]))
    return os.path.join(conf, "connector.ini")


def wait_ready(proc, port, timeout):
    """Wait until the page answers through the bastion port."""
    url = "http://127.0.0.1:%d/" % port
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise DemoError("pytun exited with status %s before the tunnel was up" % proc.returncode)
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.read() == PAGE:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise DemoError("the tunnel was not up within %.0f s" % timeout)


def stop(proc, name):
    """End a process we started, by PID."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(5)
    except subprocess.TimeoutExpired:
        sys.stderr.write("demo: %s did not stop on SIGTERM, killing it\n" % name)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


# --------------------------------------------------------------------------


def smoke(bastion_port):
    url = "http://127.0.0.1:%d/" % bastion_port
    with urllib.request.urlopen(url, timeout=15) as r:
        body = r.read()
    if body != PAGE:
        raise DemoError("GET %s returned %r, expected %r" % (url, body[:200], PAGE))
    say("smoke: GET %s -> %r" % (url, body.decode().strip()))

    data = os.urandom(SMOKE_BYTES)
    t0 = time.monotonic()
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(req, timeout=30) as r:
        answer = r.read().decode().strip()
    secs = time.monotonic() - t0
    if answer != hashlib.sha256(data).hexdigest():
        raise DemoError("POST of %d bytes: the service saw sha256 %s, expected %s"
                        % (SMOKE_BYTES, answer, hashlib.sha256(data).hexdigest()))
    say("smoke: POST %d MiB through the tunnel, sha256 matches (%.2f s)" % (SMOKE_BYTES >> 20, secs))


def interactive(proc, bastion_port, service_port, info, inspection_port, config):
    url = "http://127.0.0.1:%d/" % bastion_port
    say()
    say("The tunnel is up.")
    say("  bastion (OpenSSH sshd) 127.0.0.1:%d, user %s" % (info["port"], info["user"]))
    say("  service (HTTP)         127.0.0.1:%d" % service_port)
    say("  pytun forwards bastion port 127.0.0.1:%d -> the service" % bastion_port)
    say("  config: %s" % config)
    say()
    say("Try, in another terminal:")
    say("  curl %s" % url)
    say("It shows: %s" % PAGE.decode().strip())
    say()
    say("Status:    curl http://127.0.0.1:%d/status" % inspection_port)
    say("Dashboard: http://127.0.0.1:%d/ui" % inspection_port)
    say()
    say("Press Ctrl-C to stop the tunnel, the sshd and the service.")
    stopping = threading.Event()

    def on_signal(signum, frame):
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while not stopping.wait(0.5):
        if proc.poll() is not None:
            raise DemoError("the tunnel exited unexpectedly with status %s" % proc.returncode)
    say("\nStopping.")


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", default=os.environ.get("PYTUN_DEMO_SMOKE") == "1",
                    help="check the tunnel unattended and exit (also PYTUN_DEMO_SMOKE=1)")
    ap.add_argument("--binary", default=str(REPO_ROOT / "build" / "tools" / "pytun" / "pytun"),
                    help="the pytun program (default: build/tools/pytun/pytun)")
    ap.add_argument("--verbose", action="store_true", help="show pytun's console log")
    args = ap.parse_args()

    if not os.access(args.binary, os.X_OK):
        sys.stderr.write("demo: %s not found; build first (scripts/setup, or meson setup build && "
                         "ninja -C build)\n" % args.binary)
        return 1

    # Until the demo is up, SIGTERM takes the same path as Ctrl-C, so the
    # finally block below still cleans up.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    if args.smoke:
        # Bounded even if something hangs: SIGALRM lands in the finally below.
        def on_alarm(signum, frame):
            raise DemoError("smoke run did not finish within %d s" % SMOKE_DEADLINE)
        signal.signal(signal.SIGALRM, on_alarm)
        signal.alarm(SMOKE_DEADLINE)

    tmp = tempfile.mkdtemp(prefix="pytun-demo-")
    sshd = tunnel = service = None
    tunnel_log = os.path.join(tmp, "tunnel.log")
    try:
        info = sshd_fixture.prepare(os.path.join(tmp, "sshd"))
        sshd = sshd_fixture.start_sshd(info)
        service = start_service()
        service_port = service.server_address[1]
        bastion_port = sshd_fixture.free_port()
        inspection_port = sshd_fixture.free_port()
        config = write_config(tmp, info, bastion_port, service_port, inspection_port)
        cmd = [args.binary, "--config_ini", config]
        stderr = None if args.verbose else open(tunnel_log, "wb")
        # Own session: Ctrl-C reaches only the demo, which then stops the
        # tunnel by PID (and gets to see how it exits).
        tunnel = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr,
                                  start_new_session=True)
        if stderr is not None:
            stderr.close()
        wait_ready(tunnel, bastion_port, READY_TIMEOUT)
        if args.smoke:
            say("try:       curl http://127.0.0.1:%d/" % bastion_port)
            say("status:    http://127.0.0.1:%d/status" % inspection_port)
            say("dashboard: http://127.0.0.1:%d/ui" % inspection_port)
            smoke(bastion_port)
            stop(tunnel, "pytun")
            if tunnel.returncode != 0:
                raise DemoError("pytun exited with status %s on SIGTERM" % tunnel.returncode)
            say("OK")
        else:
            interactive(tunnel, bastion_port, service_port, info, inspection_port, config)
        return 0
    except DemoError as e:
        sys.stderr.write("demo: FAILED: %s\n" % e)
        if not args.verbose and os.path.exists(tunnel_log):
            tail = Path(tunnel_log).read_text(errors="replace")[-2000:].strip()
            if tail:
                sys.stderr.write("demo: tunnel log (end):\n%s\n" % tail)
        return 1
    except (OSError, RuntimeError) as e:
        sys.stderr.write("demo: FAILED: %s: %s\n" % (type(e).__name__, e))
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        signal.alarm(0)
        stop(tunnel, "the tunnel")
        stop(sshd, "sshd")
        if service is not None:
            service.shutdown()
            service.server_close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
