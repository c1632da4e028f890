#!/usr/bin/env python3
"""phone-route: time from a PBX's `queued` call event to the `route` it gets back, with an
available agent whose desktop accepts every offer at once.

  bench/phone-route.py --port CLIENT_PORT --phone PHONE_PORT --http HTTP_PORT
                       --token ADMIN_TOKEN [--calls 2000] [--warmup 100]

One PBX connection, one agent (voice capacity 1): each call is queued, offered, accepted,
routed, then ended (which frees the agent for the next). Prints one JSON line with the
latency queued -> route (median, p99, max, in ms) and calls per second.
"""
import argparse
import json
import socket
import statistics
import time
import urllib.request


def post(http, token, path, body):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (http, path),
                                 data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": "Bearer " + token})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def send(self, obj):
        self.s.sendall(json.dumps(obj).encode() + b"\n")

    def next(self):
        while b"\n" not in self.buf:
            chunk = self.s.recv(1 << 16)
            if not chunk:
                raise SystemExit("connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def wait(self, pred):
        while True:
            f = self.next()
            if pred(f):
                return f


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--phone", type=int, required=True)
    ap.add_argument("--http", type=int, required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=100)
    args = ap.parse_args()
    post(args.http, args.token, "/v1/queues", {"name": "benchphone"})
    post(args.http, args.token, "/v1/agents", {"login": "benchagent", "name": "Bench",
                                               "password": "bench-agent-pw", "extension": "100",
                                               "capacity": {"voice": 1}})
    agent = Conn(args.port)
    agent.send({"type": "hello", "role": "agent", "login": "benchagent",
                "password": "bench-agent-pw", "ref": 1})
    agent.wait(lambda f: f.get("ref") == 1)
    agent.send({"type": "presence", "status": "available", "ref": 2})
    agent.wait(lambda f: f.get("ref") == 2)
    pbx = Conn(args.phone)
    pbx.send({"type": "hello", "role": "pbx", "token": args.token, "ref": 1})
    assert pbx.wait(lambda f: f.get("ref") == 1)["type"] == "ok"

    lat = []
    t_start = None
    for i in range(args.warmup + args.calls):
        if i == args.warmup:
            t_start = time.time()
        cid = "bench-%d" % i
        t0 = time.perf_counter()
        pbx.send({"type": "call", "event": "queued", "call_id": cid, "queue": "benchphone",
                  "from": "+1555%07d" % i, "ref": "q%d" % i})
        offer = agent.wait(lambda f: f.get("type") == "offer")
        agent.send({"type": "accept", "offer": offer["offer"]})
        pbx.wait(lambda f: f.get("type") == "route" and f.get("call_id") == cid)
        if i >= args.warmup:
            lat.append((time.perf_counter() - t0) * 1000.0)
        pbx.send({"type": "call", "event": "answered", "call_id": cid, "ref": "a%d" % i})
        pbx.send({"type": "call", "event": "ended", "call_id": cid, "ref": "e%d" % i})
        pbx.wait(lambda f: f.get("ref") == "e%d" % i)
    elapsed = time.time() - t_start
    print(json.dumps({"label": "phone-route", "calls": args.calls,
                      "route_ms_p50": round(statistics.median(lat), 3),
                      "route_ms_p99": round(pct(lat, 99), 3),
                      "route_ms_max": round(max(lat), 3),
                      "calls_per_s": round(args.calls / elapsed, 1)}))


if __name__ == "__main__":
    main()
