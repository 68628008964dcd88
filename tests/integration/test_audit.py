"""The audit log (issue 9 item 2), black-box, both backends.

Every change (webhook accepted, erasure, key created/revoked), every read of conversation data
(get, include=events, list, audio; 404s too) and every rejected authentication is recorded with
its request id, key id (never the key), client IP, action, target and outcome. Reads trail the
answer by less than a second. Rejections from one address are aggregated per second. GET
/api/v1/audit (admin) filters and pages; `gensendrep audit verify` passes, then names the first
broken link after a hand UPDATE and after a hand DELETE (sqlite3 / psql on the test database);
`gensendrep audit export` prints NDJSON, oldest first."""
import hashlib
import hmac
import json
import random
import re
import sqlite3
import struct
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import pytest

from helpers import KEY1, KEY2, assert_error, make_conv, pg_cluster, run_binary, uid

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "elevenlabs"
SECRET = "wsec_57506b15b729457580a8ec8a16cf3b594534526df7cfdef57efafbed7ad50768"
EL_ENV = {"ELEVENLABS_WEBHOOK_SECRET": SECRET}
ENTRY_FIELDS = {"id", "at", "requestId", "keyId", "clientIp", "action", "target", "outcome",
                "count"}


def env_key_id(key):
    """The public name of an API_SECRET_KEY key (http/auth.c): never the key itself."""
    digest = hashlib.sha256(key.encode()).digest()
    return hashlib.sha256(b"gensendrep rate-limit key id v1:" + digest).hexdigest()[:32]


def conv_path(cid, suffix=""):
    return "/api/v1/conversations/" + quote(cid, safe="") + suffix


def rid():
    return "audit-" + uid()


def el_post(server, fixture, cid):
    raw = (FIXTURES / fixture).read_bytes()
    body = raw.replace(json.loads(raw)["data"]["conversation_id"].encode(), cid.encode())
    t = int(time.time())
    mac = hmac.new(SECRET.encode(), str(t).encode() + b"." + body, hashlib.sha256).hexdigest()
    r = server.request("POST", "/api/v1/webhook/elevenlabs", key=None, data=body,
                       headers={"Content-Type": "application/json",
                                "ElevenLabs-Signature": f"t={t},v0={mac}"})
    assert r.status_code == 200, r.text[:300]
    return r


def create_key(server, scopes, accounts=None, request_id=None):
    body = {"name": "audit-" + uid(), "scopes": scopes}
    if accounts:
        body["accounts"] = accounts
    r = server.request("POST", "/api/v1/keys", data=json.dumps(body),
                       headers={"Content-Type": "application/json",
                                **({"X-Request-Id": request_id} if request_id else {})})
    assert r.status_code == 201, r.text
    return r.json()


def audit_page(server, auth=KEY1, **params):
    """GET /api/v1/audit with the key auth; params are the filters (`key` among them)."""
    return server.get("/api/v1/audit", params=params, key=auth)


def entries(server, **params):
    """Every entry matching the filters, newest first (all pages)."""
    out, cursor = [], None
    while True:
        p = dict(params, limit=1000)
        if cursor:
            p["cursor"] = cursor
        r = audit_page(server, **p)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["success"] is True
        out += body["data"]["entries"]
        cursor = body["data"]["pagination"]["nextCursor"]
        if cursor is None:
            return out


def wait_entries(server, pred=lambda es: bool(es), timeout=5.0, **params):
    end = time.monotonic() + timeout
    while True:
        es = entries(server, **params)
        if pred(es) or time.monotonic() > end:
            return es
        time.sleep(0.05)


def one(server, request_id, **params):
    """The one entry of request_id among those matching params (waiting for it)."""
    es = wait_entries(server, lambda es: any(e["requestId"] == request_id for e in es), **params)
    mine = [e for e in es if e["requestId"] == request_id]
    assert len(mine) == 1, (request_id, es)
    e = mine[0]
    assert set(e) == ENTRY_FIELDS, e
    return e


