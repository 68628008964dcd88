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
import re
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


def csv_rows(resp):
    assert resp.status_code == 200, resp.text[:300]
    assert resp.headers["Content-Type"] == "text/csv; charset=utf-8"
    rows = list(csv.reader(io.StringIO(resp.content.decode("utf-8-sig"), newline="")))
    return [dict(zip(rows[0], r)) for r in rows[1:]]


def test_csv_failure_reasons_and_statuses_open_as_text(srv):
    """Client text in every text column opens as text in a spreadsheet, ElevenLabs' failure
    reason (control characters become spaces) and status word included, and parses back."""
    acc = "acc-csvel-" + uid()
    reasons = ["\t=cmd|' /C calc'!A0", "\r\n@SUM(1)", "-2+3", "busy, \"line\" 1"]
    for reason in reasons:
        event = json.loads((FIXTURES / "call_initiation_failure_sip.json").read_bytes())
        d = event["data"]
        d["conversation_id"] = "conv_" + uid()
        d["failure_reason"] = reason
        d.setdefault("conversation_initiation_client_data", {}).setdefault(
            "dynamic_variables", {})["account_id"] = acc
        el_post(srv, event)
    el_call(srv, acc, status="=HYPERLINK(1)")
    rows = csv_rows(srv.get(EXPORT, params={"format": "csv", "account_id": acc}))
    assert len(rows) == 5
    for row in rows:
        for col in ("conversationId", "emailId", "accountId", "agentId", "status",
                    "failureReason"):
            cell = row[col]
            assert not cell or cell[0] not in "=+-@\t\r", (col, cell)
            assert cell.lstrip(" \t\r\n")[:1] not in ("=", "+", "-", "@") or cell[0] == "'", \
                (col, cell)
    got = sorted(r["failureReason"] for r in rows if r["failureReason"])
    assert got == sorted(["' =cmd|' /C calc'!A0", "'  @SUM(1)", "'-2+3", 'busy, "line" 1'])
    assert [r["status"] for r in rows if not r["failureReason"]] == ["'=HYPERLINK(1)"]


# ------------------------------------------------------------------ keys bound to accounts
def test_a_bound_key_reaches_nothing_of_another_account_through_any_read(srv):
    """A read key bound to account A: analytics, exports (both formats, with and without an
    account_id naming B), list, cursor pages, reports, audio and GET one show nothing of B,
    and cursors do not cross between it and an unbound key."""
    a, b = "acc-iso-a-" + uid(), "acc-iso-b-" + uid()
    mine = [post(srv, accountId=a)["conversationId"] for _ in range(2)]
    theirs = [post(srv, accountId=b)["conversationId"] for _ in range(3)]
    theirs.append(el_call(srv, b)["conversation_id"])
    ka = create_key(srv, ["read"], [a])

    for params in ({}, {"account_id": b}, {"account_id": a}):
        r = srv.get(ANALYTICS, key=ka, params={"from": "2000-01-01T00:00:00Z",
                                                "to": "2030-01-01T00:00:00Z",
                                                "interval": "week", **params})
        assert r.status_code == 200, r.text[:300]
        assert b not in r.text
        body = r.json()
        want = 0 if params.get("account_id") == b else len(mine)
        assert body["totals"]["conversations"] == want
        assert [e["key"] for e in body["byAccount"]] == ([a] if want else [])
        assert sum(p["conversations"] for p in body["series"]) == want

    for params in ({}, {"account_id": b}, {"status": "completed"}):
        for fmt in ("ndjson", "csv"):
            r = srv.get(EXPORT, key=ka, params={"format": fmt, **params})
            assert r.status_code == 200, r.text[:300]
            assert b not in r.text and not any(t in r.text for t in theirs)
        r = srv.get(EXPORT, key=ka, params={"include": "transcript", **params})
        assert not any(t in r.text for t in theirs)
        r = srv.list_convs(key=ka, limit=100, **params)
        assert r.status_code == 200 and not any(t in r.text for t in theirs)
    mine_listed = [json.loads(x)["conversationId"]
                   for x in srv.get(EXPORT, key=ka).text.splitlines()]
    assert set(mine) <= set(mine_listed)

    for cid in theirs:
        for path in ("", "/report", "/audio"):
            r = srv.get(f"/api/v1/conversations/{cid}{path}", key=ka)
            assert_error(r, 404, "NOT_FOUND")
            assert b not in r.text
    assert srv.get(f"/api/v1/conversations/{mine[0]}/report", key=ka).status_code == 200

    # Cursors: one made for the unbound key (same filters) is refused to the bound key and the
    # other way round; the bound key's own walk meets only its account.
    admin = srv.list_convs(account_id=b, limit=1).json()["pagination"]["nextCursor"]
    assert admin
    err = assert_error(srv.list_convs(key=ka, account_id=b, limit=1, cursor=admin), 400)
    assert [d["field"] for d in err["details"]] == ["cursor"]
    own = srv.list_convs(key=ka, limit=1, cursor="").json()["pagination"]["nextCursor"]
    assert own
    err = assert_error(srv.list_convs(limit=1, cursor=own), 400)
    assert [d["field"] for d in err["details"]] == ["cursor"]
    seen, cursor = [], ""
    while cursor is not None:
        page = srv.list_convs(key=ka, limit=1, cursor=cursor).json()
        seen += [c["accountId"] for c in page["conversations"]]
        cursor = page["pagination"]["nextCursor"]
        assert len(seen) < 1000
    assert set(seen) == {a}

    text = srv.get("/metrics", key=TOKEN).text
    assert b not in text and not any(t in text for t in theirs)


