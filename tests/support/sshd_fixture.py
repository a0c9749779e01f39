#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Throwaway OpenSSH server on 127.0.0.1: the one place that knows how to make it.

Used by the C++ test fixture (through the CLI), the benchmark and the demo
(through import). Standard library only.

    python3 sshd_fixture.py prepare DIR [--port P]   # prints fixture.json
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
import time

SSHD = "/usr/sbin/sshd"
PASSPHRASE = "pytun-test-passphrase"
EXIT_SKIP = 77

_SSHD_OPTIONS = [
    ("StrictModes", "no"),
    ("PasswordAuthentication", "no"),
    ("KbdInteractiveAuthentication", "no"),
    ("PubkeyAuthentication", "yes"),
    ("UsePAM", "no"),
    ("AllowTcpForwarding", "yes"),
    ("GatewayPorts", "no"),
    ("PermitRootLogin", "prohibit-password"),
    ("UseDNS", "no"),
    ("MaxStartups", "1000:30:1000"),
    ("MaxSessions", "1000"),
    ("LogLevel", "VERBOSE"),
    ("ClientAliveInterval", "0"),
    # The sessions' bash skips ~/.bashrc (it reads it for sshd's commands only
    # at SHLVL 1): the bastion must not run the dotfiles of whoever runs the
    # tests. Root's here runs `pyenv init`, whose rehash takes a lock: a dozen
    # commands at once queued on it for seconds, and sshuttle's server behind them.
    ("SetEnv", "SHLVL=1"),
    # PubkeyAcceptedAlgorithms deliberately left at the OpenSSH default, so
    # tests see what a stock server accepts (e.g. no ssh-rsa with SHA-1).
]


class MissingTool(RuntimeError):
    """A required program (sshd, ssh-keygen) is not installed."""


def _ssh_keygen() -> str:
    path = shutil.which("ssh-keygen")
    if path is None:
        raise MissingTool("ssh-keygen not found (install openssh-client)")
    return path


def _check_tools() -> None:
    if not os.access(SSHD, os.X_OK):
        raise MissingTool(f"{SSHD} not found (install openssh-server)")
    _ssh_keygen()


def _run(args: list[str]) -> str:
    proc = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def _keygen(path: str, key_type: str, bits: int | None = None, passphrase: str = "",
            comment: str = "pytun-test") -> None:
    for p in (path, path + ".pub"):
        if os.path.exists(p):
            os.unlink(p)
    args = [_ssh_keygen(), "-q", "-t", key_type, "-N", passphrase, "-C", comment, "-f", path]
    if bits is not None:
        args[2:2] = ["-b", str(bits)]
    _run(args)


def _pub(path: str) -> tuple[str, str]:
    """(type, base64) of the public key next to a private key (or of a .pub)."""
    pub = path if path.endswith(".pub") else path + ".pub"
    with open(pub, encoding="ascii") as f:
        fields = f.read().split()
    return fields[0], fields[1]


