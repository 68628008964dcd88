"""GET /api/v1/analytics (issue 11 part 1), black-box, both backends.

A generated store with known answers (seed webhooks and signed ElevenLabs events; 24 accounts,
several agents, platforms, statuses and outcomes; start times across the daylight saving changes
of America/New_York and Europe/Berlin, some exactly on local midnights) is compared, byte for
byte, with a recount done here with zoneinfo for several tz/interval/filter combinations.
Redeliveries that change a conversation, erasure and retention change the numbers exactly; a key
bound to accounts sees only those; every bad parameter is a 400 JSON error naming it;
`gensendrep analytics rebuild` gives the same answers. One server per backend for the module;
each test keeps to its own years of start times (or its own accounts), so they do not interfere.
"""
import base64
import concurrent.futures
import hashlib
import hmac
import json
import random
import sqlite3
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from helpers import (KEY1, Server, assert_error, finish_server, make_conv, pg_cluster, run_binary,
                     uid)

ANALYTICS = "/api/v1/analytics"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "elevenlabs"
SECRET = "wsec_57506b15b729457580a8ec8a16cf3b594534526df7cfdef57efafbed7ad50768"
UTC = timezone.utc
DAY_US = 86400 * 1000000
TOP = 20


# ------------------------------------------------------------------ the recount
def _edges():
    """model/analytics_hist.c's bucket edges: 0..10 one a second, then each 15% wider."""
    e = []
    for b in range(80):
        if b <= 10:
            e.append(b)
        else:
            n = e[-1] * 115 // 100
            e.append(n if n > e[-1] else e[-1] + 1)
    return e


EDGES = _edges()


def bucket_lower(seconds):
    return max(x for x in EDGES if x <= max(seconds, 0))


def avg(total, n):
    """The mean rounded half up to 3 decimals; None for nothing."""
    return None if n == 0 else ((total * 2000 + n) // (2 * n)) / 1000


def percentile(durations, p):
    if not durations:
        return None
    s = sorted(durations)
    rank = max(1, (p * len(s) + 99) // 100)
    return bucket_lower(s[rank - 1])


def iso_utc(dt):
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def floor_local(t, zone, interval):
    local = t.astimezone(zone)
    if interval == "hour":
        start = local.replace(minute=0, second=0, microsecond=0)  # keeps fold: a repeated hour
    else:
        d = local.date()
        if interval == "week":
            d -= timedelta(days=d.weekday())
        start = datetime(d.year, d.month, d.day, tzinfo=zone)
    return start.astimezone(UTC)


def next_local(start, zone, interval):
    if interval == "hour":  # every zone used here moves by whole hours
        return start + timedelta(hours=1)
    d = start.astimezone(zone).date() + timedelta(days=7 if interval == "week" else 1)
    return datetime(d.year, d.month, d.day, tzinfo=zone).astimezone(UTC)


def sums(rows):
    n = len(rows)
    total = sum(r["duration"] for r in rows)
    return {"conversations": n, "messages": sum(r["messages"] for r in rows),
            "durationSeconds": {"sum": total, "avg": avg(total, n)}}


def breakdown(rows, dim):
    groups = {}
    for r in rows:
        groups.setdefault(r[dim], []).append(r)
    order = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0] is None,
                                                   (kv[0] or "").encode()))
    out = [{"key": k, **sums(v)} for k, v in order[:TOP]]
    if len(order) > TOP:
        out.append({"key": "other", "rest": True,
                    **sums([r for _, v in order[TOP:] for r in v])})
    return out


def recount(records, frm, to, tz="UTC", interval="day", account_id=None, agent_id=None,
            platform=None, status=None, accounts=None):
    """The answer as it must be, worked out from what was sent."""
    zone = ZoneInfo(tz)
    rows = [r for r in records if frm <= r["t"] < to
            and (account_id is None or r["account"] == account_id)
            and (agent_id is None or r["agent"] == agent_id)
            and (platform is None or r["platform"] == platform)
            and (status is None or r["status"] == status)
            and (accounts is None or r["account"] in accounts)]
    durations = [r["duration"] for r in rows]
    s = sums(rows)
    totals = {"conversations": s["conversations"],
              "completed": sum(1 for r in rows if r["status"] == "completed"),
              "failed": sum(1 for r in rows if r["status"] == "failed"),
              "messages": s["messages"],
              "durationSeconds": {**s["durationSeconds"], "p50": percentile(durations, 50),
                                  "p90": percentile(durations, 90),
                                  "p99": percentile(durations, 99)}}
    series = []
    start = floor_local(frm, zone, interval)
    while start < to:
        nxt = next_local(start, zone, interval)
        lo, hi = max(start, frm), min(nxt, to)
        series.append({"start": start.astimezone(zone).isoformat(),
                       **sums([r for r in rows if lo <= r["t"] < hi])})
        start = nxt
    return {"totals": totals, "byStatus": breakdown(rows, "status"),
            "byPlatform": breakdown(rows, "platform"), "byAgent": breakdown(rows, "agent"),
            "byAccount": breakdown(rows, "account"), "byOutcome": breakdown(rows, "outcome"),
            "series": series,
            "query": {"from": iso_utc(frm), "to": iso_utc(to), "interval": interval, "tz": tz}}


