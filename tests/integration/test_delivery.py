"""Onward delivery to webhook subscriptions (issue 10 item 2), black-box, both backends.

A local receiver (receiver.py) stands in for the downstream service: it checks every request's
Standard Webhooks signature with the secret the create answer gave, records what arrived, and
fails, answers 410 or 429/503 with Retry-After, or hangs past the timeout when told to. Schedules
and timeouts are shrunk through configuration (DELIVERY_RETRY_SCHEDULE, DELIVERY_TIMEOUT_SECONDS)
so each test takes seconds. What is proven:
- every stored change arrives once, signed, with the conversation exactly as GET shows it
  (created, updated for a changed redelivery and nothing for an identical one, deleted on
  erasure, audio_added and failed from ElevenLabs), and only to the subscriptions whose
  eventTypes / accountId want it;
- failed attempts are retried on the schedule with the same webhook-id, every attempt is listed
  at /deliveries; after the schedule an event is dead-lettered when the subscription succeeded
  meanwhile, else the subscription is paused and its events wait (also across 410, which
  disables it) until PATCH {"enabled": true} sends them all;
- Retry-After (seconds and HTTP date) is honoured, and its hold of the subscription is kept in
  the store across a kill -9 and restart; a hanging receiver is timed out and retried;
  redirects are not followed; events of one conversation never overtake each other;
- replay re-sends with the original ids; maxPerSecond throttles;
- SSRF: loopback/private/link-local URLs (also by a name resolving there) are refused at
  create and PATCH, and an existing subscription to one is not delivered to once the service
  runs without DELIVERY_ALLOW_PRIVATE_NETWORKS."""
import base64
import email.utils
import hashlib
import hmac
import json
import re
import socket
import sqlite3
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

import pytest

from helpers import PROCESSED_AT_RE, UTC_TS_RE, assert_error, make_conv, pg_cluster, uid
from receiver import Receiver, Reply

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "elevenlabs"
EL_SECRET = "wsec_57506b15b729457580a8ec8a16cf3b594534526df7cfdef57efafbed7ad50768"
EVENT_ID_RE = re.compile(r"^evt_[0-9a-f]{32}$")
WAIT = 30.0  # seconds: generous for a loaded 2-core machine; tests pass in far less


@pytest.fixture
def rcv():
    r = Receiver()
    yield r
    r.close()


def start(make_server, schedule="0,1,2", timeout=2, private=True, **env):
    e = {"DELIVERY_RETRY_SCHEDULE": schedule, "DELIVERY_TIMEOUT_SECONDS": str(timeout)}
    if private:
        e["DELIVERY_ALLOW_PRIVATE_NETWORKS"] = "true"
    e.update(env)
    return make_server(env=e)


def unwrap(r):
    """The answer's object (the API may wrap it as {"success": true, "data": ...})."""
    j = r.json()
    if isinstance(j, dict) and j.get("success") is True and "data" in j:
        return j["data"]
    return j


class Sub:
    def __init__(self, srv, rcv, name, created):
        self.srv, self.rcv, self.name = srv, rcv, name
        self.id = created["id"]
        self.secret = created["secret"]
        self.created = created

    def get(self):
        r = self.srv.get("/api/v1/subscriptions/" + self.id)
        assert r.status_code == 200, r.text
        return unwrap(r)

    def state(self):
        return self.get()["state"]

    def patch(self, **fields):
        r = self.srv.request("PATCH", "/api/v1/subscriptions/" + self.id, json=fields)
        assert r.status_code == 200, r.text
        return unwrap(r)

    def attempts(self):
        """Every recorded attempt (newest first, as the API lists them)."""
        r = self.srv.get(f"/api/v1/subscriptions/{self.id}/deliveries", params={"limit": 100})
        assert r.status_code == 200, r.text
        return unwrap(r)["deliveries"]

    def replay(self, since):
        return self.srv.request("POST", f"/api/v1/subscriptions/{self.id}/replay",
                                params={"since": since})

    # receiver views of this subscription's path
    def requests(self, **kw):
        return self.rcv.requests(self.name, **kw)

    def delivered(self, **kw):
        return self.rcv.delivered(self.name, **kw)

    def wait_delivered(self, cid, type, n=1, timeout=WAIT):
        return self.rcv.wait(lambda: len(self.delivered(cid=cid, type=type)) >= n and
                             self.delivered(cid=cid, type=type), timeout,
                             f"{n} x {type} of {cid} at /{self.name}")

    def assert_all_signed(self):
        reqs = self.requests()
        bad = [(r.type, r.conversation_id, r.headers) for r in reqs
               if not r.signature_ok(self.secret)]
        assert not bad, f"unsigned or badly signed deliveries: {bad[:3]}"
        for r in reqs:
            ev = r.event
            assert isinstance(ev, dict) and ev.get("id") == r.webhook_id, (r.headers, r.body)


def subscribe(srv, rcv, name=None, **fields):
    name = name or "hook-" + uid()[:12]
    body = {"url": rcv.url(name), **fields}
    r = srv.request("POST", "/api/v1/subscriptions", json=body)
    assert r.status_code == 201, r.text
    created = unwrap(r)
    assert re.fullmatch(r"sub_[0-9a-f]{24}", created["id"]), created
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/]{43}=", created["secret"]), created
    return Sub(srv, rcv, name, created)


def post(srv, body):
    r = srv.post_conv(body)
    assert r.status_code == 200, r.text
    return r


def conv_json(srv, cid):
    r = srv.get("/api/v1/conversations/" + quote(cid, safe="") + "?include=transcript")
    assert r.status_code == 200, r.text
    return r.json()


def rfc3339(t):
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def wait_until(pred, timeout=WAIT, what="condition", step=0.1):
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


def health_held(srv):
    """Health's outbox.held: the subscriptions this instance's dispatcher holds ({} when none
    is); None while health has no outbox numbers yet."""
    r = srv.get("/api/v1/health", key=None)
    assert r.status_code == 200, r.text
    outbox = r.json()["outbox"]
    return None if outbox is None else outbox.get("held", {})


def wait_health_held(srv, want, what):
    """Waits until health's outbox.held is want (the dispatcher reads the subscriptions about
    once a second), and returns it."""
    seen = []

    def pred():
        seen[:] = [health_held(srv)]
        return seen[0] == want

    try:
        wait_until(pred, what=what)
    except AssertionError as e:
        raise AssertionError(f"{e}; health's outbox.held was {seen[0]!r}, wanted {want!r}")
    return seen[0]


def assert_health_names_no_subscription(srv, sub_id):
    """Health answers without a key: it counts held subscriptions but names none (which ones,
    and whose receiver answers 429, is for an admin key)."""
    r = srv.get("/api/v1/health", key=None)
    assert r.status_code == 200 and sub_id not in r.text and "sub_" not in r.text, r.text


def attempts_of(sub, event_id):
    """The attempts recorded for one event, oldest first."""
    return sorted([a for a in sub.attempts() if a["eventId"] == event_id],
                  key=lambda a: (a["at"], a["attempt"]))


def first_2xx_order(reqs):
    """Types in the order their first 2xx arrived."""
    seen = []
    for r in sorted(reqs, key=lambda r: r.mono):
        if 200 <= r.status < 300 and r.webhook_id not in [w for w, _ in seen]:
            seen.append((r.webhook_id, r.type))
    return [t for _, t in seen]


