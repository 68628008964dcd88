"""POST /api/v1/webhook/conversation: success shape, validation, body handling, redelivery and
lossless round-trips."""
import json
import re
from urllib.parse import quote

import pytest

from helpers import (DELETE, PROCESSED_AT_RE, SEED_EXAMPLE, Server, assert_error, error_fields,
                     finish_server, make_conv, mutate, uid)


def _assert_success(resp, conversation_id):
    assert resp.status_code == 200, resp.text[:500]
    body = resp.json()
    assert set(body) == {"success", "message", "data"}, body
    assert body["success"] is True
    assert body["message"] == "Conversation data received successfully"
    data = body["data"]
    assert set(data) == {"conversationId", "processedAt", "status", "webhookId"}, data
    assert data["conversationId"] == conversation_id
    assert data["status"] == "processed"
    assert PROCESSED_AT_RE.match(data["processedAt"]), data["processedAt"]
    assert isinstance(data["webhookId"], str) and data["webhookId"]
    return data


def _assert_rejected(server, body, field, status=400, code="VALIDATION_ERROR"):
    """The body is refused naming `field`, and nothing was stored under its conversationId."""
    r = server.post_conv(body)
    err = assert_error(r, status, code)
    assert field in error_fields(r), (field, err)
    cid = body.get("conversationId") if isinstance(body, dict) else None
    if isinstance(cid, str) and cid:
        assert server.get_conv(cid).status_code == 404, "rejected body was stored"
    return err


# ------------------------------------------------------------------ seed example
def test_seed_example_verbatim(server):
    r = server.post_raw(SEED_EXAMPLE)
    data = _assert_success(r, "conv_abc123")
    g = server.get_conv("conv_abc123")
    assert g.status_code == 200
    got = g.json()
    assert got["conversationId"] == "conv_abc123"
    assert got["emailId"] == "user@example.com"
    assert got["accountId"] == "acc123"
    assert got["status"] == "completed"
    assert got["startTime"] == "2024-01-15T10:30:00Z"
    assert got["endTime"] == "2024-01-15T10:35:00Z"
    assert got["duration"] == 300
    assert got["messageCount"] == 10
    assert got["processedAt"] == data["processedAt"]


