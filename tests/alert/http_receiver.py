#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Test webhook receiver on 127.0.0.1: checks HTTP basic auth, records each
# request (headers + body) as a JSON file, can answer 500 to the first N posts.
#
#   http_receiver.py --outdir DIR --ready FILE [--user U --password P] [--fail-first N]
import argparse
import base64
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

args = None
lock = threading.Lock()
state = {"posts": 0, "recorded": 0}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, fmt, *a):
        pass

    def answer(self, code):
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with lock:
            state["posts"] += 1
            n = state["posts"]
        with open(os.path.join(args.outdir, "attempts"), "a") as f:
            f.write("%d\n" % n)
        if args.user is not None:
            expected = "Basic " + base64.b64encode(("%s:%s" % (args.user, args.password)).encode()).decode()
            if self.headers.get("Authorization") != expected:
                return self.answer(401)
        if n <= args.fail_first:
            return self.answer(500)
        with lock:
            state["recorded"] += 1
            path = os.path.join(args.outdir, "post-%04d.json" % state["recorded"])
        record = {
            "path": self.path,
            "content_type": self.headers.get("Content-Type"),
            "authorization": self.headers.get("Authorization"),
            "body": body.decode("utf-8", errors="replace"),
        }
        with open(path + ".tmp", "w") as f:
            json.dump(record, f)
        os.rename(path + ".tmp", path)
        self.answer(200)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--outdir", required=True)
    p.add_argument("--ready", required=True)
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--fail-first", type=int, default=0)
    args = p.parse_args()
    os.makedirs(args.outdir, exist_ok=True)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(args.ready + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(args.ready + ".tmp", args.ready)
    server.serve_forever()
