"""At least once, across a crash (issue 10 item 4), both backends.

Webhooks are posted from several threads while their events flow to a subscription (a local
receiver, failing the first attempt of some events so retries are pending too) and to a broker
(a Redis Stream, or NATS JetStream); the server is killed with SIGKILL mid-stream and started
again on the same database. Then:
- every conversation whose webhook was answered 2xx has its conversation.created delivered to
  the subscription (2xx) and published to the broker at least once;
- any duplicate carries the same webhook-id / event id and the same bytes, and the subscription
  and the broker see the same event id for a conversation;
- nothing arrives for a conversation the store does not hold (a webhook cut off before its
  commit): whatever arrived is in the store, exactly as GET shows it."""
import json
import threading
import time
import uuid

import pytest

from helpers import make_conv, new_session
from receiver import Receiver, Reply
from services import RedisServer

STREAM = "gensendrep:crash"


@pytest.fixture
def rcv():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def redis():
    r = RedisServer()
    r.start()
    yield r
    r.destroy()


@pytest.fixture(scope="module")
def nats():
    from services import NatsServer
    n = NatsServer()
    n.start()
    yield n
    n.destroy()


def drive(srv, tag, acked, lock, stop, threads=8):
    def worker(w):
        session = new_session()
        i = 0
        while not stop.is_set():
            cid = f"crash-{tag}-{w}-{i}"
            i += 1
            try:
                r = srv.post_conv(make_conv(cid, accountId="acc-crash"), session=session,
                                  timeout=10)
            except Exception:  # noqa: BLE001 - the server is gone
                return
            if r.status_code == 200:
                with lock:
                    acked.add(cid)
    ts = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(threads)]
    for t in ts:
        t.start()
    return ts


def subscribe(srv, rcv):
    r = srv.request("POST", "/api/v1/subscriptions", json={"url": rcv.url("crash")})
    assert r.status_code == 201, r.text
    j = r.json()
    return j.get("data", j) if j.get("success") is True else j


def crash_run(make_server, rcv, queue_url, broker_events, extra_env=None):
    """Runs the crash scenario; broker_events(prefix) -> {event id: (cid, event json bytes)}
    published so far for conversation ids starting with prefix (the broker may hold other
    runs' events; a duplicate entry must carry the same bytes)."""
    env = {"DELIVERY_ALLOW_PRIVATE_NETWORKS": "true", "DELIVERY_RETRY_SCHEDULE": "0,1,1,2,2,5",
           "DELIVERY_TIMEOUT_SECONDS": "2", "QUEUE_URL": queue_url, **(extra_env or {})}
    srv = make_server(env=env)
    sub = subscribe(srv, rcv)
    failed_once, flock = set(), threading.Lock()

    def flaky(req):  # one conversation in five fails its first attempt: retries pending
        cid = req.conversation_id or ""
        if hash(cid) % 5 == 0:
            with flock:
                if req.webhook_id not in failed_once:
                    failed_once.add(req.webhook_id)
                    return Reply(500)
        return None

    rcv.rule(flaky)
    tag = uuid.uuid4().hex[:8]
    prefix = f"crash-{tag}-"
    acked, lock, stop = set(), threading.Lock(), threading.Event()
    workers = drive(srv, tag, acked, lock, stop)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with lock:
            n = len(acked)
        if n >= 300 and len(rcv.requests("crash")) >= 100:
            break
        time.sleep(0.02)
    srv.kill9()
    stop.set()
    for t in workers:
        t.join(30)
    with lock:
        acked = set(acked)
    assert len(acked) >= 300, f"only {len(acked)} acknowledged before the kill"
    assert rcv.requests("crash"), "no event was delivered before the kill"

    srv.start()

    missing = None
    end = time.monotonic() + 90
    while time.monotonic() < end:
        got = {r.conversation_id for r in rcv.delivered("crash")}
        pub = {cid for cid, _ in broker_events(prefix).values()}
        missing = (len(acked - got), len(acked - pub))
        if missing == (0, 0):
            break
        time.sleep(0.5)
    assert missing == (0, 0), f"acknowledged but never (delivered, published): {missing}"
    time.sleep(1.0)  # late duplicates, if any, are checked too

    by_cid = {}
    for r in rcv.requests("crash"):
        assert r.signature_ok(sub["secret"]), r.headers
        assert r.type == "conversation.created", r.event
        by_cid.setdefault(r.conversation_id, []).append(r)
    published = broker_events(prefix)
    pub_by_cid = {}
    for eid, (cid, raw) in published.items():
        pub_by_cid.setdefault(cid, []).append((eid, raw))

    for cid, reqs in by_cid.items():
        ids = {r.webhook_id for r in reqs}
        assert len(ids) == 1, (cid, ids)  # a duplicate carries the same webhook-id
        assert len({r.body for r in reqs}) == 1, cid  # and the same bytes
        assert [eid for eid, _ in pub_by_cid.get(cid, [])] == list(ids), \
            (cid, ids, pub_by_cid.get(cid))
    for cid, pubs in pub_by_cid.items():
        assert len(pubs) == 1, (cid, pubs)  # one event id per conversation
    # nothing for a write that was not committed: whatever arrived is stored, as GET shows it
    seen = set(by_cid) | set(pub_by_cid)
    for cid in seen:
        r = srv.get_conv(cid, include=True)
        assert r.status_code == 200, (cid, "arrived but is not stored", cid in acked)
        stored = r.json()
        if cid in by_cid:
            assert by_cid[cid][0].event["data"] == stored, cid
        for _, raw in pub_by_cid.get(cid, []):
            assert json.loads(raw)["data"] == stored, cid
    return acked, seen


