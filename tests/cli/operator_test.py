#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# What an operator and a packager meet: the installed files (unit, sysusers.d,
# tmpfiles.d, man page, completion, examples, both libraries with their
# headers and .pc files) for both prefixes, --help, JSON
# log lines, logs in the journal, and /metrics.
#   operator_test.py BINARY CASE   (meson registers one test per case)
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime

from clitest import (REPO, Env, Failure, Skip, check, echo_roundtrip, kill_pid, main, sshd_fixture, wait_until)

BUILD = os.environ.get("PYTUN_BUILD_ROOT", "")
MODE_FLAGS = ["--check", "--test_smtp", "--test_http", "--test_connections", "--test_tunnels", "--test_all",
              "--make-key", "--version", "--log-level", "--log-format", "forward", "vpn"]


def help_flags(binary, *command):
    """Every long flag `pytun [COMMAND] --help` lists."""
    r = subprocess.run([binary, *command, "--help"], capture_output=True, text=True, timeout=30)
    check(r.returncode == 0, "pytun %s--help: exit 0" % "".join(c + " " for c in command))
    options = r.stdout.split("Examples:")[0]
    return r.stdout, sorted(set(re.findall(r"(--[a-z][a-z0-9_-]+)", options)))


def tool(name):
    path = shutil.which(name)
    if not path:
        raise Skip("%s not installed (scripts/setup installs it)" % name)
    return path