def check(e, action, outcome, key_id, target, client_ip="127.0.0.1", count=1):
    assert (e["action"], e["outcome"], e["keyId"], e["target"], e["clientIp"], e["count"]) == \
        (action, outcome, key_id, target, client_ip, count), e


def cli(server, *args, timeout=60):
    return run_binary(list(args), cwd=server.workdir,
                      env_overrides={"DATABASE_URL": server.database_url}, timeout=timeout)


def db_exec(server, statement):
    """Runs statement by hand on the server's database: the sqlite3 CLI, or psql."""
    url = server.database_url
    if url.startswith("sqlite:"):
        subprocess.run(["sqlite3", "-cmd", ".timeout 10000", url[len("sqlite:"):], statement],
                       check=True, capture_output=True, text=True, timeout=30)
    else:
        pg_cluster().psql(statement, url.rsplit("/", 1)[1])


# ------------------------------------------------------------------ every action
def test_every_action_with_its_key_and_outcome(make_server):
    srv = make_server(env=EL_ENV)
    admin = env_key_id(KEY1)
    r_create = rid()
    ingest = create_key(srv, ["ingest"], request_id=r_create)
    check(one(srv, r_create, action="key.created"), "key.created", "ok", admin, ingest["id"])
    reader = create_key(srv, ["read"])
    bound = create_key(srv, ["read"], accounts=["acc-other"])
    deleter = create_key(srv, ["delete"])

    # webhooks: a data key (its id), and a signed ElevenLabs one (no key)
    cid, el_cid = f"conv_{uid()}", f"conv_{uid()}"
    r = rid()
    resp = srv.post_conv(make_conv(cid), key=ingest["key"], headers={"X-Request-Id": r})
    assert resp.status_code == 200, resp.text
    check(one(srv, r, target=cid), "webhook.accepted", "ok", ingest["id"], cid)
    el_post(srv, "post_call_transcription_success.json", el_cid)
    el_post(srv, "post_call_audio_small.json", el_cid)
    accepted = wait_entries(srv, lambda es: len(es) == 2, target=el_cid,
                            action="webhook.accepted")
    assert len(accepted) == 2, accepted
    for e in accepted:
        check(e, "webhook.accepted", "ok", None, el_cid)

    # reads: found and not found, with the reading key's id
    missing = f"conv_{uid()}"
    reads = [
        ("GET", conv_path(cid), reader, "conversation.read", "ok", cid),
        ("GET", conv_path(cid) + "?include=transcript,events", reader, "conversation.read", "ok",
         cid),
        ("GET", conv_path(el_cid) + "?include=events", reader, "conversation.read", "ok", el_cid),
        ("GET", conv_path(missing), reader, "conversation.read", "not_found", missing),
        ("GET", conv_path(cid), bound, "conversation.read", "not_found", cid),
        ("GET", "/api/v1/conversations?limit=5", reader, "conversation.list", "ok", None),
        ("GET", conv_path(el_cid, "/audio"), reader, "conversation.audio", "ok", el_cid),
        ("GET", conv_path(cid, "/audio"), reader, "conversation.audio", "not_found", cid),
        ("GET", conv_path(el_cid, "/audio"), bound, "conversation.audio", "not_found", el_cid),
    ]
    for method, path, key, action, outcome, target in reads:
        r = rid()
        resp = srv.request(method, path, key=key["key"], headers={"X-Request-Id": r})
        assert resp.status_code in (200, 404), resp.text
        assert (resp.status_code == 200) == (outcome == "ok"), (path, resp.status_code)
        check(one(srv, r, action=action, key=key["id"]), action, outcome, key["id"], target)
    r = rid()
    assert srv.get(conv_path(missing), headers={"X-Request-Id": r}).status_code == 404
    check(one(srv, r, action="conversation.read"), "conversation.read", "not_found", admin,
          missing)

    # erasure: the store's entry when something was erased, the recorder's when nothing was
    r = rid()
    resp = srv.request("DELETE", conv_path(cid), key=deleter["key"], headers={"X-Request-Id": r})
    assert resp.status_code == 200, resp.text
    check(one(srv, r, target=cid, action="conversation.erased"), "conversation.erased", "ok",
          deleter["id"], cid)
    r = rid()
    resp = srv.request("DELETE", conv_path(cid), key=deleter["key"], headers={"X-Request-Id": r})
    assert resp.status_code == 404, resp.text
    check(one(srv, r, target=cid, action="conversation.erased"), "conversation.erased",
          "not_found", deleter["id"], cid)

    # key revoked
    r = rid()
    resp = srv.request("DELETE", "/api/v1/keys/" + reader["id"], headers={"X-Request-Id": r})
    assert resp.status_code == 204, resp.text
    check(one(srv, r, action="key.revoked"), "key.revoked", "ok", admin, reader["id"])

    # the key itself is never recorded
    text = json.dumps(entries(srv))
    for k in (KEY1, ingest["key"], reader["key"], bound["key"], deleter["key"]):
        assert k not in text
        assert k.split("_")[-1] not in text


