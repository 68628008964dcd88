"""Webhook subscriptions through the API (/api/v1/subscriptions): create, read, list, change
and delete; validation (400 with field paths); admin only (401/403); the signing secret only in
the create answer; the SSRF rule at creation (loopback, private and link-local addresses refused
unless DELIVERY_ALLOW_PRIVATE_NETWORKS=true); 404s; the deliveries log and replay; the audit
entries the changes write; the outbox and the broker in health. Both backends."""
import base64
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from helpers import KEY1, KEY2, assert_error, error_fields, make_conv, uid

SUB_ID_RE = re.compile(r"^sub_[0-9a-f]{24}$")
SECRET_RE = re.compile(r"^whsec_[A-Za-z0-9+/]{43}=$")
# An address that needs no DNS and passes the SSRF rule, from TEST-NET-1 (RFC 5737: never
# routed), so even an event sent there by mistake reaches nobody.
PUBLIC_URL = "https://192.0.2.10/hooks/gensendrep"
UNKNOWN_ID = "sub_" + "0" * 24
MEMBERS = {"id", "url", "eventTypes", "accountId", "enabled", "maxPerSecond", "state",
           "disabledReason", "createdAt", "updatedAt"}
ALL_TYPES = ["conversation.created", "conversation.updated", "conversation.audio_added",
             "conversation.failed", "conversation.deleted"]


def create(server, body, key=KEY1):
    return server.request("POST", "/api/v1/subscriptions", key=key, json=body)


def created(server, **body):
    body.setdefault("url", PUBLIC_URL)
    r = create(server, body)
    assert r.status_code == 201, r.text
    return r.json()


def patch(server, sid, body, key=KEY1):
    return server.request("PATCH", f"/api/v1/subscriptions/{sid}", key=key, json=body)


def get(server, sid, key=KEY1):
    return server.get(f"/api/v1/subscriptions/{sid}", key=key)


def listed(server, key=KEY1):
    r = server.get("/api/v1/subscriptions", key=key)
    assert r.status_code == 200, r.text
    return r.json()["subscriptions"]


def create_key(server, scopes, accounts=None):
    body = {"name": "subs-" + uid(), "scopes": scopes}
    if accounts:
        body["accounts"] = accounts
    r = server.request("POST", "/api/v1/keys", json=body)
    assert r.status_code == 201, r.text
    return r.json()["key"]


def audit_for(server, target, want, timeout=5.0):
    """The audit entries naming target (waiting until every (action, outcome) of want is there)."""
    end = time.monotonic() + timeout
    while True:
        r = server.get("/api/v1/audit", params={"target": target, "limit": 1000})
        assert r.status_code == 200, r.text
        es = r.json()["data"]["entries"]
        have = {(e["action"], e["outcome"]) for e in es}
        if set(want) <= have or time.monotonic() > end:
            return es
        time.sleep(0.05)


