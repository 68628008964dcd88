"""Shared helpers for the black-box suite: the Server process wrapper, HTTP sessions and
conversation builders. Only the standard library, pytest and requests (Debian's) are used."""
import copy
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter
from urllib3.poolmanager import PoolManager

REPO = Path(__file__).resolve().parents[2]
BINARY = os.environ.get("GENSENDREP_BIN", str(REPO / "build" / "debug" / "gensendrep"))

KEY1 = "test-key-one"
KEY2 = "test-key-two"
API_KEYS = f"{KEY1},{KEY2}"

HTTP_TIMEOUT = 15  # seconds for any single request; keeps every test bounded
START_TIMEOUT = 10
STOP_TIMEOUT = 20

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer")

PROCESSED_AT_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
UTC_TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

CONVERSATION_FIELDS = {
    "conversationId", "emailId", "accountId", "agentId", "status", "startTime", "endTime",
    "duration", "messageCount", "processedAt",
}

# The seed's request example, byte for byte as the README shows it.
SEED_EXAMPLE = """{
  "emailId": "user@example.com",
  "accountId": "acc123",
  "conversationId": "conv_abc123",
  "transcript": [
    {
      "timestamp": "2024-01-15T10:30:00Z",
      "speaker": "user",
      "content": "Hello, I need help",
      "messageId": "msg_123"
    }
  ],
  "metadata": {
    "sessionId": "sess_456",
    "agentId": "agent_01jxn7fwb2eyq8p6k4m3en4xtm",
    "duration": 300,
    "messageCount": 10,
    "platform": "web",
    "userAgent": "Mozilla/5.0..."
  }
}"""


# ---------------------------------------------------------------- storage backends
def sqlite_database_url(tmpdir, name="db.sqlite"):
    return f"sqlite:{tmpdir}/{name}"


_PG = None


def pg_cluster():
    """The session's PostgreSQL cluster, started on first use (see services.PgCluster)."""
    global _PG
    if _PG is None:
        from services import PgCluster
        _PG = PgCluster()
        _PG.start()
    if not _PG.running:
        _PG.start()
    return _PG


def postgres_database_url(_tmpdir):
    """A fresh database in the shared cluster for every server."""
    return pg_cluster().create_database("gsr_" + uuid.uuid4().hex[:16])


# Adding a backend = one entry here + one entry in conftest.BACKENDS.
DATABASE_URL_FOR = {
    "sqlite": sqlite_database_url,
    "postgres": postgres_database_url,
}


# ---------------------------------------------------------------- HTTP helpers
def new_session(source_ip=None):
    """A requests session that ignores proxy variables and optionally binds a source IP
    (any 127.x.y.z works on loopback, which lets tests act as different clients)."""
    s = requests.Session()
    s.trust_env = False
    if source_ip:
        adapter = _SourceAddressAdapter(source_ip)
        s.mount("http://", adapter)
    return s


class _SourceAddressAdapter(HTTPAdapter):
    def __init__(self, source_ip, **kw):
        self._source = (source_ip, 0)
        super().__init__(**kw)

    def init_poolmanager(self, connections, maxsize, block=False, **kw):
        self.poolmanager = PoolManager(num_pools=connections, maxsize=maxsize, block=block,
                                       source_address=self._source, **kw)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def auth(key=KEY1):
    return {"Authorization": f"Bearer {key}"}


def uid():
    return uuid.uuid4().hex


def make_conv(conversation_id=None, **overrides):
    """A valid webhook body (as a dict) with a unique conversationId unless given."""
    cid = conversation_id or f"conv_{uid()}"
    body = {
        "emailId": "user@example.com",
        "accountId": "acc123",
        "conversationId": cid,
        "transcript": [
            {"timestamp": "2024-01-15T10:30:00Z", "speaker": "user",
             "content": "Hello, I need help", "messageId": "msg_1"},
            {"timestamp": "2024-01-15T10:31:00Z", "speaker": "agent",
             "content": "Sure, what is the problem?", "messageId": "msg_2"},
        ],
        "metadata": {
            "sessionId": "sess_456",
            "agentId": "agent_01jxn7fwb2eyq8p6k4m3en4xtm",
            "duration": 300,
            "messageCount": 2,
            "platform": "web",
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64)",
        },
    }
    body.update(overrides)
    return body


