"""QUEUE_URL (issue 10 item 3), black-box, both storage backends and both brokers: a real
redis-server (read as a consumer would, through a consumer group: XREADGROUP) and a real
nats-server with JetStream (read through a JetStream push consumer on gensendrep.events.>).

- every stored change's event reaches the broker once, with the documented fields: Redis entry
  fields type, id, event; NATS subject gensendrep.events.<type> and header Nats-Msg-Id = id;
  the event is {"type","id","timestamp","data"} with data the conversation as GET shows it;
- QUEUE_MAXLEN trims the stream (approximately, never below it);
- a broker outage in the middle of a run loses nothing: webhooks are still answered, health
  shows the queue disconnected and the backlog, and once the broker is back every event
  arrives (a duplicate carries the same id) and health shows it connected with no backlog;
- an erasure publishes conversation.deleted.
The clients are tests/integration/brokers.py (the standard library over sockets)."""
import json
import re
import time
from urllib.parse import quote

import pytest

from brokers import NatsClient, RespClient, RespError
from helpers import make_conv, run_binary, uid
from services import NatsServer, RedisServer

EVENT_ID_RE = re.compile(r"^evt_[0-9a-f]{32}$")
TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
NATS_PASSWORD = "nats-s3cret-never-logged"
WAIT = 30  # seconds for events to show up on a loaded machine


# ---------------------------------------------------------------- the two brokers, one face
class RedisSide:
    """A Redis Stream read through one consumer group, as a downstream service would."""
    kind = "redis"

    def __init__(self):
        self.srv = RedisServer()
        self.srv.start()
        self.stream = f"gsr:test:{uid()}"
        self.group = "downstream"
        self.seen = []

    def env(self, **extra):
        return {"QUEUE_URL": self.srv.url(), "QUEUE_STREAM": self.stream, **extra}

    def poll(self):
        try:
            with RespClient(self.srv.port, timeout=5) as r:
                try:
                    r("XGROUP", "CREATE", self.stream, self.group, "0", "MKSTREAM")
                except RespError as e:
                    if "BUSYGROUP" not in str(e):
                        raise
                while True:
                    reply = r("XREADGROUP", "GROUP", self.group, "c1", "COUNT", 1000, "BLOCK",
                              200, "STREAMS", self.stream, ">")
                    if not reply:
                        return
                    for _name, entries in reply:
                        for entry_id, fields in entries:
                            it = iter(fields)
                            f = {k.decode(): v.decode() for k, v in zip(it, it)}
                            assert set(f) == {"type", "id", "event"}, f
                            self.seen.append({"type": f["type"], "id": f["id"],
                                              "event": json.loads(f["event"]),
                                              "raw": f["event"]})
                            r("XACK", self.stream, self.group, entry_id)
        except (OSError, ConnectionError):
            return  # the broker is away: nothing more to read now

    def xlen(self):
        with RespClient(self.srv.port, timeout=5) as r:
            return r("XLEN", self.stream)

    def tail(self):
        with RespClient(self.srv.port, timeout=5) as r:
            entries = r("XREVRANGE", self.stream, "+", "-", "COUNT", 1)
        if not entries:
            return None
        it = iter(entries[0][1])
        return json.loads({k.decode(): v.decode() for k, v in zip(it, it)}["event"])

    def destroy(self):
        self.srv.destroy()