# ------------------------------------------------------------------ CRUD
def test_create_read_list_change_delete(server):
    body = {"url": PUBLIC_URL, "eventTypes": ["conversation.deleted", "conversation.created"],
            "accountId": "acc-" + uid(), "enabled": True, "maxPerSecond": 25}
    r = create(server, body)
    assert r.status_code == 201, r.text
    sub = r.json()
    assert set(sub) == MEMBERS | {"secret"}, sub
    assert SUB_ID_RE.match(sub["id"]), sub
    assert sub["url"] == PUBLIC_URL
    assert sub["eventTypes"] == ["conversation.created", "conversation.deleted"]
    assert sub["accountId"] == body["accountId"]
    assert (sub["enabled"], sub["maxPerSecond"], sub["state"]) == (True, 25, "active")
    assert sub["disabledReason"] is None
    assert sub["createdAt"] and sub["updatedAt"]
    sid = sub["id"]

    one = get(server, sid)
    assert one.status_code == 200, one.text
    shown = one.json()
    assert shown == {k: v for k, v in sub.items() if k != "secret"}
    assert sub["id"] in {s["id"] for s in listed(server)}

    # defaults: every type, every account, enabled, no limit
    plain = created(server)
    assert plain["eventTypes"] == ALL_TYPES
    assert (plain["accountId"], plain["enabled"], plain["maxPerSecond"], plain["state"]) == \
        (None, True, None, "active")
    assert plain["id"] != sid and plain["secret"] != sub["secret"]

    # PATCH changes only what it names
    r = patch(server, sid, {"enabled": False})
    assert r.status_code == 200, r.text
    assert (r.json()["enabled"], r.json()["state"]) == (False, "disabled")
    assert r.json()["eventTypes"] == sub["eventTypes"] and r.json()["maxPerSecond"] == 25
    assert get(server, sid).json()["state"] == "disabled"
    r = patch(server, sid, {"enabled": True, "maxPerSecond": None, "accountId": None,
                            "eventTypes": ["conversation.failed"], "url": PUBLIC_URL + "/v2"})
    assert r.status_code == 200, r.text
    now = get(server, sid).json()
    assert (now["state"], now["maxPerSecond"], now["accountId"], now["eventTypes"], now["url"]) \
        == ("active", None, None, ["conversation.failed"], PUBLIC_URL + "/v2")
    assert now["createdAt"] == sub["createdAt"]
    # an empty PATCH changes nothing
    r = patch(server, sid, {})
    assert r.status_code == 200, r.text
    assert {k: v for k, v in r.json().items() if k != "updatedAt"} == \
        {k: v for k, v in now.items() if k != "updatedAt"}

    r = server.request("DELETE", f"/api/v1/subscriptions/{sid}")
    assert r.status_code == 204, r.text
    assert_error(get(server, sid), 404, "NOT_FOUND")
    assert_error(server.request("DELETE", f"/api/v1/subscriptions/{sid}"), 404, "NOT_FOUND")
    assert_error(patch(server, sid, {"enabled": True}), 404, "NOT_FOUND")
    assert sid not in {s["id"] for s in listed(server)}
    assert plain["id"] in {s["id"] for s in listed(server)}


def test_secret_only_in_the_create_answer(server):
    sub = created(server)
    secret = sub["secret"]
    assert SECRET_RE.match(secret), secret
    assert len(base64.b64decode(secret[len("whsec_"):], validate=True)) == 32
    texts = [get(server, sub["id"]).text,
             server.get("/api/v1/subscriptions").text,
             patch(server, sub["id"], {"maxPerSecond": 3}).text,
             server.get(f"/api/v1/subscriptions/{sub['id']}/deliveries").text]
    for t in texts:
        assert secret not in t and secret[6:] not in t and '"secret"' not in t, t
    assert "secret" not in get(server, sub["id"]).json()
    assert all("secret" not in s for s in listed(server))


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize("body,field", [
    ({}, "url"),
    ({"url": None}, "url"),
    ({"url": 42}, "url"),
    ({"url": "ftp://192.0.2.10/hook"}, "url"),
    ({"url": "/hooks/relative"}, "url"),
    ({"url": "192.0.2.10/hook"}, "url"),
    ({"url": "https://user:secret@192.0.2.10/hook"}, "url"),
    ({"url": "https://192.0.2.10/hook#part"}, "url"),
    ({"url": "https://192.0.2.10:99999/"}, "url"),
    ({"url": "https://192.0.2.10/" + "a" * 2100}, "url"),
    ({"url": PUBLIC_URL, "eventTypes": ["conversation.eaten"]}, "eventTypes[0]"),
    ({"url": PUBLIC_URL, "eventTypes": ["conversation.created", "conversation.exploded"]},
     "eventTypes[1]"),
    ({"url": PUBLIC_URL, "eventTypes": ["conversation.created", "conversation.created"]},
     "eventTypes[1]"),
    ({"url": PUBLIC_URL, "eventTypes": []}, "eventTypes"),
    ({"url": PUBLIC_URL, "eventTypes": "conversation.created"}, "eventTypes"),
    ({"url": PUBLIC_URL, "eventTypes": [7]}, "eventTypes[0]"),
    ({"url": PUBLIC_URL, "maxPerSecond": 0}, "maxPerSecond"),
    ({"url": PUBLIC_URL, "maxPerSecond": -1}, "maxPerSecond"),
    ({"url": PUBLIC_URL, "maxPerSecond": 10 ** 12}, "maxPerSecond"),
    ({"url": PUBLIC_URL, "maxPerSecond": "10"}, "maxPerSecond"),
    ({"url": PUBLIC_URL, "maxPerSecond": 2.5}, "maxPerSecond"),
    ({"url": PUBLIC_URL, "enabled": "yes"}, "enabled"),
    ({"url": PUBLIC_URL, "accountId": ""}, "accountId"),
    ({"url": PUBLIC_URL, "accountId": 12}, "accountId"),
    ({"url": PUBLIC_URL, "colour": "red"}, "colour"),
    ({"url": PUBLIC_URL, "secret": "whsec_bWluZQ=="}, "secret"),
])
def test_create_refuses_with_the_field(server, body, field):
    before = len(listed(server))
    r = create(server, body)
    assert_error(r, 400, "VALIDATION_ERROR")
    assert error_fields(r) == [field], r.text
    assert len(listed(server)) == before