# ------------------------------------------------------------------ what arrives
def test_created_arrives_signed_with_the_conversation_as_get_shows_it(make_server, rcv):
    srv = start(make_server)
    sub = subscribe(srv, rcv)
    assert set(sub.created) >= {"id", "url", "eventTypes", "enabled", "secret"}, sub.created
    assert sub.created["url"] == rcv.url(sub.name)
    assert sub.created["enabled"] is True
    assert sorted(sub.created["eventTypes"]) == sorted(
        ["conversation.created", "conversation.updated", "conversation.audio_added",
         "conversation.failed", "conversation.deleted"])
    shown = sub.get()
    assert "secret" not in shown and shown["state"] == "active", shown

    cid = f"conv_{uid()}"
    post(srv, make_conv(cid))
    (req,) = sub.wait_delivered(cid, "conversation.created")
    assert req.method == "POST" and req.path == "/" + sub.name
    assert req.headers.get("content-type", "").startswith("application/json"), req.headers
    assert req.signature_ok(sub.secret), req.headers
    assert abs(int(req.headers["webhook-timestamp"]) - time.time()) < 60
    ev = req.event
    assert set(ev) == {"type", "id", "timestamp", "data"}, ev
    assert ev["type"] == "conversation.created"
    assert EVENT_ID_RE.match(ev["id"]) and ev["id"] == req.webhook_id, ev["id"]
    assert PROCESSED_AT_RE.match(ev["timestamp"]), ev["timestamp"]
    assert ev["data"] == conv_json(srv, cid)
    # a wrong secret does not verify: the check above is not vacuous
    assert not req.signature_ok("whsec_" + base64.b64encode(b"x" * 32).decode())
    # the attempt is listed
    (a,) = wait_until(lambda: attempts_of(sub, ev["id"]), what="the attempt listed")
    assert (a["type"], a["attempt"], a["statusCode"], a["outcome"]) == \
        ("conversation.created", 1, 200, "delivered"), a
    assert isinstance(a["latencyMs"], int) and a["latencyMs"] >= 0, a
    assert UTC_TS_RE.match(a["at"]), a
    sub.assert_all_signed()


def test_an_upper_case_scheme_is_delivered_to(make_server, rcv):
    """HTTP:// is accepted (RFC 3986: the scheme is case-insensitive), and libcurl sends to it
    as to http://: the event arrives and the attempt is listed delivered."""
    srv = start(make_server)
    name = "hook-" + uid()[:12]
    url = rcv.url(name)
    assert url.startswith("http://"), url
    r = srv.request("POST", "/api/v1/subscriptions", json={"url": "HTTP://" + url[7:]})
    assert r.status_code == 201, r.text
    sub = Sub(srv, rcv, name, unwrap(r))
    assert sub.get()["url"] == "HTTP://" + url[7:]
    cid = f"conv_{uid()}"
    post(srv, make_conv(cid))
    (req,) = sub.wait_delivered(cid, "conversation.created")
    assert req.signature_ok(sub.secret), req.headers
    (a,) = wait_until(lambda: attempts_of(sub, req.webhook_id), what="the attempt listed")
    assert (a["statusCode"], a["outcome"]) == (200, "delivered"), a


def test_changed_redelivery_is_updated_identical_is_nothing(make_server, rcv):
    srv = start(make_server)
    sub = subscribe(srv, rcv)
    body = make_conv()
    cid = body["conversationId"]
    post(srv, body)
    first = conv_json(srv, cid)
    post(srv, body)  # byte-identical redelivery: nothing changed, no event
    changed = dict(body, transcript=body["transcript"] + [
        {"timestamp": "2024-01-15T10:32:00Z", "speaker": "user", "content": "Thanks",
         "messageId": "msg_3"}])
    post(srv, changed)
    second = conv_json(srv, cid)
    sub.wait_delivered(cid, "conversation.updated")
    # a later conversation's arrival shows the outbox was read past everything above
    marker = f"conv_{uid()}"
    post(srv, make_conv(marker))
    sub.wait_delivered(marker, "conversation.created")
    reqs = sub.delivered(cid=cid)
    assert [r.type for r in reqs] == ["conversation.created", "conversation.updated"], \
        [(r.type, r.webhook_id) for r in reqs]
    assert reqs[0].event["data"] == first
    assert reqs[1].event["data"] == second
    assert len(second["transcript"]) == 3
    assert reqs[0].webhook_id != reqs[1].webhook_id
    sub.assert_all_signed()


def test_erasure_sends_deleted_and_withdraws_what_was_waiting(make_server, rcv):
    """DELETE sends conversation.deleted; the conversation's earlier event that was still
    waiting for a retry is erased with it and never goes out afterwards."""
    srv = start(make_server, schedule="0,600")
    sub = subscribe(srv, rcv)
    cid, waiting = f"conv_{uid()}", f"conv_{uid()}"
    post(srv, make_conv(cid))
    sub.wait_delivered(cid, "conversation.created")

    fail = rcv.answer(500, cids={waiting})
    post(srv, make_conv(waiting))
    rcv.wait(lambda: sub.requests(cid=waiting), WAIT, "the first (failing) attempt")
    rcv.remove_rule(fail)  # the receiver is fine again; the next attempt is 600 s away
    for c in (cid, waiting):
        r = srv.request("DELETE", "/api/v1/conversations/" + quote(c, safe=""))
        assert r.status_code == 200, r.text
    for c in (cid, waiting):
        (req,) = sub.wait_delivered(c, "conversation.deleted")
        assert req.event["data"] == {"conversationId": c, "reason": "erased"}, req.event
    # the waiting created event did not go out after the erasure (it would have to come first:
    # events of one conversation are delivered in order)
    assert [r.type for r in sub.requests(cid=waiting)] == \
        ["conversation.created", "conversation.deleted"]
    assert not sub.delivered(cid=waiting, type="conversation.created")
    sub.assert_all_signed()


def test_retention_sends_deleted_expired(make_server, rcv):
    srv = start(make_server, RETENTION_DAYS="30")
    sub = subscribe(srv, rcv)
    old, young = f"conv_{uid()}", f"conv_{uid()}"
    for c in (old, young):
        post(srv, make_conv(c))
        sub.wait_delivered(c, "conversation.created")
    age_conversation(srv, old, days=40)
    (req,) = sub.wait_delivered(old, "conversation.deleted", timeout=60)
    assert req.event["data"] == {"conversationId": old, "reason": "expired"}, req.event
    assert srv.get_conv(old).status_code == 404
    assert srv.get_conv(young).status_code == 200
    assert [r.type for r in sub.requests(cid=young)] == ["conversation.created"]
    sub.assert_all_signed()


def test_event_types_and_account_filters(make_server, rcv):
    srv = start(make_server)
    acc = "acc-" + uid()[:10]
    every = subscribe(srv, rcv, "every")
    updates = subscribe(srv, rcv, "updates", eventTypes=["conversation.updated"])
    mine = subscribe(srv, rcv, "mine", accountId=acc)
    assert updates.created["eventTypes"] == ["conversation.updated"]

    ours, theirs = make_conv(accountId=acc), make_conv(accountId="acc-other-" + uid()[:6])
    for b in (ours, theirs):
        post(srv, b)
        post(srv, dict(b, metadata=dict(b["metadata"], duration=301)))
    # markers last: once they arrive, the subscription's cursor has passed everything above
    marker = make_conv(accountId=acc)
    post(srv, marker)
    post(srv, dict(marker, metadata=dict(marker["metadata"], duration=302)))
    mk = marker["conversationId"]

    every.wait_delivered(mk, "conversation.updated")
    updates.wait_delivered(mk, "conversation.updated")
    mine.wait_delivered(mk, "conversation.updated")
    for b in (ours, theirs):
        every.wait_delivered(b["conversationId"], "conversation.updated")
        updates.wait_delivered(b["conversationId"], "conversation.updated")
    mine.wait_delivered(ours["conversationId"], "conversation.updated")
    time.sleep(0.5)  # anything wrongly fanned out would be in flight by now

    assert {r.type for r in updates.requests()} == {"conversation.updated"}
    assert len(updates.requests()) == 3
    got = {(r.conversation_id, r.type) for r in mine.requests()}
    assert got == {(c, t) for c in (ours["conversationId"], mk)
                   for t in ("conversation.created", "conversation.updated")}, got
    assert len(mine.requests()) == 4
    assert len(every.requests()) == 6
    # the same event is byte for byte the same to every subscriber
    for r in updates.requests():
        twin = [x for x in every.requests() if x.webhook_id == r.webhook_id]
        assert len(twin) == 1 and twin[0].body == r.body
    for s in (every, updates, mine):
        s.assert_all_signed()


