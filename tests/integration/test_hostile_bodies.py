"""Hostile webhook bodies: bytes a careless or malicious client sends. Each gets a 4xx in our
JSON envelope (valid UTF-8), never a 5xx, and nothing is stored; edge timestamps are refused
or rendered consistently (startTime and endTime both present or both null)."""
import json

import pytest

from helpers import assert_error, make_conv, uid

WEBHOOK = "/api/v1/webhook/conversation"

# (raw body, expected status, expected code)
HOSTILE = [
    # defect 11: jansson's error text cut a UTF-8 character in half -> 500 "Out of memory"
    (b'{"a":"\\u0\xc3\xa9"}', 400, "INVALID_JSON"),
    (b'{"a":"\\\xc3\xa9"}', 400, "INVALID_JSON"),
    (b'{"a":"\\u12\xe2\x82\xac"}', 400, "INVALID_JSON"),
    (b'{"a":"\\\xf0\x9f\x98\x80"}', 400, "INVALID_JSON"),
    (b'{"\xc3\xa9\xc3\xa9":\xc3\xa9}', 400, "INVALID_JSON"),
    (b'{"a":"\xff\xfe"}', 400, "INVALID_JSON"),
    (b'{"a":"\xed\xa0\x80"}', 400, "INVALID_JSON"),  # UTF-8 encoded surrogate
    (b'\xef\xbb\xbf{}', 400, "INVALID_JSON"),  # byte order mark
    (b'{"a":"\\ud800"}', 400, "INVALID_JSON"),
    (b'{"a":1e999999}', 400, ("INVALID_JSON", "VALIDATION_ERROR")),
    (b'[' * 5000 + b']' * 5000, 400, ("INVALID_JSON", "VALIDATION_ERROR")),
    (b'{"a":' * 3000 + b'1' + b'}' * 3000, 400, ("INVALID_JSON", "VALIDATION_ERROR")),
    (b'\x00', 400, "INVALID_JSON"),
    (b'{}', 400, "VALIDATION_ERROR"),
]


@pytest.mark.parametrize("body,status,code", HOSTILE, ids=[repr(b[:16]) for b, _, _ in HOSTILE])
def test_hostile_body_answers_4xx_envelope(server, body, status, code):
    r = server.post_raw(body)
    # the whole answer is valid UTF-8 JSON, whatever bytes the error message quotes
    r.content.decode("utf-8")
    assert_error(r, status, code)
    assert r.headers.get("X-Request-Id")


@pytest.mark.parametrize("after", [b'"messageCount":2', b'"duration":300', b'"speaker":"user"'])
def test_raw_nul_byte_after_a_value_is_invalid_json(server, after):
    """jansson 2.14 skips a raw NUL right after a literal or number ('[1,null\\0,2]' decodes as
    [1,null,2]); fuzzing found it. Such a body is not JSON: refused, never stored."""
    cid = uid()
    body = json.dumps(make_conv(cid), separators=(",", ":")).encode()
    assert after in body
    r = server.post_raw(body.replace(after, after + b"\x00", 1))
    assert_error(r, 400, "INVALID_JSON")
    assert server.get_conv(cid).status_code == 404


def test_error_message_quoting_client_bytes_is_valid_utf8(server):
    r = server.post_raw(b'{"a":"\\u0\xc3\xa9"}')
    err = assert_error(r, 400, "INVALID_JSON")
    assert "not valid JSON" in err["message"]
    # the message still says where the problem is
    assert "line 1" in err["message"], err


def _post_with_timestamp(server, ts, duration=60):
    cid = uid()
    body = make_conv(cid)
    body["transcript"] = body["transcript"][:1]
    body["transcript"][0]["timestamp"] = ts
    body["metadata"]["duration"] = duration
    return cid, server.post_conv(body)


@pytest.mark.parametrize("ts", [
    "2024-01-15T10:30:60Z",        # a leap second is only ever 23:59:60 UTC
    "2024-01-15T23:59:60Z",        # ... on a month's last day
    "0000-01-01T00:30:00+01:00",   # year -1 in UTC
    "0000-01-01T00:00:00Z",        # year 0: outside 0001..9999
    "9999-12-31T23:30:00-01:00",   # year 10000 in UTC
])
def test_time_edge_refused(server, ts):
    cid, r = _post_with_timestamp(server, ts)
    err = assert_error(r, 400, "VALIDATION_ERROR")
    assert any(d["field"] == "transcript[0].timestamp" for d in err["details"]), err
    assert server.get_conv(cid).status_code == 404


def test_end_time_past_9999_refused(server):
    cid, r = _post_with_timestamp(server, "9999-12-31T23:00:00Z", duration=3600)
    err = assert_error(r, 400, "VALIDATION_ERROR")
    assert [d["field"] for d in err["details"]] == ["metadata.duration"], err
    assert server.get_conv(cid).status_code == 404


@pytest.mark.parametrize("ts,duration,start,end", [
    ("9999-12-31T23:00:00Z", 3599, "9999-12-31T23:00:00Z", "9999-12-31T23:59:59Z"),
    ("0001-01-01T00:30:00+00:30", 0, "0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z"),
    ("2016-12-31T15:59:60-08:00", 1, "2017-01-01T00:00:00Z", "2017-01-01T00:00:01Z"),
])
def test_time_edges_accepted_render_both_times(server, ts, duration, start, end):
    cid, r = _post_with_timestamp(server, ts, duration=duration)
    assert r.status_code == 200, r.text
    got = server.get_conv(cid).json()
    assert (got["startTime"], got["endTime"]) == (start, end), got
