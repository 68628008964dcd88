"""Operations: concurrency, durability across SIGTERM / kill -9, logs, configuration, start-up
failures, timeouts and the documentation routes."""
import json
import re
import select
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from helpers import (CONFIG_NAMES, KEY1, KEY2, assert_error, free_port, http_client_get, make_conv,
                     new_session, raw_http, run_binary, uid)

WEBHOOK = "/api/v1/webhook/conversation"


def _thread_session(local):
    if not hasattr(local, "s"):
        local.s = new_session()
    return local.s


def _all_listed(srv, email):
    ids, page = [], 1
    while True:
        r = srv.list_convs(email_id=email, limit=100, page=page)
        assert r.status_code == 200, r.text
        body = r.json()
        ids += [c["conversationId"] for c in body["conversations"]]
        if page >= body["pagination"]["totalPages"]:
            return ids, body["pagination"]["total"]
        page += 1


def _assert_stored_exactly(srv, body):
    r = srv.get_conv(body["conversationId"], include=True)
    assert r.status_code == 200, (body["conversationId"], r.status_code, r.text)
    got = r.json()
    assert got["emailId"] == body["emailId"]
    assert got["accountId"] == body["accountId"]
    assert got["transcript"] == body["transcript"]
    assert got["metadata"] == body["metadata"]
    assert got["summary"] == body.get("summary")


def _rich_conv(email, i):
    body = make_conv(emailId=email, accountId=f"acc-{i % 7}")
    body["transcript"][0]["content"] = f"message {i} — ünïcode 😀 \"quoted\" \\ back\nslash"
    body["metadata"]["duration"] = i
    body["summary"] = {"n": i, "text": "résumé"}
    return body


# ------------------------------------------------------------------ concurrency & durability
def test_200_concurrent_distinct_posts_all_stored(server):
    email = f"concurrent-{uid()}@example.com"
    bodies = [_rich_conv(email, i) for i in range(200)]
    local = threading.local()

    def post(body):
        s = _thread_session(local)
        return server.post_conv(body, session=s).status_code

    with ThreadPoolExecutor(max_workers=50) as pool:
        statuses = list(pool.map(post, bodies))
    assert statuses == [200] * 200, {s: statuses.count(s) for s in set(statuses)}
    ids, total = _all_listed(server, email)
    assert total == 200
    assert sorted(ids) == sorted(b["conversationId"] for b in bodies)
    for body in bodies[::20]:
        _assert_stored_exactly(server, body)


def test_data_survives_restart(make_server):
    srv = make_server()
    email = f"restart-{uid()}@example.com"
    bodies = [_rich_conv(email, i) for i in range(15)]
    answers = {}
    for b in bodies:
        r = srv.post_conv(b)
        assert r.status_code == 200
        answers[b["conversationId"]] = r.json()["data"]
    before = {b["conversationId"]: srv.get_conv(b["conversationId"]).json() for b in bodies}
    assert srv.stop() == 0
    srv.start()
    for b in bodies:
        _assert_stored_exactly(srv, b)
        assert srv.get_conv(b["conversationId"]).json() == before[b["conversationId"]]
    ids, total = _all_listed(srv, email)
    assert total == 15
    # redelivery of an unchanged body after the restart is still recognised
    r = srv.post_conv(bodies[3])
    assert r.status_code == 200
    assert r.json()["data"] == answers[bodies[3]["conversationId"]]
    assert srv.get("/api/v1/health", key=None).json()["dependencies"]["database"] == "connected"


