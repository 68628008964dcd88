"""Authentication, rate limits, CORS, request ids, routing errors and health."""
import json
import re

import pytest

from helpers import (KEY1, KEY2, REQUEST_ID_RE, assert_error, make_conv, new_session, uid)

WEBHOOK = "/api/v1/webhook/conversation"
LIST = "/api/v1/conversations"
HEALTH = "/api/v1/health"


def _endpoint_requests():
    """(name, method, path, kwargs) for every authenticated /api/v1 endpoint."""
    body = json.dumps(make_conv())
    return [
        ("webhook", "POST", WEBHOOK, {"data": body, "headers": {"Content-Type": "application/json"}}),
        ("list", "GET", LIST, {}),
        ("get-one", "GET", "/api/v1/conversations/conv_abc123", {}),
        ("get-one-include", "GET", "/api/v1/conversations/conv_abc123?include=transcript", {}),
    ]


BAD_AUTH = [
    ("missing", None),
    ("wrong key", "Bearer not-the-key"),
    ("prefix of key", f"Bearer {KEY1[:-1]}"),
    ("key plus suffix", f"Bearer {KEY1}x"),
    ("both keys as one", f"Bearer {KEY1},{KEY2}"),
    ("no scheme", KEY1),
    ("basic scheme", "Basic dGVzdC1rZXktb25lOg=="),
    ("scheme only", "Bearer"),
    ("scheme and space", "Bearer "),
    ("empty", ""),
    ("token scheme", f"Token {KEY1}"),
]


@pytest.mark.parametrize("endpoint", _endpoint_requests(), ids=lambda e: e[0])
@pytest.mark.parametrize("name,header", BAD_AUTH, ids=[n for n, _ in BAD_AUTH])
def test_unauthorized(server, endpoint, name, header):
    _, method, path, kw = endpoint
    headers = dict(kw.get("headers", {}))
    if header is not None:
        headers["Authorization"] = header
    kw = dict(kw, headers=headers)
    r = server.request(method, path, key=None, **kw)
    assert_error(r, 401, "UNAUTHORIZED")
    assert r.headers.get("WWW-Authenticate", "").startswith("Bearer"), r.headers


def test_rejected_webhook_stores_nothing(server):
    body = make_conv()
    r = server.post_conv(body, key="wrong")
    assert r.status_code == 401
    assert server.get_conv(body["conversationId"]).status_code == 404


@pytest.mark.parametrize("header", [f"Bearer {KEY1}", f"Bearer {KEY2}", f"bearer {KEY1}",
                                    f"BEARER {KEY2}"])
def test_accepted_authorization(server, header):
    body = make_conv()
    r = server.post_conv(body, key=None, headers={"Authorization": header})
    assert r.status_code == 200, r.text
    g = server.get_conv(body["conversationId"], key=None, headers={"Authorization": header})
    assert g.status_code == 200
    lst = server.get(LIST, key=None, headers={"Authorization": header})
    assert lst.status_code == 200


def test_health_needs_no_auth(server):
    r = server.get(HEALTH, key=None)
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "healthy"
    assert re.match(r"^\d+\.\d+\.\d+", body["version"])
    assert re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$", body["timestamp"])
    assert body["dependencies"] == {"database": "connected", "redis": "not_configured",
                                    "elevenlabs": "not_configured"}
    # a wrong key on health is ignored, not punished
    assert server.get(HEALTH, key="wrong").status_code == 200


# ------------------------------------------------------------------ routing errors
@pytest.mark.parametrize("method,path", [("GET", "/"), ("GET", "/api/v1/nope"),
                                         ("GET", "/api/v2/health"), ("POST", "/api/v1/webhook"),
                                         ("GET", "/api/v1/webhook/conversation/extra"),
                                         ("GET", "/favicon.ico")])
def test_unknown_route_404_json(server, method, path):
    r = server.request(method, path)
    assert_error(r, 404, "NOT_FOUND")
    assert r.headers["Content-Type"].startswith("application/json")


@pytest.mark.parametrize("method,path,allowed", [
    ("GET", WEBHOOK, "POST"),
    ("PUT", WEBHOOK, "POST"),
    ("PUT", "/api/v1/conversations/x", "DELETE"),  # DELETE erases (test_erasure.py)
    ("POST", LIST, "GET"),
    ("PATCH", LIST, "GET"),
    ("POST", HEALTH, "GET"),
    ("DELETE", "/openapi.json", "GET"),
])
def test_wrong_method_405(server, method, path, allowed):
    r = server.request(method, path)
    assert_error(r, 405, "METHOD_NOT_ALLOWED")
    allow = [m.strip().upper() for m in r.headers.get("Allow", "").split(",")]
    assert allowed in allow, r.headers
    assert method not in allow