def ask(server, key=KEY1, **params):
    return server.get(ANALYTICS, params=params, key=key)


def check(server, records, frm, to, key=KEY1, accounts=None, **params):
    """The server's answer equals the recount, byte for byte."""
    frm, to = as_dt(frm), as_dt(to)
    r = ask(server, key=key, **{"from": iso_utc(frm), "to": iso_utc(to)}, **params)
    assert r.status_code == 200, r.text[:500]
    assert r.headers["Content-Type"].startswith("application/json")
    want = recount(records, frm, to, accounts=accounts, **params)
    got = r.json()
    if got != want:  # the first difference, readably
        for k in want:
            assert got.get(k) == want[k], (k, params)
    assert got == want
    assert r.text == json.dumps(want, separators=(",", ":"), ensure_ascii=False)
    return got


def as_dt(v):
    if isinstance(v, datetime):
        return v
    return datetime.fromisoformat(v.replace("Z", "+00:00")).astimezone(UTC)


# ------------------------------------------------------------------ sending
def seed(server, t, account, agent=None, platform=None, duration=0, messages=0, cid=None,
         second=None):
    """A seed webhook starting at t (and optionally a later message at second)."""
    cid = cid or f"conv_{uid()}"
    # agentId and platform are required strings; an empty one is stored as unknown (null)
    md = {"sessionId": "s", "agentId": agent or "", "duration": duration,
          "messageCount": messages, "platform": platform or "", "userAgent": "test"}
    transcript = [{"timestamp": iso_utc(t), "speaker": "user", "content": "hi",
                   "messageId": "m1"}]
    if second is not None:
        transcript.insert(0, {"timestamp": iso_utc(second), "speaker": "agent",
                              "content": "hello", "messageId": "m0"})
    body = make_conv(cid, accountId=account, transcript=transcript, metadata=md)
    r = server.post_conv(body)
    assert r.status_code == 200, r.text[:300]
    return {"cid": cid, "t": min(t, second) if second else t, "account": account, "agent": agent,
            "platform": platform, "status": "completed", "outcome": None, "duration": duration,
            "messages": messages}


_SUCCESS = json.loads((FIXTURES / "post_call_transcription_success.json").read_bytes())
_TURNS = len(_SUCCESS["data"]["transcript"])


def el_sign_post(server, event):
    body = json.dumps(event).encode()
    ts = int(time.time())
    mac = hmac.new(SECRET.encode(), str(ts).encode() + b"." + body, hashlib.sha256).hexdigest()
    r = server.request("POST", "/api/v1/webhook/elevenlabs", key=None, data=body,
                       headers={"Content-Type": "application/json",
                                "ElevenLabs-Signature": f"t={ts},v0={mac}"})
    assert r.status_code == 200, r.text[:300]


def elevenlabs(server, t, account, agent, el_status="done", outcome="success", duration=60,
               cid=None):
    """A signed post_call_transcription event starting at t."""
    cid = cid or f"conv_{uid()}"
    event = json.loads(json.dumps(_SUCCESS))
    d = event["data"]
    d["conversation_id"] = cid
    d["agent_id"] = agent
    d["status"] = el_status
    d["metadata"]["start_time_unix_secs"] = int(t.timestamp())
    d["metadata"]["call_duration_secs"] = duration
    d["analysis"]["call_successful"] = outcome
    variables = d["conversation_initiation_client_data"]["dynamic_variables"]
    if account is None:
        variables.pop("account_id", None)
    else:
        variables["account_id"] = account
    el_sign_post(server, event)
    status = {"done": "completed", "failed": "failed"}.get(el_status, el_status)
    return {"cid": cid, "t": t, "account": account, "agent": agent, "platform": "elevenlabs",
            "status": status, "outcome": outcome, "duration": duration, "messages": _TURNS}


def sql(server, statement):
    """Runs statement on the server's own database (test set-up only)."""
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


def wait_for(pred, timeout=20.0, step=0.2):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


# ------------------------------------------------------------------ the module's store
@pytest.fixture(scope="module")
def srv(backend, tmp_path_factory):
    s = Server(tmp_path_factory.mktemp(f"analytics-{backend}"), backend=backend,
               env={"ELEVENLABS_WEBHOOK_SECRET": SECRET, "RETENTION_DAYS": "30"})
    s.start()
    yield s
    finish_server(s)


# Local midnights and daylight saving instants, and a second before each: interval edges.
EDGE_INSTANTS = ["2026-03-08T05:00:00Z", "2026-03-08T07:00:00Z", "2026-03-09T04:00:00Z",
                 "2026-03-28T23:00:00Z", "2026-03-29T01:00:00Z", "2026-03-29T22:00:00Z",
                 "2026-03-22T23:00:00Z", "2026-10-25T01:00:00Z", "2026-10-25T22:00:00Z",
                 "2026-11-01T04:00:00Z", "2026-11-01T05:30:00Z", "2026-11-01T06:00:00Z",
                 "2026-11-02T05:00:00Z", "2026-03-07T18:30:00Z"]