class _Load:
    """Posts distinct conversations from `workers` threads until the server goes away (or a
    cap is reached) and records every body that was acknowledged with 200."""

    def __init__(self, srv, workers=16, per_worker=400, deadline_s=30):
        self.srv = srv
        self.email = f"load-{uid()}@example.com"
        self.acked = []
        self.other_status = []
        self.lock = threading.Lock()
        self.deadline = time.monotonic() + deadline_s
        self.threads = [threading.Thread(target=self._run, args=(w, per_worker), daemon=True)
                        for w in range(workers)]

    def _run(self, w, n):
        s = new_session()
        for i in range(n):
            if time.monotonic() > self.deadline:
                return
            body = _rich_conv(self.email, w * 10000 + i)
            try:
                r = self.srv.post_conv(body, session=s, timeout=10)
            except Exception:  # the server is gone: connection refused/reset
                return
            with self.lock:
                if r.status_code == 200:
                    self.acked.append(body)
                else:
                    self.other_status.append(r.status_code)

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def wait_for_acks(self, n, timeout=15):
        end = time.monotonic() + timeout
        while time.monotonic() < end and len(self.acked) < n:
            time.sleep(0.02)
        assert len(self.acked) >= n, f"only {len(self.acked)} acks under load"

    def join(self):
        for t in self.threads:
            t.join(30)
        assert not any(t.is_alive() for t in self.threads)


def test_sigterm_during_load_loses_nothing_acknowledged(make_server):
    srv = make_server()
    load = _Load(srv).start()
    load.wait_for_acks(40)
    code = srv.stop()
    load.join()
    assert code == 0
    # during shutdown a request may be refused, but never answered with a server error
    assert all(s in (200, 503) for s in load.other_status), load.other_status
    srv.start()
    for body in load.acked:
        _assert_stored_exactly(srv, body)
    _, total = _all_listed(srv, load.email)
    assert total >= len(load.acked)


def test_kill9_during_load_loses_nothing_acknowledged(make_server):
    srv = make_server()
    load = _Load(srv).start()
    load.wait_for_acks(40)
    srv.kill9()
    load.join()
    acked = list(load.acked)
    srv.start()
    for body in acked:
        _assert_stored_exactly(srv, body)
    ids, total = _all_listed(srv, load.email)
    assert set(b["conversationId"] for b in acked) <= set(ids)


@pytest.mark.parametrize("kind", ["absolute-triple-slash", "relative", "default"])
def test_database_url_forms(make_server, tmp_path, kind):
    if kind == "absolute-triple-slash":
        db = tmp_path / "abs.sqlite"
        srv = make_server(database_url=f"sqlite://{db}")
    elif kind == "relative":
        srv = make_server(database_url="sqlite:rel.sqlite")
        db = srv.workdir / "rel.sqlite"
    else:
        srv = make_server(env={"DATABASE_URL": None})
        db = srv.workdir / "data" / "gensendrep.db"
    body = make_conv()
    assert srv.post_conv(body).status_code == 200
    assert db.exists(), list(db.parent.iterdir()) if db.parent.exists() else db
    srv.restart()
    assert srv.get_conv(body["conversationId"]).status_code == 200


# ------------------------------------------------------------------ logs
def test_one_json_log_line_per_request_without_secrets(make_server):
    srv = make_server()
    wrong_key = "wrong-secret-" + uid()
    marker = "BODY-MARKER-" + uid()
    body = make_conv()
    body["transcript"][0]["content"] = marker
    reqs = [
        # (method, path sent, logged path, kwargs, expected status)
        ("GET", "/api/v1/health", "/api/v1/health", {"key": None}, 200),
        ("GET", "/api/v1/conversations?limit=5", "/api/v1/conversations", {}, 200),
        ("POST", WEBHOOK, WEBHOOK, {"data": json.dumps(body),
                                    "headers": {"Content-Type": "application/json"}}, 200),
        ("GET", "/api/v1/conversations/unknown-x", "/api/v1/conversations/unknown-x", {}, 404),
        ("GET", "/api/v1/conversations", "/api/v1/conversations", {"key": wrong_key}, 401),
        ("GET", "/api/v1/conversations", "/api/v1/conversations", {"key": KEY2}, 200),
        ("POST", WEBHOOK, WEBHOOK, {"data": "x", "headers": {"Content-Type": "text/plain"}}, 415),
        ("GET", "/nowhere", "/nowhere", {}, 404),
    ]
    rids = []
    for method, path, _, kw, status in reqs:
        rid = f"log-{uid()}"
        rids.append(rid)
        kw = dict(kw)
        kw["headers"] = dict(kw.get("headers", {}), **{"X-Request-Id": rid})
        r = srv.request(method, path, **kw)
        assert r.status_code == status, (path, r.status_code, r.text)

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        records = srv.log_records()
        if all(any(rec.get("request_id") == rid for rec in records) for rid in rids):
            break
        time.sleep(0.05)
    records = srv.log_records()
    for rid, (method, _, logged_path, _, status) in zip(rids, reqs):
        mine = [rec for rec in records if rec.get("request_id") == rid]
        assert len(mine) == 1, (rid, mine)
        rec = mine[0]
        for field in ("time", "request_id", "method", "path", "status", "duration_ms",
                      "client_ip"):
            assert field in rec, (field, rec)
        assert rec["method"] == method
        assert rec["path"] == logged_path
        assert rec["status"] == status
        assert isinstance(rec["duration_ms"], (int, float)) and rec["duration_ms"] >= 0
        assert rec["client_ip"] == "127.0.0.1"
        assert re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}", rec["time"])
    assert srv.stop() == 0
    output = srv.stderr_text() + srv.stdout_text()
    for secret in (KEY1, KEY2, wrong_key):
        assert secret not in output, f"{secret!r} appears in the server output"
    assert marker not in output, "request body content appears in the log"


