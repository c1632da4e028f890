"""POST /v1/events (any other channel), POST /v1/phone/events, and one customer across
channels: identities, GET /v1/customers/{id}, merge and its undo — over real HTTP, with the
router and an agent's desktop over NDJSON."""
import harness
from harness import DaemonTest, Ndjson, free_port


class EventsApi(DaemonTest):
    def setUp(self):
        super().setUp()
        self.clients = []
        self.cport = free_port()
        self.d = self.daemon(listen={"client": "127.0.0.1:%d" % self.cport}).start()
        self.admin = self.d.admin_token()
        self.events = self.d.admin_token(scopes="events:write", name="integrator")
        self.reader = self.d.admin_token(scopes="conversations:read", name="reader")
        self.writer = self.d.admin_token(scopes="conversations:write", name="writer")
        self.req("POST", "/v1/queues", {"name": "social"}, self.admin, 201)

    def tearDown(self):
        for c in self.clients:
            c.close()
        super().tearDown()

    def req(self, method, path, body, token, want=None, headers=None):
        status, obj, hdrs = self.d.request(method, path, body, token=token, headers=headers)
        if want is not None:
            self.assertEqual(status, want, obj)
        return status, obj, hdrs

    def db(self, sql):
        return harness.psql(sql, dbname=self.d.conninfo.split("dbname=")[1])

    def agent(self, login):
        self.req("POST", "/v1/agents", {"login": login, "name": login.title(),
                                        "password": login + "-password"}, self.admin, 201)
        a = Ndjson(self.cport)
        self.clients.append(a)
        self.assertEqual(a.request({"type": "hello", "role": "agent", "login": login,
                                    "password": login + "-password"})["type"], "ok")
        self.assertEqual(a.request({"type": "presence", "status": "available"})["type"], "ok")
        return a

    def test_event_opens_a_conversation_once_and_is_routed(self):
        ev = {"channel": "whatsapp", "from": {"phone": "+34 600 000 001", "name": "Ana"},
              "body": "Hola", "external_id": "wamid.1", "subject": "Pedido"}
        _, first, _ = self.req("POST", "/v1/events", ev, self.events, 201)
        self.assertEqual(set(first), {"conversation", "message", "customer"})
        _, again, _ = self.req("POST", "/v1/events", ev, self.events, 200)
        self.assertEqual(again, first)
        self.assertEqual(self.db("SELECT count(*) FROM messages WHERE external_id = 'wamid.1'"), "1")
        self.assertEqual(self.db("SELECT channel, status, subject FROM conversations WHERE id = %d"
                                 % first["conversation"]), "whatsapp|queued|Pedido")
        bea = self.agent("bea")
        offer = bea.event("offer")
        self.assertEqual((offer["conversation"], offer["channel"]),
                         (first["conversation"], "whatsapp"))
        bea.request({"type": "accept", "offer": offer["offer"]})
        # the next message of the same customer on that channel joins the conversation and
        # reaches the agent
        _, nxt, _ = self.req("POST", "/v1/events",
                             {"channel": "whatsapp", "from": {"phone": "+34600000001"},
                              "body": "¿Hay noticias?", "external_id": "wamid.2"}, self.events, 201)
        self.assertEqual(nxt["conversation"], first["conversation"])
        self.assertEqual(bea.event("message")["conversation"], first["conversation"])

    def test_errors_scopes_and_idempotency_key(self):
        self.req("POST", "/v1/events", {"channel": "sms"}, None, 401)
        self.req("POST", "/v1/events", {"channel": "sms"}, self.reader, 403)
        _, err, _ = self.req("POST", "/v1/events", {"channel": "fax", "from": {"email": "a@b.c"},
                                                    "body": "x"}, self.events, 400)
        self.assertEqual(err["error"]["field"], "channel")
        _, err, _ = self.req("POST", "/v1/events", {"channel": "sms", "from": {}, "body": "x"},
                             self.events, 400)
        self.assertEqual(err["error"]["field"], "from")
        _, err, _ = self.req("POST", "/v1/events", {"channel": "sms",
                                                    "from": {"phone": "12"}, "body": "x"},
                             self.events, 400)
        self.assertEqual(err["error"]["field"], "from.phone")
        _, err, _ = self.req("POST", "/v1/events", {"channel": "sms",
                                                    "from": {"email": "a@b.c"}, "body": " "},
                             self.events, 400)
        self.assertEqual(err["error"]["field"], "body")
        self.req("GET", "/v1/events", None, self.events, 405)
        # without external_id, the Idempotency-Key makes a retry safe
        ev = {"channel": "web", "from": {"email": "Form@Example.com"}, "body": "contact form"}
        h = {"Idempotency-Key": "form-77"}
        _, a, _ = self.req("POST", "/v1/events", ev, self.events, 201, headers=h)
        _, b, hdrs = self.req("POST", "/v1/events", ev, self.events, 201, headers=h)
        self.assertEqual(a, b)
        self.assertEqual(self.db("SELECT count(*) FROM messages WHERE body = 'contact form'"), "1")
        self.req("POST", "/v1/events", dict(ev, body="other"), self.events, 409, headers=h)

    def test_one_customer_across_channels_merge_and_undo(self):
        _, sms, _ = self.req("POST", "/v1/events",
                             {"channel": "sms", "from": {"phone": "+48600100200", "name": "Ola"},
                              "body": "sms here"}, self.events, 201)
        # the same phone number on another channel, plus an e-mail: same customer, both kept
        _, web, _ = self.req("POST", "/v1/events",
                             {"channel": "web", "from": {"phone": "+48 600-100-200",
                                                         "email": "OLA@example.com"},
                              "body": "web form"}, self.events, 201)
        self.assertEqual(web["customer"], sms["customer"])
        _, other, _ = self.req("POST", "/v1/events",
                               {"channel": "social", "from": {"external_id": "fb:991"},
                                "body": "dm"}, self.events, 201)
        self.assertNotEqual(other["customer"], sms["customer"])
        _, cust, _ = self.req("GET", "/v1/customers/%d" % sms["customer"], None, self.reader, 200)
        self.assertEqual(sorted((i["kind"], i["value"]) for i in cust["identities"]),
                         [("email", "ola@example.com"), ("phone", "+48600100200")])
        self.assertEqual(cust["conversations"]["total"], 2)
        self.req("GET", "/v1/customers/999999", None, self.reader, 404)
        # merge the social profile into Ola
        self.req("POST", "/v1/customers/%d/merge" % other["customer"],
                 {"into": sms["customer"]}, self.reader, 403)
        _, m, _ = self.req("POST", "/v1/customers/%d/merge" % other["customer"],
                           {"into": sms["customer"]}, self.writer, 200)
        self.assertEqual((m["identities"], m["conversations"]), (1, 1))
        _, cust, _ = self.req("GET", "/v1/customers/%d" % sms["customer"], None, self.reader, 200)
        self.assertEqual(cust["conversations"]["total"], 3)
        _, gone, _ = self.req("GET", "/v1/customers/%d" % other["customer"], None, self.reader, 200)
        self.assertEqual(gone["merged_into"], sms["customer"])
        # a new message from the merged profile lands with the survivor
        _, dm2, _ = self.req("POST", "/v1/events",
                             {"channel": "social", "from": {"external_id": "fb:991"},
                              "body": "dm again"}, self.events, 201)
        self.assertEqual(dm2["customer"], sms["customer"])
        self.assertIn("merged", self.db("SELECT string_agg(kind, ',') FROM conversation_events "
                                        "WHERE conversation_id = %d" % other["conversation"]))
        self.req("POST", "/v1/customers/%d/merge" % other["customer"],
                 {"into": sms["customer"]}, self.writer, 409)
        # undo
        _, u, _ = self.req("POST", "/v1/customers/%d/unmerge" % other["customer"], None,
                           self.writer, 200)
        self.assertEqual((u["identities"], u["conversations"]), (1, 1))
        _, back, _ = self.req("GET", "/v1/customers/%d" % other["customer"], None, self.reader, 200)
        self.assertIsNone(back["merged_into"])
        self.assertEqual([i["value"] for i in back["identities"]], ["fb:991"])
        self.req("POST", "/v1/customers/%d/unmerge" % other["customer"], None, self.writer, 409)

    def test_phone_events_over_http(self):
        ev = {"event": "queued", "call_id": "http-call-1", "from": "+15550001111",
              "queue": "social", "event_id": "x1"}
        _, r, _ = self.req("POST", "/v1/phone/events", ev, self.events, 200)
        self.assertEqual((r["state"], r["duplicate"]), ("queued", False))
        _, r2, _ = self.req("POST", "/v1/phone/events", ev, self.events, 200)
        self.assertTrue(r2["duplicate"])
        self.assertEqual(r2["conversation"], r["conversation"])
        self.post_abandon = self.req("POST", "/v1/phone/events",
                                     {"event": "abandoned", "call_id": "http-call-1"},
                                     self.events, 200)
        self.assertEqual(self.db("SELECT status FROM conversations WHERE id = %d"
                                 % r["conversation"]), "abandoned")
        _, err, _ = self.req("POST", "/v1/phone/events", {"event": "nope", "call_id": "c"},
                             self.events, 400)
        self.assertEqual(err["error"]["field"], "event")


if __name__ == "__main__":
    harness.main()
