"""A webhook receiver living in the test process, the other end of gensendrep's subscriptions.

A threaded http.server on 127.0.0.1 and a free port. Each subscription points at its own path
(`Receiver.url(name)`), so one receiver serves several subscriptions. Every request is recorded
(path, headers, body, arrival time, what was answered); `signature_ok` checks it against the
Standard Webhooks rule with the secret the subscription's create answer gave:

    webhook-signature: v1,<base64 HMAC-SHA256(base64decode(secret minus "whsec_"),
                                              f"{webhook-id}.{webhook-timestamp}.{body}")>

(several space-separated signatures may be sent; one matching is enough).

How it answers is set per receiver and may change at any time (thread-safe):
    rcv.answer(200)                       every request
    rcv.answer(429, retry_after="3")      with a Retry-After header
    rcv.answer(500, cids={...})           only events of these conversation ids; others get the
                                          default (200)
    rcv.rule(fn)                          fn(req) -> Reply or None (None: the next rule)
    Reply(hang=8)                         waits that long before answering (past the server's
                                          DELIVERY_TIMEOUT_SECONDS), released at close
Rules are tried newest first; the first that returns a Reply answers.

Servers under test need DELIVERY_ALLOW_PRIVATE_NETWORKS=true to reach 127.0.0.1."""
import base64
import hashlib
import hmac
import json
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    status: int = 200
    headers: dict = field(default_factory=dict)
    body: bytes = b"ok"
    hang: float = 0.0  # seconds to wait before answering


@dataclass
class Received:
    path: str
    method: str
    headers: dict  # lower-case names
    body: bytes
    at: float  # time.time() when the request was read
    mono: float  # time.monotonic() likewise
    status: int = 0  # what was answered (0: nothing yet / hung and cut off)
    answered_mono: float = 0.0

    @property
    def event(self):
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    @property
    def webhook_id(self):
        return self.headers.get("webhook-id")

    @property
    def type(self):
        ev = self.event
        return ev.get("type") if isinstance(ev, dict) else None

    @property
    def conversation_id(self):
        ev = self.event
        if not isinstance(ev, dict) or not isinstance(ev.get("data"), dict):
            return None
        return ev["data"].get("conversationId")

    def signature_ok(self, secret, tolerance=300):
        """The Standard Webhooks check a careful receiver makes: every header present, the
        timestamp within tolerance seconds of arrival, one v1 signature matching."""
        msg_id = self.headers.get("webhook-id")
        ts = self.headers.get("webhook-timestamp")
        sigs = self.headers.get("webhook-signature")
        if not (msg_id and ts and sigs and secret and secret.startswith("whsec_")):
            return False
        try:
            tsi = int(ts)
        except ValueError:
            return False
        if abs(tsi - self.at) > tolerance:
            return False
        key = base64.b64decode(secret[len("whsec_"):])
        signed = msg_id.encode() + b"." + ts.encode() + b"." + self.body
        expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        for s in sigs.split(" "):
            version, _, value = s.partition(",")
            if version == "v1" and hmac.compare_digest(value, expected):
                return True
        return False


def _peer_gone(sock):
    """Whether the client has closed its end (EOF or reset waiting to be read)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


class Receiver:
    def __init__(self):
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._records = []
        self._rules = []
        self._release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = -1  # the answer's head and body in one write (no Nagle stall)
            disable_nagle_algorithm = True

            def log_message(self, *args):  # quiet
                pass

            def _handle(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                rec = Received(path=self.path, method=self.command,
                               headers={k.lower(): v for k, v in self.headers.items()},
                               body=body, at=time.time(), mono=time.monotonic())
                with receiver._cond:
                    receiver._records.append(rec)
                    receiver._cond.notify_all()
                reply = receiver._reply_for(rec)
                if reply.hang:
                    receiver._release.wait(reply.hang)
                    if _peer_gone(self.connection):  # it timed out: nothing is answered
                        self.close_connection = True
                        return
                try:
                    self.send_response(reply.status)
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                    self.wfile.flush()
                except OSError:  # the client gave up (timeout): nothing answered
                    self.close_connection = True
                    return
                with receiver._cond:
                    rec.status = reply.status
                    rec.answered_mono = time.monotonic()
                    receiver._cond.notify_all()

            do_POST = _handle
            do_GET = _handle
            do_PUT = _handle

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

            def handle_error(self, request, client_address):  # a cut connection is expected
                pass

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    # -- addresses
    def url(self, name="hook"):
        return f"http://127.0.0.1:{self.port}/{name}"

    # -- behaviour
    def rule(self, fn):
        """fn(Received) -> Reply or None. Newest rule first. Returns fn (to remove it)."""
        with self._lock:
            self._rules.insert(0, fn)
        return fn

    def remove_rule(self, fn):
        with self._lock:
            self._rules.remove(fn)

    def clear_rules(self):
        with self._lock:
            self._rules.clear()

    def answer(self, status, retry_after=None, cids=None, path=None, hang=0.0, headers=None,
               body=b"ok"):
        """From now on answer status (to events of cids / on path only, when given)."""
        h = dict(headers or {})
        if retry_after is not None:
            h["Retry-After"] = str(retry_after)
        cids = set(cids) if cids is not None else None

        def fn(req):
            if cids is not None and req.conversation_id not in cids:
                return None
            if path is not None and req.path != "/" + path.lstrip("/"):
                return None
            return Reply(status, h, body, hang=hang)
        return self.rule(fn)

    def _reply_for(self, rec):
        with self._lock:
            rules = list(self._rules)
        for fn in rules:
            r = fn(rec)
            if r is not None:
                return r
        return Reply(200)

    # -- what was received
    def requests(self, path=None, cid=None, type=None):
        with self._lock:
            out = list(self._records)
        if path is not None:
            out = [r for r in out if r.path == "/" + path.lstrip("/")]
        if cid is not None:
            out = [r for r in out if r.conversation_id == cid]
        if type is not None:
            out = [r for r in out if r.type == type]
        return out

    def delivered(self, path=None, cid=None, type=None):
        """Requests answered 2xx."""
        return [r for r in self.requests(path, cid, type) if 200 <= r.status < 300]

    def wait(self, pred, timeout=30.0, what="the expected deliveries"):
        """Waits until pred() is true (re-checked on every request and answer, and every 0.2 s)
        and returns its value; fails the test with what and the requests seen so far."""
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                self._lock.release()
                try:
                    v = pred()
                finally:
                    self._lock.acquire()
                if v:
                    return v
                left = end - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.2))
        seen = [(r.path, r.type, r.conversation_id, r.status) for r in self.requests()]
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; "
                             f"received {len(seen)}: {seen[-40:]}")

    def close(self):
        self._release.set()
        self._httpd.shutdown()
        self._httpd.server_close()
