"""POST /api/v1/webhook/elevenlabs: ElevenLabs post-call webhooks exactly as ElevenLabs sends
them (signed with ElevenLabs-Signature), mapped into conversations readable through get and
list, their raw events kept byte for byte, their audio streamed into storage and served with
Range support. Both backends."""
import base64
import hashlib
import hmac
import json
import os
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from helpers import KEY1, Server, assert_error, error_fields, finish_server, uid

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "elevenlabs"
PATH = "/api/v1/webhook/elevenlabs"
SECRET = "wsec_57506b15b729457580a8ec8a16cf3b594534526df7cfdef57efafbed7ad50768"
OTHER_SECRET = "wsec_rotated_0f0e0d0c0b0a09080706050403020100"


def fixture_bytes(name):
    return (FIXTURES / name).read_bytes()


def signature(body, secret=SECRET, t=None, offset=0):
    t = int(time.time()) + offset if t is None else t
    mac = hmac.new(secret.encode(), str(t).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={t},v0={mac}"


def with_conversation_id(name, cid):
    """The fixture's bytes with its conversation id replaced (same length and layout)."""
    raw = fixture_bytes(name)
    old = json.loads(raw)["data"]["conversation_id"].encode()
    return raw.replace(old, cid.encode())


def post(server, body, secret=SECRET, sig=None, headers=None, key=None, **kw):
    h = {"Content-Type": "application/json"}
    if sig is None and secret is not None:
        sig = signature(body, secret)
    if sig is not None:
        h["ElevenLabs-Signature"] = sig
    h.update(headers or {})
    return server.request("POST", PATH, key=key, headers=h, data=body, **kw)


def get_conv(server, cid, include=None):
    path = "/api/v1/conversations/" + quote(cid, safe="")
    if include:
        path += "?include=" + include
    return server.get(path)


def get_audio(server, cid, headers=None):
    return server.get("/api/v1/conversations/" + quote(cid, safe="") + "/audio", headers=headers)


@pytest.fixture(scope="module")
def el_server(backend, tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp(f"el-{backend}"), backend=backend,
                 env={"ELEVENLABS_WEBHOOK_SECRET": f"{SECRET},{OTHER_SECRET}",
                      "RATE_LIMIT_ELEVENLABS_PER_MINUTE": "1000000"})
    srv.start()
    yield srv
    finish_server(srv)


def accepted(resp, cid):
    assert resp.status_code == 200, resp.text[:500]
    body = resp.json()
    assert body["success"] is True
    assert body["data"]["conversationId"] == cid
    assert body["data"]["status"] == "processed"
    return body["data"]["webhookId"]


# ------------------------------------------------------------------ transcription
def test_signed_transcription_is_stored_and_mapped(el_server):
    cid = "conv_" + uid()
    body = with_conversation_id("post_call_transcription_success.json", cid)
    accepted(post(el_server, body), cid)
    event = json.loads(body)["data"]

    r = get_conv(el_server, cid, include="transcript")
    assert r.status_code == 200, r.text
    c = r.json()
    assert c["conversationId"] == cid
    assert c["emailId"] == "maya.lindqvist@example.com"
    assert c["accountId"] == "acct_4821907"
    assert c["status"] == "completed"
    assert c["agentId"] == event["agent_id"]
    assert c["duration"] == event["metadata"]["call_duration_secs"]
    assert c["messageCount"] == len(event["transcript"])
    start = event["metadata"]["start_time_unix_secs"]
    assert c["startTime"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start))
    turns = c["transcript"]
    assert len(turns) == len(event["transcript"])
    for i, (got, sent) in enumerate(zip(turns, event["transcript"])):
        assert got["speaker"] == sent["role"]
        assert got["content"] == (sent["message"] or "")
        assert got["messageId"] == f"{cid}:{i}"
        want = time.strftime("%Y-%m-%dT%H:%M:%SZ",
                             time.gmtime(start + int(sent["time_in_call_secs"])))
        assert got["timestamp"] == want
    assert c["summary"] == event["analysis"]

    listed = el_server.list_convs(account_id="acct_4821907", limit=100).json()
    assert cid in [x["conversationId"] for x in listed["conversations"]]