# ------------------------------------------------------------------ validation: rejected
LONG_EMAIL = "a" * 321
REJECTED = [
    # (path, value, field expected in details)
    ("emailId", DELETE, "emailId"),
    ("emailId", None, "emailId"),
    ("emailId", 42, "emailId"),
    ("emailId", "", "emailId"),
    ("emailId", LONG_EMAIL, "emailId"),
    ("emailId", "é" * 161, "emailId"),          # 322 bytes, 161 characters
    ("emailId", "€" * 107, "emailId"),          # 321 bytes, 107 characters
    ("emailId", ["a@b.c"], "emailId"),
    ("accountId", DELETE, "accountId"),
    ("accountId", 123, "accountId"),
    ("accountId", "", "accountId"),
    ("accountId", "x" * 257, "accountId"),
    ("accountId", "ü" * 129, "accountId"),      # 258 bytes
    ("accountId", "acc\n123", "accountId"),
    ("accountId", "acc\u0000123", "accountId"),
    ("emailId", "user\t@example.com", "emailId"),
    ("emailId", "user\u001f@example.com", "emailId"),
    ("emailId", "user\u007f@example.com", "emailId"),
    ("emailId", "user\u0085@example.com", "emailId"),  # C1 control (NEL)
    ("conversationId", DELETE, "conversationId"),
    ("conversationId", 7, "conversationId"),
    ("conversationId", "", "conversationId"),
    ("conversationId", {"id": "x"}, "conversationId"),
    ("transcript", DELETE, "transcript"),
    ("transcript", None, "transcript"),
    ("transcript", "hello", "transcript"),
    ("transcript", {"0": {}}, "transcript"),
    ("transcript[0]", "not an object", "transcript[0]"),
    ("transcript[0].timestamp", DELETE, "transcript[0].timestamp"),
    ("transcript[0].timestamp", 1705314600, "transcript[0].timestamp"),
    ("transcript[0].timestamp", "2024-13-01T00:00:00Z", "transcript[0].timestamp"),
    ("transcript[0].timestamp", "2024-01-15 10:30:00", "transcript[0].timestamp"),
    ("transcript[0].timestamp", "yesterday", "transcript[0].timestamp"),
    ("transcript[0].timestamp", "2024-02-30T00:00:00Z", "transcript[0].timestamp"),
    ("transcript[0].timestamp", "2023-02-29T00:00:00Z", "transcript[0].timestamp"),
    ("transcript[0].timestamp", "2024-01-15T10:30:00", "transcript[0].timestamp"),  # no offset
    ("transcript[0].timestamp", "2024-01-15", "transcript[0].timestamp"),
    ("transcript[0].timestamp", "2024-01-15T24:30:00Z", "transcript[0].timestamp"),
    ("transcript[0].timestamp", "2024-01-15T10:60:00Z", "transcript[0].timestamp"),
    ("transcript[0].timestamp", "", "transcript[0].timestamp"),
    ("transcript[1].timestamp", "2024-01-15T10:31:00Zjunk", "transcript[1].timestamp"),
    ("transcript[0].speaker", DELETE, "transcript[0].speaker"),
    ("transcript[0].speaker", "bot", "transcript[0].speaker"),
    ("transcript[0].speaker", "User", "transcript[0].speaker"),
    ("transcript[0].speaker", "", "transcript[0].speaker"),
    ("transcript[1].speaker", 1, "transcript[1].speaker"),
    ("transcript[0].content", DELETE, "transcript[0].content"),
    ("transcript[0].content", 5, "transcript[0].content"),
    ("transcript[0].content", None, "transcript[0].content"),
    ("transcript[0].messageId", DELETE, "transcript[0].messageId"),
    ("transcript[0].messageId", 123, "transcript[0].messageId"),
    ("transcript[0].metadata", "x", "transcript[0].metadata"),
    ("transcript[0].metadata", [1, 2], "transcript[0].metadata"),
    ("metadata", DELETE, "metadata"),
    ("metadata", "web", "metadata"),
    ("metadata", [], "metadata"),
    ("metadata.agentId", DELETE, "metadata.agentId"),
    ("metadata.agentId", 5, "metadata.agentId"),
    ("metadata.duration", DELETE, "metadata.duration"),
    ("metadata.duration", -1, "metadata.duration"),
    ("metadata.duration", 1.5, "metadata.duration"),
    ("metadata.duration", "300", "metadata.duration"),
    ("metadata.duration", True, "metadata.duration"),
    ("metadata.duration", None, "metadata.duration"),
    ("metadata.messageCount", DELETE, "metadata.messageCount"),
    ("metadata.messageCount", -3, "metadata.messageCount"),
    ("metadata.messageCount", "10", "metadata.messageCount"),
    ("metadata.messageCount", 2.5, "metadata.messageCount"),
    ("metadata.platform", DELETE, "metadata.platform"),
    ("metadata.platform", 1, "metadata.platform"),
    ("metadata.userAgent", DELETE, "metadata.userAgent"),
    ("metadata.userAgent", False, "metadata.userAgent"),
    ("metadata.sessionId", 456, "metadata.sessionId"),
    ("summary", "a summary", "summary"),
    ("summary", 5, "summary"),
    ("summary", ["a"], "summary"),
]


@pytest.mark.parametrize("path,value,field", REJECTED,
                         ids=[f"{p}={'<missing>' if v is DELETE else repr(v)[:30]}"
                              for p, v, _ in REJECTED])
def test_invalid_field_rejected(server, path, value, field):
    _assert_rejected(server, mutate(make_conv(), path, value), field)


def test_conversation_id_too_long_and_control_chars(server):
    base = uid()
    for bad in [(base + "x" * 300)[:257], base + "\n", base + "\u0001", "ж" * 129]:
        r = server.post_conv(make_conv(bad))
        assert_error(r, 400, "VALIDATION_ERROR")
        assert "conversationId" in error_fields(r)


