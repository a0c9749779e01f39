#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Test SMTP server (aiosmtpd) on 127.0.0.1: plain, STARTTLS or implicit TLS,
# optional AUTH, one refused recipient; writes each message to a JSON file.
#
#   smtp_server.py mkcert DIR        throwaway CA + server certificate for 127.0.0.1
#   smtp_server.py serve --mode plain|starttls|ssl --outdir DIR --ready FILE
#                  [--cert PEM --key PEM] [--user U --password P] [--refuse ADDR]
# Exit 77 when aiosmtpd or openssl is missing (the test is then skipped).
import argparse
import asyncio
import json
import os
import shutil
import ssl
import subprocess
import sys


def mkcert(d):
    if shutil.which("openssl") is None:
        print("openssl not found", file=sys.stderr)
        sys.exit(77)
    os.makedirs(d, exist_ok=True)

    def run(*args):
        subprocess.run(["openssl", *args], check=True, cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    # EC keys are quick to make; the IP SAN is what curl checks for 127.0.0.1.
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=pytun test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    with open(os.path.join(d, "server.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "server.ext")


def serve(args):
    try:
        from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
    except ImportError:
        print("aiosmtpd not found (install python3-aiosmtpd)", file=sys.stderr)
        sys.exit(77)

    os.makedirs(args.outdir, exist_ok=True)
    counter = [0]

    class Handler:
        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            if args.refuse and address.lower() == args.refuse.lower():
                return "550 5.1.1 <%s>: Recipient address rejected: User unknown" % address
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, server, session, envelope):
            counter[0] += 1
            record = {
                "mail_from": envelope.mail_from,
                "rcpt_tos": envelope.rcpt_tos,
                "data": envelope.content.decode("utf-8", errors="replace"),
                "authenticated": bool(session.authenticated),
                "tls": session.ssl is not None or args.mode == "ssl",
            }
            path = os.path.join(args.outdir, "msg-%04d.json" % counter[0])
            with open(path + ".tmp", "w") as f:
                json.dump(record, f)
            os.rename(path + ".tmp", path)
            return "250 Message accepted for delivery"

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (isinstance(auth_data, LoginPassword)
              and auth_data.login.decode() == args.user
              and auth_data.password.decode() == args.password)
        # handled=False: aiosmtpd then answers 535 itself (the default sends nothing).
        return AuthResult(success=ok, handled=False)

    ctx = None
    if args.mode in ("starttls", "ssl"):
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(args.cert, args.key)

    def factory():
        kw = dict(hostname="pytun-test-smtp", ident="pytun test SMTP")
        if args.user:
            kw.update(authenticator=authenticator, auth_required=True,
                      auth_require_tls=(args.mode == "starttls"))
        if args.mode == "starttls":
            kw.update(tls_context=ctx, require_starttls=True)
        return SMTP(Handler(), **kw)

    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(factory, host="127.0.0.1", port=0,
                                          ssl=ctx if args.mode == "ssl" else None)
        port = server.sockets[0].getsockname()[1]
        with open(args.ready + ".tmp", "w") as f:
            f.write(str(port))
        os.rename(args.ready + ".tmp", args.ready)
        await server.serve_forever()

    asyncio.run(main())


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "mkcert":
        mkcert(sys.argv[2])
        sys.exit(0)
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=["serve"])
    p.add_argument("--mode", choices=["plain", "starttls", "ssl"], default="plain")
    p.add_argument("--outdir", required=True)
    p.add_argument("--ready", required=True)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--refuse")
    serve(p.parse_args())
