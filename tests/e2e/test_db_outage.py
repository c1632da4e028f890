"""PostgreSQL goes away under the running daemon: it keeps running, answers 503, and comes
back by itself when the database does."""
import os
import subprocess
import tempfile
import time

import harness
from harness import DaemonTest

SANDBOX = os.environ.get("CONTACTD_PG_SANDBOX") or os.path.join(
    os.path.dirname(__file__), "..", "..", "scripts", "pg-sandbox")


class DbOutage(DaemonTest):
    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp(prefix="ctd-outage-", dir="/tmp")
        os.rmdir(self.dir)
        r = subprocess.run([SANDBOX, "start", "--dir", self.dir, "--fsync", "off"],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.conninfo = r.stdout.strip()

    def tearDown(self):
        super().tearDown()
        subprocess.run([SANDBOX, "stop", self.dir], capture_output=True, timeout=120)

    def test_503_while_down_then_recovers(self):
        d = self.daemon(conninfo=self.conninfo).start()
        token = d.admin_token("admin")
        self.assertEqual(d.request("POST", "/v1/skills", {"name": "before"}, token=token)[0], 201)

        r = subprocess.run([SANDBOX, "stop", self.dir, "--keep"], capture_output=True,
                           text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        d.wait_log(r"event=store_disconnected")
        deadline = time.time() + 15
        while d.request("GET", "/readyz")[0] != 503 and time.time() < deadline:
            time.sleep(0.1)
        self.assertEqual(d.request("GET", "/readyz")[0], 503)
        self.assertEqual(d.request("GET", "/healthz")[0], 200)
        status, body, resp = d.request("POST", "/v1/skills", {"name": "during"}, token=token)
        self.assertEqual(status, 503)
        self.assertEqual(body["error"]["code"], "unavailable")
        self.assertEqual(resp.getheader("Retry-After"), "1")

        r = subprocess.run([SANDBOX, "resume", self.dir], capture_output=True, text=True,
                           timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        d.wait_ready(timeout=30)
        self.assertEqual(d.request("POST", "/v1/skills", {"name": "after"}, token=token)[0], 201)
        status, body, _ = d.request("GET", "/v1/skills", token=token)
        self.assertEqual([s["name"] for s in body["items"]], ["before", "after"])
        self.assertIsNone(d.proc.poll())


if __name__ == "__main__":
    harness.main()