def test_a_filter_changed_while_events_wait_drops_what_it_no_longer_wants(make_server, rcv):
    """Events that waited under a subscription's old filter are not sent once it wants others:
    re-pointed to another account and URL (another tenant's endpoint, say) it never sends the
    first account's conversations there; with its event types narrowed it never sends a type it
    no longer takes. What the new filter wants flows."""
    srv = start(make_server)
    acc1, acc2 = "acc-1-" + uid()[:8], "acc-2-" + uid()[:8]
    moved = subscribe(srv, rcv, "first-tenant", accountId=acc1, enabled=False)
    narrowed = subscribe(srv, rcv, "narrowed", enabled=False)
    c1 = make_conv(accountId=acc1)
    post(srv, c1)
    wait_until(lambda: (health_backlog(srv) or 0) >= 2, what="c1's event waiting for both")
    moved.patch(url=rcv.url("second-tenant"), accountId=acc2)
    narrowed.patch(eventTypes=["conversation.deleted"])
    # what waited went with the old filters (health's counts are at most a second old)
    wait_until(lambda: health_backlog(srv) == 0, what="nothing waiting any more")
    moved.patch(enabled=True)
    narrowed.patch(enabled=True)
    c2 = make_conv(accountId=acc2)
    post(srv, c2)
    rcv.wait(lambda: rcv.delivered("second-tenant", cid=c2["conversationId"],
                                   type="conversation.created"), WAIT, "acc2's event")
    time.sleep(1.0)  # a waiting event of c1 would have gone out by now (enabled, due at once)
    r = srv.request("DELETE", "/api/v1/conversations/" + quote(c1["conversationId"], safe=""))
    assert r.status_code == 200, r.text
    narrowed.wait_delivered(c1["conversationId"], "conversation.deleted")
    time.sleep(0.5)
    assert [(x.conversation_id, x.type) for x in rcv.requests("second-tenant")] == \
        [(c2["conversationId"], "conversation.created")]
    assert not moved.requests()  # nothing ever went to the first tenant's URL either
    assert [(x.conversation_id, x.type) for x in narrowed.requests()] == \
        [(c1["conversationId"], "conversation.deleted")]


def test_a_filter_changed_while_an_event_is_in_flight_keeps_its_order_and_attempt(make_server,
                                                                                 rcv):
    """An event already being sent when the filter changes finishes as any: its answer is
    recorded, and the conversation's next event (which the new filter wants) is sent only
    after it, never beside it."""
    srv = start(make_server, timeout=10)
    sub = subscribe(srv, rcv)
    body = make_conv()
    cid = body["conversationId"]
    slow = rcv.answer(200, cids={cid}, hang=3)
    post(srv, body)
    rcv.wait(lambda: sub.requests(cid=cid, type="conversation.created"), WAIT, "created sent")
    rcv.remove_rule(slow)  # the updated event is answered at once once it goes
    post(srv, dict(body, metadata=dict(body["metadata"], duration=301)))
    sub.patch(eventTypes=["conversation.updated"])
    (upd,) = sub.wait_delivered(cid, "conversation.updated")
    (created,) = sub.requests(cid=cid, type="conversation.created")
    assert created.answered_mono > 0 and upd.mono >= created.answered_mono, \
        (created.answered_mono, upd.mono)
    attempts = wait_until(lambda: len(sub.attempts()) >= 2 and sub.attempts(),
                          what="both attempts recorded")
    assert sorted((a["type"], a["outcome"]) for a in attempts) == \
        [("conversation.created", "delivered"), ("conversation.updated", "delivered")], attempts


def test_elevenlabs_events_arrive_typed(make_server, rcv):
    srv = start(make_server, ELEVENLABS_WEBHOOK_SECRET=EL_SECRET)
    sub = subscribe(srv, rcv)
    cid, audio_only, failed = f"conv_{uid()}", f"conv_{uid()}", f"conv_{uid()}"
    el_post(srv, "post_call_transcription_success.json", cid)
    created = conv_json(srv, cid)
    el_post(srv, "post_call_audio_small.json", cid)
    el_post(srv, "post_call_audio_small.json", audio_only)
    el_post(srv, "call_initiation_failure_sip.json", failed)

    sub.wait_delivered(cid, "conversation.audio_added")
    assert [r.type for r in sub.delivered(cid=cid)] == \
        ["conversation.created", "conversation.audio_added"]
    assert sub.delivered(cid=cid)[0].event["data"] == created

    raw = json.loads((FIXTURES / "post_call_audio_small.json").read_bytes())
    nbytes = len(base64.b64decode(raw["data"]["full_audio"]))
    (req,) = sub.wait_delivered(audio_only, "conversation.audio_added")
    assert req.event["data"] == {"conversationId": audio_only, "audio": {
        "bytes": nbytes, "url": f"/api/v1/conversations/{audio_only}/audio"}}, req.event

    (req,) = sub.wait_delivered(failed, "conversation.failed")
    assert req.event["data"] == conv_json(srv, failed)
    assert req.event["data"]["status"] == "failed"
    sub.assert_all_signed()


# ------------------------------------------------------------------ failures and retries
def test_retries_follow_the_schedule_then_dead_letter(make_server, rcv):
    srv = start(make_server, schedule="0,2,3")
    sub = subscribe(srv, rcv)
    bad, good = f"conv_{uid()}", f"conv_{uid()}"
    fail = rcv.answer(500, cids={bad}, body=b"database on fire, try later")
    post(srv, make_conv(bad))
    rcv.wait(lambda: sub.requests(cid=bad), WAIT, "the first attempt")
    post(srv, make_conv(good))  # a success after the first attempt: no pause, dead letter
    sub.wait_delivered(good, "conversation.created")

    reqs = rcv.wait(lambda: len(sub.requests(cid=bad)) >= 3 and sub.requests(cid=bad), WAIT,
                    "three attempts")
    eid = reqs[0].webhook_id
    assert all(r.webhook_id == eid for r in reqs)
    assert all(r.body == reqs[0].body for r in reqs)
    assert reqs[1].mono - reqs[0].mono >= 1.9, [r.mono for r in reqs]
    assert reqs[2].mono - reqs[1].mono >= 2.9, [r.mono for r in reqs]

    tried = wait_until(lambda: [a for a in attempts_of(sub, eid)] if any(
        a["outcome"] == "failed" for a in attempts_of(sub, eid)) else None,
        what="the dead letter listed")
    assert [(a["attempt"], a["statusCode"], a["outcome"]) for a in tried] == \
        [(1, 500, "retrying"), (2, 500, "retrying"), (3, 500, "failed")], tried
    assert all(a["response"].startswith("database on fire") for a in tried), tried
    assert sub.state() == "active"

    # a dead letter does not hold the conversation's later events back
    rcv.remove_rule(fail)
    post(srv, make_conv(bad, emailId="changed@example.com"))
    sub.wait_delivered(bad, "conversation.updated")
    time.sleep(1.0)
    assert len(sub.requests(cid=bad, type="conversation.created")) == 3  # never a fourth
    sub.assert_all_signed()


def test_pause_keeps_events_waiting_and_enable_delivers_them_in_order(make_server, rcv):
    srv = start(make_server, schedule="0,1,1")
    sub = subscribe(srv, rcv)
    rcv.answer(500)
    a, b = make_conv(), make_conv()
    post(srv, a)
    post(srv, dict(a, emailId="second@example.com"))
    post(srv, b)
    wait_until(lambda: sub.state() == "paused", what="the subscription paused")
    # the attempt that used the schedule up is listed as failed, as any exhausted one
    assert any(x["outcome"] == "failed" and x["attempt"] == 3 for x in sub.attempts())
    assert all(x["outcome"] in ("retrying", "failed") for x in sub.attempts())
    time.sleep(0.5)  # attempts already in flight end
    seen = len(sub.requests())
    c = make_conv()
    post(srv, c)  # arrives while paused: waits
    post(srv, dict(b, emailId="second@example.com"))
    time.sleep(2.0)
    assert len(sub.requests()) == seen, "a paused subscription was sent events"
    assert sub.state() == "paused"

    rcv.clear_rules()
    shown = sub.patch(enabled=True)
    assert shown["state"] == "active", shown
    for body, types in ((a, ["conversation.created", "conversation.updated"]),
                        (b, ["conversation.created", "conversation.updated"]),
                        (c, ["conversation.created"])):
        cid = body["conversationId"]
        sub.wait_delivered(cid, types[-1])
        rcv.wait(lambda: len(sub.delivered(cid=cid)) >= len(types), WAIT, f"all of {cid}")
        assert first_2xx_order(sub.requests(cid=cid)) == types
        delivered = sub.delivered(cid=cid)
        assert len(delivered) == len(types), [(r.type, r.webhook_id) for r in delivered]
        # the events that failed before the pause went out with their first webhook-id
        for r in delivered:
            tried = [x for x in sub.requests(cid=cid, type=r.type)]
            assert {x.webhook_id for x in tried} == {r.webhook_id}
    assert sub.state() == "active"
    sub.assert_all_signed()


