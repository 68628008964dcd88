"""Hostile clients at the connection level, over raw sockets: request smuggling (framing),
NUL bytes in the method and headers, slow headers, half-closed connections, a full connection
table, and the answers libmicrohttpd would otherwise write itself.

None of this depends on the storage backend, so it runs on SQLite only."""
import ctypes
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

from helpers import BINARY, KEY1, REQUEST_ID_RE, free_port, make_conv, new_session

pytestmark = pytest.mark.backends("sqlite")

WEBHOOK = "/api/v1/webhook/conversation"
AUTH = b"Authorization: Bearer " + KEY1.encode() + b"\r\n"


# ------------------------------------------------------------------ raw socket helpers
def _connect(srv, source_ip=None, timeout=10):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    if source_ip:
        s.bind((source_ip, 0))
    s.connect(("127.0.0.1", srv.port))
    return s


def _read_responses(sock, timeout=10):
    """Reads until the peer closes (or timeout). Returns (list of (status, headers, body), closed)
    where closed says whether the server closed the connection."""
    sock.settimeout(timeout)
    data = b""
    closed = False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            closed = True
            break
        if not chunk:
            closed = True
            break
        data += chunk
    return _split_responses(data), closed


def _split_responses(data):
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            out.append((None, {}, data))
            break
        lines = head.decode("latin-1").split("\r\n")
        m = re.match(r"HTTP/1\.[01] (\d{3})", lines[0])
        status = int(m.group(1)) if m else None
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        n = int(headers.get("content-length", len(rest)))
        out.append((status, headers, rest[:n]))
        data = rest[n:]
    return out


def _exchange(srv, raw, timeout=6):
    """Sends raw bytes; returns (responses, closed). A server that neither answers nor closes
    within timeout gives ([], False)."""
    with _connect(srv) as s:
        s.sendall(raw)
        return _read_responses(s, timeout)


def _assert_envelope(resp, status, code):
    st, headers, body = resp
    assert st == status, (st, headers, body[:300])
    assert headers.get("content-type", "").startswith("application/json"), headers
    assert REQUEST_ID_RE.match(headers.get("x-request-id", "")), headers
    err = json.loads(body)["error"]
    assert err["code"] == code, err
    assert isinstance(err["message"], str) and err["message"], err
    return err


def _log_lines(srv):
    return [r for r in srv.log_records() if "status" in r]