def test_cli_keys_are_recorded_as_cli(server):
    r = cli(server, "keys", "create", "--name", "cli-" + uid(), "--scope", "read")
    assert r.returncode == 0, r.stderr
    kid = r.stdout.strip().split("_")[1]
    e = wait_entries(server, target=kid, action="key.created")
    assert len(e) == 1
    check(e[0], "key.created", "ok", None, kid, client_ip=None)
    assert e[0]["requestId"] == "cli"
    assert cli(server, "keys", "revoke", kid).returncode == 0
    e = wait_entries(server, target=kid, action="key.revoked")
    assert len(e) == 1
    check(e[0], "key.revoked", "ok", None, kid, client_ip=None)
    assert e[0]["requestId"] == "cli"


def test_reads_appear_within_a_second(server):
    cid = f"conv_{uid()}"
    assert server.post_conv(make_conv(cid)).status_code == 200
    worst = 0.0
    for _ in range(5):
        r = rid()
        resp = server.get(conv_path(cid), headers={"X-Request-Id": r})
        assert resp.status_code == 200
        answered = time.monotonic()
        es = wait_entries(server, lambda es: any(e["requestId"] == r for e in es), timeout=5,
                          target=cid, action="conversation.read")
        assert any(e["requestId"] == r for e in es), "the read was never recorded"
        worst = max(worst, time.monotonic() - answered)
    assert worst < 1.0, f"a read entry trailed its answer by {worst:.2f}s"


# ------------------------------------------------------------------ rejections
def source_ip():
    return f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"


def rejected_from(server, ip, expect_total, timeout=6.0):
    es = wait_entries(server,
                      lambda es: sum(e["count"] for e in es if e["clientIp"] == ip)
                      >= expect_total, timeout=timeout, action="auth.rejected")
    return [e for e in es if e["clientIp"] == ip]


def test_rejections_401_and_403_with_key_id_and_target(server):
    ip = source_ip()
    s = server.new_session(ip)
    cid = f"conv_{uid()}"
    bad = f"gsr_{uid()[:16]}_{uid()}{uid()}"  # well formed, unknown: its id is recorded
    assert server.get(conv_path(cid), key=bad, session=s).status_code == 401
    mine = rejected_from(server, ip, 1)
    assert len(mine) == 1
    check(mine[0], "auth.rejected", "unauthorized", bad.split("_")[1], cid, client_ip=ip)

    ip = source_ip()
    s = server.new_session(ip)
    assert server.get("/api/v1/conversations", key=None, session=s).status_code == 401
    check(rejected_from(server, ip, 1)[0], "auth.rejected", "unauthorized", None, None,
          client_ip=ip)

    ip = source_ip()
    s = server.new_session(ip)
    reader = create_key(server, ["read"])
    r = server.post_conv(make_conv(), key=reader["key"], session=s)
    assert_error(r, 403, "FORBIDDEN")
    check(rejected_from(server, ip, 1)[0], "auth.rejected", "forbidden", reader["id"], None,
          client_ip=ip)

    ip = source_ip()
    s = server.new_session(ip)
    r = server.request("DELETE", conv_path(cid), key=reader["key"], session=s)
    assert_error(r, 403, "FORBIDDEN")
    check(rejected_from(server, ip, 1)[0], "auth.rejected", "forbidden", reader["id"], cid,
          client_ip=ip)


