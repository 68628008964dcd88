"""Scoped API keys kept as data (gsr_<id>_<secret>): `gensendrep keys`, /api/v1/keys, scopes on
every route (403 FORBIDDEN without the scope), account-bound keys (another account's
conversation is 404, lists filtered), expiry and revocation (on every instance within a second),
malformed keys, and API_SECRET_KEY keys unchanged."""
import json
import re
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from helpers import KEY1, assert_error, error_fields, make_conv, run_binary, uid

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "elevenlabs"
KEY_RE = re.compile(r"^gsr_[0-9a-f]{16}_[0-9a-f]{64}$")


def cli(server, *args):
    """Runs `gensendrep keys ...` against the server's database."""
    return run_binary(["keys", *args], cwd=server.workdir,
                      env_overrides={"DATABASE_URL": server.database_url}, timeout=30)


def cli_create(server, *args):
    r = cli(server, "create", *args)
    assert r.returncode == 0, r.stderr
    key = r.stdout.strip()
    assert KEY_RE.match(key), r.stdout
    return key


def key_id(key):
    return key.split("_")[1]


def api_create(server, body, key=KEY1):
    return server.request("POST", "/api/v1/keys", key=key, data=json.dumps(body),
                          headers={"Content-Type": "application/json"})


def post_conv(server, key, account="acc123"):
    body = make_conv(accountId=account)
    return body["conversationId"], server.post_conv(body, key=key)


def ids(resp):
    assert resp.status_code == 200, resp.text
    return {c["conversationId"] for c in resp.json()["conversations"]}


def eventually(pred, timeout=5.0):
    end = time.monotonic() + timeout
    while True:
        if pred():
            return time.monotonic()
        if time.monotonic() > end:
            return None
        time.sleep(0.05)


# ------------------------------------------------------------------ CLI
def test_cli_create_list_revoke(server):
    name = "cli-" + uid()
    key = cli_create(server, "--name", name, "--scope", "read,delete", "--account", "acc-a",
                     "--account", "acc-b", "--expires", "2099-01-01T00:00:00Z")
    assert server.list_convs(key=key).status_code == 200
    out = cli(server, "list")
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stdout.splitlines() if name in ln)
    assert line.startswith(key_id(key))
    assert "scopes=read,delete" in line and "accounts=acc-a,acc-b" in line
    assert "expires=2099-01-01T00:00:00Z" in line and "created=" in line and "last_used=" in line
    assert key.split("_")[2] not in out.stdout + out.stderr  # never the secret
    r = cli(server, "revoke", key_id(key))
    assert r.returncode == 0, r.stderr
    assert eventually(lambda: server.list_convs(key=key).status_code == 401, 3)
    assert cli(server, "revoke", "0123456789abcdef").returncode == 1


def test_cli_refuses_bad_options(server):
    for args in (["--scope", "read"], ["--name", "x"], ["--name", "x", "--scope", "reader"],
                 ["--name", "x", "--scope", "read", "--expires", "tomorrow"],
                 ["--name", "", "--scope", "read"]):
        r = cli(server, "create", *args)
        assert r.returncode == 2, (args, r.stdout)
        assert r.stdout == ""


# ------------------------------------------------------------------ API
def test_api_create_list_delete_admin_only(server):
    admin = cli_create(server, "--name", "admin-" + uid(), "--scope", "admin")
    reader = cli_create(server, "--name", "reader-" + uid(), "--scope", "read")
    body = {"name": "made-" + uid(), "scopes": ["read"], "accounts": ["acc-x"],
            "expiresAt": "2099-06-01T12:00:00Z"}
    assert_error(api_create(server, body, key=reader), 403, "FORBIDDEN")
    r = api_create(server, body, key=admin)
    assert r.status_code == 201, r.text
    made = r.json()
    assert set(made) >= {"id", "key", "name", "scopes", "accounts", "expiresAt"}
    assert made["name"] == body["name"] and made["scopes"] == ["read"]
    assert made["accounts"] == ["acc-x"] and made["expiresAt"] == "2099-06-01T12:00:00Z"
    assert KEY_RE.match(made["key"]) and key_id(made["key"]) == made["id"]
    assert server.list_convs(key=made["key"]).status_code == 200
    # API_SECRET_KEY keys hold every scope, admin included
    assert api_create(server, {"name": "m", "scopes": ["ingest"]}).status_code == 201
    listed = server.get("/api/v1/keys", key=admin)
    assert listed.status_code == 200
    text = listed.text
    assert made["key"] not in text and made["key"].split("_")[2] not in text
    entry = next(k for k in listed.json()["data"] if k["id"] == made["id"])
    assert "key" not in entry and entry["name"] == body["name"]
    assert set(entry) >= {"id", "name", "scopes", "accounts", "createdAt", "expiresAt",
                          "lastUsedAt"}
    assert_error(server.get("/api/v1/keys", key=reader), 403, "FORBIDDEN")
    assert_error(server.request("DELETE", "/api/v1/keys/" + made["id"], key=reader), 403,
                 "FORBIDDEN")
    r = server.request("DELETE", "/api/v1/keys/" + made["id"], key=admin)
    assert r.status_code == 204, r.text
    assert eventually(lambda: server.list_convs(key=made["key"]).status_code == 401, 3)
    assert_error(server.request("DELETE", "/api/v1/keys/0123456789abcdef", key=admin), 404,
                 "NOT_FOUND")
    assert_error(server.request("DELETE", "/api/v1/keys/nope", key=admin), 404, "NOT_FOUND")