def test_event_kept_byte_for_byte_with_unknown_fields_at_every_level(el_server):
    cid = "conv_" + uid()
    event = json.loads(with_conversation_id("post_call_transcription_success.json", cid))
    event["brand_new_top_level"] = {"x": [1, 2.5, None]}
    event["data"]["brand_new_in_data"] = "\u00e9t\u00e9 \U0001f600"
    event["data"]["metadata"]["brand_new_in_metadata"] = True
    event["data"]["transcript"][0]["brand_new_in_turn"] = {"deep": {"deeper": "yes"}}
    event["data"]["analysis"]["brand_new_in_analysis"] = 7
    # Unusual but valid layout: the stored event must be these bytes, not a re-serialisation.
    body = json.dumps(event, indent=3, ensure_ascii=False).encode() + b"\n"
    accepted(post(el_server, body), cid)
    r = get_conv(el_server, cid, include="events")
    assert r.status_code == 200
    assert body.rstrip(b"\n") in r.content  # the raw bytes, embedded as they came
    events = r.json()["events"]
    assert len(events) == 1
    assert events[0]["type"] == "post_call_transcription"
    assert events[0]["event"] == event
    assert "receivedAt" in events[0] and events[0]["webhookId"]


def test_missing_email_and_account_are_stored_as_null(el_server):
    cid = "conv_" + uid()
    event = json.loads(with_conversation_id("post_call_transcription_success.json", cid))
    del event["data"]["conversation_initiation_client_data"]["dynamic_variables"]["user_email"]
    del event["data"]["conversation_initiation_client_data"]["dynamic_variables"]["account_id"]
    body = json.dumps(event).encode()
    accepted(post(el_server, body), cid)
    c = get_conv(el_server, cid).json()
    assert c["emailId"] is None and c["accountId"] is None
    # No client data at all is fine too.
    cid2 = "conv_" + uid()
    event["data"]["conversation_id"] = cid2
    del event["data"]["conversation_initiation_client_data"]
    accepted(post(el_server, json.dumps(event).encode()), cid2)
    assert get_conv(el_server, cid2).json()["emailId"] is None


def test_failed_status_and_null_messages(el_server):
    cid = "conv_" + uid()
    event = json.loads(with_conversation_id("post_call_transcription_success.json", cid))
    event["data"]["status"] = "failed"
    event["data"]["transcript"][1]["message"] = None
    accepted(post(el_server, json.dumps(event).encode()), cid)
    c = get_conv(el_server, cid, include="transcript").json()
    assert c["status"] == "failed"
    assert c["transcript"][1]["content"] == ""


@pytest.mark.parametrize("mutation, field", [
    ("no_conversation_id", "data.conversation_id"),
    ("turn_without_role", "data.transcript[2].role"),
])
def test_only_structural_problems_are_400(el_server, mutation, field):
    cid = "conv_" + uid()
    event = json.loads(with_conversation_id("post_call_transcription_success.json", cid))
    if mutation == "no_conversation_id":
        del event["data"]["conversation_id"]
    else:
        del event["data"]["transcript"][2]["role"]
    r = post(el_server, json.dumps(event).encode())
    assert_error(r, 400, "VALIDATION_ERROR")
    assert field in error_fields(r)
    assert get_conv(el_server, cid).status_code == 404


def test_signed_body_that_is_not_json_is_400(el_server):
    r = post(el_server, b'{"type": "post_call_transcription", "data": {')
    assert_error(r, 400, "INVALID_JSON")


# ------------------------------------------------------------------ signatures
@pytest.mark.parametrize("case, words", [
    ("missing", "missing"),
    ("malformed", "malformed"),
    ("flipped_byte", "match"),
    ("wrong_secret", "match"),
    ("stale", "old"),
    ("future", "future"),
])
def test_bad_signatures_are_401_and_store_nothing(el_server, case, words):
    cid = "conv_" + uid()
    body = with_conversation_id("post_call_transcription_success.json", cid)
    sig = signature(body)
    send = body
    if case == "missing":
        sig = None
        r = post(el_server, send, secret=None)
    else:
        if case == "malformed":
            sig = "t=abc,v0=zz"
        elif case == "flipped_byte":
            i = len(body) // 2
            send = body[:i] + bytes([body[i] ^ 0x01]) + body[i + 1:]
        elif case == "wrong_secret":
            sig = signature(body, secret="wsec_not_ours")
        elif case == "stale":
            sig = signature(body, offset=-1860)
        elif case == "future":
            sig = signature(body, offset=400)
        r = post(el_server, send, sig=sig)
    err = assert_error(r, 401, "UNAUTHORIZED")
    assert words in err["message"].lower(), err
    assert get_conv(el_server, cid).status_code == 404