def test_several_bad_fields_all_listed(server):
    body = make_conv()
    del body["emailId"]
    body["transcript"][0]["speaker"] = "robot"
    body["transcript"][1]["timestamp"] = "yesterday"
    body["metadata"]["duration"] = -1
    body["metadata"]["platform"] = 3
    r = server.post_conv(body)
    assert_error(r, 400, "VALIDATION_ERROR")
    fields = set(error_fields(r))
    assert {"emailId", "transcript[0].speaker", "transcript[1].timestamp", "metadata.duration",
            "metadata.platform"} <= fields, fields
    assert server.get_conv(body["conversationId"]).status_code == 404


def test_transcript_over_10000_entries_rejected(server):
    entry = {"timestamp": "2024-01-15T10:30:00Z", "speaker": "user", "content": "hi",
             "messageId": "m"}
    body = make_conv(transcript=[entry] * 10001)
    r = server.post_conv(body)
    assert_error(r, 400, "VALIDATION_ERROR")
    assert any(f.startswith("transcript") for f in error_fields(r)), error_fields(r)
    assert server.get_conv(body["conversationId"]).status_code == 404


def test_transcript_of_10000_entries_accepted(server):
    entry = {"timestamp": "2024-01-15T10:30:00Z", "speaker": "agent", "content": "ok",
             "messageId": "m"}
    body = make_conv(transcript=[entry] * 10000)
    _assert_success(server.post_conv(body), body["conversationId"])
    g = server.get_conv(body["conversationId"], include=True)
    assert g.status_code == 200 and len(g.json()["transcript"]) == 10000


