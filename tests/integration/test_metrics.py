"""GET /metrics (issue 11 part 6), black-box, both backends.

A real Prometheus server (Debian's `prometheus`, started here on a free port with a generated
configuration) scrapes gensendrep every second; the test causes things (webhooks accepted and
redelivered, ElevenLabs events, refused keys, rate-limited requests, reads of many different
ids) and asks Prometheus' HTTP API for the values it must then hold. The text itself is checked
too: Prometheus' own linter (promtool check metrics), HELP and TYPE for every family, histogram
buckets cumulative with +Inf equal to _count, route labels that are route patterns (never a
raw path), and METRICS_TOKEN (a 401 JSON error without it, constant-time compared)."""
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import requests

from helpers import KEY1, assert_error, free_port, make_conv, pg_cluster, uid
from receiver import Receiver

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "elevenlabs"
EL_SECRET = "wsec_57506b15b729457580a8ec8a16cf3b594534526df7cfdef57efafbed7ad50768"
TOKEN = "metrics-token-" + "7f3a" * 8
WAIT = 45.0  # seconds: Prometheus scrapes every second; generous for a loaded machine
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REQUIRED = [
    ("gensendrep_http_requests_total", "counter"),
    ("gensendrep_http_request_duration_seconds", "histogram"),
    ("gensendrep_webhooks_accepted_total", "counter"),
    ("gensendrep_webhooks_redelivered_total", "counter"),
    ("gensendrep_store_commit_batch_size", "histogram"),
    ("gensendrep_store_commit_duration_seconds", "histogram"),
    ("gensendrep_store_errors_total", "counter"),
    ("gensendrep_rate_limited_total", "counter"),
    ("gensendrep_auth_failures_total", "counter"),
    ("gensendrep_connections", "gauge"),
    ("gensendrep_deliveries_total", "counter"),
]
SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


