#!/usr/bin/env python3
"""lmtp-load: closed-loop LMTP senders against a running contactd.

Each sender is a process with one LMTP connection that pipelines MAIL, RCPT and DATA,
sends a mail of --size bytes and waits for the per-recipient 250 (given only after the
commit), then starts the next. Latency is from the first byte of MAIL to that 250.

  bench/lmtp-load.py --port P --http H --token T [--size 4096] [--senders 8]
                     [--seconds 10] [--customers 1000]

Prints one JSON line: {size, senders, mails, mails_per_s, p50_ms, p99_ms, errors}.
"""
import argparse
import json
import multiprocessing
import socket
import time
import urllib.request


def setup(http, token, inbox):
    for path, body in (("/v1/queues", {"name": "bench"}),
                       ("/v1/inboxes", {"address": inbox, "queue": "bench"})):
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (http, path),
                                     data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": "Bearer " + token,
                                              "Content-Type": "application/json"})
        try:
            urllib.request.urlopen(req, timeout=10).read()
        except urllib.error.HTTPError as e:
            if e.code != 409:
                raise


def reply(sock, buf):
    """Reads one (multi-line) reply; returns (code, rest of the buffer)."""
    while True:
        while b"\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise EOFError("closed")
            buf += chunk
        line, buf = buf.split(b"\r\n", 1)
        if line[3:4] != b"-":
            return int(line[:3]), buf


def sender(args, idx, deadline, q):
    sock = socket.create_connection(("127.0.0.1", args.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = b""
    _, buf = reply(sock, buf)
    sock.sendall(b"LHLO bench\r\n")
    _, buf = reply(sock, buf)
    pad_line = b"x" * 74 + b"\r\n"
    lat, errors, n = [], 0, 0
    while time.time() < deadline:
        n += 1
        cust = "c%d@bench.example" % ((idx * 7919 + n) % args.customers)
        head = ("From: Customer <%s>\r\nTo: %s\r\nSubject: bench %d-%d\r\n"
                "Message-ID: <%d.%d.%f@bench.example>\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\n"
                "Content-Type: text/plain; charset=utf-8\r\n\r\n"
                % (cust, args.inbox, idx, n, idx, n, time.time())).encode()
        body = pad_line * max(1, (args.size - len(head)) // len(pad_line))
        t0 = time.perf_counter()
        sock.sendall(("MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n" % (cust, args.inbox)).encode())
        codes = []
        for _ in range(3):
            c, buf = reply(sock, buf)
            codes.append(c)
        if codes != [250, 250, 354]:
            errors += 1
            sock.sendall(b"RSET\r\n")
            _, buf = reply(sock, buf)
            continue
        sock.sendall(head + body + b".\r\n")
        c, buf = reply(sock, buf)
        if c == 250:
            lat.append(time.perf_counter() - t0)
        else:
            errors += 1
    sock.sendall(b"QUIT\r\n")
    sock.close()
    q.put((lat, errors))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--http", type=int, required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--senders", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--customers", type=int, default=1000)
    ap.add_argument("--inbox", default="bench@example.com")
    args = ap.parse_args()
    setup(args.http, args.token, args.inbox)
    q = multiprocessing.Queue()
    start = time.time() + 0.5
    deadline = start + args.seconds
    procs = [multiprocessing.Process(target=sender, args=(args, i, deadline, q))
             for i in range(args.senders)]
    for p in procs:
        p.start()
    lat, errors = [], 0
    for _ in procs:
        l, e = q.get()
        lat += l
        errors += e
    for p in procs:
        p.join()
    lat.sort()
    pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1e3 if lat else None
    print(json.dumps({"size": args.size, "senders": args.senders, "mails": len(lat),
                      "mails_per_s": round(len(lat) / args.seconds, 1),
                      "p50_ms": round(pct(0.50), 2) if lat else None,
                      "p99_ms": round(pct(0.99), 2) if lat else None, "errors": errors}))


if __name__ == "__main__":
    main()