class NatsSide:
    """The JetStream stream GENSENDREP read from its start by a push consumer."""
    kind = "nats"

    def __init__(self):
        self.srv = NatsServer(user="gsr", password=NATS_PASSWORD)
        self.srv.start()
        self.seen = []

    def env(self, **extra):
        return {"QUEUE_URL": self.srv.url(), **extra}

    def poll(self):
        """Reads the whole stream again (a fresh consumer from the first message)."""
        try:
            with NatsClient(self.srv.port, "gsr", NATS_PASSWORD, timeout=5) as c:
                try:
                    info = c.stream_info("GENSENDREP")
                except RuntimeError:
                    return  # not created yet
                want = info["state"]["messages"]
                sid = c.push_consumer("GENSENDREP", "gensendrep.events.>")
                msgs = c.read_all(sid, want=want, timeout=10)
        except (OSError, ConnectionError, TimeoutError):
            return
        seen = []
        for m in msgs:
            assert m["subject"].startswith("gensendrep.events."), m["subject"]
            seen.append({"type": m["subject"][len("gensendrep.events."):],
                         "id": m["headers"].get("Nats-Msg-Id"),
                         "event": json.loads(m["data"]), "raw": m["data"].decode()})
        self.seen = seen

    def stream_config(self):
        with NatsClient(self.srv.port, "gsr", NATS_PASSWORD, timeout=5) as c:
            return c.stream_info("GENSENDREP")["config"]

    def destroy(self):
        self.srv.destroy()


@pytest.fixture(params=["redis", "nats"])
def broker(request):
    side = RedisSide() if request.param == "redis" else NatsSide()
    yield side
    side.destroy()