def test_every_log_line_is_json_whatever_the_request(make_server):
    """Defect 6: a 3,000-byte URL cut the line before status and client_ip (a client could hide
    its address) and /%FF%FE wrote raw invalid UTF-8. Every line of the server's output must
    be valid UTF-8 JSON, and each request's line keeps its status, client IP and request id."""
    srv = make_server()
    hostile = [
        "/api/v1/conversations/" + "a" * 3000,
        "/" + "b" * 3000,
        "/%FF%FE",
        "/nowhere/%FF%FE%C0%80%ED%A0%80",
        "/" + "%FF" * 1000,
        "/%22%5C%0A%01%7F\"\\",
        "/raw\xff\xfe",  # unencoded bytes (sent as latin-1): invalid UTF-8 in the line itself
    ]
    sent = {}
    for path in hostile:
        rid = f"hostile-{uid()}"
        status, _, body = raw_http(srv.port, f"GET {path} HTTP/1.1\r\nHost: x\r\n"
                                             f"Authorization: Bearer {KEY1}\r\n"
                                             f"X-Request-Id: {rid}\r\nConnection: close\r\n\r\n"
                                   .encode("latin-1"))
        assert status is not None and 400 <= status < 500, (path[:60], status, body[:200])
        sent[rid] = status
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rids = {rec.get("request_id") for rec in srv.log_records()}
        if all(rid in rids for rid in sent):
            break
        time.sleep(0.05)
    assert srv.stop() == 0
    records = []
    for path in srv.stderr_paths:
        for n, raw in enumerate(path.read_bytes().splitlines(), 1):
            try:
                rec = json.loads(raw.decode("utf-8"))
            except ValueError as e:
                raise AssertionError(f"{path.name} line {n} is not UTF-8 JSON ({e}): {raw[:300]!r}")
            assert isinstance(rec, dict), raw[:300]
            records.append(rec)
    for rid, status in sent.items():
        mine = [rec for rec in records if rec.get("request_id") == rid]
        assert len(mine) == 1, (rid, mine)
        rec = mine[0]
        assert rec["status"] == status, rec
        assert rec["client_ip"] == "127.0.0.1", rec
        assert rec["method"] == "GET", rec
        assert isinstance(rec["path"], str) and rec["path"].startswith("/"), rec
    long_lines = [rec for rec in records if rec.get("request_id") in sent and
                  rec.get("path_truncated") is True]
    assert len(long_lines) >= 2, "the 3,000-byte paths are not marked as cut"
    # The path is logged as the client wrote it (percent-escapes kept: "%2F" and "/" differ),
    # and raw invalid bytes in it as escapes.
    as_sent = [rec for rec in records if rec.get("request_id") in sent and
               rec.get("path") == "/%FF%FE"]
    assert len(as_sent) == 1, "/%FF%FE is not logged as sent"
    escaped = [rec for rec in records if rec.get("request_id") in sent and
               rec.get("path") == "/raw\\xff\\xfe"]
    assert len(escaped) == 1, "raw invalid bytes in the path are not logged escaped"