def test_rejections_of_a_report_name_its_conversation(server):
    """A refused report request is recorded with its conversation, as GET one's is."""
    cid = f"conv_{uid()}"
    bad = f"gsr_{uid()[:16]}_{uid()}{uid()}"
    for path in (conv_path(cid), conv_path(cid, "/report")):
        ip = source_ip()
        assert server.get(path, key=bad, session=server.new_session(ip)).status_code == 401
        check(rejected_from(server, ip, 1)[0], "auth.rejected", "unauthorized",
              bad.split("_")[1], cid, client_ip=ip)
    ingest = create_key(server, ["ingest"])
    for path in (conv_path(cid), conv_path(cid, "/report")):
        ip = source_ip()
        r = server.get(path, key=ingest["key"], session=server.new_session(ip))
        assert_error(r, 403, "FORBIDDEN")
        check(rejected_from(server, ip, 1)[0], "auth.rejected", "forbidden", ingest["id"], cid,
              client_ip=ip)


def test_a_flood_of_bad_keys_is_aggregated(server):
    ip = source_ip()
    s = server.new_session(ip)
    cid = f"conv_{uid()}"
    start = time.monotonic()
    sent = 0
    for i in range(400):
        r = server.get(conv_path(cid), key=f"wrong-{i}", session=s)
        assert r.status_code == 401
        sent += 1
    took = time.monotonic() - start
    mine = rejected_from(server, ip, sent)
    assert sum(e["count"] for e in mine) == sent, mine
    # one entry per address and second (a window may straddle two seconds)
    assert len(mine) <= int(took) + 2, (len(mine), took)
    assert all(e["outcome"] == "unauthorized" and e["target"] == cid for e in mine), mine
    assert all(e["keyId"] is None for e in mine), mine


def rejected_total(server, expect_total, timeout=20.0, **params):
    """Every auth.rejected entry once their counts add up to expect_total (or timeout)."""
    return wait_entries(server, lambda es: sum(e["count"] for e in es) >= expect_total,
                        timeout=timeout, action="auth.rejected", **params)


def test_a_spray_from_one_ipv6_64_is_aggregated_as_its_prefix(make_server):
    """Rate limits count an IPv6 client per /64: so does the aggregation, or a spray of
    addresses from one /64 would write one entry each (and fill the aggregation table)."""
    srv = make_server(env={"TRUSTED_PROXIES": "127.0.0.1"})
    s = srv.new_session()
    start = time.monotonic()
    sent = 2000
    for i in range(sent):
        ip = f"2001:db8:1:2:{i >> 8:x}:{i & 255:x}:{random.randint(0, 65535):x}:1"
        r = srv.get("/api/v1/conversations", key="wrong", session=s,
                    headers={"X-Forwarded-For": ip})
        assert r.status_code == 401
    took = time.monotonic() - start
    es = rejected_total(srv, sent)
    assert sum(e["count"] for e in es) == sent, es
    assert {e["clientIp"] for e in es} == {"2001:db8:1:2::/64"}, es
    assert len(es) <= int(took) + 2, (len(es), took)