class Prometheus:
    """A Prometheus server scraping one gensendrep every second."""

    def __init__(self, workdir, target_port, token=None):
        self.port = free_port()
        self.dir = Path(workdir)
        cfg = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                       "evaluation_interval": "1s"},
            "scrape_configs": [{
                "job_name": "gensendrep",
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}],
            }],
        }
        if token:
            cfg["scrape_configs"][0]["authorization"] = {"type": "Bearer", "credentials": token}
        # YAML is a superset of JSON: no YAML library needed.
        (self.dir / "prometheus.yml").write_text(json.dumps(cfg))
        self.log = open(self.dir / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={self.dir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + WAIT
        while time.time() < deadline:
            assert self.proc.poll() is None, self.log_text()
            try:
                if requests.get(self.url("/-/ready"), timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise AssertionError("prometheus did not become ready\n" + self.log_text())

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def log_text(self):
        self.log.flush()
        return (self.dir / "prometheus.log").read_text(errors="replace")[-3000:]

    def query(self, expr):
        """The instant vector of expr: {frozenset(labels): value}."""
        r = requests.get(self.url("/api/v1/query"), params={"query": expr}, timeout=5)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "success", body
        return {frozenset(s["metric"].items()): float(s["value"][1])
                for s in body["data"]["result"]}

    def value(self, expr):
        """The single value of expr, or None when it has no sample (yet)."""
        res = self.query(expr)
        assert len(res) <= 1, res
        return next(iter(res.values())) if res else None

    def wait_value(self, expr, want, what=None):
        deadline = time.time() + WAIT
        got = None
        while time.time() < deadline:
            got = self.value(expr)
            if got == want:
                return
            time.sleep(0.5)
        targets = requests.get(self.url("/api/v1/targets"), timeout=5).text
        raise AssertionError(f"{what or expr}: Prometheus has {got}, expected {want}\n"
                             f"targets: {targets[:2000]}\n{self.log_text()}")

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def prometheus(tmp_path_factory):
    made = []

    def factory(server, token=None):
        p = Prometheus(tmp_path_factory.mktemp("prometheus"), server.port, token)
        made.append(p)
        return p

    yield factory
    for p in made:
        p.close()


def el_signature(body, secret=EL_SECRET):
    t = int(time.time())
    mac = hmac.new(secret.encode(), str(t).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={t},v0={mac}"


def el_event(cid):
    raw = (FIXTURES / "post_call_transcription_success.json").read_bytes()
    old = json.loads(raw)["data"]["conversation_id"].encode()
    return raw.replace(old, cid.encode())


def scrape(server, **kw):
    r = server.get("/metrics", **kw)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == CONTENT_TYPE
    return r.text


def parse(text):
    """{family: type}, [(name, {labels}, value)] from the text format, checking that every
    sample belongs to a family with HELP and TYPE lines."""
    helps, types, samples = set(), {}, []
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helps.add(line.split(" ")[2])
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
        else:
            m = SAMPLE_RE.match(line)
            assert m, f"not a sample line: {line!r}"
            labels = dict(LABEL_RE.findall(m.group(3) or ""))
            samples.append((m.group(1), labels, float(m.group(4))))
    for name, _, _ in samples:
        family = re.sub(r"_(bucket|sum|count)$", "", name) \
            if re.sub(r"_(bucket|sum|count)$", "", name) in types else name
        assert family in types and family in helps, f"{name}: no TYPE/HELP"
    return types, samples


def series(samples, name, **labels):
    return [(lab, v) for n, lab, v in samples
            if n == name and all(lab.get(k) == w for k, w in labels.items())]


def one(samples, name, **labels):
    found = series(samples, name, **labels)
    assert len(found) == 1, (name, labels, found)
    return found[0][1]


def check_histogram(samples, name, **labels):
    """Buckets cumulative, le increasing, +Inf == _count; returns _count."""
    buckets = series(samples, name + "_bucket", **labels)
    assert buckets, (name, labels)
    les = [float(lab["le"]) for lab, _ in buckets]
    assert les == sorted(les) and les[-1] == float("inf"), les
    counts = [v for _, v in buckets]
    assert counts == sorted(counts), counts
    count = one(samples, name + "_count", **labels)
    assert counts[-1] == count
    assert one(samples, name + "_sum", **labels) >= 0
    return count


# ---------------------------------------------------------------------------------------------


def test_prometheus_scrapes_what_was_caused(make_server, prometheus):
    """A real Prometheus scrapes /metrics (with METRICS_TOKEN as its bearer credentials) and
    its query API then shows exactly the webhooks this test posted."""
    srv = make_server(env={"METRICS_TOKEN": TOKEN, "ELEVENLABS_WEBHOOK_SECRET": EL_SECRET,
                           "RATE_LIMIT_ELEVENLABS_PER_MINUTE": "1000000"})
    prom = prometheus(srv, token=TOKEN)
    prom.wait_value('up{job="gensendrep"}', 1.0, "the scrape of gensendrep")
    n = 7
    bodies = [make_conv() for _ in range(n)]
    for body in bodies:
        r = srv.post_conv(body)
        assert r.status_code == 200, r.text
    r = srv.post_conv(bodies[0])  # byte-identical redelivery: accepted, nothing changed
    assert r.status_code == 200, r.text
    for _ in range(3):
        body = el_event("conv_el_" + uid())
        r = srv.request("POST", "/api/v1/webhook/elevenlabs", key=None, data=body,
                        headers={"Content-Type": "application/json",
                                 "ElevenLabs-Signature": el_signature(body)})
        assert r.status_code == 200, r.text
    for _ in range(2):
        assert srv.get("/api/v1/conversations", key="wrong-key").status_code == 401
    for body in bodies[:4]:
        assert srv.get_conv(body["conversationId"]).status_code == 200

    prom.wait_value('gensendrep_webhooks_accepted_total{source="conversation"}', float(n + 1))
    prom.wait_value('gensendrep_webhooks_accepted_total{source="elevenlabs"}', 3.0)
    prom.wait_value("gensendrep_webhooks_redelivered_total", 1.0)
    prom.wait_value("gensendrep_auth_failures_total", 2.0)
    prom.wait_value('sum(gensendrep_http_requests_total{route="/api/v1/webhook/conversation",'
                    'method="POST",status="200"})', float(n + 1))
    prom.wait_value('gensendrep_http_requests_total{route="/api/v1/conversations/'
                    '{conversation_id}",method="GET",status="200"}', 4.0)
    prom.wait_value('gensendrep_http_request_duration_seconds_count{route='
                    '"/api/v1/webhook/elevenlabs"}', 3.0)
    # Every stored webhook went through a group commit: batches hold at least all of them.
    assert prom.value("gensendrep_store_commit_batch_size_sum") >= n + 1 + 3
    assert prom.value("gensendrep_store_commit_duration_seconds_count") >= 1
    assert prom.value("sum(gensendrep_store_errors_total)") == 0
    assert prom.value("gensendrep_connections") >= 1
    # The histograms are usable as histograms.
    q = prom.value('histogram_quantile(0.5, sum by (le) ('
                   'gensendrep_http_request_duration_seconds_bucket{route='
                   '"/api/v1/webhook/conversation"}))')
    assert q is not None and 0 < q <= 10, q
    # Route labels are patterns: the ids read above are nowhere in Prometheus.
    routes = {dict(k)["route"] for k in prom.query("gensendrep_http_requests_total")}
    assert routes <= {"/api/v1/webhook/conversation", "/api/v1/webhook/elevenlabs",
                      "/api/v1/conversations", "/api/v1/conversations/{conversation_id}",
                      "/api/v1/health", "/metrics", "unmatched"}, routes


def test_prometheus_without_the_token_is_refused(make_server, prometheus):
    """With METRICS_TOKEN set, a Prometheus that scrapes without it (or with an API key) gets
    nothing: its target is down with the 401 as the reason."""
    srv = make_server(env={"METRICS_TOKEN": TOKEN})
    bare = prometheus(srv)
    with_key = prometheus(srv, token=KEY1)
    for prom in (bare, with_key):
        prom.wait_value('up{job="gensendrep"}', 0.0, "the refused scrape")
        targets = requests.get(prom.url("/api/v1/targets"), timeout=5).json()
        active = targets["data"]["activeTargets"]
        assert len(active) == 1 and active[0]["health"] == "down", active
        assert "401" in active[0]["lastError"], active[0]["lastError"]
    assert bare.value("gensendrep_webhooks_accepted_total") is None


def test_text_format(server):
    """Open by default; what promtool accepts, every required family with HELP and TYPE,
    histograms well formed, and route labels that stay bounded whatever the paths."""
    ids = [make_conv()["conversationId"] for _ in range(5)]
    for cid in ids:
        assert server.get_conv(cid).status_code == 404
        assert server.get("/no/such/path/" + cid).status_code == 404
    assert server.get("/api/v1/subscriptions/sub_" + uid()).status_code == 404
    r = server.post_conv(make_conv())
    assert r.status_code == 200, r.text
    text = scrape(server, key=None)
    lint = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(),
                          capture_output=True, timeout=30)
    assert lint.returncode == 0, lint.stdout.decode() + lint.stderr.decode()
    types, samples = parse(text)
    for name, kind in REQUIRED:
        assert types.get(name) == kind, (name, types.get(name))
    for cid in ids:
        assert cid not in text
    assert one(samples, "gensendrep_http_requests_total",
               route="/api/v1/conversations/{conversation_id}", method="GET",
               status="404") >= len(ids)
    assert one(samples, "gensendrep_http_requests_total", route="unmatched", method="GET",
               status="404") >= len(ids)
    assert one(samples, "gensendrep_http_requests_total",
               route="/api/v1/subscriptions/{subscription_id}", method="GET",
               status="404") >= 1
    # One series per label set (Prometheus refuses duplicates).
    keys = [(n, tuple(sorted(lab.items()))) for n, lab, _ in samples]
    assert len(keys) == len(set(keys))
    routes = {lab["route"] for n, lab, _ in samples if "route" in lab}
    for route in routes:
        count = check_histogram(samples, "gensendrep_http_request_duration_seconds", route=route)
        total = sum(v for lab, v in series(samples, "gensendrep_http_requests_total",
                                           route=route))
        assert count == total, route
    assert check_histogram(samples, "gensendrep_store_commit_batch_size") >= 1
    assert check_histogram(samples, "gensendrep_store_commit_duration_seconds") >= 1
    assert {lab["source"] for lab, _ in
            series(samples, "gensendrep_webhooks_accepted_total")} == {"conversation",
                                                                      "elevenlabs"}
    assert {lab["limit"] for lab, _ in
            series(samples, "gensendrep_rate_limited_total")} == {"webhook", "api",
                                                                 "elevenlabs"}
    assert {lab["kind"] for lab, _ in
            series(samples, "gensendrep_store_errors_total")} == {"retry", "client", "hard"}


def test_token_required_when_set(make_server):
    """With METRICS_TOKEN: 401 JSON error without it or with anything else (an API key is not
    the token), 200 with it; the refusals count as auth failures."""
    srv = make_server(env={"METRICS_TOKEN": TOKEN})
    for key in (None, "wrong", TOKEN[:-1], TOKEN + "x", KEY1):
        r = srv.get("/metrics", key=key)
        assert_error(r, 401, "UNAUTHORIZED")
        assert r.headers.get("WWW-Authenticate") == "Bearer"
        assert TOKEN not in r.text
    r = srv.get("/metrics", key=None, headers={"Authorization": "Basic " + TOKEN})
    assert_error(r, 401, "UNAUTHORIZED")
    _, samples = parse(scrape(srv, key=TOKEN))
    assert one(samples, "gensendrep_auth_failures_total") == 6
    assert one(samples, "gensendrep_http_requests_total", route="/metrics", method="GET",
               status="401") == 6
    assert TOKEN not in srv.stderr_text() + srv.stdout_text()


def test_rate_limited_counted(make_server):
    """Each 429 is counted under the limit that refused it."""
    srv = make_server(env={"RATE_LIMIT_API_PER_MINUTE": "3",
                           "RATE_LIMIT_WEBHOOK_PER_MINUTE": "2"})
    api = [srv.get("/api/v1/conversations").status_code for _ in range(6)]
    hooks = [srv.post_conv(make_conv()).status_code for _ in range(5)]
    assert api.count(429) >= 1 and hooks.count(429) >= 1, (api, hooks)
    _, samples = parse(scrape(srv, key=None))
    assert one(samples, "gensendrep_rate_limited_total", limit="api") == api.count(429)
    assert one(samples, "gensendrep_rate_limited_total", limit="webhook") == hooks.count(429)
    assert one(samples, "gensendrep_rate_limited_total", limit="elevenlabs") == 0


def test_deliveries_and_outbox_backlog(make_server):
    """A subscription's deliveries are counted by outcome; the outbox backlog is the health
    check's count, read without a database query on the scrape."""
    rcv = Receiver()
    try:
        srv = make_server(env={"DELIVERY_ALLOW_PRIVATE_NETWORKS": "true",
                               "DELIVERY_RETRY_SCHEDULE": "0,1,2"})
        r = srv.request("POST", "/api/v1/subscriptions", json={"url": rcv.url("hook")})
        assert r.status_code == 201, r.text
        n = 3
        for _ in range(n):
            assert srv.post_conv(make_conv()).status_code == 200
        deadline = time.time() + WAIT
        delivered = backlog = None
        while time.time() < deadline:
            _, samples = parse(scrape(srv, key=None))
            delivered = one(samples, "gensendrep_deliveries_total", outcome="delivered")
            found = series(samples, "gensendrep_outbox_backlog")
            backlog = found[0][1] if found else None
            if delivered == n and backlog == 0:
                break
            time.sleep(0.3)
        assert delivered == n and backlog == 0, (delivered, backlog)
        assert one(samples, "gensendrep_deliveries_total", outcome="failed") == 0
    finally:
        rcv.close()


def probe_checked_us(srv):
    """When health's probe last wrote (its committed write), read from the database itself."""
    if srv.database_url.startswith("sqlite:"):
        con = sqlite3.connect(srv.database_url.split(":", 1)[1], timeout=10)
        try:
            row = con.execute("SELECT checked_us FROM health_probe").fetchone()
        finally:
            con.close()
        return row[0] if row else None
    db = srv.database_url.rsplit("/", 1)[1]
    out = pg_cluster().psql("SELECT checked_us FROM health_probe", db=db).strip()
    return int(out) if out else None


def test_scrapes_write_nothing(make_server):
    """Scrapes on an idle server cause no write (no health check, whose probe is a committed
    write) and no commit in the metrics; the backlog is still there. A health check's probe is
    a write, but not a commit in the commit histograms."""
    srv = make_server()
    assert srv.get("/api/v1/health", key=None).status_code == 200
    time.sleep(1.3)  # the last check is stale now: before the fix a scrape started another
    _, samples = parse(scrape(srv, key=None))
    sizes = one(samples, "gensendrep_store_commit_batch_size_count")
    durations = one(samples, "gensendrep_store_commit_duration_seconds_count")
    probed = probe_checked_us(srv)
    for _ in range(6):
        time.sleep(1.1)
        _, samples = parse(scrape(srv, key=None))
    assert one(samples, "gensendrep_store_commit_batch_size_count") == sizes
    assert one(samples, "gensendrep_store_commit_duration_seconds_count") == durations
    assert probe_checked_us(srv) == probed
    assert one(samples, "gensendrep_outbox_backlog") == 0
    assert one(samples, "gensendrep_outbox_backlog_capped") == 0
    # Health itself still proves a committed write; it is not counted as a commit.
    assert srv.get("/api/v1/health", key=None).status_code == 200
    assert probe_checked_us(srv) != probed
    _, samples = parse(scrape(srv, key=None))
    assert one(samples, "gensendrep_store_commit_batch_size_count") == sizes
    assert one(samples, "gensendrep_store_commit_duration_seconds_count") == durations


def test_backlog_moves_without_health_checks(make_server):
    """The backlog follows the outbox through scrapes alone (a read-only refresh off the
    scrape path): deliveries a failing receiver keeps pending show up, a scrape or so late."""
    rcv = Receiver()
    try:
        rcv.answer(500)
        srv = make_server(env={"DELIVERY_ALLOW_PRIVATE_NETWORKS": "true",
                               "DELIVERY_RETRY_SCHEDULE": "0,600"})
        r = srv.request("POST", "/api/v1/subscriptions", json={"url": rcv.url("hook")})
        assert r.status_code == 201, r.text
        probed = probe_checked_us(srv)
        n = 3
        for _ in range(n):
            assert srv.post_conv(make_conv()).status_code == 200
        deadline = time.time() + WAIT
        backlog = None
        while time.time() < deadline:
            _, samples = parse(scrape(srv, key=None))
            found = series(samples, "gensendrep_outbox_backlog")
            backlog = found[0][1] if found else None
            if backlog == n:
                break
            time.sleep(0.3)
        assert backlog == n, backlog
        assert probe_checked_us(srv) == probed  # no health check ran for it
    finally:
        rcv.close()


def test_known_paths_keep_their_route(server):
    """OPTIONS (204) and a method the path does not take (405) count under the path's route,
    not "unmatched"; so does a request libmicrohttpd refuses itself before its headers reach
    the application (431 for 70 KB of headers), whose method it does not tell (\"other\")."""
    def count(samples, **labels):
        found = series(samples, "gensendrep_http_requests_total", **labels)
        return found[0][1] if found else 0

    _, before = parse(scrape(server, key=None))
    assert server.request("OPTIONS", "/metrics", key=None).status_code == 204
    r = server.request("POST", "/metrics", key=None)
    assert r.status_code == 405, r.text
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 +
                     b"\r\n\r\n")
        head = sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 431"), head[:100]
    deadline = time.time() + WAIT
    while True:
        _, after = parse(scrape(server, key=None))
        if count(after, route="/metrics", status="431") or time.time() > deadline:
            break
        time.sleep(0.2)
    for method, status in (("OPTIONS", "204"), ("POST", "405"), ("other", "431")):
        assert count(after, route="/metrics", method=method, status=status) == \
            count(before, route="/metrics", method=method, status=status) + 1, (method, status)
        assert count(after, route="unmatched", method=method, status=status) == \
            count(before, route="unmatched", method=method, status=status), (method, status)
