"""The ElevenLabs REST API side: health's `elevenlabs` dependency from the background check,
and `gensendrep elevenlabs backfill`. The API is the local fake in fake_elevenlabs.py (the real
one cannot be reached from here); both storage backends."""
import json
import os
import pty
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

from fake_elevenlabs import FakeElevenLabs, make_conversation
from helpers import BINARY, SANITIZER_MARKERS, _CONFIG_NAMES, make_conv, run_binary

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


def test_health_disconnected_when_the_api_goes_away(make_server):
    fake = FakeElevenLabs(api_key=GOOD_KEY).start()
    try:
        srv = make_server(env=el_env(fake.url, interval=1))
        wait_elevenlabs(srv, "connected")
    finally:
        fake.stop()
    code, body = wait_elevenlabs(srv, "disconnected")
    assert code == 200 and body["status"] == "degraded", body


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


# ---------------------------------------------------------------- backfill
SUMMARY_RE = re.compile(r"^backfill(?: \(interrupted\))?: (\d+) listed, (\d+) stored, "
                        r"(\d+) already present", re.M)
AGENT_A = "agent_01k9ag04z6g5cdabhxjbntyvj9"
AGENT_B = "agent_01kbbbbbbbbbbbbbbbbbbbbbbb"
T0 = 1773151000  # 2026-03-10T13:56:40Z


def backfill(srv, url, *args, key=GOOD_KEY, timeout=90):
    """Runs `gensendrep elevenlabs backfill ARGS` on srv's database (the server may be running);
    returns (exit code, stderr, (listed, stored, present) or None)."""
    env = {"DATABASE_URL": srv.database_url}
    if url is not None:
        env["ELEVENLABS_API_URL"] = url
    if key is not None:
        env["ELEVENLABS_API_KEY"] = key
    p = run_binary(["elevenlabs", "backfill", *args], srv.workdir, env, timeout=timeout)
    assert not [m for m in SANITIZER_MARKERS if m in p.stderr], p.stderr[-4000:]
    m = SUMMARY_RE.search(p.stderr)
    return p.returncode, p.stderr, tuple(int(x) for x in m.groups()) if m else None


def convs(n, agent=AGENT_A, start=T0, **kw):
    return [make_conversation(agent_id=agent, start=start + 60 * i, **kw) for i in range(n)]


def held(srv, cid):
    r = srv.get_conv(cid)
    assert r.status_code in (200, 404), r.text
    return r.status_code == 200


def rfc3339(unix):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix))


def test_backfill_stores_what_is_missing_mapped_like_a_webhook(server, fake):
    done = convs(3, email="maya@example.com", account="acct_4821907", turns=5)
    failed = make_conversation(start=T0 + 500, status="failed", turns=1)
    nameless = make_conversation(start=T0 + 600, email=None, account=None, turns=2)
    running = make_conversation(start=T0 + 700, status="in-progress")
    fake.conversations = done + [failed, nameless, running]
    # One of them reached us already (through the relay): it is neither fetched nor changed.
    known = done[0]["conversation_id"]
    body = make_conv(known)
    assert server.post_conv(body).status_code == 200
    before = server.get_conv(known, include=True).json()

    rc, err, counts = backfill(server, fake.url)
    assert rc == 0, err
    assert counts == (6, 4, 1), err
    assert "1 not finished or gone (skipped)" in err
    fetched = fake.detail_requests()
    assert sorted(fetched) == sorted(c["conversation_id"] for c in done[1:] + [failed, nameless])
    assert not held(server, running["conversation_id"])
    assert server.get_conv(known, include=True).json() == before

    c = done[1]
    cid = c["conversation_id"]
    r = server.get_conv(cid, include=True)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["conversationId"] == cid
    assert got["emailId"] == "maya@example.com" and got["accountId"] == "acct_4821907"
    assert got["status"] == "completed"
    assert got["messageCount"] == 5
    assert got["duration"] == c["metadata"]["call_duration_secs"]
    assert got["startTime"] == rfc3339(c["metadata"]["start_time_unix_secs"])
    turns = got["transcript"]
    assert [t["speaker"] for t in turns] == [t["role"] for t in c["transcript"]]
    assert [t["content"] for t in turns] == [t["message"] or "" for t in c["transcript"]]
    assert [t["messageId"] for t in turns] == [f"{cid}:{i}" for i in range(5)]
    assert turns[2]["timestamp"] == rfc3339(c["metadata"]["start_time_unix_secs"] + 10)

    assert server.get_conv(failed["conversation_id"]).json()["status"] == "failed"
    anon = server.get_conv(nameless["conversation_id"]).json()
    assert anon["emailId"] is None and anon["accountId"] is None

    # A second run fetches and stores nothing.
    fake.log.clear()
    rc, err, counts = backfill(server, fake.url)
    assert rc == 0, err
    assert counts == (6, 0, 5), err
    assert fake.detail_requests() == []


