#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# deploy/ against the code: the Kubernetes manifests run a real pytun (their
# ConfigMap, Secret layout, args, probes, scrape path and alert expressions),
# and the systemd template unit passes systemd-analyze verify.
#   deploy_test.py BINARY CASE   (meson registers one test per case)
import configparser
import json
import os
import re
import shutil
import signal
import subprocess
import urllib.error
import urllib.request

from clitest import REPO, Env, Failure, Skip, check, echo_roundtrip, kill_pid, main, sshd_fixture, wait_until

BUILD = os.environ.get("PYTUN_BUILD_ROOT", "")
KUBE = os.path.join(REPO, "deploy", "kubernetes")


# PromQL words that are not metric names.
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values",
    "group", "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
    "offset", "rate", "irate", "increase", "delta", "idelta", "changes", "resets", "absent", "absent_over_time",
    "max_over_time", "min_over_time", "avg_over_time", "sum_over_time", "count_over_time", "last_over_time",
    "histogram_quantile", "clamp_min", "clamp_max", "abs", "time", "vector", "scalar", "label_replace",
}


def get(port, path):
    """(status, body) of GET http://127.0.0.1:port/path."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return None, str(e)


def load_manifests():
    try:
        import yaml
    except ImportError:
        raise Skip("PyYAML missing (python3-yaml; scripts/setup installs it)")
    docs = {}
    for name in sorted(os.listdir(KUBE)):
        if name.endswith((".yaml", ".yml")):
            with open(os.path.join(KUBE, name)) as f:
                for doc in yaml.safe_load_all(f):
                    check(isinstance(doc, dict) and "kind" in doc, "%s parses: a manifest with a kind" % name)
                    docs.setdefault(doc["kind"], []).append((name, doc))
    return docs


def status_routes():
    """The paths the status server answers by name (observe/status_server.cpp); the catch-all ".*",
    which answers any other path like "/", is left out: a probe on a typo must not pass."""
    text = open(os.path.join(REPO, "libpytun", "src", "observe", "status_server.cpp")).read()
    routes = set(re.findall(r'\.Get\("(/[^"]*)"', text))
    check({"/healthz", "/readyz", "/metrics"} <= routes, "status_server.cpp routes read: %s" % sorted(routes))
    return routes


def rendered_metric_names():
    """Every metric family render.cpp can write (its string literals), with a histogram's series."""
    text = open(os.path.join(REPO, "libpytun", "src", "observe", "render.cpp")).read()
    names = set(re.findall(r'"((?:pytun|process)_[a-z0-9_]+)"', text))
    for h in [n for n in names if n + "_bucket" in names]:
        names |= {h + "_sum", h + "_count"}
    return names


def error_codes():
    """The enumerators of pytun::Errc (pytun/error.h): the values of pytun_tunnel_last_error's reason."""
    text = open(os.path.join(REPO, "libpytun", "include", "pytun", "error.h")).read()
    body = text.split("enum class Errc", 1)[1].split("};", 1)[0]
    return set(re.findall(r"^\s*([a-z_]+) = \d+,", body, re.M))


def rendered_states():
    text = open(os.path.join(REPO, "libpytun", "src", "observe", "render.cpp")).read()
    return set(re.findall(r'case ManagedState::\w+: return "(\w+)";', text))


def expression_metrics(expr):
    """Metric names in a PromQL expression: identifiers that are not functions, keywords, or labels
    (inside {...} and the lists after by/on/without/ignoring)."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    bare = re.sub(r"\{[^}]*\}", "", bare)
    bare = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", bare)
    bare = re.sub(r"\[[^\]]*\]", "", bare)
    words = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", bare))
    return {w for w in words if w not in PROMQL_WORDS}


def ini_sections(text):
    p = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";"))
    p.read_string(text)
    return p


def rewrite_ini(text, values, root, mount_paths):
    """The manifest's file with `values` (key -> new value) replaced, and every absolute path under one of
    the pod's mounts moved under `root`; comments and every other line stay as they were."""
    out = []
    for line in text.splitlines():
        m = re.match(r"^(\s*)([A-Za-z_]+)(\s*=\s*)(.*)$", line)
        if m:
            key, value = m.group(2), m.group(4)
            if key in values:
                value = str(values[key])
            elif any(value == p or value.startswith(p + "/") for p in mount_paths):
                value = root + value
            line = m.group(1) + key + m.group(3) + value
        out.append(line)
    return "\n".join(out) + "\n"


