"""SLA timers over real sockets: warnings and breaches pushed to the agent and to supervisors
subscribed to `sla`, escalation to a higher tier (the tier-2 agent gets the offer), manual
escalation, pending pausing the clocks, and timers that came due while the daemon was down
firing exactly once after a restart."""
import signal
import time

import harness
from harness import DaemonTest, Ndjson, free_port


class Sla(DaemonTest):
    def setUp(self):
        super().setUp()
        self.clients = []
        self.port = free_port()
        self.d = self.daemon(listen={"client": "127.0.0.1:%d" % self.port},
                             extra={"routing.offer_timeout_s": "30"}).start()
        self.token = self.d.admin_token()
        self.post("/v1/skills", {"name": "billing"})

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

    def queue(self, policy, overflow=None):
        self.post("/v1/sla-policies", dict({"name": "fast"}, **policy))
        body = {"name": "billing", "skills": {"billing": 1}, "sla_policy": "fast"}
        if overflow is not None:
            body["overflow"] = overflow
        self.post("/v1/queues", body)

    def agent(self, login, tier=1, role="agent", available=True):
        self.post("/v1/agents", {"login": login, "name": login.title(), "password": login + "-password",
                                 "skills": {"billing": 3}, "tier": tier, "role": role})
        a = self.connect()
        r = a.request({"type": "hello", "role": "agent", "login": login,
                       "password": login + "-password"})
        self.assertEqual(r["type"], "ok", r)
        if available:
            self.assertEqual(a.request({"type": "presence", "status": "available"})["type"],
                             "ok")
        return a

    def supervisor(self):
        s = self.agent("sue", tier=1, role="supervisor", available=False)
        self.assertEqual(s.request({"type": "subscribe", "topics": ["sla"]})["type"], "ok")
        return s

    def customer(self):
        c = self.connect()
        self.assertEqual(c.request({"type": "hello", "role": "customer", "name": "Ana",
                                    "queue": "billing"})["type"], "ok")
        r = c.request({"type": "message", "body": "My invoice is wrong"})
        self.assertEqual(r["type"], "ok", r)
        return c, r["conversation"]

    def kinds(self, conv):
        return self.db("SELECT string_agg(kind, ',' ORDER BY id) FROM conversation_events "
                       "WHERE conversation_id = %d" % conv).split(",")

    def test_first_response_breach_escalates_to_tier2(self):
        # only tier 1 may take it for an hour; the tier-1 agent is away
        self.queue({"first_response_s": 2, "warn_pct": 50},
                   overflow=[{"after_s": 3600, "tier": 2}])
        sup = self.supervisor()
        self.agent("junior", tier=1, available=False)
        senior = self.agent("senior", tier=2)
        c, conv = self.customer()
        t0 = time.time()
        warn = sup.event("sla", timeout=5)
        self.assertEqual((warn["conversation"], warn["timer"], warn["state"]),
                         (conv, "first_response", "warning"))
        self.assertFalse(any(e.get("type") == "offer" for e in senior.events))
        breach = sup.event("sla", timeout=5)
        self.assertEqual((breach["timer"], breach["state"]), ("first_response", "breached"))
        self.assertTrue(breach["due"].endswith("Z"), breach)
        esc = sup.event("escalated", timeout=5)
        self.assertEqual((esc["conversation"], esc["tier"]), (conv, 2))
        self.assertIn("sla_breach", esc["reason"])
        offer = senior.event("offer", timeout=5)
        self.assertGreaterEqual(time.time() - t0, 1.5)
        self.assertEqual((offer["conversation"], offer["tier"]), (conv, 2))
        self.assertEqual(self.db("SELECT tier, priority FROM conversations WHERE id = %d" % conv),
                         "2|1")
        kinds = self.kinds(conv)
        for k in ("enqueued", "sla_warning", "sla_breach", "escalated", "offered"):
            self.assertIn(k, kinds)
        self.assertLess(kinds.index("sla_breach"), kinds.index("offered"))
        status, metrics, _ = self.d.request("GET", "/metrics")
        self.assertIn('contactd_sla_events_total{state="breached"} 1', metrics)
        self.assertIn('contactd_sla_events_total{state="warning"} 1', metrics)

    def test_assigned_agent_gets_warnings_and_a_reply_stops_the_clock(self):
        self.queue({"first_response_s": 2, "warn_pct": 50, "next_response_s": 60})
        alice = self.agent("alice")
        c, conv = self.customer()
        offer = alice.event("offer")
        self.assertEqual(alice.request({"type": "accept", "offer": offer["offer"]})["type"], "ok")
        warn = alice.event("sla", timeout=5)
        self.assertEqual((warn["conversation"], warn["state"]), (conv, "warning"))
        self.assertEqual(alice.request({"type": "message", "conversation": conv,
                                        "body": "Looking at it"})["type"], "ok")
        time.sleep(2.0)
        self.assertFalse(any(e.get("type") == "sla" and e.get("state") == "breached"
                             for e in alice.events), alice.events)
        self.assertEqual(self.db("SELECT stopped_at IS NOT NULL, breached_at IS NULL FROM sla_timers "
                                 "WHERE conversation_id = %d AND timer = 'first_response'" % conv),
                         "t|t")
        # the customer writes again: the next-response clock runs from that message
        c.request({"type": "message", "body": "any news?"})
        self.assertEqual(self.db("SELECT round(extract(epoch FROM due_at - started_at)) "
                                 "FROM sla_timers WHERE conversation_id = %d "
                                 "AND timer = 'next_response' AND stopped_at IS NULL" % conv), "60")
        self.assertNotIn("sla_breach", self.kinds(conv))

    def test_manual_escalate_hands_it_to_a_senior(self):
        self.queue({"first_response_s": 600})
        junior = self.agent("junior", tier=1)
        c, conv = self.customer()
        offer = junior.event("offer")
        self.assertEqual(junior.request({"type": "accept", "offer": offer["offer"]})["type"], "ok")
        senior = self.agent("senior", tier=2)
        r = junior.request({"type": "escalate", "conversation": conv})
        self.assertEqual((r["type"], r["code"]), ("error", "invalid"), r)
        r = junior.request({"type": "escalate", "conversation": conv,
                            "reason": "needs a refund approval", "client_msg_id": "e1"})
        self.assertEqual(r["type"], "ok", r)
        self.assertEqual((r["tier"], r["status"]), (2, "queued"))
        # a retry is answered the same and escalates nothing twice
        again = junior.request({"type": "escalate", "conversation": conv,
                                "reason": "needs a refund approval", "client_msg_id": "e1"})
        self.assertEqual(again["tier"], 2)
        esc = junior.event("escalated")
        self.assertEqual((esc["conversation"], esc["tier"], esc["reason"]),
                         (conv, 2, "needs a refund approval"))
        offer = senior.event("offer", timeout=5)
        self.assertEqual(offer["conversation"], conv)
        self.assertEqual(self.db("SELECT count(*) FROM conversation_events WHERE conversation_id = %d "
                                 "AND kind = 'escalated'" % conv), "1")
        self.assertEqual(self.db("SELECT data->>'reason' FROM conversation_events "
                                 "WHERE conversation_id = %d AND kind = 'escalated'" % conv),
                         "needs a refund approval")
        # someone else's conversation: forbidden
        other = self.agent("other", tier=1)
        r = other.request({"type": "escalate", "conversation": conv, "reason": "x"})
        self.assertEqual((r["type"], r["code"]), ("error", "forbidden"), r)

    def test_pending_pauses_the_resolution_clock(self):
        self.queue({"resolution_s": 3, "warn_pct": 90})
        alice = self.agent("alice")
        c, conv = self.customer()
        offer = alice.event("offer")
        self.assertEqual(alice.request({"type": "accept", "offer": offer["offer"]})["type"], "ok")
        due0 = float(self.db("SELECT extract(epoch FROM due_at) FROM sla_timers "
                             "WHERE conversation_id = %d AND timer = 'resolution'" % conv))
        r = alice.request({"type": "pending", "conversation": conv})
        self.assertEqual((r["type"], r["status"]), ("ok", "pending"), r)
        time.sleep(4.0)
        self.assertNotIn("sla_breach", self.kinds(conv))
        self.assertFalse(any(e.get("type") == "sla" for e in alice.events), alice.events)
        c.request({"type": "message", "body": "here is the info"})
        self.assertEqual(self.db("SELECT status FROM conversations WHERE id = %d" % conv),
                         "assigned")
        paused = float(self.db("SELECT sum(extract(epoch FROM ended_at - started_at)) "
                               "FROM sla_pauses WHERE conversation_id = %d" % conv))
        due1 = float(self.db("SELECT extract(epoch FROM due_at) FROM sla_timers "
                             "WHERE conversation_id = %d AND timer = 'resolution'" % conv))
        self.assertGreater(paused, 3.9)
        self.assertAlmostEqual(due1 - due0, paused, delta=0.01)
        # the clock runs again: the breach comes
        breach = alice.event("escalated", timeout=6)
        self.assertEqual(breach["conversation"], conv)
        self.assertIn("sla_breach", self.kinds(conv))

    def test_timers_due_while_down_fire_once_after_restart(self):
        self.queue({"first_response_s": 2})
        c, conv = self.customer()
        c.close()
        self.clients.remove(c)
        self.d.stop(signal.SIGKILL)
        self.assertEqual(self.db("SELECT count(*) FROM conversation_events WHERE conversation_id = %d "
                                 "AND kind = 'sla_breach'" % conv), "0")
        time.sleep(2.5)
        self.d.start()
        self.d.wait_log("sla_breach", timeout=10)
        self.d.stop(signal.SIGTERM)
        self.d.start()
        time.sleep(1.5)
        self.assertEqual(self.db("SELECT count(*) FROM conversation_events WHERE conversation_id = %d "
                                 "AND kind = 'sla_breach'" % conv), "1")
        self.assertEqual(self.db("SELECT tier, priority FROM conversations WHERE id = %d" % conv),
                         "1|1")  # no agent has a tier above 1: only the priority rises


if __name__ == "__main__":
    harness.main()