def test_backfill_pages_through_every_conversation(make_server, fake):
    srv = make_server()
    fake.conversations = convs(230)
    rc, err, counts = backfill(srv, fake.url)
    assert rc == 0, err
    assert counts == (230, 230, 0)
    pages = fake.list_requests()
    assert len(pages) == 3 and all(p["query"]["page_size"] == "100" for p in pages)
    assert "cursor" not in pages[0]["query"] and pages[1]["query"]["cursor"]
    assert srv.list_convs(limit=1).json()["pagination"]["total"] == 230


def test_backfill_interrupted_by_the_api_going_away_then_resumed(make_server, fake):
    srv = make_server()
    fake.conversations = convs(8)
    fake.close_after_details = 3  # the API drops every connection after three conversations
    rc, err, counts = backfill(srv, fake.url)
    assert rc != 0
    assert "cannot reach the ElevenLabs API" in err, err
    assert counts is not None and counts[1] == 3, err
    first = fake.detail_requests()[:3]
    assert all(held(srv, cid) for cid in first)

    fake.close_after_details = None
    fake.log.clear()
    rc, err, counts = backfill(srv, fake.url)
    assert rc == 0, err
    assert counts == (8, 5, 3), err
    assert not set(first) & set(fake.detail_requests())
    assert all(held(srv, c["conversation_id"]) for c in fake.conversations)