def test_signature_header_items_in_any_order_and_rotation(el_server):
    cid = "conv_" + uid()
    body = with_conversation_id("post_call_transcription_success.json", cid)
    t, v0 = signature(body).split(",")
    accepted(post(el_server, body, sig=f"{v0},{t}"), cid)
    cid2 = "conv_" + uid()
    body2 = with_conversation_id("post_call_transcription_success.json", cid2)
    accepted(post(el_server, body2, sig=signature(body2, secret=OTHER_SECRET)), cid2)


def test_tolerance_is_configurable(make_server):
    srv = make_server(env={"ELEVENLABS_WEBHOOK_SECRET": SECRET,
                           "ELEVENLABS_WEBHOOK_TOLERANCE_SECONDS": "60"})
    cid = "conv_" + uid()
    body = with_conversation_id("post_call_transcription_success.json", cid)
    assert post(srv, body, sig=signature(body, offset=-120)).status_code == 401
    accepted(post(srv, body, sig=signature(body, offset=-30)), cid)


def test_without_a_secret_the_bearer_key_is_required(make_server):
    srv = make_server()
    cid = "conv_" + uid()
    body = with_conversation_id("post_call_transcription_success.json", cid)
    r = post(srv, body, secret=None)
    assert_error(r, 401, "UNAUTHORIZED")
    assert r.headers.get("WWW-Authenticate") == "Bearer"
    r = post(srv, body, sig=signature(body), key=None)  # a signature is no key here
    assert_error(r, 401, "UNAUTHORIZED")
    assert get_conv(srv, cid).status_code == 404
    accepted(post(srv, body, secret=None, key=KEY1), cid)


# ------------------------------------------------------------------ other types
def test_call_initiation_failure_is_a_failed_conversation(el_server):
    cid = "conv_" + uid()
    body = with_conversation_id("call_initiation_failure_sip.json", cid)
    accepted(post(el_server, body), cid)
    c = get_conv(el_server, cid).json()
    assert c["status"] == "failed"
    assert c["failureReason"] == "busy"
    assert c["messageCount"] == 0
    assert c["agentId"] == json.loads(body)["data"]["agent_id"]
    full = get_conv(el_server, cid, include="transcript,events").json()
    assert full["transcript"] == []
    assert full["events"][0]["type"] == "call_initiation_failure"


def test_unknown_type_is_acknowledged_and_kept(el_server):
    cid = "conv_" + uid()
    event = {"type": "post_call_something_new", "event_timestamp": int(time.time()),
             "data": {"conversation_id": cid, "whatever": [1, {"a": None}]}}
    body = json.dumps(event).encode()
    accepted(post(el_server, body), cid)
    assert get_conv(el_server, cid).status_code == 404  # no conversation from it
    # It joins the history once the conversation exists.
    accepted(post(el_server, with_conversation_id("post_call_transcription_success.json", cid)),
             cid)
    types = [e["type"] for e in get_conv(el_server, cid, include="events").json()["events"]]
    assert types == ["post_call_something_new", "post_call_transcription"]
    # An unknown event without any conversation id is acknowledged too.
    r = post(el_server, json.dumps({"type": "x", "data": {}}).encode())
    assert r.status_code == 200, r.text
    assert r.json()["data"]["conversationId"] is None


@pytest.mark.parametrize("name", ["post_call_transcription_success.json",
                                  "call_initiation_failure_sip.json",
                                  "post_call_audio_small.json"])
def test_identical_redelivery_changes_nothing(el_server, name):
    cid = "conv_" + uid()
    body = with_conversation_id(name, cid)
    first = accepted(post(el_server, body), cid)
    before = get_conv(el_server, cid, include="events")
    again = accepted(post(el_server, body), cid)  # signed again, later: same bytes
    assert again == first
    after = get_conv(el_server, cid, include="events")
    assert after.status_code == before.status_code
    if before.status_code == 200:
        assert after.json() == before.json()