def test_410_disables_events_wait_and_enable_delivers(make_server, rcv):
    srv = start(make_server)
    sub = subscribe(srv, rcv)
    gone = rcv.answer(410)
    a = make_conv()
    post(srv, a)
    wait_until(lambda: sub.state() == "disabled", what="the subscription disabled")
    shown = sub.get()
    assert shown["disabledReason"] == "gone", shown
    first = rcv.wait(lambda: [r for r in sub.requests() if r.status == 410], WAIT, "the 410")
    assert len(sub.requests()) == 1
    (att,) = wait_until(lambda: sub.attempts(), what="the attempt listed")
    assert (att["statusCode"], att["outcome"]) == (410, "disabled"), att

    b = make_conv()
    post(srv, b)
    post(srv, dict(a, emailId="second@example.com"))
    time.sleep(2.0)
    assert len(sub.requests()) == 1, "a disabled subscription was sent events"

    rcv.remove_rule(gone)
    shown = sub.patch(enabled=True)
    assert shown["state"] == "active", shown
    sub.wait_delivered(a["conversationId"], "conversation.updated")
    sub.wait_delivered(b["conversationId"], "conversation.created")
    assert first_2xx_order(sub.requests(cid=a["conversationId"])) == \
        ["conversation.created", "conversation.updated"]
    (again,) = sub.delivered(cid=a["conversationId"], type="conversation.created")
    assert again.webhook_id == first[0].webhook_id and again.body == first[0].body
    sub.assert_all_signed()


def test_retry_after_is_honoured(make_server, rcv):
    srv = start(make_server, schedule="0,1,5")
    sub = subscribe(srv, rcv)
    p, q = f"conv_{uid()}", f"conv_{uid()}"
    answered = set()

    def rule(req):
        cid = req.conversation_id
        if cid not in (p, q) or cid in answered:
            return None
        answered.add(cid)
        if cid == p:
            return Reply(429, {"Retry-After": "3"})
        when = email.utils.formatdate(int(time.time()) + 4, usegmt=True)
        return Reply(503, {"Retry-After": when})

    def too_long(req):  # an hour: capped at the schedule's longest wait (5 s)
        if req.conversation_id == far and not any(x.status for x in sub.requests(cid=far)):
            return Reply(429, {"Retry-After": "3600"})
        return None

    far = f"conv_{uid()}"
    rcv.rule(rule)
    rcv.rule(too_long)
    post(srv, make_conv(p))
    post(srv, make_conv(q))
    post(srv, make_conv(far))
    sub.wait_delivered(p, "conversation.created")
    sub.wait_delivered(q, "conversation.created")
    sub.wait_delivered(far, "conversation.created")
    rf = sub.requests(cid=far)
    assert [r.status for r in rf] == [429, 200], [r.status for r in rf]
    assert 4.5 <= rf[1].mono - rf[0].mono < 20, rf[1].mono - rf[0].mono
    rp, rq = sub.requests(cid=p), sub.requests(cid=q)
    assert [r.status for r in rp] == [429, 200] and [r.status for r in rq] == [503, 200]
    # the schedule's 1 s would have been sooner: Retry-After won
    assert rp[1].mono - rp[0].mono >= 2.9, rp[1].mono - rp[0].mono
    assert rq[1].mono - rq[0].mono >= 2.5, rq[1].mono - rq[0].mono
    assert rp[0].webhook_id == rp[1].webhook_id
    # the attempt that succeeded is recorded once its answer is in (the receiver saw it first)
    tried = wait_until(lambda: len(attempts_of(sub, rp[0].webhook_id)) >= 2 and
                       attempts_of(sub, rp[0].webhook_id), what="both attempts listed")
    assert [(a["statusCode"], a["outcome"]) for a in tried] == \
        [(429, "retrying"), (200, "delivered")], tried
    sub.assert_all_signed()


def test_retry_after_hold_survives_a_kill9_restart(make_server, rcv):
    """A 429 with Retry-After holds the whole subscription, kept in the store: the server is
    killed (SIGKILL) right after the answer was recorded and started again; neither the held
    event nor another conversation's event posted meanwhile goes out before the hold ends, and
    both are delivered after it. (Before, the hold lived in the dispatcher's memory: the other
    conversation's event went out as soon as the server was back.)"""
    hold = 10
    srv = start(make_server, schedule="0,1,30")
    sub = subscribe(srv, rcv)
    p, q = f"conv_{uid()}", f"conv_{uid()}"

    def rule(req):
        if req.conversation_id == p and not any(x.status for x in sub.requests(cid=p)):
            return Reply(429, {"Retry-After": str(hold)})
        return None

    rcv.rule(rule)
    post(srv, make_conv(p))
    (first,) = wait_until(lambda: [r for r in sub.requests(cid=p) if r.status],
                          what="the first attempt answered")
    assert first.status == 429
    wait_until(lambda: attempts_of(sub, first.webhook_id), what="the 429 recorded")
    post(srv, make_conv(q))
    srv.kill9()
    srv.start()
    sub.wait_delivered(p, "conversation.created")
    sub.wait_delivered(q, "conversation.created")
    rp, rq = sub.requests(cid=p), sub.requests(cid=q)
    assert [r.status for r in rp] == [429, 200], [r.status for r in rp]
    assert rp[1].webhook_id == first.webhook_id
    # the hold runs from when the answer was recorded, after it arrived
    assert rp[1].mono - first.mono >= hold - 0.3, rp[1].mono - first.mono
    assert [r.status for r in rq] == [200], [r.status for r in rq]
    assert rq[0].mono - first.mono >= hold - 0.3, rq[0].mono - first.mono
    # and it is not held longer than asked (the schedule's 30 s would be)
    assert rp[1].mono - first.mono < hold + 15, rp[1].mono - first.mono
    sub.assert_all_signed()


def test_retry_after_hold_is_shown_and_lifted_by_enabling(make_server, rcv):
    """A stored Retry-After hold is visible (GET and the list: heldUntil) and PATCH
    {"enabled": true} lifts it: the held event goes out at once, not after the hold (60 s; the
    schedule's longest wait, 120 s, caps it)."""
    hold = 60
    srv = start(make_server, schedule="0,1,120")
    sub = subscribe(srv, rcv)
    cid = f"conv_{uid()}"

    def rule(req):
        if req.conversation_id == cid and not any(x.status for x in sub.requests(cid=cid)):
            return Reply(429, {"Retry-After": str(hold)})
        return None

    rcv.rule(rule)
    assert "heldUntil" not in sub.get()
    post(srv, make_conv(cid))
    (first,) = wait_until(lambda: [r for r in sub.requests(cid=cid) if r.status],
                          what="the first attempt answered")
    assert first.status == 429
    got = wait_until(lambda: "heldUntil" in sub.get() and sub.get(), what="heldUntil shown")
    until = datetime.fromisoformat(got["heldUntil"].replace("Z", "+00:00"))
    left = (until - datetime.now(timezone.utc)).total_seconds()
    assert hold - 15 < left <= hold + 2, left
    assert got["state"] == "active"
    listed = unwrap(srv.get("/api/v1/subscriptions"))
    items = listed["subscriptions"] if isinstance(listed, dict) else listed
    (mine,) = [x for x in items if x["id"] == sub.id]
    assert mine["heldUntil"] == got["heldUntil"]
    # health counts it, as GET shows it
    wait_health_held(srv, {"secret_unreadable": 0, "sealed_unreadable": 0, "retry_after": 1},
                     "health to count the Retry-After hold")
    assert_health_names_no_subscription(srv, sub.id)
    lifted = time.monotonic()
    assert "heldUntil" not in sub.patch(enabled=True)
    assert "heldUntil" not in sub.get()
    wait_health_held(srv, {}, "health to no longer list the lifted hold")
    sub.wait_delivered(cid, "conversation.created", timeout=20)
    assert time.monotonic() - lifted < 20
    assert [r.status for r in sub.requests(cid=cid)] == [429, 200]
    sub.assert_all_signed()