def check_kustomize(kust, deployment):
    """What `kubectl apply -k` would send, where kubectl is installed: every resource in the
    namespace, the image named, and the Secret's mode read as octal (YAML 1.1) as here."""
    kubectl = shutil.which("kubectl")
    if not kubectl:
        print("kubectl not installed: the kustomize rendering is not checked (the rest is)")
        return
    import yaml
    r = subprocess.run([kubectl, "kustomize", KUBE], capture_output=True, text=True, timeout=60)
    check(r.returncode == 0, "kubectl kustomize deploy/kubernetes builds %s" % r.stderr.strip()[-300:])
    built = list(yaml.safe_load_all(r.stdout))
    check(all(d["metadata"].get("namespace") == kust["namespace"] for d in built if d["kind"] != "Namespace"),
          "kustomize puts every resource in namespace %s" % kust["namespace"])
    (dep,) = [d for d in built if d["kind"] == "Deployment"]
    check(dep["spec"]["template"]["spec"]["containers"][0]["image"].startswith(kust["images"][0]["newName"]),
          "kustomize names the image")

    def modes(d):
        return [v["secret"]["defaultMode"] for v in d["spec"]["template"]["spec"]["volumes"] if "secret" in v]
    check(modes(dep) == modes(deployment), "the Secret's defaultMode reaches the API as read here (octal: %s)"
          % ["0%o" % m for m in modes(dep)])


def check_rules_with_promtool(env, rule_doc):
    """promtool (Debian's, which scripts/setup unpacks into the build tree) parses the rules and their
    templates, and the cases of deploy_alerts.yaml show what each alert does with the pair's series."""
    import yaml
    from operator_test import promtool
    tool = promtool()
    if not tool:
        print("promtool not found: the alert rules are not evaluated (scripts/setup unpacks it)")
        return
    groups = rule_doc["spec"]["groups"]
    full = env.write("rules.yaml", yaml.safe_dump({"groups": groups}))
    r = subprocess.run([tool, "check", "rules", full], capture_output=True, text=True, timeout=60)
    check(r.returncode == 0, "promtool check rules: %s" % (r.stdout + r.stderr).strip()[-400:])
    # The cases test what fires, with which labels; annotation texts are checked above.
    bare = [dict(g, rules=[{k: v for k, v in rule.items() if k != "annotations"} for rule in g["rules"]])
            for g in groups]
    bare_file = env.write("rules-bare.yaml", yaml.safe_dump({"groups": bare}))
    cases = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "deploy_alerts.yaml")).read()
    cases_file = env.write("alerts-test.yaml", cases.replace("  - RULES  #", "  - %s  #" % bare_file))
    r = subprocess.run([tool, "test", "rules", cases_file], capture_output=True, text=True, timeout=120)
    print((r.stdout + r.stderr).strip()[-3000:])
    check(r.returncode == 0, "promtool test rules deploy_alerts.yaml: each alert fires at the times, for the "
                             "series and with the labels its case says, and not before (no active replica, a "
                             "replica down but not a standby, flapping, takeover, host key, descriptors, alerts, "
                             "absent)")