def stop_pytun(proc, timeout=15):
    kill_pid(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise Failure("pytun did not exit within %d s of SIGTERM" % timeout)


# --------------------------------------------------------------------------
def documented_paths():
    """The table "Where things are" of docs/service.md: {what: (default prefix, /usr)}."""
    text = open(os.path.join(REPO, "docs", "service.md")).read()
    section = text.split("## Where things are", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[1].startswith("/"):
            rows[cells[0]] = (cells[1], cells[2])
    check(len(rows) >= 10, "docs/service.md has the table of installed paths (%d rows)" % len(rows))
    return rows


def unit_values(text, key):
    return [ln.split("=", 1)[1] for ln in text.splitlines() if ln.startswith(key + "=")]


def check_unit(unit_text, paths, column, what):
    """The unit agrees with the table: program, configuration, logs, documentation."""
    exec_start = unit_values(unit_text, "ExecStart")[0].split()
    check(exec_start == [paths["program"][column], "--config_ini", paths["configuration"][column]],
          "%s: ExecStart runs %s with %s" % (what, paths["program"][column], paths["configuration"][column]))
    check(unit_values(unit_text, "LogsDirectory") == [os.path.basename(paths["logs"][column])]
          and paths["logs"][column].startswith("/var/log/"), "%s: LogsDirectory= is %s" % (what, paths["logs"][column]))
    docs = unit_values(unit_text, "Documentation")[0].split()
    check(docs == ["man:pytun(1)", "file://" + paths["documentation"][column] + "/service.md"],
          "%s: Documentation= names pytun(1) and the installed service.md: %s" % (what, docs))
    check(not unit_values(unit_text, "ConfigurationDirectory"),
          "%s: no ConfigurationDirectory= (it would make /etc/pytun root:root, unreadable for pytun)" % what)


def check_installed_libraries(prefix):
    """Both libraries with their soname links and .pc files, every public header and nothing private."""
    libs, pcs, maps = {}, {}, []
    for root, _, files in os.walk(prefix):
        for f in files:
            if f.endswith(".map"):
                maps.append(os.path.join(root, f))
            elif f.startswith("libpytun") and ".so" in f:
                libs[f] = os.path.join(root, f)
            elif f.endswith(".pc"):
                pcs[f] = open(os.path.join(root, f)).read()
    for lib in ("libpytun", "libpytun-connector"):
        names = sorted(n for n in libs if re.fullmatch(re.escape(lib) + r"\.so(\.[0-9.]+)?", n))
        check(len(names) == 3 and os.path.islink(libs[lib + ".so"]),
              "%s installed: .so link, soname link and library (%s)" % (lib, names))
        check(lib + ".pc" in pcs and "C++20" in pcs[lib + ".pc"], "%s.pc installed and says C++20 is needed" % lib)
    check("Requires: libpytun" in pcs["libpytun-connector.pc"], "libpytun-connector.pc requires libpytun")
    check(not maps, "the linker version script is not installed (%s)" % maps)
    public = sorted(os.listdir(os.path.join(REPO, "libpytun", "include", "pytun")))
    installed = sorted(os.listdir(os.path.join(prefix, "include", "pytun")))
    check(installed == public, "include/pytun holds every public header and nothing else (%s)" % installed)


def case_install(binary):
    if not BUILD:
        raise Skip("PYTUN_BUILD_ROOT not set (run through meson test)")
    tool("systemd-analyze")
    paths = documented_paths()
    with Env(binary) as env:
        # 1. The default prefix, installed for real into a staging directory.
        dest = env.path("dest")
        r = subprocess.run(["meson", "install", "-C", BUILD, "--destdir", dest, "--no-rebuild", "--quiet"],
                           capture_output=True, text=True, timeout=300)
        check(r.returncode == 0, "meson install --destdir: %s" % r.stderr[-500:])
        prefix = subprocess.run(["meson", "introspect", "--buildoptions", BUILD], capture_output=True, text=True)
        prefix = [o["value"] for o in json.loads(prefix.stdout) if o["name"] == "prefix"][0]
        if prefix != "/usr/local":
            raise Skip("the build directory has prefix %s; this case checks /usr/local" % prefix)
        for what, (path, _) in sorted(paths.items()):
            if path.startswith(("/etc/", "/var/")):
                continue  # made by tmpfiles.d below, not installed
            check(os.path.exists(dest + path), "%s installed at %s" % (what, path))
        for doc in ("README.md", "LICENSE", "docs/service.md", "docs/cli.md", "docs/images/dashboard.png"):
            check(os.path.isfile(os.path.join(dest + "/usr/local/share/doc/pytun", doc)), "%s installed" % doc)
        check("MIT License" in open(dest + "/usr/local/share/doc/pytun/LICENSE").read(), "LICENSE: MIT")
        unit = open(dest + paths["systemd unit"][0]).read()
        check_unit(unit, paths, 0, "/usr/local")
        check_installed_libraries(dest + "/usr/local")

        # systemd accepts the unit, and finds its man page where it was installed.
        staged = env.write("pytun.service", unit.replace("ExecStart=" + paths["program"][0],
                                                         "ExecStart=" + dest + paths["program"][0]))
        environ = dict(os.environ, MANPATH=dest + "/usr/local/share/man")
        r = subprocess.run(["systemd-analyze", "verify", staged], capture_output=True, text=True, env=environ)
        problems = [ln for ln in (r.stdout + r.stderr).splitlines() if "pytun.service" in ln]
        check(r.returncode == 0 and not problems, "systemd-analyze verify (man page found): %s"
              % (problems or "clean"))
        r = subprocess.run(["systemd-analyze", "verify", staged], capture_output=True, text=True,
                           env=dict(os.environ, MANPATH=env.path("nowhere")))
        check(r.returncode != 0 and "pytun(1)" in r.stderr,
              "without the installed man page verify fails: the check is real (%s)" % r.stderr.strip()[-120:])

        # 2. The service user and directories, made by systemd's own tools from the installed snippets.
        os.makedirs(dest + "/etc", exist_ok=True)
        r = subprocess.run([tool("systemd-sysusers"), "--root=" + dest], capture_output=True, text=True)
        check(r.returncode == 0, "systemd-sysusers --root: %s" % r.stderr.strip())
        users = {ln.split(":")[0]: ln.strip().split(":") for ln in open(dest + "/etc/passwd")}
        check("pytun" in users and users["pytun"][5] == "/etc/pytun" and users["pytun"][6] == "/usr/sbin/nologin",
              "sysusers.d: user pytun, home /etc/pytun, no shell: %s" % users.get("pytun"))
        uid, gid = int(users["pytun"][2]), int(users["pytun"][3])
        r = subprocess.run([tool("systemd-tmpfiles"), "--root=" + dest, "--create"], capture_output=True,
                           text=True)
        check(r.returncode == 0, "systemd-tmpfiles --root --create: %s" % r.stderr.strip())
        for path, owner, mode in ((paths["logs"][0], (uid, gid), 0o750),
                                  (os.path.dirname(paths["configuration"][0]), (0, gid), 0o750),
                                  (paths["tunnel files"][0], (0, gid), 0o750)):
            st = os.stat(dest + path)
            check((st.st_uid, st.st_gid) == owner and st.st_mode & 0o7777 == mode,
                  "tmpfiles.d: %s is %o %d:%d" % (path, mode, owner[0], owner[1]))

        # 3. The man page renders without warnings; bash-completion loads the completion by itself.
        man = dest + paths["man page"][0]
        r = subprocess.run(["groff", "-man", "-ww", "-z", man], capture_output=True, text=True)
        check(r.returncode == 0 and not r.stderr, "groff -man -ww: no warnings %s" % r.stderr[:300])
        r = subprocess.run(["man", "-l", man], capture_output=True, text=True, env=dict(os.environ, MANWIDTH="100"))
        check(r.returncode == 0 and "--log-format" in r.stdout and "/etc/pytun/connector.ini" in r.stdout,
              "man -l shows the page with the service's paths")
        loader = "/usr/share/bash-completion/bash_completion"
        if not os.path.exists(loader):
            raise Skip("bash-completion not installed (scripts/setup installs it)")
        script = ("source %s; _completion_loader pytun; complete -p pytun || exit 9;"
                  "COMP_WORDS=(pytun --log-format ''); COMP_CWORD=2; _pytun; echo \"${COMPREPLY[*]}\"" % loader)
        r = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                           env=dict(os.environ, XDG_DATA_DIRS=dest + "/usr/local/share"))
        check(r.returncode == 0 and "complete -F _pytun pytun" in r.stdout and "text json" in r.stdout,
              "bash-completion finds the installed completion under the prefix: %r" % r.stdout)

        # 4. The sample configurations pass --check once their keys exist.
        ex = env.path("etc-pytun")
        shutil.copytree(dest + paths["sample configurations"][0], ex)
        for f in ("connector.ini", "connector.toml"):
            text = open(os.path.join(ex, f)).read().replace(paths["logs"][0], env.path("logs"))
            env.write(os.path.join(ex, f), text, 0o640)
        host_key = os.path.join(ex, "host")
        for key in ("tunnels/ldap_ed25519", "tunnels/smtp_ed25519", "host"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(ex, key)], check=True)
        with open(host_key + ".pub") as f:
            env.write(os.path.join(ex, "tunnels", "known_hosts"), "bastion.example.com " + " ".join(f.read().split()[:2])
                      + "\n")
        for f in ("connector.ini", "connector.toml"):
            r = env.run(["--config_ini", os.path.join(ex, f), "--check"])
            check(r.returncode == 0 and "2 tunnels" in r.stdout,
                  "the installed examples/%s passes --check: %s%s" % (f, r.stdout, r.stderr))

        # 5. A package: --prefix=/usr, configured only (the paths are decided at configure time).
        pkg = env.path("build-usr")
        r = subprocess.run(["meson", "setup", "--prefix=/usr", "-Dtests=false", pkg, REPO], capture_output=True,
                           text=True, timeout=300)
        check(r.returncode == 0, "meson setup --prefix=/usr: %s" % r.stdout[-500:])
        r = subprocess.run(["meson", "introspect", "--installed", pkg], capture_output=True, text=True)
        installed = set(json.loads(r.stdout).values())
        for what, (_, path) in sorted(paths.items()):
            if path.startswith(("/etc/", "/var/")):
                continue
            check(path in installed or any(p.startswith(path + "/") for p in installed),
                  "--prefix=/usr: %s installed at %s" % (what, path))
        check_unit(open(os.path.join(pkg, "dist", "pytun.service")).read(), paths, 1, "--prefix=/usr")
        man_usr = open(os.path.join(pkg, "dist", "pytun.1")).read()
        check("/usr/share/doc/pytun/examples" in man_usr and "/usr/local" not in man_usr,
              "--prefix=/usr: the man page names /usr paths")