WINDOWS = [("2026-03-04T00:00:00Z", "2026-03-12T00:00:00Z"),
           ("2026-03-20T00:00:00Z", "2026-04-03T00:00:00Z"),
           ("2026-10-22T00:00:00Z", "2026-11-05T00:00:00Z")]


@pytest.fixture(scope="module")
def store(srv):
    """The generated store: every conversation as it was sent."""
    rnd = random.Random(11)
    accounts = [f"acc-{i:02d}" for i in range(24)]
    weights = [30 - i for i in range(24)]
    agents = ["agent-a", "agent-b", "agent-c", "agent-d", "agent-e", None]
    platforms = ["web", "phone", "sms", None]
    times = [as_dt(x) + timedelta(seconds=d) for x in EDGE_INSTANTS for d in (0, -1)]
    for a, b in WINDOWS:
        lo, hi = as_dt(a).timestamp(), as_dt(b).timestamp()
        times += [datetime.fromtimestamp(int(rnd.uniform(lo, hi)), UTC) for _ in range(80)]

    def duration():
        return rnd.choice([rnd.randint(0, 9), rnd.randint(10, 600), rnd.randint(3600, 20000)])

    records = []
    for i, t in enumerate(times):
        account = rnd.choices(accounts, weights)[0]
        if i % 7 == 3:
            status, outcome = rnd.choice([("done", "success"), ("done", "failure"),
                                          ("failed", "unknown"), ("processing", "success")])
            records.append(elevenlabs(srv, t, rnd.choice([account, None]),
                                      rnd.choice(agents[:5]), status, outcome, duration()))
        else:
            second = t - timedelta(seconds=rnd.randint(1, 90)) if i % 5 == 0 else None
            records.append(seed(srv, t, account, rnd.choice(agents), rnd.choice(platforms),
                                duration(), rnd.randint(0, 40), second=second))
    return records


# ------------------------------------------------------------------ answers against a recount
COMBOS = [
    ("2026-03-04T00:00:00Z", "2026-03-12T00:00:00Z", {"tz": "America/New_York"}),
    ("2026-03-06T05:00:00Z", "2026-03-10T04:00:00Z",
     {"tz": "America/New_York", "interval": "hour"}),
    ("2026-03-20T00:00:00Z", "2026-04-03T00:00:00Z", {"tz": "Europe/Berlin"}),
    ("2026-03-01T00:00:00Z", "2026-11-10T00:00:00Z", {"tz": "Europe/Berlin", "interval": "week"}),
    ("2026-03-01T00:00:00Z", "2026-11-10T00:00:00Z", {}),
    ("2026-10-31T00:00:00Z", "2026-11-02T12:00:00Z",
     {"tz": "America/New_York", "interval": "hour"}),
    ("2026-10-22T00:00:00Z", "2026-11-05T00:00:00Z", {"tz": "Europe/Berlin", "platform": "web"}),
    ("2026-03-01T00:00:00Z", "2026-04-03T00:00:00Z", {"tz": "Asia/Kolkata", "status": "failed"}),
    ("2026-03-04T00:00:00Z", "2026-03-12T00:00:00Z",
     {"tz": "Asia/Kolkata", "interval": "hour", "agent_id": "agent-b"}),
    ("2026-03-01T00:00:00Z", "2026-11-10T00:00:00Z",
     {"tz": "America/New_York", "interval": "week", "account_id": "acc-03"}),
    ("2026-03-07T13:17:45Z", "2026-03-09T04:00:01Z",  # bounds inside intervals
     {"tz": "America/New_York", "interval": "hour", "platform": "elevenlabs"}),
    ("2026-03-01T00:00:00Z", "2026-11-10T00:00:00Z",
     {"tz": "UTC", "interval": "day", "status": "processing"}),
    ("2026-03-04T00:00:00Z", "2026-03-12T00:00:00Z", {"tz": "Etc/GMT+5"}),  # UTC-05:00
]


@pytest.mark.parametrize("frm,to,params", COMBOS)
def test_answers_equal_a_recount(srv, store, frm, to, params):
    check(srv, store, frm, to, **params)


# Filtered on one dimension over several whole 16-day blocks (from 1970-01-01: 2026-02-22,
# 03-10, 03-26, ..., 10-04, 10-20, 11-05): totals and series from the value's day rows,
# breakdowns and percentiles from analytics_block, the hours outside whole blocks (and in days
# a local midnight or an hourly cut splits) from analytics_hour.
ONE_DIM_FILTERS = [{"account_id": "acc-03"}, {"agent_id": "agent-b"}, {"platform": "web"},
                   {"platform": "elevenlabs"}, {"status": "completed"}]
