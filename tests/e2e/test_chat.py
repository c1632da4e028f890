"""SPEC §1 over real TCP: customer sessions (hello, identity, resume, messages with safe
retries, close, survey) and agent sessions (login, presence, messages)."""
import hashlib
import hmac
import json
import socket
import time

import harness
from harness import DaemonTest, Ndjson, free_port

SECRET = "test-identity-secret"


class Chat(DaemonTest):
    def setUp(self):
        super().setUp()
        self.clients = []
        self.port = free_port()
        self.d = self.daemon(listen={"client": "127.0.0.1:%d" % self.port},
                             extra={"chat.identity_secret": SECRET,
                                    "limits.hello_timeout_s": "2",
                                    "limits.max_frame_bytes": "4096"}).start()
        self.token = self.d.admin_token()
        for body in ({"name": "billing"},):
            self.assertEqual(self.d.request("POST", "/v1/skills", body, token=self.token)[0], 201)
        self.assertEqual(self.d.request("POST", "/v1/queues", {"name": "billing",
                                                               "skills": {"billing": 1}},
                                        token=self.token)[0], 201)

    def db(self, sql):
        return harness.psql(sql, dbname=self.d.conninfo.split("dbname=")[1])

    def client(self):
        c = Ndjson(self.port)
        self.clients.append(c)
        return c

    def tearDown(self):
        for c in self.clients:
            c.close()
        super().tearDown()

    def customer(self, **hello):
        c = self.client()
        r = c.request(dict({"type": "hello", "role": "customer"}, **hello))
        self.assertEqual(r["type"], "ok", r)
        return c, r

    def agent(self, login, password, **fields):
        body = {"login": login, "name": login.title(), "password": password}
        body.update(fields)
        status, obj, _ = self.d.request("POST", "/v1/agents", body, token=self.token)
        self.assertEqual(status, 201, obj)
        return obj

    # --- framing and hello ---------------------------------------------------------------

    def test_hello_first_and_timeout(self):
        c = self.client()
        r = c.request({"type": "message", "body": "hi"})
        self.assertEqual((r["type"], r["code"]), ("error", "unauthorized"))
        self.assertTrue(c.closed())
        c2 = self.client()
        t0 = time.time()
        self.assertTrue(c2.closed(timeout=10))
        self.assertLess(time.time() - t0, 8)
        self.assertEqual(c2.events[-1]["code"], "unauthorized")

    def test_bad_frames_and_too_large(self):
        c, _ = self.customer()
        c.send_raw(b"this is not json\n")
        self.assertEqual(c.recv()["code"], "bad_frame")
        c.send_raw(b'[1,2]\n')
        self.assertEqual(c.recv()["code"], "bad_frame")
        c.send_raw(b'{"ref":"x1"}\n')
        r = c.recv()
        self.assertEqual((r["code"], r.get("ref")), ("bad_frame", "x1"))
        # still usable after bad frames
        self.assertEqual(c.request({"type": "typing"})["type"], "ok")
        c.send_raw(b'{"type":"message","body":"' + b"x" * 5000 + b'"}\n')
        self.assertTrue(c.closed())
        self.assertEqual(c.events[-1]["code"], "frame_too_large")

    def test_crlf_and_split_writes(self):
        c = self.client()
        frame = b'{"type":"hello","role":"customer","ref":7}\r\n'
        for i in range(len(frame)):
            c.send_raw(frame[i:i + 1])
        r = c.recv()
        self.assertEqual((r["type"], r["ref"]), ("ok", 7))

    # --- customers --------------------------------------------------------------------------

    def test_visitor_message_persisted_then_ok(self):
        c, hello = self.customer(name="Ana")
        self.assertIsNone(hello["conversation"])
        self.assertTrue(hello["resume"])
        r = c.request({"type": "message", "body": "My invoice is wrong", "client_msg_id": "m1"})
        self.assertEqual(r["type"], "ok", r)
        conv, msg = r["conversation"], r["message"]
        # acknowledged only after commit: it is there
        self.assertEqual(self.db("SELECT body FROM messages WHERE id = %d" % msg),
                         "My invoice is wrong")
        self.assertEqual(self.db("SELECT status FROM conversations WHERE id = %d" % conv),
                         "queued")
        # a second message goes into the same conversation
        r2 = c.request({"type": "message", "body": "invoice 42"})
        self.assertEqual(r2["conversation"], conv)

    def test_client_msg_id_retry_on_the_same_connection(self):
        c, _ = self.customer()
        r1 = c.request({"type": "message", "body": "once", "client_msg_id": "abc"})
        r2 = c.request({"type": "message", "body": "once", "client_msg_id": "abc"})
        self.assertEqual((r2["message"], r2["conversation"]), (r1["message"], r1["conversation"]))
        self.assertEqual(self.db("SELECT count(*) FROM messages"), "1")

    def test_resume_token_returns_same_customer(self):
        c, hello = self.customer()
        r1 = c.request({"type": "message", "body": "hello", "client_msg_id": "k1"})
        c.close()
        c2, hello2 = self.customer(resume=hello["resume"])
        self.assertEqual(hello2["customer"], hello["customer"])
        self.assertEqual(hello2["conversation"], r1["conversation"])
        # the retry of the same client_msg_id answers the same ok and records nothing
        r2 = c2.request({"type": "message", "body": "hello", "client_msg_id": "k1"})
        self.assertEqual((r2["message"], r2["conversation"]), (r1["message"], r1["conversation"]))
        self.assertEqual(self.db("SELECT count(*) FROM messages WHERE conversation_id = %d"
                                 % r1["conversation"]), "1")

    def test_verified_identity(self):
        mac = hmac.new(SECRET.encode(), b"crm-42", hashlib.sha256).hexdigest()
        c, h1 = self.customer(external_id="crm-42", identity_hmac=mac, name="Ana")
        r = c.request({"type": "message", "body": "first"})
        c.close()
        c2, h2 = self.customer(external_id="crm-42", identity_hmac=mac.upper())
        self.assertEqual(h2["customer"], h1["customer"])
        self.assertEqual(h2["conversation"], r["conversation"])

    def test_invalid_identity_hmac_is_unauthorized_and_closes(self):
        c = self.client()
        r = c.request({"type": "hello", "role": "customer", "email": "ana@example.com",
                       "identity_hmac": "00" * 32})
        self.assertEqual((r["type"], r["code"]), ("error", "unauthorized"))
        self.assertTrue(c.closed())

    def test_close_and_survey(self):
        c, _ = self.customer()
        conv = c.request({"type": "message", "body": "help"})["conversation"]
        r = c.request({"type": "close"})
        self.assertEqual(r["type"], "ok", r)
        ev = c.event("closed")
        self.assertEqual((ev["conversation"], ev["survey"]), (conv, True))
        self.assertEqual(self.db("SELECT status FROM conversations WHERE id = %d" % conv),
                         "closed")
        r = c.request({"type": "survey", "conversation": conv, "csat": 5, "nps": 9,
                       "comment": "quick"})
        self.assertEqual(r["type"], "ok", r)
        self.assertEqual(self.db("SELECT csat, nps FROM surveys WHERE conversation_id = %d"
                                 % conv), "5|9")
        r = c.request({"type": "survey", "conversation": conv, "csat": 9})
        self.assertEqual((r["type"], r["code"]), ("error", "invalid"))
        r = c.request({"type": "survey", "conversation": conv})
        self.assertEqual(r["type"], "error")

    def test_many_clients_group_commit(self):
        clients = [self.customer()[0] for _ in range(20)]
        for i, c in enumerate(clients):
            for j in range(5):
                c.send({"type": "message", "body": "m%d-%d" % (i, j), "ref": j})
        for c in clients:
            got = []
            while len(got) < 5:
                frame = c.recv()
                if "ref" in frame:  # pushed events (queued) carry none
                    self.assertEqual(frame["type"], "ok", frame)
                    got.append(frame["ref"])
            self.assertEqual(sorted(got), list(range(5)))
        self.assertEqual(self.db("SELECT count(*) FROM messages"), "100")
        self.assertEqual(self.db("SELECT count(*) FROM conversations"), "20")

    # --- agents -----------------------------------------------------------------------------

    def test_agent_login_and_wrong_password(self):
        self.agent("alice", "alice-password", skills={"billing": 3})
        a = self.client()
        r = a.request({"type": "hello", "role": "agent", "login": "alice",
                       "password": "alice-password"})
        self.assertEqual(r["type"], "ok", r)
        self.assertEqual(r["agent"]["login"], "alice")
        self.assertNotIn("password_hash", json.dumps(r))
        self.assertEqual(r["agent"]["skills"], {"billing": 3})
        self.assertEqual(a.request({"type": "presence", "status": "available"})["type"], "ok")
        self.assertEqual(self.db("SELECT status FROM agents WHERE login = 'alice'"), "available")
        bad = self.client()
        r = bad.request({"type": "hello", "role": "agent", "login": "alice", "password": "nope"})
        self.assertEqual((r["type"], r["code"]), ("error", "unauthorized"))
        self.assertTrue(bad.closed())
        unknown = self.client()
        r = unknown.request({"type": "hello", "role": "agent", "login": "nobody",
                             "password": "whatever"})
        self.assertEqual(r["code"], "unauthorized")

    def test_agent_login_with_an_api_token(self):
        self.agent("erin", "erin-password")
        writer = self.d.admin_token("conversations:write")
        reader = self.d.admin_token("reports:read")
        a = self.client()
        r = a.request({"type": "hello", "role": "agent", "login": "erin", "token": writer})
        self.assertEqual((r["type"], r["agent"]["login"]), ("ok", "erin"))
        b = self.client()
        r = b.request({"type": "hello", "role": "agent", "login": "erin", "token": reader})
        self.assertEqual((r["type"], r["code"]), ("error", "unauthorized"))
        self.assertTrue(b.closed())
        c = self.client()
        r = c.request({"type": "hello", "role": "agent", "login": "nobody", "token": writer})
        self.assertEqual(r["code"], "unauthorized")

    def test_repeated_failures_are_slowed_down(self):
        self.agent("bob", "bob-password")
        delays = []
        for _ in range(5):
            c = self.client()
            t0 = time.time()
            r = c.request({"type": "hello", "role": "agent", "login": "bob", "password": "x"},
                          timeout=20)
            delays.append(time.time() - t0)
            self.assertEqual(r["code"], "unauthorized")
            c.close()
        # the first failures answer at once; the 5th waits 1 s (250 ms doubling after 3)
        self.assertGreater(delays[-1], 0.9)

    def test_supervisor_message_reaches_customer(self):
        self.agent("carol", "carol-password", role="supervisor", tier=3)
        c, _ = self.customer()
        conv = c.request({"type": "message", "body": "anyone?"})["conversation"]
        a = self.client()
        self.assertEqual(a.request({"type": "hello", "role": "agent", "login": "carol",
                                    "password": "carol-password"})["type"], "ok")
        r = a.request({"type": "message", "conversation": conv, "body": "Hi, Carol here",
                       "client_msg_id": "c1"})
        self.assertEqual(r["type"], "ok", r)
        ev = c.event("message")
        self.assertEqual((ev["conversation"], ev["body"]), (conv, "Hi, Carol here"))
        self.assertEqual(ev["author"]["kind"], "agent")
        # an internal note never reaches the customer
        r = a.request({"type": "message", "conversation": conv, "body": "note", "internal": True})
        self.assertEqual(r["type"], "ok", r)
        c.request({"type": "typing"})
        self.assertFalse(any(e.get("body") == "note" for e in c.events))

    def test_agent_not_assigned_is_forbidden(self):
        self.agent("dave", "dave-password")
        c, _ = self.customer()
        conv = c.request({"type": "message", "body": "hello"})["conversation"]
        a = self.client()
        a.request({"type": "hello", "role": "agent", "login": "dave", "password": "dave-password"})
        r = a.request({"type": "message", "conversation": conv, "body": "hi"})
        self.assertEqual((r["type"], r["code"]), ("error", "forbidden"))


if __name__ == "__main__":
    harness.main()
