"""The lmtp and smtp listeners (SPEC §3): 250 only after the commit, 550 for an unknown
inbox, 552 beyond limits.max_email_bytes, the same Message-ID stored once, threading by
In-Reply-To / References and by a [#ID] subject token (only from the conversation's own
customer), per-recipient LMTP replies, dot-unstuffing, STARTTLS and the SMTP listener."""
import re
import smtplib
import socket
import ssl
import subprocess
import tempfile

import harness
from harness import DaemonTest, free_port

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
            r.send("BOGUS\r\n")
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

if __name__ == "__main__":
    harness.main()