# ------------------------------------------------------------------ analytics
RFC3339_OFFSET = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}$"


def seed_at(server, account, when, duration, messages, agent="agent-x", platform="web"):
    body = make_conv(accountId=account)
    body["transcript"] = [{"timestamp": when, "speaker": "user", "content": "hi",
                           "messageId": "m1"}]
    body["metadata"].update(duration=duration, messageCount=messages, agentId=agent,
                            platform=platform)
    assert server.post_conv(body).status_code == 200


def check_entry(e, key_name):
    assert set(e) - {"rest"} == {key_name, "conversations", "messages", "durationSeconds"}, e
    assert isinstance(e["conversations"], int) and e["conversations"] >= 0
    assert isinstance(e["messages"], int) and e["messages"] >= 0
    assert set(e["durationSeconds"]) == {"sum", "avg"}
    assert isinstance(e["durationSeconds"]["sum"], int)
    avg = e["durationSeconds"]["avg"]
    if e["conversations"]:
        assert isinstance(avg, (int, float))
        assert abs(avg - e["durationSeconds"]["sum"] / e["conversations"]) <= 0.0005 + 1e-9
    else:
        assert avg is None


@pytest.mark.parametrize("interval,tz,frm,to,starts", [
    # New York's spring-forward day is 23 hours, its fall-back day 25; every day is listed,
    # empty ones too, each labelled with that day's offset.
    ("day", "America/New_York", "2026-03-07T05:00:00Z", "2026-03-10T04:00:00Z",
     ["2026-03-07T00:00:00-05:00", "2026-03-08T00:00:00-05:00", "2026-03-09T00:00:00-04:00"]),
    ("day", "America/New_York", "2026-10-31T04:00:00Z", "2026-11-03T05:00:00Z",
     ["2026-10-31T00:00:00-04:00", "2026-11-01T00:00:00-04:00", "2026-11-02T00:00:00-05:00"]),
    # ISO weeks from Monday, in the zone's Monday
    ("week", "Europe/Berlin", "2026-03-22T00:00:00Z", "2026-04-06T00:00:00Z",
     ["2026-03-16T00:00:00+01:00", "2026-03-23T00:00:00+01:00", "2026-03-30T00:00:00+02:00",
      "2026-04-06T00:00:00+02:00"]),
    # the repeated hour of a fall-back night is two points
    ("hour", "America/New_York", "2026-11-01T04:00:00Z", "2026-11-01T08:00:00Z",
     ["2026-11-01T00:00:00-04:00", "2026-11-01T01:00:00-04:00", "2026-11-01T01:00:00-05:00",
      "2026-11-01T02:00:00-05:00"]),
])
def test_analytics_answer_has_the_issue_shape(srv, interval, tz, frm, to, starts):
    """totals / byStatus / byPlatform / byAgent / byAccount / byOutcome / series exactly as the
    issue names them, with JSON types a client can rely on; the series has one point per
    interval of tz, empty ones included, `start` RFC 3339 with the offset of that moment; the
    points and every breakdown add up to the totals."""
    acc = "acc-shape-" + uid()
    seed_at(srv, acc, frm, 30, 3)
    seed_at(srv, acc, frm, 95, 5, agent="agent-y", platform="phone")
    r = srv.get(ANALYTICS, params={"from": frm, "to": to, "interval": interval, "tz": tz,
                                   "account_id": acc})
    assert r.status_code == 200, r.text[:300]
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert set(body) >= {"totals", "byStatus", "byPlatform", "byAgent", "byAccount",
                         "byOutcome", "series"}
    t = body["totals"]
    assert set(t) == {"conversations", "completed", "failed", "messages", "durationSeconds"}
    assert (t["conversations"], t["completed"], t["failed"], t["messages"]) == (2, 2, 0, 8)
    d = t["durationSeconds"]
    assert set(d) == {"sum", "avg", "p50", "p90", "p99"}
    assert d["sum"] == 125 and d["avg"] == 62.5
    assert all(isinstance(d[p], int) for p in ("p50", "p90", "p99"))
    # the histogram's resolution: at most 15% below the true value, never above it
    assert 30 * 0.85 <= d["p50"] <= 30 and 95 * 0.85 <= d["p90"] == d["p99"] <= 95
    for name in ("byStatus", "byPlatform", "byAgent", "byAccount", "byOutcome"):
        entries = body[name]
        assert isinstance(entries, list)
        for e in entries:
            check_entry(e, "key")
        assert sum(e["conversations"] for e in entries) == 2, name
        assert sum(e["messages"] for e in entries) == 8, name
    assert [e["key"] for e in body["byAccount"]] == [acc]
    assert sorted(e["key"] for e in body["byPlatform"]) == ["phone", "web"]
    assert [e["key"] for e in body["byOutcome"]] == [None]  # seed webhooks have no outcome
    series = body["series"]
    assert [p["start"] for p in series] == starts
    for p in series:
        check_entry(p, "start")
        assert re.match(RFC3339_OFFSET, p["start"]), p["start"]
    assert sum(p["conversations"] for p in series) == 2
    assert sum(p["durationSeconds"]["sum"] for p in series) == 125
    assert series[0]["conversations"] == 2 and all(p["conversations"] == 0 for p in series[1:])


