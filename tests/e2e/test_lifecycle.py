"""The process as an operator sees it: CLI modes, start, readiness, reload, drain."""
import os
import signal
import subprocess
import time

import harness
from harness import BIN, Daemon, DaemonTest, free_port


class Cli(DaemonTest):
    def test_version(self):
        r = subprocess.run([BIN, "--version"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r"^contactd \d+\.\d+\.\d+")

    def test_check_config_ok(self):
        d = Daemon(conninfo="dbname=unused")
        r = d.cli("--check-config")
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_check_config_names_file_line_and_key(self):
        d = Daemon(conninfo="dbname=unused")
        d.write_config("[daemon]\nlog_level = info\n[limits]\nmax_frame_bytes = lots\n")
        r = d.cli("--check-config")
        self.assertEqual(r.returncode, 1)
        self.assertIn("%s:4:" % d.config_path, r.stderr)
        self.assertIn("limits.max_frame_bytes", r.stderr)

    def test_check_config_unknown_key(self):
        d = Daemon(conninfo="dbname=unused")
        d.write_config("[listen]\nhttp = 127.0.0.1:1\nhtpps = x\n")
        r = d.cli("--check-config")
        self.assertEqual(r.returncode, 1)
        self.assertIn(":3:", r.stderr)
        self.assertIn("listen.htpps", r.stderr)

    def test_missing_config_file(self):
        r = subprocess.run([BIN, "-c", "/nonexistent/contactd.conf", "--check-config"],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 1)
        self.assertIn("/nonexistent/contactd.conf", r.stderr)

    def test_migrate_twice_changes_nothing(self):
        d = Daemon()
        r1 = d.cli("--migrate")
        self.assertEqual(r1.returncode, 0, r1.stderr)
        self.assertRegex(r1.stdout, r"applied [1-9]\d* migrations?")
        dump1 = harness.psql("SELECT version, name FROM schema_migrations ORDER BY 1",
                             dbname=d.conninfo.split("dbname=")[1])
        r2 = d.cli("--migrate")
        self.assertEqual(r2.returncode, 0, r2.stderr)
        self.assertIn("applied 0 migrations", r2.stdout)
        dump2 = harness.psql("SELECT version, name FROM schema_migrations ORDER BY 1",
                             dbname=d.conninfo.split("dbname=")[1])
        self.assertEqual(dump1, dump2)

    def test_migrate_unreachable_database(self):
        d = Daemon(conninfo="host=127.0.0.1 port=%d dbname=x connect_timeout=2" % free_port())
        r = d.cli("--migrate")
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot connect", r.stderr)

    def test_create_api_token_rejects_bad_scope(self):
        d = Daemon()
        r = d.cli("--create-api-token", "x", "admin,everything")
        self.assertEqual(r.returncode, 1)
        self.assertIn("scopes", r.stderr)


class Running(DaemonTest):
    def test_start_migrates_and_is_ready_then_sigterm_exits_0(self):
        d = self.daemon().start()
        status, body, _ = d.request("GET", "/readyz")
        self.assertEqual(status, 200)
        self.assertEqual(body["status"], "ready")
        status, body, _ = d.request("GET", "/healthz")
        self.assertEqual(status, 200)
        self.assertEqual(d.stop(signal.SIGTERM), 0)
        self.assertIn("event=shutdown", d.log())

    def test_connection_warm_up_keeps_nothing(self):
        """Each pool connection runs the chat path once before it takes work (so that the
        first real batches on it do not pay for planning); none of it is kept, and it takes
        no message, conversation or event id."""
        d = self.daemon()
        self.assertEqual(d.cli("--migrate").returncode, 0)
        dbname = d.conninfo.split("dbname=")[1].split()[0]
        # a queue, so that a chat message of a real customer would be stored
        harness.psql("INSERT INTO queues (name) VALUES ('general')", dbname=dbname)
        d.start()
        for i in range(2):  # the harness's pool_size
            d.wait_log(r"event=store_warmed conn=%d " % i)
        counts = harness.psql("SELECT (SELECT count(*) FROM customers) || ',' || "
                              "(SELECT count(*) FROM conversations) || ',' || "
                              "(SELECT count(*) FROM messages) || ',' || "
                              "(SELECT count(*) FROM events_log) || ',' || "
                              "(SELECT count(*) FROM customer_resume_tokens)", dbname=dbname)
        self.assertEqual(counts.strip(), "0,0,0,0,0")
        # no id of these was taken: a rolled-back events_log id would be a gap the stream
        # waits on (2 s) before the first real event after every (re)connect
        for table in ("events_log", "messages", "conversations"):
            used = harness.psql("SELECT is_called FROM %s" % harness.psql(
                "SELECT pg_get_serial_sequence('%s', 'id')" % table, dbname=dbname).strip(),
                dbname=dbname)
            self.assertEqual(used.strip(), "f", table)
        self.assertNotIn("store_warm_failed", d.log())
        self.assertEqual(d.stop(signal.SIGTERM), 0)

    def test_sigint_exits_0(self):
        d = self.daemon().start()
        self.assertEqual(d.stop(signal.SIGINT), 0)

    def test_not_ready_while_database_unreachable(self):
        port = free_port()
        d = self.daemon(conninfo="host=127.0.0.1 port=%d dbname=x connect_timeout=2" % port)
        d.start(wait_ready=False)
        status, body, resp = d.request("GET", "/readyz")
        self.assertEqual(status, 503)
        self.assertEqual(body["status"], "not_ready")
        self.assertIsNotNone(resp.getheader("Retry-After"))
        # liveness stays green, writes are refused with 503
        self.assertEqual(d.request("GET", "/healthz")[0], 200)
        status, body, resp = d.request("GET", "/v1/skills", token="ctd_whatever")
        self.assertEqual(status, 503)
        self.assertEqual(body["error"]["code"], "unavailable")
        self.assertIsNotNone(resp.getheader("Retry-After"))

    def test_metrics(self):
        d = self.daemon().start()
        d.request("GET", "/healthz")
        status, text, resp = d.request("GET", "/metrics")
        self.assertEqual(status, 200)
        self.assertTrue(resp.getheader("Content-Type").startswith("text/plain"))
        for name in ("contactd_build_info{", "contactd_store_up 1", "contactd_ready 1",
                     "contactd_connections_accepted_total{listener=\"http\"}",
                     "contactd_store_query_seconds_bucket{le=\"+Inf\"}",
                     "contactd_store_query_seconds_count"):
            self.assertIn(name, text)

    def test_sighup_with_bad_file_keeps_old_config(self):
        d = self.daemon().start()
        good = open(d.config_path).read()
        d.write_config(good + "[limits]\nmax_connections = -5\n")
        d.kill(signal.SIGHUP)
        d.wait_log(r"event=reload_failed .*limits\.max_connections")
        self.assertEqual(d.request("GET", "/readyz")[0], 200)
        self.assertIsNone(d.proc.poll())

    def test_sighup_moves_the_http_listener(self):
        d = self.daemon().start()
        new_port = free_port()
        d.listen["http"] = "127.0.0.1:%d" % new_port
        d.write_config()
        d.kill(signal.SIGHUP)
        d.wait_log(r"event=reloaded")
        self.assertEqual(d.request("GET", "/healthz", port=new_port)[0], 200)
        with self.assertRaises(OSError):
            d.request("GET", "/healthz", timeout=2)
        d.http_port = new_port

    def test_sighup_is_all_or_nothing(self):
        # the http listener could move, but the new client_tls listener cannot be built:
        # nothing of the new file may be applied
        d = self.daemon().start()
        junk = d.dir + "/junk.pem"
        with open(junk, "w") as f:
            f.write("not a certificate\n")
        old_port = d.http_port
        d.listen["http"] = "127.0.0.1:%d" % free_port()
        d.listen["client_tls"] = "127.0.0.1:%d" % free_port()
        d.extra.update({"tls.cert_file": junk, "tls.key_file": junk})
        d.write_config()
        d.kill(signal.SIGHUP)
        d.wait_log(r"event=reload_failed")
        self.assertEqual(d.request("GET", "/healthz", port=old_port)[0], 200)
        self.assertNotIn("listener_moved", d.log())

    def test_sighup_changes_log_level(self):
        d = self.daemon().start()
        d.extra["daemon.log_level"] = "warn"
        d.write_config()
        d.kill(signal.SIGHUP)
        d.wait_log(r"event=reloaded .*log_level=warn")

    def test_unknown_path_and_method(self):
        d = self.daemon().start()
        status, body, _ = d.request("GET", "/nope")
        self.assertEqual(status, 404)
        self.assertEqual(body["error"]["code"], "not_found")
        status, body, resp = d.request("POST", "/healthz", body={})
        self.assertEqual(status, 405)
        self.assertEqual(resp.getheader("Allow"), "GET")

    def test_listen_conflict_fails_start(self):
        busy = self.daemon().start()
        d = self.daemon()
        d.listen["http"] = "127.0.0.1:%d" % busy.http_port
        d.write_config()
        proc = subprocess.run([BIN, "-c", d.config_path], capture_output=True, text=True,
                              timeout=30)
        self.assertEqual(proc.returncode, 1)
        self.assertIn("cannot bind", proc.stderr)


if __name__ == "__main__":
    harness.main()