# --------------------------------------------------------------------------
def case_help(binary):
    text, flags = help_flags(binary)
    examples = text.split("Examples:", 1)[1] if "Examples:" in text else ""
    for flag in MODE_FLAGS:
        check(re.search(r"^\s+pytun .*%s" % re.escape(flag), examples, re.M),
              "--help has an example for %s" % flag)
    check(re.search(r"^\s+pytun --config_ini \S+$", examples, re.M), "--help has an example of run mode")
    man = open(os.path.join(REPO, "dist", "man", "pytun.1.in")).read().replace("\\-", "-")
    completion = open(os.path.join(REPO, "dist", "bash-completion", "pytun")).read()
    for flag in flags:
        check(flag in man, "pytun(1) documents %s" % flag)
        check(re.search(r"\s%s(\s|\))" % re.escape(flag), completion), "the bash completion offers %s" % flag)
    check(len(flags) >= 12, "--help lists the flags: %s" % " ".join(flags))
    forward_text, forward_flags = help_flags(binary, "forward")
    forward_completion = completion.split("_pytun_forward()", 1)[1]
    for flag in forward_flags:
        check(flag in man, "pytun(1) documents pytun forward %s" % flag)
        check(re.search(r"\s%s(\s|\))" % re.escape(flag), forward_completion),
              "the bash completion offers pytun forward %s" % flag)
    vpn_text, vpn_flags = help_flags(binary, "vpn")
    vpn_completion = completion.split("_pytun_vpn()", 1)[1]
    for flag in vpn_flags:
        check(flag in man, "pytun(1) documents pytun vpn %s" % flag)
        check(re.search(r"\s%s(\s|\))" % re.escape(flag), vpn_completion),
              "the bash completion offers pytun vpn %s" % flag)
    check({"--remote", "--dns", "--to-ns", "--ns-hosts", "--method", "--cleanup", "--fail-open"} <= set(vpn_flags),
          "pytun vpn --help lists its options: %s" % " ".join(vpn_flags))
    check({"--remote", "--identity", "--known-hosts", "--allow"} <= set(forward_flags)
          and re.search(r"^\s+pytun forward -r \S+ -i ", forward_text.split("Examples:", 1)[-1], re.M),
          "pytun forward --help lists its options and has examples: %s" % " ".join(forward_flags))

    # The completion itself, in plain bash.
    def complete(*words):
        script = ("source %s; COMP_WORDS=(%s); COMP_CWORD=%d; _pytun; printf '%%s\\n' \"${COMPREPLY[@]}\""
                  % (os.path.join(REPO, "dist", "bash-completion", "pytun"),
                     " ".join("'%s'" % w for w in words), len(words) - 1))
        r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=REPO)
        return [ln for ln in r.stdout.splitlines() if ln]

    check(set(complete("pytun", "--")) == set(flags), "pytun --<Tab> offers exactly the flags of --help")
    check(complete("pytun", "fo") == ["forward"], "pytun fo<Tab>: forward")
    check(set(complete("pytun", "forward", "-r", "h", "--")) == set(forward_flags),
          "pytun forward ... --<Tab> offers exactly the flags of pytun forward --help")
    check(sorted(complete("pytun", "forward", "--known-hosts", "dist/examples/conn")) == [
          "dist/examples/connector.ini", "dist/examples/connector.toml"],
          "pytun forward --known-hosts <Tab>: files")
    check(complete("pytun", "--log-level", "w") == ["warning"], "--log-level w<Tab>: warning")
    check(complete("pytun", "--log-format", "=", "j") == ["json"], "--log-format=j<Tab>: json")
    check(complete("pytun", "--config_ini", "dist/examples/conn") == ["dist/examples/connector.ini",
                                                                       "dist/examples/connector.toml"],
          "--config_ini <Tab>: .ini and .toml files")
    check(complete("pytun", "--make-key", "dist/examples/tunnels/l") == ["dist/examples/tunnels/ldap.ini"],
          "--make-key <Tab>: tunnel files")

    for args, what in ((["--log-format", "xml"], "an unknown log format"), (["--log-level", "loud"], "an unknown level")):
        r = subprocess.run([binary] + args, capture_output=True, text=True, timeout=30)
        check(r.returncode == 2 and args[1] in r.stderr, "%s is a usage error (2) naming it: %s" % (what, r.stderr))


