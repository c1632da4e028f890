#!/usr/bin/env python3
"""idle-conns: opens N customer sessions on contactd's client listener, leaves them idle,
and reports the daemon's resident memory before and after (from /proc/PID/status).

  bench/idle-conns.py --port 7400 --pid PID [--n 10000] [--hello]

With --hello each connection says hello as a customer first (a chat widget left open);
without, connections stay before hello (they are closed after limits.hello_timeout_s).
"""
import argparse
import json
import resource
import socket
import time


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--hello", action="store_true")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.n + 1024), hard))
    before = rss_kb(args.pid)
    socks = []
    t0 = time.time()
    hello = json.dumps({"type": "hello", "role": "customer"}).encode() + b"\n"
    unread = []
    for i in range(args.n):
        s = socket.create_connection((args.host, args.port), timeout=60)
        if args.hello:
            s.sendall(hello)
            unread.append(s)
        socks.append(s)
        if len(unread) == 200:
            for x in unread:  # read the oks, so the daemon's buffers drain
                x.recv(4096)
            unread = []
    for x in unread:
        x.recv(4096)
    time.sleep(2)
    after = rss_kb(args.pid)
    print(json.dumps({"bench": "idle-conns", "conns": args.n, "hello": args.hello,
                      "rss_before_mb": round(before / 1024, 1),
                      "rss_after_mb": round(after / 1024, 1),
                      "kb_per_conn": round((after - before) / args.n, 2),
                      "open_s": round(time.time() - t0, 1)}))
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