def check_alert_rules(rules, metrics):
    """Every metric an alert uses is exported: by name in render.cpp, and live in `metrics` (the families
    are listed there with HELP and TYPE even without samples); every reason and state is one pytun has."""
    rendered = rendered_metric_names()
    live_families = set(re.findall(r"^# TYPE (\S+) (\S+)", metrics, re.M))
    live = {n for n, _ in live_families}
    live |= {n + s for n, t in live_families if t == "histogram" for s in ("_bucket", "_sum", "_count")}
    check(live <= rendered, "render.cpp's names cover every live family (%d)" % len(live))
    check(len(rules) >= 8, "%d alerts" % len(rules))
    used = set()
    for rule in rules:
        names = expression_metrics(rule["expr"])
        check(names, "%s: its expression uses metrics: %s" % (rule["alert"], sorted(names)))
        used |= names
        for name in names:
            check(name in rendered and name in live, "%s: %s is exported by /metrics" % (rule["alert"], name))
        for reason in re.findall(r'reason=~?"([^"]*)"', rule["expr"]):
            for code in reason.split("|"):
                check(code in error_codes(), "%s: reason %s is a pytun error code" % (rule["alert"], code))
        for state in re.findall(r'state=~?"([^"]*)"', rule["expr"]):
            check(state in rendered_states(), "%s: state %s is one pytun_tunnel_state reports"
                  % (rule["alert"], state))
    for wanted in ("pytun_tunnel_up", "pytun_tunnel_state", "pytun_tunnel_restarts_total",
                   "pytun_tunnel_takeovers_total", "pytun_tunnel_last_error", "pytun_descriptor_exhaustion_total",
                   "pytun_alerts_failed_total"):
        check(wanted in used, "an alert watches %s" % wanted)