# ------------------------------------------------------------------ X-Request-Id
@pytest.mark.parametrize("method,path,key", [("GET", HEALTH, None), ("GET", LIST, KEY1),
                                             ("GET", LIST, None), ("GET", "/nope", KEY1),
                                             ("POST", WEBHOOK, KEY1), ("DELETE", HEALTH, None)])
def test_request_id_on_every_answer(server, method, path, key):
    sane = f"req-{uid()}:a.b_c"
    r = server.request(method, path, key=key, headers={"X-Request-Id": sane})
    assert r.headers.get("X-Request-Id") == sane
    r = server.request(method, path, key=key)
    assert REQUEST_ID_RE.match(r.headers.get("X-Request-Id", "")), r.headers


@pytest.mark.parametrize("incoming", ["x" * 129, "y" * 500, "has space", "<script>", "semi;colon",
                                      "ünïcode", "a/b", "quote\"d"])
def test_insane_request_id_replaced(server, incoming):
    r = server.session.get(server.url(HEALTH), headers={"X-Request-Id": incoming.encode("utf-8")},
                           timeout=10)
    rid = r.headers.get("X-Request-Id", "")
    assert rid != incoming
    assert REQUEST_ID_RE.match(rid), rid


def test_request_id_128_chars_echoed_and_generated_ids_unique(server):
    rid = "A" * 128
    assert server.get(HEALTH, headers={"X-Request-Id": rid}).headers["X-Request-Id"] == rid
    ids = {server.get(HEALTH).headers["X-Request-Id"] for _ in range(20)}
    assert len(ids) == 20


# ------------------------------------------------------------------ rate limits
RL_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")


def _rl(resp):
    for h in RL_HEADERS:
        assert h in resp.headers, (h, resp.status_code, dict(resp.headers))
    return (int(resp.headers["RateLimit-Limit"]), int(resp.headers["RateLimit-Remaining"]),
            int(resp.headers["RateLimit-Reset"]))


def _assert_429(resp, limit):
    assert_error(resp, 429, "RATE_LIMITED")
    retry = int(resp.headers["Retry-After"])
    # The exact upper bound (the 60 s window) is checked once, in
    # test_rate_limit_waits_stay_within_window; here only sanity.
    assert 1 <= retry <= 61, retry
    lim, rem, reset = _rl(resp)
    assert (lim, rem) == (limit, 0)
    assert 0 <= reset <= 61


def test_webhook_rate_limit(make_server):
    srv = make_server(env={"RATE_LIMIT_WEBHOOK_PER_MINUTE": "5", "RATE_LIMIT_API_PER_MINUTE": "7"})
    remaining = []
    for _ in range(5):
        r = srv.post_conv(make_conv())
        assert r.status_code == 200, r.text
        lim, rem, reset = _rl(r)
        assert lim == 5 and 0 <= reset <= 61
        remaining.append(rem)
    assert remaining == [4, 3, 2, 1, 0]
    body = make_conv()
    r = srv.post_conv(body)
    _assert_429(r, 5)
    assert srv.get_conv(body["conversationId"]).status_code == 404, "a 429 must store nothing"
    # other endpoints have their own budget; health is never limited and has no RateLimit headers
    assert srv.get(LIST).status_code == 200
    for _ in range(30):
        h = srv.get(HEALTH, key=None)
        assert h.status_code == 200
        assert not any(k in h.headers for k in RL_HEADERS), dict(h.headers)


def test_rate_limit_waits_stay_within_window(make_server):
    """With a 60 s sliding window nobody should ever be told to wait longer than 60 s."""
    srv = make_server(env={"RATE_LIMIT_WEBHOOK_PER_MINUTE": "2", "RATE_LIMIT_API_PER_MINUTE": "2"})
    resets = []
    for _ in range(2):
        resets.append(_rl(srv.post_conv(make_conv()))[2])
        resets.append(_rl(srv.get(LIST))[2])
    limited = [srv.post_conv(make_conv()), srv.get(LIST)]
    for r in limited:
        assert r.status_code == 429
        resets.append(_rl(r)[2])
    retry_after = [int(r.headers["Retry-After"]) for r in limited]
    assert all(0 <= v <= 60 for v in resets), resets
    assert all(1 <= v <= 60 for v in retry_after), retry_after