# ------------------------------------------------------------------ command line & config
def test_help_lists_every_variable(tmp_path):
    p = run_binary(["--help"], cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    text = p.stdout + p.stderr
    missing = [n for n in CONFIG_NAMES if n not in text]
    assert not missing, missing


def test_version_matches_health(server, tmp_path):
    p = run_binary(["--version"], cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    version = server.get("/api/v1/health", key=None).json()["version"]
    assert version in p.stdout + p.stderr


BAD_CONFIG = [
    ("PORT", "abc"),
    ("PORT", "70000"),
    ("PORT", "-1"),
    ("MAX_BODY_BYTES", "-5"),
    ("MAX_BODY_BYTES", "5MB"),
    ("RATE_LIMIT_API_PER_MINUTE", "0"),
    ("RATE_LIMIT_WEBHOOK_PER_MINUTE", "ten"),
    ("LOG_LEVEL", "loud"),
    ("DATABASE_URL", "mysql://localhost/db"),
    ("MAX_CONNECTIONS", "0"),
    ("REQUEST_TIMEOUT_SECONDS", "1.5"),
]


@pytest.mark.parametrize("name,value", BAD_CONFIG, ids=[f"{n}={v}" for n, v in BAD_CONFIG])
def test_bad_config_stops_start_up(tmp_path, name, value):
    t0 = time.monotonic()
    p = run_binary([], cwd=tmp_path, env_overrides={name: value})
    assert time.monotonic() - t0 < 5
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, p.stderr
    assert name in lines[0]


@pytest.mark.parametrize("value", [None, "", " , "])
def test_no_api_key_refuses_to_start(tmp_path, value):
    p = run_binary([], cwd=tmp_path, env_overrides={"API_SECRET_KEY": value})
    assert p.returncode != 0
    assert "API_SECRET_KEY" in p.stderr


def test_dotenv_is_read_and_environment_wins(make_server, tmp_path):
    port = free_port()
    wd = tmp_path / "dotenv"
    wd.mkdir()
    (wd / ".env").write_text(
        "# settings for the test\n"
        "\n"
        "API_SECRET_KEY=dotenv-key\n"
        f"PORT={port}\n"
        'CORS_ORIGINS="https://dotenv.example.com"\n'
        "WEBHOOK_SECRET=whatever  # trailing comment\n")
    srv = make_server(workdir=wd, env={"API_SECRET_KEY": None, "PORT": None}, start=False)
    srv.start(port=port)
    assert srv.get("/api/v1/conversations", key="dotenv-key").status_code == 200
    assert srv.get("/api/v1/conversations", key=KEY1).status_code == 401
    r = srv.get("/api/v1/health", key=None, headers={"Origin": "https://dotenv.example.com"})
    assert r.headers.get("Access-Control-Allow-Origin") == "https://dotenv.example.com"
    assert srv.stop() == 0

    srv.env_overrides["API_SECRET_KEY"] = "env-key"
    srv.start(port=port)
    assert srv.get("/api/v1/conversations", key="env-key").status_code == 200
    assert srv.get("/api/v1/conversations", key="dotenv-key").status_code == 401


# ------------------------------------------------------------------ slow clients
def test_slow_body_times_out_without_blocking_others(make_server):
    srv = make_server(env={"REQUEST_TIMEOUT_SECONDS": "2"})
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    try:
        s.sendall(b"POST /api/v1/webhook/conversation HTTP/1.1\r\nHost: x\r\n"
                  b"Authorization: Bearer " + KEY1.encode() +
                  b"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"emailId\"")
        # meanwhile other clients are served promptly
        t0 = time.monotonic()
        assert srv.get("/api/v1/health", key=None).status_code == 200
        assert srv.get("/api/v1/conversations").status_code == 200
        assert time.monotonic() - t0 < 1.5
        t0 = time.monotonic()
        data = _read_response(s, timeout=8)
        elapsed = time.monotonic() - t0
    finally:
        s.close()
    assert elapsed < 7, "slow request was not timed out"
    # A client that goes silent mid-body is disconnected (as nginx does); libmicrohttpd cannot
    # answer while a body is still arriving. So is one that keeps trickling
    # (test_trickling_body_is_cut_off).
    assert data == b"", data[:200]


def test_trickling_body_is_cut_off(make_server):
    srv = make_server(env={"REQUEST_TIMEOUT_SECONDS": "2"})
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    data = b""
    try:
        s.sendall(b"POST /api/v1/webhook/conversation HTTP/1.1\r\nHost: x\r\n"
                  b"Authorization: Bearer " + KEY1.encode() +
                  b"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
        t0 = time.monotonic()
        # Keep trickling, as a slow client would, until the server answers.
        while time.monotonic() - t0 < 6:
            readable, _, _ = select.select([s], [], [], 0.5)
            if readable:
                break
            s.sendall(b" ")
        data = _read_response(s, timeout=3)
    finally:
        s.close()
    # Cut off once the request has taken REQUEST_TIMEOUT_SECONDS, however busy it keeps the line.
    assert time.monotonic() - t0 < 5, "trickling request was not cut off"
    assert data == b"", data[:200]
    assert srv.get("/api/v1/health", key=None).status_code == 200


# ------------------------------------------------------------------ docs
def _spec_paths(spec):
    return {re.sub(r"\{[^}]+\}", "{}", p): set(ops) for p, ops in spec["paths"].items()}


def test_openapi_document(server):
    r = server.get("/openapi.json", key=None)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    spec = r.json()
    assert spec["openapi"].startswith("3.1.")
    assert spec["info"]["version"] == server.get("/api/v1/health", key=None).json()["version"]
    paths = _spec_paths(spec)
    served = {
        "/api/v1/webhook/conversation": "post",
        "/api/v1/webhook/elevenlabs": "post",
        "/api/v1/conversations": "get",
        "/api/v1/conversations/{}": "get",
        "/api/v1/conversations/{}/audio": "get",
        "/api/v1/health": "get",
        "/openapi.json": "get",
        "/docs": "get",
        "/redoc": "get",
    }
    for path, method in served.items():
        assert path in paths and method in paths[path], (path, method, sorted(paths))
    assert "delete" in paths["/api/v1/conversations/{}"]  # the erasure (test_erasure.py)
    # and every documented route exists on the server
    body = make_conv()
    assert server.post_conv(body).status_code == 200
    for path, ops in paths.items():
        if "/docs/assets/" in path:
            continue
        for method in ops & {"get", "post"}:
            real = path.replace("{}", body["conversationId"])
            kw = {"json": make_conv()} if method == "post" else {}
            resp = server.request(method.upper(), real, **kw)
            if real.endswith("/audio") and resp.status_code == 404:
                # The conversation came through the seed webhook, so it has no audio: the
                # route's own 404, not the router's "No such endpoint".
                assert resp.json()["error"]["message"] == "No audio stored for this conversation", \
                    resp.text
                continue
            if "/subscriptions/" in real and resp.status_code == 404:
                # No subscription has that id: the route's own 404, not the router's.
                assert resp.json()["error"]["message"] == "Subscription not found", resp.text
                continue
            assert resp.status_code not in (404, 405), (method, real, resp.status_code)


def _script_srcs(html):
    return re.findall(r'<script[^>]+src="([^"]+)"', html) + \
        re.findall(r'<link[^>]+href="([^"]+\.css)"', html)


def test_docs_pages_use_cdn_by_default(server):
    for path, asset in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
        r = server.get(path, key=None)
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("text/html")
        html = r.text
        assert "/openapi.json" in html
        srcs = _script_srcs(html)
        assert any(s.startswith("https://") and s.endswith(asset) for s in srcs), srcs
    html = server.get("/docs", key=None).text
    assert any(s.startswith("https://") and s.endswith("swagger-ui.css")
               for s in _script_srcs(html)), _script_srcs(html)
    # /docs shares the dashboard's origin: each CDN file is an exact version with its
    # Subresource Integrity hash, so a changed file is refused instead of reading the key
    tags = {}
    for path in ("/docs", "/redoc"):
        page = server.get(path, key=None).text
        tags.update({m.group(2): m.group(0)
                     for m in re.finditer(r'<(script|link)[^>]+(?:src|href)="(https://[^"]+)"[^>]*>', page)})
    assert len(tags) == 3, tags
    for url, tag in tags.items():
        assert re.search(r"/npm/(swagger-ui-dist|redoc)@\d+\.\d+\.\d+/", url), url
        assert re.search(r' integrity="sha384-[A-Za-z0-9+/]{64}"', tag), tag
        assert ' crossorigin="anonymous"' in tag, tag


def test_docs_assets_url(make_server):
    base = "https://assets.example.test/static"
    srv = make_server(env={"DOCS_ASSETS_URL": base})
    for path, assets in (("/docs", {"swagger-ui-bundle.js", "swagger-ui.css"}),
                         ("/redoc", {"redoc.standalone.js"})):
        srcs = _script_srcs(srv.get(path, key=None).text)
        for a in assets:
            assert f"{base}/{a}" in srcs, srcs
        assert all(s.startswith(base) for s in srcs if s.startswith("http")), srcs


def test_docs_assets_dir(make_server, tmp_path):
    assets = tmp_path / "assets"
    assets.mkdir()
    files = {
        "swagger-ui-bundle.js": "/* dummy swagger bundle */ window.SwaggerUIBundle = 1;",
        "swagger-ui.css": "/* dummy css */ body { color: black; }",
        "redoc.standalone.js": "/* dummy redoc */ window.Redoc = 1;",
    }
    for name, text in files.items():
        (assets / name).write_text(text)
    (tmp_path / "secret.txt").write_text("TOP-SECRET")
    srv = make_server(env={"DOCS_ASSETS_DIR": str(assets)})
    docs = _script_srcs(srv.get("/docs", key=None).text)
    assert "/docs/assets/swagger-ui-bundle.js" in docs and "/docs/assets/swagger-ui.css" in docs, docs
    redoc = _script_srcs(srv.get("/redoc", key=None).text)
    assert "/docs/assets/redoc.standalone.js" in redoc, redoc
    assert not any(s.startswith("http") for s in docs + redoc), docs + redoc
    for name, text in files.items():
        r = srv.get(f"/docs/assets/{name}", key=None)
        assert r.status_code == 200, name
        assert r.text == text
        want = "text/css" if name.endswith(".css") else "javascript"
        assert want in r.headers["Content-Type"], r.headers["Content-Type"]
    for raw_path in ["/docs/assets/../secret.txt", "/docs/assets/%2e%2e/secret.txt",
                     "/docs/assets/..%2fsecret.txt", "/docs/assets/%2E%2E%2Fsecret.txt",
                     "/docs/assets/../../secret.txt", "/docs/assets/missing.js",
                     "/docs/assets/", "/docs/assets/.%2e/secret.txt"]:
        status, headers, body = http_client_get(srv.port, raw_path)
        assert status == 404, (raw_path, status)
        assert b"TOP-SECRET" not in body


# ------------------------------------------------------------------ graceful shutdown
def _post_headers(body_len, extra=b""):
    return (b"POST /api/v1/webhook/conversation HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + KEY1.encode() + b"\r\n"
            b"Content-Type: application/json\r\n" + extra +
            b"Content-Length: " + str(body_len).encode() + b"\r\n\r\n")


def _read_response(sock, timeout=10):
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            break
        data += chunk
        head, sep, rest = data.partition(b"\r\n\r\n")
        m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        if sep and m and len(rest) >= int(m.group(1)):
            break
    return data


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_signal_finishes_request_in_flight(make_server, sig):
    import signal as signal_mod
    srv = make_server()
    body = make_conv()
    raw = json.dumps(body).encode()
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    try:
        s.sendall(_post_headers(len(raw)) + raw[:40])
        time.sleep(0.3)  # the server has the headers and part of the body
        srv.send_signal(getattr(signal_mod, sig))
        time.sleep(0.5)
        s.sendall(raw[40:])
        data = _read_response(s)
    finally:
        s.close()
    assert data.startswith(b"HTTP/1.1 200"), data[:300]
    assert srv.stop() == 0  # already exiting: waits for it
    srv.start()
    _assert_stored_exactly(srv, body)


@pytest.mark.parametrize("second", ["SIGTERM", "SIGINT"])
def test_second_signal_during_shutdown_exits_at_once(make_server, second):
    """Shutdown waits (up to 30 s) for requests in flight; a second SIGTERM or SIGINT cut that
    wait short not at all. Now it exits at once, non-zero, with one log line saying so."""
    import signal as signal_mod
    srv = make_server()
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    try:
        s.sendall(_post_headers(1000) + b"{")  # a body that never comes: shutdown waits
        time.sleep(0.5)
        srv.send_signal(signal_mod.SIGTERM)
        deadline = time.monotonic() + 10
        while "finishing in-flight" not in srv.stderr_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "finishing in-flight" in srv.stderr_text(), srv.stderr_text()[-2000:]
        time.sleep(1.0)
        assert srv.running, "shutdown did not wait for the request in flight"
        started = time.monotonic()
        srv.proc.send_signal(getattr(signal_mod, second))
        try:
            code = srv.proc.wait(10)
        except Exception:
            raise AssertionError(f"still running 10 s after a second {second}")
        assert time.monotonic() - started < 10
    finally:
        s.close()
    srv.graceful_signal = None  # exited on purpose with a non-zero code
    assert code != 0
    assert code == 128 + getattr(signal_mod, second)
    lines = [json.loads(line) for line in srv.stderr_text().splitlines() if line.strip()]
    again = [rec for rec in lines if "again during shutdown" in rec.get("msg", "")]
    assert len(again) == 1, lines
    assert again[0]["level"] == "error"


# ------------------------------------------------------------------ HTTP robustness
def test_expect_100_continue(make_server):
    """curl sends `Expect: 100-continue` for bodies over 1 KiB."""
    srv = make_server(env={"MAX_BODY_BYTES": "10000"})
    body = make_conv()
    body["metadata"]["padding"] = "p" * 2000
    raw = json.dumps(body).encode()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(_post_headers(len(raw), b"Expect: 100-continue\r\n"))
        s.settimeout(5)
        interim = s.recv(4096)
        assert interim.startswith(b"HTTP/1.1 100"), interim
        s.sendall(raw)
        data = _read_response(s)
    assert data.startswith(b"HTTP/1.1 200"), data[:300]
    assert srv.get_conv(body["conversationId"]).status_code == 200
    # too large: refused up front, without asking for the body
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(_post_headers(50000, b"Expect: 100-continue\r\n"))
        data = _read_response(s)
    assert data.startswith(b"HTTP/1.1 413"), data[:300]


def test_abusive_requests_do_not_hurt_the_server(make_server):
    srv = make_server()
    abuse = [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200000 + b"\r\n\r\n",
        b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n" + b"X-H: 1\r\n" * 5000 + b"\r\n",
        b"POST /api/v1/webhook/conversation HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"POST /api/v1/webhook/conversation HTTP/1.1\r\nHost: x\r\n"
        b"Content-Length: 99999999999999999999999\r\n\r\n",
        b"POST /api/v1/webhook/conversation HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Authorization: Bearer " + KEY1.encode() + b"\r\nContent-Type: application/json\r\n\r\n"
        b"zzzz\r\nabc\r\n0\r\n\r\n",
        b"GET /api/v1/conversations/%ZZ%00%ff HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer " + KEY1.encode() + b"\r\n\r\n",
    ]
    for req in abuse:
        try:
            status, _, _ = raw_http(srv.port, req, timeout=5)
        except (OSError, socket.timeout):
            status = None
        # a client error (or 505 for the unknown HTTP version), or the connection is dropped
        assert status is None or 400 <= status < 500 or status == 505, (req[:60], status)
        assert srv.get("/api/v1/health", key=None).status_code == 200, req[:60]
    # a flood of idle connections does not lock others out
    idle = [socket.create_connection(("127.0.0.1", srv.port), timeout=5) for _ in range(100)]
    try:
        assert srv.get("/api/v1/conversations").status_code == 200
    finally:
        for s in idle:
            s.close()
    body = make_conv()
    assert srv.post_conv(body).status_code == 200


# ------------------------------------------------------------------ concurrent redelivery
def test_concurrent_identical_redeliveries_share_one_webhook_id(server):
    body = make_conv(emailId=f"same-{uid()}@example.com")
    raw = json.dumps(body)
    local = threading.local()

    def post(_):
        r = server.post_raw(raw, session=_thread_session(local))
        return r.status_code, r.json().get("data")

    with ThreadPoolExecutor(max_workers=30) as pool:
        results = list(pool.map(post, range(30)))
    assert [s for s, _ in results] == [200] * 30, results
    assert len({d["webhookId"] for _, d in results}) == 1, results
    assert len({d["processedAt"] for _, d in results}) == 1, results
    assert server.list_convs(email_id=body["emailId"]).json()["pagination"]["total"] == 1


def test_concurrent_versions_of_one_conversation_stay_consistent(server):
    cid = f"versions-{uid()}"
    email = f"{cid}@example.com"
    variants = []
    for i in range(30):
        b = make_conv(cid, emailId=email, accountId=f"acc-{i}")
        b["metadata"]["duration"] = i
        b["transcript"][0]["content"] = f"variant {i}"
        variants.append(b)
    local = threading.local()

    def post(b):
        r = server.post_conv(b, session=_thread_session(local))
        return r.status_code, r.json().get("data")

    with ThreadPoolExecutor(max_workers=30) as pool:
        results = list(pool.map(post, variants))
    assert [s for s, _ in results] == [200] * 30, results
    assert len({d["webhookId"] for _, d in results}) == 30
    lst = server.list_convs(email_id=email).json()
    assert lst["pagination"]["total"] == 1
    got = server.get_conv(cid, include=True).json()
    i = got["duration"]
    # the indexed columns and the stored document come from the same delivery
    assert got["accountId"] == f"acc-{i}"
    assert got["transcript"][0]["content"] == f"variant {i}"
    assert got["metadata"] == variants[i]["metadata"]
    assert lst["conversations"][0]["accountId"] == f"acc-{i}"


# ------------------------------------------------------------------ broken database
@pytest.mark.backends("sqlite")
def test_health_reports_broken_database(make_server):
    """Overwriting the SQLite file with garbage (disk corruption) must show in health as 503
    unhealthy and make reads answer 503, not 200 or 500. (PostgreSQL outages: test_infra.py.)"""
    srv = make_server()
    conv = make_conv()
    assert srv.post_conv(conv).status_code == 200
    db = Path(srv.database_url.split(":", 1)[1])

    def corrupt():
        for f in (db, Path(str(db) + "-wal")):
            if f.exists():
                with open(f, "r+b") as fh:
                    fh.write(b"X" * 4096)
    # A failing disk keeps the damage: written again until health sees it (a checkpoint copying
    # the first page back from the WAL would otherwise repair a one-off overwrite). Health
    # answers from a check at most about a second old (defect 5), so the corruption shows within
    # a little more than that.
    deadline = time.monotonic() + 3
    corrupt()
    r = srv.get("/api/v1/health", key=None)
    while r.status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.1)
        corrupt()
        r = srv.get("/api/v1/health", key=None)
    assert r.status_code == 503, r.text
    body = r.json()
    assert body["status"] == "unhealthy"
    assert body["dependencies"]["database"] == "disconnected"
    # Every read a broken database stops says so, and when to come back (a client's backoff).
    cid = conv["conversationId"]
    for path in ("/api/v1/conversations", f"/api/v1/conversations/{cid}",
                 f"/api/v1/conversations/{cid}/report", "/api/v1/analytics",
                 "/api/v1/conversations/export?format=ndjson"):
        r = srv.get(path)
        assert_error(r, 503, "SERVICE_UNAVAILABLE")
        assert r.headers.get("Retry-After", "").isdigit(), (path, dict(r.headers))