def test_a_hanging_receiver_times_out_and_is_retried(make_server, rcv):
    srv = start(make_server, schedule="0,1,1", timeout=1)
    sub = subscribe(srv, rcv)
    cid = f"conv_{uid()}"
    hung = set()

    def rule(req):
        if req.conversation_id == cid and not hung:
            hung.add(cid)
            return Reply(200, hang=10)
        return None

    rcv.rule(rule)
    post(srv, make_conv(cid))
    sub.wait_delivered(cid, "conversation.created")
    reqs = sub.requests(cid=cid)
    assert len(reqs) == 2, [(r.status, r.mono) for r in reqs]
    gap = reqs[1].mono - reqs[0].mono
    assert 1.9 <= gap < 8, gap  # timeout 1 s + schedule 1 s; not after the 10 s hang
    assert reqs[0].webhook_id == reqs[1].webhook_id
    tried = wait_until(lambda: len(attempts_of(sub, reqs[0].webhook_id)) == 2 and
                       attempts_of(sub, reqs[0].webhook_id), what="both attempts listed")
    assert tried[0]["statusCode"] is None and tried[0]["outcome"] == "retrying", tried
    assert tried[0]["response"], tried  # why there was no answer
    assert 900 <= tried[0]["latencyMs"] < 5000, tried
    assert (tried[1]["statusCode"], tried[1]["outcome"]) == (200, "delivered"), tried
    sub.assert_all_signed()


class StallingReceiver:
    """Answers a path ending in "status" with a 200 status line and then nothing, any other with
    the headers and first bytes of a body announced far longer, and stalls either way; a path
    ending in "s999" gets a whole answer with status 999. Keeps the paths requested."""

    def __init__(self):
        self.paths = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path):
        return f"http://127.0.0.1:{self.port}/{path}"

    def _accept(self):
        while not self.stop.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        with c:
            data = b""
            while b"\r\n\r\n" not in data:
                d = c.recv(65536)
                if not d:
                    return
                data += d
            head, rest = data.split(b"\r\n\r\n", 1)
            n = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")), 0)
            while len(rest) < n:
                d = c.recv(65536)
                if not d:
                    return
                rest += d
            path = head.split(b" ")[1].decode()
            self.paths.append(path)
            if path.endswith("s999"):
                c.sendall(b"HTTP/1.1 999 Weird\r\nContent-Length: 2\r\n\r\nok")
                return
            if path.endswith("status"):
                c.sendall(b"HTTP/1.1 200 OK\r\n")
            else:
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\nabc")
            self.stop.wait(30)

    def close(self):
        self.stop.set()
        self.sock.close()


@pytest.mark.parametrize("stall", ["status", "body"])
def test_a_2xx_that_stalls_after_its_status_line_does_not_hold_the_next_event(make_server,
                                                                             stall):
    """A receiver that says 200 and then stalls (its headers or body never end) has the event:
    it is delivered at once, and the conversation's next event does not wait the whole timeout
    for the answer's rest."""
    stalling = StallingReceiver()
    try:
        srv = start(make_server, timeout=10)
        r = srv.request("POST", "/api/v1/subscriptions", json={"url": stalling.url(stall)})
        assert r.status_code == 201, r.text
        sub_id = unwrap(r)["id"]
        body = make_conv()
        t0 = time.monotonic()
        post(srv, body)
        for d in (301, 302):
            post(srv, dict(body, metadata=dict(body["metadata"], duration=d)))

        def delivered():
            r = srv.get(f"/api/v1/subscriptions/{sub_id}/deliveries", params={"limit": 100})
            assert r.status_code == 200, r.text
            return [d for d in unwrap(r)["deliveries"] if d["outcome"] == "delivered"]
        got = wait_until(lambda: len(delivered()) >= 3 and delivered(), timeout=WAIT,
                         what="three events delivered")
        # before: each waited out the 10 s timeout, one after the other (they are in order)
        assert time.monotonic() - t0 < 8, [d["latencyMs"] for d in got]
        assert all(d["statusCode"] == 200 and d["latencyMs"] < 5000 for d in got), got
        assert len(stalling.paths) == 3, stalling.paths  # none sent again
    finally:
        stalling.close()


def test_an_answer_that_is_no_http_status_is_recorded_as_such(make_server):
    """A receiver answering status 999 did not answer HTTP: the attempt says so (it said "No
    error") and is retried."""
    odd = StallingReceiver()
    try:
        srv = start(make_server, schedule="0,600")
        r = srv.request("POST", "/api/v1/subscriptions", json={"url": odd.url("s999")})
        assert r.status_code == 201, r.text
        sub_id = unwrap(r)["id"]
        post(srv, make_conv())

        def attempts():
            r = srv.get(f"/api/v1/subscriptions/{sub_id}/deliveries")
            assert r.status_code == 200, r.text
            return unwrap(r)["deliveries"]
        (a,) = wait_until(attempts, what="the first attempt")
        assert a["statusCode"] is None and a["outcome"] != "delivered", a
        assert "999" in a["response"] and "not a final HTTP answer" in a["response"], a
    finally:
        odd.close()


def test_redirects_are_not_followed(make_server, rcv):
    srv = start(make_server, schedule="0,600")
    sub = subscribe(srv, rcv)
    rcv.answer(307, path=sub.name, headers={"Location": rcv.url("elsewhere")})
    cid = f"conv_{uid()}"
    post(srv, make_conv(cid))
    (req,) = rcv.wait(lambda: sub.requests(cid=cid), WAIT, "the attempt")
    (a,) = wait_until(lambda: attempts_of(sub, req.webhook_id), what="the attempt listed")
    assert (a["statusCode"], a["outcome"]) == (307, "retrying"), a
    time.sleep(0.5)
    assert not rcv.requests("elsewhere")


def test_ordering_per_conversation_under_retries(make_server, rcv):
    srv = start(make_server, schedule="0,1,1")
    sub = subscribe(srv, rcv)
    bodies = [make_conv() for _ in range(4)]
    cids = {b["conversationId"] for b in bodies}
    failures = {}

    def rule(req):  # every created event fails its first two attempts
        if req.conversation_id in cids and req.type == "conversation.created":
            n = failures.get(req.webhook_id, 0)
            if n < 2:
                failures[req.webhook_id] = n + 1
                return Reply(500)
        return None

    rcv.rule(rule)
    for b in bodies:
        post(srv, b)
        post(srv, dict(b, emailId="v2@example.com"))
        post(srv, dict(b, emailId="v3@example.com"))
    for b in bodies:
        cid = b["conversationId"]
        rcv.wait(lambda: len(sub.delivered(cid=cid)) >= 3, WAIT, f"the three events of {cid}")
    for b in bodies:
        reqs = sorted(sub.requests(cid=b["conversationId"]), key=lambda r: r.mono)
        assert [(r.type, r.status) for r in reqs] == [
            ("conversation.created", 500), ("conversation.created", 500),
            ("conversation.created", 200), ("conversation.updated", 200),
            ("conversation.updated", 200)], [(r.type, r.status) for r in reqs]
        assert [r.event["data"]["emailId"] for r in reqs[2:]] == \
            [b["emailId"], "v2@example.com", "v3@example.com"]
    sub.assert_all_signed()


def test_a_deleted_subscription_is_sent_nothing_more(make_server, rcv):
    srv = start(make_server, schedule="0,600")
    gone, stays = subscribe(srv, rcv), subscribe(srv, rcv)
    waiting = f"conv_{uid()}"
    rcv.answer(500, cids={waiting}, path=gone.name)  # leaves a retry waiting 600 s
    post(srv, make_conv(waiting))
    rcv.wait(lambda: gone.requests(cid=waiting), WAIT, "the failing attempt")
    r = srv.request("DELETE", "/api/v1/subscriptions/" + gone.id)
    assert r.status_code == 204, r.text
    assert srv.get("/api/v1/subscriptions/" + gone.id).status_code == 404
    after = f"conv_{uid()}"
    post(srv, make_conv(after))
    stays.wait_delivered(after, "conversation.created")
    stays.wait_delivered(waiting, "conversation.created")
    time.sleep(1.0)
    assert [r.conversation_id for r in gone.requests()] == [waiting]