# --------------------------------------------------------------------------
JSON_KEYS = ["time", "level", "pid", "logger", "tunnel", "event", "message", "error"]


def parse_json_lines(text, what):
    lines = [ln for ln in text.splitlines() if ln]
    check(lines, "%s has lines" % what)
    out = []
    for ln in lines:
        try:
            j = json.loads(ln)
        except ValueError:
            raise Failure("%s: not a JSON line: %r" % (what, ln))
        if list(j) != JSON_KEYS:
            raise Failure("%s: keys %s, expected %s" % (what, list(j), JSON_KEYS))
        datetime.strptime(j["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
        out.append(j)
    print("ok: %s: %d lines parse, each with %s" % (what, len(out), ", ".join(JSON_KEYS)))
    return out


def case_log_json(binary):
    with Env(binary) as env:
        env.sshd()
        echo = env.echo()
        # The files say INFO and ERROR; --log-level debug overrides both.
        env.write("connector.ini", open(env.connector_ini(log_level="INFO")).read()
                  .replace("log_to_console = False", "log_to_console = true") + "keepalive = 5\n", 0o600)
        port = sshd_fixture.free_port()
        env.tunnel_ini("ldap", "LDAP Tunnel", port, echo.port, extra="log_level = ERROR\n")
        proc = env.start(["--config_ini", "connector.ini", "--log-format", "json", "--log-level", "debug"])
        check(wait_until(lambda: echo_roundtrip(port), 30), "the tunnel serves")
        env.stop_sshd()
        check(wait_until(lambda: '"tunnel_backing_off"' in env.log("ldap"), 30), "the bastion goes: backing off")
        check(stop_pytun(proc) == 0, "SIGTERM: exit 0")

        main_lines = parse_json_lines(env.log("main_connector"), "main_connector.log")
        tunnel_lines = parse_json_lines(env.log("ldap"), "ldap.log")
        stderr_lines = parse_json_lines(open(env.path("pytun.stderr")).read(), "the console (log_to_console)")
        check(all(j["pid"] == proc.pid for j in main_lines + tunnel_lines), "pid is pytun's")
        check(all(j["tunnel"] is None for j in main_lines) and {"pytun", "http"} <= {j["logger"] for j in main_lines},
              "main log: the connector's and the library's loggers (pytun, http), tunnel null")
        check(all(j["tunnel"] == "LDAP Tunnel" for j in tunnel_lines), "tunnel log: every line names the tunnel")
        events = [j["event"] for j in main_lines]
        check(events[0] == "starting" and events[-1] == "stopped" and "stopping" in events and "started" in events,
              "main log events: starting ... started ... stopping, stopped: %s" % events)
        up = [j for j in tunnel_lines if j["event"] == "tunnel_up"]
        down = [j for j in tunnel_lines if j["event"] == "tunnel_backing_off"]
        check(up and up[0]["level"] == "info" and up[0]["error"] is None, "tunnel_up: info, no error")
        check(down and down[0]["level"] == "warning" and down[0]["error"]
              and "backing off" in down[0]["message"] and down[0]["error"] not in down[0]["message"],
              "tunnel_backing_off: warning, the error in its own field: %r" % (down[0] if down else None))
        warning = [j for j in main_lines if j["event"] == "config_warning"]
        check(warning and warning[0]["level"] == "warning" and "keepalive" in warning[0]["message"],
              "a configuration warning (unknown key) is a JSON log line too: %r" % (warning[:1],))
        check(any(j["level"] == "debug" for j in tunnel_lines) and any(j["level"] == "debug" for j in main_lines),
              "--log-level debug overrides log_level = ERROR / INFO of the files")
        check({j["message"] for j in stderr_lines} >= {j["message"] for j in main_lines if j["level"] != "debug"}
              or len(stderr_lines) >= len(main_lines) - 1, "the console gets JSON lines too")

        # A level above info: only warnings and worse, still JSON.
        os.rename(env.path("logs"), env.path("logs-1"))
        env.restart_sshd()
        r = env.run(["--config_ini", "connector.ini", "--log-format", "json", "--log-level", "WARNING",
                     "--test_tunnels"])
        check(r.returncode == 0, "--test_tunnels with JSON logs: 0 (%s)" % r.stdout.strip())
        console = [json.loads(ln) for ln in r.stderr.splitlines() if ln.startswith("{")]
        check(all(j["level"] in ("warning", "error", "critical") for j in console),
              "--log-level WARNING: nothing below warning on the console")


# --------------------------------------------------------------------------
def case_journal(binary):
    with Env(binary) as env:
        env.sshd()
        echo = env.echo()
        env.connector_ini(log_level="INFO")          # log_to_console = False
        port = sshd_fixture.free_port()
        env.tunnel_ini("t", "T", port, echo.port)

        def run(journal_stream, extra_args=()):
            """Start pytun with stderr to a file and JOURNAL_STREAM set; serve, lose the bastion, stop."""
            err_path = env.path("stderr-%d" % len(os.listdir(env.tmp)))
            with open(err_path, "wb") as err:
                st = os.fstat(err.fileno())
                stream = "%d:%d" % (st.st_dev, st.st_ino) if journal_stream == "self" else journal_stream
                proc = env.start(["--config_ini", "connector.ini"] + list(extra_args),
                                 env=dict(os.environ, JOURNAL_STREAM=stream), stderr=err)
            check(wait_until(lambda: echo_roundtrip(port), 30), "the tunnel serves")
            lost = env.log("t").count("up -> backing off")   # the log file grows over the runs
            env.stop_sshd()
            check(wait_until(lambda: env.log("t").count("up -> backing off") > lost, 30), "the bastion goes")
            check(stop_pytun(proc) == 0, "SIGTERM: exit 0")
            env.restart_sshd()
            return open(err_path).read()

        text = run("self")
        lines = text.splitlines()
        check(lines and all(re.match(r"^<[2-7]>\[[^\]]+\] ", ln) for ln in lines),
              "stderr is the journal: every line is <priority>[logger] message (%d lines)" % len(lines))
        check(not any(re.search(r"\d\d:\d\d:\d\d", ln[:40]) for ln in lines),
              "no timestamp of our own (the journal records it)")
        check(any(ln.startswith("<6>[pytun] pytun ") and "logging to the journal" in ln for ln in lines),
              "the start line, priority 6 (info)")
        check(any(ln.startswith("<6>[T] state: connecting -> up") for ln in lines), "tunnel up: priority 6")
        check(any(ln.startswith("<4>[T] state: up -> backing off: ") for ln in lines),
              "bastion lost: priority 4 (warning), with the error")
        check(not any(ln.startswith("<7>") for ln in lines), "log_level INFO: no debug lines in the journal")
        check("state: connecting -> up" in env.log("t"), "the log files are still written")

        text = run("self", ["--log-format", "json"])
        lines = text.splitlines()
        check(lines and all(re.match(r"^<[2-7]>\{", ln) for ln in lines), "JSON in the journal: <priority>{...}")
        parsed = [json.loads(ln[3:]) for ln in lines]
        check(any(j["event"] == "tunnel_backing_off" and j["error"] for j in parsed),
              "the journal's JSON lines carry event and error")

        st = os.stat(env.path("connector.ini"))
        text = run("%d:%d" % (st.st_dev, st.st_ino))
        check(text == "", "JOURNAL_STREAM naming another file: stderr is not the journal, log_to_console = False "
              "means silence (%r)" % text[:200])


# --------------------------------------------------------------------------
UNIT_WORDS = ("seconds", "bytes")
NOT_BASE_UNITS = ("ms", "milliseconds", "microseconds", "us", "kb", "kib", "mb", "mib", "minutes", "hours", "percent")


def metric_name_problems(text):
    """Prometheus naming (prometheus.io/docs/practices/naming): what promtool does not catch too."""
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    helps = set(re.findall(r"^# HELP (\S+) ", text, re.M))
    problems = []
    for name, kind in types.items():
        words = name.split("_")
        if name not in helps:
            problems.append("%s: no HELP" % name)
        if not re.match(r"^(pytun|process)_[a-z0-9_]+$", name):
            problems.append("%s: not pytun_ or process_ snake_case" % name)
        if kind == "counter" and words[-1] != "total":
            problems.append("%s: a counter must end in _total" % name)
        if kind != "counter" and "total" in words:
            problems.append("%s: only counters say total" % name)
        if "total" in words[:-1]:
            problems.append("%s: _total must come last" % name)
        base = words[:-1] if words[-1] == "total" else words
        units = [w for w in base if w in UNIT_WORDS]
        if units and base[-1] not in UNIT_WORDS:
            problems.append("%s: the unit (%s) must come last, before any _total" % (name, units[0]))
        if any(w in NOT_BASE_UNITS for w in words):
            problems.append("%s: use base units (seconds, bytes)" % name)
    for line in text.splitlines():
        if line and not line.startswith("#"):
            family = re.sub(r"_(bucket|sum|count)$", "", line.split("{")[0].split(" ")[0])
            if family not in types and line.split("{")[0].split(" ")[0] not in types:
                problems.append("sample without TYPE: %s" % line)
    return problems


def promtool():
    found = shutil.which("promtool")
    local = os.path.join(BUILD, "test-tools", "promtool")
    return found or (local if os.access(local, os.X_OK) else None)


def get(port, path):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=10) as r:
        return r.read().decode()


def sample(text, series):
    m = re.search(r"^%s (\S+)$" % re.escape(series), text, re.M)
    return float(m.group(1)) if m else None


def case_metrics(binary):
    with Env(binary) as env:
        t0 = time.time()
        env.sshd()
        echo = env.echo()
        env.connector_ini(log_level="INFO")
        port = sshd_fixture.free_port()
        env.tunnel_ini("a", "A", port, echo.port)
        env.tunnel_ini("b", "B", sshd_fixture.free_port(), sshd_fixture.free_port())   # no service: degraded
        proc = env.start(["--config_ini", "connector.ini"])
        check(wait_until(lambda: echo_roundtrip(port), 30), "tunnel A serves")
        connections = 20
        check(all(echo_roundtrip(port) for _ in range(connections)), "%d connections through A" % connections)
        api = {}
        check(wait_until(lambda: api.update(json.loads(get(env.inspection_port, "/api/v1/tunnels"))) or
                         {t["name"]: t["state"] for t in api["tunnels"]} == {"A": "up", "B": "degraded"}, 30),
              "A up, B degraded")
        text = get(env.inspection_port, "/metrics")

        tool_path = promtool()
        if tool_path:
            r = subprocess.run([tool_path, "check", "metrics"], input=text, capture_output=True, text=True)
            check(r.returncode == 0 and not (r.stdout + r.stderr).strip(),
                  "promtool check metrics: clean%s" % (": " + r.stdout + r.stderr if r.returncode else ""))
        else:
            print("note: promtool not found (scripts/setup unpacks it from Debian's prometheus package); "
                  "names checked by this test only")
        problems = metric_name_problems(text)
        check(not problems, "metric names follow Prometheus naming: %s" % (problems or "ok"))
        for old in ("pytun_tunnel_bytes_in_total", "pytun_tunnel_bytes_out_total"):
            check(old not in text, "the old name %s is gone (docs/migration.md)" % old)

        a = 'tunnel="A"'
        count = sample(text, "pytun_tunnel_connection_setup_seconds_count{%s}" % a)
        check(count is not None and count >= connections + 1,
              "the set-up histogram counted every connection (%s >= %d)" % (count, connections + 1))
        buckets = [float(v) for v in re.findall(
            r'^pytun_tunnel_connection_setup_seconds_bucket\{tunnel="A",le="[^"]+"\} (\S+)$', text, re.M)]
        check(len(buckets) == 14 and buckets == sorted(buckets) and buckets[-1] == count,
              "buckets are cumulative and +Inf equals _count: %s" % buckets)
        total = sample(text, "pytun_tunnel_connection_setup_seconds_sum{%s}" % a)
        check(0 < total < count * 2, "_sum is the set-up time in seconds: %.6f s for %d" % (total, count))
        check(sample(text, "pytun_tunnel_received_bytes_total{%s}" % a) >= connections * len(b"hello pytun\n"),
              "pytun_tunnel_received_bytes_total counts what came from the bastion")

        now = time.time()
        with open("/proc/%d/stat" % proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")   # utime + stime, now
        check(0 <= sample(text, "process_cpu_seconds_total") <= cpu,
              "process_cpu_seconds_total %s, /proc says %.2f s a moment later"
              % (sample(text, "process_cpu_seconds_total"), cpu))
        check(sample(text, "process_resident_memory_bytes") > (1 << 20), "process_resident_memory_bytes > 1 MiB")
        fds = len(os.listdir("/proc/%d/fd" % proc.pid))
        check(abs(sample(text, "process_open_fds") - fds) <= 4,
              "process_open_fds %s, /proc says %d" % (sample(text, "process_open_fds"), fds))
        check(sample(text, "process_max_fds") >= 1024, "process_max_fds")
        start = sample(text, "process_start_time_seconds")
        check(t0 - 2 <= start <= now, "process_start_time_seconds is when pytun started (%.1f s ago)" % (now - start))

        by_name = {t["name"]: t for t in json.loads(get(env.inspection_port, "/api/v1/tunnels"))["tunnels"]}
        check("probe_rtt_ms" not in by_name["A"] and "probe_rtt_seconds" in by_name["A"],
              "JSON API: probe_rtt_seconds, as in /metrics")
        check(by_name["A"]["connection_setup_seconds"]["count"] >= connections + 1, "JSON API: set-up count")
        err = by_name["B"]["last_error"]
        check(err and t0 - 2 <= err["time"] <= time.time(), "JSON API: last_error.time says when (%s)" % err)
        check(stop_pytun(proc) == 0, "SIGTERM: exit 0")


if __name__ == "__main__":
    sys.exit(main({
        "install": case_install,
        "help": case_help,
        "log-json": case_log_json,
        "journal": case_journal,
        "metrics": case_metrics,
    }))
