# SPDX-License-Identifier: MIT
# Harness for the pytun command's tests: temp dirs, real peers (sshd, echo
# service, SMTP and webhook receivers), config writers, process cleanup by PID.
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "support"))
import sshd_fixture  # noqa: E402
from testcheck import Failure, check, wait_until  # noqa: E402,F401  (re-exported to cli_test.py)

ALERT_DIR = os.path.join(REPO, "tests", "alert")
EXIT_SKIP = 77
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} UTC \[(\d+)\] \[([^\]]+)\] "
                      r"\[(trace|debug|info|warning|error|critical)\] ")


class Skip(Exception):
    pass


def port_accepts(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


class EchoService:
    """Echoes bytes back, one thread per connection; counts connections."""

    def __init__(self, host="127.0.0.1"):
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.conns = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    @staticmethod
    def _serve(c):
        try:
            while True:
                data = c.recv(65536)
                if not data:
                    break
                c.sendall(data)
            c.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self):
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() thread; close() alone does not
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


def echo_roundtrip(port, payload=b"hello pytun\n", timeout=10):
    """Send payload through 127.0.0.1:port, return True if it comes back intact."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            got = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
            return got == payload
    except OSError:
        return False


class Env:
    """Everything one test starts; cleanup() ends it by PID and removes files."""

    def __init__(self, binary):
        self.binary = os.path.abspath(binary)
        self.tmp = tempfile.mkdtemp(prefix="pytun-cli-")
        os.chmod(self.tmp, 0o755)
        self.procs = []
        self.services = []
        self.sshd_info = None
        self.sshd_proc = None
        self.cleanups = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cleanup()

    def path(self, *parts):
        return os.path.join(self.tmp, *parts)

    def cleanup(self):
        for fn in reversed(self.cleanups):
            try:
                fn()
            except Exception as e:  # noqa: BLE001 (cleanup goes on)
                print("cleanup: %s" % e, file=sys.stderr)
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        for s in self.services:
            s.close()
        if self.sshd_proc is not None:
            sshd_fixture.stop_sshd(self.sshd_proc)
        if os.environ.get("PYTUN_CLI_KEEP") == "1":
            print("kept %s" % self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # --- peers -------------------------------------------------------------
    def sshd(self, **prepare):
        """sshd_fixture's bastion (`prepare`: its listen addresses and host names)."""
        try:
            self.sshd_info = sshd_fixture.prepare(self.path("sshd"), **prepare)
        except sshd_fixture.MissingTool as e:
            raise Skip(str(e))
        self.sshd_proc = sshd_fixture.start_sshd(self.sshd_info)
        return self.sshd_info

    def restart_sshd(self):
        self.sshd_proc = sshd_fixture.start_sshd(self.sshd_info)

    def stop_sshd(self, sessions=True):
        """Stop the listener and (by default) its per-connection children: the bastion goes away."""
        sshd_fixture.stop_sshd(self.sshd_proc, sessions=sessions)

    def echo(self, host="127.0.0.1"):
        s = EchoService(host)
        self.services.append(s)
        return s

    def _ready_port(self, ready, proc, what):
        if not wait_until(lambda: os.path.exists(ready) or proc.poll() is not None, 20):
            raise Failure("%s did not start" % what)
        if proc.poll() is not None:
            if proc.returncode == EXIT_SKIP:
                raise Skip("%s: missing tool" % what)
            raise Failure("%s exited with %s" % (what, proc.returncode))
        with open(ready) as f:
            return int(f.read())

    def smtp(self, prefix=()):
        out = self.path("smtp-out")
        ready = self.path("smtp-ready")
        p = subprocess.Popen(list(prefix) + [sys.executable, os.path.join(ALERT_DIR, "smtp_server.py"), "serve",
                                             "--mode", "plain", "--outdir", out, "--ready", ready],
                             stdin=subprocess.DEVNULL)
        self.procs.append(p)
        return self._ready_port(ready, p, "smtp_server.py"), out

    def webhook(self, user="hook", password="s3cret", prefix=()):
        out = self.path("hook-out")
        ready = self.path("hook-ready")
        p = subprocess.Popen(list(prefix) + [sys.executable, os.path.join(ALERT_DIR, "http_receiver.py"),
                                             "--outdir", out, "--ready", ready, "--user", user,
                                             "--password", password], stdin=subprocess.DEVNULL)
        self.procs.append(p)
        return self._ready_port(ready, p, "http_receiver.py"), out

    # --- configs -----------------------------------------------------------
    def write(self, rel, text, mode=0o644):
        p = self.path(rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(text)
        os.chmod(p, mode)
        return p

    def connector_ini(self, inspection_port=None, smtp_port=None, http_port=None, extra="", name="connector.ini",
                      tunnel_dir="tunnels", log_level="DEBUG"):
        if inspection_port is None:
            inspection_port = sshd_fixture.free_port()
        self.inspection_port = inspection_port
        text = ("# pytun connector configuration, original style\n"
                "[pytun]\n"
                "tunnel_manager_id = \"cli-test-manager\"   # shown in alerts\n"
                "tunnel_dirs = %s ; relative to this file\n"
                "log_path: logs\n"
                "log_level = %s\n"
                "log_to_console = False\n"
                "inspection_port=%d # the status API\n"
                "inspection_localhost_only = yes\n" % (tunnel_dir, log_level, inspection_port))
        if smtp_port:
            text += ("smtp_hostname = 127.0.0.1\nsmtp_port = %d\nsmtp_security = none\n"
                     "smtp_from = 'pytun@example.org'\nsmtp_to = ops@example.org # who gets alerts\n" % smtp_port)
        if http_port:
            text += ("http_url = http://127.0.0.1:%d/alert\nhttp_user = hook\nhttp_password = \"s3cret\"\n"
                     % http_port)
        text += extra
        return self.write(name, text, 0o600)

    def tunnel_ini(self, file_base, name, port, remote_port, key=None, section="connector", keep_alive=5,
                   extra="", tunnel_dir="tunnels", forwards_only=False):
        """A tunnel file with its own copy of the key and known_hosts (relative paths); the reverse
        tunnel port -> 127.0.0.1:remote_port unless `forwards_only` (then `extra` has the forwards)."""
        info = self.sshd_info
        d = self.path(tunnel_dir)
        os.makedirs(d, exist_ok=True)
        key = key or info["key_ed25519"]
        shutil.copyfile(key, os.path.join(d, file_base + ".key"))
        os.chmod(os.path.join(d, file_base + ".key"), 0o600)
        shutil.copyfile(info["known_hosts_bracketed"], os.path.join(d, "known_hosts"))
        name_key = "connector_name" if section == "connector" else "tunnel_name"
        reverse = ("port = %d # Port to listen on SSH server\n"
                   "remote_host = 127.0.0.1\n"
                   "remote_port = %d\n" % (port, remote_port))
        text = ("[%s]\n"
                "%s = \"%s\"\n"
                "server_host = 127.0.0.1\n"
                "server_port = %d\n"
                "%s"
                "username = %s\n"
                "keyfile = %s.key\n"
                "server_key = known_hosts ; the bastion's host key\n"
                "keep_alive_time = %d\n"
                "log_level = DEBUG\n"
                "%s" % (section, name_key, name, info["port"], "" if forwards_only else reverse, info["user"],
                        file_base, keep_alive, extra))
        return self.write(os.path.join(tunnel_dir, file_base + ".ini"), text)

    # --- pytun -------------------------------------------------------------
    def run(self, args, timeout=60, **kw):
        return subprocess.run([self.binary] + list(args), stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout, cwd=self.tmp, **kw)

    def start(self, args, prefix=(), env=None, stderr=None):
        err = open(self.path("pytun.stderr"), "ab") if stderr is None else stderr
        p = subprocess.Popen(list(prefix) + [self.binary] + list(args), stdin=subprocess.DEVNULL,
                             stdout=err, stderr=err, cwd=self.tmp, start_new_session=True, env=env)
        self.procs.append(p)
        return p

    def log(self, base):
        try:
            with open(self.path("logs", base + ".log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""


def read_json_files(d, prefix):
    out = []
    if not os.path.isdir(d):
        return out
    for name in sorted(os.listdir(d)):
        if name.startswith(prefix) and name.endswith(".json"):
            with open(os.path.join(d, name)) as f:
                out.append(json.load(f))
    return out


def session_processes(sid):
    """PIDs of processes in session `sid` (pytun is started in its own)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid:
                pids.append(int(entry))
        except (OSError, IndexError, ValueError):
            pass
    return pids


def main(tests):
    """cli_test.py BINARY CASE: run one case; exit 0 pass, 1 fail, 77 skip."""
    if len(sys.argv) != 3 or sys.argv[2] not in tests:
        print("usage: %s BINARY {%s}" % (sys.argv[0], "|".join(tests)), file=sys.stderr)
        return 2
    binary, case = sys.argv[1], sys.argv[2]
    try:
        tests[case](binary)
    except Skip as e:
        print("SKIP: %s" % e)
        return EXIT_SKIP
    except Failure as e:
        print("FAIL: %s" % e)
        return 1
    print("PASS")
    return 0


def kill_pid(pid, sig=signal.SIGTERM):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