def test_every_problem_is_reported_at_once(server):
    r = create(server, {"url": "ftp://x/", "eventTypes": ["a", "conversation.created", "b"],
                        "maxPerSecond": 0, "extra": 1})
    assert_error(r, 400, "VALIDATION_ERROR")
    assert sorted(error_fields(r)) == sorted(
        ["url", "eventTypes[0]", "eventTypes[2]", "maxPerSecond", "extra"]), r.text


@pytest.mark.parametrize("data", [
    b'{"url": "https://192.0.2.10/"', b"not json", b"[]", b'"https://192.0.2.10/"', b"null",
    b'{"url": "https://192.0.2.10/", "url": "https://192.0.2.11/"}',
    b'{"url": "https://192.0.2.10/", "maxPerSecond": 100000000000000000000000000000}',
    b'{"url": "https://192.0.2.10/\xff"}',
])
def test_malformed_bodies_are_400(server, data):
    r = server.request("POST", "/api/v1/subscriptions", data=data,
                       headers={"Content-Type": "application/json"})
    assert_error(r, 400)


def test_patch_validates_and_changes_nothing_when_refused(server):
    sub = created(server, maxPerSecond=5)
    for body, field in [({"url": "gopher://192.0.2.10/"}, "url"), ({"eventTypes": []}, "eventTypes"),
                        ({"maxPerSecond": 0}, "maxPerSecond"), ({"enabled": 1}, "enabled"),
                        ({"state": "active"}, "state"), ({"id": UNKNOWN_ID}, "id")]:
        r = patch(server, sub["id"], body)
        assert_error(r, 400, "VALIDATION_ERROR")
        assert error_fields(r) == [field], r.text
    # a refused member refuses the whole PATCH: the valid one beside it is not applied
    r = patch(server, sub["id"], {"maxPerSecond": 9, "eventTypes": ["nope"]})
    assert_error(r, 400, "VALIDATION_ERROR")
    # the message says what is wrong and where, as the webhook's does
    for data, says in [(b"[]", "must be a JSON object"), (b"null", "must be a JSON object"),
                       (b"{", "line 1"), (b'{"url": "http://e.com/", "url": "http://e.org/"}',
                                          "duplicate object key"),
                       (b'{"url": "x\x00"}', "NUL byte at offset 10")]:
        r = server.request("PATCH", f"/api/v1/subscriptions/{sub['id']}", data=data,
                           headers={"Content-Type": "application/json"})
        err = assert_error(r, 400, "INVALID_JSON")
        assert says in err["message"], (data, err)
    assert get(server, sub["id"]).json() == {k: v for k, v in sub.items() if k != "secret"}


