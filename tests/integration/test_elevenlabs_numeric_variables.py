"""POST /api/v1/webhook/elevenlabs: ElevenLabs dynamic variables may be numbers. An agent whose
account_id variable has type number sends "account_id": 12345; the conversation must be
stored with accountId "12345" and found by that account, never lose it as null. Both
backends."""
import hashlib
import hmac
import json
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from helpers import Server, finish_server, uid

FIXTURE = (Path(__file__).resolve().parents[1] / "fixtures" / "elevenlabs" /
           "post_call_transcription_success.json")
PATH = "/api/v1/webhook/elevenlabs"
SECRET = "wsec_review2_numeric_variables_0123456789abcdef"


@pytest.fixture(scope="module")
def el_server(backend, tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp(f"elnum-{backend}"), backend=backend,
                 env={"ELEVENLABS_WEBHOOK_SECRET": SECRET})
    srv.start()
    yield srv
    finish_server(srv)


def post_signed(server, body):
    t = int(time.time())
    mac = hmac.new(SECRET.encode(), str(t).encode() + b"." + body, hashlib.sha256).hexdigest()
    return server.request("POST", PATH, key=None, data=body,
                          headers={"Content-Type": "application/json",
                                   "ElevenLabs-Signature": f"t={t},v0={mac}"})


def test_integer_account_variable_is_the_account(el_server):
    cid = "conv_" + uid()
    account = int(time.time() * 1000) % 10**12  # unique per run: the list below sees only ours
    event = json.loads(FIXTURE.read_bytes())
    event["data"]["conversation_id"] = cid
    event["data"]["conversation_initiation_client_data"]["dynamic_variables"]["account_id"] = account
    r = post_signed(el_server, json.dumps(event).encode())
    assert r.status_code == 200, r.text[:500]
    c = el_server.get("/api/v1/conversations/" + quote(cid, safe="")).json()
    assert c["accountId"] == str(account)
    listed = el_server.get(f"/api/v1/conversations?account_id={account}")
    assert listed.status_code == 200, listed.text[:500]
    assert [x["conversationId"] for x in listed.json()["conversations"]] == [cid]
