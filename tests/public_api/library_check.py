# SPDX-License-Identifier: MIT
# What an embedder gets from the two shared libraries: every public header
# compiles on its own from an installed-like include dir (libpytun's alone,
# the connector's with libpytun's); both .so files export pytun:: only;
# libpytun.so loads no HTTP or ZIP library.
#
#   library_check.py headers CXX... -- ENGINE_HEADERS... -- CONNECTOR_HEADERS...
#   library_check.py symbols LIBPYTUN.so LIBPYTUN_CONNECTOR.so
#   library_check.py deps LIBPYTUN.so LIBPYTUN_CONNECTOR.so
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from testcheck import Failure, check  # noqa: E402

SKIP = 77

# What a dynamic symbol of ours may be called (nm -C): pytun:: itself, and the
# vtables, VTTs, typeinfo, thunks and guard variables of pytun:: entities (the
# same list as libpytun/libpytun.map).
ALLOWED = re.compile(r"^(vtable for |VTT for |typeinfo for |typeinfo name for |non-virtual thunk to |"
                     r"virtual thunk to |guard variable for )?pytun::")
# Loaded by libpytun.so, these would drag the status server's dependencies into
# every embedding program.
FORBIDDEN_IN_ENGINE = ("httplib", "libzip", "brotli", "bz2")


def case_headers(args):
    split = args.index("--")
    compiler = args[:split]
    rest = args[split + 1:]
    split = rest.index("--")
    engine, connector = rest[:split], rest[split + 1:]
    check(len(engine) >= 10 and len(connector) >= 4,
          "the header lists are given (%d libpytun, %d libpytun-connector)" % (len(engine), len(connector)))
    with tempfile.TemporaryDirectory(prefix="pytun-headers-") as tmp:
        for what, headers, present in (("libpytun", engine, engine),
                                       ("libpytun-connector", connector, engine + connector)):
            # An include dir as `meson install` makes it, holding only what the
            # library (and what it requires) installs.
            inc = os.path.join(tmp, what, "include")
            os.makedirs(os.path.join(inc, "pytun"))
            for h in present:
                shutil.copy(h, os.path.join(inc, "pytun"))
            for h in headers:
                name = "pytun/" + os.path.basename(h)
                source = os.path.join(tmp, what, os.path.basename(h) + ".cpp")
                with open(source, "w") as f:
                    f.write("#include <%s>\n" % name)
                r = subprocess.run(compiler + ["-std=c++20", "-fsyntax-only", "-I", inc, source],
                                   capture_output=True, text=True)
                check(r.returncode == 0, "<%s> compiles alone with -std=c++20 against %s's headers%s"
                      % (name, what, (":\n" + r.stderr[-2000:]) if r.returncode else ""))


def dynamic_symbols(library):
    r = subprocess.run(["nm", "-D", "--defined-only", "-C", library], capture_output=True, text=True)
    check(r.returncode == 0, "nm -D reads %s" % library)
    names = []
    for line in r.stdout.splitlines():
        parts = line.split(None, 2)  # value, type, name
        if len(parts) == 3:
            names.append(parts[2])
    return names


def case_symbols(args):
    for library in args:
        names = dynamic_symbols(library)
        ours = [n for n in names if ALLOWED.match(n)]
        other = [n for n in names if not ALLOWED.match(n)]
        check(len(ours) >= 20, "%s exports its API (%d pytun:: symbols)" % (os.path.basename(library), len(ours)))
        check(not other, "%s exports nothing but pytun:: (%d others%s)"
              % (os.path.basename(library), len(other), (": " + "; ".join(other[:40])) if other else ""))


def loaded_libraries(library):
    r = subprocess.run(["ldd", library], capture_output=True, text=True)
    check(r.returncode == 0, "ldd reads %s" % library)
    return [line.split()[0] for line in r.stdout.splitlines() if line.strip()]


def case_deps(args):
    engine, connector = args
    loaded = loaded_libraries(engine)
    bad = [lib for lib in loaded if any(f in lib for f in FORBIDDEN_IN_ENGINE)]
    check(not bad, "libpytun.so loads no HTTP or ZIP library (ldd: %s)" % " ".join(loaded))
    # The same look at the connector finds them: the check above can fail.
    loaded = loaded_libraries(connector)
    check(any("httplib" in lib for lib in loaded) and any("libzip" in lib for lib in loaded),
          "libpytun-connector.so does load cpp-httplib and libzip (ldd: %s)" % " ".join(loaded))
    check(any(os.path.basename(lib).startswith("libpytun.so") for lib in loaded),
          "libpytun-connector.so loads libpytun.so rather than a copy of the engine")


def main():
    if len(sys.argv) < 3:
        print(__doc__ or "usage: library_check.py headers|symbols|deps ...", file=sys.stderr)
        return 2
    case, args = sys.argv[1], sys.argv[2:]
    tools = {"headers": [], "symbols": ["nm"], "deps": ["ldd"]}[case]
    for tool in tools:
        if not shutil.which(tool):
            print("SKIP: %s not found (binutils / libc-bin)" % tool)
            return SKIP
    try:
        {"headers": case_headers, "symbols": case_symbols, "deps": case_deps}[case](args)
    except Failure as e:
        print("FAIL: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
