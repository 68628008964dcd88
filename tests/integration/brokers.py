"""Minimal clients for reading what gensendrep published to the brokers, as a downstream consumer
would: Redis (RESP over a socket: XGROUP/XREADGROUP/XACK) and NATS (the text protocol: CONNECT,
SUB, PUB, MSG/HMSG; a JetStream push consumer made with $JS.API.CONSUMER.CREATE). Debian has no
Python client for NATS, and neither needs more than this. Standard library only."""
import json
import socket
import time
import uuid


# ---------------------------------------------------------------- Redis
class RespError(Exception):
    pass


class RespClient:
    def __init__(self, port, host="127.0.0.1", timeout=10):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("redis closed the connection")
        self.buf += data

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _read(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._fill()
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise RespError(f"unexpected reply {line[:40]!r}")

    def __call__(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        reply = self._read()
        if isinstance(reply, RespError):
            raise reply
        return reply


def read_stream_group(port, stream, group, consumer="c1", want=None, timeout=20, ack=True):
    """Reads entries of stream through consumer group (made at the stream's start when missing)
    until `want` entries were read (or the stream has nothing new after timeout when want is
    None). Returns [(entry_id, {field: value})] with fields decoded as text."""
    got = []
    deadline = time.monotonic() + timeout
    with RespClient(port) as r:
        try:
            r("XGROUP", "CREATE", stream, group, "0", "MKSTREAM")
        except RespError as e:
            if "BUSYGROUP" not in str(e):
                raise
        while want is None or len(got) < want:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            block = max(1, min(int(left * 1000), 500))
            reply = r("XREADGROUP", "GROUP", group, consumer, "COUNT", 500, "BLOCK", block,
                      "STREAMS", stream, ">")
            if not reply:
                if want is None:
                    break
                continue
            for _name, entries in reply:
                for entry_id, fields in entries:
                    it = iter(fields)
                    got.append((entry_id.decode(),
                                {k.decode(): v.decode() for k, v in zip(it, it)}))
                    if ack:
                        r("XACK", stream, group, entry_id)
    return got


# ---------------------------------------------------------------- NATS
class NatsClient:
    """One connection speaking the NATS text protocol (headers on)."""

    def __init__(self, port, user=None, password=None, host="127.0.0.1", timeout=10):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.sid = 0
        self.pending = []  # messages read while waiting for something else
        info = self._line()
        if not info.startswith(b"INFO "):
            raise RuntimeError(f"not a NATS server: {info[:60]!r}")
        connect = {"verbose": False, "pedantic": False, "headers": True, "no_responders": True,
                   "protocol": 1, "lang": "python-test", "version": "0"}
        if user:
            connect.update(user=user, **{"pass": password})
        self.sock.sendall(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
        while True:
            line = self._line()
            if line == b"PONG":
                break
            if line.startswith(b"-ERR"):
                raise RuntimeError(line.decode())

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("nats closed the connection")
        self.buf += data

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _take(self, n):
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _next(self):
        """The next message: dict(subject, sid, reply, headers, data, status)."""
        while True:
            line = self._line()
            if line == b"PING":
                self.sock.sendall(b"PONG\r\n")
                continue
            if line in (b"PONG", b"+OK") or line.startswith(b"INFO "):
                continue
            if line.startswith(b"-ERR"):
                raise RuntimeError(line.decode())
            parts = line.decode().split(" ")
            if parts[0] == "MSG":
                subject, sid = parts[1], int(parts[2])
                reply = parts[3] if len(parts) == 5 else None
                data = self._take(int(parts[-1]))
                return {"subject": subject, "sid": sid, "reply": reply, "headers": {},
                        "data": data, "status": None}
            if parts[0] == "HMSG":
                subject, sid = parts[1], int(parts[2])
                reply = parts[3] if len(parts) == 6 else None
                hlen, total = int(parts[-2]), int(parts[-1])
                raw = self._take(total)
                head, data = raw[:hlen], raw[hlen:]
                lines = head.decode().split("\r\n")
                status = lines[0][len("NATS/1.0"):].strip() or None
                headers = {}
                for h in lines[1:]:
                    if ":" in h:
                        k, _, v = h.partition(":")
                        headers[k.strip()] = v.strip()
                return {"subject": subject, "sid": sid, "reply": reply, "headers": headers,
                        "data": data, "status": status}
            raise RuntimeError(f"unexpected NATS line {line[:60]!r}")

    def subscribe(self, subject):
        self.sid += 1
        self.sock.sendall(f"SUB {subject} {self.sid}\r\n".encode())
        return self.sid

    def unsubscribe(self, sid):
        self.sock.sendall(f"UNSUB {sid}\r\n".encode())

    def publish(self, subject, payload, reply=None):
        head = f"PUB {subject} {reply + ' ' if reply else ''}{len(payload)}\r\n".encode()
        self.sock.sendall(head + payload + b"\r\n")

    def next_msg(self, sid, timeout):
        for i, m in enumerate(self.pending):
            if m["sid"] == sid:
                return self.pending.pop(i)
        self.sock.settimeout(max(timeout, 0.01))
        try:
            while True:
                m = self._next()
                if m["sid"] == sid:
                    return m
                self.pending.append(m)
        except socket.timeout:
            raise TimeoutError(f"no message on sid {sid} within {timeout}s") from None

    def request(self, subject, payload, timeout=5):
        inbox = "_INBOX." + uuid.uuid4().hex
        sid = self.subscribe(inbox)
        self.publish(subject, payload, reply=inbox)
        try:
            m = self.next_msg(sid, timeout)
        finally:
            self.unsubscribe(sid)
        if m["status"] == "503":
            raise RuntimeError(f"no responders for {subject}")
        return m["data"]

    def js_request(self, subject, body, timeout=5):
        answer = json.loads(self.request(subject, json.dumps(body).encode(), timeout) or b"{}")
        if "error" in answer:
            raise RuntimeError(f"{subject}: {answer['error']}")
        return answer

    def stream_info(self, stream):
        return self.js_request(f"$JS.API.STREAM.INFO.{stream}", {})

    def push_consumer(self, stream, filter_subject):
        """An ephemeral push consumer delivering every message of stream (from the first) that
        matches filter_subject; returns the sid to read with next_msg / read_all."""
        inbox = "_INBOX." + uuid.uuid4().hex
        sid = self.subscribe(inbox)
        self.js_request(f"$JS.API.CONSUMER.CREATE.{stream}", {
            "stream_name": stream,
            "config": {"deliver_subject": inbox, "deliver_policy": "all", "ack_policy": "none",
                       "filter_subject": filter_subject, "max_deliver": 1}})
        return sid

    def read_all(self, sid, want=None, timeout=20, quiet=1.0):
        """Messages on sid until `want` arrived (or, want None, until none came for `quiet`
        seconds), at most timeout seconds. Flow-control/heartbeat status messages are skipped."""
        got = []
        deadline = time.monotonic() + timeout
        while want is None or len(got) < want:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                m = self.next_msg(sid, min(left, quiet) if want is None else left)
            except TimeoutError:
                if want is None:
                    break
                continue
            if m["status"]:
                continue
            got.append(m)
        return got
