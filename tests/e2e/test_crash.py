"""kill -9 in the middle of traffic: every acknowledged message is in the store after a
restart, and the rebuilt router never gives one conversation to two agents."""
import signal
import socket
import threading
import time

import harness
from harness import DaemonTest, Ndjson, free_port


class Crash(DaemonTest):
    def test_sigkill_loses_no_acknowledged_message(self):
        port = free_port()
        d = self.daemon(listen={"client": "127.0.0.1:%d" % port}).start()
        tok = d.admin_token()
        self.assertEqual(d.request("POST", "/v1/queues", {"name": "general"}, token=tok)[0], 201)
        acked = []
        lock = threading.Lock()
        stop = threading.Event()

        def customer(i):
            c = Ndjson(port)
            try:
                c.request({"type": "hello", "role": "customer", "name": "c%d" % i})
                k = 0
                while not stop.is_set():
                    k += 1
                    r = c.request({"type": "message", "body": "c%d m%d" % (i, k),
                                   "client_msg_id": "c%d-%d" % (i, k)})
                    if r.get("type") == "ok":
                        with lock:
                            acked.append(r["message"])
            except (OSError, AssertionError, ValueError):
                pass  # the daemon died under us: expected
            finally:
                c.close()

        threads = [threading.Thread(target=customer, args=(i,)) for i in range(10)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
        stop.set()
        for t in threads:
            t.join(10)
        with lock:
            ids = list(acked)
        self.assertGreater(len(ids), 20)
        # restart on the same database: nothing acknowledged is missing
        d.start()
        stored = harness.psql("SELECT count(*) FROM messages WHERE id IN (%s)" %
                              ",".join(map(str, ids)), dbname=d.conninfo.split("dbname=")[1])
        self.assertEqual(int(stored), len(ids))

    def test_sigkill_with_offers_in_flight_never_double_assigns(self):
        port = free_port()
        d = self.daemon(listen={"client": "127.0.0.1:%d" % port},
                        extra={"routing.offer_timeout_s": "2"}).start()
        tok = d.admin_token()
        d.request("POST", "/v1/queues", {"name": "general"}, token=tok)
        for login in ("a1", "a2"):
            d.request("POST", "/v1/agents", {"login": login, "password": login + "-password",
                                             "capacity": {"chat": 5}}, token=tok)
        a1 = Ndjson(port)
        a1.request({"type": "hello", "role": "agent", "login": "a1", "password": "a1-password"})
        a1.request({"type": "presence", "status": "available"})
        customers = []
        for i in range(3):
            c = Ndjson(port)
            c.request({"type": "hello", "role": "customer"})
            c.request({"type": "message", "body": "hello %d" % i})
            customers.append(c)
        a1.event("offer")  # offers are out, none accepted
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
        for c in customers + [a1]:
            c.close()
        d.start()
        agents = []
        for login in ("a1", "a2"):
            a = Ndjson(port)
            a.request({"type": "hello", "role": "agent", "login": login,
                       "password": login + "-password"})
            a.request({"type": "presence", "status": "available"})
            agents.append(a)
        # every offer that arrives is accepted; each conversation ends with one agent
        deadline = time.time() + 15
        assigned = 0
        while time.time() < deadline and assigned < 3:
            for a in agents:
                try:
                    o = a.event("offer", timeout=0.3)
                except (AssertionError, socket.timeout, TimeoutError):
                    continue
                r = a.request({"type": "accept", "offer": o["offer"]})
                if r["type"] == "ok":
                    assigned += 1
        self.assertEqual(assigned, 3)
        rows = harness.psql("SELECT count(*) FROM offers WHERE state = 'accepted'",
                            dbname=d.conninfo.split("dbname=")[1])
        self.assertEqual(rows, "3")
        pending = harness.psql("SELECT count(*) FROM offers WHERE state = 'pending'",
                               dbname=d.conninfo.split("dbname=")[1])
        self.assertEqual(pending, "0")
        for a in agents:
            a.close()


if __name__ == "__main__":
    harness.main()
