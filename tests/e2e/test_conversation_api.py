"""The conversation API of SPEC §4 over real HTTP, next to real chat sessions: lists and
filters, one conversation with its messages and timeline, every action (message, transfer,
escalate, resolve, survey) with its errors, Idempotency-Key, and the realtime statistics.
The actions' effects must reach the router and the NDJSON sessions."""
import re
import time

import harness
from harness import DaemonTest, Ndjson, free_port

ITEM_KEYS = {"id", "channel", "status", "subject", "customer", "queue", "tier", "priority",
             "agent", "created_at", "updated_at"}
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


class ConversationApi(DaemonTest):
    def setUp(self):
        super().setUp()
        self.clients = []
        self.port = free_port()
        self.d = self.daemon(listen={"client": "127.0.0.1:%d" % self.port}).start()
        self.admin = self.d.admin_token("admin", name="admin")
        self.reader = self.d.admin_token("conversations:read", name="reader")
        self.writer = self.d.admin_token("conversations:write", name="writer")
        self.reports = self.d.admin_token("reports:read", name="dashboard")
        self.post_admin("/v1/skills", {"name": "billing"})
        self.post_admin("/v1/skills", {"name": "tech"})
        self.billing = self.post_admin("/v1/queues", {"name": "billing",
                                                       "skills": {"billing": 1}})["id"]
        self.tech = self.post_admin("/v1/queues", {"name": "tech", "skills": {"tech": 1}})["id"]

    def tearDown(self):
        for c in self.clients:
            c.close()
        super().tearDown()

    # --- helpers ------------------------------------------------------------------------------

    def req(self, method, path, body=None, token=None, **kw):
        return self.d.request(method, path, body=body, token=token or self.admin, **kw)

    def post_admin(self, path, body):
        status, obj, _ = self.req("POST", path, body)
        self.assertEqual(status, 201, obj)
        return obj

    def act(self, conv, action, body=None, token=None, **kw):
        return self.req("POST", "/v1/conversations/%s/%s" % (conv, action), body,
                        token=token or self.writer, **kw)

    def get(self, path, token=None):
        status, obj, _ = self.req("GET", path, token=token or self.reader)
        self.assertEqual(status, 200, obj)
        return obj

    def assert_error(self, resp, status, code, field=None):
        self.assertEqual(resp[0], status, resp[1])
        self.assertEqual(resp[1]["error"]["code"], code, resp[1])
        self.assertTrue(resp[1]["error"]["message"])
        if field:
            self.assertEqual(resp[1]["error"].get("field"), field, resp[1])

    def db(self, sql):
        return harness.psql(sql, dbname=self.d.conninfo.split("dbname=")[1])

    def connect(self):
        c = Ndjson(self.port)
        self.clients.append(c)
        return c

    def agent(self, login, skills, available=True, **extra):
        body = {"login": login, "name": login.title(), "password": login + "-password",
                "skills": skills}
        body.update(extra)
        self.post_admin("/v1/agents", body)
        a = self.connect()
        r = a.request({"type": "hello", "role": "agent", "login": login,
                       "password": login + "-password"})
        self.assertEqual(r["type"], "ok", r)
        if available:
            self.assertEqual(a.request({"type": "presence", "status": "available"})["type"],
                             "ok")
        return a

    def customer(self, queue="billing", body="My invoice is wrong", name="Ana"):
        c = self.connect()
        hello = c.request({"type": "hello", "role": "customer", "name": name, "queue": queue})
        self.assertEqual(hello["type"], "ok", hello)
        r = c.request({"type": "message", "body": body})
        self.assertEqual(r["type"], "ok", r)
        return c, r["conversation"], hello["customer"]

    def take(self, agent, conv):
        """AGENT accepts the offer of CONV."""
        offer = agent.event("offer")
        self.assertEqual(offer["conversation"], conv)
        self.assertEqual(agent.request({"type": "accept", "offer": offer["offer"]})["type"],
                         "ok")
        self.assertEqual(agent.event("assigned")["conversation"], conv)

    # --- authentication and scopes ------------------------------------------------------------

    def test_tokens_and_scopes(self):
        _, conv, _ = self.customer()
        r = self.d.request("GET", "/v1/conversations")
        self.assert_error(r, 401, "unauthorized")
        self.assertEqual(r[2].getheader("WWW-Authenticate"), "Bearer")
        self.assert_error(self.d.request("POST", "/v1/conversations/%d/resolve" % conv, {}),
                          401, "unauthorized")
        self.assert_error(self.req("GET", "/v1/conversations", token=self.reports), 403,
                          "forbidden")
        self.assert_error(self.req("GET", "/v1/conversations/%d" % conv, token=self.writer),
                          403, "forbidden")
        self.assert_error(self.act(conv, "resolve", {}, token=self.reader), 403, "forbidden")
        self.assert_error(self.req("GET", "/v1/stats/realtime", token=self.reader), 403,
                          "forbidden")
        # admin includes every scope
        self.assertEqual(self.req("GET", "/v1/conversations")[0], 200)
        self.assertEqual(self.req("GET", "/v1/stats/realtime")[0], 200)
        r = self.req("DELETE", "/v1/conversations/%d" % conv)
        self.assert_error(r, 405, "method_not_allowed")
        self.assertEqual(r[2].getheader("Allow"), "GET")
        r = self.req("GET", "/v1/conversations/%d/messages" % conv)
        self.assert_error(r, 405, "method_not_allowed")
        self.assertEqual(r[2].getheader("Allow"), "POST")
        self.assert_error(self.req("POST", "/v1/conversations/%d/nothing" % conv, {}), 404,
                          "not_found")
        # nothing was changed by the refused requests
        self.assertEqual(self.db("SELECT status FROM conversations WHERE id = %d" % conv),
                         "queued")

    # --- lists ----------------------------------------------------------------------------------

    def test_list_filters_and_paging(self):
        alice = self.agent("alice", {"billing": 2})
        _, c1, cust1 = self.customer(name="Ana")
        self.take(alice, c1)
        _, c2, cust2 = self.customer(name="Bea")
        _, c3, _ = self.customer(queue="tech", name="Cid", body="the router is down")
        page = self.get("/v1/conversations")
        self.assertIsNone(page["next"])
        self.assertEqual([i["id"] for i in page["items"]], [c3, c2, c1])  # newest first
        for item in page["items"]:
            self.assertEqual(set(item), ITEM_KEYS)
            self.assertRegex(item["created_at"], TS)
            self.assertRegex(item["updated_at"], TS)
        first = page["items"][2]
        self.assertEqual((first["status"], first["queue"], first["agent"], first["customer"],
                          first["channel"], first["tier"]),
                         ("assigned", "billing", "alice", cust1, "chat", 1))
        self.assertIsNone(page["items"][1]["agent"])

        def ids(query):
            return [i["id"] for i in self.get("/v1/conversations?" + query)["items"]]

        self.assertEqual(ids("status=assigned"), [c1])
        self.assertEqual(ids("status=queued,offered"), [c3, c2])
        self.assertEqual(ids("queue=tech"), [c3])
        self.assertEqual(ids("queue=%d" % self.billing), [c2, c1])
        self.assertEqual(ids("queue=BILLING&status=queued,offered"), [c2])
        self.assertEqual(ids("agent=alice"), [c1])
        agent_id = int(self.db("SELECT id FROM agents WHERE login = 'alice'"))
        self.assertEqual(ids("agent=%d" % agent_id), [c1])
        self.assertEqual(ids("customer=%d" % cust2), [c2])
        self.assertEqual(ids("channel=chat"), [c3, c2, c1])
        self.assertEqual(ids("channel=email"), [])
        # paging
        p1 = self.get("/v1/conversations?limit=2")
        self.assertEqual([i["id"] for i in p1["items"]], [c3, c2])
        self.assertIsInstance(p1["next"], str)
        p2 = self.get("/v1/conversations?limit=2&after=" + p1["next"])
        self.assertEqual([i["id"] for i in p2["items"]], [c1])
        self.assertIsNone(p2["next"])
        # bad values name their field
        for query, field in (("status=open", "status"), ("status=", "status"),
                             ("queue=nope", "queue"), ("queue=999999", "queue"),
                             ("agent=nobody", "agent"), ("customer=999999", "customer"),
                             ("customer=ana", "customer"), ("channel=fax", "channel"),
                             ("limit=0", "limit"), ("limit=501", "limit"),
                             ("limit=x", "limit"), ("after=x", "after"),
                             ("sort=id", "sort")):
            self.assert_error(self.req("GET", "/v1/conversations?" + query,
                                       token=self.reader), 400, "invalid", field)

    # --- one conversation ---------------------------------------------------------------------

    def test_get_with_messages_and_timeline(self):
        alice = self.agent("alice", {"billing": 2})
        c, conv, cust = self.customer(body="hello?")
        self.take(alice, conv)
        self.assertEqual(alice.request({"type": "message", "conversation": conv,
                                        "body": "Hi, Alice here"})["type"], "ok")
        self.assertEqual(c.event("message")["body"], "Hi, Alice here")
        self.assertEqual(alice.request({"type": "message", "conversation": conv,
                                        "body": "note to self", "internal": True})["type"],
                         "ok")
        c.request({"type": "message", "body": "thanks"})
        obj = self.get("/v1/conversations/%d" % conv)
        self.assertEqual(set(obj), ITEM_KEYS | {"messages", "timeline"})
        self.assertEqual((obj["id"], obj["status"], obj["agent"]), (conv, "assigned", "alice"))
        msgs = obj["messages"]
        self.assertEqual([m["body"] for m in msgs],
                         ["hello?", "Hi, Alice here", "note to self", "thanks"])
        self.assertEqual([m["direction"] for m in msgs], ["in", "out", "internal", "in"])
        self.assertEqual(msgs[0]["author"], {"kind": "customer", "id": cust, "name": "Ana"})
        self.assertEqual(msgs[1]["author"]["kind"], "agent")
        self.assertEqual(msgs[1]["author"]["name"], "Alice")
        for m in msgs:
            self.assertEqual(set(m), {"id", "channel", "direction", "author", "body",
                                      "created_at", "attachments"})
            self.assertEqual((m["channel"], m["attachments"]), ("chat", []))
            self.assertRegex(m["created_at"], TS)
        self.assertEqual(sorted(m["id"] for m in msgs), [m["id"] for m in msgs])
        kinds = [e["kind"] for e in obj["timeline"]]
        for k in ("enqueued", "offered", "accepted", "assigned"):
            self.assertIn(k, kinds)
        self.assertLess(kinds.index("enqueued"), kinds.index("assigned"))
        for e in obj["timeline"]:
            self.assertEqual(set(e), {"kind", "at", "data"})
            self.assertRegex(e["at"], TS)
        # an attachment shows as such
        mid = msgs[0]["id"]
        self.db("INSERT INTO attachments (message_id, name, content_type, size, sha256) "
                "VALUES (%d, 'invoice.pdf', 'application/pdf', 1234, '%s')" % (mid, "ab" * 32))
        att = self.get("/v1/conversations/%d" % conv)["messages"][0]["attachments"]
        self.assertEqual(len(att), 1)
        self.assertEqual({k: v for k, v in att[0].items() if k != "id"},
                         {"filename": "invoice.pdf", "content_type": "application/pdf",
                          "size": 1234, "sha256": "ab" * 32})
        self.assert_error(self.req("GET", "/v1/conversations/999999", token=self.reader),
                          404, "not_found")
        self.assert_error(self.req("GET", "/v1/conversations/abc", token=self.reader), 404,
                          "not_found")

    # --- actions --------------------------------------------------------------------------------

    def test_message_reaches_customer_and_agent(self):
        alice = self.agent("alice", {"billing": 2})
        bob = self.agent("bob", {"tech": 2})
        c, conv, _ = self.customer()
        self.take(alice, conv)
        # from the system (the API token is the author)
        status, obj, _ = self.act(conv, "messages", {"body": "Your refund is on its way"})
        self.assertEqual(status, 201, obj)
        self.assertEqual(set(obj), {"message", "conversation"})
        self.assertEqual(obj["message"]["author"], {"kind": "system", "id": None,
                                                    "name": "writer"})
        self.assertEqual((obj["message"]["direction"], obj["message"]["body"]),
                         ("out", "Your refund is on its way"))
        self.assertEqual(set(obj["conversation"]), ITEM_KEYS)
        self.assertEqual(c.event("message")["body"], "Your refund is on its way")
        seen = alice.event("message")
        self.assertEqual((seen["conversation"], seen["body"], seen["author"]["kind"]),
                         (conv, "Your refund is on its way", "system"))
        # internal: the agent sees it, the customer does not
        status, obj, _ = self.act(conv, "messages", {"body": "VIP customer", "internal": True})
        self.assertEqual((status, obj["message"]["direction"]), (201, "internal"))
        self.assertTrue(alice.event("message")["internal"])
        # as the conversation's agent
        status, obj, _ = self.act(conv, "messages", {"body": "Anything else?", "agent": "alice"})
        self.assertEqual(status, 201, obj)
        self.assertEqual(obj["message"]["author"]["name"], "Alice")
        got = c.event("message")
        self.assertEqual(got["body"], "Anything else?")  # not the internal note
        self.assertEqual(got["author"]["name"], "Alice")
        self.assertEqual(self.db("SELECT first_response_at IS NOT NULL FROM conversations "
                                 "WHERE id = %d" % conv), "t")
        # the client protocol's rules: bob is not its agent
        self.assert_error(self.act(conv, "messages", {"body": "hi", "agent": "bob"}), 403,
                          "forbidden")
        self.assert_error(self.act(conv, "messages", {"body": "hi", "agent": "nobody"}), 400,
                          "invalid", "agent")
        self.assert_error(self.act(conv, "messages", {}), 400, "invalid", "body")
        self.assert_error(self.act(conv, "messages", {"body": "  "}), 400, "invalid", "body")
        self.assert_error(self.act(conv, "messages", {"body": "x", "internal": "yes"}), 400,
                          "invalid", "internal")
        self.assert_error(self.act(conv, "messages", {"body": "x", "html": True}), 400,
                          "invalid", "html")
        self.assert_error(self.act(conv, "messages", raw=b"[1]"), 400, "invalid", "body")
        self.assert_error(self.act(999999, "messages", {"body": "x"}), 404, "not_found")
        self.assert_error(self.act("abc", "messages", {"body": "x"}), 404, "not_found")
        self.assertEqual(self.db("SELECT count(*) FROM messages WHERE conversation_id = %d"
                                 % conv), "4")
        self.assertFalse(any(e.get("type") == "message" for e in bob.events))

    def test_transfer_to_a_queue_offers_it_to_another_agent(self):
        alice = self.agent("alice", {"billing": 2})
        bob = self.agent("bob", {"tech": 2})
        c, conv, _ = self.customer()
        self.take(alice, conv)
        self.assertEqual(c.event("assigned")["agent"]["name"], "Alice")
        status, obj, _ = self.act(conv, "transfer", {"queue": "tech"})
        self.assertEqual(status, 200, obj)
        self.assertEqual(obj["conversation"]["queue"], "tech")
        self.assertIsNone(obj["conversation"]["agent"])
        offer = bob.event("offer")
        self.assertEqual((offer["conversation"], offer["queue"]), (conv, self.tech))
        self.assertEqual(bob.request({"type": "accept", "offer": offer["offer"]})["type"], "ok")
        self.assertEqual(c.event("assigned")["agent"]["name"], "Bob")
        timeline = self.get("/v1/conversations/%d" % conv)["timeline"]
        moved = [e for e in timeline if e["kind"] == "transferred"]
        self.assertEqual(len(moved), 1)
        self.assertEqual((moved[0]["data"]["to_queue"], moved[0]["data"]["by"],
                          moved[0]["data"]["api_token"]), (self.tech, None, "writer"))
        # errors
        self.assert_error(self.act(conv, "transfer", {}), 400, "invalid", "queue")
        self.assert_error(self.act(conv, "transfer", {"queue": "tech", "agent": "bob"}), 400,
                          "invalid", "queue")
        self.assert_error(self.act(conv, "transfer", {"queue": "nope"}), 400, "invalid",
                          "queue")
        self.assert_error(self.act(conv, "transfer", {"agent": "nobody"}), 400, "invalid",
                          "agent")
        self.assert_error(self.act(999999, "transfer", {"queue": "tech"}), 404, "not_found")

    def test_transfer_to_an_agent_hands_it_over(self):
        alice = self.agent("alice", {"billing": 2})
        carol = self.agent("carol", {"tech": 1})
        self.agent("dave", {"tech": 1}, available=False)
        c, conv, _ = self.customer()
        self.take(alice, conv)
        c.event("assigned")
        status, obj, _ = self.act(conv, "transfer", {"agent": "carol"})
        self.assertEqual(status, 200, obj)
        self.assertEqual((obj["conversation"]["agent"], obj["conversation"]["status"]),
                         ("carol", "assigned"))
        got = carol.event("assigned")
        self.assertEqual((got["conversation"], got["reason"]), (conv, "transfer"))
        self.assertEqual(c.event("assigned")["agent"]["name"], "Carol")
        # carol holds it now: her message reaches the customer
        self.assertEqual(carol.request({"type": "message", "conversation": conv,
                                        "body": "Carol here"})["type"], "ok")
        self.assertEqual(c.event("message")["body"], "Carol here")
        # an offline agent cannot take it; a resolved conversation cannot move
        self.assert_error(self.act(conv, "transfer", {"agent": "dave"}), 409, "conflict")
        self.assertEqual(self.act(conv, "resolve", {})[0], 200)
        self.assert_error(self.act(conv, "transfer", {"queue": "billing"}), 409, "conflict")

    def test_escalate_and_resolve(self):
        alice = self.agent("alice", {"billing": 2})
        _, conv, _ = self.customer()
        self.take(alice, conv)
        senior = self.agent("senior", {"billing": 1}, tier=2)
        status, obj, _ = self.act(conv, "escalate", {"reason": "angry customer"})
        self.assertEqual(status, 200, obj)
        self.assertEqual(obj["conversation"]["tier"], 2)
        self.assertEqual(obj["conversation"]["status"], "queued")  # alice is tier 1
        esc = alice.event("escalated")
        self.assertEqual((esc["conversation"], esc["tier"]), (conv, 2))
        self.assertEqual(senior.event("offer")["conversation"], conv)
        self.assertFalse(any(e.get("type") == "offer" for e in alice.events))
        self.assert_error(self.act(conv, "escalate", {}), 400, "invalid", "reason")
        self.assert_error(self.act(conv, "escalate", {"reason": 5}), 400, "invalid", "reason")
        # resolve
        self.assert_error(self.act(conv, "resolve", {"disposition": 5}), 400, "invalid",
                          "disposition")
        status, obj, _ = self.act(conv, "resolve", {"disposition": "refunded"})
        self.assertEqual((status, obj["conversation"]["status"]), (200, "resolved"), obj)
        self.assertEqual(self.db("SELECT disposition FROM conversations WHERE id = %d" % conv),
                         "refunded")
        self.assertEqual(senior.event("offer_revoked")["reason"], "cancelled")
        # resolving again changes nothing and answers the same; escalating is a conflict
        self.assertEqual(self.act(conv, "resolve")[0], 200)
        self.assert_error(self.act(conv, "escalate", {"reason": "again"}), 409, "conflict")
        self.assertEqual(self.db("SELECT count(*) FROM conversation_events WHERE "
                                 "conversation_id = %d AND kind = 'resolved'" % conv), "1")
        # the router let go: a new contact goes to alice again
        _, conv2, _ = self.customer(name="Bea")
        self.assertEqual(alice.event("offer")["conversation"], conv2)

    def test_survey(self):
        _, conv, _ = self.customer()
        status, obj, _ = self.act(conv, "survey", {"csat": 5, "nps": 9, "comment": "great"})
        self.assertEqual(status, 201, obj)
        self.assertEqual({k: obj["survey"][k] for k in ("csat", "nps", "ces", "comment")},
                         {"csat": 5, "nps": 9, "ces": None, "comment": "great"})
        self.assertEqual(obj["conversation"]["id"], conv)
        self.assert_error(self.act(conv, "survey", {"csat": 4}), 409, "conflict")
        _, conv2, _ = self.customer(name="Bea")
        self.assert_error(self.act(conv2, "survey", {}), 400, "invalid", "csat")
        self.assert_error(self.act(conv2, "survey", {"csat": 9}), 400, "invalid", "csat")
        self.assert_error(self.act(conv2, "survey", {"nps": 1.5}), 400, "invalid", "nps")
        self.assert_error(self.act(conv2, "survey", {"stars": 5}), 400, "invalid", "stars")
        self.assert_error(self.act(999999, "survey", {"csat": 5}), 404, "not_found")

    # --- Idempotency-Key ----------------------------------------------------------------------

    def test_idempotency_key(self):
        c, conv, _ = self.customer()
        key = {"Idempotency-Key": "order-42-reply"}
        s1, b1, r1 = self.act(conv, "messages", {"body": "once"}, headers=key)
        self.assertEqual(s1, 201, b1)
        self.assertIsNone(r1.getheader("Idempotent-Replayed"))
        self.assertEqual(c.event("message")["body"], "once")
        s2, b2, r2 = self.act(conv, "messages", {"body": "once"}, headers=key)
        self.assertEqual((s2, b2), (s1, b1))
        self.assertEqual(r2.getheader("Idempotent-Replayed"), "true")
        self.assertEqual(self.db("SELECT count(*) FROM messages WHERE body = 'once'"), "1")
        # the same key for something else is refused
        self.assert_error(self.act(conv, "messages", {"body": "twice"}, headers=key), 409,
                          "conflict", "Idempotency-Key")
        self.assert_error(self.act(conv, "resolve", {}, headers=key), 409, "conflict",
                          "Idempotency-Key")
        # keys belong to their token
        other = self.d.admin_token("conversations:write", name="other")
        self.assertEqual(self.act(conv, "messages", {"body": "once"}, headers=key,
                                  token=other)[0], 201)
        # a failed request records nothing: the key is still free
        k2 = {"Idempotency-Key": "resolve-1"}
        self.assert_error(self.act(conv, "resolve", {"disposition": 1}, headers=k2), 400,
                          "invalid", "disposition")
        s, b, _ = self.act(conv, "resolve", {"disposition": "ok"}, headers=k2)
        self.assertEqual(s, 200, b)
        s, b2, r = self.act(conv, "resolve", {"disposition": "ok"}, headers=k2)
        self.assertEqual((s, b2, r.getheader("Idempotent-Replayed")), (200, b, "true"))
        self.assertEqual(self.db("SELECT count(*) FROM conversation_events WHERE "
                                 "conversation_id = %d AND kind = 'resolved'" % conv), "1")
        self.assert_error(self.act(conv, "resolve", {}, headers={"Idempotency-Key": "x" * 256}),
                          400, "invalid", "Idempotency-Key")
        # no message was delivered twice
        time.sleep(0.3)
        c.closed(timeout=0.3)
        self.assertEqual([e["body"] for e in c.events if e.get("type") == "message"], ["once"])

    # --- realtime statistics ----------------------------------------------------------------

    def test_realtime_stats(self):
        pol = self.post_admin("/v1/sla-policies", {"name": "fast", "first_response_s": 2,
                                                   "warn_pct": 50})
        self.assertEqual(self.req("PUT", "/v1/queues/tech", {"sla_policy": "fast"})[0], 200)
        self.assertTrue(pol["id"])
        self.customer(name="Ana")
        self.customer(name="Bea")
        self.customer(queue="tech", name="Cid")
        status, st, _ = self.req("GET", "/v1/stats/realtime", token=self.reports)
        self.assertEqual(status, 200, st)
        self.assertEqual(set(st), {"queues", "agents"})
        self.assertEqual(set(st["agents"]), {"available", "busy", "away", "offline"})
        by = {q["name"]: q for q in st["queues"]}
        self.assertEqual(set(by), {"billing", "tech"})
        for q in by.values():
            self.assertEqual(set(q), {"name", "waiting", "longest_wait_s", "sla_at_risk",
                                      "estimated_wait_s"})
        self.assertEqual((by["billing"]["waiting"], by["tech"]["waiting"]), (2, 1))
        self.assertIsNone(by["billing"]["estimated_wait_s"])  # nobody to serve it
        self.assertEqual(by["tech"]["sla_at_risk"], 0)
        deadline = time.time() + 10  # the warning fires at 1 s
        while True:
            st = self.get("/v1/stats/realtime", token=self.reports)
            by = {q["name"]: q for q in st["queues"]}
            if by["tech"]["sla_at_risk"] or time.time() > deadline:
                break
            time.sleep(0.1)
        self.assertEqual((by["tech"]["sla_at_risk"], by["billing"]["sla_at_risk"]), (1, 0))
        self.assertGreaterEqual(by["billing"]["longest_wait_s"], 1)
        # an agent who can serve billing: one conversation offered, one still waits
        alice = self.agent("alice", {"billing": 1}, capacity={"chat": 1})
        alice.event("offer")
        st = self.get("/v1/stats/realtime", token=self.reports)
        by = {q["name"]: q for q in st["queues"]}
        self.assertEqual(by["billing"]["waiting"], 1)
        self.assertIsInstance(by["billing"]["estimated_wait_s"], int)
        self.assertGreater(by["billing"]["estimated_wait_s"], 0)
        self.assertEqual(st["agents"]["available"] + st["agents"]["busy"], 1)


if __name__ == "__main__":
    harness.main()
