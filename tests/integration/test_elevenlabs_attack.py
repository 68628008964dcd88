"""POST /api/v1/webhook/elevenlabs and GET /api/v1/conversations/{id}/audio under attack: what a
stranger without the signing secret (or a client with an API key) can make the server do.
Both backends."""
import base64
import hashlib
import json
import os
import socket
import time

import requests

from helpers import KEY1, new_session
from test_faults_redis import instance, pg, redis  # noqa: F401 (fixtures)
from test_elevenlabs_webhook import SECRET, _vm_kib, post, signature, uid

FORGED = "t={},v0=" + "ab" * 32  # well-formed and fresh, but signed by nobody


def forged():
    return FORGED.format(int(time.time()))


def test_a_signature_header_does_not_bypass_the_per_ip_limit(make_server):
    """A request carrying an ElevenLabs-Signature header is limited by the endpoint once it
    knows whether the signature is good; one refused before that (wrong Content-Type, a body
    over the route's limit) must still count against the per-IP limit, like any unsigned
    request, or a stranger gets unlimited requests just by adding the header."""
    srv = make_server(env={"ELEVENLABS_WEBHOOK_SECRET": SECRET,
                           "ELEVENLABS_AUDIO_MAX_BYTES": str(64 * 1024),
                           "RATE_LIMIT_WEBHOOK_PER_MINUTE": "3"})
    body = b'{"type":"x","data":{"conversation_id":"c"}}'
    codes = [post(srv, body, sig=forged(), headers={"Content-Type": "text/plain"}).status_code
             for _ in range(5)]
    assert codes[:3] == [415, 415, 415] and codes[3:] == [429, 429], codes

    srv2 = make_server(env={"ELEVENLABS_WEBHOOK_SECRET": SECRET,
                            "ELEVENLABS_AUDIO_MAX_BYTES": str(64 * 1024),
                            "RATE_LIMIT_WEBHOOK_PER_MINUTE": "3"})
    big = (b'{"type":"post_call_audio","data":{"conversation_id":"c","full_audio":"'
           + base64.b64encode(os.urandom(80 * 1024)) + b'"}}')

    def chunks():  # chunked: no Content-Length to refuse it from the headers
        for i in range(0, len(big), 16384):
            yield big[i:i + 16384]

    codes = [post(srv2, chunks(), sig=forged()).status_code for _ in range(5)]
    assert codes[:3] == [413, 413, 413] and codes[3:] == [429, 429], codes
    # The per-IP window is spent: an unsigned request from the same address is limited too.
    assert post(srv2, body, secret=None).status_code == 429


def test_serving_audio_does_not_hold_it_in_memory(make_server):
    """GET /audio of a large recording, by several clients at once (a player, a HEAD, a
    download), must not copy the whole audio into memory once per request: ten listeners of a
    100 MB call would take a gigabyte."""
    srv = make_server(env={"ELEVENLABS_WEBHOOK_SECRET": SECRET,
                           "RATE_LIMIT_ELEVENLABS_PER_MINUTE": "1000",
                           "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:quarantine_size_mb=4"})
    cid = "conv_" + uid()
    mp3 = os.urandom(4 * 1024 * 1024) + b"\x07" * (36 * 1024 * 1024)
    head = json.dumps({"type": "post_call_audio", "data": {"conversation_id": cid,
                                                           "full_audio": ""}})[:-3].encode()
    parts = [head, base64.b64encode(mp3), b'"}}']
    whole = b"".join(parts)
    h = {"Content-Type": "application/json", "ElevenLabs-Signature": signature(whole)}
    del whole

    def chunks():
        for p in parts:
            for i in range(0, len(p), 256 * 1024):
                yield p[i:i + 256 * 1024]

    r = requests.post(srv.url("/api/v1/webhook/elevenlabs"), data=chunks(), headers=h,
                      timeout=120)
    assert r.status_code == 200, r.text
    pid = srv.proc.pid
    rss_before = _vm_kib(pid, "VmRSS")
    n = 4
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=60)
        s.sendall(f"GET /api/v1/conversations/{cid}/audio HTTP/1.1\r\nHost: x\r\n"
                  f"Authorization: Bearer {KEY1}\r\nConnection: close\r\n\r\n".encode())
        socks.append(s)
    peak = rss_before
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:  # the clients read nothing yet: the answers wait
        peak = max(peak, _vm_kib(pid, "VmRSS"))
        time.sleep(0.05)
    for s in socks:
        data = b""
        while True:
            c = s.recv(1 << 20)
            if not c:
                break
            data += c
        s.close()
        head_, _, body = data.partition(b"\r\n\r\n")
        assert head_.startswith(b"HTTP/1.1 200"), head_[:200]
        assert hashlib.sha256(body).digest() == hashlib.sha256(mp3).digest()
    grew = (peak - rss_before) * 1024
    assert grew < len(mp3), (grew, len(mp3))