DELETE = object()


def _path_tokens(path):
    toks = []
    for part in path.split("."):
        m = re.fullmatch(r"([^\[]*)((?:\[\d+\])*)", part)
        if m.group(1):
            toks.append(m.group(1))
        toks.extend(int(i) for i in re.findall(r"\[(\d+)\]", m.group(2)))
    return toks


def mutate(body, path, value):
    """Returns a copy of body with `path` (e.g. "transcript[0].speaker") set to value,
    or removed when value is DELETE."""
    body = copy.deepcopy(body)
    toks = _path_tokens(path)
    node = body
    for t in toks[:-1]:
        node = node[t]
    if value is DELETE:
        del node[toks[-1]]
    else:
        node[toks[-1]] = value
    return body


def error_fields(resp):
    return [d.get("field") for d in resp.json()["error"].get("details", [])]


def assert_error(resp, status, code=None):
    """Checks the documented error envelope and returns the error object."""
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    body = resp.json()
    assert body["success"] is False, body
    err = body["error"]
    if code is not None:
        if isinstance(code, (set, tuple, list)):
            assert err["code"] in code, err
        else:
            assert err["code"] == code, err
    assert isinstance(err["message"], str) and err["message"], err
    assert isinstance(err.get("details"), list), err
    for d in err["details"]:
        assert isinstance(d.get("field"), str), d
        assert isinstance(d.get("issue"), str) and d["issue"], d
    return err


def raw_http(port, request_bytes, timeout=10, host="127.0.0.1"):
    """Sends raw bytes and returns (status, headers dict lower-cased, body bytes). Used where
    requests/urllib3 would normalise the request (dot segments, framing)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(request_bytes)
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
            if _complete_response(data):
                break
    return parse_raw_response(data)


def _complete_response(data):
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    if m:
        return len(rest) >= int(m.group(1))
    return False


def parse_raw_response(data):
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines or not lines[0].startswith("HTTP/"):
        return None, {}, data
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


def http_client_get(port, path, headers=None):
    """GET with the path sent exactly as given (no dot-segment normalisation)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