def _wait_for_log(srv, pred, timeout=5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [r for r in _log_lines(srv) if pred(r)]
        if found:
            return found
        time.sleep(0.05)
    return []


# ------------------------------------------------------------------ defect 14: framing
def _post(extra_headers, body=b"", version=b"HTTP/1.1", path=WEBHOOK.encode()):
    return (b"POST " + path + b" " + version + b"\r\nHost: x\r\n" + AUTH +
            b"Content-Type: application/json\r\n" + extra_headers + b"\r\n" + body)


SMUGGLED = b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n"
CHUNKED_BODY = b"2\r\n{}\r\n0\r\n\r\n"

FRAMING_CASES = [
    # Content-Length with Transfer-Encoding: the trailing request must not be served
    ("cl_and_te", _post(b"Content-Length: 12\r\nTransfer-Encoding: chunked\r\n",
                        CHUNKED_BODY + SMUGGLED), 400, "BAD_REQUEST"),
    ("te_and_cl", _post(b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                        CHUNKED_BODY + SMUGGLED), 400, "BAD_REQUEST"),
    # two different lengths: which one frames the body is ambiguous
    ("two_lengths", _post(b"Content-Length: 2\r\nContent-Length: 43\r\n", b"{}" + SMUGGLED),
     400, "BAD_REQUEST"),
    ("two_lengths_first_zero", _post(b"Content-Length: 0\r\nContent-Length: 2\r\n", b"{}"),
     400, "BAD_REQUEST"),
    # HTTP/1.0 has no transfer codings
    ("te_on_http10", _post(b"Transfer-Encoding: chunked\r\n", CHUNKED_BODY, version=b"HTTP/1.0"),
     400, "BAD_REQUEST"),
    # codings we do not implement: 501, and no waiting for a body we cannot frame
    ("gzip_chunked", _post(b"Transfer-Encoding: gzip, chunked\r\n", CHUNKED_BODY),
     501, "NOT_IMPLEMENTED"),
    ("xchunked", _post(b"Transfer-Encoding: xchunked\r\n", CHUNKED_BODY), 501, "NOT_IMPLEMENTED"),
    ("identity", _post(b"Transfer-Encoding: identity\r\n", b"{}"), 501, "NOT_IMPLEMENTED"),
    ("chunked_twice", _post(b"Transfer-Encoding: chunked, chunked\r\n", CHUNKED_BODY),
     400, "BAD_REQUEST"),
    ("te_two_lines", _post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                           CHUNKED_BODY), 400, "BAD_REQUEST"),
    ("te_padded", _post(b"Transfer-Encoding: chunked \r\n", CHUNKED_BODY), 400, "BAD_REQUEST"),
    # the same on an endpoint that takes no body
    ("get_cl_and_te", b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED, 400, "BAD_REQUEST"),
    # whitespace before the colon (RFC 9112 §5.1: 400): MHD ignored these lines and framed by
    # what was left, while a proxy that trims the name frames by them
    ("cl_space_colon", _post(b"Content-Length : %d\r\n" % len(SMUGGLED), SMUGGLED),
     400, "BAD_REQUEST"),
    ("te_space_colon", _post(b"Transfer-Encoding : chunked\r\nContent-Length: 3\r\n",
                             b"0\r\n\r\n" + SMUGGLED), 400, "BAD_REQUEST"),
    ("te_tab_colon", b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding\t: chunked\r\n"
                     b"\r\n" + SMUGGLED, 400, "BAD_REQUEST"),
]


@pytest.mark.parametrize("name,raw,status,code", FRAMING_CASES, ids=[c[0] for c in FRAMING_CASES])
def test_ambiguous_framing_is_refused_and_the_connection_closed(server, name, raw, status, code):
    responses, closed = _exchange(server, raw)
    assert responses, f"{name}: no answer"
    _assert_envelope(responses[0], status, code)
    assert responses[0][1].get("connection", "").lower() == "close", responses[0][1]
    assert len(responses) == 1, f"{name}: a smuggled request was served: {responses[1:]}"
    assert closed, f"{name}: the connection was kept open after a framing error"


def test_valid_framing_still_served(server):
    # a chunked webhook, identical repeated lengths, a plain GET: all unchanged
    body = json.dumps(make_conv()).encode()
    chunked = b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    responses, _ = _exchange(server, _post(b"Transfer-Encoding: chunked\r\n", chunked) + SMUGGLED,
                             timeout=3)
    assert [r[0] for r in responses] == [200, 200], responses
    body = json.dumps(make_conv()).encode()
    n = str(len(body)).encode()
    responses, _ = _exchange(server, _post(b"Content-Length: " + n + b"\r\nContent-Length: " + n +
                                           b"\r\n", body), timeout=3)
    assert [r[0] for r in responses] == [200], responses