def wait_for(broker, pred, what, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while True:
        broker.poll()
        if pred(broker.seen):
            return broker.seen
        if time.monotonic() > deadline:
            summary = [(e["type"], e["event"].get("data", {}).get("conversationId"))
                       for e in broker.seen][-20:]
            raise AssertionError(f"{broker.kind}: {what} not seen within {timeout}s; "
                                 f"{len(broker.seen)} events, last: {summary}")
        time.sleep(0.2)


def of(events, cids):
    """Events about the conversations cids, in the order the broker holds them."""
    return [e for e in events if e["event"].get("data", {}).get("conversationId") in cids]


def has_created(cids):
    return lambda seen: {e["event"]["data"]["conversationId"] for e in of(seen, cids)
                         if e["type"] == "conversation.created"} >= set(cids)


def health(srv):
    r = srv.get("/api/v1/health")
    assert r.status_code == 200, r.text
    return r.json()


def wait_health(srv, pred, what, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while True:
        h = health(srv)
        if pred(h):
            return h
        if time.monotonic() > deadline:
            raise AssertionError(f"health never showed {what}: {h}")
        time.sleep(0.2)


def queue_state(h):
    return h["dependencies"]["queue"]


def backlog(h):
    return (h.get("outbox") or {}).get("backlog")


def post(srv, body):
    r = srv.post_conv(body)
    assert r.status_code == 200, r.text
    return r.json()["data"]


def check_event(e):
    """One broker message as documented."""
    ev = e["event"]
    assert set(ev) == {"type", "id", "timestamp", "data"}, ev
    assert ev["type"] == e["type"]
    assert ev["id"] == e["id"]
    assert EVENT_ID_RE.match(ev["id"]), ev["id"]
    assert TS_RE.match(ev["timestamp"]), ev["timestamp"]


# ---------------------------------------------------------------- every event, documented shape
def test_every_stored_change_reaches_the_broker(make_server, broker):
    srv = make_server(env=broker.env())
    cids = [f"conv_{uid()}" for _ in range(12)]
    for cid in cids:
        post(srv, make_conv(cid))
    post(srv, make_conv(cids[0]))  # the same body again: a redelivery, no event
    changed = make_conv(cids[1])
    changed["metadata"]["duration"] = 301
    post(srv, changed)  # a different body: conversation.updated

    seen = wait_for(broker, lambda s: has_created(cids)(s) and any(
        e["type"] == "conversation.updated" for e in of(s, cids)), "every event")
    time.sleep(1.0)  # anything extra (a duplicate) would show up now
    broker.poll()
    mine = of(broker.seen, cids)
    for e in mine:
        check_event(e)
    assert len({e["id"] for e in mine}) == len(mine), "an event was published twice"
    assert sorted((e["type"], e["event"]["data"]["conversationId"]) for e in mine) == sorted(
        [("conversation.created", c) for c in cids] + [("conversation.updated", cids[1])])
    # per conversation in commit order, and data is the conversation as GET shows it
    of_one = [e["type"] for e in of(mine, {cids[1]})]
    assert of_one == ["conversation.created", "conversation.updated"]
    updated = next(e for e in mine if e["type"] == "conversation.updated")
    assert updated["event"]["data"] == srv.get_conv(cids[1], include=True).json()
    created = next(e for e in of(mine, {cids[2]}))
    assert created["event"]["data"] == srv.get_conv(cids[2], include=True).json()
    if broker.kind == "nats":
        cfg = broker.stream_config()
        assert cfg["subjects"] == ["gensendrep.events.>"]
        assert cfg["storage"] == "file"
        assert NATS_PASSWORD not in srv.stderr_text()
    wait_health(srv, lambda h: queue_state(h) == "connected" and backlog(h) == 0,
                "the queue connected with no backlog")
    assert seen


def test_erasure_publishes_conversation_deleted(make_server, broker):
    srv = make_server(env=broker.env())
    cid, other = f"conv_{uid()}", f"conv_{uid()}"
    post(srv, make_conv(cid))
    post(srv, make_conv(other))
    r = srv.request("DELETE", "/api/v1/conversations/" + quote(cid, safe=""))
    assert r.status_code == 200, r.text
    wait_for(broker, lambda s: any(e["type"] == "conversation.deleted" for e in of(s, {cid})),
             "conversation.deleted")
    mine = of(broker.seen, {cid})
    for e in mine:
        check_event(e)
    assert [e["type"] for e in mine] == ["conversation.created", "conversation.deleted"]
    assert mine[-1]["event"]["data"] == {"conversationId": cid, "reason": "erased"}
    assert not any(e["type"] == "conversation.deleted" for e in of(broker.seen, {other}))


# ---------------------------------------------------------------- a broker added later
def test_a_broker_added_later_publishes_every_event_still_kept(make_server, broker, backend):
    """QUEUE_URL set on a service that ran without it: the broker's new cursor starts at the
    beginning of what is kept, so it gets the events still kept, then every later one. What is
    kept differs by backend (README "Onward delivery"): PostgreSQL writes every change's event;
    SQLite writes none while nothing could read it (no subscription in any state, no broker
    cursor, no QUEUE_URL), so the first conversation below has no event there, while the second,
    stored once a (disabled) subscription existed, has one on both."""
    srv = make_server()
    unread, kept, after = (f"conv_{uid()}" for _ in range(3))
    post(srv, make_conv(unread))
    r = srv.request("POST", "/api/v1/subscriptions",
                    json={"url": "https://no-such-host.invalid/hook", "enabled": False})
    assert r.status_code == 201, r.text
    post(srv, make_conv(kept))
    srv.env_overrides.update(broker.env())
    srv.restart()
    post(srv, make_conv(after))
    wanted = [kept, after] + ([unread] if backend == "postgres" else [])
    wait_for(broker, has_created(wanted), "the events still kept, then the new one")
    time.sleep(1.0)  # anything more would show up now
    broker.poll()
    mine = of(broker.seen, {unread, kept, after})
    for e in mine:
        check_event(e)
    assert sorted(e["event"]["data"]["conversationId"] for e in mine) == sorted(wanted)


# ---------------------------------------------------------------- Redis: MAXLEN
def test_redis_stream_is_trimmed_to_about_queue_maxlen(make_server):
    side = RedisSide()
    try:
        srv = make_server(env=side.env(QUEUE_MAXLEN="10"))
        cids = [f"conv_{uid()}" for _ in range(260)]
        for cid in cids:
            post(srv, make_conv(cid))
        deadline = time.monotonic() + WAIT
        while True:  # events go out in commit order: the last one on the tail means all did
            tail = side.tail()
            if tail and tail["data"]["conversationId"] == cids[-1]:
                break
            assert time.monotonic() < deadline, f"the last event never reached the stream: {tail}"
            time.sleep(0.2)
        n = side.xlen()
        # "MAXLEN ~": Redis drops whole nodes (100 entries each by default), never below 10
        assert 10 <= n < 260, n
    finally:
        side.destroy()


# ---------------------------------------------------------------- outage
def test_broker_outage_loses_nothing(make_server, broker):
    srv = make_server(env=broker.env())
    before = [f"conv_{uid()}" for _ in range(5)]
    for cid in before:
        post(srv, make_conv(cid))
    wait_for(broker, has_created(before), "the events before the outage")
    wait_health(srv, lambda h: queue_state(h) == "connected", "the queue connected")

    broker.srv.stop()
    during = [f"conv_{uid()}" for _ in range(10)]
    for cid in during:
        post(srv, make_conv(cid))  # still answered: the events wait in the outbox
    h = wait_health(srv, lambda h: queue_state(h) == "disconnected" and (backlog(h) or 0) >= 1,
                    "the queue disconnected with a backlog")
    assert h["status"] == "degraded", h
    assert h["dependencies"]["database"] == "connected"
    assert h["outbox"]["oldestAgeSeconds"] >= 0

    broker.srv.start()
    after = [f"conv_{uid()}" for _ in range(3)]
    for cid in after:
        post(srv, make_conv(cid))
    # A restarted Redis (no persistence here) starts empty: what it held before is the broker's
    # loss, not ours; JetStream keeps its store across the restart.
    wanted = during + after + (before if broker.kind == "nats" else [])
    wait_for(broker, has_created(wanted), "every event after the outage", timeout=60)
    h = wait_health(srv, lambda h: queue_state(h) == "connected" and backlog(h) == 0,
                    "the queue connected again with no backlog")
    assert h["status"] == "healthy", h
    mine = of(broker.seen, set(wanted))
    for e in mine:
        check_event(e)
    ids_per_conv = {}
    for e in mine:
        ids_per_conv.setdefault(e["event"]["data"]["conversationId"], set()).add(e["id"])
    # at least once: a duplicate (an event published again after a lost acknowledgement)
    # carries the same id
    assert all(len(ids) == 1 for ids in ids_per_conv.values()), ids_per_conv


def test_health_follows_the_broker_without_traffic(make_server, broker):
    """An idle service probes its broker: connected soon after start with nothing published,
    disconnected once the broker goes away, connected again when it is back."""
    srv = make_server(env=broker.env())
    h = wait_health(srv, lambda h: queue_state(h) == "connected", "the idle queue connected",
                    timeout=15)
    assert h["dependencies"]["queue"] == "connected"  # a state, as every dependency's
    assert h["status"] == "healthy", h
    broker.srv.stop()
    h = wait_health(srv, lambda h: queue_state(h) == "disconnected",
                    "the idle queue disconnected", timeout=15)
    assert h["status"] == "degraded", h
    broker.srv.start()
    wait_health(srv, lambda h: queue_state(h) == "connected" and h["status"] == "healthy",
                "the idle queue connected again", timeout=15)


@pytest.mark.parametrize("url", [
    "nats://gsr:" + NATS_PASSWORD + "@127.0.0.1:99999",
    "redis://:" + NATS_PASSWORD + "@127.0.0.1:6379/notadb",
    "nats://gsr:" + NATS_PASSWORD + "@",
])
def test_an_unusable_queue_url_stops_the_start_without_showing_the_password(tmp_path, url):
    run = run_binary([], tmp_path, {"QUEUE_URL": url})
    out = run.stdout + run.stderr
    assert run.returncode != 0, out[-2000:]
    assert "QUEUE_URL" in out and "QUEUE_URL: QUEUE_URL" not in out, out[-2000:]
    assert NATS_PASSWORD not in out
