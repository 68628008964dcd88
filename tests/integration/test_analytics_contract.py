"""Issue 11 read as a careful client or attacker would (a black-box contract pass over
analytics, exports, cursor pages, reports and /metrics), both backends.

Each test probes one promise of the issue's text (or the seed's) that the other modules do not
pin down from that side: the answer's shape and types, what a key bound to accounts can reach
through every read path, spreadsheet and line-splitting quirks of the exports, and how
/metrics reads its token. One server per backend for the module (METRICS_TOKEN set, ElevenLabs
signing on); every test uses its own accounts, so they do not interfere."""
import csv
import hashlib
import hmac
import io
import json
import time
from pathlib import Path

import pytest

from helpers import (KEY1, Server, assert_error, finish_server, make_conv, raw_http, uid)

ANALYTICS = "/api/v1/analytics"
EXPORT = "/api/v1/conversations/export"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "elevenlabs"
EL_SECRET = "wsec_57506b15b729457580a8ec8a16cf3b594534526df7cfdef57efafbed7ad50768"
TOKEN = "contract-metrics-" + "9c1e" * 8
WINDOW = {"from": "2024-01-01T00:00:00Z", "to": "2024-02-01T00:00:00Z"}


@pytest.fixture(scope="module")
def srv(backend, tmp_path_factory):
    s = Server(tmp_path_factory.mktemp(f"contract-{backend}"), backend=backend,
               env={"ELEVENLABS_WEBHOOK_SECRET": EL_SECRET, "METRICS_TOKEN": TOKEN})
    s.start()
    yield s
    finish_server(s)


def post(server, **overrides):
    body = make_conv(**overrides)
    r = server.post_conv(body)
    assert r.status_code == 200, r.text
    return body


def create_key(server, scopes, accounts=None):
    body = {"name": "contract-" + uid(), "scopes": scopes}
    if accounts:
        body["accounts"] = accounts
    r = server.request("POST", "/api/v1/keys", data=json.dumps(body),
                       headers={"Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    return r.json()["key"]


def el_post(server, event):
    body = json.dumps(event).encode()
    ts = int(time.time())
    mac = hmac.new(EL_SECRET.encode(), str(ts).encode() + b"." + body,
                   hashlib.sha256).hexdigest()
    r = server.request("POST", "/api/v1/webhook/elevenlabs", key=None, data=body,
                       headers={"Content-Type": "application/json",
                                "ElevenLabs-Signature": f"t={ts},v0={mac}"})
    assert r.status_code == 200, r.text
    return r


def el_call(server, account, status="done", outcome="success"):
    event = json.loads((FIXTURES / "post_call_transcription_success.json").read_bytes())
    d = event["data"]
    d["conversation_id"] = "conv_" + uid()
    d["status"] = status
    d["analysis"]["call_successful"] = outcome
    d["conversation_initiation_client_data"]["dynamic_variables"]["account_id"] = account
    el_post(server, event)
    return d


# ------------------------------------------------------------------ /metrics
def test_metrics_token_reads_as_api_keys_do(srv):
    """The token is a Bearer credential like an API key: the scheme in any case, blanks around
    the token are no part of it (a header value's trailing whitespace never is, RFC 9110 5.5);
    anything else, an empty token included, is refused."""
    def status(value):
        req = (f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: {value}\r\n"
               "Connection: close\r\n\r\n").encode()
        return raw_http(srv.port, req)[0]

    for ok in (f"Bearer {TOKEN}", f"bearer {TOKEN}", f"Bearer  {TOKEN}", f"Bearer {TOKEN} ",
               f"Bearer {TOKEN}\t", f"BEARER {TOKEN}  "):
        assert status(ok) == 200, repr(ok)
    for bad in ("Bearer", "Bearer ", f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x",
                f"Bearer x{TOKEN}", f"Basic {TOKEN}", TOKEN, f"Bearer {KEY1}"):
        assert status(bad) == 401, repr(bad)


# ------------------------------------------------------------------ exports
def test_ndjson_is_one_line_per_conversation_for_every_line_reader(srv):
    """U+2028, U+2029 and U+0085 are legal raw inside a JSON string, but Python's
    str.splitlines (and editors, log tools) end a line there: an NDJSON export read that way
    must still give one conversation per line, each equal to GET one."""
    acc = "acc-seps-" + uid()
    seps = "a\u2028b\u2029c\u0085d"
    sent = []
    for i in range(2):
        body = make_conv(accountId=acc, summary={"note": seps, seps: i})
        body["metadata"]["agentId"] = "agent\u2028" + str(i)
        body["transcript"][0]["content"] = seps
        assert srv.post_conv(body).status_code == 200
        sent.append(body)
    for include in (None, "transcript"):
        params = {"account_id": acc}
        if include:
            params["include"] = include
        r = srv.get(EXPORT, params=params)
        assert r.status_code == 200, r.text[:300]
        lines = r.text.splitlines()
        assert len(lines) == 2, lines
        for line in lines:
            got = json.loads(line)
            one = srv.get_conv(got["conversationId"], include=bool(include)).json()
            assert got == one
            assert got["agentId"].startswith("agent\u2028")
            if include:
                assert got["transcript"][0]["content"] == seps
                assert got["summary"]["note"] == seps
