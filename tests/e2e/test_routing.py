"""Routing over real sockets: offers by skill, accept, reject and timeout re-offers, the
conversation between customer and agent, resolve, and the line rebuilt after a restart."""
import signal
import time

import harness
from harness import DaemonTest, Ndjson, free_port


class Routing(DaemonTest):
    def setUp(self):
        super().setUp()
        self.clients = []
        self.port = free_port()
        self.d = self.daemon(listen={"client": "127.0.0.1:%d" % self.port},
                             extra={"routing.offer_timeout_s": "2",
                                    "routing.reject_cooldown_s": "60"}).start()
        self.token = self.d.admin_token()
        self.post("/v1/skills", {"name": "billing"})
        self.post("/v1/skills", {"name": "tech"})
        self.post("/v1/queues", {"name": "billing", "skills": {"billing": 2}})
        self.post("/v1/queues", {"name": "tech", "skills": {"tech": 1}})

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

    def connect(self):
        c = Ndjson(self.port)
        self.clients.append(c)
        return c

    def agent(self, login, skills, available=True, **extra):
        body = {"login": login, "name": login.title(), "password": login + "-password",
                "skills": skills}
        body.update(extra)
        self.post("/v1/agents", body)
        a = self.connect()
        r = a.request({"type": "hello", "role": "agent", "login": login,
                       "password": login + "-password"})
        self.assertEqual(r["type"], "ok", r)
        if available:
            self.assertEqual(a.request({"type": "presence", "status": "available"})["type"],
                             "ok")
        return a

    def customer(self, queue="billing", body="My invoice is wrong"):
        c = self.connect()
        self.assertEqual(c.request({"type": "hello", "role": "customer", "name": "Ana",
                                    "queue": queue})["type"], "ok")
        r = c.request({"type": "message", "body": body})
        self.assertEqual(r["type"], "ok", r)
        return c, r["conversation"]

    def test_offer_accept_talk_resolve(self):
        alice = self.agent("alice", {"billing": 3})
        c, conv = self.customer()
        queued = c.event("queued")
        self.assertEqual((queued["conversation"], queued["position"]), (conv, 1))
        offer = alice.event("offer")
        self.assertEqual((offer["conversation"], offer["channel"]), (conv, "chat"))
        self.assertGreater(offer["expires_in_s"], 0)
        r = alice.request({"type": "accept", "offer": offer["offer"]})
        self.assertEqual(r["type"], "ok", r)
        self.assertEqual(alice.event("assigned")["conversation"], conv)
        assigned = c.event("assigned")
        self.assertEqual(assigned["agent"]["name"], "Alice")
        self.assertEqual(self.db("SELECT status, agent_id IS NOT NULL FROM conversations "
                                 "WHERE id = %d" % conv), "assigned|t")
        # the customer's next message reaches the agent, and the answer the customer
        c.request({"type": "message", "body": "invoice 42"})
        m = alice.event("message")
        self.assertEqual((m["conversation"], m["body"]), (conv, "invoice 42"))
        self.assertEqual(alice.request({"type": "message", "conversation": conv,
                                        "body": "Fixed!"})["type"], "ok")
        self.assertEqual(c.event("message")["body"], "Fixed!")
        self.assertEqual(alice.request({"type": "resolve", "conversation": conv,
                                        "disposition": "fixed"})["type"], "ok")
        self.assertEqual(self.db("SELECT status FROM conversations WHERE id = %d" % conv),
                         "resolved")
        status, metrics, _ = self.d.request("GET", "/metrics")
        self.assertIn('contactd_offers_total{outcome="accepted"} 1', metrics)
        self.assertIn('contactd_connections{listener="client"} 2', metrics)
        kinds = self.db("SELECT string_agg(kind, ',' ORDER BY id) FROM conversation_events "
                        "WHERE conversation_id = %d" % conv)
        for k in ("enqueued", "offered", "accepted", "assigned", "resolved"):
            self.assertIn(k, kinds)

    def test_skills_decide_who_is_offered(self):
        low = self.agent("low", {"billing": 1})      # below the queue's level 2
        tech = self.agent("techie", {"tech": 5})
        good = self.agent("good", {"billing": 2})
        c, conv = self.customer()
        self.assertEqual(good.event("offer")["conversation"], conv)
        self.assertFalse(any(e.get("type") == "offer" for e in low.events + tech.events))
        low.request({"type": "presence", "status": "available"})
        self.assertFalse(any(e.get("type") == "offer" for e in low.events))

    def test_reject_offers_it_elsewhere_and_not_back(self):
        # a2 logs in before the offer (an Argon2id login can outlast the 2 s offer timeout
        # on a loaded machine) and only becomes available once a1 holds the offer
        a1 = self.agent("a1", {"billing": 3})
        a2 = self.agent("a2", {"billing": 3}, available=False)
        c, conv = self.customer()
        o1 = a1.event("offer")
        self.assertEqual(a2.request({"type": "presence", "status": "available"})["type"], "ok")
        self.assertEqual(a1.request({"type": "reject", "offer": o1["offer"],
                                     "reason": "busy"})["type"], "ok")
        o2 = a2.event("offer")
        self.assertEqual(o2["conversation"], conv)
        self.assertEqual(self.db("SELECT state FROM offers WHERE id = %d" % o1["offer"]),
                         "rejected")
        # the same offer cannot be answered twice
        r = a1.request({"type": "accept", "offer": o1["offer"]})
        self.assertEqual((r["type"], r["code"]), ("error", "not_found"))

    def test_offer_timeout_revokes_and_reoffers(self):
        a1 = self.agent("slow", {"billing": 3})
        a2 = self.agent("quick", {"billing": 3}, available=False)
        c, conv = self.customer()
        o1 = a1.event("offer")
        self.assertEqual(a2.request({"type": "presence", "status": "available"})["type"], "ok")
        revoked = a1.event("offer_revoked", timeout=10)
        self.assertEqual((revoked["offer"], revoked["reason"]), (o1["offer"], "timeout"))
        o2 = a2.event("offer", timeout=10)
        self.assertEqual(o2["conversation"], conv)
        self.assertEqual(self.db("SELECT state FROM offers WHERE id = %d" % o1["offer"]),
                         "expired")

    def test_agent_going_away_revokes_its_offer(self):
        a1 = self.agent("away1", {"billing": 3})
        c, conv = self.customer()
        o1 = a1.event("offer")
        a1.request({"type": "presence", "status": "away"})
        self.assertEqual(a1.event("offer_revoked")["offer"], o1["offer"])

    def accepted(self, agent, conv):
        o = agent.event("offer")
        self.assertEqual(o["conversation"], conv)
        self.assertEqual(agent.request({"type": "accept", "offer": o["offer"]})["type"], "ok")
        agent.event("assigned")
        return o

    def test_typing_is_relayed_both_ways(self):
        a = self.agent("typer", {"billing": 3})
        c, conv = self.customer()
        self.accepted(a, conv)
        c.event("assigned")
        c.request({"type": "typing"})
        self.assertEqual(a.event("typing")["conversation"], conv)
        a.request({"type": "typing", "conversation": conv})
        self.assertEqual(c.event("typing")["conversation"], conv)

    def test_transfer_to_another_queue(self):
        a = self.agent("biller", {"billing": 3})
        t = self.agent("techie", {"tech": 2})
        c, conv = self.customer()
        self.accepted(a, conv)
        r = a.request({"type": "transfer", "conversation": conv, "queue": "tech"})
        self.assertEqual(r["type"], "ok", r)
        self.accepted(t, conv)
        self.assertEqual(self.db("SELECT q.name FROM conversations c JOIN queues q "
                                 "ON q.id = c.queue_id WHERE c.id = %d" % conv), "tech")
        # only the assigned agent (or a supervisor) may transfer
        r = a.request({"type": "transfer", "conversation": conv, "queue": "billing"})
        self.assertEqual((r["type"], r["code"]), ("error", "forbidden"))

    def test_transfer_to_an_agent_assigns_at_once(self):
        a = self.agent("biller", {"billing": 3}, capacity={"chat": 1})
        b = self.agent("bea", {"tech": 1})       # not even skilled for billing: handed, not offered
        off = self.agent("otto", {"billing": 3}, available=False)
        c, conv = self.customer()
        self.accepted(a, conv)
        c.event("assigned")
        r = a.request({"type": "transfer", "conversation": conv, "agent": "otto"})
        self.assertEqual((r["type"], r["code"]), ("error", "conflict"), r)   # offline
        r = a.request({"type": "transfer", "conversation": conv, "agent": "nobody"})
        self.assertEqual((r["type"], r["code"]), ("error", "invalid"), r)
        r = a.request({"type": "transfer", "conversation": conv, "agent": "bea"})
        self.assertEqual(r["type"], "ok", r)
        self.assertEqual((r["status"], r["conversation"]), ("assigned", conv))
        got = b.event("assigned")
        self.assertEqual((got["conversation"], got["reason"]), (conv, "transfer"))
        self.assertEqual(c.event("assigned")["agent"]["name"], "Bea")
        self.assertEqual(self.db("SELECT a.login FROM conversations c JOIN agents a "
                                 "ON a.id = c.agent_id WHERE c.id = %d" % conv), "bea")
        # the new agent talks with the customer; the old one may not any more
        c.request({"type": "message", "body": "hello Bea"})
        self.assertEqual(b.event("message")["body"], "hello Bea")
        r = a.request({"type": "message", "conversation": conv, "body": "still me"})
        self.assertEqual((r["type"], r["code"]), ("error", "forbidden"))
        # the first agent's chat slot is free again: it gets the next customer
        c2, conv2 = self.customer()
        self.assertEqual(a.event("offer")["conversation"], conv2)
        self.assertFalse(any(e.get("type") == "offer" for e in off.events))

    def test_waiting_customers_hear_their_new_place(self):
        c1, conv1 = self.customer()
        self.assertEqual(c1.event("queued")["position"], 1)
        c2, conv2 = self.customer()
        self.assertEqual(c2.event("queued")["position"], 2)
        a = self.agent("mover", {"billing": 3}, capacity={"chat": 1})
        self.accepted(a, conv1)
        moved = c2.event("queued", timeout=8)      # announced within one 5 s pass
        self.assertEqual((moved["conversation"], moved["position"]), (conv2, 1))
        # the one being offered hears nothing more about its place
        time.sleep(5.5)
        self.assertFalse(any(e.get("type") == "queued" for e in c1.events), c1.events)
        self.assertFalse(any(e.get("type") == "queued" for e in c2.events), c2.events)

    def test_capacity_limits_offers(self):
        a = self.agent("single", {"billing": 3}, capacity={"chat": 1})
        c1, conv1 = self.customer()
        self.accepted(a, conv1)
        c2, conv2 = self.customer()
        time.sleep(0.5)
        self.assertFalse(any(e.get("type") == "offer" for e in a.events))
        a.request({"type": "resolve", "conversation": conv1})
        self.assertEqual(a.event("offer")["conversation"], conv2)

    def test_events_reach_every_session_of_one_agent(self):
        a1 = self.agent("multi", {"billing": 3})
        a2 = self.connect()
        self.assertEqual(a2.request({"type": "hello", "role": "agent", "login": "multi",
                                     "password": "multi-password"})["type"], "ok")
        c, conv = self.customer()
        o1 = a1.event("offer")
        o2 = a2.event("offer")
        self.assertEqual(o1["offer"], o2["offer"])
        # accepted from the second session
        self.assertEqual(a2.request({"type": "accept", "offer": o2["offer"]})["type"], "ok")
        self.assertEqual(a1.event("assigned")["conversation"], conv)

    def test_deleting_an_agent_requeues_what_it_held(self):
        gone = self.agent("leaver", {"billing": 3})
        c, conv = self.customer()
        self.accepted(gone, conv)
        self.assertEqual(self.d.request("DELETE", "/v1/agents/leaver", token=self.token)[0], 200)
        self.assertEqual(self.db("SELECT status, agent_id IS NULL FROM conversations "
                                 "WHERE id = %d" % conv), "queued|t")
        stay = self.agent("stayer", {"billing": 3})
        self.assertEqual(stay.event("offer")["conversation"], conv)

    def test_supervisor_subscribes_to_stats(self):
        sup = self.agent("boss", {"billing": 1}, available=False, role="supervisor", tier=3)
        plain = self.agent("worker", {"tech": 1}, available=False)
        r = plain.request({"type": "subscribe", "topics": ["stats"]})
        self.assertEqual((r["type"], r["code"]), ("error", "forbidden"))
        c, conv = self.customer()
        r = sup.request({"type": "subscribe", "topics": ["stats", "sla"]})
        self.assertEqual(r["type"], "ok", r)
        st = sup.event("stats")
        billing = [q for q in st["queues"] if q["waiting"] == 1]
        self.assertEqual(len(billing), 1)
        self.assertEqual(st["agents"]["offline"], 2)
        self.assertEqual(sup.request({"type": "subscribe", "topics": ["nope"]})["code"],
                         "invalid")

    def test_restart_rebuilds_waiting_line(self):
        c1, conv1 = self.customer()
        c2, conv2 = self.customer()
        self.assertEqual(self.d.stop(signal.SIGTERM), 0)
        for c in self.clients:
            c.close()
        self.clients = []
        self.d.start()
        a = self.agent("after", {"billing": 3}, capacity={"chat": 1})
        o = a.event("offer")
        self.assertEqual(o["conversation"], conv1)  # oldest first
        a.request({"type": "accept", "offer": o["offer"]})
        a.request({"type": "presence", "status": "available"})


if __name__ == "__main__":
    harness.main()
