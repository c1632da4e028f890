"""The https listener: TLS >= 1.2, client certificates where required, SIGHUP reloads the
certificate without dropping the listener."""
import http.client
import os
import signal
import socket
import ssl
import subprocess
import tempfile

import harness
from harness import DaemonTest, free_port


def openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, capture_output=True, timeout=60)


def make_ca(d):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=contactd test CA", "-keyout", d + "/ca.key", "-out", d + "/ca.pem")


def make_cert(d, name, cn):
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=" + cn,
            "-keyout", "%s/%s.key" % (d, name), "-out", "%s/%s.csr" % (d, name))
    ext = "%s/%s.ext" % (d, name)
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "%s/%s.csr" % (d, name), "-CA", d + "/ca.pem",
            "-CAkey", d + "/ca.key", "-CAcreateserial", "-days", "2", "-extfile", ext,
            "-out", "%s/%s.pem" % (d, name))


class PkiTest(DaemonTest):
    def setUp(self):
        super().setUp()
        self.pki = tempfile.mkdtemp(prefix="contactd-pki-")
        make_ca(self.pki)
        make_cert(self.pki, "server", "server-one")
        make_cert(self.pki, "client", "pbx-1")
        self.https_port = free_port()

    def start(self, require=""):
        extra = {"tls.cert_file": self.pki + "/server.pem", "tls.key_file": self.pki + "/server.key",
                 "tls.ca_file": self.pki + "/ca.pem", "tls.require_client_cert": require}
        d = self.daemon(extra=extra, listen={"https": "127.0.0.1:%d" % self.https_port})
        return d.start()

    def context(self, client_cert=False, max_version=None):
        ctx = ssl.create_default_context(cafile=self.pki + "/ca.pem")
        if client_cert:
            ctx.load_cert_chain(self.pki + "/client.pem", self.pki + "/client.key")
        if max_version:
            ctx.maximum_version = max_version
        return ctx

    def get(self, path, ctx):
        conn = http.client.HTTPSConnection("127.0.0.1", self.https_port, context=ctx, timeout=10)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def peer_cn(self):
        ctx = self.context()
        with socket.create_connection(("127.0.0.1", self.https_port), timeout=10) as s:
            with ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
                subject = dict(x[0] for x in t.getpeercert()["subject"])
                return subject["commonName"], t.version()


class Https(PkiTest):
    def test_https_serves_and_uses_tls12_or_newer(self):
        self.start()
        status, body = self.get("/readyz", self.context())
        self.assertEqual(status, 200, body)
        cn, version = self.peer_cn()
        self.assertEqual(cn, "server-one")
        self.assertIn(version, ("TLSv1.2", "TLSv1.3"))

    def test_tls11_is_refused(self):
        self.start()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        try:
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        except (ValueError, ssl.SSLError):
            self.skipTest("this OpenSSL cannot even offer TLS 1.1")
        with self.assertRaises((ssl.SSLError, ConnectionError)):
            self.get("/healthz", ctx)

    def test_client_certificate_required(self):
        self.start(require="https")
        with self.assertRaises((ssl.SSLError, ConnectionError)):
            self.get("/healthz", self.context())
        status, _ = self.get("/healthz", self.context(client_cert=True))
        self.assertEqual(status, 200)

    def test_sighup_reloads_the_certificate(self):
        d = self.start()
        self.assertEqual(self.peer_cn()[0], "server-one")
        make_cert(self.pki, "server", "server-two")  # same paths, new certificate
        d.kill(signal.SIGHUP)
        d.wait_log(r"event=reloaded")
        self.assertEqual(self.peer_cn()[0], "server-two")

    def test_sighup_with_a_broken_key_keeps_the_old_certificate(self):
        d = self.start()
        with open(self.pki + "/server.key", "w") as f:
            f.write("not a key\n")
        d.kill(signal.SIGHUP)
        d.wait_log(r"event=reload_failed")
        self.assertEqual(self.peer_cn()[0], "server-one")


class ClientTls(PkiTest):
    """The client listener over TLS (client_tls), with and without client certificates."""

    def start_client_tls(self, require=""):
        self.port = free_port()
        extra = {"tls.cert_file": self.pki + "/server.pem", "tls.key_file": self.pki + "/server.key",
                 "tls.ca_file": self.pki + "/ca.pem", "tls.require_client_cert": require}
        d = self.daemon(extra=extra, listen={"client_tls": "127.0.0.1:%d" % self.port})
        d.start()
        token = d.admin_token()
        self.assertEqual(d.request("POST", "/v1/queues", {"name": "general"}, token=token)[0],
                         201)
        return d

    def test_customer_over_tls(self):
        self.start_client_tls()
        c = harness.Ndjson(self.port, ssl_context=self.context())
        self.assertEqual(c.request({"type": "hello", "role": "customer"})["type"], "ok")
        r = c.request({"type": "message", "body": "over TLS"})
        self.assertEqual(r["type"], "ok", r)
        self.assertEqual(c.sock.version() in ("TLSv1.2", "TLSv1.3"), True)
        c.close()

    def test_client_certificate_required_on_client_tls(self):
        self.start_client_tls(require="client_tls")
        with self.assertRaises((ssl.SSLError, ConnectionError, OSError)):
            c = harness.Ndjson(self.port, ssl_context=self.context())
            c.request({"type": "hello", "role": "customer"})
        c = harness.Ndjson(self.port, ssl_context=self.context(client_cert=True))
        self.assertEqual(c.request({"type": "hello", "role": "customer"})["type"], "ok")
        c.close()


if __name__ == "__main__":
    harness.main()