def test_sealed_store_delivers_the_opened_event_signed(make_server, rcv):
    """With ENCRYPTION_KEYS the outbox keeps data, account and secret sealed; deliveries carry
    the conversation as GET shows it, signed with the secret given at creation, filtered by
    account — before and after a restart."""
    key = "k1:" + base64.b64encode(hashlib.sha256(b"delivery test key").digest()).decode()
    srv = start(make_server, ENCRYPTION_KEYS=key)
    acc = "acc-" + uid()[:10]
    sub = subscribe(srv, rcv, accountId=acc)
    c1, other = make_conv(accountId=acc), make_conv(accountId="acc-else")
    post(srv, other)
    post(srv, c1)
    (req,) = sub.wait_delivered(c1["conversationId"], "conversation.created")
    assert req.event["data"] == conv_json(srv, c1["conversationId"])
    srv.restart()
    c2 = make_conv(accountId=acc)
    post(srv, c2)
    (req,) = sub.wait_delivered(c2["conversationId"], "conversation.created")
    assert req.event["data"] == conv_json(srv, c2["conversationId"])
    assert not sub.requests(cid=other["conversationId"])
    sub.assert_all_signed()


def sealed_secret(srv, sub_id, value=None):
    """A subscription's sealed secret as stored (bytes), read from the server's own database,
    or (value given) replaced by value (set-up only: damaging a row and mending it)."""
    url = srv.database_url
    if url.startswith("sqlite:"):
        db = sqlite3.connect(url[len("sqlite:"):], timeout=10)
        try:
            if value is None:
                return bytes(db.execute("SELECT secret FROM subscriptions WHERE id = ?",
                                        (sub_id,)).fetchone()[0])
            db.execute("UPDATE subscriptions SET secret = ? WHERE id = ?", (value, sub_id))
            db.commit()
            return value
        finally:
            db.close()
    name = url.rsplit("/", 1)[1]
    if value is None:
        out = pg_cluster().psql("SELECT encode(secret_sealed, 'hex') FROM subscriptions "
                                f"WHERE id = '{sub_id}'", name)
        return bytes.fromhex(out.strip())
    pg_cluster().psql(f"UPDATE subscriptions SET secret_sealed = decode('{value.hex()}', 'hex') "
                      f"WHERE id = '{sub_id}'", name)
    return value


def test_a_secret_that_does_not_open_holds_only_its_subscription(make_server, rcv):
    """One subscription's sealed signing secret no longer opens (damaged, or sealed with a key
    ENCRYPTION_KEYS lost): the API still lists, shows and changes every subscription (the
    secret is only ever shown at creation, reads never open it); the dispatcher sends that one
    nothing, signed or not, records nothing, logs it once and GET shows heldReason; the others
    are delivered to as ever. Once it opens again, what waited goes out, signed."""
    key = "k1:" + base64.b64encode(hashlib.sha256(b"held secret test key").digest()).decode()
    srv = start(make_server, ENCRYPTION_KEYS=key)
    held, fine = subscribe(srv, rcv), subscribe(srv, rcv)
    assert srv.stop() == 0  # a running dispatcher keeps the secret it read
    intact = sealed_secret(srv, held.id)
    assert held.secret.encode() not in intact and len(intact) > 16
    sealed_secret(srv, held.id, intact[:-1] + bytes([intact[-1] ^ 1]))  # its tag no longer fits
    srv.start()
    r = srv.get("/api/v1/subscriptions")
    assert r.status_code == 200, r.text
    assert {s["id"] for s in unwrap(r)["subscriptions"]} >= {held.id, fine.id}
    assert all("secret" not in s for s in unwrap(r)["subscriptions"])
    wait_until(lambda: held.get().get("heldReason") == "secret_unreadable",
               what="GET to show the held subscription")
    shown = held.get()
    assert shown["state"] == "active" and shown["url"] == rcv.url(held.name), shown
    assert "heldReason" not in fine.get()
    listed = {s["id"]: s for s in unwrap(srv.get("/api/v1/subscriptions"))["subscriptions"]}
    assert listed[held.id].get("heldReason") == "secret_unreadable"
    assert "heldReason" not in listed[fine.id]
    # health says one subscription is held and which (the fine one is not listed)
    wait_health_held(srv, {"secret_unreadable": 1, "sealed_unreadable": 0, "retry_after": 0},
                     "health to count the held subscription")
    assert_health_names_no_subscription(srv, held.id)
    assert held.patch(maxPerSecond=50)["maxPerSecond"] == 50

    c1 = make_conv()
    post(srv, c1)
    fine.wait_delivered(c1["conversationId"], "conversation.created")
    time.sleep(1.5)  # a refresh or two of the dispatcher
    assert held.requests() == [], "a delivery went out without its secret"
    assert held.attempts() == []
    lines = [l for l in srv.last_stderr().splitlines()
             if held.id in l and "signing secret" in l and "does not open" in l]
    assert len(lines) == 1, lines
    assert '"level":"error"' in lines[0]
    assert held.secret not in srv.stderr_text() and held.secret[6:] not in srv.stderr_text()

    assert srv.stop() == 0
    sealed_secret(srv, held.id, intact)
    srv.start()
    held.wait_delivered(c1["conversationId"], "conversation.created")
    assert "heldReason" not in held.get()
    wait_health_held(srv, {}, "health to no longer list the mended subscription")
    held.assert_all_signed()
    fine.assert_all_signed()


def sealed_column(srv, sub_id, column, value=None):
    """A subscription's sealed column (url_sealed, account_sealed) as stored (bytes), or (value
    given) replaced by value (set-up only: damaging a row and mending it)."""
    assert column in ("url_sealed", "account_sealed")
    url = srv.database_url
    if url.startswith("sqlite:"):
        db = sqlite3.connect(url[len("sqlite:"):], timeout=10)
        try:
            if value is None:
                return bytes(db.execute(f"SELECT {column} FROM subscriptions WHERE id = ?",
                                        (sub_id,)).fetchone()[0])
            db.execute(f"UPDATE subscriptions SET {column} = ? WHERE id = ?", (value, sub_id))
            db.commit()
            return value
        finally:
            db.close()
    name = url.rsplit("/", 1)[1]
    if value is None:
        out = pg_cluster().psql(f"SELECT encode({column}, 'hex') FROM subscriptions "
                                f"WHERE id = '{sub_id}'", name)
        return bytes.fromhex(out.strip())
    pg_cluster().psql(f"UPDATE subscriptions SET {column} = decode('{value.hex()}', 'hex') "
                      f"WHERE id = '{sub_id}'", name)
    return value


@pytest.mark.parametrize("column", ["url_sealed", "account_sealed"])
def test_a_url_or_account_that_does_not_open_holds_only_its_subscription(make_server, rcv,
                                                                          column):
    """One subscription's sealed URL or account no longer opens (damaged, or sealed with a key
    ENCRYPTION_KEYS lost): the list and GET still answer 200, that one shown with heldReason
    sealed_unreadable; nothing is sent to it (an account that does not open is no "every
    account"), nothing recorded, said once in the log, not every round; the others are
    delivered to as ever. A PATCH that does not replace url and accountId together is refused
    (409); one that does seals them again, and what waited goes out."""
    key = "k1:" + base64.b64encode(hashlib.sha256(b"held sealed test key").digest()).decode()
    srv = start(make_server, ENCRYPTION_KEYS=key)
    acc = "acc-held-" + uid()[:6]
    held, fine = subscribe(srv, rcv, accountId=acc), subscribe(srv, rcv)
    assert srv.stop() == 0
    intact = sealed_column(srv, held.id, column)
    assert len(intact) > 16
    sealed_column(srv, held.id, column, intact[:-1] + bytes([intact[-1] ^ 1]))
    srv.start()
    r = srv.get("/api/v1/subscriptions")
    assert r.status_code == 200, r.text
    listed = {s["id"]: s for s in unwrap(r)["subscriptions"]}
    assert listed[held.id].get("heldReason") == "sealed_unreadable", listed[held.id]
    assert "heldReason" not in listed[fine.id]
    assert listed[fine.id]["url"] == rcv.url(fine.name)
    shown = held.get()
    assert shown["heldReason"] == "sealed_unreadable" and shown["url"] == "", shown
    assert "heldReason" not in fine.get()
    wait_health_held(srv, {"secret_unreadable": 0, "sealed_unreadable": 1, "retry_after": 0},
                     "health to count the held subscription")
    assert_health_names_no_subscription(srv, held.id)

    ours, other = make_conv(accountId=acc), make_conv(accountId="acc-else-" + uid()[:6])
    post(srv, ours)
    post(srv, other)
    fine.wait_delivered(ours["conversationId"], "conversation.created")
    fine.wait_delivered(other["conversationId"], "conversation.created")
    time.sleep(1.5)  # a refresh or two of the dispatcher, fan-out rounds
    c2 = make_conv(accountId=acc)
    post(srv, c2)
    fine.wait_delivered(c2["conversationId"], "conversation.created")
    time.sleep(1.0)
    assert held.requests() == [], "a delivery went out for a subscription that does not open"
    assert held.attempts() == []
    lines = [l for l in srv.last_stderr().splitlines()
             if held.id in l and "URL or account" in l and "does not open" in l]
    # once by the dispatcher, and (account) once by the fan-out: never every round
    assert 1 <= len(lines) <= 2, lines
    assert all('"level":"error"' in l for l in lines)
    assert acc not in srv.stderr_text()

    r = srv.request("PATCH", "/api/v1/subscriptions/" + held.id, json={"maxPerSecond": 50})
    assert "url and accountId together" in assert_error(r, 409, "CONFLICT")["message"]
    r = srv.request("PATCH", "/api/v1/subscriptions/" + held.id, json={"url": rcv.url(held.name)})
    assert_error(r, 409, "CONFLICT")
    mended = held.patch(url=rcv.url(held.name), accountId=acc)
    assert "heldReason" not in mended and mended["url"] == rcv.url(held.name), mended
    assert mended["accountId"] == acc
    wait_health_held(srv, {}, "health to no longer list the mended subscription")
    held.wait_delivered(ours["conversationId"], "conversation.created")
    held.wait_delivered(c2["conversationId"], "conversation.created")
    time.sleep(0.5)
    assert held.delivered(cid=other["conversationId"]) == []
    held.assert_all_signed()
    assert "heldReason" not in held.get()