def case_kubernetes(binary):
    docs = load_manifests()
    kinds = {k: [d for _, d in v] for k, v in docs.items()}
    for kind in ("Deployment", "ConfigMap", "PodDisruptionBudget", "PrometheusRule", "Kustomization"):
        check(len(kinds.get(kind, [])) == 1, "deploy/kubernetes has one %s" % kind)
    files = {name for v in docs.values() for name, _ in v if name != "kustomization.yaml"}
    kust = kinds["Kustomization"][0]
    check(sorted(kust["resources"]) == sorted(files), "kustomization.yaml applies every manifest: %s"
          % kust["resources"])

    check_kustomize(kust, kinds["Deployment"][0])

    deployment, configmap = kinds["Deployment"][0], kinds["ConfigMap"][0]
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    check(spec["replicas"] == 2, "two replicas: the active-standby pair")
    check(spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
          and kinds["PodDisruptionBudget"][0]["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"],
          "the disruption budget selects the Deployment's pods")
    (container,) = pod["containers"]

    # No root, nothing to escalate to, nothing writable but the emptyDirs.
    psc, csc = pod["securityContext"], container["securityContext"]
    check(psc["runAsNonRoot"] and psc["runAsUser"] != 0 and csc["runAsNonRoot"],
          "runs as a non-root user (%d)" % psc["runAsUser"])
    check(csc["allowPrivilegeEscalation"] is False and csc["capabilities"]["drop"] == ["ALL"]
          and not csc["capabilities"].get("add"), "no privilege escalation, every capability dropped")
    check(csc["readOnlyRootFilesystem"] is True, "read-only root filesystem")
    check(pod["automountServiceAccountToken"] is False, "no service account token in the pod")

    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    check(set(volumes) == set(mounts), "every volume is mounted: %s" % sorted(mounts))
    writable = sorted(m["mountPath"] for n, m in mounts.items() if not m.get("readOnly"))
    check(all("emptyDir" in volumes[n] for n, m in mounts.items() if not m.get("readOnly")),
          "only emptyDirs are writable: %s" % writable)
    secret = [v["secret"] for v in volumes.values() if "secret" in v]
    check(len(secret) == 1 and mounts[[n for n, v in volumes.items() if "secret" in v][0]].get("readOnly"),
          "keys and known_hosts come from one Secret, mounted read-only")
    secret = secret[0]
    key_mode = secret["defaultMode"]
    # fsGroup gives the files the pod's group: file_checks.cpp accepts a key readable by the
    # process's own group and refuses one any other user can read, or the group can change.
    check(key_mode & 0o077 in (0o040, 0) and key_mode & 0o700 == 0o400 and psc.get("fsGroup"),
          "the Secret's files are 0%o with fsGroup %s: readable by the pod's group, no one else"
          % (key_mode, psc.get("fsGroup")))

    # The status port: the container's, the probes', the scrape annotation's and connector.ini's.
    ini = configmap["data"]["connector.ini"]
    connector = ini_sections(ini)["pytun"]
    (port,) = [p for p in container["ports"] if p["name"] == "status"]
    annotations = spec["template"]["metadata"]["annotations"]
    check(port["containerPort"] == int(connector["inspection_port"])
          == int(annotations["prometheus.io/port"]),
          "status port %d: containerPort = inspection_port = prometheus.io/port" % port["containerPort"])
    check(connector["inspection_localhost_only"].lower() in ("false", "no", "0", "off"),
          "the status API listens on the pod's address (the kubelet probes it there)")
    probes = {"liveness": container["livenessProbe"]["httpGet"], "readiness": container["readinessProbe"]["httpGet"]}
    check(all(p["port"] in ("status", port["containerPort"]) for p in probes.values()), "probes use the status port")
    routes = status_routes()
    paths = {"liveness": probes["liveness"]["path"], "readiness": probes["readiness"]["path"],
             "scrape": annotations["prometheus.io/path"]}
    check(paths["liveness"] == "/healthz" and paths["readiness"] == "/readyz",
          "liveness on /healthz, readiness on /readyz")
    for what, path in paths.items():
        check(path in routes, "%s path %s is a route of the status server" % (what, path))

    # The files: each ConfigMap item and Secret key lands where the config says pytun reads it.
    mount_paths = sorted({m["mountPath"] for m in mounts.values()}, key=len, reverse=True)
    with Env(binary) as env:
        info = env.sshd()
        echo = env.echo()
        root = env.path("pod")
        secret_content = {"id_ed25519": info["key_ed25519"], "known_hosts": info["known_hosts_bracketed"]}
        inspection = sshd_fixture.free_port()
        bastion_port = sshd_fixture.free_port()
        tunnel_files = []
        for name, volume in volumes.items():
            target = root + mounts[name]["mountPath"]
            os.makedirs(target, exist_ok=True)
            if "configMap" in volume:
                check(volume["configMap"]["name"] == configmap["metadata"]["name"], "volume %s: the ConfigMap" % name)
                for item in volume["configMap"]["items"]:
                    text = configmap["data"][item["key"]]
                    if item["key"] == "connector.ini":
                        # The status API on loopback here: the pod's address is the machine's otherwise.
                        text = rewrite_ini(text, {"inspection_port": inspection,
                                                  "inspection_localhost_only": "true"}, root, mount_paths)
                    else:
                        tunnel_files.append(os.path.join(target, item["path"]))
                        text = rewrite_ini(text, {"server_host": "127.0.0.1", "server_port": info["port"],
                                                  "username": info["user"], "port": bastion_port,
                                                  "remote_host": "127.0.0.1", "remote_port": echo.port},
                                           root, mount_paths)
                    env.write(os.path.join(target, item["path"]), text, 0o644)
            elif "secret" in volume:
                check(volume["secret"]["secretName"] == "pytun-keys", "volume %s: the Secret pytun-keys" % name)
                for item in volume["secret"]["items"]:
                    check(item["key"] in secret_content, "Secret key %s is one pytun needs" % item["key"])
                    shutil.copyfile(secret_content[item["key"]], os.path.join(target, item["path"]))
                    os.chmod(os.path.join(target, item["path"]), item.get("mode", key_mode))
        check(len(tunnel_files) == len(configmap["data"]) - 1,
              "every tunnel file of the ConfigMap is mapped into the pod: %s" % tunnel_files)
        tunnel_keys = [i["key"] for v in volumes.values() if "configMap" in v for i in v["configMap"]["items"]
                       if i["key"] != "connector.ini"]
        tunnel = ini_sections(configmap["data"][tunnel_keys[0]])["tunnel"]
        for key in ("keyfile", "server_key"):
            check(os.path.isfile(root + tunnel[key]), "%s %s is a file of the Secret's volume" % (key, tunnel[key]))
        check(os.path.isdir(root + connector["log_path"]) and any(
            connector["log_path"] == m["mountPath"] for n, m in mounts.items() if "emptyDir" in volumes[n]),
            "log_path %s is a writable emptyDir" % connector["log_path"])

        # The container's command line, its paths moved under the pod's root.
        args = [root + a if any(a.startswith(p + "/") for p in mount_paths) else a for a in container["args"]]
        config_ini = args[args.index("--config_ini") + 1]
        check(config_ini == root + "/etc/pytun/connector.ini", "args name the ConfigMap's connector.ini")
        r = env.run(["--check", "--config_ini", config_ini])
        print(r.stdout + r.stderr)
        check(r.returncode == 0, "pytun --check accepts the manifests' configuration")
        check("valid: %d tunnel" % len(tunnel_files) in r.stdout
              and all("(%s)" % f in r.stdout for f in tunnel_files),
              "--check loaded every tunnel file from the mapped tunnels/ directory")
        warnings = [ln for ln in (r.stdout + r.stderr).splitlines() if "warning" in ln.lower()]
        check(not warnings, "--check warns about nothing (key permissions 0%o accepted): %s"
              % (key_mode, warnings))

        proc = env.start(args)

        def ready():
            # /readyz is 200 also in the moment between the status API's start and the tunnels'
            # (no tunnel yet, none down): ready means with every tunnel counted.
            status, body = get(inspection, paths["readiness"])
            return status == 200 and json.loads(body).get("tunnels") == len(tunnel_files)
        check(wait_until(ready, 30), "readiness %s answers 200 once the tunnel is up: %s"
              % (paths["readiness"], get(inspection, paths["readiness"])))
        check(echo_roundtrip(bastion_port), "the ConfigMap's tunnel carries bytes from the bastion's port")
        for what, path in paths.items():
            status, body = get(inspection, path)
            check(status == 200, "%s %s: 200" % (what, path))
        status, body = get(inspection, paths["liveness"])
        check(json.loads(body).get("status") == "ok" and json.loads(body).get("tunnels") == 1,
              "liveness answers as /healthz does (not the catch-all ping): %s" % body)
        check(json.loads(get(inspection, paths["readiness"])[1]).get("ready") is True, "readiness says ready")
        metrics = get(inspection, paths["scrape"])[1]

        rules = [r for g in kinds["PrometheusRule"][0]["spec"]["groups"] for r in g["rules"]]
        check_alert_rules(rules, metrics)
        check_rules_with_promtool(env, kinds["PrometheusRule"][0])

        # A Secret rotated with the wrong host key: the authentication alert's series appears.
        kill_pid(proc.pid, signal.SIGTERM)
        check(wait_until(lambda: proc.poll() is not None, 15) and proc.returncode == 0,
              "pytun stopped on SIGTERM, exit 0 (%s)" % proc.returncode)
        known_hosts = root + tunnel["server_key"]
        os.chmod(known_hosts, 0o600)
        shutil.copyfile(info["known_hosts_changed"], known_hosts)
        os.chmod(known_hosts, key_mode)
        proc = env.start(args)
        series = 'pytun_tunnel_last_error{tunnel="%s",reason="host_key_changed"} 1' % tunnel["tunnel_name"]
        check(wait_until(lambda: series in get(inspection, paths["scrape"])[1], 30),
              "a changed host key shows as %s" % series)
        check(get(inspection, paths["readiness"])[0] == 503 and get(inspection, paths["liveness"])[0] == 200,
              "then the pod is live but not ready")
        kill_pid(proc.pid, signal.SIGTERM)
        check(wait_until(lambda: proc.poll() is not None, 15) and proc.returncode == 0,
              "pytun stopped on SIGTERM, exit 0 (%s)" % proc.returncode)


