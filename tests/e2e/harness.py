"""Test harness: runs the built contactd against a fresh database on free ports.

Environment: CONTACTD_BIN (the built daemon), CONTACTD_TEST_CONNINFO (a libpq conninfo of
a role that may CREATE DATABASE; scripts/test starts such a sandbox), CONTACTD_TEST_KEEP_DBS
(1: keep the databases the tests created, to look at them afterwards; by default each test
process drops its own when it exits, so a long-lived cluster given in CONTACTD_TEST_CONNINFO
does not collect them).
"""
import atexit
import http.client
import json
import os
import re
import secrets
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import unittest

BIN = os.environ.get("CONTACTD_BIN", "build/contactd")
CONNINFO = os.environ.get("CONTACTD_TEST_CONNINFO", "")
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "UndefinedBehaviorSanitizer")


def need_db(testcase):
    if not CONNINFO:
        testcase.skipTest("CONTACTD_TEST_CONNINFO is not set (run scripts/test)")


def conninfo_with_db(dbname, base=None):
    base = base if base is not None else CONNINFO
    parts = [p for p in base.split() if not p.startswith("dbname=")]
    return " ".join(parts + ["dbname=" + dbname])


def psql(sql, dbname=None, check=True):
    ci = conninfo_with_db(dbname) if dbname else CONNINFO
    r = subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", ci, "-c", sql],
                       capture_output=True, text=True, timeout=60)
    if check and r.returncode != 0:
        raise RuntimeError("psql failed: " + r.stderr)
    return r.stdout.strip()


_created_dbs = []


