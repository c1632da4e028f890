"""Phone events over the phone listener (SPEC §2): PBX hello, calls queued and routed on the
voice channel, `route` pushed to the PBX that queued the call, duplicates stored once,
out-of-order events never moving the call backwards, abandoned calls leaving the line,
talk time, and a PBX reconnecting to adopt its waiting calls."""
import subprocess
import time

import harness
from harness import DaemonTest, Ndjson, free_port


class Phone(DaemonTest):
    def setUp(self):
        super().setUp()
        self.clients = []
        self.cport = free_port()
        self.pport = free_port()
        self.d = self.daemon(listen={"client": "127.0.0.1:%d" % self.cport,
                                    "phone": "127.0.0.1:%d" % self.pport},
                             extra={"routing.offer_timeout_s": "20"}).start()
        self.token = self.d.admin_token()
        self.pbx_token = self.d.admin_token(scopes="events:write", name="pbx1")
        self.post("/v1/skills", {"name": "sales"})
        self.post("/v1/queues", {"name": "sales", "skills": {"sales": 1}})

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

    def pbx(self, token=None):
        p = Ndjson(self.pport)
        self.clients.append(p)
        r = p.request({"type": "hello", "role": "pbx", "token": token or self.pbx_token})
        self.assertEqual(r["type"], "ok", r)
        return p

    def agent(self, login, extension="1001"):
        self.post("/v1/agents", {"login": login, "name": login.title(),
                                 "password": login + "-password", "skills": {"sales": 2},
                                 "extension": extension})
        a = Ndjson(self.cport)
        self.clients.append(a)
        self.assertEqual(a.request({"type": "hello", "role": "agent", "login": login,
                                    "password": login + "-password"})["type"], "ok")
        self.assertEqual(a.request({"type": "presence", "status": "available"})["type"], "ok")
        return a

    def call(self, pbx, event, call_id, **kw):
        r = pbx.request(dict({"type": "call", "event": event, "call_id": call_id}, **kw))
        self.assertEqual(r["type"], "ok", r)
        return r

    def test_hello_needs_an_events_token(self):
        p = Ndjson(self.pport)
        self.clients.append(p)
        r = p.request({"type": "hello", "role": "pbx", "token": "ctd_wrong"})
        self.assertEqual((r["type"], r["code"]), ("error", "unauthorized"))
        self.assertTrue(p.closed())
        reader = self.d.admin_token(scopes="conversations:read", name="reader")
        p = Ndjson(self.pport)
        self.clients.append(p)
        r = p.request({"type": "hello", "role": "pbx", "token": reader})
        self.assertEqual((r["type"], r["code"]), ("error", "unauthorized"))
        p = Ndjson(self.pport)
        self.clients.append(p)
        r = p.request({"type": "hello", "role": "agent", "login": "x", "password": "y"})
        self.assertEqual((r["type"], r["code"]), ("error", "invalid"))
        r = p.request({"type": "call", "event": "queued", "call_id": "c"})
        self.assertEqual(r["type"], "error")   # still before hello

    def test_queued_call_is_routed_and_the_pbx_gets_the_route(self):
        pbx = self.pbx()
        alice = self.agent("alice", extension="2001")
        self.call(pbx, "offered", "call-1", **{"from": "+48 600-100-200", "to": "+15550100"})
        r = self.call(pbx, "queued", "call-1", queue="sales", ivr={"lang": "pl"})
        conv = r["conversation"]
        offer = alice.event("offer")
        self.assertEqual((offer["conversation"], offer["channel"]), (conv, "voice"))
        self.assertEqual(alice.request({"type": "accept", "offer": offer["offer"]})["type"], "ok")
        route = pbx.event("route")
        self.assertEqual(route, {"type": "route", "call_id": "call-1", "agent": "alice",
                                 "extension": "2001", "offer": offer["offer"]})
        self.call(pbx, "answered", "call-1", agent="alice", at="2026-11-23T10:00:00.000Z")
        self.call(pbx, "ended", "call-1", at="2026-11-23T10:03:20.000Z")
        self.assertEqual(self.db("SELECT state, talk_s, from_number FROM calls WHERE call_id = 'call-1'"),
                         "ended|200|+48600100200")
        self.assertEqual(self.db("SELECT c.channel, c.status, a.login FROM conversations c "
                                 "JOIN agents a ON a.id = c.agent_id WHERE c.id = %d" % conv),
                         "voice|closed|alice")
        # the caller is a customer with the number as a phone identity
        self.assertEqual(self.db("SELECT count(*) FROM customer_identities WHERE kind = 'phone' "
                                 "AND value = '+48600100200'"), "1")
        # the agent's voice slot is free again: the next call is offered at once
        self.call(pbx, "queued", "call-2", queue="sales", **{"from": "+48600100200"})
        self.assertEqual(alice.event("offer")["channel"], "voice")
        # the same caller is the same customer
        self.assertEqual(self.db("SELECT count(DISTINCT customer_id) FROM conversations "
                                 "WHERE channel = 'voice'"), "1")

    def kinds(self, conv):
        return self.db("SELECT string_agg(kind, ',' ORDER BY id) FROM conversation_events "
                       "WHERE conversation_id = %d" % conv).split(",")

    def test_a_new_call_is_offered_in_its_own_transaction(self):
        # with an agent free, the call is stored already offered to her (one transaction:
        # the call, its conversation, the offer and their events); what follows is as usual
        pbx = self.pbx()
        alice = self.agent("alice", extension="2001")
        bob = self.agent("bob", extension="2002")
        conv = self.call(pbx, "queued", "call-p", queue="sales",
                         **{"from": "+15550120"})["conversation"]
        offer = alice.event("offer")   # the longest idle
        self.assertEqual((offer["conversation"], offer["channel"], offer["tier"]),
                         (conv, "voice", 1))
        self.assertEqual(self.db("SELECT c.status, o.state, a.login FROM conversations c "
                                 "JOIN offers o ON o.conversation_id = c.id "
                                 "JOIN agents a ON a.id = o.agent_id WHERE c.id = %d" % conv),
                         "offered|pending|alice")
        self.assertEqual(self.kinds(conv), ["call_queued", "enqueued", "offered"])
        self.assertEqual(self.db("SELECT data->'reason'->>'pick' FROM conversation_events "
                                 "WHERE conversation_id = %d AND kind = 'offered'" % conv),
                         "longest_idle")
        self.assertEqual(alice.request({"type": "reject", "offer": offer["offer"],
                                        "reason": "busy"})["type"], "ok")
        offer2 = bob.event("offer")
        self.assertEqual(offer2["conversation"], conv)
        self.assertEqual(bob.request({"type": "accept", "offer": offer2["offer"]})["type"], "ok")
        self.assertEqual(pbx.event("route"), {"type": "route", "call_id": "call-p",
                                              "agent": "bob", "extension": "2002",
                                              "offer": offer2["offer"]})
        self.assertEqual(self.kinds(conv), ["call_queued", "enqueued", "offered", "rejected",
                                            "offered", "accepted", "assigned"])
        self.assertEqual(self.db("SELECT status FROM conversations WHERE id = %d" % conv),
                         "assigned")

    def test_a_returning_caller_is_offered_to_their_last_agent(self):
        # the early pick knows no caller: when the caller's last agent (within
        # routing.sticky_agent_s) is someone else, the call is routed as usual -- to them
        pbx = self.pbx()
        alice = self.agent("alice", extension="2001")
        bob = self.agent("bob", extension="2002")
        self.call(pbx, "queued", "call-a", queue="sales", **{"from": "+15550130"})
        first = alice.event("offer")
        self.assertEqual(alice.request({"type": "reject", "offer": first["offer"]})["type"], "ok")
        taken = bob.event("offer")
        self.assertEqual(bob.request({"type": "accept", "offer": taken["offer"]})["type"], "ok")
        self.assertEqual(pbx.event("route")["agent"], "bob")
        self.call(pbx, "answered", "call-a", agent="bob")
        self.call(pbx, "ended", "call-a")
        # alice has been idle longest, but the caller spoke with bob a moment ago
        conv = self.call(pbx, "queued", "call-b", queue="sales",
                         **{"from": "+15550130"})["conversation"]
        again = bob.event("offer")
        self.assertEqual(again["conversation"], conv)
        alice.request({"type": "presence", "status": "available"})  # reads what came before
        self.assertFalse(any(e.get("type") == "offer" and e.get("conversation") == conv
                             for e in alice.events))
        self.assertEqual(self.db("SELECT data->'reason'->>'pick' FROM conversation_events "
                                 "WHERE conversation_id = %d AND kind = 'offered'" % conv),
                         "sticky")

    def test_a_pick_taken_back_while_the_call_is_stored_is_recorded_as_revoked(self):
        # the call's transaction is held up (a test session holds the call's lock); the
        # agent goes away meanwhile: the router takes its pick back, the stored offer is
        # recorded as revoked (the agent never saw it: no offer_revoked), the call waits
        pbx = self.pbx()
        alice = self.agent("alice", extension="2001")
        locker = subprocess.Popen(["psql", "-X", "-q", "-At", self.d.conninfo],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            locker.stdin.write("SELECT pg_advisory_lock(cd_lock_class_identity(), "
                               "hashtext('call:call-g'));\n")
            locker.stdin.flush()
            self.assertEqual(locker.stdout.readline().strip(), "")   # locked
            pbx.send({"type": "call", "event": "queued", "call_id": "call-g", "queue": "sales",
                      "from": "+15550140", "ref": "q"})
            deadline = time.time() + 10
            while self.db("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                          "AND NOT granted") != "1":
                self.assertLess(time.time(), deadline, "the call's transaction never waited")
                time.sleep(0.05)
            self.assertEqual(alice.request({"type": "presence", "status": "away"})["type"], "ok")
        finally:
            locker.stdin.write("SELECT pg_advisory_unlock_all();\n")
            locker.stdin.close()
            locker.wait(timeout=10)
        ok = pbx.recv()
        while ok is not None and ok.get("ref") != "q":
            pbx.events.append(ok)
            ok = pbx.recv()
        self.assertEqual(ok["type"], "ok", ok)
        conv = ok["conversation"]
        deadline = time.time() + 10
        while self.db("SELECT status FROM conversations WHERE id = %d" % conv) != "queued":
            self.assertLess(time.time(), deadline, "the offer was never recorded as revoked")
            time.sleep(0.05)
        self.assertEqual(self.kinds(conv), ["call_queued", "enqueued", "offered", "revoked"])
        self.assertEqual(self.db("SELECT o.state, a.login FROM offers o JOIN agents a "
                                 "ON a.id = o.agent_id WHERE o.conversation_id = %d" % conv),
                         "revoked|alice")
        alice.request({"type": "presence", "status": "available"})
        offer = alice.event("offer")   # the call, offered again (a new offer)
        self.assertEqual(offer["conversation"], conv)
        self.assertFalse(any(e.get("type") == "offer_revoked" for e in alice.events))
        self.assertEqual(alice.request({"type": "accept", "offer": offer["offer"]})["type"], "ok")
        self.assertEqual(pbx.event("route")["offer"], offer["offer"])

    def test_a_call_in_a_queue_with_an_sla_policy_gets_its_sla_events(self):
        # the SLA poller is told about a call with clocks at once (a call in a queue without
        # a policy has none and no longer kicks it)
        self.post("/v1/sla-policies", {"name": "fast", "first_response_s": 2, "warn_pct": 50})
        self.post("/v1/queues", {"name": "hotline", "sla_policy": "fast"})
        self.post("/v1/agents", {"login": "sue", "name": "Sue", "password": "sue-password",
                                 "role": "supervisor"})
        sup = Ndjson(self.cport)
        self.clients.append(sup)
        self.assertEqual(sup.request({"type": "hello", "role": "agent", "login": "sue",
                                      "password": "sue-password"})["type"], "ok")
        self.assertEqual(sup.request({"type": "subscribe", "topics": ["sla"]})["type"], "ok")
        pbx = self.pbx()
        plain = self.call(pbx, "queued", "call-plain", queue="sales", **{"from": "+15550101"})
        conv = self.call(pbx, "queued", "call-sla", queue="hotline",
                         **{"from": "+15550102"})["conversation"]
        warn = sup.event("sla", timeout=5)
        self.assertEqual((warn["conversation"], warn["timer"], warn["state"]),
                         (conv, "first_response", "warning"))
        breach = sup.event("sla", timeout=5)
        self.assertEqual((breach["conversation"], breach["state"]), (conv, "breached"))
        self.assertEqual(self.db("SELECT count(*) FROM sla_timers WHERE conversation_id = %d"
                                 % plain["conversation"]), "0")
        self.assertEqual(self.db("SELECT string_agg(timer, ',' ORDER BY timer) FROM sla_timers "
                                 "WHERE conversation_id = %d" % conv), "first_response")

    def test_duplicates_are_stored_once_and_late_events_never_move_back(self):
        pbx = self.pbx()
        r1 = self.call(pbx, "queued", "call-9", queue="sales", event_id="e1",
                       at="2026-11-23T10:00:00.000Z")
        r2 = self.call(pbx, "queued", "call-9", queue="sales", event_id="e1",
                       at="2026-11-23T10:00:00.000Z")
        self.assertEqual(r1["conversation"], r2["conversation"])
        self.assertTrue(r2["duplicate"])
        # without event_id: once-per-call events by (call_id, event)
        self.call(pbx, "answered", "call-9", at="2026-11-23T10:00:30.000Z")
        again = self.call(pbx, "answered", "call-9", at="2026-11-23T10:00:31.000Z")
        self.assertTrue(again["duplicate"])
        # repeatable ones by (call_id, event, at)
        self.call(pbx, "held", "call-9", at="2026-11-23T10:01:00.000Z")
        self.call(pbx, "held", "call-9", at="2026-11-23T10:01:00.000Z")
        self.call(pbx, "held", "call-9", at="2026-11-23T10:02:00.000Z")
        self.assertEqual(self.db("SELECT count(*) FROM phone_events WHERE call_id = 'call-9'"), "4")
        # an `offered` that arrives late (earlier `at`) is stored but changes nothing
        late = self.call(pbx, "offered", "call-9", at="2026-11-23T09:59:50.000Z")
        self.assertEqual(late["state"], "held")
        self.assertEqual(self.db("SELECT string_agg(event, ',' ORDER BY at, id) FROM phone_events "
                                 "WHERE call_id = 'call-9'"), "offered,queued,answered,held,held")
        r = pbx.request({"type": "call", "event": "ringing", "call_id": "call-9"})
        self.assertEqual((r["type"], r["code"]), ("error", "invalid"), r)
        r = pbx.request({"type": "call", "event": "held", "call_id": "call-9", "at": "yesterday"})
        self.assertEqual((r["type"], r["code"]), ("error", "invalid"), r)

    def test_abandoned_call_leaves_the_line(self):
        pbx = self.pbx()
        r = self.call(pbx, "queued", "call-a", queue="sales")
        conv = r["conversation"]
        self.call(pbx, "abandoned", "call-a")
        self.assertEqual(self.db("SELECT status FROM conversations WHERE id = %d" % conv),
                         "abandoned")
        bob = self.agent("bob")
        time.sleep(0.5)
        self.assertFalse(any(e.get("type") == "offer" for e in bob.events), bob.events)
        status, metrics, _ = self.d.request("GET", "/metrics")
        self.assertIn('contactd_conversations{state="waiting"} 0', metrics)

    def test_a_reconnecting_pbx_adopts_its_waiting_calls(self):
        pbx = self.pbx()
        r = self.call(pbx, "queued", "call-r", queue="sales")
        pbx.close()
        self.clients.remove(pbx)
        time.sleep(0.3)
        pbx2 = self.pbx()
        carol = self.agent("carol", extension="3003")
        offer = carol.event("offer")
        self.assertEqual(offer["conversation"], r["conversation"])
        carol.request({"type": "accept", "offer": offer["offer"]})
        route = pbx2.event("route")
        self.assertEqual((route["call_id"], route["agent"], route["extension"]),
                         ("call-r", "carol", "3003"))


if __name__ == "__main__":
    harness.main()