def test_kill9_with_a_subscription_and_a_redis_stream(make_server, rcv, redis):
    from brokers import RespClient
    out, last = {}, ["-"]

    def broker_events(prefix):
        with RespClient(redis.port) as r:
            while True:
                entries = r("XRANGE", STREAM, last[0], "+", "COUNT", 1000)
                if not entries:
                    break
                for entry_id, fields in entries:
                    last[0] = "(" + entry_id.decode()
                    it = iter(fields)
                    f = {k.decode(): v for k, v in zip(it, it)}
                    ev = json.loads(f["event"])
                    eid = f["id"].decode()
                    assert ev["id"] == eid and f["type"].decode() == ev["type"], f
                    if eid in out:  # a duplicate entry: the same bytes
                        assert out[eid][1] == f["event"], eid
                    out[eid] = (ev["data"]["conversationId"], f["event"])
        return {k: v for k, v in out.items() if v[0].startswith(prefix)}

    crash_run(make_server, rcv, redis.url(), broker_events, {"QUEUE_STREAM": STREAM})


def test_kill9_with_a_subscription_and_nats_jetstream(make_server, rcv, nats):
    from brokers import NatsClient
    seen, consumer = {}, []

    def broker_events(prefix):
        if not consumer:  # one consumer, from the stream's start, once the stream exists
            c = NatsClient(nats.port)
            try:
                c.stream_info("GENSENDREP")
            except RuntimeError:
                c.close()
                return {}
            consumer.extend([c, c.push_consumer("GENSENDREP", "gensendrep.events.>")])
        c, sid = consumer
        for m in c.read_all(sid, timeout=5, quiet=0.3):
            ev = json.loads(m["data"])
            assert m["headers"].get("Nats-Msg-Id") == ev["id"], m["headers"]
            assert m["subject"] == "gensendrep.events." + ev["type"], m["subject"]
            cid = ev["data"]["conversationId"]
            if ev["id"] in seen:
                assert seen[ev["id"]][1] == m["data"], ev["id"]
            seen[ev["id"]] = (cid, m["data"])
        return {k: v for k, v in seen.items() if v[0].startswith(prefix)}

    try:
        crash_run(make_server, rcv, nats.url(), broker_events)
    finally:
        if consumer:
            consumer[0].close()