ONE_DIM_RANGES = [
    ("2026-02-20T00:00:00Z", "2026-04-20T00:00:00Z", {"tz": "UTC"}),
    ("2026-03-01T00:00:00Z", "2026-11-10T00:00:00Z", {"tz": "UTC", "interval": "week"}),
    ("2026-02-20T05:00:00Z", "2026-04-20T04:00:00Z", {"tz": "America/New_York"}),
    ("2026-10-01T00:00:00Z", "2026-11-30T00:00:00Z", {"tz": "Europe/Berlin", "interval": "week"}),
    ("2026-10-03T00:00:00Z", "2026-11-23T00:00:00Z", {"tz": "UTC", "interval": "hour"}),
    ("2026-03-09T13:17:45Z", "2026-04-15T00:00:01Z", {"tz": "UTC"}),  # bounds inside days
]
ONE_DIM_COMBOS = [(f, t, {**p, **flt}) for f, t, p in ONE_DIM_RANGES for flt in ONE_DIM_FILTERS]


@pytest.mark.parametrize("frm,to,params", ONE_DIM_COMBOS)
def test_one_dimension_over_whole_blocks_equals_a_recount(srv, store, frm, to, params):
    got = check(srv, store, frm, to, **params)
    assert got["totals"]["conversations"] > 0


def test_a_bound_key_over_whole_blocks_equals_a_recount(srv, store):
    """A key bound to accounts is a filter on the account: alone, with account_id, and with
    account_id outside its accounts, over whole blocks."""
    bound = {"acc-01", "acc-03", "acc-07"}
    key = create_key(srv, ["read"], sorted(bound))
    for frm, to, params in ONE_DIM_RANGES:
        got = check(srv, store, frm, to, key=key, accounts=bound, **params)
        assert got["totals"]["conversations"] > 0
        assert {e["key"] for e in got["byAccount"]} <= bound
        check(srv, store, frm, to, key=key, accounts=bound, account_id="acc-03", **params)
        got = check(srv, store, frm, to, key=key, accounts=bound, account_id="acc-02", **params)
        assert got["totals"]["conversations"] == 0


def test_an_unencoded_plus_in_tz_is_a_plus(srv, store):
    """tz=Etc/GMT+5 with its '+' unencoded (read as a space by form decoding) is Etc/GMT+5."""
    r = srv.get(ANALYTICS + "?from=2026-03-04T00:00:00Z&to=2026-03-12T00:00:00Z&tz=Etc/GMT+5")
    assert r.status_code == 200, r.text[:300]
    assert r.json() == recount(store, as_dt("2026-03-04T00:00:00Z"),
                               as_dt("2026-03-12T00:00:00Z"), tz="Etc/GMT+5")
    assert r.json()["series"][0]["start"] == "2026-03-03T00:00:00-05:00"


def test_the_store_has_what_the_recount_needs(srv, store):
    """The generated store exercises what it is meant to: top 20 and other, unknown values,
    several statuses and outcomes, durations in every range."""
    got = check(srv, store, "2026-03-01T00:00:00Z", "2026-11-10T00:00:00Z", tz="UTC")
    assert got["totals"]["conversations"] == len(store)
    assert got["byAccount"][-1]["key"] == "other" and got["byAccount"][-1]["rest"] is True
    assert all("rest" not in e for e in got["byAccount"][:-1])
    assert None in {e["key"] for e in got["byAccount"]}
    assert {e["key"] for e in got["byStatus"]} == {"completed", "failed", "processing"}
    assert {"success", "failure", "unknown", None} <= {e["key"] for e in got["byOutcome"]}
    assert {"web", "phone", "sms", "elevenlabs", None} == {e["key"] for e in got["byPlatform"]}
    assert got["totals"]["durationSeconds"]["p99"] > 1000


def test_defaults(srv, store):
    """to defaults to now, from to 30 days before to, interval to day, tz to UTC."""
    before = datetime.now(UTC).replace(microsecond=0)
    r = ask(srv)
    after = datetime.now(UTC)
    assert r.status_code == 200, r.text
    q = r.json()["query"]
    assert q["interval"] == "day" and q["tz"] == "UTC"
    to = as_dt(q["to"])
    assert before <= to <= after
    assert as_dt(q["from"]) == to - timedelta(days=30)
    assert len(r.json()["series"]) == 31  # 30 days from a time of day: 31 days touched
    r = ask(srv, to="2026-03-12T00:00:00Z")
    assert r.json()["query"]["from"] == "2026-02-10T00:00:00Z"
    assert r.json() == recount(store, as_dt("2026-02-10T00:00:00Z"),
                               as_dt("2026-03-12T00:00:00Z"))


def test_processed_at_when_there_is_no_start(srv):
    """A conversation without transcript times counts at its processedAt (here: now)."""
    acc = "acc-now-" + uid()
    cid = f"conv_{uid()}"
    body = make_conv(cid, accountId=acc, transcript=[])
    assert srv.post_conv(body).status_code == 200
    processed = as_dt(srv.get_conv(cid).json()["processedAt"])
    r = ask(srv, account_id=acc, interval="hour",
            **{"from": iso_utc(processed - timedelta(hours=2)),
               "to": iso_utc(processed + timedelta(hours=1))})
    assert r.status_code == 200, r.text
    assert r.json()["totals"]["conversations"] == 1
    hit = [e for e in r.json()["series"] if e["conversations"]]
    assert len(hit) == 1
    assert as_dt(hit[0]["start"]) == processed.replace(minute=0, second=0, microsecond=0)


