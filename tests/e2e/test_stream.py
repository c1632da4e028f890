"""GET /v1/stream (SSE) over real sockets: the events of a chat exchange, Last-Event-ID
resume without gap or duplicate, in-flight transactions and rollbacks in the log, auth,
slow consumers dropped with bounded memory, streams ended on SIGTERM."""
import json
import os
import signal
import socket
import subprocess
import time

import harness
from harness import DaemonTest, Ndjson, free_port


class Sse:
    """A raw HTTP/1.1 SSE client (chunked decoding, event parsing)."""

    def __init__(self, port, token=None, last_id=None, query="", rcvbuf=None, timeout=10):
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        req = "GET /v1/stream%s HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n" % query
        if token:
            req += "Authorization: Bearer %s\r\n" % token
        if last_id is not None:
            req += "Last-Event-ID: %s\r\n" % last_id
        self.sock.sendall((req + "\r\n").encode())
        self.raw = b""
        self.text = b""
        self.eof = False
        while b"\r\n\r\n" not in self.raw:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError("closed before headers: %r" % self.raw)
            self.raw += chunk
        head, self.raw = self.raw.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            self.headers[k.strip().lower()] = v.strip()
        self.chunked = self.headers.get("transfer-encoding") == "chunked"
        self.body_len = int(self.headers.get("content-length", "0") or 0)

    def body(self):
        """The whole body of a non-stream (error) reply."""
        while len(self.raw) < self.body_len:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.raw += chunk
        return json.loads(self.raw[:self.body_len])

    def _decode(self):
        while True:
            i = self.raw.find(b"\r\n")
            if i < 0:
                return
            size = int(self.raw[:i].split(b";")[0], 16)
            if size == 0:
                self.eof = True
                return
            if len(self.raw) < i + 2 + size + 2:
                return
            self.text += self.raw[i + 2:i + 2 + size]
            self.raw = self.raw[i + 2 + size + 2:]

    def _fill(self, timeout):
        self.sock.settimeout(timeout)
        chunk = self.sock.recv(65536)
        if not chunk:
            self.eof = True
            return
        self.raw += chunk
        self._decode()

    def next_block(self, timeout=10):
        """The next SSE block as a dict of fields (comments under ':'), or None at EOF."""
        deadline = time.time() + timeout
        while b"\n\n" not in self.text:
            if self.eof:
                return None
            left = deadline - time.time()
            if left <= 0:
                raise socket.timeout("no SSE block")
            self._fill(left)
        block, self.text = self.text.split(b"\n\n", 1)
        out = {}
        for line in block.decode().split("\n"):
            k, _, v = line.partition(":")
            out[k] = v[1:] if v.startswith(" ") else v
        return out

    def event(self, timeout=10):
        """The next event {id, event, data (parsed)}; skips comments and retry blocks."""
        deadline = time.time() + timeout
        while True:
            b = self.next_block(max(0.05, deadline - time.time()))
            if b is None:
                return None
            if "data" in b:
                return {"id": int(b["id"]), "event": b["event"], "data": json.loads(b["data"])}

    def events_until(self, pred, timeout=15):
        out = []
        deadline = time.time() + timeout
        while time.time() < deadline:
            e = self.event(max(0.05, deadline - time.time()))
            if e is None:
                break
            out.append(e)
            if pred(e):
                return out
        raise AssertionError("condition not met; got %r" % [(e["id"], e["event"]) for e in out])

    def close(self):
        self.sock.close()