def test_webhook_limit_checked_before_auth_and_per_ip(make_server):
    srv = make_server(env={"RATE_LIMIT_WEBHOOK_PER_MINUTE": "5"})
    for _ in range(5):
        r = srv.post_conv(make_conv(), key="wrong-key")
        assert r.status_code == 401
        _rl(r)
    _assert_429(srv.post_conv(make_conv()), 5)
    # headers on error answers of the limited endpoint too
    _assert_429(srv.post_conv(b"not json"), 5)
    # another client IP has its own budget
    other = new_session(source_ip="127.0.0.2")
    r = srv.post_conv(make_conv(), session=other)
    assert r.status_code == 200, r.text
    assert _rl(r)[1] == 4


def test_api_rate_limit_per_key(make_server):
    srv = make_server(env={"RATE_LIMIT_API_PER_MINUTE": "7", "RATE_LIMIT_WEBHOOK_PER_MINUTE": "5"})
    remaining = []
    paths = [LIST, "/api/v1/conversations/unknown-id", LIST + "?limit=abc"]
    expected_status = [200, 404, 400]
    for i in range(7):
        r = srv.get(paths[i % 3])
        assert r.status_code == expected_status[i % 3], r.text
        lim, rem, _ = _rl(r)
        assert lim == 7
        remaining.append(rem)
    assert remaining == [6, 5, 4, 3, 2, 1, 0]
    _assert_429(srv.get(LIST), 7)
    _assert_429(srv.get("/api/v1/conversations/unknown-id"), 7)
    # the second key has its own budget
    r = srv.get(LIST, key=KEY2)
    assert r.status_code == 200
    assert _rl(r)[1] == 6
    # the webhook budget is separate
    assert srv.post_conv(make_conv()).status_code == 200
    # failed auth is limited per IP and still answers 401 with the headers
    r = srv.get(LIST, key="wrong")
    assert r.status_code == 401
    _rl(r)
    assert srv.get(HEALTH, key=None).status_code == 200


def test_forwarded_for_ignored_without_trusted_proxy(make_server):
    srv = make_server(env={"RATE_LIMIT_WEBHOOK_PER_MINUTE": "5"})
    for i in range(5):
        r = srv.post_conv(make_conv(), headers={"X-Forwarded-For": f"10.0.0.{i + 1}"})
        assert r.status_code == 200
    _assert_429(srv.post_conv(make_conv(), headers={"X-Forwarded-For": "10.9.9.9"}), 5)


def test_forwarded_for_used_from_trusted_proxy(make_server):
    srv = make_server(env={"RATE_LIMIT_WEBHOOK_PER_MINUTE": "5",
                           "TRUSTED_PROXIES": "127.0.0.1"})
    for _ in range(5):
        r = srv.post_conv(make_conv(), headers={"X-Forwarded-For": "10.0.0.1"})
        assert r.status_code == 200
    _assert_429(srv.post_conv(make_conv(), headers={"X-Forwarded-For": "10.0.0.1"}), 5)
    r = srv.post_conv(make_conv(), headers={"X-Forwarded-For": "10.0.0.2"})
    assert r.status_code == 200 and _rl(r)[1] == 4
    # an untrusted peer (127.0.0.2) cannot choose its identity with X-Forwarded-For
    other = new_session(source_ip="127.0.0.2")
    for i in range(5):
        r = srv.post_conv(make_conv(), session=other,
                          headers={"X-Forwarded-For": f"10.1.0.{i + 1}"})
        assert r.status_code == 200
    _assert_429(srv.post_conv(make_conv(), session=other,
                              headers={"X-Forwarded-For": "10.1.0.99"}), 5)


def test_forwarded_for_cannot_be_pushed_aside_by_client_text(make_server):
    """Whatever a client writes in front, the address the trusted proxy appended counts: many
    spoofed entries or a very long header must not move the client to a fresh budget."""
    srv = make_server(env={"RATE_LIMIT_WEBHOOK_PER_MINUTE": "3",
                           "TRUSTED_PROXIES": "127.0.0.1"})
    spoofs = [", ".join(f"10.9.{i}.{j}" for j in range(70)) for i in range(3)]
    spoofs.append("x" * 3000 + ", 10.8.8.8")
    codes = [srv.post_conv(make_conv(), headers={"X-Forwarded-For": f"{spoof}, 10.0.0.7"})
             .status_code for spoof in spoofs]
    assert codes == [200, 200, 200, 429], codes


