"""The lmtp and smtp listeners (SPEC §3): 250 only after the commit, 550 for an unknown
inbox, 552 beyond limits.max_email_bytes, the same Message-ID stored once, threading by
In-Reply-To / References and by a [#ID] subject token (only from the conversation's own
customer), per-recipient LMTP replies, dot-unstuffing, STARTTLS and the SMTP listener."""
import email
import json
import email.policy
import os
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile
import threading
import time

import harness
from harness import DaemonTest, Ndjson, free_port

PKI = None


def pki():
    global PKI
    if PKI is None:
        PKI = tempfile.mkdtemp(prefix="contactd-email-pki-")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=localhost", "-keyout", PKI + "/server.key", "-out",
                        PKI + "/server.pem"], check=True, capture_output=True, timeout=60)
    return PKI


def mail(subject="Hello", sender="Ana <ana@example.com>", to="support@example.com",
         message_id=None, body="Hi there.\r\n", headers=()):
    h = ["From: " + sender, "To: " + to, "Subject: " + subject,
         "Date: Tue, 24 Nov 2026 10:00:00 +0000"]
    if message_id:
        h.append("Message-ID: <%s>" % message_id)
    h += list(headers)
    return ("\r\n".join(h) + "\r\n\r\n" + body).encode()


class Raw:
    """A line-level LMTP/SMTP client, for what smtplib cannot show (per-recipient replies)."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed; got %r" % self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode()

    def reply(self):
        """A whole (multi-line) reply: (code, [lines])."""
        lines = [self.line()]
        while lines[-1][3:4] == "-":
            lines.append(self.line())
        return int(lines[-1][:3]), lines

    def send(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def close(self):
        self.sock.close()


class Sink:
    """A tiny SMTP server catching the relay's output. PLAN lists, per mail transaction
    (MAIL command; the relay may reuse its connection), what to answer: "ok", "451" (a temporary failure after DATA) or "550" (the recipient refused);
    the last entry repeats."""

    def __init__(self, plan=("ok",)):
        self.plan = list(plan)
        self.mails = []  # (mail_from, [rcpt], bytes)
        self.attempts = 0
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(16)
        self.port = self.srv.getsockname()[1]
        self.lock = threading.Lock()
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn):
        mode = "ok"
        f = conn.makefile("rb")
        conn.settimeout(20)

        def say(line):
            conn.sendall(line.encode() + b"\r\n")
        try:
            say("220 sink ESMTP")
            sender, rcpts = None, []
            while True:
                line = f.readline()
                if not line:
                    return
                cmd = line.decode(errors="replace").strip()
                verb = cmd.split(" ", 1)[0].upper()
                if verb in ("EHLO", "HELO"):
                    say("250-sink")
                    say("250 8BITMIME")
                elif verb == "MAIL":
                    with self.lock:
                        mode = self.plan[min(self.attempts, len(self.plan) - 1)]
                        self.attempts += 1
                    sender, rcpts = cmd[10:].strip(), []
                    say("250 ok")
                elif verb == "RCPT":
                    if mode == "550":
                        say("550 5.1.1 no such user")
                    else:
                        rcpts.append(cmd[8:].strip())
                        say("250 ok")
                elif verb == "DATA":
                    say("354 go")
                    data = b""
                    while True:
                        l = f.readline()
                        if l in (b".\r\n", b""):
                            break
                        data += l[1:] if l.startswith(b"..") else l
                    if mode == "451":
                        say("451 4.3.0 try later")
                    else:
                        with self.lock:
                            self.mails.append((sender, rcpts, data))
                        say("250 queued")
                elif verb == "QUIT":
                    say("221 bye")
                    return
                else:
                    say("250 ok")
        except OSError:
            pass
        finally:
            conn.close()

    def wait(self, n=1, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                if len(self.mails) >= n:
                    return self.mails[n - 1]
            time.sleep(0.05)
        raise AssertionError("the sink got %d mails, wanted %d" % (len(self.mails), n))

    def close(self):
        self.srv.close()


class Email(DaemonTest):
    extra = {}

    def setUp(self):
        super().setUp()
        self.lport = free_port()
        self.sport = free_port()
        extra = {"tls.cert_file": pki() + "/server.pem", "tls.key_file": pki() + "/server.key",
                 "limits.max_email_bytes": "65536"}
        extra.update(self.extra)
        self.d = self.daemon(listen={"lmtp": "127.0.0.1:%d" % self.lport,
                                    "smtp": "127.0.0.1:%d" % self.sport},
                             extra=extra).start()
        self.token = self.d.admin_token()
        self.post("/v1/queues", {"name": "support"})
        self.post("/v1/queues", {"name": "sales"})
        self.post("/v1/inboxes", {"address": "support@example.com", "queue": "support"})
        self.post("/v1/inboxes", {"address": "sales@example.com", "queue": "sales"})

    def post(self, path, body):
        status, obj, _ = self.d.request("POST", path, body, token=self.token)
        self.assertEqual(status, 201, obj)
        return obj

    def raw_in_data(self):
        """A raw LMTP session to support@example.com, answered 354: the caller sends DATA."""
        r = Raw(self.lport)
        self.addCleanup(r.close)
        self.assertEqual(r.reply()[0], 220)
        r.send("LHLO test\r\nMAIL FROM:<ana@example.com>\r\nRCPT TO:<support@example.com>\r\n"
               "DATA\r\n")
        self.assertEqual([r.reply()[0] for _ in range(4)], [250, 250, 250, 354])
        return r

    def db(self, sql):
        return harness.psql(sql, dbname=self.d.conninfo.split("dbname=")[1])

    def lmtp(self):
        c = smtplib.LMTP("127.0.0.1", self.lport, timeout=10)
        self.addCleanup(c.close)
        return c

    def deliver(self, data, to="support@example.com", sender="ana@example.com"):
        """Delivers one mail to one recipient over LMTP; returns the conversation id."""
        c = self.lmtp()
        c.ehlo("test")
        code, resp = c.mail(sender)
        self.assertEqual(code, 250, resp)
        code, resp = c.rcpt(to)
        self.assertEqual(code, 250, resp)
        code, resp = c.data(data)
        self.assertEqual(code, 250, resp)
        m = re.search(rb"conversation (\d+)", resp)
        self.assertIsNotNone(m, resp)
        c.quit()
        return int(m.group(1))


class Listeners(Email):
    def test_stored_after_commit(self):
        conv = self.deliver(mail(subject="=?UTF-8?Q?Caf=C3=A9_order?=", message_id="a1@x",
                                 sender="=?ISO-8859-1?Q?Jos=E9?= <Jose@Example.COM>",
                                 body="First line\r\n.dot line\r\n"))
        row = self.db("SELECT channel, status, subject FROM conversations WHERE id = %d" % conv)
        self.assertEqual(row, "email|queued|Café order")
        body = self.db("SELECT body FROM messages WHERE conversation_id = %d" % conv)
        self.assertEqual(body, "First line\n.dot line")
        ident = self.db("SELECT i.value, c.name FROM customer_identities i JOIN customers c "
                        "ON c.id = i.customer_id JOIN conversations v ON v.customer_id = c.id "
                        "WHERE v.id = %d AND i.kind = 'email'" % conv)
        self.assertEqual(ident, "jose@example.com|José")
        # the router learned about it: the conversation is listed as waiting
        status, obj, _ = self.d.request("GET", "/v1/stats/realtime", token=self.token)
        self.assertEqual(status, 200, obj)
        q = {x["name"]: x for x in obj["queues"]}
        self.assertEqual(q["support"]["waiting"], 1, obj)

    def test_dot_lines_in_pieces(self):
        """DATA arriving in small pieces that split line ends and dots: dot-stuffed lines
        are unstuffed wherever they fall, other lines are kept as received, and only
        "." alone on a line ends the mail."""
        import random
        rnd = random.Random(7)
        lines = []
        for i in range(1000):
            k = rnd.random()
            lines.append(("." if k < 0.2 else "") + ("x" * rnd.randrange(0, 40)) + str(i)
                         + (" ." if k > 0.9 else ""))
        lines[10] = "."        # a lone dot inside the body, stuffed: ".."
        lines[11] = ".\t."
        stuffed = "\r\n".join(("." + ln) if ln.startswith(".") else ln for ln in lines)
        data = mail(message_id="pieces@x", body=stuffed + "\r\n").replace(b"\n", b"\n")
        r = self.raw_in_data()
        wire = data + b".\r\n"
        i = 0
        while i < len(wire):
            n = rnd.choice((1, 2, 3, 7, 100, 4096))
            r.send(wire[i:i + n])
            i += n
            if rnd.random() < 0.01:
                time.sleep(0.01)
        code, lines_ = r.reply()
        self.assertEqual(code, 250, lines_)
        body = self.db("SELECT body FROM messages")
        self.assertEqual(body, "\n".join(lines))

    def test_route_info_matches(self):
        """cd_email_ingest builds the router's record itself: it must equal cd_route_info."""
        inbox = self.db("SELECT id FROM inboxes WHERE address = 'support@example.com'")
        res = self.db("SELECT cd_email_ingest(jsonb_build_object("
                      "'inbox', %s, 'from', jsonb_build_object('email', 'rt@example.com'), "
                      "'subject', 's', 'message_id', 'rt@x', 'body', 'b'))" % inbox)
        route = json.loads(res)["route"]
        self.assertIsNotNone(route)
        same = self.db("SELECT '%s'::jsonb = cd_route_info(%d)"
                       % (json.dumps(route), route["id"]))
        self.assertEqual(same, "t")

    def test_route_info_matches_with_sla(self):
        """Same with an SLA policy on the queue: the due times set by the INSERT's trigger
        are in the record."""
        self.db("INSERT INTO sla_policies (name, first_response_s, resolution_s) "
                "VALUES ('fast', 60, 3600); UPDATE queues SET sla_policy_id = "
                "(SELECT id FROM sla_policies) WHERE name = 'support'")
        inbox = self.db("SELECT id FROM inboxes WHERE address = 'support@example.com'")
        res = self.db("SELECT cd_email_ingest(jsonb_build_object("
                      "'inbox', %s, 'from', jsonb_build_object('email', 'rt@example.com'), "
                      "'subject', 's', 'message_id', 'rt-sla@x', 'body', 'b'))" % inbox)
        route = json.loads(res)["route"]
        self.assertIsNotNone(route["sla"]["first_response_due"])
        same = self.db("SELECT '%s'::jsonb = cd_route_info(%d)"
                       % (json.dumps(route), route["id"]))
        self.assertEqual(same, "t")

    def test_batch_sees_its_own_mails(self):
        """In one group commit, a later mail sees the earlier ones as stored: the same
        Message-ID again is a duplicate of the first, and a reply naming the first's
        Message-ID threads into its conversation."""
        inbox = self.db("SELECT id FROM inboxes WHERE address = 'support@example.com'")
        item = ("jsonb_build_object('inbox', %s, 'from', jsonb_build_object('email', "
                "'%s'), 'subject', 's', 'message_id', '%s', 'body', 'b', 'in_reply_to', %s)")
        res = json.loads(self.db(
            "SELECT cd_email_ingest_batch(jsonb_build_array(%s, %s, %s))"
            % (item % (inbox, "b1@example.com", "first@x", "'[]'::jsonb"),
               item % (inbox, "b1@example.com", "first@x", "'[]'::jsonb"),
               item % (inbox, "b2@example.com", "second@x", "jsonb_build_array('first@x')"))))
        self.assertTrue(all(r["ok"] for r in res), res)
        first, dup, reply = (r["result"] for r in res)
        self.assertEqual((first["duplicate"], first["opened"]), (False, True))
        self.assertEqual((dup["duplicate"], dup["conversation"], dup["message"],
                          dup["customer"]),
                         (True, first["conversation"], first["message"], first["customer"]))
        self.assertEqual((reply["duplicate"], reply["opened"], reply["threaded_by"],
                          reply["conversation"]),
                         (False, False, "references", first["conversation"]))
        self.assertEqual(self.db("SELECT count(*) FROM messages"), "2")
        self.assertEqual(self.db("SELECT count(*) FROM email_message_ids"), "2")
        # one enqueued event for the one conversation opened
        self.assertEqual(self.db("SELECT count(*) FROM conversation_events "
                                 "WHERE kind = 'enqueued'"), "1")

    def test_batch_redone_item_by_item(self):
        """One bad item of a group commit fails alone; the others are stored."""
        inbox = self.db("SELECT id FROM inboxes WHERE address = 'support@example.com'")
        res = json.loads(self.db(
            "SELECT cd_email_ingest_batch(jsonb_build_array("
            "jsonb_build_object('inbox', %s, 'message_id', 'good@x', 'from', "
            "jsonb_build_object('email', 'g@example.com'), 'body', 'b'), "
            "jsonb_build_object('inbox', %s, 'message_id', ''), "
            "jsonb_build_object('inbox', 999999, 'message_id', 'x@x')))" % (inbox, inbox)))
        self.assertEqual([r["ok"] for r in res], [True, False, False], res)
        self.assertEqual((res[1]["sqlstate"], res[2]["sqlstate"]), ("22023", "P0002"))
        self.assertEqual(self.db("SELECT count(*) FROM messages"), "1")

    def test_unknown_inbox_550(self):
        c = self.lmtp()
        c.ehlo("test")
        c.mail("ana@example.com")
        code, resp = c.rcpt("nobody@example.com")
        self.assertEqual(code, 550)
        self.assertTrue(resp.startswith(b"5.1.1"), resp)
        code, _ = c.rcpt("Support@Example.com")
        self.assertEqual(code, 250)

    def test_size_552(self):
        c = self.lmtp()
        c.ehlo("test")
        self.assertEqual(c.esmtp_features.get("size"), "65536")
        for ext in ("pipelining", "8bitmime", "enhancedstatuscodes", "starttls"):
            self.assertIn(ext, c.esmtp_features)
        code, resp = c.mail("ana@example.com", ["SIZE=70000"])
        self.assertEqual(code, 552)
        self.assertTrue(resp.startswith(b"5.3.4"), resp)
        # without a SIZE announcement the limit holds at the end of DATA
        c.rset()
        self.assertEqual(c.mail("ana@example.com")[0], 250)
        self.assertEqual(c.rcpt("support@example.com")[0], 250)
        code, resp = c.data(mail(body="x" * 76 + "\r\n") * 1000)
        self.assertEqual(code, 552)
        self.assertTrue(resp.startswith(b"5.3.4"), resp)
        # the session goes on
        self.assertEqual(c.noop()[0], 250)
        self.assertEqual(self.db("SELECT count(*) FROM messages"), "0")

    def test_same_message_id_stored_once(self):
        a = self.deliver(mail(message_id="dup@x"))
        b = self.deliver(mail(message_id="dup@x"))
        self.assertEqual(a, b)
        self.assertEqual(self.db("SELECT count(*) FROM messages"), "1")
        # the same Message-ID to another inbox is another message
        c = self.deliver(mail(message_id="dup@x", to="sales@example.com"), to="sales@example.com")
        self.assertNotEqual(a, c)

    def test_missing_message_id_derived(self):
        a = self.deliver(mail(subject="no id"))
        b = self.deliver(mail(subject="no id"))
        self.assertEqual(a, b)  # a redelivery of the same content is the same mail
        mid = self.db("SELECT message_id FROM email_message_ids")
        self.assertRegex(mid, r"^[0-9a-f]{64}@contactd\.invalid$")

    def test_threading_by_header(self):
        a = self.deliver(mail(message_id="t1@x"))
        b = self.deliver(mail(subject="Re: Hello", message_id="t2@x",
                              headers=["In-Reply-To: <t1@x>"]))
        c = self.deliver(mail(subject="other", message_id="t3@x",
                              headers=["References: <nope@x> <t2@x>"]))
        self.assertEqual(a, b)
        self.assertEqual(a, c)
        self.assertEqual(self.db("SELECT count(*) FROM messages WHERE conversation_id = %d" % a),
                         "3")

    def test_threading_by_subject_token(self):
        a = self.deliver(mail(message_id="s1@x"))
        b = self.deliver(mail(subject="Re: [#%d] Hello" % a, message_id="s2@x"))
        self.assertEqual(a, b)
        # a stranger naming the conversation gets a new one
        c = self.deliver(mail(subject="Re: [#%d] Hello" % a, message_id="s3@x",
                              sender="mallory@evil.example"), sender="mallory@evil.example")
        self.assertNotEqual(a, c)

    def test_lmtp_per_recipient_replies_pipelined(self):
        r = Raw(self.lport)
        self.addCleanup(r.close)
        self.assertEqual(r.reply()[0], 220)
        r.send("LHLO test\r\n")
        self.assertEqual(r.reply()[0], 250)
        data = mail(message_id="multi@x").decode()
        r.send("MAIL FROM:<ana@example.com>\r\nRCPT TO:<support@example.com>\r\n"
               "RCPT TO:<nobody@example.com>\r\nRCPT TO:<sales@example.com>\r\nDATA\r\n")
        self.assertEqual(r.reply()[0], 250)
        self.assertEqual(r.reply()[0], 250)
        self.assertEqual(r.reply()[0], 550)
        self.assertEqual(r.reply()[0], 250)
        self.assertEqual(r.reply()[0], 354)
        r.send(data + ".\r\n")
        one, two = r.reply(), r.reply()
        self.assertEqual((one[0], two[0]), (250, 250))
        self.assertIn("support@example.com", one[1][0])
        self.assertIn("sales@example.com", two[1][0])
        self.assertEqual(self.db("SELECT count(*) FROM messages"), "2")
        r.send("RSET\r\nQUIT\r\n")
        self.assertEqual(r.reply()[0], 250)
        self.assertEqual(r.reply()[0], 221)

    def test_bad_commands_and_order(self):
        r = Raw(self.lport)
        self.addCleanup(r.close)
        r.reply()
        r.send("MAIL FROM:<a@b>\r\n")
        self.assertEqual(r.reply()[0], 503)
        r.send("EHLO x\r\n")
        self.assertEqual(r.reply()[0], 500)
        r.send("LHLO x\r\nDATA\r\n")
        r.reply()
        self.assertEqual(r.reply()[0], 503)
        r.send("X" * 5000 + "\r\n")
        self.assertEqual(r.reply()[0], 500)
        for _ in range(12):
            try:
                r.send("BOGUS\r\n")
            except OSError:  # the server may already have said 421 and closed
                break
        codes = []
        try:
            while True:
                codes.append(r.reply()[0])
        except (EOFError, OSError):
            pass
        self.assertEqual(codes[-1], 421, codes)

    def test_starttls(self):
        c = self.lmtp()
        c.ehlo("test")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        code, _ = c.starttls(context=ctx)
        self.assertEqual(code, 220)
        # state is reset: MAIL before a new LHLO is refused
        code, _ = c.docmd("MAIL FROM:<ana@example.com>")
        self.assertEqual(code, 503)
        c.ehlo("test")
        self.assertNotIn("starttls", c.esmtp_features)
        self.assertEqual(c.mail("ana@example.com")[0], 250)
        self.assertEqual(c.rcpt("support@example.com")[0], 250)
        code, resp = c.data(mail(message_id="tls@x"))
        self.assertEqual(code, 250, resp)
        self.assertEqual(self.db("SELECT count(*) FROM messages"), "1")

    def test_starttls_discards_pipelined_commands(self):
        """RFC 3207 section 5: what was sent after STARTTLS in the clear is not obeyed."""
        r = Raw(self.lport)
        self.addCleanup(r.close)
        r.reply()
        r.send("LHLO x\r\n")
        r.reply()
        r.send("STARTTLS\r\nMAIL FROM:<evil@example.com>\r\n")
        self.assertEqual(r.reply()[0], 220)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        r.sock = ctx.wrap_socket(r.sock, server_hostname="localhost")
        r.buf = b""
        r.send("LHLO x\r\n")
        self.assertEqual(r.reply()[0], 250)
        r.send("RCPT TO:<support@example.com>\r\n")
        self.assertEqual(r.reply()[0], 503)  # the injected MAIL was dropped

    def test_recipient_limit(self):
        r = Raw(self.lport)
        self.addCleanup(r.close)
        r.reply()
        r.send("LHLO x\r\nMAIL FROM:<ana@example.com>\r\n")
        r.reply()
        r.reply()
        r.send("RCPT TO:<support@example.com>\r\n" * 101)
        codes = [r.reply()[0] for _ in range(101)]
        self.assertEqual(codes[:100], [250] * 100)
        self.assertEqual(codes[100], 452)

    def test_smtp_listener(self):
        s = smtplib.SMTP("127.0.0.1", self.sport, timeout=10)
        self.addCleanup(s.close)
        refused = s.sendmail("ana@example.com", ["support@example.com", "sales@example.com"],
                             mail(message_id="smtp@x"))
        self.assertEqual(refused, {})
        s.quit()
        self.assertEqual(self.db("SELECT count(*) FROM messages"), "2")
        with self.assertRaises(smtplib.SMTPRecipientsRefused):
            s = smtplib.SMTP("127.0.0.1", self.sport, timeout=10)
            s.sendmail("ana@example.com", ["nobody@example.com"], mail())

    def test_store_down_451(self):
        c = self.lmtp()
        c.ehlo("test")
        self.assertEqual(c.mail("ana@example.com")[0], 250)
        self.assertEqual(c.rcpt("support@example.com")[0], 250)
        # PostgreSQL refuses the daemon from now on: its connections go and do not come back
        dbname = self.d.conninfo.split("dbname=")[1]
        harness.psql('ALTER DATABASE "%s" ALLOW_CONNECTIONS false' % dbname)
        try:
            harness.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE datname = '%s' AND pid <> pg_backend_pid()" % dbname)
            self.d.wait_log(r"event=store_disconnected")
            code, resp = c.data(mail(message_id="down@x"))
            self.assertEqual(code, 451, resp)
            self.assertTrue(resp.startswith(b"4.3.0"), resp)
            c.rset()
            self.assertEqual(c.mail("ana@example.com")[0], 250)
            code, resp = c.rcpt("support@example.com")
            self.assertEqual(code, 451, resp)
        finally:
            harness.psql('ALTER DATABASE "%s" ALLOW_CONNECTIONS true' % dbname)
        # the MTA's retry goes through once the store is back
        self.d.wait_ready(timeout=30)
        self.deliver(mail(message_id="down@x"))
        self.assertEqual(self.db("SELECT count(*) FROM messages"), "1")
    def test_drain_tells_idle_sessions(self):
        """SIGTERM: an idle session gets 421 and the connection closes; the daemon exits 0."""
        r = Raw(self.lport)
        self.addCleanup(r.close)
        self.assertEqual(r.reply()[0], 220)
        r.send("LHLO test\r\n")
        self.assertEqual(r.reply()[0], 250)
        self.d.kill(signal.SIGTERM)
        code, lines = r.reply()
        self.assertEqual(code, 421, lines)
        self.assertIn("4.3.2", lines[0])
        self.assertEqual(self.d.proc.wait(30), 0)

    def test_reload_moves_listener(self):
        """SIGHUP with a new lmtp address: the listener moves, mail flows on the new port."""
        new = free_port()
        self.d.listen["lmtp"] = "127.0.0.1:%d" % new
        self.d.write_config()
        self.d.kill(signal.SIGHUP)
        self.d.wait_log(r"event=listener_moved listener=lmtp")
        self.lport = new
        self.deliver(mail(message_id="after-reload@x"))