def test_backfill_sigint_stops_cleanly_and_a_rerun_completes(make_server, fake):
    srv = make_server()
    fake.conversations = convs(12)
    fake.delay = 0.3
    env = {k: v for k, v in os.environ.items() if k not in _CONFIG_NAMES}
    env.update({"API_SECRET_KEY": "k", "DATABASE_URL": srv.database_url,
                "ELEVENLABS_API_URL": fake.url, "ELEVENLABS_API_KEY": GOOD_KEY,
                "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0"})
    p = subprocess.Popen([BINARY, "elevenlabs", "backfill"], cwd=srv.workdir, env=env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while fake.details_served < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 130, err
    assert "interrupted" in err and not [m for m in SANITIZER_MARKERS if m in err], err
    m = SUMMARY_RE.search(err)
    stored = int(m.group(2))
    assert 2 <= stored < 12  # the third answer may be cut by the signal
    fake.delay = 0
    rc, err, counts = backfill(srv, fake.url)
    assert rc == 0, err
    assert counts == (12, 12 - stored, stored), err


def test_backfill_agent_filter(make_server, fake):
    srv = make_server()
    fake.conversations = convs(3, agent=AGENT_A) + convs(2, agent=AGENT_B, start=T0 + 10)
    rc, err, counts = backfill(srv, fake.url, "--agent", AGENT_B)
    assert rc == 0, err
    assert counts == (2, 2, 0)
    assert all(r["query"].get("agent_id") == AGENT_B for r in fake.list_requests())
    wanted = {c["conversation_id"] for c in fake.conversations if c["agent_id"] == AGENT_B}
    assert set(fake.detail_requests()) == wanted
    assert srv.list_convs().json()["pagination"]["total"] == 2


def test_backfill_since_filter(make_server, fake):
    srv = make_server()
    fake.conversations = convs(6)  # T0, T0+60, ... T0+300
    since = T0 + 180
    rc, err, counts = backfill(srv, fake.url, f"--since={rfc3339(since)}")
    assert rc == 0, err
    assert counts == (3, 3, 0)
    assert all(r["query"].get("call_start_after_unix") == str(since)
               for r in fake.list_requests())
    wanted = {c["conversation_id"] for c in fake.conversations
              if c["metadata"]["start_time_unix_secs"] >= since}
    assert set(fake.detail_requests()) == wanted


def test_backfill_refused_key(make_server, fake):
    srv = make_server()
    fake.conversations = convs(2)
    rc, err, _ = backfill(srv, fake.url, key="xi-not-the-key")
    assert rc == 1
    assert "ELEVENLABS_API_KEY was refused by the ElevenLabs API (401)" in err, err
    assert "xi-not-the-key" not in err
    assert fake.detail_requests() == []


def test_backfill_honours_429_retry_after(make_server, fake):
    srv = make_server()
    fake.conversations = convs(3)
    fake.throttle = 2
    fake.retry_after = 1
    t0 = time.monotonic()
    rc, err, counts = backfill(srv, fake.url)
    assert rc == 0, err
    assert counts == (3, 3, 0)
    assert time.monotonic() - t0 >= 1.8  # waited as asked, twice
    assert [r["status"] for r in fake.log[:3]] == [429, 429, 200]
    assert "answered 429; retrying in 1 s" in err


def test_backfill_gives_up_after_bounded_429s(make_server, fake):
    srv = make_server()
    fake.conversations = convs(1)
    fake.throttle = 1000
    fake.retry_after = 1
    rc, err, _ = backfill(srv, fake.url)
    assert rc == 1
    assert "still answered 429" in err, err
    assert 3 <= len(fake.log) <= 10


def test_backfill_unreachable_api(make_server):
    srv = make_server()
    url = closed_port_url()
    rc, err, _ = backfill(srv, url)
    assert rc == 1
    assert f"cannot reach the ElevenLabs API at {url}" in err, err


def test_backfill_without_key_or_with_bad_arguments(make_server, fake):
    srv = make_server()
    rc, err, _ = backfill(srv, fake.url, key=None)
    assert rc == 2 and "ELEVENLABS_API_KEY is not set" in err, err
    rc, err, _ = backfill(srv, fake.url, "--since", "yesterday")
    assert rc == 2 and "--since" in err, err
    rc, err, _ = backfill(srv, fake.url, "--what")
    assert rc == 2 and "Usage" in err, err
    p = run_binary(["elevenlabs", "backfill", "--help"], srv.workdir)
    assert p.returncode == 0 and "--since" in p.stdout and "--agent" in p.stdout, p
    assert fake.log == []


def test_backfill_beside_a_busy_server(make_server, fake):
    """The CLI writes to the database the running server writes to (SQLite in WAL mode, or
    PostgreSQL) while webhooks keep arriving: nothing is lost on either side."""
    srv = make_server()
    fake.conversations = convs(40)
    posted, errors = [], []

    def post_webhooks():
        for _ in range(40):
            body = make_conv()
            r = srv.post_conv(body)
            (posted if r.status_code == 200 else errors).append((body["conversationId"],
                                                                 r.status_code))

    t = threading.Thread(target=post_webhooks)
    t.start()
    rc, err, counts = backfill(srv, fake.url)
    t.join(60)
    assert rc == 0, err
    assert counts == (40, 40, 0)
    assert errors == []
    assert srv.list_convs(limit=1).json()["pagination"]["total"] == 80
    assert all(held(srv, c["conversation_id"]) for c in fake.conversations)


def test_backfill_shows_progress_on_a_terminal(make_server, fake):
    """stderr a terminal: a count line redrawn with \\r after each conversation; a pipe gets
    only the final line (the other tests)."""
    srv = make_server()
    fake.conversations = convs(3)
    env = {k: v for k, v in os.environ.items() if k not in _CONFIG_NAMES}
    env.update({"API_SECRET_KEY": "k", "DATABASE_URL": srv.database_url,
                "ELEVENLABS_API_URL": fake.url, "ELEVENLABS_API_KEY": GOOD_KEY})
    master, slave = pty.openpty()
    try:
        p = subprocess.Popen([BINARY, "elevenlabs", "backfill"], cwd=srv.workdir, env=env,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave)
        os.close(slave)
        out = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        assert p.wait(30) == 0, out
    finally:
        os.close(master)
    text = out.decode(errors="replace")
    for n in (1, 2, 3):
        assert f"\rbackfill: {n} listed, {n} stored, 0 already present" in text, text
    assert text.rstrip().endswith("backfill: 3 listed, 3 stored, 0 already present"), text


def test_backfilled_event_is_the_api_answer_byte_for_byte(server, fake):
    c = make_conversation(start=T0 + 900, turns=4)
    fake.conversations = [c]
    rc, err, counts = backfill(server, fake.url)
    assert rc == 0 and counts == (1, 1, 0), err
    cid = c["conversation_id"]
    r = server.get("/api/v1/conversations/" + cid + "?include=events")
    assert r.status_code == 200, r.text
    events = r.json()["events"]
    assert len(events) == 1 and events[0]["type"] == "post_call_transcription"
    ev = events[0]["event"]
    assert set(ev) == {"type", "event_timestamp", "data"}
    assert ev["data"] == c
    assert abs(ev["event_timestamp"] - time.time()) < 300
    assert json.dumps(c).encode() in r.content  # the answer's bytes, not a re-serialisation
    assert r.json()["agentId"] == c["agent_id"]