def drop_created_dbs():
    """Drops every database fresh_db() created in this process (unless
    CONTACTD_TEST_KEEP_DBS=1).  Runs at exit; WITH (FORCE) ends what still holds one (a
    daemon a failed test left running)."""
    if os.environ.get("CONTACTD_TEST_KEEP_DBS") == "1":
        return
    while _created_dbs:
        name = _created_dbs.pop()
        psql('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name, check=False)


atexit.register(drop_created_dbs)


def fresh_db():
    """Creates an empty database and returns its conninfo (dropped when the process exits)."""
    name = "ctd_" + secrets.token_hex(6)
    psql('CREATE DATABASE "%s"' % name)
    _created_dbs.append(name)
    return conninfo_with_db(name)


_handed_out_ports = set()


def _port_range():
    """Ports below the kernel's ephemeral range (which it hands out for bind(0) and for
    outgoing connections, recently freed ones again soon): [10000, its low end)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 0
    return (10000, low) if low >= 12000 else None


def free_port():
    """A port nothing listens on now, and never one this process was given before.
    Drawn at random below the ephemeral range: bind(0) handed out the same just-closed
    port again (3-6 times in 300 calls), so one daemon got one port for two listeners
    ("listen.http: same address as listen.client", seen in CI), and two test processes
    running side by side (ctest -j2) would draw the same few recent ports too."""
    rng = _port_range()
    for _ in range(1000):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", secrets.randbelow(rng[1] - rng[0]) + rng[0] if rng else 0))
            port = s.getsockname()[1]
        except OSError:
            continue
        finally:
            s.close()
        if port not in _handed_out_ports:
            _handed_out_ports.add(port)
            return port
    raise RuntimeError("no free port that was not handed out before")


class Daemon:
    """One contactd process with its own config file and ports."""

    def __init__(self, conninfo=None, extra=None, listen=None):
        self.dir = tempfile.mkdtemp(prefix="contactd-e2e-")
        self.conninfo = conninfo if conninfo is not None else fresh_db()
        self.http_port = free_port()
        self.proc = None
        self.stderr_path = os.path.join(self.dir, "stderr.log")
        self.config_path = os.path.join(self.dir, "contactd.conf")
        self.listen = {"client": "", "phone": "", "lmtp": "",
                       "http": "127.0.0.1:%d" % self.http_port}
        if listen:
            self.listen.update(listen)
        self.extra = extra or {}
        self.write_config()

    def config_text(self):
        sections = {
            "daemon": {"log_level": "debug"},
            "database": {"conninfo": self.conninfo, "pool_size": "2"},
            "listen": self.listen,
        }
        for key, value in self.extra.items():
            sec, k = key.split(".", 1)
            sections.setdefault(sec, {})[k] = value
        out = []
        for sec, kv in sections.items():
            out.append("[%s]" % sec)
            out += ["%s = %s" % (k, v) for k, v in kv.items()]
        return "\n".join(out) + "\n"

    def write_config(self, text=None):
        with open(self.config_path, "w") as f:
            f.write(text if text is not None else self.config_text())

    def cli(self, *args, timeout=60):
        return subprocess.run([BIN, "-c", self.config_path] + list(args), capture_output=True,
                              text=True, timeout=timeout)

    def start(self, wait_ready=True):
        self.stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen([BIN, "-c", self.config_path], stdout=subprocess.DEVNULL,
                                     stderr=self.stderr)
        self.wait_http()
        if wait_ready:
            self.wait_ready()
        return self

    def wait_http(self, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("contactd exited with %s:\n%s" %
                                     (self.proc.returncode, self.log()))
            try:
                status, _, _ = self.request("GET", "/healthz")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("contactd did not answer /healthz:\n" + self.log())

    def wait_ready(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            status, _, _ = self.request("GET", "/readyz")
            if status == 200:
                return
            time.sleep(0.05)
        raise AssertionError("contactd did not become ready:\n" + self.log())

    def request(self, method, path, body=None, token=None, headers=None, raw=None,
                port=None, timeout=30):
        conn = http.client.HTTPConnection("127.0.0.1", port or self.http_port, timeout=timeout)
        h = dict(headers or {})
        if token:
            h["Authorization"] = "Bearer " + token
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=data, headers=h)
            resp = conn.getresponse()
            payload = resp.read()
        finally:
            conn.close()
        ctype = resp.getheader("Content-Type", "")
        parsed = None
        if payload and ctype.startswith("application/json"):
            parsed = json.loads(payload)
        return resp.status, parsed if parsed is not None else payload.decode(), resp

    def admin_token(self, scopes="admin", name=None):
        name = name or "t" + secrets.token_hex(4)
        r = self.cli("--create-api-token", name, scopes)
        if r.returncode != 0:
            raise AssertionError("--create-api-token failed: " + r.stderr)
        return r.stdout.strip()

    def kill(self, sig):
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("contactd did not stop within %ss:\n%s" % (timeout, self.log()))

    def log(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if re.search(pattern, self.log()):
                return
            time.sleep(0.05)
        raise AssertionError("no log line matching %r:\n%s" % (pattern, self.log()))

    def assert_clean(self):
        text = self.log()
        for m in SANITIZER_MARKERS:
            if m in text:
                raise AssertionError("sanitizer report in contactd's stderr:\n" + text)


class DaemonTest(unittest.TestCase):
    """Base class: self.daemons are stopped and checked for sanitizer reports."""

    def setUp(self):
        need_db(self)
        self.daemons = []

    def daemon(self, **kw):
        d = Daemon(**kw)
        self.daemons.append(d)
        return d

    def tearDown(self):
        for d in self.daemons:
            if d.proc and d.proc.poll() is None:
                d.stop(signal.SIGTERM)
            d.assert_clean()


def main():
    unittest.main(verbosity=2)


class Ndjson:
    """A client of the NDJSON listeners: one JSON object per line."""

    def __init__(self, port, host="127.0.0.1", ssl_context=None, timeout=10):
        sock = socket.create_connection((host, port), timeout=timeout)
        if ssl_context:
            sock = ssl_context.wrap_socket(sock, server_hostname=host)
        self.sock = sock
        self.buf = b""
        self.events = []
        self.next_ref = 1

    def send_raw(self, data):
        self.sock.sendall(data)

    def send(self, obj):
        self.sock.sendall(json.dumps(obj).encode() + b"\n")

    def recv(self, timeout=10):
        """The next frame, or None at EOF."""
        self.sock.settimeout(timeout)
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def request(self, obj, timeout=10):
        """Sends OBJ with a fresh ref; returns the reply with that ref (events meanwhile are
        kept in self.events)."""
        ref = self.next_ref
        self.next_ref += 1
        obj = dict(obj, ref=ref)
        self.send(obj)
        deadline = time.time() + timeout
        while time.time() < deadline:
            frame = self.recv(timeout=max(0.1, deadline - time.time()))
            if frame is None:
                raise AssertionError("connection closed while waiting for ref %d" % ref)
            if frame.get("ref") == ref:
                return frame
            self.events.append(frame)
        raise AssertionError("no reply to ref %d" % ref)

    def event(self, type_, timeout=10):
        """The next pushed event of TYPE (earlier ones of other types are kept)."""
        for i, e in enumerate(self.events):
            if e.get("type") == type_ and "ref" not in e:
                return self.events.pop(i)
        deadline = time.time() + timeout
        while time.time() < deadline:
            frame = self.recv(timeout=max(0.1, deadline - time.time()))
            if frame is None:
                raise AssertionError("connection closed while waiting for %s" % type_)
            if frame.get("type") == type_ and "ref" not in frame:
                return frame
            self.events.append(frame)
        raise AssertionError("no %s event" % type_)

    def closed(self, timeout=10):
        """True when the server closes the connection (frames before that are kept)."""
        try:
            while True:
                frame = self.recv(timeout)
                if frame is None:
                    return True
                self.events.append(frame)
        except (socket.timeout, TimeoutError):
            return False
        except (ConnectionResetError, ssl.SSLError):
            return True

    def close(self):
        self.sock.close()
