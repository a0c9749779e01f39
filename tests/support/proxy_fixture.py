#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Real proxies on 127.0.0.1 for tests, each with its own files in a directory.

http: tinyproxy (Debian's tinyproxy-bin), HTTP CONNECT, with Basic
authentication when a user is given. socks5: microsocks (Debian's
microsocks), with RFC 1929 user name and password when given. Both run
unprivileged and in the foreground; `bind` makes them connect onward from
that address, so that the far end's log shows the proxy carried a
connection (sshd logs "Connection from 127.0.0.3 ...").

Used by the C++ fixture (tests/support/proxy_server.cpp, through the command
line) and the CLI tests (through import). Standard library only.

    python3 proxy_fixture.py prepare {http|socks5} DIR [--user U --password P] [--bind ADDR]
        # writes DIR/proxy.json: {"argv": [...], "port": N, "log": PATH}; exits 77 without the tool
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time

EXIT_SKIP = 77
TOOLS = {"http": ("tinyproxy", "tinyproxy-bin"), "socks5": ("microsocks", "microsocks")}


class MissingTool(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(kind: str, dir: str, user: str | None = None, password: str | None = None,  # noqa: A002
            bind: str | None = None) -> dict:
    """The command line of a proxy of `kind` listening on a free port of 127.0.0.1."""
    program, package = TOOLS[kind]
    path = shutil.which(program) or shutil.which(program, path="/usr/sbin:/usr/bin")
    if not path:
        raise MissingTool(f"{program} is not installed (Debian package {package}; scripts/setup installs it)")
    d = os.path.abspath(dir)
    os.makedirs(d, exist_ok=True)
    port = free_port()
    log = os.path.join(d, f"{kind}-proxy.log")
    if kind == "http":
        conf = [f"Port {port}", "Listen 127.0.0.1", "Timeout 60", "MaxClients 200", "Allow 127.0.0.1",
                "DisableViaHeader Yes", "LogLevel Connect", f'LogFile "{log}"']
        if bind:
            conf.append(f"Bind {bind}")
        if user:
            conf.append(f"BasicAuth {user} {password}")
        conf_path = os.path.join(d, "tinyproxy.conf")
        with open(conf_path, "w") as f:
            f.write("\n".join(conf) + "\n")
        os.chmod(conf_path, 0o600)
        argv = [path, "-d", "-c", conf_path]
    else:
        argv = [path, "-i", "127.0.0.1", "-p", str(port)]
        if bind:
            argv += ["-b", bind]
        if user:
            argv += ["-u", user, "-P", password or ""]
    info = {"kind": kind, "argv": argv, "port": port, "log": log}
    with open(os.path.join(d, "proxy.json"), "w") as f:
        json.dump(info, f, indent=2)
    return info


def start(info: dict, deadline: float = 10.0) -> subprocess.Popen:
    """Start the proxy of `info`; return once it accepts connections."""
    with open(info["log"], "ab") as out:
        proc = subprocess.Popen(info["argv"], stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{info['argv'][0]} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", info["port"]), timeout=1):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"{info['argv'][0]} did not listen on {info['port']} within {deadline} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("kind", choices=sorted(TOOLS))
    p.add_argument("dir")
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--bind")
    args = parser.parse_args(argv)
    try:
        info = prepare(args.kind, args.dir, args.user, args.password, args.bind)
    except MissingTool as e:
        print(e, file=sys.stderr)
        return EXIT_SKIP
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