def test_bounds_finer_than_a_microsecond_keep_their_meaning(make_server):
    """A conversation starting at .500000 is before a bound of .5000001 (nanoseconds, as many
    clients write them): outside [.5000001, ...) and inside [..., .5000001), in analytics, the
    list and the export alike (the bound rounds up to the next stored microsecond, not down).
    A server of its own: the module's store is recounted by other tests."""
    srv = make_server()
    acc = "acc-ns-" + uid()
    cid = f"conv_{uid()}"
    ts = "2026-06-01T12:30:00.5+02:00"  # 10:30:00.500000 UTC
    body = make_conv(cid, accountId=acc, transcript=[
        {"timestamp": ts, "speaker": "user", "content": "hi", "messageId": "m1"}])
    assert srv.post_conv(body).status_code == 200
    cases = [("2026-06-01T10:30:00.5000001Z", "2026-06-01T10:31:00Z", 0),
             ("2026-06-01T10:30:00Z", "2026-06-01T10:30:00.5000001Z", 1),
             ("2026-06-01T10:30:00.5Z", "2026-06-01T10:30:00.500000000001Z", 1),
             ("2026-06-01T10:30:00.4999999Z", "2026-06-01T10:30:00.6Z", 1)]
    for frm, to, want in cases:
        window = {"from": frm, "to": to, "account_id": acc}
        r = ask(srv, **window)
        assert r.status_code == 200, r.text
        assert r.json()["totals"]["conversations"] == want, (frm, to)
        r = srv.get("/api/v1/conversations", params=window)
        assert r.status_code == 200, r.text
        assert r.json()["pagination"]["total"] == want, (frm, to)
        r = srv.get("/api/v1/conversations/export", params={**window, "format": "ndjson"})
        assert r.status_code == 200, r.text
        assert len(r.text.splitlines()) == want, (frm, to)


# ------------------------------------------------------------------ changes
def test_redelivery_erasure_and_retention_change_the_numbers_exactly(srv):
    """In 2027: every change is seen exactly, never counted twice nor left behind."""
    base = as_dt("2027-03-13T12:00:00Z")
    rnd = random.Random(7)
    recs = []
    for i in range(24):
        t = base + timedelta(hours=rnd.randint(0, 24 * 4))
        if i % 4 == 0:
            recs.append(elevenlabs(srv, t, f"acc-{i % 3}", "agent-x", "processing", "unknown",
                                   rnd.randint(0, 400)))
        else:
            recs.append(seed(srv, t, f"acc-{i % 3}", "agent-x", "web", rnd.randint(0, 400), 3))
    frm, to = "2027-03-12T00:00:00Z", "2027-03-20T00:00:00Z"

    def verify():
        for params in ({"tz": "America/New_York"}, {"tz": "Europe/Berlin", "interval": "hour"},
                       {"account_id": "acc-1"}):
            check(srv, recs, frm, to, **params)

    verify()
    # redeliveries that change everything: start time (another day), account, agent,
    # platform, duration, messages; an ElevenLabs conversation finishing
    for i in (1, 2, 5):
        r = recs[i]
        recs[i] = seed(srv, r["t"] + timedelta(days=2, hours=3), "acc-moved", "agent-y", "phone",
                       r["duration"] + 1000, 9, cid=r["cid"])
    recs[4] = elevenlabs(srv, recs[4]["t"], "acc-1", "agent-x", "done", "success", 77,
                         cid=recs[4]["cid"])
    # one moved out of the window altogether
    recs[6] = seed(srv, as_dt("2027-06-01T00:00:00Z"), "acc-0", None, None, 5, 1,
                   cid=recs[6]["cid"])
    # an identical redelivery changes nothing
    r = recs[7]
    recs[7] = seed(srv, r["t"], r["account"], r["agent"], r["platform"], r["duration"],
                   r["messages"], cid=r["cid"])
    verify()
    # erasure
    for i in (3, 8):
        assert srv.request("DELETE", f"/api/v1/conversations/{recs[i]['cid']}").status_code == 200
    recs = [r for i, r in enumerate(recs) if i not in (3, 8)]
    verify()
    # retention (RETENTION_DAYS=30): two conversations aged past it are erased in the background
    old = [recs[0]["cid"], recs[9]["cid"]]
    ids = ",".join(f"'{c}'" for c in old)
    sql(srv, f"UPDATE conversations SET processed_at_us = processed_at_us - 40 * {DAY_US}, "
             f"first_processed_at_us = first_processed_at_us - 40 * {DAY_US} "
             f"WHERE conversation_id IN ({ids})")
    assert wait_for(lambda: all(srv.get_conv(c).status_code == 404 for c in old), timeout=30)
    recs = [r for r in recs if r["cid"] not in old]
    verify()