def test_a_url_alone_that_does_not_open_mended_to_another_account(make_server, rcv):
    """Only a subscription's sealed URL does not open (its account does): nothing is sent or
    made waiting under the account it had (fan-out passes it by, as for an account that does
    not open), its events wait; mended with a new URL and another account, the events that
    waited go out as that account filter says, and none of the old account's."""
    key = "k1:" + base64.b64encode(hashlib.sha256(b"held url test key").digest()).decode()
    srv = start(make_server, ENCRYPTION_KEYS=key)
    acc, acc2 = "acc-url-" + uid()[:6], "acc-url2-" + uid()[:6]
    held, fine = subscribe(srv, rcv, accountId=acc), subscribe(srv, rcv)
    assert srv.stop() == 0
    intact = sealed_column(srv, held.id, "url_sealed")
    sealed_column(srv, held.id, "url_sealed", intact[:-1] + bytes([intact[-1] ^ 1]))
    srv.start()
    assert held.get()["heldReason"] == "sealed_unreadable"
    ours, theirs = make_conv(accountId=acc), make_conv(accountId=acc2)
    post(srv, ours)
    post(srv, theirs)
    fine.wait_delivered(ours["conversationId"], "conversation.created")
    fine.wait_delivered(theirs["conversationId"], "conversation.created")
    time.sleep(1.5)  # fan-out rounds
    assert held.requests() == [] and held.attempts() == []
    mended = held.patch(url=rcv.url(held.name), accountId=acc2)
    assert "heldReason" not in mended and mended["accountId"] == acc2, mended
    held.wait_delivered(theirs["conversationId"], "conversation.created")
    time.sleep(1.0)
    assert held.delivered(cid=ours["conversationId"]) == []
    held.assert_all_signed()


@pytest.mark.parametrize("column", ["url_sealed", "account_sealed"])
def test_a_replay_is_refused_while_the_url_or_account_does_not_open(make_server, rcv, column):
    """A replay of a subscription whose sealed URL (or account) does not open is refused as for
    an account (409 CONFLICT: PATCH url and accountId first; nothing made waiting): its events would otherwise wait under
    the account it had, and a mend to another account (PATCH url+accountId) would send that
    old account's conversations to the new URL."""
    key = "k1:" + base64.b64encode(hashlib.sha256(b"held replay test key").digest()).decode()
    srv = start(make_server, ENCRYPTION_KEYS=key)
    acc, acc2 = "acc-rp-" + uid()[:6], "acc-rp2-" + uid()[:6]
    held = subscribe(srv, rcv, accountId=acc)
    ours = make_conv(accountId=acc)
    post(srv, ours)
    held.wait_delivered(ours["conversationId"], "conversation.created")
    wait_until(lambda: sum(a["outcome"] == "delivered" for a in held.attempts()) == 1,
               what="the delivery recorded")
    assert srv.stop() == 0
    intact = sealed_column(srv, held.id, column)
    sealed_column(srv, held.id, column, intact[:-1] + bytes([intact[-1] ^ 1]))
    srv.start()
    assert held.get()["heldReason"] == "sealed_unreadable"
    r = held.replay("2000-01-01T00:00:00Z")
    assert_error(r, 409, "CONFLICT")
    mended = held.patch(url=rcv.url(held.name), accountId=acc2)
    assert "heldReason" not in mended and mended["accountId"] == acc2, mended
    theirs = make_conv(accountId=acc2)
    post(srv, theirs)
    held.wait_delivered(theirs["conversationId"], "conversation.created")
    time.sleep(1.0)
    assert len(held.delivered(cid=ours["conversationId"])) == 1, \
        "the old account's conversation was sent again after the mend"
    r = held.replay("2000-01-01T00:00:00Z")  # mended: replay works, as its new account says
    assert r.status_code == 202 and unwrap(r) == {"replayed": 1}, r.text


def health_backlog(srv):
    r = srv.get("/api/v1/health", key=None)
    assert r.status_code == 200, r.text
    outbox = r.json()["outbox"]
    return None if outbox is None else outbox["backlog"]


def test_health_backlog_counts_the_events_a_held_subscription_waits_for(make_server, rcv):
    """Health's outbox backlog counts the events waiting for a subscription, a held one
    (sealed_unreadable) included, as its account filter says, the same on both backends: two
    of its account's events and one of another account make a backlog of 2; mended, 0."""
    key = "k1:" + base64.b64encode(hashlib.sha256(b"held backlog test key").digest()).decode()
    srv = start(make_server, ENCRYPTION_KEYS=key)
    acc = "acc-bl-" + uid()[:6]
    held = subscribe(srv, rcv, accountId=acc)
    assert srv.stop() == 0
    intact = sealed_column(srv, held.id, "url_sealed")
    sealed_column(srv, held.id, "url_sealed", intact[:-1] + bytes([intact[-1] ^ 1]))
    srv.start()
    assert held.get()["heldReason"] == "sealed_unreadable"
    ours = [make_conv(accountId=acc) for _ in range(2)]
    for b in ours + [make_conv(accountId="acc-bl-else-" + uid()[:6])]:
        post(srv, b)
    wait_until(lambda: health_backlog(srv) == 2,
               what="health's backlog to count the held subscription's two events")
    time.sleep(1.5)  # fan-out rounds pass it by: still its two events, not the other account's
    assert health_backlog(srv) == 2
    held.patch(url=rcv.url(held.name), accountId=acc)
    for b in ours:
        held.wait_delivered(b["conversationId"], "conversation.created")
    wait_until(lambda: health_backlog(srv) == 0, what="health's backlog to empty once mended")


# ------------------------------------------------------------------ replay, throttling
def test_replay_resends_with_the_original_ids(make_server, rcv):
    srv = start(make_server)
    sub = subscribe(srv, rcv)
    before = rfc3339(time.time() - 1)
    first = [make_conv() for _ in range(2)]
    for b in first:
        post(srv, b)
    middle = rfc3339(time.time())
    last = make_conv()
    post(srv, last)
    for b in first + [last]:
        sub.wait_delivered(b["conversationId"], "conversation.created")
    originals = {r.webhook_id: r.body for r in sub.delivered()}
    assert len(originals) == 3
    # every delivery recorded as done (replay during a delivery in flight: the next test)
    wait_until(lambda: sum(a["outcome"] == "delivered" for a in sub.attempts()) == 3,
               what="the three deliveries recorded")

    r = sub.replay(middle)
    assert r.status_code == 202, r.text
    assert unwrap(r) == {"replayed": 1}
    sub.wait_delivered(last["conversationId"], "conversation.created", n=2)
    wait_until(lambda: sum(a["outcome"] == "delivered" for a in sub.attempts()) == 4,
               what="the replayed delivery recorded")

    r = sub.replay(before)
    assert r.status_code == 202, r.text
    assert unwrap(r) == {"replayed": 3}
    for b in first:
        sub.wait_delivered(b["conversationId"], "conversation.created", n=2)
    sub.wait_delivered(last["conversationId"], "conversation.created", n=3)
    for req in sub.delivered():
        assert originals.get(req.webhook_id) == req.body  # same id, same bytes

    r = sub.replay(rfc3339(time.time() + 5))
    assert r.status_code == 202 and unwrap(r) == {"replayed": 0}, r.text
    r = srv.request("POST", "/api/v1/subscriptions/sub_" + "0" * 24 + "/replay",
                    params={"since": before})
    assert_error(r, 404)
    sub.assert_all_signed()