class LargeMail(Email):
    extra = {"limits.max_email_bytes": "1048576"}

    def test_commands_after_data_in_the_same_write(self):
        """A large DATA and the commands that follow its end in the same write: none of
        them is lost or taken as mail."""
        r = self.raw_in_data()
        body = "\r\n".join("line %06d of a long mail" % i for i in range(22000))
        data = mail(message_id="bulk-then-commands@x", body=body + "\r\n")
        r.send(data + b".\r\nRSET\r\nNOOP\r\nQUIT\r\n")
        self.assertEqual([r.reply()[0] for _ in range(4)], [250, 250, 250, 221])
        stored = self.db("SELECT body FROM messages")
        self.assertTrue(stored.endswith("line 021999 of a long mail"), stored[-80:])
        self.assertNotIn("RSET", stored)

    def attached(self, blob, message_id, name="blob.bin"):
        import base64
        b64 = base64.encodebytes(blob).decode().replace("\n", "\r\n")
        body = ("--B\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
                "--B\r\nContent-Type: application/octet-stream; name=%s\r\n"
                "Content-Disposition: attachment; filename=%s\r\n"
                "Content-Transfer-Encoding: base64\r\n\r\n%s--B--\r\n" % (name, name, b64))
        return mail(message_id=message_id, body=body,
                    headers=["MIME-Version: 1.0", "Content-Type: multipart/mixed; boundary=B"])

    def attachment_of(self, conv):
        """name|size|sha256|length|sha256 of the bytes read back (cd_attachment_bytes)."""
        return self.db("SELECT a.name, a.size, a.sha256, length(cd_attachment_bytes(a.id)), "
                       "encode(sha256(cd_attachment_bytes(a.id)), 'hex') FROM attachments a "
                       "JOIN messages m ON m.id = a.message_id WHERE m.conversation_id = %d"
                       % conv)

    def expect(self, blob, name="blob.bin"):
        import hashlib
        h = hashlib.sha256(blob).hexdigest()
        return "%s|%d|%s|%d|%s" % (name, len(blob), h, len(blob), h)

    def test_attachment_stored_alone(self):
        """A mail above the group-commit size goes alone; its attachment is kept whole."""
        blob = bytes(range(256)) * 1200  # 300 KB
        conv = self.deliver(self.attached(blob, "big@x"))
        self.assertEqual(self.attachment_of(conv), self.expect(blob))
        self.assertEqual(self.db("SELECT body FROM messages WHERE conversation_id = %d" % conv),
                         "See attached.")

    def test_small_attachment_inline(self):
        """An attachment up to 256 KB keeps its bytes in attachments.bytes (no chunks)."""
        blob = os.urandom(100 * 1024)
        conv = self.deliver(self.attached(blob, "small@x"))
        self.assertEqual(self.attachment_of(conv), self.expect(blob))
        self.assertEqual(self.db("SELECT count(*) FROM attachment_chunks"), "0")
        self.assertEqual(self.db("SELECT length(a.bytes) FROM attachments a"), str(len(blob)))

    def test_chunked_attachment_round_trip(self):
        """A 600 KB attachment is staged as chunks of 64 KB (the last one shorter) before
        the ingest, linked in order, and reads back byte for byte; a redelivery and another
        mail with the same attachment store no chunk twice."""
        blob = os.urandom(600 * 1024)
        conv = self.deliver(self.attached(blob, "chunked@x"))
        self.assertEqual(self.attachment_of(conv), self.expect(blob))
        self.assertEqual(self.db("SELECT a.bytes IS NULL FROM attachments a"), "t")
        self.assertEqual(self.db("SELECT string_agg(length(b.bytes)::text, ',' ORDER BY l.ord) "
                                 "FROM attachment_chunks l JOIN email_blob_chunks b "
                                 "ON b.sha256 = l.chunk"), ",".join(["65536"] * 9 + ["24576"]))
        # exactly the bytes, not only the same hash: compare the hex of the whole
        self.assertEqual(self.db("SELECT encode(cd_attachment_bytes(id), 'hex') FROM attachments"),
                         blob.hex())
        self.d.wait_log(r"event=email_received .*chunks=10 ")
        # the MTA delivers it again: a duplicate, nothing new
        self.assertEqual(self.deliver(self.attached(blob, "chunked@x")), conv)
        self.assertEqual(self.db("SELECT count(*) FROM email_blob_chunks"), "10")
        # another mail with the same attachment: a new attachment, the same chunks
        conv2 = self.deliver(self.attached(blob, "chunked-again@x", name="copy.bin"))
        self.assertNotEqual(conv2, conv)
        self.assertEqual(self.attachment_of(conv2), self.expect(blob, "copy.bin"))
        self.assertEqual(self.db("SELECT count(*) FROM email_blob_chunks"), "10")
        self.assertEqual(self.db("SELECT count(*) FROM attachment_chunks"), "20")

    def test_failure_after_staging_acknowledges_nothing(self):
        """The chunks are committed but the ingest fails: 451, nothing stored; the MTA's
        retry stores the mail whole, reusing the staged chunks."""
        self.db("CREATE FUNCTION test_fail() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'test: ingest fails'; END $$; "
                "CREATE TRIGGER test_fail BEFORE INSERT ON attachments "
                "FOR EACH ROW EXECUTE FUNCTION test_fail()")
        blob = os.urandom(300 * 1024)
        c = self.lmtp()
        c.ehlo("test")
        self.assertEqual(c.mail("ana@example.com")[0], 250)
        self.assertEqual(c.rcpt("support@example.com")[0], 250)
        code, resp = c.data(self.attached(blob, "retry@x"))
        self.assertEqual(code, 451, resp)
        c.quit()
        self.assertEqual(self.db("SELECT count(*) FROM messages"), "0")
        self.assertEqual(self.db("SELECT count(*) FROM attachments"), "0")
        self.assertEqual(self.db("SELECT count(*) FROM email_blob_chunks"), "5")
        self.db("DROP TRIGGER test_fail ON attachments")
        conv = self.deliver(self.attached(blob, "retry@x"))
        self.assertEqual(self.attachment_of(conv), self.expect(blob))
        self.assertEqual(self.db("SELECT count(*) FROM email_blob_chunks"), "5")

    def test_ingest_checks_chunks(self):
        """An item naming a chunk never staged, or chunks that do not add up to the size,
        stores nothing."""
        inbox = self.db("SELECT id FROM inboxes WHERE address = 'support@example.com'")
        key = self.db("SELECT cd_email_stage_chunk('\\x0102030405'::bytea)")
        self.assertEqual(key, "74f81fe167d99b4cb41d6d0ccda82278caee9f3e2f25d5e5a3936ff3dcec60d0")
        item = ("jsonb_build_object('inbox', %s, 'from', jsonb_build_object('email', "
                "'c@example.com'), 'subject', 's', 'message_id', '%s', 'body', 'b', "
                "'attachments', jsonb_build_array(jsonb_build_object('name', 'x', 'size', %d, "
                "'sha256', repeat('0', 64), 'chunks', jsonb_build_array(%s))))")
        missing = self.db("SELECT cd_email_ingest_batch(jsonb_build_array(%s)) -> 0 ->> 'sqlstate'"
                          % (item % (inbox, "m1@x", 5, "repeat('a', 64)")))
        self.assertEqual(missing, "23503")
        short = self.db("SELECT cd_email_ingest_batch(jsonb_build_array(%s)) -> 0 ->> 'field'"
                        % (item % (inbox, "m2@x", 6, "'%s'" % key)))
        self.assertEqual(short, "attachments")
        self.assertEqual(self.db("SELECT count(*) FROM messages"), "0")
        ok = self.db("SELECT cd_email_ingest_batch(jsonb_build_array(%s)) -> 0 ->> 'ok'"
                     % (item % (inbox, "m3@x", 5, "'%s'" % key)))
        self.assertEqual(ok, "true")
        self.assertEqual(self.db("SELECT encode(cd_attachment_bytes(id), 'hex') FROM attachments"),
                         "0102030405")

    def test_orphan_chunks_pruned(self):
        """Staged chunks no attachment links are removed once older than an hour (the
        daemon prunes at start and every 10 minutes); linked or recent ones stay."""
        blob = os.urandom(300 * 1024)
        self.deliver(self.attached(blob, "linked@x"))
        self.d.stop()
        self.db("SELECT cd_email_stage_chunk('\\x01'::bytea), cd_email_stage_chunk('\\x02'::bytea)")
        self.db("UPDATE email_blob_chunks SET staged_at = now() - interval '2 hours' "
                "WHERE bytes <> '\\x02'::bytea")
        self.d.start()
        self.d.wait_log(r"event=email_chunks_pruned deleted=1\b")
        self.assertEqual(self.db("SELECT string_agg(encode(bytes, 'hex'), ',') FROM "
                                 "email_blob_chunks WHERE length(bytes) < 10"), "02")
        self.assertEqual(self.db("SELECT count(*) FROM email_blob_chunks"), "6")
        conv = int(self.db("SELECT conversation_id FROM messages"))
        self.assertEqual(self.attachment_of(conv), self.expect(blob))


