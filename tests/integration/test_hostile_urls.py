"""Hostile request targets: encoded separators, NUL bytes, invalid UTF-8, bad escapes, very
many or duplicated query parameters. Requests go out over a raw socket, byte for byte as
written here (requests would re-quote the URL). Every answer is our JSON error envelope, on
both backends, and nothing is stored or matched by a truncated value."""
import json
import socket
import time

import pytest

from helpers import KEY1, assert_error, make_conv, parse_raw_response, uid

AUTH = f"Authorization: Bearer {KEY1}\r\n"


def send(server, method, target, body=b"", headers="", timeout=15):
    """One request on its own connection; returns (status, headers, parsed JSON or None,
    seconds). The server must answer (not hang, not close without a word)."""
    head = f"{method} {target} HTTP/1.1\r\nHost: t\r\n{AUTH}{headers}Connection: close\r\n"
    if body or method == "POST":
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as s:
        s.sendall(head.encode("latin-1") + b"\r\n" + body)
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    elapsed = time.monotonic() - start
    status, hdrs, payload = parse_raw_response(data)
    assert status is not None, f"no answer to {method} {target[:80]}: {data[:200]!r}"
    parsed = json.loads(payload) if payload and "json" in hdrs.get("content-type", "") else None
    return status, hdrs, parsed, elapsed


class Answer:
    """Adapts a raw answer to helpers.assert_error."""

    def __init__(self, status, body):
        self.status_code = status
        self._body = body
        self.text = json.dumps(body)

    def json(self):
        return self._body


def assert_envelope(server, method, target, status=400, code="INVALID_PARAMETER", **kw):
    st, hdrs, body, elapsed = send(server, method, target, **kw)
    assert body is not None, (st, target)
    err = assert_error(Answer(st, body), status, code)
    assert hdrs.get("x-request-id"), hdrs
    return err, elapsed


@pytest.fixture(scope="module")
def stored(server):
    """A conversation whose id and email are prefixes of the hostile values below."""
    cid = f"abc{uid()}"
    email = f"u{uid()[:8]}@e.com"
    r = server.post_conv(make_conv(cid, emailId=email))
    assert r.status_code == 200, r.text
    return {"cid": cid, "email": email}


# ---------------------------------------------------------------- defect 15: route on the raw path

def test_encoded_slash_does_not_separate_segments(server, stored):
    st, _, body, _ = send(server, "GET", f"/api/v1/conversations/{stored['cid']}")
    assert st == 200 and body["conversationId"] == stored["cid"]
    err, _ = assert_envelope(server, "GET", f"/api/v1/conversations%2F{stored['cid']}",
                             status=404, code="NOT_FOUND")
    err, _ = assert_envelope(server, "GET", f"/api/v1/conversations%2f{stored['cid']}",
                             status=404, code="NOT_FOUND")


def test_encoded_slash_in_an_id_is_part_of_the_id(server):
    cid = f"team/{uid()}"
    assert server.post_conv(make_conv(cid)).status_code == 200
    st, _, body, _ = send(server, "GET", "/api/v1/conversations/" + cid.replace("/", "%2F"))
    assert st == 200 and body["conversationId"] == cid


def test_percent_encoded_letters_still_route(server):
    st, _, body, _ = send(server, "GET", "/api/v1/h%65alth")
    assert st == 200 and body["status"] == "healthy"


# ---------------------------------------------------------------- defects 4 and 15: NUL bytes

def test_nul_in_the_id_does_not_truncate(server, stored):
    err, _ = assert_envelope(server, "GET", f"/api/v1/conversations/{stored['cid']}%00xyz")
    assert "NUL" in err["message"]


def test_nul_in_a_filter_does_not_truncate(server, stored):
    email = stored["email"].replace("@", "%40")
    st, _, body, _ = send(server, "GET", f"/api/v1/conversations?email_id={email}")
    assert st == 200 and body["pagination"]["total"] == 1  # the control: it matches
    err, _ = assert_envelope(server, "GET", f"/api/v1/conversations?email_id={email}%00zzz")
    assert "email_id" in err["message"] and "NUL" in err["message"]


@pytest.mark.parametrize("target", [
    "/api/v1/health%00xyz",
    "/api/v1/conversations?page=1%00",
    "/api/v1/conversations?limit=%0010",
    "/api/v1/conversations?status=%00",
    "/api/v1/conversations/x?include=transcript%00",
    "/openapi.json%00.txt",
])
def test_nul_anywhere_in_a_get_target_is_400(server, target):
    err, _ = assert_envelope(server, "GET", target)
    assert "NUL" in err["message"]


def test_nul_in_the_webhook_path_stores_nothing(server):
    cid = f"nul_{uid()}"
    body = json.dumps(make_conv(cid)).encode()
    assert_envelope(server, "POST", "/api/v1/webhook/conversation%00x", body=body)
    assert server.get_conv(cid).status_code == 404


# ---------------------------------------------------------------- defect 3: invalid UTF-8

