"""The administration API of SPEC §4 over real HTTP: every resource, every status code."""
import json
import threading

import harness
from harness import DaemonTest


class AdminApi(DaemonTest):
    def setUp(self):
        super().setUp()
        self.d = self.daemon(extra={"limits.max_http_body_bytes": "4096"}).start()
        self.token = self.d.admin_token("admin")

    def req(self, method, path, body=None, token=True, **kw):
        return self.d.request(method, path, body=body,
                              token=self.token if token is True else token, **kw)

    def create(self, kind, body):
        status, obj, _ = self.req("POST", "/v1/" + kind, body)
        self.assertEqual(status, 201, obj)
        self.assertIsInstance(obj["id"], int)
        return obj

    def assert_error(self, resp, status, code, field=None):
        self.assertEqual(resp[0], status, resp[1])
        self.assertEqual(resp[1]["error"]["code"], code, resp[1])
        self.assertTrue(resp[1]["error"]["message"])
        if field:
            self.assertEqual(resp[1]["error"].get("field"), field, resp[1])

    # --- authentication and scopes --------------------------------------------------------

    def test_401_without_or_with_a_bad_token(self):
        r = self.req("GET", "/v1/skills", token=None)
        self.assert_error(r, 401, "unauthorized")
        self.assertEqual(r[2].getheader("WWW-Authenticate"), "Bearer")
        self.assert_error(self.req("GET", "/v1/skills", token="ctd_not-a-real-token"), 401,
                          "unauthorized")
        self.assert_error(self.d.request("GET", "/v1/skills",
                                         headers={"Authorization": "Basic YTpi"}),
                          401, "unauthorized")

    def test_403_without_the_admin_scope(self):
        reader = self.d.admin_token("reports:read,conversations:read")
        self.assert_error(self.req("GET", "/v1/skills", token=reader), 403, "forbidden")
        self.assert_error(self.req("POST", "/v1/skills", {"name": "x"}, token=reader), 403,
                          "forbidden")

    def test_api_tokens_created_over_http_work_and_revoke(self):
        created = self.create("api-tokens", {"name": "dash", "scopes": ["reports:read"]})
        tok = created["token"]
        self.assertTrue(tok.startswith("ctd_"))
        self.assertNotIn("token_hash", created)
        status, listed, _ = self.req("GET", "/v1/api-tokens")
        self.assertEqual(status, 200)
        text = json.dumps(listed)
        self.assertNotIn(tok, text)
        self.assertNotIn("token_hash", text)
        # the new token authenticates but lacks admin
        self.assert_error(self.req("GET", "/v1/skills", token=tok), 403, "forbidden")
        admin2 = self.create("api-tokens", {"name": "ops", "scopes": ["admin"]})["token"]
        self.assertEqual(self.req("GET", "/v1/skills", token=admin2)[0], 200)
        self.assertEqual(self.req("DELETE", "/v1/api-tokens/ops")[0], 200)
        self.assert_error(self.req("GET", "/v1/skills", token=admin2), 401, "unauthorized")

    def concurrently(self, n, token):
        """N requests with TOKEN at once, each on its own connection: their statuses."""
        statuses = [None] * n
        go = threading.Barrier(n)

        def one(i):
            go.wait()
            statuses[i] = self.req("GET", "/v1/skills", token=token)[0]
        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        return statuses

    def lookups(self):
        return self.d.log().count("query=token_lookup ")

    def test_concurrent_requests_with_one_token_share_its_lookup(self):
        # a busy integrator's connections: one store lookup for the token, not one each
        tok = self.d.admin_token("admin")
        before = self.lookups()
        self.assertEqual(self.concurrently(20, tok), [200] * 20)
        self.assertEqual(self.lookups() - before, 1)
        # an unknown token: every waiter hears 401 (and nothing is cached for it)
        self.assertEqual(self.concurrently(10, "ctd_unknown-token"), [401] * 10)
        # a revoked token is refused from the next request on, whatever is cached
        ops = self.create("api-tokens", {"name": "ops2", "scopes": ["admin"]})["token"]
        self.assertEqual(self.concurrently(5, ops), [200] * 5)
        self.assertEqual(self.req("DELETE", "/v1/api-tokens/ops2")[0], 200)
        self.assertEqual(self.concurrently(5, ops), [401] * 5)

    def test_api_token_bad_scope(self):
        self.assert_error(self.req("POST", "/v1/api-tokens", {"name": "x", "scopes": ["root"]}),
                          400, "invalid", "scopes")
        self.assert_error(self.req("POST", "/v1/api-tokens",
                                   {"name": "x", "scopes": ["admin"], "token_hash": "00"}),
                          400, "invalid")

    # --- skills: the whole life cycle and paging -------------------------------------------

    def test_skills_crud_and_paging(self):
        ids = [self.create("skills", {"name": "s%d" % i})["id"] for i in range(5)]
        status, obj, _ = self.req("GET", "/v1/skills/%d" % ids[0])
        self.assertEqual((status, obj["name"]), (200, "s0"))
        status, obj, _ = self.req("GET", "/v1/skills/s1")
        self.assertEqual((status, obj["id"]), (200, ids[1]))

        seen, after = [], None
        while True:
            path = "/v1/skills?limit=2" + ("&after=" + after if after else "")
            status, page, _ = self.req("GET", path)
            self.assertEqual(status, 200)
            self.assertLessEqual(len(page["items"]), 2)
            seen += [i["id"] for i in page["items"]]
            after = page["next"]
            if after is None:
                break
            self.assertIsInstance(after, str)
        self.assertEqual(seen, ids)

        status, obj, _ = self.req("PUT", "/v1/skills/s2", {"name": "renamed"})
        self.assertEqual((status, obj["name"], obj["id"]), (200, "renamed", ids[2]))
        self.assert_error(self.req("GET", "/v1/skills/s2"), 404, "not_found")
        self.assertEqual(self.req("DELETE", "/v1/skills/renamed")[0], 200)
        self.assert_error(self.req("GET", "/v1/skills/%d" % ids[2]), 404, "not_found")
        self.assert_error(self.req("DELETE", "/v1/skills/renamed"), 404, "not_found")

    def test_409_on_duplicate_name(self):
        self.create("skills", {"name": "billing"})
        self.assert_error(self.req("POST", "/v1/skills", {"name": "billing"}), 409, "conflict")
        self.create("skills", {"name": "other"})
        self.assert_error(self.req("PUT", "/v1/skills/other", {"name": "billing"}), 409,
                          "conflict")

    def test_400_names_the_bad_field(self):
        self.assert_error(self.req("POST", "/v1/skills", {"name": 42}), 400, "invalid", "name")
        self.assert_error(self.req("POST", "/v1/skills", {}), 400, "invalid", "name")
        self.assert_error(self.req("POST", "/v1/skills", {"name": "ok", "colour": "red"}),
                          400, "invalid", "colour")
        self.assert_error(self.d.request("POST", "/v1/skills", raw=b"{not json",
                                         token=self.token), 400, "invalid", "body")
        self.assert_error(self.req("POST", "/v1/skills", [1, 2]), 400, "invalid", "body")
        self.assert_error(self.req("GET", "/v1/skills?limit=0"), 400, "invalid", "limit")
        self.assert_error(self.req("GET", "/v1/skills?limit=abc"), 400, "invalid", "limit")
        self.assert_error(self.req("GET", "/v1/skills?after=xyz"), 400, "invalid", "after")

    def test_413_over_the_body_limit(self):
        # just over the limit (4096 here): our JSON error
        self.assert_error(self.req("POST", "/v1/skills", {"name": "x" * 5000}), 413,
                          "too_large", "body")
        # far over it: refused by the HTTP layer before the body is read
        status, _, _ = self.req("POST", "/v1/skills", {"name": "x" * 100000})
        self.assertEqual(status, 413)
        self.assertEqual(self.req("GET", "/readyz")[0], 200)

    def test_404_and_405(self):
        self.assert_error(self.req("GET", "/v1/nothing"), 404, "not_found")
        self.assert_error(self.req("GET", "/v1/queues/nosuch"), 404, "not_found")
        r = self.req("DELETE", "/v1/skills")
        self.assert_error(r, 405, "method_not_allowed")

    # --- the other resources ---------------------------------------------------------------

    def test_sla_policies(self):
        body = {"name": "standard", "first_response_s": 300, "next_response_s": 600,
                "resolution_s": 86400, "warn_pct": 80, "timezone": "Europe/Madrid",
                "hours": {"mon": ["09:00-17:00"], "fri": ["09:00-13:00", "14:00-18:00"]},
                "holidays": ["2026-12-25"]}
        obj = self.create("sla-policies", body)
        for k, v in body.items():
            self.assertEqual(obj[k], v, k)
        self.assert_error(self.req("POST", "/v1/sla-policies",
                                   dict(body, name="b", timezone="Mars/Olympus")),
                          400, "invalid", "timezone")
        self.assert_error(self.req("POST", "/v1/sla-policies",
                                   dict(body, name="c", hours={"mon": ["17:00-09:00"]})),
                          400, "invalid", "hours")
        self.assert_error(self.req("POST", "/v1/sla-policies",
                                   dict(body, name="d", holidays=["2026-13-45"])),
                          400, "invalid", "holidays")
        status, obj, _ = self.req("PUT", "/v1/sla-policies/standard", {"hours": None})
        self.assertEqual((status, obj["hours"], obj["first_response_s"]), (200, None, 300))

    def test_queues_and_inboxes(self):
        self.create("skills", {"name": "billing"})
        self.create("sla-policies", {"name": "std", "first_response_s": 60})
        q = self.create("queues", {"name": "billing", "skills": {"billing": 2}, "priority": 5,
                                   "sla_policy": "std", "service_level_s": 30,
                                   "overflow": [{"after_s": 60, "tier": 2}]})
        self.assertEqual(q["skills"], {"billing": 2})
        self.assertEqual(q["sla_policy"], "std")
        self.assertEqual(q["overflow"], [{"after_s": 60, "tier": 2}])
        self.assert_error(self.req("POST", "/v1/queues",
                                   {"name": "x", "skills": {"nosuch": 1}}), 400, "invalid",
                          "skills")
        self.assert_error(self.req("POST", "/v1/queues",
                                   {"name": "y", "skills": {"billing": 9}}), 400, "invalid",
                          "skills")
        inbox = self.create("inboxes", {"address": "Support@Example.com", "queue": "billing"})
        self.assertEqual(inbox["address"], "support@example.com")
        self.assertEqual(inbox["queue"], "billing")
        self.assert_error(self.req("POST", "/v1/inboxes",
                                   {"address": "support@example.com", "queue": "billing"}),
                          409, "conflict")
        # a queue that an inbox feeds cannot go away
        self.assert_error(self.req("DELETE", "/v1/queues/billing"), 409, "conflict")
        self.assertEqual(self.req("DELETE", "/v1/inboxes/support@example.com")[0], 200)
        self.assertEqual(self.req("DELETE", "/v1/queues/billing")[0], 200)

    def test_agents_never_return_passwords(self):
        self.create("skills", {"name": "billing"})
        a = self.create("agents", {"login": "alice", "name": "Alice", "password": "s3cret-pass",
                                   "role": "agent", "tier": 1, "skills": {"billing": 3},
                                   "capacity": {"chat": 2}, "extension": "1001"})
        self.assertEqual(a["capacity"], {"chat": 2, "email": 5, "voice": 1})
        self.assertEqual(a["skills"], {"billing": 3})
        for resp in (a, self.req("GET", "/v1/agents/alice")[1], self.req("GET", "/v1/agents")[1]):
            text = json.dumps(resp)
            self.assertNotIn("s3cret-pass", text)
            self.assertNotIn("password", text)
            self.assertNotIn("argon2", text)
        stored = harness.psql("SELECT password_hash FROM agents WHERE login = 'alice'",
                              dbname=self.d.conninfo.split("dbname=")[1])
        self.assertTrue(stored.startswith("$argon2id$"), stored)
        self.assert_error(self.req("POST", "/v1/agents", {"login": "bob", "name": "Bob",
                                                          "password": "short"}),
                          400, "invalid", "password")
        self.assert_error(self.req("POST", "/v1/agents", {"login": "bob", "name": "Bob",
                                                          "password": "long-enough",
                                                          "role": "king"}),
                          400, "invalid", "role")
        status, upd, _ = self.req("PUT", "/v1/agents/alice", {"password": "another-pass",
                                                               "tier": 2})
        self.assertEqual((status, upd["tier"]), (200, 2))
        stored2 = harness.psql("SELECT password_hash FROM agents WHERE login = 'alice'",
                               dbname=self.d.conninfo.split("dbname=")[1])
        self.assertNotEqual(stored, stored2)
        self.assertEqual(self.req("DELETE", "/v1/agents/alice")[0], 200)
        self.assert_error(self.req("GET", "/v1/agents/alice"), 404, "not_found")
        # the login is free again
        self.create("agents", {"login": "alice", "name": "Alice 2", "password": "s3cret-pass"})

    def test_writes_are_committed_before_the_reply(self):
        obj = self.create("skills", {"name": "durable"})
        count = harness.psql("SELECT count(*) FROM skills WHERE id = %d" % obj["id"],
                             dbname=self.d.conninfo.split("dbname=")[1])
        self.assertEqual(count, "1")


if __name__ == "__main__":
    harness.main()