def test_a_spray_over_many_clients_still_records_every_rejection(make_server):
    """More clients at once than the aggregation keeps windows for: the rest go into one
    overflow entry per outcome and second (clientIp null, with their count), and a rejection
    from an unrelated client afterwards is still in the log."""
    srv = make_server(env={"TRUSTED_PROXIES": "127.0.0.1"})
    sent, senders = 2400, 6

    def spray(first):  # several senders at once: well over 1024 clients within a second
        s = srv.new_session()
        for i in range(first, sent, senders):
            r = srv.get("/api/v1/conversations", key="wrong", session=s,
                        headers={"X-Forwarded-For": f"2001:db8:{i:x}::1"})
            assert r.status_code == 401

    with ThreadPoolExecutor(senders) as pool:
        list(pool.map(spray, range(senders)))
    ip = source_ip()
    assert srv.get("/api/v1/conversations", key=None,
                   session=srv.new_session(ip)).status_code == 401
    es = rejected_total(srv, sent + 1)
    assert sum(e["count"] for e in es) == sent + 1, es
    assert any(e["clientIp"] == ip for e in es) or \
        any(e["clientIp"] is None and e["count"] > 1 for e in es), es
    overflow = [e for e in es if e["clientIp"] is None]
    assert overflow, "no overflow entry"
    assert all(e["requestId"] is None and e["keyId"] is None and e["target"] is None
               and e["outcome"] == "unauthorized" for e in overflow), overflow
    listed = {e["clientIp"] for e in es if e["clientIp"] is not None}
    assert len(listed) <= 1024 * 3, len(listed)


# ------------------------------------------------------------------ GET /api/v1/audit
def test_audit_api_is_admin_only(server):
    reader = create_key(server, ["read"])
    assert_error(audit_page(server, auth=reader["key"]), 403, "FORBIDDEN")
    ingest = create_key(server, ["ingest", "read", "delete"])
    assert_error(audit_page(server, auth=ingest["key"]), 403, "FORBIDDEN")
    assert_error(audit_page(server, auth=None), 401, "UNAUTHORIZED")
    admin = create_key(server, ["admin"])
    assert audit_page(server, auth=admin["key"]).status_code == 200
    assert audit_page(server, auth=KEY2).status_code == 200