def test_day_labels_name_their_day_when_the_offset_has_seconds(srv):
    """Amsterdam kept +00:19:32 (+01:19:32 in summer) until July 1937: RFC 3339 offsets have no
    seconds, but a day's `start` still names that day (00:00:ss), never 23:59:ss of the day
    before, and still parses to the day's first instant."""
    from datetime import datetime, timedelta, timezone
    from zoneinfo import ZoneInfo
    zone = ZoneInfo("Europe/Amsterdam")
    r = srv.get(ANALYTICS, params={"from": "1937-06-28T12:00:00Z", "to": "1937-07-03T12:00:00Z",
                                   "tz": "Europe/Amsterdam", "account_id": "acc-none-" + uid()})
    assert r.status_code == 200, r.text[:300]
    starts = [p["start"] for p in r.json()["series"]]
    assert [s[:10] for s in starts] == ["1937-06-28", "1937-06-29", "1937-06-30", "1937-07-01",
                                        "1937-07-02", "1937-07-03"]
    for s in starts:
        assert re.match(RFC3339_OFFSET, s), s
        assert s[11:16] == "00:00", s
        local = datetime.fromisoformat(s).astimezone(timezone.utc).astimezone(zone)
        assert local.date().isoformat() == s[:10] and local.time() < (
            datetime.min + timedelta(minutes=1)).time(), (s, local)