def test_api_create_validation_names_fields(server):
    r = api_create(server, {"scopes": ["read", "write"], "accounts": ["ok", 7, ""],
                            "expiresAt": "soon"})
    assert_error(r, 400, "VALIDATION_ERROR")
    fields = {d["field"] for d in r.json()["error"]["details"]}
    assert fields == {"name", "scopes[1]", "accounts[1]", "accounts[2]", "expiresAt"}
    assert_error(api_create(server, {"name": "x", "scopes": []}), 400, "VALIDATION_ERROR")
    assert_error(api_create(server, {"name": "x", "scopes": ["read"],
                                     "accounts": [f"a{i}" for i in range(17)]}), 400,
                 "VALIDATION_ERROR")
    r = server.request("POST", "/api/v1/keys", data="[", headers={"Content-Type":
                                                                 "application/json"})
    assert "line 1" in assert_error(r, 400, "INVALID_JSON")["message"]
    r = server.request("POST", "/api/v1/keys", data='{"name": "a", "name": "b"}',
                       headers={"Content-Type": "application/json"})
    assert "duplicate object key" in assert_error(r, 400, "INVALID_JSON")["message"]
    r = server.request("POST", "/api/v1/keys", data="null",
                       headers={"Content-Type": "application/json"})
    assert "must be a JSON object" in assert_error(r, 400, "INVALID_JSON")["message"]


# ------------------------------------------------------------------ scopes
def test_read_key_cannot_post_and_ingest_key_cannot_read(server):
    reader = cli_create(server, "--name", "r", "--scope", "read")
    ingest = cli_create(server, "--name", "i", "--scope", "ingest")
    cid, r = post_conv(server, reader)
    assert_error(r, 403, "FORBIDDEN")
    assert server.get_conv(cid).status_code == 404
    cid, r = post_conv(server, ingest)
    assert r.status_code == 200, r.text
    for path in ("/api/v1/conversations", "/api/v1/conversations/" + cid,
                 "/api/v1/conversations/" + cid + "?include=events",
                 "/api/v1/conversations/" + cid + "/audio", "/api/v1/keys"):
        assert_error(server.get(path, key=ingest), 403, "FORBIDDEN")
    assert server.get_conv(cid, key=reader).status_code == 200
    assert_error(api_create(server, {"name": "x", "scopes": ["read"]}, key=ingest), 403,
                 "FORBIDDEN")


def test_delete_scope_only_deletes(server):
    deleter = cli_create(server, "--name", "d", "--scope", "delete")
    cid, r = post_conv(server, KEY1)
    assert r.status_code == 200
    assert_error(post_conv(server, deleter)[1], 403, "FORBIDDEN")
    for path in ("/api/v1/conversations", "/api/v1/conversations/" + cid, "/api/v1/keys"):
        assert_error(server.get(path, key=deleter), 403, "FORBIDDEN")


def test_elevenlabs_bearer_fallback_needs_ingest(server):
    ingest = cli_create(server, "--name", "i", "--scope", "ingest")
    reader = cli_create(server, "--name", "r", "--scope", "read")
    raw = (FIXTURES / "post_call_transcription_success.json").read_bytes()
    old = json.loads(raw)["data"]["conversation_id"].encode()

    def post(key):
        cid = "conv_" + uid()
        return cid, server.request("POST", "/api/v1/webhook/elevenlabs", key=key,
                                   data=raw.replace(old, cid.encode()),
                                   headers={"Content-Type": "application/json"})

    cid, r = post(reader)
    assert_error(r, 403, "FORBIDDEN")
    cid, r = post(ingest)
    assert r.status_code == 200, r.text
    assert server.get_conv(cid).status_code == 200
    cid, r = post("gsr_0123456789abcdef_" + "0" * 64)
    assert_error(r, 401, "UNAUTHORIZED")