def _fingerprint(path: str) -> str:
    out = _run([_ssh_keygen(), "-l", "-E", "sha256", "-f", path])
    for token in out.split():
        if token.startswith("SHA256:"):
            return token
    raise RuntimeError(f"no SHA256 fingerprint in ssh-keygen output: {out!r}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago.

    Chosen below the kernel's ephemeral range: a port from bind(0) comes from
    the range every outgoing connection draws from, so another socket could
    take it before sshd or a tunnel binds it."""
    low = 32768
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    first = 10000 if low > 12000 else 1024
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(first, low)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write(path: str, text: str, mode: int = 0o600) -> None:
    with open(path, "w", encoding="ascii") as f:
        f.write(text)
    os.chmod(path, mode)


def _current_user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return getpass.getuser()


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def prepare(dir: str, port: int | None = None, *,  # noqa: A002 (API name)
            listen: list[tuple[str, int]] | None = None,
            host_names: list[str] | None = None) -> dict:
    """Create keys, sshd_config, authorized_keys and known_hosts files in dir.

    `port` is the port clients use; sshd listens on `listen` ((address, port)
    pairs, default 127.0.0.1:port; the network lab puts a delay relay in
    between). The known_hosts files name every address in `host_names`
    (default 127.0.0.1) with that port.

    Returns (and writes to dir/fixture.json) a dict with absolute paths, the
    port, the user, the sshd path, the passphrase and host key fingerprints.
    """
    _check_tools()
    d = os.path.abspath(dir)
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o700)
    if port is None:
        port = free_port()
    if listen is None:
        listen = [("127.0.0.1", port)]
    if host_names is None:
        host_names = ["127.0.0.1"]
    p = lambda name: os.path.join(d, name)  # noqa: E731

    if os.geteuid() == 0 and not os.path.isdir("/run/sshd"):
        # sshd's privilege separation directory; missing in containers.
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)

    # Host keys.
    _keygen(p("ssh_host_ed25519_key"), "ed25519", comment="pytun-test-host")
    _keygen(p("ssh_host_ecdsa_key"), "ecdsa", comment="pytun-test-host")

    # User keys.
    _keygen(p("id_ed25519"), "ed25519")
    _keygen(p("id_ecdsa"), "ecdsa")
    _keygen(p("id_rsa"), "rsa", bits=2048)
    _keygen(p("id_encrypted"), "ed25519", passphrase=PASSPHRASE)
    _keygen(p("id_unauthorized"), "ed25519")

    authorized = "".join(
        " ".join(_pub(p(k))) + f" {k}\n" for k in ("id_ed25519", "id_ecdsa", "id_rsa", "id_encrypted"))
    _write(p("authorized_keys"), authorized)

    config = [
        f"Port {port}",
        *(f"ListenAddress {_host_port(a, lp)}" for a, lp in listen),
        f"HostKey {p('ssh_host_ed25519_key')}",
        f"HostKey {p('ssh_host_ecdsa_key')}",
        f"PidFile {p('sshd.pid')}",
        f"AuthorizedKeysFile {p('authorized_keys')}",
    ] + [f"{k} {v}" for k, v in _SSHD_OPTIONS]
    _write(p("sshd_config"), "\n".join(config) + "\n")

    host_keys = [_pub(p("ssh_host_ed25519_key")), _pub(p("ssh_host_ecdsa_key"))]
    bracketed_names = [f"[{h}]:{port}" for h in host_names]
    bracketed_name = bracketed_names[0]
    bracketed = "".join(f"{n} {t} {b}\n" for n in bracketed_names for t, b in host_keys)
    _write(p("known_hosts_bracketed"), bracketed, 0o644)
    _write(p("known_hosts_plain"), "".join(f"{h} {t} {b}\n" for h in host_names for t, b in host_keys), 0o644)

    shutil.copyfile(p("known_hosts_bracketed"), p("known_hosts_hashed"))
    _run([_ssh_keygen(), "-H", "-f", p("known_hosts_hashed")])
    if os.path.exists(p("known_hosts_hashed.old")):
        os.unlink(p("known_hosts_hashed.old"))

    # Other keys of the same types, for "host key changed" and noise lines.
    scratch = p("scratch_keys")
    os.makedirs(scratch, exist_ok=True)
    s = lambda name: os.path.join(scratch, name)  # noqa: E731
    _keygen(s("other_ed25519"), "ed25519")
    _keygen(s("other_ecdsa"), "ecdsa")
    _keygen(s("ca_ed25519"), "ed25519")
    _keygen(s("revoked_ed25519"), "ed25519")
    other = [_pub(s("other_ed25519")), _pub(s("other_ecdsa"))]
    _write(p("known_hosts_changed"), "".join(f"{n} {t} {b}\n" for n in bracketed_names for t, b in other),
           0o644)
    _write(p("known_hosts_unknown"), "".join(f"[other.example]:22 {t} {b}\n" for t, b in other),
           0o644)

    ca_t, ca_b = _pub(s("ca_ed25519"))
    rv_t, rv_b = _pub(s("revoked_ed25519"))
    messy = (
        "this is not a known_hosts line at all garbage ]]] %%\n"
        f"@cert-authority *.example.org {ca_t} {ca_b}\n"
        f"@revoked * {rv_t} {rv_b}\n"
        f"{bracketed_name} ssh-unknown-type-v9 AAAAE3NzaC11bmtub3duLXR5cGUtdjk=\n"
        "# a comment between entries\n"
        "\n"
        + bracketed
    )
    _write(p("known_hosts_messy"), messy, 0o644)
    shutil.rmtree(scratch)

    info = {
        "dir": d,
        "port": port,
        "user": _current_user(),
        "sshd": SSHD,
        "passphrase": PASSPHRASE,
        "sshd_config": p("sshd_config"),
        "sshd_log": p("sshd.log"),
        "pid_file": p("sshd.pid"),
        "host_key_ed25519": p("ssh_host_ed25519_key"),
        "host_key_ecdsa": p("ssh_host_ecdsa_key"),
        "host_key_fingerprint_ed25519": _fingerprint(p("ssh_host_ed25519_key.pub")),
        "host_key_fingerprint_ecdsa": _fingerprint(p("ssh_host_ecdsa_key.pub")),
        "key_ed25519": p("id_ed25519"),
        "key_ecdsa": p("id_ecdsa"),
        "key_rsa": p("id_rsa"),
        "key_encrypted": p("id_encrypted"),
        "key_unauthorized": p("id_unauthorized"),
        "authorized_keys": p("authorized_keys"),
        "known_hosts_bracketed": p("known_hosts_bracketed"),
        "known_hosts_plain": p("known_hosts_plain"),
        "known_hosts_hashed": p("known_hosts_hashed"),
        "known_hosts_changed": p("known_hosts_changed"),
        "known_hosts_unknown": p("known_hosts_unknown"),
        "known_hosts_messy": p("known_hosts_messy"),
    }
    _write(p("fixture.json"), json.dumps(info, indent=2) + "\n", 0o644)
    return info


def _port_accepts(port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def _log_tail(path: str, lines: int = 30) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no log)"


def start_sshd(info: dict, deadline: float = 10.0, *, spawn=subprocess.Popen,
               ready=None) -> subprocess.Popen:
    """Run sshd in the foreground (stderr appended to dir/sshd.log) until it accepts TCP.

    `spawn` starts the process (the network lab passes one that runs it in a
    namespace); `ready()` says whether it listens (default: a connection to
    127.0.0.1:port succeeds)."""
    if ready is None:
        ready = lambda: _port_accepts(info["port"], timeout=0.5)  # noqa: E731
    log = open(info["sshd_log"], "ab")  # noqa: SIM115 (handed to the child)
    try:
        proc = spawn([info["sshd"], "-D", "-e", "-f", info["sshd_config"]],
                     stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    finally:
        log.close()
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with {proc.returncode}:\n{_log_tail(info['sshd_log'])}")
        if ready():
            return proc
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"sshd did not accept on port {info['port']} within {deadline} s:\n"
                       f"{_log_tail(info['sshd_log'])}")


def _children(pid: int) -> list[int]:
    children = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                children += [int(x) for x in f.read().split()]
    except OSError:
        pass  # it has exited
    return children


def stop_sshd(proc: subprocess.Popen, timeout: float = 5.0, sessions: bool = False) -> None:
    """SIGTERM the sshd started by start_sshd (by PID), SIGKILL after `timeout`, reap it.

    With `sessions`, its per-connection children are SIGKILLed too (the whole
    bastion goes away; without, they live on as after `systemctl restart`)."""
    if proc.poll() is not None:
        return
    # pidfds taken before the listener goes: a child that exits meanwhile can
    # never be confused with a new process that got its PID.
    children = []
    for pid in _children(proc.pid) if sessions else []:
        try:
            children.append(os.pidfd_open(pid))
        except OSError:
            pass
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for fd in children:
        try:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        finally:
            os.close(fd)


def ssh_base_args(info: dict, key: str | None = None) -> list[str]:
    """OpenSSH client arguments that use only `key` and the bracketed known_hosts.

    The caller appends the host (127.0.0.1) and anything after it.
    """
    return [
        "-F", "/dev/null",
        "-i", key or info["key_ed25519"],
        "-o", "IdentitiesOnly=yes",
        "-o", "IdentityAgent=none",
        "-o", f"UserKnownHostsFile={info['known_hosts_bracketed']}",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes",
        "-o", "ExitOnForwardFailure=yes",
        "-o", "ServerAliveInterval=0",
        "-p", str(info["port"]),
        "-l", info["user"],
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="create the server directory, print fixture.json")
    prep.add_argument("dir")
    prep.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        info = prepare(args.dir, args.port)
    except MissingTool as e:
        print(f"sshd_fixture: skipping: {e}", file=sys.stderr)
        return EXIT_SKIP
    json.dump(info, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