@pytest.mark.parametrize("target", [
    "/api/v1/conversations/ab%FFcd",
    "/api/v1/conversations/%C0%AF",          # overlong '/'
    "/api/v1/conversations/%ED%A0%80",       # a UTF-16 surrogate
    "/api/v1/conversations?email_id=%FF",
    "/api/v1/conversations?account_id=acc%E2%82",  # cut short
    "/api/v1/conversations?status=%F4%90%80%80",   # beyond U+10FFFF
])
def test_invalid_utf8_in_an_id_or_filter_is_400(server, target):
    err, _ = assert_envelope(server, "GET", target)
    assert "UTF-8" in err["message"]


def test_valid_utf8_still_works(server):
    cid = f"ünï-{uid()}"
    assert server.post_conv(make_conv(cid)).status_code == 200
    target = "/api/v1/conversations/" + "".join(
        f"%{b:02X}" if b > 0x7e else chr(b) for b in cid.encode())
    st, _, body, _ = send(server, "GET", target)
    assert st == 200 and body["conversationId"] == cid


@pytest.mark.parametrize("target", [
    "/api/v1/conversations/ab%zz",
    "/api/v1/conversations/ab%4",
    "/api/v1/conversations?email_id=100%",
])
def test_bad_escape_is_400(server, target):
    assert_envelope(server, "GET", target)


def test_plus_is_a_space_in_query_values_only(server):
    email = f"a+{uid()[:8]}@e.com"
    cid = f"plus+{uid()}"
    assert server.post_conv(make_conv(cid, emailId=email)).status_code == 200
    encoded = email.replace("+", "%2B").replace("@", "%40")
    st, _, body, _ = send(server, "GET", f"/api/v1/conversations?email_id={encoded}")
    assert st == 200 and body["pagination"]["total"] == 1
    st, _, body, _ = send(server, "GET", f"/api/v1/conversations?email_id={email}")
    assert st == 200 and body["pagination"]["total"] == 0  # '+' read as a space
    st, _, body, _ = send(server, "GET", f"/api/v1/conversations/{cid}")  # '+' kept in paths
    assert st == 200 and body["conversationId"] == cid


# ---------------------------------------------------------------- defect 12: many parameters

@pytest.mark.parametrize("count", [460, 2000])
def test_many_query_parameters_get_an_answer(server, count):
    query = "&".join(f"p{i}=v" for i in range(count))
    err, elapsed = assert_envelope(server, "GET", f"/api/v1/conversations?{query}")
    assert "100" in err["message"]
    assert elapsed < 5, elapsed  # an answer, not the idle timeout


def test_many_empty_query_parameters_get_an_answer(server):
    assert_envelope(server, "GET", "/api/v1/conversations?" + "&x" * 3000)


def test_many_query_parameters_on_the_webhook(server):
    cid = f"many_{uid()}"
    query = "&".join(f"p{i}=v" for i in range(460))
    body = json.dumps(make_conv(cid)).encode()
    _, elapsed = assert_envelope(server, "POST", f"/api/v1/webhook/conversation?{query}",
                                 body=body)
    assert elapsed < 5, elapsed
    assert server.get_conv(cid).status_code == 404


def test_a_hundred_parameters_are_fine(server):
    query = "&".join(f"p{i}=v" for i in range(99))
    st, _, body, _ = send(server, "GET", f"/api/v1/conversations?limit=5&{query}")
    assert st == 200 and body["pagination"]["limit"] == 5


# ---------------------------------------------------------------- duplicated parameters

@pytest.mark.parametrize("query", ["page=1&page=2", "limit=5&limit=5", "status=a&status", "include=transcript&include=transcript"])
def test_duplicated_query_parameter_is_400(server, query):
    err, _ = assert_envelope(server, "GET", f"/api/v1/conversations?{query}")
    assert "more than once" in err["message"]


# ---------------------------------------------------------------- raw NUL bytes in the target

def send_raw(server, request_line, timeout=15):
    """A request whose request line is given as raw bytes."""
    data = request_line + f"\r\nHost: t\r\n{AUTH}Connection: close\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
    status, hdrs, payload = parse_raw_response(out)
    assert status is not None, f"no answer to {request_line[:80]!r}: {out[:200]!r}"
    return status, hdrs, json.loads(payload) if payload else None


@pytest.mark.parametrize("line", [
    b"GET /api/v1/health\x00xyz HTTP/1.1",
    b"GET /api/v1/conversations/abc\x00xyz HTTP/1.1",
    b"GET /api/v1/conversations?email_id=u%40e.com\x00zzz HTTP/1.1",
    b"GET /api/v1/conversations\x00?" + b"&".join(b"p%d=v" % i for i in range(2000))
    + b" HTTP/1.1",
    # a NUL followed by what looks like the end of the request line (" HTTP/1.1" as MHD leaves
    # it) was taken for that end: the target was read as /api/v1/health and answered 200
    b"GET /api/v1/health\x00HTTP/1.1\x00xyz HTTP/1.1",
    b"GET /api/v1/conversations?email_id=u%40e.com\x00HTTP/1.0\x00zzz HTTP/1.1",
], ids=["path", "id", "query-value", "before-2000-parameters", "forged-line-end",
        "forged-line-end-query"])
def test_raw_nul_in_the_target_is_400(server, line):
    status, hdrs, body = send_raw(server, line)
    err = assert_error(Answer(status, body), 400, "INVALID_PARAMETER")
    assert "NUL" in err["message"] and hdrs.get("x-request-id")