def test_concurrent_patches_of_different_members_keep_both(server):
    """Two PATCHes at once, one of the url, the other of maxPerSecond and eventTypes: both
    changes survive, every time (the store changes only the members a PATCH names, in one
    statement; a read-modify-write of the whole subscription lost one now and then)."""
    sid = created(server, maxPerSecond=1)["id"]
    sessions = [server.new_session(), server.new_session()]
    for i in range(30):
        url = f"https://192.0.2.{10 + i % 7}/hooks/{i}"
        types = [ALL_TYPES[i % len(ALL_TYPES)]]
        barrier = threading.Barrier(2)
        answers = [None, None]

        def send(k, body):
            barrier.wait()
            answers[k] = server.request("PATCH", f"/api/v1/subscriptions/{sid}", json=body,
                                        session=sessions[k])

        threads = [threading.Thread(target=send, args=(0, {"url": url})),
                   threading.Thread(target=send,
                                    args=(1, {"maxPerSecond": 100 + i, "eventTypes": types}))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
        assert answers[0].json()["url"] == url
        assert answers[1].json()["maxPerSecond"] == 100 + i
        got = get(server, sid).json()
        assert (got["url"], got["maxPerSecond"], got["eventTypes"]) == (url, 100 + i, types), \
            (i, got)
        assert got["state"] == "active" and got["enabled"] is True


# ------------------------------------------------------------------ who may
def test_admin_only(server):
    sub = created(server)
    paths = [("POST", "/api/v1/subscriptions", {"url": PUBLIC_URL}),
             ("GET", "/api/v1/subscriptions", None),
             ("GET", f"/api/v1/subscriptions/{sub['id']}", None),
             ("PATCH", f"/api/v1/subscriptions/{sub['id']}", {"enabled": False}),
             ("DELETE", f"/api/v1/subscriptions/{sub['id']}", None),
             ("GET", f"/api/v1/subscriptions/{sub['id']}/deliveries", None),
             ("POST", f"/api/v1/subscriptions/{sub['id']}/replay?since=2020-01-01T00:00:00Z",
              None)]
    reader = create_key(server, ["read"])
    everything_but_admin = create_key(server, ["ingest", "read", "delete"])
    bound = create_key(server, ["read", "delete"], accounts=["acc-1"])
    for method, path, body in paths:
        kw = {"json": body} if body is not None else {}
        assert_error(server.request(method, path, key=None, **kw), 401, "UNAUTHORIZED")
        assert_error(server.request(method, path, key="gsr_wrong", **kw), 401, "UNAUTHORIZED")
        for key in (reader, everything_but_admin, bound):
            assert_error(server.request(method, path, key=key, **kw), 403, "FORBIDDEN")
    # nothing changed
    assert get(server, sub["id"]).json()["state"] == "active"
    # an admin data key and an API_SECRET_KEY key may
    admin = create_key(server, ["admin"])
    assert get(server, sub["id"], key=admin).status_code == 200
    assert get(server, sub["id"], key=KEY2).status_code == 200
    r = create(server, {"url": PUBLIC_URL}, key=admin)
    assert r.status_code == 201, r.text


# ------------------------------------------------------------------ SSRF
PRIVATE_URLS = ["http://127.0.0.1/hook", "http://localhost:8080/hook", "http://10.1.2.3/hook",
                "http://169.254.169.254/latest/meta-data/", "http://[::1]:9000/hook",
                "http://192.168.0.10/", "http://172.16.5.4/", "http://0.0.0.0/",
                "https://127.1.2.3:8443/x"]


def test_private_addresses_are_refused_at_creation(server):
    before = len(listed(server))
    for url in PRIVATE_URLS:
        r = create(server, {"url": url})
        err = assert_error(r, 400, "VALIDATION_ERROR")
        assert error_fields(r) == ["url"], (url, r.text)
        assert "DELIVERY_ALLOW_PRIVATE_NETWORKS" in err["details"][0]["issue"] or \
            re.search(r"private|loopback|link-local|local|not allowed|refused",
                      err["details"][0]["issue"], re.I), err
    assert len(listed(server)) == before
    # and when a PATCH moves a subscription there
    sub = created(server)
    for url in ("http://127.0.0.1:1/", "http://169.254.169.254/"):
        r = patch(server, sub["id"], {"url": url, "maxPerSecond": 7})
        assert_error(r, 400, "VALIDATION_ERROR")
        assert error_fields(r) == ["url"], r.text
    assert get(server, sub["id"]).json()["url"] == PUBLIC_URL
    assert get(server, sub["id"]).json()["maxPerSecond"] is None


def test_a_name_that_does_not_resolve_yet_is_accepted(server):
    """Nothing to judge at creation (a machine without DNS, a name published later): accepted
    on the default configuration, while a private address is still refused; each delivery
    checks the address it connects to."""
    for url in ("https://no-such-host.invalid/hook", "https://receiver.example.com/webhooks/gsr"):
        r = create(server, {"url": url, "enabled": False})
        assert r.status_code == 201, (url, r.text)
        assert r.json()["url"] == url
        assert get(server, r.json()["id"]).json()["url"] == url
    assert_error(create(server, {"url": "http://127.0.0.1/hook"}), 400, "VALIDATION_ERROR")


def test_the_scheme_is_case_insensitive_and_the_url_kept_as_given(server):
    """RFC 3986: HTTPS:// is https://; the SSRF check still applies to such a URL."""
    for url in ("HTTPS://192.0.2.10/hooks/upper", "Http://192.0.2.10/hooks/mixed"):
        r = create(server, {"url": url, "enabled": False})
        assert r.status_code == 201, (url, r.text)
        assert get(server, r.json()["id"]).json()["url"] == url
    assert_error(create(server, {"url": "HTTP://127.0.0.1/hook"}), 400, "VALIDATION_ERROR")
    assert_error(create(server, {"url": "FTP://192.0.2.10/hook"}), 400, "VALIDATION_ERROR")


def test_private_addresses_allowed_when_configured(make_server):
    srv = make_server(env={"DELIVERY_ALLOW_PRIVATE_NETWORKS": "true"})
    for url in PRIVATE_URLS:
        r = create(srv, {"url": url, "enabled": False})
        assert r.status_code == 201, (url, r.text)
        assert r.json()["url"] == url


# ------------------------------------------------------------------ 404s and routes
@pytest.mark.parametrize("sid", [UNKNOWN_ID, "nope", "sub_" + "g" * 24, "sub_" + "A" * 24,
                                 "%2e%2e", "sub_" + "0" * 23, "sub_" + "0" * 200])
def test_unknown_ids_are_404(server, sid):
    assert_error(get(server, sid), 404, "NOT_FOUND")
    assert_error(patch(server, sid, {"enabled": True}), 404, "NOT_FOUND")
    assert_error(server.request("DELETE", f"/api/v1/subscriptions/{sid}"), 404, "NOT_FOUND")
    assert_error(server.get(f"/api/v1/subscriptions/{sid}/deliveries"), 404, "NOT_FOUND")
    assert_error(server.request(
        "POST", f"/api/v1/subscriptions/{sid}/replay?since=2020-01-01T00:00:00Z"), 404,
        "NOT_FOUND")


def test_methods_not_allowed(server):
    assert server.request("PUT", "/api/v1/subscriptions").status_code == 405
    assert server.request("DELETE", "/api/v1/subscriptions").status_code == 405
    assert server.request("PUT", f"/api/v1/subscriptions/{UNKNOWN_ID}",
                          json={}).status_code == 405
    r = server.request("POST", "/api/v1/subscriptions", data=b'{"url":"https://192.0.2.10/"}',
                       headers={"Content-Type": "text/plain"})
    assert_error(r, 415)


# ------------------------------------------------------------------ deliveries and replay
def test_deliveries_and_replay_answer_shapes(server):
    sub = created(server, enabled=False)
    r = server.get(f"/api/v1/subscriptions/{sub['id']}/deliveries")
    assert r.status_code == 200, r.text
    assert r.json() == {"deliveries": [], "pagination": {"limit": 100, "nextCursor": None}}
    r = server.get(f"/api/v1/subscriptions/{sub['id']}/deliveries", params={"limit": 5})
    assert r.json()["pagination"] == {"limit": 5, "nextCursor": None}
    r = server.get(f"/api/v1/subscriptions/{sub['id']}/deliveries", params={"page": 3})
    assert r.json() == {"deliveries": [],
                        "pagination": {"limit": 100, "nextCursor": None, "page": 3}}, r.text
    for params in [{"limit": 0}, {"limit": 1001}, {"limit": "x"}, {"cursor": "abc"},
                   {"cursor": 0}, {"cursor": -2}, {"page": 0}, {"page": -1}, {"page": "x"},
                   {"page": 100001}, {"page": 2, "cursor": "5"}]:
        assert_error(server.get(f"/api/v1/subscriptions/{sub['id']}/deliveries", params=params),
                     400, "INVALID_PARAMETER")
    replay = f"/api/v1/subscriptions/{sub['id']}/replay"
    r = server.request("POST", replay, params={"since": "2020-01-01T00:00:00Z"})
    assert r.status_code == 202, r.text
    assert r.json() == {"replayed": 0}
    for params in [{}, {"since": ""}, {"since": "yesterday"}, {"since": "2026-13-01T00:00:00Z"},
                   {"since": "1700000000"}]:
        r = server.request("POST", replay, params=params)
        assert_error(r, 400, "INVALID_PARAMETER")
        assert error_fields(r) == ["since"], r.text


def test_changes_write_audit_entries(server):
    sub = created(server)
    sid = sub["id"]
    assert patch(server, sid, {"enabled": False}).status_code == 200
    r = server.request("POST", f"/api/v1/subscriptions/{sid}/replay",
                       params={"since": "2020-01-01T00:00:00Z"})
    assert r.status_code == 202, r.text
    assert server.request("DELETE", f"/api/v1/subscriptions/{sid}").status_code == 204
    assert server.request("DELETE", f"/api/v1/subscriptions/{sid}").status_code == 404
    want = [("subscription.created", "ok"), ("subscription.updated", "ok"),
            ("subscription.replayed", "ok"), ("subscription.deleted", "ok"),
            ("subscription.deleted", "not_found")]
    es = audit_for(server, sid, want)
    have = [(e["action"], e["outcome"]) for e in es]
    for w in want:
        assert have.count(w) == 1, (w, have)


class _Receiver:
    """A local endpoint answering 200 and keeping every request."""

    def __init__(self):
        self.requests = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.requests.append((dict(self.headers), body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def wait_for(pred, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    return pred()


def test_deliveries_log_and_replay_resend_with_the_same_ids(make_server):
    rec = _Receiver()
    try:
        srv = make_server(env={"DELIVERY_ALLOW_PRIVATE_NETWORKS": "true"})
        sub = created(srv, url=rec.url, eventTypes=["conversation.created"])
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
        conv = make_conv()
        assert srv.post_conv(conv).status_code == 200
        path = f"/api/v1/subscriptions/{sub['id']}/deliveries"

        def delivered():
            ds = srv.get(path).json()["deliveries"]
            return ds if any(d["outcome"] == "delivered" for d in ds) else None

        ds = wait_for(delivered)
        assert ds, srv.get(path).text
        d = ds[0]
        assert set(d) == {"eventId", "type", "attempt", "statusCode", "latencyMs", "at",
                          "outcome", "response"}, d
        assert re.match(r"^evt_[0-9a-f]{32}$", d["eventId"]), d
        assert (d["type"], d["attempt"], d["statusCode"], d["outcome"], d["response"]) == \
            ("conversation.created", 1, 200, "delivered", "ok"), d
        assert isinstance(d["latencyMs"], int) and d["latencyMs"] >= 0
        assert d["at"].endswith("Z")
        assert wait_for(lambda: len(rec.requests) >= 1)
        first_ids = {h.get("webhook-id") or h.get("Webhook-Id") for h, _ in rec.requests}
        assert first_ids == {d["eventId"]}
        body = json.loads(rec.requests[0][1])
        assert body["data"]["conversationId"] == conv["conversationId"]

        r = srv.request("POST", f"/api/v1/subscriptions/{sub['id']}/replay",
                        params={"since": since})
        assert r.status_code == 202, r.text
        assert r.json() == {"replayed": 1}
        assert wait_for(lambda: len(rec.requests) >= 2)
        again = rec.requests[1][0]
        assert (again.get("webhook-id") or again.get("Webhook-Id")) == d["eventId"]
        # newest first, and a page of one tells there is more (the receiver can see the
        # resend before the dispatcher has recorded its answer: wait for the record)
        assert wait_for(lambda: len(srv.get(path).json()["deliveries"]) >= 2)
        r = srv.get(path, params={"limit": 1})
        page = r.json()
        assert len(page["deliveries"]) == 1 and page["pagination"]["nextCursor"], page
        r = srv.get(path, params={"limit": 1, "cursor": page["pagination"]["nextCursor"]})
        older = r.json()["deliveries"]
        assert older and older[0]["eventId"] == d["eventId"]
        # or by page number: page 2 of one is the same older attempt
        r = srv.get(path, params={"limit": 1, "page": 2})
        assert r.status_code == 200, r.text
        assert r.json()["deliveries"] == older[:1], r.text
        assert r.json()["pagination"]["page"] == 2
        assert srv.get(path, params={"limit": 1, "page": 1}).json()["deliveries"] == \
            page["deliveries"]
    finally:
        rec.close()


# ------------------------------------------------------------------ health
def test_health_shows_the_outbox(server):
    r = server.get("/api/v1/health", key=None)
    assert r.status_code == 200, r.text
    body = r.json()
    outbox = body["outbox"]
    assert set(outbox) == {"backlog", "oldestAgeSeconds", "deadLetters"}, outbox
    assert all(isinstance(v, int) and v >= 0 for v in outbox.values()), outbox
    assert "queue" not in body["dependencies"]  # no QUEUE_URL


def test_health_shows_an_unreachable_broker_as_degraded(make_server):
    from helpers import free_port
    srv = make_server(env={"QUEUE_URL": f"redis://127.0.0.1:{free_port()}"})
    r = srv.get("/api/v1/health", key=None)
    assert r.status_code == 200, r.text  # liveness is not failed by the broker
    body = r.json()
    assert body["dependencies"]["queue"] == "disconnected", body
    assert body["status"] == "degraded", body
    assert body["dependencies"]["database"] == "connected"


def test_a_long_unknown_member_cut_inside_a_character_is_still_refused(server):
    # The member's name is cut for the error's field: a cut inside "é" must not lose the problem.
    name = "a" * 78 + "é"
    r = create(server, {"url": PUBLIC_URL, name: 1})
    assert_error(r, 400, "VALIDATION_ERROR")
    sub = created(server, enabled=False)
    r = patch(server, sub["id"], {name: 1})
    assert_error(r, 400, "VALIDATION_ERROR")


def test_replay_since_with_an_offset_whose_plus_was_not_encoded(server):
    sub = created(server, enabled=False)
    # requests encodes '+' as %2B; a hand-written URL often leaves it raw, which reads as a space
    r = server.request("POST", f"/api/v1/subscriptions/{sub['id']}/replay?since=2020-01-01T02:00:00+02:00")
    assert r.status_code == 202, r.text
    r = server.request("POST", f"/api/v1/subscriptions/{sub['id']}/replay",
                       params={"since": "2020-01-01T02:00:00+02:00"})
    assert r.status_code == 202, r.text
