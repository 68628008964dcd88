"""The ElevenLabs REST API side: health's `elevenlabs` dependency from the background check,
and `gensendrep elevenlabs backfill`. The API is the local fake in fake_elevenlabs.py (the real
one cannot be reached from here); both storage backends."""
import os
import signal
import socket
import subprocess
import time

import pytest

from fake_elevenlabs import FakeElevenLabs, make_conversation
from helpers import BINARY, _CONFIG_NAMES, run_binary

GOOD_KEY = "xi-test-key-0123456789"


def closed_port_url():
    """A URL nothing listens on (connection refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def fake():
    f = FakeElevenLabs(api_key=GOOD_KEY).start()
    yield f
    f.stop()


def el_env(url, key=GOOD_KEY, interval=None):
    env = {"ELEVENLABS_API_URL": url, "ELEVENLABS_API_KEY": key}
    if interval is not None:
        env["ELEVENLABS_HEALTH_INTERVAL_SECONDS"] = str(interval)
    return env


def health(srv):
    r = srv.get("/api/v1/health", key=None)
    return r.status_code, r.json()


def wait_elevenlabs(srv, want, timeout=15):
    """Polls health until dependencies.elevenlabs == want; returns (status code, body)."""
    deadline = time.monotonic() + timeout
    code, body = health(srv)
    while body["dependencies"]["elevenlabs"] != want and time.monotonic() < deadline:
        time.sleep(0.1)
        code, body = health(srv)
    assert body["dependencies"]["elevenlabs"] == want, body
    return code, body


# ---------------------------------------------------------------- health
def test_health_connected_with_good_key(make_server, fake):
    srv = make_server(env=el_env(fake.url))
    code, body = wait_elevenlabs(srv, "connected")
    assert code == 200 and body["status"] == "healthy", body
    checks = fake.list_requests()
    assert checks and checks[0]["key_sent"] and checks[0]["query"].get("page_size") == "1"
    # The key is never written to the log.
    assert GOOD_KEY not in srv.stderr_text()


def test_health_disconnected_with_bad_key_is_degraded_200(make_server, fake):
    srv = make_server(env=el_env(fake.url, key="xi-wrong-key"))
    deadline = time.monotonic() + 15
    while not any(r["status"] == 401 for r in fake.log) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    code, body = health(srv)
    assert code == 200 and body["status"] == "degraded", body
    assert body["dependencies"] == {"database": "connected", "redis": "not_configured",
                                    "elevenlabs": "disconnected"}
    assert "xi-wrong-key" not in srv.stderr_text()
    assert "refused (401)" in srv.stderr_text()


def test_health_disconnected_when_api_unreachable(make_server):
    srv = make_server(env=el_env(closed_port_url()))
    time.sleep(0.5)
    code, body = health(srv)
    assert code == 200 and body["status"] == "degraded", body
    assert body["dependencies"]["elevenlabs"] == "disconnected"


def test_health_follows_the_api_on_each_interval(make_server, fake):
    fake.api_key = "xi-another-key"  # ours is refused at first
    srv = make_server(env=el_env(fake.url, interval=1))
    wait_elevenlabs(srv, "disconnected")
    fake.api_key = GOOD_KEY  # the workspace accepts the key now
    code, body = wait_elevenlabs(srv, "connected")
    assert code == 200 and body["status"] == "healthy"
    fake.api_key = "xi-revoked"
    code, body = wait_elevenlabs(srv, "disconnected")
    assert code == 200 and body["status"] == "degraded"
    # Checked about once per interval, not per health request.
    n = len(fake.log)
    for _ in range(20):
        health(srv)
    assert len(fake.log) - n <= 3, fake.log


def test_health_never_waits_for_a_slow_api_and_shutdown_neither(make_server, fake):
    fake.delay = 25  # the API hangs on every request
    srv = make_server(env=el_env(fake.url))
    t0 = time.monotonic()
    code, body = health(srv)
    assert time.monotonic() - t0 < 5
    assert code == 200 and body["dependencies"]["elevenlabs"] == "disconnected"
    t0 = time.monotonic()
    assert srv.stop() == 0
    assert time.monotonic() - t0 < 10, "shutdown waited for the ElevenLabs API"


def test_health_not_configured_without_key(make_server, fake):
    srv = make_server(env={"ELEVENLABS_API_URL": fake.url})
    code, body = health(srv)
    assert code == 200 and body["dependencies"]["elevenlabs"] == "not_configured"
    assert body["status"] == "healthy"
    time.sleep(0.3)
    assert fake.log == []  # no key: the API is never called


@pytest.mark.backends("sqlite")
def test_bad_api_url_is_a_start_up_error(tmp_path, backend):
    p = run_binary([], tmp_path, {"ELEVENLABS_API_KEY": GOOD_KEY,
                                  "ELEVENLABS_API_URL": "file:///etc/passwd"}, timeout=20)
    assert p.returncode != 0
    assert "ELEVENLABS_API_URL" in p.stderr
