"""tools/contactd-chat, the terminal client, against the real daemon."""
import os
import subprocess
import sys
import time
import unittest

import harness
from harness import DaemonTest, free_port

TOOL = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "contactd-chat")


def read_until(proc, needle, timeout=20):
    deadline = time.time() + timeout
    seen = []
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return seen
    raise AssertionError("no %r in the tool's output:\n%s" % (needle, "".join(seen)))


class Tools(DaemonTest):
    def test_customer_and_agent_talk_through_the_terminal_client(self):
        port = free_port()
        d = self.daemon(listen={"client": "127.0.0.1:%d" % port}).start()
        tok = d.admin_token()
        self.assertEqual(d.request("POST", "/v1/queues", {"name": "general"}, token=tok)[0], 201)
        self.assertEqual(d.request("POST", "/v1/agents", {"login": "ana", "name": "Ana",
                                                          "password": "ana-password"},
                                   token=tok)[0], 201)
        agent = subprocess.Popen([TOOL, "agent", "--port", str(port), "--login", "ana",
                                  "--password", "ana-password"], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True, bufsize=1)
        cust = subprocess.Popen([TOOL, "customer", "--port", str(port), "--name", "Bo"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                bufsize=1)
        try:
            read_until(agent, '"agent": {')
            agent.stdin.write("/available\n")
            read_until(agent, '"status": "available"')
            read_until(cust, '"resume"')
            cust.stdin.write("my parcel is late\n")
            read_until(cust, '"message"')
            offer = [l for l in read_until(agent, '"type": "offer"') if '"offer"' in l][-1]
            offer_id = harness.json.loads(offer[3:])["offer"]
            agent.stdin.write("/accept %d\n" % offer_id)
            read_until(agent, '"type": "assigned"')
            read_until(cust, '"type": "assigned"')
            agent.stdin.write("On it!\n")
            read_until(cust, '"body": "On it!"')
            agent.stdin.write("/pending\n")
            read_until(agent, '"status": "pending"')
            agent.stdin.write("/escalate needs a supervisor\n")
            read_until(agent, '"type": "escalated"')
        finally:
            for p in (agent, cust):
                p.stdin.close()
                p.wait(timeout=10)



class Ports(unittest.TestCase):
    """free_port(): a daemon given one port for two listeners refuses to start."""

    def test_free_ports_are_never_handed_out_twice(self):
        ports = [free_port() for _ in range(300)]
        self.assertEqual(len(set(ports)), len(ports))


class Harness(unittest.TestCase):
    """The harness itself: a test process leaves no database behind on the cluster."""

    def setUp(self):
        harness.need_db(self)

    def _child(self, keep):
        env = dict(os.environ, PYTHONPATH=os.path.dirname(__file__))
        env.pop("CONTACTD_TEST_KEEP_DBS", None)
        if keep:
            env["CONTACTD_TEST_KEEP_DBS"] = "1"
        out = subprocess.run(
            [sys.executable, "-c",
             "import harness; ci = harness.fresh_db(); print(ci.split('dbname=')[1])"],
            env=env, capture_output=True, text=True, timeout=60, check=True)
        return out.stdout.strip()

    def exists(self, name):
        return harness.psql("SELECT count(*) FROM pg_database WHERE datname = '%s'" % name)

    def test_databases_are_dropped_when_the_test_process_exits(self):
        name = self._child(keep=False)
        self.assertTrue(name.startswith("ctd_"), name)
        self.assertEqual(self.exists(name), "0")

    def test_databases_are_kept_on_request(self):
        name = self._child(keep=True)
        try:
            self.assertEqual(self.exists(name), "1")
        finally:
            harness.psql('DROP DATABASE IF EXISTS "%s"' % name)


if __name__ == "__main__":
    harness.main()