# ------------------------------------------------------------------ keys bound to accounts
def create_key(server, scopes, accounts=None):
    body = {"name": "analytics-" + uid(), "scopes": scopes}
    if accounts:
        body["accounts"] = accounts
    r = server.request("POST", "/api/v1/keys", data=json.dumps(body),
                       headers={"Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    return r.json()["key"]


def test_a_key_bound_to_accounts_sees_only_them(srv):
    mine, also, theirs = ("acc-mine-" + uid(), "acc-also-" + uid(), "acc-theirs-" + uid())
    t = as_dt("2028-05-02T10:00:00Z")
    recs = [seed(srv, t + timedelta(hours=i), acc, "agent-k", "web", 10 * i, i)
            for i, acc in enumerate([mine, mine, also, theirs, theirs, theirs])]
    recs.append(elevenlabs(srv, t, None, "agent-k"))  # no account: no bound key sees it
    key = create_key(srv, ["read"], [mine, also])
    frm, to = "2028-05-01T00:00:00Z", "2028-05-04T00:00:00Z"
    got = check(srv, recs, frm, to, key=key, accounts={mine, also})
    assert got["totals"]["conversations"] == 3
    assert {e["key"] for e in got["byAccount"]} == {mine, also}
    check(srv, recs, frm, to, key=key, accounts={mine, also}, account_id=mine)
    # an account outside the key's: nothing, as the list finds nothing
    got = check(srv, recs, frm, to, key=key, accounts={mine, also}, account_id=theirs)
    assert got["totals"]["conversations"] == 0 and got["byAccount"] == []
    # the unbound key sees everything
    got = check(srv, recs, frm, to)
    assert got["totals"]["conversations"] == 7
    # scopes: a key without read may not ask
    ingest = create_key(srv, ["ingest"])
    assert_error(ask(srv, key=ingest, **{"from": frm, "to": to}), 403)
    assert_error(ask(srv, key=None), 401)


def test_sealed_accounts_are_named(make_server):
    """With ENCRYPTION_KEYS the rollups hold blind indexes: the answer names the accounts, and
    account_id and a bound key still work."""
    key = "k1:" + base64.b64encode(hashlib.sha256(b"analytics key").digest()).decode()
    s = make_server(env={"ENCRYPTION_KEYS": key})
    t = as_dt("2029-01-10T10:00:00Z")
    recs = [seed(s, t + timedelta(minutes=i), acc, "agent-s", "web", i, 1)
            for i, acc in enumerate(["sealed-a", "sealed-a", "sealed-b", "sealed-c", "sealed-c",
                                     "sealed-c"])]
    frm, to = "2029-01-10T00:00:00Z", "2029-01-11T00:00:00Z"
    got = check(s, recs, frm, to)
    assert [e["key"] for e in got["byAccount"]] == ["sealed-c", "sealed-a", "sealed-b"]
    check(s, recs, frm, to, account_id="sealed-a")
    bound = create_key(s, ["read"], ["sealed-b"])
    check(s, recs, frm, to, key=bound, accounts={"sealed-b"})


def test_accounts_are_named_before_the_top_twenty(make_server):
    """An account written before ENCRYPTION_KEYS was set (stored in plaintext) and after (a
    blind index) is one entry, the biggest; a tie at the 20th place goes by the account id, not
    by the blind indexes' bytes."""
    s = make_server()
    t = as_dt("2029-02-10T10:00:00Z")
    recs = [seed(s, t + timedelta(minutes=i), "split-acc", "agent-s", "web", 5, 1)
            for i in range(2)]
    key = "k1:" + base64.b64encode(hashlib.sha256(b"analytics split").digest()).decode()
    assert s.stop() == 0
    s.env_overrides["ENCRYPTION_KEYS"] = key
    s.start()
    recs += [seed(s, t + timedelta(minutes=10 + i), "split-acc", "agent-s", "web", 7, 1)
             for i in range(2)]
    # 21 accounts of 3: with split-acc (4) first, 19 of them fit; which ones goes by name
    for n in range(21):
        recs += [seed(s, t + timedelta(hours=1, minutes=n, seconds=i), f"tie-{n:02d}", "agent-s",
                      "web", n, 1) for i in range(3)]
    frm, to = "2029-02-10T00:00:00Z", "2029-02-11T00:00:00Z"
    got = check(s, recs, frm, to)
    by = got["byAccount"]
    assert by[0]["key"] == "split-acc" and by[0]["conversations"] == 4
    assert [e["key"] for e in by[1:20]] == [f"tie-{n:02d}" for n in range(19)]
    assert by[20] == {"key": "other", "rest": True, "conversations": 6, "messages": 6,
                      "durationSeconds": {"sum": 3 * 19 + 3 * 20, "avg": 19.5}}
    check(s, recs, frm, to, account_id="split-acc", tz="Europe/Berlin")


def test_a_real_other_is_not_the_rest(srv):
    """An agent named "other" by clients is an entry like any; the summed rest past the top 20
    is the entry with "rest": true."""
    t = as_dt("2032-04-01T08:00:00Z")
    recs = [seed(srv, t + timedelta(minutes=i), "acc-real-other", "other", "other", 10, 2)
            for i in range(3)]
    recs += [seed(srv, t + timedelta(hours=1, minutes=i), "acc-real-other", f"ag-{i:02d}",
                  "web", 1, 1) for i in range(21)]
    got = check(srv, recs, "2032-04-01T00:00:00Z", "2032-04-02T00:00:00Z")
    assert got["byAgent"][0] == {"key": "other", "conversations": 3, "messages": 6,
                                 "durationSeconds": {"sum": 30, "avg": 10.0}}
    assert got["byAgent"][-1]["key"] == "other" and got["byAgent"][-1]["rest"] is True
    assert got["byAgent"][-1]["conversations"] == 2
    assert got["byPlatform"][0]["key"] == "web" and "rest" not in got["byPlatform"][0]
    assert got["byPlatform"][1] == {"key": "other", "conversations": 3, "messages": 6,
                                    "durationSeconds": {"sum": 30, "avg": 10.0}}


def test_analytics_at_once_are_bounded(make_server):
    """At most a quarter of OFFLOAD_QUEUE analytics requests run at once (here one): one more
    is a 503 with Retry-After naming analytics; every other answer is whole."""
    srv = make_server(env={"OFFLOAD_THREADS": "1", "OFFLOAD_QUEUE": "4"})
    params = {"interval": "hour", "from": "2030-01-01T00:00:00Z", "to": "2031-02-21T16:00:00Z",
              "tz": "Europe/Berlin"}  # 10,000 points: long enough to overlap

    def one(_):
        r = srv.get(ANALYTICS, params=params, session=srv.new_session(), timeout=60)
        return r.status_code, r.headers.get("Retry-After"), r.json()

    refused = 0
    for _ in range(20):
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            got = list(pool.map(one, range(12)))
        for status, retry, body in got:
            assert status in (200, 503), body
            if status == 503:
                assert retry and body["error"]["code"] == "SERVICE_UNAVAILABLE", body
                assert "analytics" in body["error"]["message"].lower(), body
                refused += 1
            else:
                assert len(body["series"]) == 10000
        if refused:
            break
    assert refused, "twelve at once were never refused"
    assert one(0)[0] == 200  # the count went back down


# ------------------------------------------------------------------ bad parameters
BAD = [
    ({"from": "yesterday"}, "from"),
    ({"from": "2026-13-01T00:00:00Z"}, "from"),
    ({"to": "2026-03-01"}, "to"),
    ({"from": "2026-03-02T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, "from"),
    ({"from": "2026-03-01T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, "from"),
    ({"from": "2999-01-01T00:00:00Z"}, "from"),  # after to's default, now
    ({"interval": "month"}, "interval"),
    ({"interval": "DAY"}, "interval"),
    ({"interval": ""}, "interval"),
    ({"tz": "Mars/Olympus_Mons"}, "tz"),
    ({"tz": "../../../etc/passwd"}, "tz"),
    ({"tz": "/etc/localtime"}, "tz"),
    ({"tz": "localtime"}, "tz"),  # zoneinfo's link to the host's setting, not a zone
    ({"tz": "posixrules"}, "tz"),
    ({"tz": ""}, "tz"),
    ({"tz": "Europe/Berlin\n"}, "tz"),
    ({"tz": "Europe/" + "B" * 200}, "tz"),
    ({"from": "2020-01-01T00:00:00Z", "to": "2022-01-01T00:00:00Z", "interval": "hour"},
     "interval"),  # 17,544 hours: more than 10,000 points
    # start labels outside 0001-01-01..9999-12-31 in the zone (were clamped)
    ({"from": "0001-01-01T00:00:00Z", "to": "0001-01-03T00:00:00Z", "tz": "America/New_York"},
     "from"),
    ({"from": "9999-12-30T00:00:00Z", "to": "9999-12-31T12:00:00Z", "tz": "Pacific/Kiritimati"},
     "to"),
    # names it does not know: a misspelt filter would count everything
    ({"accountId": "acc-01"}, "accountId"),
    ({"account": "acc-01"}, "account"),
    ({"From": "2026-03-01T00:00:00Z"}, "From"),
    ({"bogus": "1"}, "bogus"),
]


@pytest.mark.parametrize("params,field", BAD, ids=[f"{f}-{i}" for i, (_, f) in enumerate(BAD)])
def test_every_bad_parameter_is_a_400_naming_it(srv, params, field):
    err = assert_error(ask(srv, **params), 400, "INVALID_PARAMETER")
    assert [d["field"] for d in err["details"]] == [field], err


@pytest.mark.parametrize("query,field", [("from", "from"), ("tz", "tz"),
                                         ("to=2026-03-01T00:00:00Z&account_id", "account_id"),
                                         ("status&interval=day", "status"),
                                         ("interval", "interval")])
def test_a_known_name_without_a_value_is_a_400(srv, query, field):
    """?from (no '=') is not 'from absent'."""
    err = assert_error(srv.get(ANALYTICS + "?" + query), 400, "INVALID_PARAMETER")
    assert [d["field"] for d in err["details"]] == [field], err


def test_a_parameter_without_a_name_says_so(srv):
    err = assert_error(srv.get(ANALYTICS + "?=x"), 400, "INVALID_PARAMETER")
    assert "empty name" in err["message"], err
    assert [d["field"] for d in err["details"]] == [""], err


def test_the_edges_of_the_range_answer(srv):
    """0001-01-01 and 9999-12-31 themselves answer where every start label fits."""
    r = ask(srv, **{"from": "0001-01-01T00:00:00Z", "to": "0001-01-03T00:00:00Z"})
    assert r.status_code == 200, r.text
    assert r.json()["series"][0]["start"] == "0001-01-01T00:00:00+00:00"
    r = ask(srv, interval="hour", **{"from": "9999-12-31T22:00:00Z", "to": "9999-12-31T23:59:59Z"})
    assert r.status_code == 200, r.text
    assert r.json()["series"][-1]["start"] == "9999-12-31T23:00:00+00:00"


@pytest.mark.parametrize("name", ["account_id", "agent_id", "platform", "status"])
def test_a_filter_that_is_not_utf8_is_a_400(srv, name):
    r = srv.get(ANALYTICS + f"?{name}=%FF%FE")
    err = assert_error(r, 400, "INVALID_PARAMETER")
    assert [d["field"] for d in err["details"]] == [name], err


def test_ten_thousand_points_are_allowed(srv):
    r = ask(srv, interval="hour", **{"from": "2030-01-01T00:00:00Z",
                                     "to": "2031-02-21T16:00:00Z"})  # 10,000 hours
    assert r.status_code == 200, r.text[:300]
    assert len(r.json()["series"]) == 10000


# ------------------------------------------------------------------ rebuild
def test_rebuild_gives_the_same_answers(srv, store):
    """Rollups wiped by hand (the store's tables) answer nothing; `gensendrep analytics rebuild`,
    run beside the serving instance, puts back exactly the answers there were."""
    queries = [c for c in COMBOS[:6]] + ONE_DIM_COMBOS[:10]
    before = [ask(srv, **{"from": f, "to": t}, **p).text for f, t, p in queries]
    total = srv.list_convs(limit=1).json()["pagination"]["total"]
    for table in ("analytics_hour", "analytics_total", "analytics_dim", "analytics_block"):
        sql(srv, f"DELETE FROM {table}")
    for f, t, p in (COMBOS[4], ONE_DIM_COMBOS[1]):
        wiped = ask(srv, **{"from": f, "to": t}, **p).json()
        assert wiped["totals"]["conversations"] == 0 and wiped["byStatus"] == []
    res = run_binary(["analytics", "rebuild"], cwd=srv.workdir,
                     env_overrides={"DATABASE_URL": srv.database_url}, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"analytics: rollups rebuilt from {total} conversations\n", res.stdout
    after = [ask(srv, **{"from": f, "to": t}, **p).text for f, t, p in queries]
    assert after == before
    for (f, t, p), text in zip(queries, after):
        assert json.loads(text) == recount(store, as_dt(f), as_dt(t), **p)


def test_a_recount_at_start_says_so_before_and_after(srv, store):
    """A store whose rollups are due (as after migration 0011, 0012 or 0018) is recounted at start-up,
    before HTTP is up: one line says so first (how many conversations, that it happens once),
    another when it is done (how many, how long), and the answers are those there were."""
    queries = [c for c in COMBOS[:3]] + ONE_DIM_COMBOS[:5]
    before = [ask(srv, **{"from": f, "to": t}, **p).text for f, t, p in queries]
    total = srv.list_convs(limit=1).json()["pagination"]["total"]
    for table in ("analytics_hour", "analytics_total", "analytics_dim", "analytics_block"):
        sql(srv, f"DELETE FROM {table}")
    sql(srv, "UPDATE analytics_state SET rebuild = (1 = 1)")
    srv.restart()
    msgs = []
    for line in srv.last_stderr().splitlines():
        try:
            msgs.append(json.loads(line)["msg"])
        except (ValueError, KeyError, TypeError):
            pass
    first = [i for i, m in enumerate(msgs)
             if m.startswith(f"computing analytics rollups for {total} conversations, once")]
    done = [i for i, m in enumerate(msgs)
            if m.startswith(f"analytics rollups computed from {total} conversations in ")]
    assert len(first) == 1 and len(done) == 1 and first[0] < done[0], msgs
    assert [ask(srv, **{"from": f, "to": t}, **p).text for f, t, p in queries] == before
    srv.restart()  # done once: the next start says nothing of it
    assert "computing analytics rollups" not in srv.last_stderr()


def test_rebuild_usage(tmp_path):
    res = run_binary(["analytics"], cwd=tmp_path)
    assert res.returncode == 2 and "analytics rebuild" in res.stderr
    res = run_binary(["analytics", "rebuild", "extra"], cwd=tmp_path)
    assert res.returncode == 2
    res = run_binary(["analytics", "--help"], cwd=tmp_path)
    assert res.returncode == 0 and "Usage: gensendrep analytics rebuild" in res.stdout