class ReplyBase(Email):
    """Agent replies through email.relay: threading headers, [#ID], retries, failures."""
    plan = ("ok",)

    def setUp(self):
        self.sink = Sink(self.plan)
        self.extra = {"email.relay": "smtp://127.0.0.1:%d" % self.sink.port,
                      "email.retry_base_s": "1"}
        super().setUp()
        self.addCleanup(self.sink.close)

    def reply(self, conv, body):
        status, obj, _ = self.d.request("POST", "/v1/conversations/%d/messages" % conv,
                                        {"body": body}, token=self.token)
        self.assertEqual(status, 201, obj)
        return obj["message"]["id"]

    def outbox(self, conv):
        return self.db("SELECT state, attempts FROM outbox WHERE conversation_id = %d" % conv)

    def wait_outbox(self, conv, state, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            row = self.outbox(conv)
            if row.startswith(state + "|"):
                return row
            time.sleep(0.1)
        raise AssertionError("outbox of %d: %r, wanted %s" % (conv, self.outbox(conv), state))

    def timeline(self, conv):
        return self.db("SELECT string_agg(kind, ',' ORDER BY id) FROM conversation_events "
                       "WHERE conversation_id = %d" % conv).split(",")



class Replies(ReplyBase):
    def test_reply_threads_both_ways(self):
        conv = self.deliver(mail(subject="Refund please", message_id="c1@x",
                                 headers=["References: <older@x>"]))
        self.reply(conv, "Thanks, on it.\nSecond line: caf\u00e9")
        sender, rcpts, data = self.sink.wait()
        self.assertEqual((sender, rcpts), ("<support@example.com>", ["<ana@example.com>"]))
        m = email.message_from_bytes(data, policy=email.policy.default)
        self.assertEqual(m["Subject"], "Re: Refund please [#%d]" % conv)
        self.assertEqual(m["In-Reply-To"], "<c1@x>")
        self.assertEqual(m["References"].split(), ["<older@x>", "<c1@x>"])
        self.assertIn("support@example.com", m["From"])
        self.assertEqual(m["To"], "Ana <ana@example.com>")
        self.assertEqual(m.get_content(), "Thanks, on it.\r\nSecond line: caf\u00e9")
        self.wait_outbox(conv, "sent")
        self.assertIn("email_sent", self.timeline(conv))
        # the customer answers the reply: threaded by In-Reply-To
        ours = m["Message-ID"].strip("<>")
        again = self.deliver(mail(subject="Re: something else", message_id="c2@x",
                                  headers=["In-Reply-To: <%s>" % ours]))
        self.assertEqual(again, conv)
        # a second reply keeps the token once and names the newest mail
        self.reply(conv, "More")
        m2 = email.message_from_bytes(self.sink.wait(2)[2], policy=email.policy.default)
        self.assertEqual(m2["Subject"], "Re: something else [#%d]" % conv)
        self.assertEqual(m2["In-Reply-To"], "<c2@x>")


class ReplyRetry(ReplyBase):
    plan = ("451", "451", "ok")

    def test_retried_with_backoff(self):
        conv = self.deliver(mail(message_id="r1@x"))
        t0 = time.time()
        self.reply(conv, "Retry me")
        self.sink.wait(timeout=30)
        # 1 s then 2 s of backoff between the three attempts
        self.assertGreaterEqual(time.time() - t0, 2.5)
        self.assertEqual(self.wait_outbox(conv, "sent"), "sent|3")
        self.assertEqual(self.sink.attempts, 3)


class ReplyFailure(ReplyBase):
    plan = ("550",)

    def test_permanent_failure_recorded(self):
        conv = self.deliver(mail(message_id="f1@x"))
        self.reply(conv, "Nobody will read this")
        self.assertEqual(self.wait_outbox(conv, "failed"), "failed|1")
        self.assertIn("email_failed", self.timeline(conv))
        err = self.db("SELECT last_error FROM outbox WHERE conversation_id = %d" % conv)
        self.assertIn("550", err)
        self.d.wait_log(r"event=email_reply_failed .*permanent=true")

    def test_agent_routed_and_told(self):
        """The new email conversation is routed to an agent; the agent's reply (client
        protocol) goes out, and its final refusal is pushed back to that agent."""
        cport = free_port()
        self.d.stop()
        self.d.listen["client"] = "127.0.0.1:%d" % cport
        self.d.write_config()
        self.d.start()
        self.post("/v1/agents", {"login": "alice", "name": "Alice", "password": "alice-pw-123",
                                 "capacity": {"chat": 1, "email": 2, "voice": 1}})
        a = Ndjson(cport)
        self.addCleanup(a.close)
        self.assertEqual(a.request({"type": "hello", "role": "agent", "login": "alice",
                                    "password": "alice-pw-123"})["type"], "ok")
        self.assertEqual(a.request({"type": "presence", "status": "available"})["type"], "ok")
        conv = self.deliver(mail(message_id="routed@x", subject="Route me"))
        offer = a.event("offer")
        self.assertEqual((offer["conversation"], offer["channel"]), (conv, "email"))
        self.assertEqual(a.request({"type": "accept", "offer": offer["offer"]})["type"], "ok")
        r = a.request({"type": "message", "conversation": conv, "body": "On it"})
        self.assertEqual(r["type"], "ok", r)
        failed = a.event("delivery_failed", timeout=20)
        self.assertEqual((failed["conversation"], failed["message"], failed["channel"]),
                         (conv, r["message"], "email"))
        self.assertIn("550", failed["error"])


if __name__ == "__main__":
    harness.main()