class Stream(DaemonTest):
    def setUp(self):
        super().setUp()
        self.clients = []
        self.port = free_port()
        self.asan_options = os.environ.get("ASAN_OPTIONS")
        if self.asan_options is not None and self._testMethodName.startswith("test_slow"):
            # ASan keeps freed memory in a 256 MB quarantine: RSS would measure that, not us
            os.environ["ASAN_OPTIONS"] = self.asan_options + ":quarantine_size_mb=8"
        try:
            self.d = self.daemon(listen={"client": "127.0.0.1:%d" % self.port}).start()
        finally:
            if self.asan_options is not None:
                os.environ["ASAN_OPTIONS"] = self.asan_options
        self.token = self.d.admin_token()
        self.reader = self.d.admin_token("conversations:read")
        self.post("/v1/skills", {"name": "billing"})
        self.post("/v1/queues", {"name": "billing", "skills": {"billing": 1}})

    def tearDown(self):
        for c in self.clients:
            c.close()
        super().tearDown()

    def post(self, path, body):
        status, obj, _ = self.d.request("POST", path, body, token=self.token)
        self.assertEqual(status, 201, obj)
        return obj

    def db(self, sql):
        return harness.psql(sql, dbname=self.d.conninfo.split("dbname=")[1])

    def sse(self, **kw):
        s = Sse(self.d.http_port, **kw)
        self.clients.append(s)
        return s

    def connect(self):
        c = Ndjson(self.port)
        self.clients.append(c)
        return c

    def agent(self, login):
        self.post("/v1/agents", {"login": login, "name": login.title(),
                                 "password": login + "-password", "skills": {"billing": 3}})
        a = self.connect()
        self.assertEqual(a.request({"type": "hello", "role": "agent", "login": login,
                                    "password": login + "-password"})["type"], "ok")
        self.assertEqual(a.request({"type": "presence", "status": "available"})["type"], "ok")
        return a

    def log_ids(self, after=0):
        rows = self.db("SELECT id || ' ' || kind FROM events_log WHERE id > %d ORDER BY id"
                       % after)
        return [(int(r.split()[0]), r.split()[1]) for r in rows.split("\n") if r]

    def test_a_long_customer_message_is_cut_on_the_stream_not_in_the_store(self):
        s = self.sse(token=self.reader, query="?after=0")
        c = self.connect()
        self.assertEqual(c.request({"type": "hello", "role": "customer", "name": "Long",
                                    "queue": "billing"})["type"], "ok")
        body = "é" * 5000 + "x" * 15000  # cut by characters, not bytes
        r = c.request({"type": "message", "body": body})
        self.assertEqual(r["type"], "ok")
        got = s.events_until(lambda e: e["event"] == "message.in")
        m_in = got[-1]["data"]["data"]
        self.assertEqual(m_in["message"], r["message"])
        self.assertEqual(m_in["body"], body[:16384])
        self.assertIs(m_in["body_truncated"], True)
        s.close()
        stored = self.db("SELECT length(body) FROM messages WHERE id = %d" % r["message"])
        self.assertEqual(stored.strip(), "20000")

    def test_chat_exchange_then_resume_exactly(self):
        s = self.sse(token=self.reader, query="?after=0")
        self.assertEqual(s.status, 200)
        self.assertTrue(s.headers["content-type"].startswith("text/event-stream"))
        alice = self.agent("alice")
        c = self.connect()
        self.assertEqual(c.request({"type": "hello", "role": "customer", "name": "Ana",
                                    "queue": "billing"})["type"], "ok")
        r = c.request({"type": "message", "body": "my invoice"})
        conv = r["conversation"]
        offer = alice.event("offer")
        self.assertEqual(alice.request({"type": "accept", "offer": offer["offer"]})["type"], "ok")
        got = s.events_until(lambda e: e["event"] == "conversation.assigned")
        kinds = [e["event"] for e in got]
        for k in ("agent.status", "conversation.enqueued", "conversation.offered",
                  "conversation.assigned"):
            self.assertIn(k, kinds)
        self.assertIn("message.in", kinds)
        m_in = next(e for e in got if e["event"] == "message.in")["data"]["data"]
        self.assertEqual((m_in["conversation"], m_in["message"], m_in["channel"], m_in["body"]),
                         (conv, r["message"], "chat", "my invoice"))
        self.assertIs(m_in["body_truncated"], False)
        enq = next(e for e in got if e["event"] == "conversation.enqueued")["data"]["data"]
        self.assertEqual(enq["conversation"], conv)
        self.assertIn("queue", enq["data"])
        for e in got:  # data is the whole event {id, kind, at, data}
            self.assertEqual((e["data"]["id"], e["data"]["kind"]), (e["id"], e["event"]))
            self.assertIn("at", e["data"])
        # the stream is the log, in order, nothing missing
        self.assertEqual([(e["id"], e["event"]) for e in got], self.log_ids()[:len(got)])
        last = got[-1]["id"]
        s.close()

        # while nobody listens: a reply, a customer message, a resolve
        self.assertEqual(alice.request({"type": "message", "conversation": conv,
                                        "body": "Fixed!"})["type"], "ok")
        c.request({"type": "message", "body": "thanks"})
        self.assertEqual(alice.request({"type": "resolve", "conversation": conv,
                                        "disposition": "fixed"})["type"], "ok")
        time.sleep(0.3)
        missed = self.log_ids(last)
        self.assertTrue(any(k == "message.out" for _, k in missed), missed)
        self.assertTrue(any(k == "conversation.resolved" for _, k in missed), missed)

        s2 = self.sse(token=self.reader, last_id=last)
        again = s2.events_until(lambda e: e["id"] >= missed[-1][0])
        self.assertEqual([(e["id"], e["event"]) for e in again], missed)
        out = next(e for e in again if e["event"] == "message.out")["data"]["data"]
        self.assertEqual((out["conversation"], out["body"], out["channel"], out["author"]["kind"]),
                         (conv, "Fixed!", "chat", "agent"))
        # and it goes on live: a new event arrives once, after the missed ones
        alice.request({"type": "presence", "status": "away"})
        e = s2.event()
        self.assertEqual((e["event"], e["data"]["data"]["status"]), ("agent.status", "away"))
        self.assertGreater(e["id"], missed[-1][0])

    def test_api_channel_reply_without_webhooks_is_on_the_stream(self):
        # no webhooks.urls: replies on an sms conversation are stored, on the stream, and
        # the missing URL is said once (never outbound_unserved)
        status, ev, _ = self.d.request("POST", "/v1/events", {
            "channel": "sms", "from": {"phone": "+34600000002"}, "body": "hi",
            "external_id": "in-1", "queue": "billing"}, token=self.token)
        self.assertEqual(status, 201, ev)
        conv = ev["conversation"]
        s = self.sse(token=self.reader, query="?after=0")
        ids = []
        for body in ("first reply", "second reply"):
            status, r, _ = self.d.request("POST", "/v1/conversations/%d/messages" % conv,
                                          {"body": body}, token=self.token)
            self.assertEqual(status, 201, r)
            ids.append(r["message"]["id"])
        got = s.events_until(lambda e: e["event"] == "message.out" and
                             e["data"]["data"]["message"] == ids[1])
        outs = [e["data"]["data"] for e in got if e["event"] == "message.out"]
        self.assertEqual([(o["message"], o["body"], o["channel"], o["to"]["phone"])
                          for o in outs],
                         [(ids[0], "first reply", "sms", "+34600000002"),
                          (ids[1], "second reply", "sms", "+34600000002")])
        log = self.d.log()
        self.assertEqual(log.count("event=outbound_no_webhooks"), 1, log)
        self.assertNotIn("outbound_unserved", log)

    def test_no_last_event_id_starts_at_the_end(self):
        self.agent("bob")  # an agent.status before the stream opens
        before = self.log_ids()
        self.assertTrue(before)
        s = self.sse(token=self.reader)
        time.sleep(0.5)
        self.db("INSERT INTO events_log (kind, data) VALUES ('test.ping', '{\"n\":1}')")
        e = s.event()
        self.assertEqual((e["event"], e["data"]["data"]), ("test.ping", {"n": 1}))
        self.assertGreater(e["id"], before[-1][0])

    def test_in_flight_transaction_and_rollback(self):
        s = self.sse(token=self.reader, query="?after=0")
        conninfo = self.d.conninfo
        # a transaction that takes an id first and commits 3.5 s later (longer than the
        # 2 s after which a gap of a finished transaction is skipped) ...
        slow = subprocess.Popen(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", conninfo, "-c",
             "BEGIN; INSERT INTO events_log (kind) VALUES ('test.slow'); "
             "SELECT pg_sleep(3.5); COMMIT;"], stdout=subprocess.DEVNULL)
        time.sleep(0.3)
        # ... while a later id commits at once: the stream must wait for the first
        self.db("INSERT INTO events_log (kind) VALUES ('test.fast')")
        a = s.event()
        b = s.event()
        slow.wait(10)
        self.assertEqual([a["event"], b["event"]], ["test.slow", "test.fast"])
        self.assertLess(a["id"], b["id"])
        # a rolled back id is a gap that is skipped after ~2 s
        self.db("BEGIN; INSERT INTO events_log (kind) VALUES ('test.rolled_back'); ROLLBACK")
        self.db("INSERT INTO events_log (kind) VALUES ('test.after_rollback')")
        t0 = time.time()
        e = s.event(timeout=10)
        self.assertEqual(e["event"], "test.after_rollback")
        self.assertEqual(e["id"], b["id"] + 2)
        self.assertLess(time.time() - t0, 6)

    def test_message_events_name_their_message(self):
        # the events_log row of a customer message names the message (no copy of the
        # body); readers get the data built from the message, and its body counts
        # towards the read's byte bound
        c = self.connect()
        self.assertEqual(c.request({"type": "hello", "role": "customer", "name": "Ref",
                                    "queue": "billing"})["type"], "ok")
        first = c.request({"type": "message", "body": "a" * 3000})
        second = c.request({"type": "message", "body": "b" * 3000})
        rows = self.db("SELECT string_agg(data::text || ' ' || message_id, ',' ORDER BY id) "
                       "FROM events_log WHERE kind = 'message.in'")
        self.assertEqual(rows, "{} %d,{} %d" % (first["message"], second["message"]))
        start = int(self.db("SELECT min(id) - 1 FROM events_log WHERE kind = 'message.in'"))
        r = json.loads(self.db("SELECT cd_stream_read(%d, 100, 1024)" % start))
        self.assertEqual((len(r["events"]), r["more"]), (1, True))
        customer, created_at = self.db("SELECT author_customer_id || ' ' || cd_ts(created_at) "
                                       "FROM messages WHERE id = %d" % first["message"]).split()
        self.assertEqual(r["events"][0]["data"], {
            "conversation": first["conversation"], "message": first["message"],
            "channel": "chat", "customer": int(customer), "external_id": None,
            "body": "a" * 3000, "body_truncated": False, "created_at": created_at})
        r = json.loads(self.db("SELECT cd_stream_read(%d, 100, 16384)" % start))
        self.assertEqual([e["data"]["body"][0] for e in r["events"] if e["kind"] == "message.in"],
                         ["a", "b"])
        # a row written before the message was referenced (its data copied) reads as it
        # was; a row naming a message that does not exist reads as {message}
        self.db("INSERT INTO events_log (kind, data) VALUES "
                "('message.in', '{\"message\": 7, \"body\": \"old\"}')")
        self.db("INSERT INTO events_log (kind, message_id) VALUES ('message.in', 999999999)")
        r = json.loads(self.db("SELECT cd_stream_read(%d, 100, 16384)" % r["last"]))
        self.assertEqual([e["data"] for e in r["events"] if e["kind"] == "message.in"],
                         [{"message": 7, "body": "old"}, {"message": 999999999}])

    def test_read_bounds_and_prune(self):
        # cd_stream_read: at most `limit` events and about `max_bytes` (at least one)
        self.db("INSERT INTO events_log (kind, data) SELECT 'test.small', "
                "jsonb_build_object('n', g) FROM generate_series(1, 5) g")
        r = json.loads(self.db("SELECT cd_stream_read(0, 2, 1024)"))
        self.assertEqual(([e["data"]["n"] for e in r["events"]], r["more"], r["skipped"]),
                         ([1, 2], True, 0))
        self.assertEqual(r["last"], r["events"][-1]["id"])
        self.db("INSERT INTO events_log (kind, data) SELECT 'test.big', "
                "jsonb_build_object('pad', repeat('x', 3000)) FROM generate_series(1, 3)")
        r = json.loads(self.db("SELECT cd_stream_read(%d, 100, 1024)" % r["last"]))
        self.assertEqual([e["kind"] for e in r["events"]], ["test.small"] * 3)
        r = json.loads(self.db("SELECT cd_stream_read(%d, 100, 1024)" % r["last"]))
        self.assertEqual(([e["kind"] for e in r["events"]], r["more"]), (["test.big"], True))
        for args, field in (("-1, 10, 1024", "after"), ("0, 0, 1024", "limit"),
                            ("0, 10, 10", "max_bytes")):
            out = subprocess.run(["psql", "-X", "-At", self.d.conninfo, "-c",
                                  "SELECT cd_stream_read(%s)" % args],
                                 capture_output=True, text=True).stderr
            self.assertIn("%s: must be" % field, out)
        # pruning: 7 days, but an event a webhook URL has not acknowledged stays 30 days
        self.db("DELETE FROM events_log")
        self.db("INSERT INTO events_log (kind, at) SELECT 'test.old', now() - interval '10 days' "
                "FROM generate_series(1, 4)")
        self.db("INSERT INTO events_log (kind, at) VALUES ('test.ancient', "
                "now() - interval '40 days'), ('test.new', now())")
        first = int(self.db("SELECT min(id) FROM events_log"))
        self.db("INSERT INTO webhook_cursors (url, last_id) VALUES ('http://x.invalid/', %d)"
                % (first + 1))
        self.assertEqual(json.loads(self.db("SELECT cd_events_prune('{}')")), {"deleted": 3})
        left = self.db("SELECT string_agg(kind, ',' ORDER BY id) FROM events_log")
        self.assertEqual(left, "test.old,test.old,test.new")
        self.db("DELETE FROM webhook_cursors")
        self.assertEqual(json.loads(self.db("SELECT cd_events_prune('{}')")), {"deleted": 2})

    def test_auth_and_bad_requests(self):
        s = self.sse()
        self.assertEqual((s.status, s.body()["error"]["code"]), (401, "unauthorized"))
        s = self.sse(token="nope")
        self.assertEqual(s.status, 401)
        other = self.d.admin_token("reports:read")
        s = self.sse(token=other)
        self.assertEqual((s.status, s.body()["error"]["code"]), (403, "forbidden"))
        s = self.sse(token=self.reader, last_id="12x")
        self.assertEqual((s.status, s.body()["error"]["field"]), (400, "Last-Event-ID"))
        s = self.sse(token=self.reader, query="?after=-1")
        self.assertEqual(s.status, 400)
        status, _, _ = self.d.request("POST", "/v1/stream", {}, token=self.token)
        self.assertEqual(status, 405)
        s = self.sse(token=self.token)  # admin includes conversations:read
        self.assertEqual(s.status, 200)

    def rss_kb(self):
        with open("/proc/%d/status" % self.d.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def test_slow_consumer_dropped_memory_bounded(self):
        slow = self.sse(token=self.reader, rcvbuf=4096)
        good = self.sse(token=self.reader)
        time.sleep(0.5)
        rss0 = self.rss_kb()
        # ~24 MB of events: far more than the kernel buffers plus the 1 MiB limit
        for _ in range(4):
            self.db("INSERT INTO events_log (kind, data) SELECT 'test.big', "
                    "jsonb_build_object('n', g, 'pad', repeat('x', 60000)) "
                    "FROM generate_series(1, 100) g")
        n = 0
        while n < 400:
            e = good.event(timeout=30)
            self.assertEqual(e["event"], "test.big")
            n += 1
        # the stuck one took in nothing for 10 s (or reached 1 MiB): dropped
        self.d.wait_log(r"event=stream_client_dropped .*reason=slow_consumer", timeout=30)
        grown_mb = (self.rss_kb() - rss0) / 1024
        self.assertLess(grown_mb, 120, "RSS grew by %.0f MB" % grown_mb)
        status, metrics, _ = self.d.request("GET", "/metrics")
        self.assertIn('contactd_stream_dropped_total{reason="slow_consumer"} 1', metrics)
        self.assertIn("contactd_stream_clients 1", metrics)

    def test_sigterm_ends_streams(self):
        s = self.sse(token=self.reader)
        time.sleep(0.3)
        t0 = time.time()
        self.d.kill(signal.SIGTERM)
        while s.next_block(timeout=10) is not None:
            pass
        self.assertTrue(s.eof)
        self.assertEqual(self.d.proc.wait(15), 0)
        self.assertLess(time.time() - t0, 5)


if __name__ == "__main__":
    harness.main()
