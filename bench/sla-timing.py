#!/usr/bin/env python3
"""sla-timing: how late SLA breaches reach a supervisor, against the breach time (`due`)
that the event itself carries.

  bench/sla-timing.py --port CLIENT_PORT --http HTTP_PORT --token ADMIN_TOKEN
                      [--n 500] [--budget 5] [--spread 4]

Creates an SLA policy (first_response_s = BUDGET, warn at 50 %) and a queue nobody serves,
subscribes a supervisor to `sla`, opens N conversations spread over SPREAD seconds, and
waits for every breach. Prints one JSON line: breaches received, duplicates, and lateness
(event arrival - due) median / p99 / max in ms. Warnings are counted, not timed (their
time is not in the event). Run it through bench/run-sla-timing.sh.
"""
import argparse
import datetime
import json
import select
import socket
import statistics
import sys
import time
import urllib.request


def post(http, token, path, body):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (http, path),
                                 data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": "Bearer " + token,
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def send(self, obj):
        self.s.sendall(json.dumps(obj).encode() + b"\n")

    def frames(self):
        """Frames available now (non-blocking after one recv)."""
        chunk = self.s.recv(1 << 16)
        if not chunk:
            raise SystemExit("connection closed")
        self.buf += chunk
        out = []
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            out.append(json.loads(line))
        return out

    def wait_ref(self, ref):
        while True:
            for f in self.frames():
                if f.get("ref") == ref:
                    return f


def parse_ts(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--http", type=int, required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--budget", type=int, default=5)
    ap.add_argument("--spread", type=float, default=4.0)
    args = ap.parse_args()

    post(args.http, args.token, "/v1/sla-policies",
         {"name": "benchsla", "first_response_s": args.budget, "warn_pct": 50})
    post(args.http, args.token, "/v1/queues", {"name": "benchsla", "sla_policy": "benchsla"})
    post(args.http, args.token, "/v1/agents", {"login": "benchsup", "name": "Bench Sup",
                                               "password": "bench-sup-pw", "role": "supervisor"})
    sup = Conn(args.port)
    sup.send({"type": "hello", "role": "agent", "login": "benchsup", "password": "bench-sup-pw",
              "ref": 1})
    assert sup.wait_ref(1)["type"] == "ok"
    sup.send({"type": "subscribe", "topics": ["sla"], "ref": 2})
    assert sup.wait_ref(2)["type"] == "ok"

    customers = []
    for i in range(args.n):
        c = Conn(args.port)
        c.send({"type": "hello", "role": "customer", "queue": "benchsla", "ref": 1})
        customers.append(c)
    for c in customers:
        c.wait_ref(1)
    gap = args.spread / max(1, args.n)
    t0 = time.time()
    for i, c in enumerate(customers):
        time.sleep(max(0.0, t0 + i * gap - time.time()))
        c.send({"type": "message", "body": "bench %d" % i, "ref": 2})
    for c in customers:
        c.wait_ref(2)

    late, seen, warnings, dups = [], {}, 0, 0
    deadline = time.time() + args.spread + args.budget + 15
    while len(seen) < args.n and time.time() < deadline:
        r, _, _ = select.select([sup.s], [], [], 0.5)
        if not r:
            continue
        now = time.time()
        for f in sup.frames():
            if f.get("type") != "sla":
                continue
            if f["state"] == "warning":
                warnings += 1
                continue
            if f["conversation"] in seen:
                dups += 1
                continue
            seen[f["conversation"]] = True
            late.append((now - parse_ts(f["due"])) * 1000.0)
    res = {"label": "sla-timing", "n": args.n, "budget_s": args.budget,
           "breaches": len(seen), "warnings": warnings, "duplicates": dups}
    if late:
        res.update({"late_ms_p50": round(statistics.median(late), 2),
                    "late_ms_p99": round(pct(late, 99), 2),
                    "late_ms_max": round(max(late), 2),
                    "late_ms_min": round(min(late), 2)})
    print(json.dumps(res))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