# ------------------------------------------------------------------ defect 15: NUL bytes
NUL_CASES = [
    ("auth_value", b"GET /api/v1/conversations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
     KEY1.encode() + b"\x00junk\r\n\r\n"),
    ("auth_value_nul_at_end", b"GET /api/v1/conversations HTTP/1.1\r\nHost: x\r\n"
     b"Authorization: Bearer " + KEY1.encode() + b"\x00\r\n\r\n"),
    ("other_header", b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Thing: a\x00b\r\n"
     b"Accept: */*\r\n\r\n"),
    ("value_starts_with_nul", b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Thing: \x00b\r\n\r\n"),
    ("method", b"GET\x00 /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("method_suffix", b"GET\x00junk /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n"),
]


@pytest.mark.parametrize("name,raw", NUL_CASES, ids=[c[0] for c in NUL_CASES])
def test_nul_in_method_or_header_is_400(server, name, raw):
    responses, _ = _exchange(server, raw, timeout=3)
    assert responses, f"{name}: no answer"
    _assert_envelope(responses[0], 400, "BAD_REQUEST")


# ------------------------------------------------------------------ defect 13: slow and stuck
def _trickle_until_closed(sock, data, every=0.25, limit=12):
    """Sends data a byte at a time; returns the seconds until the server closed the connection
    (or limit when it never did)."""
    t0 = time.monotonic()
    sock.setblocking(False)
    i = 0
    while time.monotonic() - t0 < limit:
        try:
            if sock.recv(65536) == b"":
                return time.monotonic() - t0
        except BlockingIOError:
            pass
        except OSError:  # reset
            return time.monotonic() - t0
        try:
            sock.send(data[i % len(data):i % len(data) + 1])
        except OSError:
            return time.monotonic() - t0
        i += 1
        time.sleep(every)
    return limit


def test_trickled_headers_are_cut_after_the_header_timeout(make_server):
    """A client trickling its headers a byte at a time was never idle long enough for the idle
    timeout, and the request timeout only starts once the headers are in."""
    srv = make_server(env={"HEADER_TIMEOUT_SECONDS": "2", "CONNECTION_TIMEOUT_SECONDS": "30",
                           "REQUEST_TIMEOUT_SECONDS": "30"})
    with _connect(srv) as s:
        s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")
        held = _trickle_until_closed(s, b"X-Slow: " + b"a" * 200)
    assert held < 5, f"slow headers held the connection {held:.1f}s on a 2s header timeout"
    assert held > 1.5, f"cut after {held:.1f}s, before the 2s header timeout"
    # the same on a kept-alive connection, for the second request
    with _connect(srv) as s:
        s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        first = _read_one(s)
        assert first[0] == 200, first
        held = _trickle_until_closed(s, b"GET /api/v1/health HTTP/1.1\r\nX-Slow: " + b"b" * 200)
    assert held < 5, f"slow second request held the connection {held:.1f}s"
    assert srv.get("/api/v1/health", key=None).status_code == 200


def _read_one(sock, timeout=5):
    """Reads exactly one response (Content-Length framed) from a kept-alive connection."""
    sock.settimeout(timeout)
    data = b""
    while True:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep:
            m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            if m and len(rest) >= int(m.group(1)):
                return _split_responses(data)[0]
        chunk = sock.recv(65536)
        if not chunk:
            return _split_responses(data)[0] if data else (None, {}, b"")
        data += chunk


def test_header_timeout_does_not_cut_a_slow_body(make_server):
    """Only the request line and headers are bounded by HEADER_TIMEOUT_SECONDS; the body has
    REQUEST_TIMEOUT_SECONDS."""
    srv = make_server(env={"HEADER_TIMEOUT_SECONDS": "1", "REQUEST_TIMEOUT_SECONDS": "20"})
    body = json.dumps(make_conv()).encode()
    with _connect(srv) as s:
        s.sendall(_post(b"Content-Length: " + str(len(body)).encode() + b"\r\n"))
        for i in range(3):
            time.sleep(0.9)
            s.sendall(body[i * len(body) // 3:(i + 1) * len(body) // 3])
        responses, _ = _read_responses(s, timeout=3)
    assert responses and responses[0][0] == 200, responses


def test_idle_keep_alive_is_left_to_the_idle_timeout(make_server):
    """The header timeout starts with the first byte of a later request, not at the end of the
    previous answer: an idle kept-alive connection lives out CONNECTION_TIMEOUT_SECONDS."""
    srv = make_server(env={"HEADER_TIMEOUT_SECONDS": "1", "CONNECTION_TIMEOUT_SECONDS": "4"})
    with _connect(srv) as s:
        s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_one(s)[0] == 200
        time.sleep(2.5)  # idle past the header timeout
        s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_one(s)[0] == 200


def test_next_request_sent_at_once_then_stalled_is_cut_after_the_header_timeout(make_server):
    """The bytes of a kept-alive connection's next request were counted from the first sweep
    after the answer: a client that sent part of its next headers at once (before that sweep)
    and then one byte just inside each idle timeout held the connection idle timeout + header
    timeout (8 s on 8/2 s timeouts, 40 s on the defaults)."""
    srv = make_server(env={"HEADER_TIMEOUT_SECONDS": "2", "CONNECTION_TIMEOUT_SECONDS": "8",
                           "THREADS": "1"})
    for _ in range(3):  # the first sweep after the answer comes within 200 ms: race it
        with _connect(srv) as s:
            s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _read_one(s)[0] == 200
            s.sendall(b"GET /api/v1/health HTTP/1.1\r\nX-Slow: a")
            t0 = time.monotonic()
            s.settimeout(0.1)
            next_byte = 5
            while time.monotonic() - t0 < 12:
                try:
                    if s.recv(65536) == b"":
                        break
                except socket.timeout:
                    pass
                except OSError:  # reset
                    break
                if time.monotonic() - t0 > next_byte:  # within the idle timeout
                    s.send(b"b")
                    next_byte += 5
            held = time.monotonic() - t0
        assert held < 4.5, f"the next request's headers held the connection {held:.1f}s"


def _hold(srv, n, source_ips, partial=b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: a"):
    held = []
    for i in range(n):
        try:
            s = _connect(srv, source_ip=source_ips[i % len(source_ips)], timeout=5)
            s.sendall(partial)
            held.append(s)
        except OSError:
            pass
    return held


@pytest.mark.parametrize("max_connections,slow", [(50, 60), (None, 1100)],
                         ids=["max50_slow60", "default_slow1100"])
def test_full_table_of_slow_clients_does_not_lock_others_out(make_server, max_connections, slow):
    """60 slow clients with MAX_CONNECTIONS=50 took health down until they gave up; 1,024 held
    connections locked everyone out. A new client now evicts the oldest one still sending its
    headers."""
    env = {"HEADER_TIMEOUT_SECONDS": "60", "CONNECTION_TIMEOUT_SECONDS": "60", "THREADS": "2"}
    if max_connections:
        env["MAX_CONNECTIONS"] = str(max_connections)
    srv = make_server(env=env)
    ips = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    held = _hold(srv, slow, ips)
    try:
        session = new_session()
        for _ in range(3):
            t0 = time.monotonic()
            r = session.get(srv.url("/api/v1/health"), timeout=10)
            assert r.status_code == 200, r.text
            assert time.monotonic() - t0 < 3, f"health took {time.monotonic() - t0:.1f}s"
            session.close()  # a new connection each time
        body = make_conv()
        r = srv.post_conv(body, timeout=10)
        assert r.status_code == 200, r.text
        # the slow clients keep trying: still answered
        held += _hold(srv, 20, ips)
        assert srv.get(f"/api/v1/conversations/{body['conversationId']}",
                       timeout=10).status_code == 200
    finally:
        for s in held:
            s.close()


HALF_CLOSED_CASES = [
    # headers asking for 100-continue, then the client gives up sending
    ("expect_then_shut", b"POST " + WEBHOOK.encode() + b" HTTP/1.1\r\nHost: x\r\n" + AUTH +
     b"Content-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 100\r\n\r\n"),
    # a part of the headers, then shut
    ("partial_headers", b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n"),
    # a whole request: answered, then the connection closed (no further request can come)
    ("whole_request", b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n"),
]


@pytest.mark.parametrize("name,raw", HALF_CLOSED_CASES, ids=[c[0] for c in HALF_CLOSED_CASES])
def test_half_closed_connection_is_closed_promptly(make_server, name, raw):
    """shutdown(SHUT_WR) by the client left the connection in CLOSE-WAIT until the idle timeout."""
    srv = make_server(env={"CONNECTION_TIMEOUT_SECONDS": "30", "THREADS": "1"})
    for _ in range(3):  # the stall depended on how the FIN and the data arrived together
        with _connect(srv) as s:
            s.sendall(raw)
            s.shutdown(socket.SHUT_WR)
            t0 = time.monotonic()
            responses, closed = _read_responses(s, timeout=6)
            waited = time.monotonic() - t0
        assert closed and waited < 3, f"{name}: still open after {waited:.1f}s"
        if name == "whole_request":
            assert [r[0] for r in responses] == [200], responses


def test_half_closed_after_a_whole_webhook_still_gets_its_answer(server):
    """A client may half-close once its request is sent: the answer must still come."""
    body = json.dumps(make_conv()).encode()
    raw = _post(b"Content-Length: " + str(len(body)).encode() + b"\r\n", body)
    for _ in range(5):
        with _connect(server) as s:
            s.sendall(raw)
            s.shutdown(socket.SHUT_WR)
            responses, closed = _read_responses(s, timeout=10)
        assert [r[0] for r in responses] == [200], responses
        assert closed
        body = json.dumps(make_conv()).encode()
        raw = _post(b"Content-Length: " + str(len(body)).encode() + b"\r\n", body)


# ------------------------------------------------------------------ defect 16: MHD's own answers
def _webhook_with(headers, body=b"", rid="x"):
    return (b"POST " + WEBHOOK.encode() + b" HTTP/1.1\r\nHost: x\r\n" + AUTH +
            b"Content-Type: application/json\r\nX-Request-Id: " + rid.encode() + b"\r\n" +
            headers + b"\r\n" + body)


LIBRARY_CASES = [
    # name, request, the status libmicrohttpd answers itself
    ("cl_negative", lambda rid: _webhook_with(b"Content-Length: -1\r\n", rid=rid), 400),
    ("cl_plus", lambda rid: _webhook_with(b"Content-Length: +5\r\n", b"{}", rid=rid), 400),
    ("cl_hex", lambda rid: _webhook_with(b"Content-Length: 0x10\r\n", rid=rid), 400),
    ("cl_over_2_64", lambda rid: _webhook_with(b"Content-Length: 99999999999999999999999\r\n",
                                               rid=rid), 413),
    ("bad_chunk", lambda rid: _webhook_with(b"Transfer-Encoding: chunked\r\n", b"zz\r\nabc\r\n",
                                            rid=rid), 400),
    ("chunk_over_2_64", lambda rid: _webhook_with(b"Transfer-Encoding: chunked\r\n",
                                                  b"1ffffffffffffffffffff\r\n", rid=rid), 413),
]


@pytest.mark.parametrize("name,build,status", LIBRARY_CASES, ids=[c[0] for c in LIBRARY_CASES])
def test_library_answers_are_logged_with_their_real_status(server, name, build, status):
    """libmicrohttpd answers these itself (HTML, before or outside the application); the
    request log line must still exist, with the status the client got, its address and id."""
    rid = "lib-" + name + "-" + str(time.monotonic_ns())
    responses, closed = _exchange(server, build(rid), timeout=5)
    assert responses and responses[0][0] == status, (name, responses)
    assert closed
    lines = _wait_for_log(server, lambda r: r.get("request_id") == rid)
    assert lines, f"{name}: no request log line"
    assert lines[0]["status"] == status, lines[0]
    assert lines[0]["client_ip"] == "127.0.0.1", lines[0]


def test_unsupported_http_version_is_logged(server):
    """HTTP/2.0 is refused by libmicrohttpd (505) before any application code runs: its own log
    message is raised to info so the refusal is visible."""
    responses, closed = _exchange(server, b"GET /api/v1/health HTTP/2.0\r\nHost: x\r\n\r\n",
                                  timeout=5)
    assert responses and responses[0][0] == 505, responses
    assert closed
    assert _wait_for_log_msg(server, lambda r: r.get("level") == "info" and "505" in r["msg"])


def _wait_for_log_msg(srv, pred, timeout=5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(pred(r) for r in srv.log_records() if "msg" in r):
            return True
        time.sleep(0.05)
    return False


def test_header_timeout_is_logged_as_408(make_server):
    srv = make_server(env={"HEADER_TIMEOUT_SECONDS": "1"})
    rid = "slow-" + str(time.monotonic_ns())
    with _connect(srv) as s:
        s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Request-Id: " + rid.encode() +
                  b"\r\nX-Slow: a")
        _read_responses(s, timeout=4)
    lines = _wait_for_log(srv, lambda r: r.get("status") == 408)
    assert lines, [r for r in srv.log_records() if "status" in r]
    assert lines[0]["client_ip"] == "127.0.0.1"


def _stop_idle_thread(pid, tid):
    """Stops one thread of another process while it waits in epoll_wait (ptrace: the others
    keep running; stopped anywhere else it might hold a lock the guard needs); returns a
    function that lets it go on."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    ptrace_seize, ptrace_interrupt, ptrace_detach, wall = 0x4206, 0x4207, 17, 0x40000000
    idle = {"232", "281"}  # x86_64 epoll_wait, epoll_pwait
    for _ in range(500):
        assert libc.ptrace(ptrace_seize, tid, None, None) == 0, os.strerror(ctypes.get_errno())
        assert libc.ptrace(ptrace_interrupt, tid, None, None) == 0, os.strerror(ctypes.get_errno())
        os.waitpid(tid, wall)
        with open(f"/proc/{pid}/task/{tid}/syscall") as f:
            if f.read().split()[0] in idle:
                return lambda: libc.ptrace(ptrace_detach, tid, None, None)
        assert libc.ptrace(ptrace_detach, tid, None, None) == 0
        time.sleep(0.01)
    raise AssertionError("the event thread was never idle in epoll_wait")


def _thread_named(pid, name):
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            if f.read().strip() == name:
                return int(tid)
    raise AssertionError(f"no thread {name}")


def test_half_closed_request_unread_by_a_busy_event_thread_is_answered(tmp_path):
    """A whole request followed by the client's FIN was cut unanswered when its event thread
    was busy for over two sweeps: the guard saw CLOSE-WAIT twice while the request still sat
    unread in the kernel. Here the event thread is stopped (ptrace) for several sweeps. Its
    stderr is also a pipe nobody reads, which once held the event thread (each answer's log
    line was written on it): now thousands of answers go out regardless."""
    port = free_port()
    env = dict(os.environ, API_SECRET_KEY=KEY1, PORT=str(port), HOST="127.0.0.1", THREADS="1",
               DATABASE_URL="sqlite:" + str(tmp_path / "db.sqlite"))
    proc = subprocess.Popen([BINARY], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    drained, started = [], []
    drainer = threading.Thread(
        target=lambda: drained.extend(iter(lambda: proc.stderr.read(65536), b"")), daemon=True)
    try:
        deadline = time.monotonic() + 30
        while b"listening" not in proc.stderr.readline():
            assert time.monotonic() < deadline and proc.poll() is None, "server did not start"
        waiting = socket.create_connection(("127.0.0.1", port), timeout=10)
        filler = socket.create_connection(("127.0.0.1", port), timeout=10)
        # Each answer logs a line, far more than the pipe holds: none may wait for it.
        for _ in range(5000):
            filler.sendall(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while b"}" not in data:
                chunk = filler.recv(65536)
                assert chunk, "filler connection closed"
                data += chunk
        resume = _stop_idle_thread(proc.pid, _thread_named(proc.pid, "MHD-single"))
        try:
            waiting.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
            waiting.shutdown(socket.SHUT_WR)
            time.sleep(1.5)  # several sweeps while the event thread is stopped
        finally:
            resume()
        drainer.start()
        started.append(True)
        responses, closed = _read_responses(waiting, timeout=10)
        assert [r[0] for r in responses] == [200], responses
        waiting.close()
        filler.close()
    finally:
        if not started:
            drainer.start()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        drainer.join(timeout=10)
    log = b"".join(drained)
    assert b"Sanitizer" not in log and b"runtime error" not in log, log[-2000:]
    assert proc.returncode == 0, log[-2000:]
    for line in log.splitlines():  # the output thread's batches: every line whole
        if line.startswith(b"{"):
            json.loads(line)