# ------------------------------------------------------------------ audio
def test_small_audio_event_served_and_kept_byte_for_byte(el_server):
    cid = "conv_" + uid()
    body = with_conversation_id("post_call_audio_small.json", cid)
    mp3 = base64.b64decode(json.loads(body)["data"]["full_audio"])
    accepted(post(el_server, body), cid)
    r = get_audio(el_server, cid)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "audio/mpeg"
    assert r.content == mp3
    r = get_audio(el_server, cid, headers={"Range": "bytes=10-99"})
    assert r.status_code == 206
    assert r.content == mp3[10:100]
    assert r.headers["Content-Range"] == f"bytes 10-99/{len(mp3)}"
    assert get_audio(el_server, cid, headers={"Range": "bytes=-5"}).content == mp3[-5:]
    r = get_audio(el_server, cid, headers={"Range": f"bytes={len(mp3)}-"})
    assert r.status_code == 416
    assert r.headers["Content-Range"] == f"bytes */{len(mp3)}"
    # Audio before the transcript: the audio is there, the conversation not yet.
    assert get_conv(el_server, cid).status_code == 404
    accepted(post(el_server, with_conversation_id("post_call_transcription_success.json", cid)),
             cid)
    full = get_conv(el_server, cid, include="events").json()
    assert full["conversationId"] == cid
    assert get_audio(el_server, cid).content == mp3  # the transcript did not touch it
    audio_events = [e for e in full["events"] if e["type"] == "post_call_audio"]
    assert len(audio_events) == 1 and "fullAudioOmitted" not in audio_events[0]
    assert body.rstrip(b"\n") in get_conv(el_server, cid, include="events").content


def test_audio_after_transcript_does_not_overwrite_it(el_server):
    cid = "conv_" + uid()
    accepted(post(el_server, with_conversation_id("post_call_transcription_success.json", cid)),
             cid)
    before = get_conv(el_server, cid, include="transcript").json()
    accepted(post(el_server, with_conversation_id("post_call_audio_small.json", cid)), cid)
    after = get_conv(el_server, cid, include="transcript").json()
    for k in ("transcript", "summary", "emailId", "accountId", "status", "messageCount"):
        assert after[k] == before[k]
    assert get_audio(el_server, cid).status_code == 200


def test_bad_base64_audio_is_400(el_server):
    cid = "conv_" + uid()
    event = {"type": "post_call_audio", "event_timestamp": int(time.time()),
             "data": {"agent_id": "a", "conversation_id": cid, "full_audio": "SUQz!!!!"}}
    r = post(el_server, json.dumps(event).encode())
    assert_error(r, 400, "VALIDATION_ERROR")
    assert "data.full_audio" in error_fields(r)
    assert get_audio(el_server, cid).status_code == 404


def test_audio_not_kept_when_disabled(make_server):
    srv = make_server(env={"ELEVENLABS_WEBHOOK_SECRET": SECRET, "ELEVENLABS_STORE_AUDIO": "false"})
    cid = "conv_" + uid()
    accepted(post(srv, with_conversation_id("post_call_audio_small.json", cid)), cid)
    assert get_audio(srv, cid).status_code == 404