def case_systemd(binary):
    if not BUILD:
        raise Skip("PYTUN_BUILD_ROOT not set (run through meson test)")
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        raise Skip("systemd-analyze not installed (package systemd; scripts/setup installs it)")
    template = open(os.path.join(BUILD, "dist", "pytun@.service")).read()
    single = open(os.path.join(BUILD, "dist", "pytun.service")).read()
    # deploy/systemd/pytun@.service is the template for a /usr install: the
    # unit source with /usr's paths, every setting the same.
    source = open(os.path.join(REPO, "dist", "systemd", "pytun.service.in")).read()
    usr = {"BINDIR": "/usr/bin", "DOCDIR": "/usr/share/doc/pytun", "CONFIG_INI": "/etc/pytun/%i/connector.ini",
           "DESCRIPTION": "pytun reverse SSH tunnel connector %i (/etc/pytun/%i)", "LOGS_DIRECTORY": "pytun/%i"}
    settings = lambda text: [ln for ln in text.splitlines() if ln and not ln.startswith("#")]  # noqa: E731
    committed = open(os.path.join(REPO, "deploy", "systemd", "pytun@.service")).read()
    check(settings(committed) == settings(re.sub(r"@([A-Z_]+)@", lambda m: usr[m.group(1)], source)),
          "deploy/systemd/pytun@.service is dist/systemd/pytun.service.in for /usr (regenerate it after a change)")
    # One source: the template differs from pytun.service only where an instance must.
    differ = {ln.split("=", 1)[0] for ln in set(template.splitlines()) ^ set(single.splitlines())
              if not ln.startswith("#")}
    check(differ == {"Description", "ExecStart", "LogsDirectory"},
          "pytun@.service and pytun.service differ only in Description, ExecStart, LogsDirectory: %s"
          % sorted(differ))
    check("--config_ini /etc/pytun/%i/connector.ini" in template and "\nLogsDirectory=pytun/%i\n" in template,
          "the template reads /etc/pytun/NAME/connector.ini and logs to /var/log/pytun/NAME")
    for key in ("Type=notify", "WatchdogSec=", "LimitNOFILE=65536", "ProtectSystem=strict", "NoNewPrivileges=yes",
                "CapabilityBoundingSet=", "ExecReload=/bin/kill -HUP $MAINPID"):
        check(key in template, "the template has %s as pytun.service does" % key)
    with Env(binary) as env:
        exec_start = [ln for ln in template.splitlines() if ln.startswith("ExecStart=")][0]
        program = exec_start.split("=", 1)[1].split()[0]
        unit = env.write("pytun@demo.service", template.replace("ExecStart=" + program, "ExecStart=" + env.binary))
        man = env.path("man", "man1")
        os.makedirs(man)
        shutil.copyfile(os.path.join(BUILD, "dist", "pytun.1"), os.path.join(man, "pytun.1"))
        r = subprocess.run([analyze, "verify", unit], capture_output=True, text=True,
                           env=dict(os.environ, MANPATH=env.path("man")))
        out = (r.stdout + r.stderr).strip()
        print(out)
        problems = [ln for ln in out.splitlines() if "pytun" in ln]
        check(r.returncode == 0 and not problems, "systemd-analyze verify pytun@demo.service: clean (%s)"
              % (problems or "no output about pytun"))
        bad = env.write("pytun@typo.service", open(unit).read().replace("ProtectSystem=strict", "ProtectSystm=strict"))
        r = subprocess.run([analyze, "verify", bad], capture_output=True, text=True,
                           env=dict(os.environ, MANPATH=env.path("man")))
        check("ProtectSystm" in r.stdout + r.stderr, "a misspelt key is reported: the check is real")
        # The exposure score systemd gives the hardening (lower is better; 10 is none at all).
        r = subprocess.run([analyze, "security", "--offline=yes", unit], capture_output=True, text=True)
        score = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout + r.stderr)
        if score:
            check(float(score.group(1)) <= 2.5, "systemd-analyze security: exposure %s (of 10)" % score.group(1))
        else:
            print("systemd-analyze security --offline not available here: %s" % (r.stderr.strip()[-200:]))


if __name__ == "__main__":
    raise SystemExit(main({"kubernetes": case_kubernetes, "systemd": case_systemd}))