# ------------------------------------------------------------------ accounts
def test_account_bound_key_sees_only_its_accounts(server):
    acc_a, acc_b = "acc-a-" + uid(), "acc-b-" + uid()
    a1, r = post_conv(server, KEY1, acc_a)
    assert r.status_code == 200
    b1, r = post_conv(server, KEY1, acc_b)
    assert r.status_code == 200
    key = cli_create(server, "--name", "bound", "--scope", "read", "--account", acc_a)
    assert server.get_conv(a1, key=key).status_code == 200
    for path in ("/api/v1/conversations/" + quote(b1),
                 "/api/v1/conversations/" + quote(b1) + "?include=events",
                 "/api/v1/conversations/" + quote(b1) + "/audio"):
        assert_error(server.get(path, key=key), 404, "NOT_FOUND")
    assert_error(server.get("/api/v1/conversations/nope-" + uid(), key=key), 404, "NOT_FOUND")
    listed = server.list_convs(key=key, limit=100)
    assert a1 in ids(listed) and b1 not in ids(listed)
    assert all(c["accountId"] == acc_a for c in listed.json()["conversations"])
    assert listed.json()["pagination"]["total"] == 1
    r = server.list_convs(key=key, account_id=acc_b)
    assert ids(r) == set() and r.json()["pagination"]["total"] == 0
    assert ids(server.list_convs(key=key, account_id=acc_a)) == {a1}
    # the same key unbound sees both
    both = api_create(server, {"name": "all", "scopes": ["read"]}).json()["key"]
    assert {a1, b1} <= ids(server.list_convs(key=both, limit=100))


# ------------------------------------------------------------------ expiry, revocation
def test_expired_key_is_refused(server):
    past = cli_create(server, "--name", "old", "--scope", "read", "--expires",
                      "2001-01-01T00:00:00Z")
    r = server.list_convs(key=past)
    assert_error(r, 401, "UNAUTHORIZED")
    assert r.headers.get("WWW-Authenticate") == "Bearer"
    soon = time.time() + 2
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(soon + 1))
    key = cli_create(server, "--name", "soon", "--scope", "read", "--expires", stamp)
    assert server.list_convs(key=key).status_code == 200
    assert eventually(lambda: server.list_convs(key=key).status_code == 401, 8)


def test_revocation_reaches_a_second_instance_within_a_second_or_two(server, make_server):
    other = make_server(database_url=server.database_url)
    key = cli_create(server, "--name", "shared", "--scope", "read")
    for s in (server, other):  # both caches hold the key
        for _ in range(3):
            assert s.list_convs(key=key).status_code == 200
    r = server.request("DELETE", "/api/v1/keys/" + key_id(key))
    assert r.status_code == 204
    revoked_at = time.monotonic()
    refused = eventually(lambda: other.list_convs(key=key).status_code == 401, 5)
    assert refused is not None, "the second instance still accepts a revoked key"
    assert refused - revoked_at < 2.5  # 1 s of cache, plus a loaded machine
    assert_error(server.list_convs(key=key), 401, "UNAUTHORIZED")


def test_last_used_is_recorded(server):
    key = cli_create(server, "--name", "used-" + uid(), "--scope", "read")
    assert server.list_convs(key=key).status_code == 200

    def used():
        keys = server.get("/api/v1/keys").json()["data"]
        return next(k for k in keys if k["id"] == key_id(key))["lastUsedAt"] is not None

    assert eventually(used, 5)


# ------------------------------------------------------------------ malformed keys
BAD_KEYS = [
    "gsr_", "gsr__", "gsr_0123456789abcdef", "gsr_0123456789abcdef_",
    "gsr_0123456789abcdef_" + "0" * 63, "gsr_0123456789abcdef_" + "0" * 65,
    "gsr_0123456789ABCDEF_" + "0" * 64, "gsr_0123456789abcdef_" + "G" * 64,
    "gsr_0123456789abcdef-" + "0" * 64, "GSR_0123456789abcdef_" + "0" * 64,
    "gsr_0123456789abcdef_" + "0" * 64,  # well formed, no such key
    "gsr_0123456789abcdeg_" + "0" * 64, "gsr_" + "a" * 200,
]


@pytest.mark.parametrize("bad", BAD_KEYS)
def test_malformed_or_unknown_keys_are_401(server, bad):
    for path in ("/api/v1/conversations", "/api/v1/keys"):
        r = server.get(path, key=bad)
        assert_error(r, 401, "UNAUTHORIZED")
    assert_error(post_conv(server, bad)[1], 401, "UNAUTHORIZED")


