"""Webhooks over real HTTP: a receiver verifies every X-Contactd-Signature with the shared
secret; events arrive one per POST in log order; failed deliveries are retried with
backoff until answered 2xx and nothing is skipped; a restart resumes from the durable
cursor; SIGHUP adds URLs (from the current end of the log) and removes them."""
import hashlib
import hmac
import http.server
import json
import os
import re
import signal
import threading
import time

import harness
from harness import DaemonTest, Ndjson, free_port

SECRET = "webhook-test-secret"


class Receiver:
    """An HTTP server that records POSTs; the first `fail` of them are answered 500."""

    def __init__(self, fail=0, secret=SECRET, port=0, hold=False):
        self.posts = []          # every attempt: (event id header, body dict, status sent)
        # hold: the first POST is recorded but not answered until `release` is set
        self.hold = hold
        self.release = threading.Event()
        self.delivered = []      # bodies answered 200, in order
        self.bad_signatures = []
        self.fail = fail
        self.secret = secret.encode()
        self.lock = threading.Lock()
        rec = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if rec.hold:
                    rec.hold = False
                    with rec.lock:
                        rec.posts.append((self.headers.get("X-Contactd-Event-Id"),
                                          json.loads(body), None,
                                          self.headers.get("Content-Type"), time.time()))
                    rec.release.wait(30)
                    self.close_connection = True
                    return
                sig = self.headers.get("X-Contactd-Signature", "")
                want = "sha256=" + hmac.new(rec.secret, body, hashlib.sha256).hexdigest()
                with rec.lock:
                    ok_sig = hmac.compare_digest(sig, want)
                    if not ok_sig:
                        rec.bad_signatures.append((sig, body))
                    status = 500 if rec.fail > 0 else 200
                    if rec.fail > 0:
                        rec.fail -= 1
                    ev = json.loads(body)
                    rec.posts.append((self.headers.get("X-Contactd-Event-Id"), ev, status,
                                      self.headers.get("Content-Type"), time.time()))
                    if status == 200:
                        rec.delivered.append(ev)
                reply = b'{"ok":true}' if status == 200 else b"oops"
                self.send_response(status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = "http://127.0.0.1:%d/hook" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait(self, n, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                if len(self.delivered) >= n:
                    return list(self.delivered)
            time.sleep(0.05)
        raise AssertionError("only %d of %d delivered: %r" % (len(self.delivered), n,
                                                               self.delivered))

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Webhooks(DaemonTest):
    def setUp(self):
        super().setUp()
        self.receivers = []
        self.clients = []

    def tearDown(self):
        for c in self.clients:
            c.close()
        for r in self.receivers:
            r.close()
        super().tearDown()

    def receiver(self, **kw):
        r = Receiver(**kw)
        self.receivers.append(r)
        return r

    def start(self, *urls, **kw):
        self.d = self.daemon(extra={"webhooks.urls": ", ".join(urls),
                                    "webhooks.secret": SECRET}, **kw).start()
        for u in urls:
            self.d.wait_log(r"event=webhook_started url=%s" % re.escape(u))
        return self.d

    def db(self, sql):
        return harness.psql(sql, dbname=self.d.conninfo.split("dbname=")[1])

    def emit(self, n, kind="test.ev"):
        self.db("INSERT INTO events_log (kind, data) SELECT '%s', jsonb_build_object('n', g) "
                "FROM generate_series(1, %d) g" % (kind, n))

    def check_signed(self, rec):
        self.assertEqual(rec.bad_signatures, [])
        for eid, ev, _, ctype, _ in rec.posts:
            self.assertEqual(int(eid), ev["id"])
            self.assertEqual(ctype, "application/json")
            self.assertEqual(sorted(ev), ["at", "data", "id", "kind"])

    def test_chat_reply_signed_in_order(self):
        rec = self.receiver()
        port = free_port()
        self.d = self.daemon(listen={"client": "127.0.0.1:%d" % port},
                             extra={"webhooks.urls": rec.url,
                                    "webhooks.secret": SECRET}).start()
        self.d.wait_log(r"event=webhook_started")
        token = self.d.admin_token()
        for path, body in (("/v1/skills", {"name": "billing"}),
                           ("/v1/queues", {"name": "billing", "skills": {"billing": 1}}),
                           ("/v1/agents", {"login": "alice", "name": "Alice",
                                           "password": "alice-password",
                                           "skills": {"billing": 3}})):
            self.assertEqual(self.d.request("POST", path, body, token=token)[0], 201)
        a = Ndjson(port)
        c = Ndjson(port)
        self.clients += [a, c]
        a.request({"type": "hello", "role": "agent", "login": "alice",
                   "password": "alice-password"})
        a.request({"type": "presence", "status": "available"})
        c.request({"type": "hello", "role": "customer", "name": "Ana", "queue": "billing"})
        conv = c.request({"type": "message", "body": "hello?"})["conversation"]
        offer = a.event("offer")
        a.request({"type": "accept", "offer": offer["offer"]})
        a.event("assigned")
        a.request({"type": "message", "conversation": conv, "body": "How can I help?"})
        deadline = time.time() + 20
        while not any(e["kind"] == "message.out" for e in rec.delivered):
            self.assertLess(time.time(), deadline, rec.delivered)
            time.sleep(0.05)
        got = list(rec.delivered)
        self.check_signed(rec)
        ids = [e["id"] for e in got]
        self.assertEqual(ids, sorted(set(ids)))
        log = self.db("SELECT string_agg(id::text, ',' ORDER BY id) FROM events_log "
                      "WHERE id <= %d" % ids[-1])
        self.assertEqual(ids, [int(x) for x in log.split(",")][-len(ids):])
        kinds = [e["kind"] for e in got]
        for k in ("agent.status", "conversation.enqueued", "conversation.assigned",
                  "message.out"):
            self.assertIn(k, kinds)
        out = next(e for e in got if e["kind"] == "message.out")["data"]
        self.assertEqual((out["conversation"], out["body"], out["channel"]),
                         (conv, "How can I help?", "chat"))
        self.assertIsInstance(out["customer"], int)

    def test_retried_with_backoff_nothing_skipped(self):
        rec = self.receiver(fail=3)
        self.start(rec.url)
        self.emit(5)
        got = rec.wait(5, timeout=30)
        self.check_signed(rec)
        self.assertEqual([e["data"]["n"] for e in got], [1, 2, 3, 4, 5])
        attempts = [p for p in rec.posts if p[1]["id"] == got[0]["id"]]
        self.assertEqual([p[2] for p in attempts], [500, 500, 500, 200])
        gaps = [b[4] - a[4] for a, b in zip(attempts, attempts[1:])]
        # 1 s, 2 s, 4 s (+-20 %)
        for gap, want in zip(gaps, (1.0, 2.0, 4.0)):
            self.assertGreater(gap, want * 0.75, gaps)
            self.assertLess(gap, want * 1.25 + 0.5, gaps)
        self.assertEqual(len(rec.posts), 8)  # 4 attempts of the first, then one each
        log = self.d.log()
        for n in (1, 2, 3):
            self.assertRegex(log, r"event=webhook_failed url=%s event=%d status=500 attempt=%d "
                             r"retry_in_ms=\d+" % (re.escape(rec.url), got[0]["id"], n))
        self.assertNotIn(SECRET, log)
        self.assertEqual(self.db("SELECT last_id, attempts FROM webhook_cursors"),
                         "%d|0" % got[-1]["id"])
        status, metrics, _ = self.d.request("GET", "/metrics")
        self.assertIn("contactd_webhook_deliveries_total 5", metrics)
        self.assertIn("contactd_webhook_failures_total 3", metrics)

    def test_receiver_down_then_up(self):
        rec = self.receiver()
        port = rec.server.server_address[1]
        rec.close()
        self.receivers.remove(rec)
        self.start(rec.url)
        self.emit(3)
        self.d.wait_log(r"event=webhook_failed .*status=0 attempt=2", timeout=15)
        # the receiver comes up on the same port: everything arrives, in order
        rec2 = self.receiver(port=port)
        got = rec2.wait(3, timeout=30)
        self.assertEqual([e["data"]["n"] for e in got], [1, 2, 3])

    def test_restart_resumes_from_cursor(self):
        rec = self.receiver()
        d = self.start(rec.url)
        self.emit(3, "test.before")
        first = rec.wait(3)
        self.assertEqual(d.stop(), 0)
        self.emit(4, "test.while_down")
        d.start()
        got = rec.wait(7)
        self.check_signed(rec)
        self.assertEqual([e["kind"] for e in got], ["test.before"] * 3 + ["test.while_down"] * 4)
        self.assertEqual(got[:3], first)
        ids = [e["id"] for e in got]
        self.assertEqual(ids, sorted(set(ids)))

    def test_at_least_once_across_a_crash(self):
        # the receiver has the POST but the daemon dies before the 2xx: sent again
        rec = self.receiver(hold=True)
        d = self.start(rec.url)
        self.emit(1, "test.crash")
        deadline = time.time() + 10
        while not rec.posts:
            self.assertLess(time.time(), deadline, "no POST")
            time.sleep(0.05)
        held = rec.posts[0][1]["id"]
        d.kill(signal.SIGKILL)
        d.proc.wait(10)
        rec.release.set()
        self.emit(1, "test.after")
        d.start()
        got = rec.wait(2)
        self.assertEqual([(e["id"], e["kind"]) for e in got][:1], [(held, "test.crash")])
        self.assertEqual(got[1]["kind"], "test.after")
        self.assertEqual([p[1]["id"] for p in rec.posts].count(held), 2)
        self.check_signed(rec)
        deadline = time.time() + 5
        while self.db("SELECT last_id FROM webhook_cursors") != str(got[1]["id"]):
            self.assertLess(time.time(), deadline)
            time.sleep(0.05)

    def test_sms_reply_reaches_receiver(self):
        rec = self.receiver()
        port = free_port()
        self.d = self.daemon(listen={"client": "127.0.0.1:%d" % port},
                             extra={"webhooks.urls": rec.url,
                                    "webhooks.secret": SECRET}).start()
        self.d.wait_log(r"event=webhook_started")
        token = self.d.admin_token()
        for path, body in (("/v1/skills", {"name": "billing"}),
                           ("/v1/queues", {"name": "billing", "skills": {"billing": 1}}),
                           ("/v1/agents", {"login": "alice", "name": "Alice",
                                           "password": "alice-password",
                                           "skills": {"billing": 3}})):
            self.assertEqual(self.d.request("POST", path, body, token=token)[0], 201)
        a = Ndjson(port)
        self.clients.append(a)
        a.request({"type": "hello", "role": "agent", "login": "alice",
                   "password": "alice-password"})
        a.request({"type": "presence", "status": "available"})
        status, ev, _ = self.d.request("POST", "/v1/events", {
            "channel": "sms", "from": {"phone": "+34600000001", "name": "Ana"},
            "body": "where is my parcel?", "external_id": "sms-in-1", "queue": "billing"},
            token=token)
        self.assertEqual(status, 201, ev)
        conv = ev["conversation"]
        offer = a.event("offer")
        self.assertEqual(offer["channel"], "sms")
        a.request({"type": "accept", "offer": offer["offer"]})
        a.event("assigned")
        r = a.request({"type": "message", "conversation": conv, "body": "On its way!"})
        self.assertEqual(r["type"], "ok", r)
        # and one through the HTTP API (author: system)
        status, api, _ = self.d.request("POST", "/v1/conversations/%d/messages" % conv,
                                        {"body": "Tracking: X1"}, token=token)
        self.assertEqual(status, 201, api)
        deadline = time.time() + 20
        while sum(e["kind"] == "message.out" for e in rec.delivered) < 2:
            self.assertLess(time.time(), deadline, rec.delivered)
            time.sleep(0.05)
        self.check_signed(rec)
        outs = [e["data"] for e in rec.delivered if e["kind"] == "message.out"]
        first, second = outs
        self.assertEqual((first["conversation"], first["message"], first["channel"],
                          first["body"]), (conv, r["message"], "sms", "On its way!"))
        self.assertEqual(first["to"], {"name": "Ana", "phone": "+34600000001",
                                       "email": None, "external_id": None})
        self.assertEqual(first["in_reply_to"], {"message": ev["message"],
                                                "external_id": "sms-in-1"})
        self.assertEqual((first["author"]["kind"], first["author"]["name"]), ("agent", "Alice"))
        self.assertEqual(first["customer"], ev["customer"])
        self.assertEqual((second["body"], second["author"]["kind"], second["to"]["phone"]),
                         ("Tracking: X1", "system", "+34600000001"))
        log = self.d.log()
        self.assertRegex(log, r"event=outbound_queued channel=sms conversation=%d message=%d "
                         r"via=webhooks" % (conv, r["message"]))
        self.assertNotIn("outbound_unserved", log)
        for line in log.splitlines():  # no message bodies above debug
            if "On its way!" in line:
                self.assertIn("level=debug", line)
        _, metrics, _ = self.d.request("GET", "/metrics")
        self.assertIn("contactd_webhook_replies_total 2", metrics)

    def test_credentials_in_url_not_logged(self):
        rec = self.receiver(fail=1)
        url = rec.url.replace("http://", "http://hook:s3cret-pw@") + "?key=tok3n-value"
        self.d = self.daemon(extra={"webhooks.urls": url, "webhooks.secret": SECRET}).start()
        self.d.wait_log(r"event=webhook_started url=\"?http://\*\*\*@127\.0\.0\.1:\d+/hook\?\*\*\*")
        self.emit(1)
        self.assertEqual(rec.wait(1)[0]["kind"], "test.ev")
        log = self.d.log()
        self.assertIn("event=webhook_failed", log)
        for secret in ("s3cret-pw", "tok3n-value", SECRET):
            self.assertNotIn(secret, log)

    def test_reload_adds_and_removes_urls(self):
        r1 = self.receiver()
        r2 = self.receiver()
        d = self.start(r1.url)
        self.emit(2, "test.one")
        r1.wait(2)
        d.extra["webhooks.urls"] = r2.url
        d.write_config()
        d.kill(signal.SIGHUP)
        d.wait_log(r"event=webhook_started url=%s" % re.escape(r2.url))
        d.wait_log(r"event=webhook_stopped url=%s" % re.escape(r1.url))
        self.emit(2, "test.two")
        got = r2.wait(2)
        self.assertEqual([e["kind"] for e in got], ["test.two"] * 2)  # from the end of the log
        time.sleep(0.5)
        self.assertEqual(len(r1.delivered), 2)
        self.assertEqual(self.db("SELECT string_agg(url, ',') FROM webhook_cursors"), r2.url)
        # a new secret signs the next POST
        d.extra["webhooks.secret"] = "another-secret"
        d.write_config()
        r2.secret = b"another-secret"
        d.kill(signal.SIGHUP)
        d.wait_log(r"event=reloaded", timeout=10)
        time.sleep(0.3)
        self.emit(1, "test.three")
        r2.wait(3)
        self.check_signed(r2)


if __name__ == "__main__":
    harness.main()