def _vm_kib(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


def _chunks(parts, size=256 * 1024):
    for part in parts:
        for i in range(0, len(part), size):
            yield part[i:i + size]


def test_large_chunked_audio_streams_into_storage(make_server):
    # AddressSanitizer keeps freed memory in quarantine (256 MB by default), which would show
    # in the RSS; a small quarantine measures our memory, not its.
    srv = make_server(env={"ELEVENLABS_WEBHOOK_SECRET": SECRET,
                           "RATE_LIMIT_ELEVENLABS_PER_MINUTE": "1000",
                           "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:quarantine_size_mb=4"})
    n = 3
    mp3s = [os.urandom(50 * 1024 * 1024 // 5) + bytes([i]) * (40 * 1024 * 1024) for i in range(n)]
    cids = ["conv_" + uid() for _ in range(n)]
    bodies = []
    for cid, mp3 in zip(cids, mp3s):
        head = json.dumps({"type": "post_call_audio", "event_timestamp": int(time.time()),
                           "data": {"agent_id": "agent_x", "conversation_id": cid,
                                    "full_audio": ""}})[:-3].encode()  # up to the opening quote
        bodies.append([head, base64.b64encode(mp3), b'"}}'])
    total = sum(sum(len(p) for p in b) for b in bodies)
    pid = srv.proc.pid
    rss_before = _vm_kib(pid, "VmRSS")
    results = [None] * n

    def send(i):
        whole = b"".join(bodies[i])
        h = {"Content-Type": "application/json", "ElevenLabs-Signature": signature(whole)}
        del whole
        results[i] = requests.post(srv.url(PATH), data=_chunks(bodies[i]), headers=h, timeout=120)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(n):
        accepted(results[i], cids[i])
    grew_kib = _vm_kib(pid, "VmHWM") - rss_before
    # The bodies together are ~170 MB; holding even one whole would show.
    assert grew_kib * 1024 < total / 4, (grew_kib, total)
    for cid, mp3 in zip(cids, mp3s):
        r = get_audio(srv, cid, headers={"Range": "bytes=1000-1999999"})
        assert r.status_code == 206 and r.content == mp3[1000:2000000]
        r = srv.get("/api/v1/conversations/" + cid + "/audio", timeout=120)
        assert hashlib.sha256(r.content).digest() == hashlib.sha256(mp3).digest()


def test_body_limit_on_this_route(make_server):
    srv = make_server(env={"ELEVENLABS_WEBHOOK_SECRET": SECRET,
                           "ELEVENLABS_AUDIO_MAX_BYTES": str(64 * 1024)})
    cid = "conv_" + uid()
    body = json.dumps({"type": "post_call_audio", "data": {
        "conversation_id": cid, "full_audio": base64.b64encode(os.urandom(80 * 1024)).decode()}}
    ).encode()
    r = post(srv, body)
    assert_error(r, 413, "PAYLOAD_TOO_LARGE")
    assert str(64 * 1024) in r.json()["error"]["message"]
    assert get_audio(srv, cid).status_code == 404


# ------------------------------------------------------------------ rate limits
def test_signed_requests_limited_per_secret_not_per_ip(make_server):
    srv = make_server(env={"ELEVENLABS_WEBHOOK_SECRET": SECRET,
                           "RATE_LIMIT_WEBHOOK_PER_MINUTE": "2",
                           "RATE_LIMIT_ELEVENLABS_PER_MINUTE": "4"})
    codes = []
    for _ in range(5):
        cid = "conv_" + uid()
        codes.append(post(srv, with_conversation_id("call_initiation_failure_sip.json", cid))
                     .status_code)
    assert codes == [200, 200, 200, 200, 429], codes


def test_badly_signed_requests_count_per_ip(make_server):
    srv = make_server(env={"ELEVENLABS_WEBHOOK_SECRET": SECRET,
                           "RATE_LIMIT_WEBHOOK_PER_MINUTE": "2",
                           "RATE_LIMIT_ELEVENLABS_PER_MINUTE": "1000"})
    body = with_conversation_id("call_initiation_failure_sip.json", "conv_" + uid())
    codes = [post(srv, body, sig=signature(body, secret="wrong")).status_code for _ in range(3)]
    assert codes == [401, 401, 429], codes
    r = post(srv, body, sig="garbage")
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) >= 1
    # A validly signed delivery is not held back by the strangers on the same address.
    cid = "conv_" + uid()
    accepted(post(srv, with_conversation_id("call_initiation_failure_sip.json", cid)), cid)


def test_large_upload_earns_time_a_trickle_does_not(make_server):
    """REQUEST_TIMEOUT_SECONDS bounds how long a request may take to arrive; on this route a
    body that keeps coming (256 KiB per extra second) is not cut for being large, while a
    trickle still is."""
    srv = make_server(env={"ELEVENLABS_WEBHOOK_SECRET": SECRET, "REQUEST_TIMEOUT_SECONDS": "2"})
    cid = "conv_" + uid()
    mp3 = os.urandom(1536 * 1024)
    body = (b'{"type":"post_call_audio","data":{"conversation_id":"' + cid.encode()
            + b'","full_audio":"' + base64.b64encode(mp3) + b'"}}')

    def paced(data, size, pause):
        for i in range(0, len(data), size):
            yield data[i:i + size]
            time.sleep(pause)

    h = {"Content-Type": "application/json", "ElevenLabs-Signature": signature(body)}
    started = time.monotonic()
    r = requests.post(srv.url(PATH), data=paced(body, 128 * 1024, 0.25), headers=h, timeout=60)
    assert time.monotonic() - started > 3  # longer than REQUEST_TIMEOUT_SECONDS
    accepted(r, cid)
    assert get_audio(srv, cid).content == mp3

    cid2 = "conv_" + uid()
    body2 = body.replace(cid.encode(), cid2.encode())
    h = {"Content-Type": "application/json", "ElevenLabs-Signature": signature(body2)}
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(srv.url(PATH), data=paced(body2, 1024, 0.25), headers=h, timeout=60)
    assert get_audio(srv, cid2).status_code == 404