# ------------------------------------------------------------------ CORS
APP = "https://app.example.com"
EVIL = "https://evil.example.com"


def _assert_cors(resp, origin=APP):
    assert resp.headers.get("Access-Control-Allow-Origin") == origin, \
        (resp.status_code, dict(resp.headers))
    vary = [v.strip().lower() for v in resp.headers.get("Vary", "").split(",")]
    assert "origin" in vary, dict(resp.headers)


def _preflight(srv, path, origin=APP, method="POST"):
    return srv.request("OPTIONS", path, key=None, headers={
        "Origin": origin, "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type, x-request-id"})


def test_cors_preflight(make_server):
    srv = make_server(env={"CORS_ORIGINS": f"https://other.example.org, {APP}"})
    for path, method in [(WEBHOOK, "POST"), (LIST, "GET"), ("/api/v1/conversations/x", "GET")]:
        r = _preflight(srv, path, method=method)
        assert r.status_code == 204, (path, r.status_code, r.text)
        assert r.content == b""
        _assert_cors(r)
        methods = {m.strip().upper() for m in r.headers["Access-Control-Allow-Methods"].split(",")}
        assert method in methods
        headers = {h.strip().lower() for h in r.headers["Access-Control-Allow-Headers"].split(",")}
        assert {"authorization", "content-type", "x-request-id"} <= headers
        assert int(r.headers["Access-Control-Max-Age"]) > 0
    r = _preflight(srv, WEBHOOK, origin=EVIL)
    assert "Access-Control-Allow-Origin" not in r.headers


def test_cors_headers_on_every_answer(make_server):
    srv = make_server(env={"CORS_ORIGINS": APP, "RATE_LIMIT_API_PER_MINUTE": "3"})
    o = {"Origin": APP}
    cases = [
        (srv.get(HEALTH, key=None, headers=o), 200),
        (srv.post_conv(make_conv(), headers=o), 200),
        (srv.post_conv(b"{", headers=o), 400),
        (srv.post_conv(make_conv(), content_type="text/plain", headers=o), 415),
        (srv.get(LIST, headers=o), 200),
        (srv.get(LIST, key="wrong", headers=o), 401),
        (srv.get("/api/v1/conversations/none", headers=o), 404),
        (srv.get("/no/such/route", headers=o), 404),
        (srv.request("PUT", HEALTH, key=None, headers=o), 405),
        (srv.get(LIST, headers=o), 200),
        (srv.get(LIST, headers=o), 429),
    ]
    for resp, status in cases:
        assert resp.status_code == status, (status, resp.status_code, resp.text)
        _assert_cors(resp)
    # a foreign origin gets no CORS headers, on success or error
    for resp in (srv.get(HEALTH, key=None, headers={"Origin": EVIL}),
                 srv.post_conv(make_conv(), headers={"Origin": EVIL}),
                 srv.get(LIST, key="wrong", headers={"Origin": EVIL})):
        assert "Access-Control-Allow-Origin" not in resp.headers, dict(resp.headers)
    # no Origin, no CORS headers
    assert "Access-Control-Allow-Origin" not in srv.get(HEALTH, key=None).headers


def test_cors_not_configured_gives_no_headers(server):
    r = server.get(HEALTH, key=None, headers={"Origin": APP})
    assert "Access-Control-Allow-Origin" not in r.headers
    r = _preflight(server, WEBHOOK)
    assert "Access-Control-Allow-Origin" not in r.headers


def test_cors_wildcard(make_server):
    srv = make_server(env={"CORS_ORIGINS": "*"})
    for origin in (APP, EVIL, "http://localhost:3000"):
        r = srv.get(LIST, headers={"Origin": origin})
        assert r.status_code == 200
        assert r.headers.get("Access-Control-Allow-Origin") in ("*", origin), dict(r.headers)
        r = _preflight(srv, WEBHOOK, origin=origin)
        assert r.status_code == 204
        assert r.headers.get("Access-Control-Allow-Origin") in ("*", origin)
        r = srv.get(LIST, key="bad", headers={"Origin": origin})
        assert r.status_code == 401
        assert r.headers.get("Access-Control-Allow-Origin") in ("*", origin)