# ------------------------------------------------------------------ validation: accepted
def _suffix_id(prefix_len_bytes, ch="x"):
    base = uid()
    return base + ch * ((prefix_len_bytes - len(base)) // len(ch.encode()))


ACCEPTED = [
    ("emailId", "a" * 320),
    ("emailId", "é" * 160),                  # exactly 320 bytes
    ("emailId", "😀" * 80),                   # 320 bytes of 4-byte characters
    ("emailId", "Ünïcödé user <u@example.com>"),
    ("accountId", "x" * 256),
    ("accountId", "acc with spaces & symbols #?%/"),
    ("transcript", []),
    ("transcript[0].timestamp", "2024-01-15T10:30:00.123Z"),
    ("transcript[0].timestamp", "2024-01-15T10:30:00.123456789+05:30"),
    ("transcript[0].timestamp", "2024-01-15T10:30:00-08:00"),
    ("transcript[0].timestamp", "2024-02-29T23:59:59Z"),
    ("transcript[0].timestamp", "1999-12-31T23:59:59+00:00"),
    ("transcript[0].content", ""),
    # JSON allows \u0000 in strings; content is free text from another system, keep it.
    ("transcript[0].content", "before\u0000after"),
    ("transcript[0].metadata", {"confidence": 0.93, "lang": "en"}),
    ("metadata.sessionId", None),
    ("metadata.sessionId", DELETE),
    ("metadata.duration", 0),
    ("metadata.messageCount", 0),
    ("summary", {"text": "User needed help", "sentiment": "positive", "topics": ["billing"]}),
    ("summary", {}),
    ("summary", None),
    ("unknownTopLevel", {"nested": [1, 2, 3]}),
    ("metadata.unknownField", "kept"),
    ("transcript[0].unknownField", {"x": 1}),
]


@pytest.mark.parametrize("path,value", ACCEPTED,
                         ids=[f"{p}={'<missing>' if v is DELETE else repr(v)[:30]}"
                              for p, v in ACCEPTED])
def test_valid_variant_accepted(server, path, value):
    body = mutate(make_conv(), path, value)
    _assert_success(server.post_conv(body), body["conversationId"])
    g = server.get_conv(body["conversationId"], include=True)
    assert g.status_code == 200, g.text
    got = g.json()
    assert got["emailId"] == body["emailId"]
    assert got["accountId"] == body["accountId"]
    assert got["transcript"] == body["transcript"]
    assert got["metadata"] == body["metadata"]
    assert got["summary"] == body.get("summary")


def test_empty_transcript_has_null_times(server):
    body = make_conv(transcript=[])
    _assert_success(server.post_conv(body), body["conversationId"])
    got = server.get_conv(body["conversationId"]).json()
    assert got["startTime"] is None and got["endTime"] is None
    assert got["duration"] == 300 and got["status"] == "completed"


ODD_IDS = [
    "with space",
    "hash#question?amp&eq=",
    "percent%20sign%",
    "%41literal",               # must not be decoded twice
    "plus+sign",
    "slash/in/id",
    "unicodé-会話-😀",
    "quote\"and'apos",
    "semi;colon,comma",
    "tilde~star*paren()",
]


@pytest.mark.parametrize("suffix", ODD_IDS)
def test_unusual_ids_accepted_and_retrievable(server, suffix):
    cid = f"{uid()[:8]}-{suffix}"
    body = make_conv(cid)
    _assert_success(server.post_conv(body), cid)
    r = server.get_conv(cid)
    assert r.status_code == 200, (quote(cid, safe=""), r.text)
    assert r.json()["conversationId"] == cid


def test_ids_with_multibyte_chars_count_bytes_not_characters(server):
    cid = _suffix_id(256, "ж")  # ≤256 bytes
    assert len(cid.encode()) <= 256
    _assert_success(server.post_conv(make_conv(cid)), cid)
    assert server.get_conv(cid).json()["conversationId"] == cid


# ------------------------------------------------------------------ body handling
NOT_OBJECT = ["[]", "[{\"emailId\": \"a\"}]", "\"just a string\"", "42", "null", "true"]


@pytest.mark.parametrize("raw", NOT_OBJECT)
def test_body_not_an_object(server, raw):
    r = server.post_raw(raw)
    assert_error(r, 400, "VALIDATION_ERROR")
    assert "" in error_fields(r)


BAD_JSON = [
    ("truncated", b'{"emailId": "a@b.c", '),
    ("trailing garbage", json.dumps(make_conv()).encode() + b" xyz"),
    ("single quotes", b"{'emailId': 'a'}"),
    ("trailing comma", b'{"emailId": "a",}'),
    ("bare word", b"hello"),
    ("two documents", b"{} {}"),
]


@pytest.mark.parametrize("name,raw", BAD_JSON, ids=[n for n, _ in BAD_JSON])
def test_invalid_json(server, name, raw):
    assert_error(server.post_raw(raw), 400, "INVALID_JSON")


def test_empty_body(server):
    assert_error(server.post_raw(b""), 400, ("INVALID_JSON", "VALIDATION_ERROR"))


def test_duplicate_keys_rejected(server):
    body = make_conv()
    text = json.dumps(body)
    top = text.replace('"emailId": "user@example.com"',
                       '"emailId": "user@example.com", "emailId": "other@example.com"', 1)
    nested = text.replace('"duration": 300', '"duration": 300, "duration": 5', 1)
    for raw in (top, nested):
        assert raw != text
        assert_error(server.post_raw(raw), 400, ("INVALID_JSON", "VALIDATION_ERROR"))
    assert server.get_conv(body["conversationId"]).status_code == 404


def test_invalid_utf8_rejected(server):
    body = make_conv()
    raw = json.dumps(body).encode().replace(b"Hello, I need help", b"Hello \xff\xfe help", 1)
    assert b"\xff" in raw
    assert_error(server.post_raw(raw), 400, ("INVALID_JSON", "VALIDATION_ERROR"))
    raw = json.dumps(body).encode().replace(b"user@example.com", b"user\xc3@example.com", 1)
    assert_error(server.post_raw(raw), 400, ("INVALID_JSON", "VALIDATION_ERROR"))
    assert server.get_conv(body["conversationId"]).status_code == 404


@pytest.mark.parametrize("ctype", [None, "text/plain", "application/x-www-form-urlencoded",
                                   "application/jsonx", "multipart/form-data; boundary=x"])
def test_unsupported_media_type(server, ctype):
    body = make_conv()
    r = server.post_conv(body, content_type=ctype)
    assert_error(r, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert server.get_conv(body["conversationId"]).status_code == 404


@pytest.mark.parametrize("ctype", ["application/json; charset=utf-8", "application/json;charset=UTF-8",
                                   "Application/JSON"])
def test_json_content_type_variants_accepted(server, ctype):
    body = make_conv()
    _assert_success(server.post_conv(body, content_type=ctype), body["conversationId"])


# ------------------------------------------------------------------ body size limit
@pytest.fixture(scope="module")
def small_body_server(backend, tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("smallbody"), backend=backend,
                 env={"MAX_BODY_BYTES": "10000"})
    srv.start()
    yield srv
    finish_server(srv)


def _padded(total_bytes):
    body = make_conv()
    base = len(json.dumps(body).encode())
    body["metadata"]["padding"] = "p" * (total_bytes - base - len(', "padding": ""'))
    raw = json.dumps(body).encode()
    assert len(raw) == total_bytes, len(raw)
    return body, raw


def test_body_at_limit_accepted(small_body_server):
    body, raw = _padded(10000)
    _assert_success(small_body_server.post_raw(raw), body["conversationId"])


def test_body_over_limit_content_length(small_body_server):
    body, raw = _padded(10001)
    assert_error(small_body_server.post_raw(raw), 413, "PAYLOAD_TOO_LARGE")
    body, raw = _padded(60000)
    assert_error(small_body_server.post_raw(raw), 413, "PAYLOAD_TOO_LARGE")
    assert small_body_server.get_conv(body["conversationId"]).status_code == 404


def test_body_over_limit_chunked(small_body_server):
    body, raw = _padded(30000)

    def chunks():
        for i in range(0, len(raw), 4000):
            yield raw[i:i + 4000]

    r = small_body_server.post_raw(chunks())
    assert r.request.headers.get("Transfer-Encoding") == "chunked"
    assert_error(r, 413, "PAYLOAD_TOO_LARGE")
    assert small_body_server.get_conv(body["conversationId"]).status_code == 404


def test_small_chunked_body_accepted(small_body_server):
    body = make_conv()
    raw = json.dumps(body).encode()
    r = small_body_server.post_raw(iter([raw[:50], raw[50:]]))
    assert r.request.headers.get("Transfer-Encoding") == "chunked"
    _assert_success(r, body["conversationId"])


# ------------------------------------------------------------------ redelivery
def test_redelivery_byte_identical_is_idempotent(server):
    body = make_conv(emailId=f"redeliver-{uid()}@example.com")
    raw = json.dumps(body)
    first = _assert_success(server.post_raw(raw), body["conversationId"])
    second = _assert_success(server.post_raw(raw), body["conversationId"])
    assert second["webhookId"] == first["webhookId"]
    assert second["processedAt"] == first["processedAt"]
    got = server.get_conv(body["conversationId"]).json()
    assert got["processedAt"] == first["processedAt"]
    lst = server.list_convs(email_id=body["emailId"]).json()
    assert lst["pagination"]["total"] == 1


def test_redelivery_with_changed_body_becomes_current(server):
    email = f"changed-{uid()}@example.com"
    body = make_conv(emailId=email, accountId="acc-old")
    first = _assert_success(server.post_conv(body), body["conversationId"])
    changed = mutate(mutate(body, "accountId", "acc-new"), "metadata.duration", 600)
    changed["transcript"].append({"timestamp": "2024-01-15T10:39:00Z", "speaker": "user",
                                  "content": "one more thing", "messageId": "msg_3"})
    second = _assert_success(server.post_conv(changed), body["conversationId"])
    assert second["webhookId"] != first["webhookId"]
    g = server.get_conv(body["conversationId"], include=True).json()
    assert g["accountId"] == "acc-new"
    assert g["duration"] == 600
    assert g["endTime"] == "2024-01-15T10:40:00Z"
    assert g["transcript"] == changed["transcript"]
    lst = server.list_convs(email_id=email).json()
    assert lst["pagination"]["total"] == 1
    assert [c["conversationId"] for c in lst["conversations"]] == [body["conversationId"]]
    assert lst["conversations"][0]["accountId"] == "acc-new"
    assert server.list_convs(email_id=email, account_id="acc-old").json()["pagination"]["total"] == 0
    # Going back to the first body is again a change, not a replay of an old answer.
    third = _assert_success(server.post_conv(body), body["conversationId"])
    assert third["webhookId"] not in (first["webhookId"], second["webhookId"])
    assert server.get_conv(body["conversationId"]).json()["accountId"] == "acc-old"


# ------------------------------------------------------------------ lossless round trips
def test_unicode_and_escapes_round_trip(server):
    tricky = [
        "emoji 😀👍🏽 and CJK 会話 and RTL שלום",
        'quotes " and \' and backslash \\ and slash /',
        "newline\nand tab\tand carriage\rreturn",
        "escaped nul-free controls \u0001\u001f and bell \u0007",
        "\u00e9\u00e8 combining e\u0301 and zero-width \u200b joiner",
        "surrogate pair from escapes: \U0001F600",
        "</script><script>alert(1)</script>",
        "",
    ]
    body = make_conv()
    body["transcript"] = [
        {"timestamp": "2024-01-15T10:30:%02dZ" % i, "speaker": "user" if i % 2 else "agent",
         "content": c, "messageId": f"m{i}", "metadata": {"echo": c}}
        for i, c in enumerate(tricky)
    ]
    body["metadata"]["userAgent"] = "Mozilla/5.0 \"quoted\" \\ 😀"
    body["summary"] = {"text": tricky[0], "nested": {"list": tricky[1:3]}}
    # Send with \u escapes for non-ASCII (json.dumps default) - the server must decode them.
    raw = json.dumps(body, ensure_ascii=True)
    assert "\\ud83d\\ude00" in raw
    _assert_success(server.post_raw(raw), body["conversationId"])
    got = server.get_conv(body["conversationId"], include=True).json()
    assert got["transcript"] == body["transcript"]
    assert got["metadata"] == body["metadata"]
    assert got["summary"] == body["summary"]

    # And the same content sent as raw UTF-8.
    body2 = dict(body, conversationId=f"conv_{uid()}")
    _assert_success(server.post_raw(json.dumps(body2, ensure_ascii=False)), body2["conversationId"])
    got2 = server.get_conv(body2["conversationId"], include=True).json()
    assert got2["transcript"] == body["transcript"]


def test_numbers_in_unknown_fields_round_trip(server):
    body = make_conv()
    raw = json.dumps(body)[:-1] + ', "extraNumbers": 1}'
    raw = raw.replace('"duration": 300,',
                      '"duration": 300, "score": 0.1, "ratio": 3.14159, "tiny": 1e-7, '
                      '"big": 9007199254740993, "neg": -0.5,', 1)
    raw = raw.replace('"content": "Hello, I need help",',
                      '"content": "Hello, I need help", "metadata": {"confidence": 0.1},', 1)
    _assert_success(server.post_raw(raw), body["conversationId"])
    r = server.get_conv(body["conversationId"], include=True)
    got = r.json()
    assert got["metadata"]["score"] == 0.1
    assert got["metadata"]["ratio"] == 3.14159
    assert got["metadata"]["tiny"] == 1e-7
    assert got["metadata"]["big"] == 9007199254740993
    assert got["metadata"]["neg"] == -0.5
    assert got["transcript"][0]["metadata"] == {"confidence": 0.1}
    # 0.1 must come back written as 0.1, not as 0.1000000000000000055511151231257827
    assert re.search(r'"score":\s*0\.1[,}\s]', r.text), r.text
    assert re.search(r'"confidence":\s*0\.1[,}\s]', r.text), r.text
    assert "0.10000" not in r.text


def test_unknown_fields_kept_in_nested_objects(server):
    body = make_conv(extraTop={"a": 1})
    body["metadata"]["customerTier"] = "gold"
    body["metadata"]["tags"] = ["a", "b"]
    body["transcript"][1]["sentiment"] = {"score": -1, "label": "neg"}
    _assert_success(server.post_conv(body), body["conversationId"])
    got = server.get_conv(body["conversationId"], include=True).json()
    assert got["metadata"]["customerTier"] == "gold"
    assert got["metadata"]["tags"] == ["a", "b"]
    assert got["transcript"][1]["sentiment"] == {"score": -1, "label": "neg"}


def test_huge_numbers_in_unknown_fields_kept(server):
    """A valid JSON number outside int64/double range in a field the service does not use must
    not lose the conversation."""
    body = make_conv()
    raw = json.dumps(body).replace('"duration": 300,',
                                   '"duration": 300, "externalRef": 123456789012345678901234567890,', 1)
    r = server.post_raw(raw)
    _assert_success(r, body["conversationId"])
    g = server.get_conv(body["conversationId"], include=True)
    assert g.json()["metadata"]["externalRef"] == 123456789012345678901234567890