def test_refusal_known_from_the_headers_is_sent_before_the_upload(make_server):
    """A client that asks "Expect: 100-continue" before a large upload (curl and most HTTP
    libraries do) and whose request is already refused by its headers (no signature, a stale
    one) gets that answer at once, not a 100 Continue followed by a 401 after uploading up to
    ELEVENLABS_AUDIO_MAX_BYTES for nothing."""
    srv = make_server(env={"ELEVENLABS_WEBHOOK_SECRET": SECRET})
    stale = "t={},v0=".format(int(time.time()) - 7200) + "ab" * 32
    for extra in ("", f"ElevenLabs-Signature: {stale}\r\n"):
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(("POST /api/v1/webhook/elevenlabs HTTP/1.1\r\nHost: x\r\n"
                       "Content-Type: application/json\r\nExpect: 100-continue\r\n"
                       f"{extra}Content-Length: 50000000\r\n\r\n").encode())
            head = s.recv(65536).split(b"\r\n")[0]
            assert head.startswith(b"HTTP/1.1 401"), head


def test_allow_header_of_the_audio_route_names_each_method_once(make_server):
    """/conversations/{id}/audio matches both the audio route and the conversation route (a
    prefix): the 405's and OPTIONS' Allow must still list each method once."""
    srv = make_server(env={"ELEVENLABS_WEBHOOK_SECRET": SECRET})
    r = srv.request("POST", "/api/v1/conversations/conv_x/audio", data=b"")
    assert r.status_code == 405
    assert [m.strip() for m in r.headers["Allow"].split(",")] == ["GET", "HEAD", "OPTIONS"]
    r = srv.request("OPTIONS", "/api/v1/conversations/conv_x/audio")
    assert [m.strip() for m in r.headers["Allow"].split(",")] == ["GET", "HEAD", "OPTIONS"]


def test_refusals_before_the_signature_count_per_ip_when_redis_decides(instance, redis):
    """The same accounting when the rate limit is shared through Redis: a new client address
    has no local counts, so Redis decides (off the event thread) before the refusal is sent."""
    srv = instance(ELEVENLABS_WEBHOOK_SECRET=SECRET, RATE_LIMIT_WEBHOOK_PER_MINUTE="3")
    body = b'{"type":"x","data":{"conversation_id":"c"}}'
    for i in range(3):
        s = new_session(f"127.0.0.{90 + i}")
        codes = [s.post(srv.url("/api/v1/webhook/elevenlabs"), data=body, timeout=15,
                        headers={"Content-Type": "text/plain",
                                 "ElevenLabs-Signature": forged()}) for _ in range(4)]
        assert [r.status_code for r in codes] == [415, 415, 415, 429], [r.status_code
                                                                         for r in codes]
        assert codes[0].headers["RateLimit-Remaining"] == "2"


def test_unverified_uploads_are_bounded_together(make_server):
    """Anyone can send a fresh t= with any v0: the MAC is known only at the end of the body.
    What such uploads hold meanwhile (decoded audio on disk, envelopes in memory) is bounded
    for all of them together: past the bound a new one is answered 503 (retried by ElevenLabs),
    and a validly signed delivery is served again once they are gone."""
    max_bytes = 200 * 1024
    srv = make_server(env={"ELEVENLABS_WEBHOOK_SECRET": SECRET,
                           "ELEVENLABS_AUDIO_MAX_BYTES": str(max_bytes),
                           "RATE_LIMIT_WEBHOOK_PER_MINUTE": "1000"})
    audio = base64.b64encode(os.urandom(140 * 1024))
    head = b'{"type":"post_call_audio","data":{"conversation_id":"c","full_audio":"'
    body = head + audio + b'"}}'
    held = []
    try:
        # Sixteen uploads of 140 KiB of audio each, left unfinished: at least 128 KiB of each
        # is decoded to disk (in 64 KiB batches), 2 MiB together, past the 1.6 MiB
        # (8 x ELEVENLABS_AUDIO_MAX_BYTES) that unverified uploads may spool.
        for _ in range(16):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            s.sendall(b"POST /api/v1/webhook/elevenlabs HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Type: application/json\r\n"
                      + f"ElevenLabs-Signature: {forged()}\r\n".encode()
                      + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:-4])
            held.append(s)
        time.sleep(1.0)
        r = post(srv, body, sig=forged())
        assert r.status_code == 503, r.text
        assert r.headers.get("Retry-After") == "1"
    finally:
        for s in held:
            s.close()
    deadline = time.time() + 10
    while True:  # the closed uploads release what they held
        cid = "conv_" + uid()
        ok = json.dumps({"type": "post_call_audio", "data": {"conversation_id": cid,
                         "full_audio": base64.b64encode(b"ID3 audio").decode()}}).encode()
        r = post(srv, ok)
        if r.status_code == 200 or time.time() > deadline:
            break
        time.sleep(0.2)
    assert r.status_code == 200, r.text