# ------------------------------------------------------------------ bad input, every endpoint
BAD_QUERIES = [
    (ANALYTICS, {"from": "2026-03-02T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, "from"),
    (ANALYTICS, {"from": "2026-02-30T00:00:00Z"}, "from"),
    (ANALYTICS, {"to": "2026-03-01T00:00:00"}, "to"),  # no offset
    (ANALYTICS, {"from": "2026-03-01"}, "from"),
    (ANALYTICS, {"interval": "minute"}, "interval"),
    (ANALYTICS, {"interval": "month"}, "interval"),
    (ANALYTICS, {"tz": "Not/AZone"}, "tz"),
    (ANALYTICS, {"tz": "+02:00"}, "tz"),
    (ANALYTICS, {"tz": "../../etc/shadow"}, "tz"),
    (ANALYTICS, {"from": "1900-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "interval"),
    (EXPORT, {"format": "xlsx"}, "format"),
    (EXPORT, {"format": "csv", "include": "transcript"}, "include"),
    (EXPORT, {"include": "events"}, "include"),
    (EXPORT, {"from": "yesterday"}, "from"),
    (EXPORT, {"from": "2026-03-02T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, "to"),
    ("/api/v1/conversations", {"limit": "101"}, "limit"),
    ("/api/v1/conversations", {"limit": "0"}, "limit"),
    ("/api/v1/conversations", {"limit": "-5"}, "limit"),
    ("/api/v1/conversations", {"cursor": "not-a-cursor"}, "cursor"),
    ("/api/v1/conversations", {"cursor": "", "page": "2"}, "cursor"),
    ("/api/v1/conversations", {"to": "2026-03-01T25:00:00Z"}, "to"),
]


@pytest.mark.parametrize("path,params,field", BAD_QUERIES,
                         ids=[f"{p.rsplit('/', 1)[1]}-{f}-{i}"
                              for i, (p, _, f) in enumerate(BAD_QUERIES)])
def test_a_bad_query_is_a_400_json_error_naming_it(srv, path, params, field):
    err = assert_error(srv.get(path, params=params), 400, "INVALID_PARAMETER")
    assert field in [d["field"] for d in err["details"]], err


def test_a_tampered_cursor_is_refused_and_a_replayed_one_is_bound_to_its_filters(srv):
    """Every single-character change of a real cursor is refused (400 naming cursor); the
    cursor works only with the filters it was made for; limit stays 1..100 with it."""
    acc = "acc-tamper-" + uid()
    for _ in range(3):
        post(srv, accountId=acc)
    cursor = srv.list_convs(account_id=acc, limit=1).json()["pagination"]["nextCursor"]
    assert cursor
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for i in range(0, len(cursor), max(1, len(cursor) // 12)):
        c = alphabet[(alphabet.index(cursor[i]) + 1) % len(alphabet)]
        tampered = cursor[:i] + c + cursor[i + 1:]
        err = assert_error(srv.list_convs(account_id=acc, limit=1, cursor=tampered), 400)
        assert [d["field"] for d in err["details"]] == ["cursor"], tampered
    for other in ({"account_id": acc + "x"}, {}, {"account_id": acc, "status": "completed"},
                  {"account_id": acc, "from": "2000-01-01T00:00:00Z"}):
        err = assert_error(srv.list_convs(limit=1, cursor=cursor, **other), 400)
        assert [d["field"] for d in err["details"]] == ["cursor"], other
    for limit in (0, 101):
        err = assert_error(srv.list_convs(account_id=acc, limit=limit, cursor=cursor), 400)
        assert [d["field"] for d in err["details"]] == ["limit"]
    page = srv.list_convs(account_id=acc, limit=100, cursor=cursor).json()
    assert len(page["conversations"]) == 2 and page["pagination"]["nextCursor"] is None
    assert "total" not in page["pagination"]
    # replayed: the same page again (a position, not a one-time token)
    assert srv.list_convs(account_id=acc, limit=100, cursor=cursor).json() == page


# ------------------------------------------------------------------ /metrics families
ISSUE_FAMILIES = {  # name: (type, label names of its samples)
    "gensendrep_http_requests_total": ("counter", {"route", "method", "status"}),
    "gensendrep_http_request_duration_seconds": ("histogram", {"route"}),
    "gensendrep_webhooks_accepted_total": ("counter", {"source"}),
    "gensendrep_webhooks_redelivered_total": ("counter", set()),
    "gensendrep_store_commit_batch_size": ("histogram", set()),
    "gensendrep_store_commit_duration_seconds": ("histogram", set()),
    "gensendrep_store_errors_total": ("counter", {"kind"}),
    "gensendrep_rate_limited_total": ("counter", {"limit"}),
    "gensendrep_auth_failures_total": ("counter", set()),
    "gensendrep_connections": ("gauge", set()),
    "gensendrep_outbox_backlog": ("gauge", set()),
    "gensendrep_deliveries_total": ("counter", {"outcome"}),
}
SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')


def test_metrics_families_are_the_issues(srv):
    """Each family the issue lists, with its type and exactly its labels (histograms: le on
    _bucket only); a redelivery and an accepted ElevenLabs event move their counters."""
    def scrape():
        r = srv.get("/metrics", key=TOKEN)
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return r.text

    def value(text, line_start):
        return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
                   if l.startswith(line_start))

    before = scrape()
    body = post(srv, accountId="acc-metrics-" + uid())
    assert srv.post_conv(body).status_code == 200  # byte-identical: a redelivery
    el_call(srv, "acc-metrics-" + uid())
    text = scrape()
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    labels = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        m = SAMPLE_RE.match(line)
        assert m, line
        name, lab, val = m.groups()
        float(val)
        names = set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', lab or ""))
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and name[:-len(suffix)] in types:
                if suffix == "_bucket":
                    assert "le" in names, line
                    names.discard("le")
                name = name[:-len(suffix)]
        labels.setdefault(name, set()).add(frozenset(names))
    for name, (kind, want) in ISSUE_FAMILIES.items():
        assert types.get(name) == kind, (name, types.get(name))
        assert labels.get(name) == {frozenset(want)}, (name, labels.get(name))
    for line_start, at_least in (('gensendrep_webhooks_accepted_total{source="conversation"}', 2),
                                 ('gensendrep_webhooks_accepted_total{source="elevenlabs"}', 1),
                                 ("gensendrep_webhooks_redelivered_total", 1)):
        assert value(text, line_start) - value(before, line_start) >= at_least, line_start