# ---------------------------------------------------------------- the server process
class Server:
    """One gensendrep process in its own working directory (so no stray .env is read).

    env overrides are merged over the defaults; a value of None removes the variable."""

    def __init__(self, workdir, backend="sqlite", env=None, binary=BINARY, database_url=None,
                 tls_ca=None):
        # tls_ca: the server speaks HTTPS (TLS_CERT_FILE); requests verify it with this file.
        self.tls_ca = tls_ca
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.backend = backend
        self.binary = binary
        self.port = None
        self.proc = None
        self.stopped_by_us = False
        self.graceful_signal = None
        self.starts = 0
        self.sigterm_exit_codes = []
        self.stderr_paths = []
        self.stdout_paths = []
        self.database_url = database_url or DATABASE_URL_FOR[backend](self.workdir)
        self.env_overrides = dict(env or {})
        self.session = self.new_session()

    def new_session(self, source_ip=None):
        s = new_session(source_ip)
        if self.tls_ca:
            s.verify = str(self.tls_ca)
        return s

    # -- environment
    def build_env(self):
        env = {k: v for k, v in os.environ.items() if k not in _CONFIG_NAMES}
        env.update({
            "API_SECRET_KEY": API_KEYS,
            "DATABASE_URL": self.database_url,
            "LOG_LEVEL": "info",
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            # Generous by default so only the rate-limit tests ever see a 429.
            "RATE_LIMIT_WEBHOOK_PER_MINUTE": "1000000",
            "RATE_LIMIT_API_PER_MINUTE": "1000000",
        })
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        for k, v in self.env_overrides.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = str(v)
        return env

    # -- lifecycle
    def start(self, timeout=START_TIMEOUT, port=None):
        last_err = None
        for _attempt in range(3):
            self.port = port or free_port()
            self._spawn()
            try:
                self.wait_ready(timeout)
                return self
            except RuntimeError as e:  # e.g. the port was taken between probe and bind
                last_err = e
                if port is not None or self.proc.poll() is None:
                    break
        raise last_err

    def _spawn(self):
        self.starts += 1
        err = self.workdir / f"stderr.{self.starts}.log"
        out = self.workdir / f"stdout.{self.starts}.log"
        self.stderr_paths.append(err)
        self.stdout_paths.append(out)
        with open(err, "wb") as ferr, open(out, "wb") as fout:
            self.proc = subprocess.Popen([self.binary], cwd=self.workdir, env=self.build_env(),
                                         stdout=fout, stderr=ferr, stdin=subprocess.DEVNULL)
        self.stopped_by_us = False
        self.graceful_signal = None

    def wait_ready(self, timeout=START_TIMEOUT):
        deadline = time.monotonic() + timeout
        probe = self.new_session()
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gensendrep exited with {self.proc.returncode} during start-up:"
                                   f"\n{self.last_stderr()[-3000:]}")
            try:
                r = probe.get(self.url("/api/v1/health"), timeout=1)
                if r.status_code in (200, 503):
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        self.kill9()
        raise RuntimeError(f"gensendrep did not answer /api/v1/health within {timeout}s:\n"
                           f"{self.last_stderr()[-3000:]}")

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig=signal.SIGTERM):
        """Sends SIGTERM/SIGINT without waiting; stop() then waits and checks the exit code."""
        self.stopped_by_us = True
        self.graceful_signal = sig
        self.proc.send_signal(sig)

    def stop(self, timeout=STOP_TIMEOUT, sig=signal.SIGTERM):
        """SIGTERM (or SIGINT), wait, return the exit code (recorded for the teardown check)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None or self.graceful_signal is not None:
            if self.graceful_signal is None:
                self.send_signal(sig)
            sig = self.graceful_signal
            self.graceful_signal = None
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.session.close()
                raise AssertionError(f"gensendrep did not exit within {timeout}s of {sig!r}")
            self.sigterm_exit_codes.append(self.proc.returncode)
        self.session.close()
        self.session = self.new_session()
        return self.proc.returncode

    def kill9(self):
        if self.proc is not None and self.proc.poll() is None:
            self.stopped_by_us = True
            self.proc.kill()
            self.proc.wait()
        self.session.close()
        self.session = self.new_session()

    def restart(self):
        """SIGTERM (if running, expecting exit code 0) and start again on the same database."""
        if self.running:
            code = self.stop()
            assert code == 0, f"exit code {code} after SIGTERM"
        return self.start()

    # -- output
    def last_stderr(self):
        return self.stderr_paths[-1].read_text(errors="replace") if self.stderr_paths else ""

    def stderr_text(self):
        return "".join(p.read_text(errors="replace") for p in self.stderr_paths if p.exists())

    def stdout_text(self):
        return "".join(p.read_text(errors="replace") for p in self.stdout_paths if p.exists())

    def log_records(self):
        recs = []
        for line in self.stderr_text().splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    recs.append(json.loads(line))
                except ValueError:
                    pass
        return recs

    def sanitizer_reports(self):
        text = self.stderr_text()
        return [m for m in SANITIZER_MARKERS if m in text]

    def check_clean(self):
        """Teardown check: no sanitizer report, and every SIGTERM ended with exit code 0."""
        if self.proc is not None and self.proc.poll() is not None:
            assert self.stopped_by_us, (f"gensendrep died on its own with exit code "
                                        f"{self.proc.returncode}:\n{self.last_stderr()[-3000:]}")
        reports = self.sanitizer_reports()
        assert not reports, f"sanitizer reports {reports} in stderr:\n{self.stderr_text()[-6000:]}"
        bad = [c for c in self.sigterm_exit_codes if c != 0]
        assert not bad, f"exit codes after SIGTERM: {self.sigterm_exit_codes}\n" \
                        f"{self.stderr_text()[-3000:]}"

    # -- HTTP
    def url(self, path):
        scheme = "https" if self.tls_ca else "http"
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def request(self, method, path, key=KEY1, headers=None, session=None, **kw):
        h = {}
        if key is not None:
            h.update(auth(key))
        h.update(headers or {})
        kw.setdefault("timeout", HTTP_TIMEOUT)
        return (session or self.session).request(method, self.url(path), headers=h, **kw)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post_raw(self, data, content_type="application/json", path="/api/v1/webhook/conversation",
                 **kw):
        headers = dict(kw.pop("headers", {}) or {})
        if content_type is not None:
            headers["Content-Type"] = content_type
        if isinstance(data, str):
            data = data.encode("utf-8")
        return self.request("POST", path, data=data, headers=headers, **kw)

    def post_conv(self, body, **kw):
        data = body if isinstance(body, (bytes, str)) else json.dumps(body, ensure_ascii=False)
        return self.post_raw(data, **kw)

    def get_conv(self, conversation_id, include=False, **kw):
        from urllib.parse import quote
        path = "/api/v1/conversations/" + quote(conversation_id, safe="")
        if include:
            path += "?include=transcript"
        return self.get(path, **kw)

    def list_convs(self, **params):
        key = params.pop("key", KEY1)
        return self.get("/api/v1/conversations", params=params, key=key)


_CONFIG_NAMES = {
    "API_SECRET_KEY", "WEBHOOK_SECRET", "HOST", "PORT", "DATABASE_URL",
    "DATABASE_CONNECT_TIMEOUT_SECONDS", "REDIS_URL",
    "CORS_ORIGINS", "LOG_LEVEL", "MAX_BODY_BYTES", "RATE_LIMIT_WEBHOOK_PER_MINUTE",
    "RATE_LIMIT_API_PER_MINUTE", "TRUSTED_PROXIES", "MAX_CONNECTIONS",
    "CONNECTION_TIMEOUT_SECONDS", "REQUEST_TIMEOUT_SECONDS", "HEADER_TIMEOUT_SECONDS",
    "DOCS_ASSETS_URL", "DOCS_ASSETS_DIR", "THREADS", "OFFLOAD_THREADS", "OFFLOAD_QUEUE",
    "WEBHOOK_SIGNATURE_REQUIRED", "ELEVENLABS_WEBHOOK_SECRET",
    "ELEVENLABS_WEBHOOK_TOLERANCE_SECONDS", "RATE_LIMIT_ELEVENLABS_PER_MINUTE",
    "ELEVENLABS_EMAIL_VARIABLE", "ELEVENLABS_ACCOUNT_VARIABLE", "ELEVENLABS_AUDIO_MAX_BYTES",
    "ELEVENLABS_STORE_AUDIO", "ELEVENLABS_API_KEY", "ELEVENLABS_API_URL",
    "ELEVENLABS_HEALTH_INTERVAL_SECONDS", "TLS_CERT_FILE", "TLS_KEY_FILE", "RETENTION_DAYS", "ENCRYPTION_KEYS",
    "QUEUE_URL", "QUEUE_STREAM", "QUEUE_MAXLEN", "DELIVERY_RETRY_SCHEDULE",
    "DELIVERY_ALLOW_PRIVATE_NETWORKS", "DELIVERY_TIMEOUT_SECONDS", "DELIVERY_CONCURRENCY",
    "OUTBOX_RETENTION_DAYS", "METRICS_TOKEN",
}
CONFIG_NAMES = sorted(_CONFIG_NAMES)


def finish_server(server):
    """Stops a server (SIGTERM) and asserts it left no sanitizer report and exited 0."""
    try:
        if server.running or server.graceful_signal is not None:
            server.stop()
    finally:
        server.check_clean()


def run_binary(args, cwd, env_overrides=None, timeout=10, base_env=True):
    """Runs the binary to completion (for --help, --version and start-up failures)."""
    env = {k: v for k, v in os.environ.items() if k not in _CONFIG_NAMES}
    if base_env:
        env.update({"API_SECRET_KEY": API_KEYS, "HOST": "127.0.0.1", "PORT": str(free_port()),
                    "DATABASE_URL": sqlite_database_url(cwd)})
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    for k, v in (env_overrides or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = str(v)
    return subprocess.run([BINARY, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