@pytest.mark.parametrize("params", [
    {"since": "yesterday"}, {"until": "2026-13-01T00:00:00Z"}, {"action": "conversation.eat"},
    {"action": ""}, {"cursor": "abc"}, {"cursor": "0"}, {"cursor": "-3"},
    {"cursor": "99999999999999999999999"}, {"limit": "0"}, {"limit": "1001"}, {"limit": "x"},
    {"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
])
def test_audit_api_refuses_bad_filters(server, params):
    assert_error(audit_page(server, **params), 400, "INVALID_PARAMETER")


def test_audit_api_filters_and_pages(server):
    target = f"conv_{uid()}"
    reader = create_key(server, ["read"])
    before = time.time()
    for _ in range(5):
        assert server.get(conv_path(target), key=reader["key"]).status_code == 404
    assert server.get(conv_path(target)).status_code == 404  # another key
    es = wait_entries(server, lambda es: len(es) == 6, target=target)
    assert len(es) == 6
    ids = [e["id"] for e in es]
    assert ids == sorted(ids, reverse=True), "newest first"
    # key and action filters
    mine = entries(server, target=target, key=reader["id"])
    assert len(mine) == 5 and all(e["keyId"] == reader["id"] for e in mine)
    assert entries(server, target=target, action="conversation.list") == []
    assert len(entries(server, target=target, action="conversation.read")) == 6
    assert len(entries(server, key=reader["id"])) == 5
    # since / until, RFC 3339
    iso = lambda t: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + "Z"  # noqa: E731
    assert len(entries(server, target=target, since=iso(before - 1))) == 6
    assert entries(server, target=target, since=iso(time.time() + 3600)) == []
    assert entries(server, target=target, until=iso(before - 3600)) == []
    assert len(entries(server, target=target, until=iso(time.time() + 3600))) == 6
    # pages of 2: 2, 2, 2, then nextCursor null; no entry twice
    seen, cursor, pages = [], None, 0
    while True:
        params = {"target": target, "limit": 2}
        if cursor:
            params["cursor"] = cursor
        r = audit_page(server, **params)
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        assert data["pagination"]["limit"] == 2
        seen += [e["id"] for e in data["entries"]]
        cursor = data["pagination"]["nextCursor"]
        pages += 1
        if cursor is None:
            break
        assert isinstance(cursor, str)
    assert seen == ids and pages == 3
    default = audit_page(server).json()["data"]
    assert default["pagination"]["limit"] == 100 and len(default["entries"]) <= 100


# ------------------------------------------------------------------ verify and export
def test_verify_passes_then_finds_a_hand_edit_and_a_hand_delete(make_server):
    srv = make_server()
    cids = [f"conv_{uid()}" for _ in range(4)]
    for cid in cids:
        assert srv.post_conv(make_conv(cid)).status_code == 200
        assert srv.get(conv_path(cid)).status_code == 200
    es = wait_entries(srv, lambda es: len(es) >= 8)
    assert len(es) >= 8
    r = cli(srv, "audit", "verify")
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(r.stdout.strip().splitlines()) == 1 and str(len(es)) in r.stdout, r.stdout

    # an edit: entry 3's outcome rewritten (the stored hash kept)
    third = next(e for e in es if e["id"] == 3)
    db_exec(srv, "UPDATE audit_log SET outcome = 'not_found' WHERE id = 3")
    r = cli(srv, "audit", "verify")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "first broken link at entry 3:" in r.stdout, r.stdout
    db_exec(srv, f"UPDATE audit_log SET outcome = '{third['outcome']}' WHERE id = 3")
    assert cli(srv, "audit", "verify").returncode == 0

    # a deletion in the middle: the next entry's link breaks
    db_exec(srv, "DELETE FROM audit_log WHERE id = 5")
    r = cli(srv, "audit", "verify")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "first broken link at entry 6:" in r.stdout, r.stdout


def test_verify_finds_the_newest_entries_removed(make_server):
    srv = make_server()
    for _ in range(3):
        assert srv.post_conv(make_conv()).status_code == 200
    es = wait_entries(srv, lambda es: len(es) >= 3)
    assert cli(srv, "audit", "verify").returncode == 0
    last = max(e["id"] for e in es)
    srv.stop()  # nothing appends meanwhile
    db_exec(srv, f"DELETE FROM audit_log WHERE id = {last}")
    r = cli(srv, "audit", "verify")
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"first broken link at entry {last}:" in r.stdout, r.stdout


def test_verify_finds_what_a_reader_would_cut_off(make_server):
    """Bytes appended to a field already at its maximum, bytes after a NUL, a hash one byte too
    long: a reader that cut them off would hash the original entry and find nothing wrong."""
    srv = make_server()
    r = "r" * 128  # a request id at its maximum length
    assert srv.post_conv(make_conv(), headers={"X-Request-Id": r}).status_code == 200
    for _ in range(2):
        assert srv.post_conv(make_conv()).status_code == 200
    es = wait_entries(srv, lambda es: len(es) >= 3)
    first = next(e for e in es if e["requestId"] == r)["id"]
    srv.stop()
    assert cli(srv, "audit", "verify").returncode == 0
    pg = not srv.database_url.startswith("sqlite:")
    edits = [(f"UPDATE audit_log SET request_id = request_id || 'x' WHERE id = {first}",
              f"UPDATE audit_log SET request_id = '{r}' WHERE id = {first}"),
             ("UPDATE audit_log SET hash = hash || " + ("'\\x00'::bytea" if pg else "X'00'")
              + " WHERE id = 2",
              # SQLite's || makes text, whose substr counts characters: cut the bytes back
              "UPDATE audit_log SET hash = substr(" + ("hash" if pg else "CAST(hash AS BLOB)")
              + ", 1, 32) WHERE id = 2")]
    if not pg:  # PostgreSQL text cannot hold a NUL
        edits.append(("UPDATE audit_log SET target = target || char(0) || 'x' WHERE id = 3",
                      "UPDATE audit_log SET target = substr(target, 1, instr(target, char(0)) - 1)"
                      " WHERE id = 3"))
    for edit, undo in edits:
        db_exec(srv, edit)
        r = cli(srv, "audit", "verify")
        assert r.returncode == 1, (edit, r.stdout + r.stderr)
        assert "first broken link at entry" in r.stdout and "holds what no entry can" in r.stdout, \
            (edit, r.stdout)
        db_exec(srv, undo)
        r = cli(srv, "audit", "verify")
        assert r.returncode == 0, (undo, r.stdout + r.stderr)


def test_revoking_an_unknown_key_is_recorded_not_found(server):
    r = rid()
    resp = server.request("DELETE", "/api/v1/keys/0123456789abcdef", headers={"X-Request-Id": r})
    assert resp.status_code == 404, resp.text
    check(one(server, r, action="key.revoked"), "key.revoked", "not_found", env_key_id(KEY1),
          "0123456789abcdef")


def test_a_full_page_tells_whether_more_follow(server):
    """nextCursor is set exactly when older entries remain (one query of limit + 1), also at
    the largest limit."""
    target = f"conv_{uid()}"
    for _ in range(3):
        assert server.get(conv_path(target)).status_code == 404
    wait_entries(server, lambda es: len(es) == 3, target=target)
    page = audit_page(server, target=target, limit=3).json()["data"]
    assert len(page["entries"]) == 3 and page["pagination"]["nextCursor"] is None
    page = audit_page(server, target=target, limit=2).json()["data"]
    assert len(page["entries"]) == 2 and page["pagination"]["nextCursor"] is not None
    rest = audit_page(server, target=target, limit=1000,
                      cursor=page["pagination"]["nextCursor"]).json()["data"]
    assert len(rest["entries"]) == 1 and rest["pagination"]["nextCursor"] is None
    kid = create_key(server, ["read"])["id"]
    page = audit_page(server, action="key.created", target=kid, limit=1000).json()["data"]
    assert [e["target"] for e in page["entries"]] == [kid]


HEAD_RE = re.compile(r"audit head: id (\d+) hash ([0-9a-f]{64})")


def logged_heads(server):
    return [m.groups() for rec in server.log_records()
            for m in [HEAD_RE.fullmatch(rec.get("msg", ""))] if m]


def audit_rows(server):
    """(id, at_us, count, request_id, key_id, client_ip, action, target, outcome) per entry."""
    url = server.database_url
    cols = "id, at_us, count, request_id, key_id, client_ip, action, target, outcome"
    if url.startswith("sqlite:"):
        with sqlite3.connect(url[len("sqlite:"):], timeout=10) as db:
            return db.execute(f"SELECT {cols} FROM audit_log ORDER BY id").fetchall()
    out = pg_cluster().psql(f"SELECT {cols} FROM audit_log ORDER BY id",
                            url.rsplit("/", 1)[1])
    return [tuple(int(v) if i < 3 else (v or None) for i, v in enumerate(line.split("|")))
            for line in out.splitlines()]


def rechain(server):
    """What an attacker with write access does after an edit: every hash and the head
    recomputed (model/audit.h's content bytes), so the chain holds again."""
    pg = not server.database_url.startswith("sqlite:")
    blob = (lambda h: f"'\\x{h.hex()}'::bytea") if pg else (lambda h: f"X'{h.hex()}'")
    prev, last, sql = bytes(32), 0, []
    for row in audit_rows(server):
        content = b"".join(struct.pack(">q", v) for v in row[:3])
        for text in row[3:]:
            b = (text or "").encode()
            content += struct.pack(">I", len(b)) + b
        prev, last = hashlib.sha256(prev + content).digest(), row[0]
        sql.append(f"UPDATE audit_log SET hash = {blob(prev)} WHERE id = {last};")
    sql.append(f"UPDATE audit_head SET last_id = {last}, last_hash = {blob(prev)};")
    db_exec(server, "BEGIN; " + " ".join(sql) + " COMMIT;")


def test_a_recomputed_chain_passes_verify_but_not_an_anchor(make_server):
    """The chain alone cannot catch someone who rewrites every hash after an edit: the head
    logged by the service (and printed by verify), kept outside the database, can."""
    srv = make_server()
    for _ in range(3):
        cid = f"conv_{uid()}"
        assert srv.post_conv(make_conv(cid)).status_code == 200
        assert srv.get(conv_path(cid)).status_code == 200
    wait_entries(srv, lambda es: len(es) >= 6)
    srv.stop()  # nothing appends meanwhile; the stop logs the final head
    heads = logged_heads(srv)
    assert heads[0] == ("0", "0" * 64), heads  # at start: an empty log
    r = cli(srv, "audit", "verify")
    assert r.returncode == 0, r.stdout + r.stderr
    printed = HEAD_RE.search(r.stdout)
    assert printed and printed.groups() == heads[-1], (r.stdout, heads)
    head_id, head_hash = printed.groups()
    assert int(head_id) >= 6
    anchor = f"{head_id}:{head_hash}"
    ok = cli(srv, "audit", "verify", "--expect", anchor)
    assert ok.returncode == 0 and "anchor's entry is in the chain" in ok.stdout, ok.stdout
    assert cli(srv, "audit", "verify", f"--expect=2:{heads[-1][1]}").returncode == 1
    for bad in ("3", "x:" + head_hash, f"{head_id}:abc", f"0:{head_hash}", f"{head_id}:"):
        r = cli(srv, "audit", "verify", "--expect", bad)
        assert r.returncode == 2 and r.stdout == "", (bad, r.stdout)

    # an edit, then the whole chain recomputed by hand: verify alone cannot tell
    db_exec(srv, "UPDATE audit_log SET outcome = 'not_found' WHERE id = 2")
    assert cli(srv, "audit", "verify").returncode == 1
    rechain(srv)
    r = cli(srv, "audit", "verify")
    assert r.returncode == 0, r.stdout + r.stderr
    r = cli(srv, "audit", "verify", "--expect", anchor)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"entry {head_id} does not have the anchor's hash" in r.stdout, r.stdout

    # the newest entries cut and the head moved back: the anchor's entry is gone
    db_exec(srv, f"DELETE FROM audit_log WHERE id >= {int(head_id) - 1}")
    rechain(srv)
    assert cli(srv, "audit", "verify").returncode == 0
    r = cli(srv, "audit", "verify", "--expect", anchor)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"the anchor's entry {head_id} is no longer in the log" in r.stdout, r.stdout


def test_export_ndjson_oldest_first_with_filters(server):
    target = f"conv_{uid()}"
    assert server.post_conv(make_conv(target)).status_code == 200
    for _ in range(3):
        assert server.get(conv_path(target)).status_code == 200
    wait_entries(server, lambda es: len(es) == 4, target=target)
    r = cli(server, "audit", "export", "--target", target)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 4
    rows = [json.loads(ln) for ln in lines]
    assert all(set(row) == ENTRY_FIELDS for row in rows)
    assert [row["id"] for row in rows] == sorted(row["id"] for row in rows), "oldest first"
    assert rows[0]["action"] == "webhook.accepted"
    r = cli(server, "audit", "export", "--target", target, "--action", "conversation.read",
            "--key", env_key_id(KEY1), "--since", "2000-01-01T00:00:00Z",
            "--until=2999-01-01T00:00:00Z")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 3
    r = cli(server, "audit", "export", "--target", target, "--since", "2999-01-01T00:00:00Z")
    assert r.returncode == 0 and r.stdout == ""
    for bad in (["--action", "nope"], ["--since", "soon"], ["--what"], ["--key"],
                ["--since", "2026-02-01T00:00:00Z", "--until", "2026-01-01T00:00:00Z"]):
        r = cli(server, "audit", "export", *bad)
        assert r.returncode == 2 and r.stdout == "", bad
    assert cli(server, "audit").returncode == 2
    assert cli(server, "audit", "verify", "extra").returncode == 2