def test_right_id_wrong_secret_is_401(server):
    key = cli_create(server, "--name", "w", "--scope", "admin")
    wrong = key[:-1] + ("0" if key[-1] != "0" else "1")
    assert_error(server.list_convs(key=wrong), 401, "UNAUTHORIZED")
    assert server.list_convs(key=key).status_code == 200
    assert_error(server.list_convs(key=wrong), 401, "UNAUTHORIZED")  # cached entry too


# ------------------------------------------------------------------ API_SECRET_KEY
def test_api_secret_keys_are_unrestricted(server):
    cid, r = post_conv(server, KEY1, "acc-" + uid())
    assert r.status_code == 200
    assert server.get_conv(cid).status_code == 200
    assert cid in ids(server.list_convs(limit=100))
    assert server.get("/api/v1/keys").status_code == 200


# ------------------------------------------------------------------ review: bound writers
def test_keys_bound_to_accounts_only_read_and_delete(server):
    """A key bound to accounts may not write (ingest) nor manage (admin): a webhook names its own
    account, and a bound writer could post another account's conversationId and move it over
    to its own account (then read that account's audio and events); a bound admin could mint an
    unbound key. Such keys are refused when made, by the CLI and the API."""
    acc_a, acc_b = "acc-a-" + uid(), "acc-b-" + uid()
    for scope in ("ingest", "ingest,read", "admin", "read,admin"):
        r = cli(server, "create", "--name", "bound", "--scope", scope, "--account", acc_a)
        assert r.returncode == 2, (scope, r.stdout)
        assert "read and delete" in r.stderr
        r = api_create(server, {"name": "bound", "scopes": scope.split(","), "accounts": [acc_a]})
        assert_error(r, 400, "VALIDATION_ERROR")
        assert "accounts" in error_fields(r)
    # What a bound key may be: it reads its account, and cannot post, even into it.
    b1, r = post_conv(server, KEY1, acc_b)
    assert r.status_code == 200
    reader = cli_create(server, "--name", "reader", "--scope", "read,delete", "--account", acc_a)
    assert_error(server.get_conv(b1, key=reader), 404, "NOT_FOUND")
    assert_error(server.post_conv(make_conv(accountId=acc_a), key=reader), 403, "FORBIDDEN")
    assert_error(server.get("/api/v1/keys", key=reader), 403, "FORBIDDEN")
    assert server.get_conv(b1).json()["accountId"] == acc_b


def test_unverified_bearer_uploads_are_bounded_together(make_server):
    """Without ELEVENLABS_WEBHOOK_SECRET the ElevenLabs webhook takes a Bearer key. A data key
    not read yet (any made-up gsr_ id) is only verified once the body is complete, so while it
    streams, what it spools to disk must be bounded like an unverified signed upload: past the
    bound a new one is answered 503, and a valid key is served again once they are gone."""
    import base64
    import os
    import secrets
    import socket

    max_bytes = 200 * 1024
    srv = make_server(env={"ELEVENLABS_AUDIO_MAX_BYTES": str(max_bytes),
                           "RATE_LIMIT_WEBHOOK_PER_MINUTE": "1000"})
    ingest = cli_create(srv, "--name", "i", "--scope", "ingest")
    audio = base64.b64encode(os.urandom(140 * 1024))
    body = (b'{"type":"post_call_audio","data":{"conversation_id":"c","full_audio":"' + audio
            + b'"}}')

    def bogus():
        return f"gsr_{secrets.token_hex(8)}_{secrets.token_hex(32)}"

    held = []
    try:
        for _ in range(16):  # 16 x >= 128 KiB decoded to disk, past 8 x 200 KiB
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            s.sendall(b"POST /api/v1/webhook/elevenlabs HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Type: application/json\r\n"
                      + f"Authorization: Bearer {bogus()}\r\n".encode()
                      + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:-4])
            held.append(s)
        time.sleep(1.0)
        r = srv.request("POST", "/api/v1/webhook/elevenlabs", key=bogus(), data=body,
                        headers={"Content-Type": "application/json"})
        assert r.status_code == 503, r.text
        assert r.headers.get("Retry-After") == "1"
    finally:
        for s in held:
            s.close()
    deadline = time.time() + 10
    while True:  # the closed uploads release what they held
        cid = "conv_" + uid()
        ok = json.dumps({"type": "post_call_audio", "data": {
            "conversation_id": cid, "full_audio": base64.b64encode(b"ID3 audio").decode()}})
        r = srv.request("POST", "/api/v1/webhook/elevenlabs", key=ingest, data=ok,
                        headers={"Content-Type": "application/json"})
        if r.status_code == 200 or time.time() > deadline:
            break
        time.sleep(0.2)
    assert r.status_code == 200, r.text