def test_replay_while_the_delivery_is_in_flight(make_server, rcv):
    """A replay asked for while the event's delivery is still being answered is not lost when
    that delivery then succeeds: the event goes out again."""
    srv = start(make_server, timeout=10)
    sub = subscribe(srv, rcv)
    cid = f"conv_{uid()}"
    slow = set()

    def rule(req):  # the first delivery takes 3 s to be answered (200)
        if req.conversation_id == cid and not slow:
            slow.add(cid)
            return Reply(200, hang=3)
        return None

    rcv.rule(rule)
    since = rfc3339(time.time() - 1)
    post(srv, make_conv(cid))
    rcv.wait(lambda: sub.requests(cid=cid), WAIT, "the first delivery")
    r = sub.replay(since)
    assert r.status_code == 202, r.text
    assert unwrap(r) == {"replayed": 1}
    (first, again) = sub.wait_delivered(cid, "conversation.created", n=2)
    assert first.webhook_id == again.webhook_id and first.body == again.body


def test_max_per_second_throttles(make_server, rcv):
    srv = start(make_server)
    sub = subscribe(srv, rcv, maxPerSecond=2)
    bodies = [make_conv() for _ in range(8)]
    for b in bodies:
        post(srv, b)
    rcv.wait(lambda: len(sub.delivered()) >= 8, 60, "all eight events")
    times = sorted(r.mono for r in sub.requests())
    assert len(times) == 8, len(times)
    # 2 per second: at most a short burst, then one every half second
    assert times[-1] - times[0] >= 1.9, [round(t - times[0], 2) for t in times]
    for i in range(len(times) - 4):
        assert times[i + 4] - times[i] >= 0.95, [round(t - times[0], 2) for t in times]
    sub.assert_all_signed()


# ------------------------------------------------------------------ SSRF
PRIVATE_URLS = [
    "http://127.0.0.1:{port}/hook",
    "http://localhost:{port}/hook",  # a name resolving to loopback
    "http://[::1]:{port}/hook",
    "http://10.1.2.3/hook",
    "http://192.168.1.20/hook",
    "http://172.16.5.5/hook",
    "http://169.254.169.254/latest/meta-data",
    "http://100.64.0.1/hook",
    "http://0.0.0.0:{port}/hook",
    "http://[::ffff:127.0.0.1]:{port}/hook",
    "http://[fd00::1]/hook",
    "http://[fe80::1]/hook",
]


def test_private_addresses_are_refused_at_create_and_patch(make_server, rcv):
    srv = start(make_server, private=False)
    for url in PRIVATE_URLS:
        url = url.format(port=rcv.port)
        r = srv.request("POST", "/api/v1/subscriptions", json={"url": url})
        assert_error(r, 400)
    r = srv.get("/api/v1/subscriptions")
    assert r.status_code == 200, r.text
    assert unwrap(r)["subscriptions"] == [], r.text
    # a public address literal is accepted (disabled, so nothing is ever sent to it) ...
    r = srv.request("POST", "/api/v1/subscriptions",
                    json={"url": "http://93.184.216.34/hook", "enabled": False})
    assert r.status_code == 201, r.text
    sid = unwrap(r)["id"]
    # ... and cannot be turned towards a private one
    r = srv.request("PATCH", "/api/v1/subscriptions/" + sid,
                    json={"url": f"http://localhost:{rcv.port}/hook"})
    assert_error(r, 400)
    r = srv.get("/api/v1/subscriptions/" + sid)
    assert unwrap(r)["url"] == "http://93.184.216.34/hook"
    assert not rcv.requests()


def test_private_addresses_are_refused_at_delivery(make_server, rcv):
    """A subscription made while private networks were allowed is not delivered to once they
    are not: the address connected to is checked, not only the URL at creation."""
    srv = start(make_server, schedule="0,1,1")
    sub = subscribe(srv, rcv, "hook")
    cid = f"conv_{uid()}"
    post(srv, make_conv(cid))
    sub.wait_delivered(cid, "conversation.created")
    srv.env_overrides.pop("DELIVERY_ALLOW_PRIVATE_NETWORKS")
    srv.restart()
    other = f"conv_{uid()}"
    post(srv, make_conv(other))
    tried = wait_until(lambda: [a for a in sub.attempts() if a["outcome"] != "delivered"],
                       what="the refused attempt listed")
    assert all(a["statusCode"] is None and a["response"] for a in tried), tried
    time.sleep(1.0)
    assert not rcv.requests("hook", cid=other)


# ------------------------------------------------------------------ helpers
def age_conversation(server, cid, days):
    """Moves a conversation's processing time days back, in its own database (set-up only, as
    test_erasure does for retention)."""
    statement = (f"UPDATE conversations SET processed_at_us = processed_at_us - "
                 f"{days} * 86400000000, first_processed_at_us = first_processed_at_us - "
                 f"{days} * 86400000000 WHERE conversation_id = '{cid}'")
    url = server.database_url
    if url.startswith("sqlite:"):
        db = sqlite3.connect(url[len("sqlite:"):], timeout=10)
        try:
            db.execute(statement)
            db.commit()
        finally:
            db.close()
        return
    pg_cluster().psql(statement, url.rsplit("/", 1)[1])


def el_post(server, fixture, cid):
    raw = (FIXTURES / fixture).read_bytes()
    body = raw.replace(json.loads(raw)["data"]["conversation_id"].encode(), cid.encode())
    t = int(time.time())
    mac = hmac.new(EL_SECRET.encode(), str(t).encode() + b"." + body, hashlib.sha256).hexdigest()
    r = server.request("POST", "/api/v1/webhook/elevenlabs", key=None, data=body,
                       headers={"Content-Type": "application/json",
                                "ElevenLabs-Signature": f"t={t},v0={mac}"})
    assert r.status_code == 200, r.text[:300]



def test_two_instances_on_one_database_deliver_each_event_once(make_server, rcv):
    """Two instances on one database (SQLite: one file) each take webhooks; the subscription
    gets every event once, not once per instance. When the instance delivering stops, the other
    takes over and the events it stores still go out."""
    env = {"DELIVERY_RETRY_SCHEDULE": "0,1,2", "DELIVERY_TIMEOUT_SECONDS": "2",
           "DELIVERY_ALLOW_PRIVATE_NETWORKS": "true"}
    a = make_server(env=env)
    b = make_server(env=env, database_url=a.database_url)
    sub = subscribe(a, rcv)
    cids = []
    for i in range(16):
        c = make_conv()
        post((a, b)[i % 2], c)
        cids.append(c["conversationId"])

    def created_ids():
        return [r.webhook_id for r in sub.delivered(type="conversation.created")]

    rcv.wait(lambda: {r.conversation_id for r in sub.delivered()} >= set(cids), WAIT,
             "every conversation's event, whichever instance stored it")
    time.sleep(2.5)  # more than a dispatcher's tick: a second sender would have sent by now
    ids = created_ids()
    assert len(ids) == len(set(ids)) == len(cids), sorted(ids)
    # the delivering instance (whichever holds the outbox) stops; the other delivers from now on
    a.stop()
    more = []
    for _ in range(4):
        c = make_conv()
        post(b, c)
        more.append(c["conversationId"])
    rcv.wait(lambda: {r.conversation_id for r in sub.delivered()} >= set(cids + more), WAIT,
             "the events stored after the other instance stopped")
    time.sleep(1.5)
    ids = [r.webhook_id for r in sub.delivered(type="conversation.created")
           if r.conversation_id in more]
    assert len(ids) == len(set(ids)) == len(more), sorted(ids)
