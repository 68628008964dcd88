"""GET /api/v1/conversations/{id} and GET /api/v1/conversations."""
from datetime import datetime, timezone

import pytest

from helpers import (CONVERSATION_FIELDS, PROCESSED_AT_RE, UTC_TS_RE, assert_error, make_conv,
                     uid)


def _parse_utc(s):
    assert UTC_TS_RE.match(s), s
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def _post_ok(server, body):
    r = server.post_conv(body)
    assert r.status_code == 200, r.text
    return r.json()["data"]


# ------------------------------------------------------------------ get one
def test_get_one_fields(server):
    body = make_conv(emailId="get-one@example.com", accountId="acc-get-one")
    body["metadata"]["duration"] = 125
    body["metadata"]["messageCount"] = 7
    # earliest timestamp is not the first entry and is written with an offset
    body["transcript"] = [
        {"timestamp": "2024-03-10T09:05:00Z", "speaker": "agent", "content": "b", "messageId": "2"},
        {"timestamp": "2024-03-10T10:00:00+01:00", "speaker": "user", "content": "a",
         "messageId": "1"},
        {"timestamp": "2024-03-10T09:10:00Z", "speaker": "user", "content": "c", "messageId": "3"},
    ]
    posted = _post_ok(server, body)
    r = server.get_conv(body["conversationId"])
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    got = r.json()
    assert set(got) == CONVERSATION_FIELDS, got
    assert got == {
        "conversationId": body["conversationId"],
        "emailId": "get-one@example.com",
        "accountId": "acc-get-one",
        "agentId": body["metadata"]["agentId"],
        "status": "completed",
        "startTime": "2024-03-10T09:00:00Z",
        "endTime": "2024-03-10T09:02:05Z",
        "duration": 125,
        "messageCount": 7,
        "processedAt": posted["processedAt"],
    }
    assert PROCESSED_AT_RE.match(got["processedAt"])
    processed = _parse_utc(got["processedAt"])
    assert abs((datetime.now(timezone.utc) - processed).total_seconds()) < 120


TIME_CASES = [
    # (transcript timestamps, duration, expected startTime, expected endTime)
    (["2024-01-15T10:30:00Z"], 300, "2024-01-15T10:30:00Z", "2024-01-15T10:35:00Z"),
    (["2024-01-15T12:30:00+02:00", "2024-01-15T10:31:00Z"], 60,
     "2024-01-15T10:30:00Z", "2024-01-15T10:31:00Z"),
    (["2024-01-15T23:59:30-05:00"], 60, "2024-01-16T04:59:30Z", "2024-01-16T05:00:30Z"),
    (["2024-12-31T23:59:00Z"], 120, "2024-12-31T23:59:00Z", "2025-01-01T00:01:00Z"),
    (["2024-02-28T23:00:00Z"], 7200, "2024-02-28T23:00:00Z", "2024-02-29T01:00:00Z"),
    (["2024-01-15T10:30:00.000Z"], 0, "2024-01-15T10:30:00Z", "2024-01-15T10:30:00Z"),
]


@pytest.mark.parametrize("stamps,duration,start,end", TIME_CASES)
def test_start_and_end_time(server, stamps, duration, start, end):
    body = make_conv()
    body["transcript"] = [{"timestamp": t, "speaker": "user", "content": "x", "messageId": str(i)}
                          for i, t in enumerate(stamps)]
    body["metadata"]["duration"] = duration
    _post_ok(server, body)
    got = server.get_conv(body["conversationId"]).json()
    assert (got["startTime"], got["endTime"]) == (start, end)


def test_fractional_start_time_kept(server):
    body = make_conv()
    body["transcript"] = [
        {"timestamp": "2024-01-15T10:30:05Z", "speaker": "user", "content": "x", "messageId": "1"},
        {"timestamp": "2024-01-15T12:30:00.25+02:00", "speaker": "agent", "content": "y",
         "messageId": "2"},
    ]
    body["metadata"]["duration"] = 10
    _post_ok(server, body)
    got = server.get_conv(body["conversationId"]).json()
    assert _parse_utc(got["startTime"]) == datetime(2024, 1, 15, 10, 30, 0, 250000,
                                                    tzinfo=timezone.utc)
    assert _parse_utc(got["endTime"]) == datetime(2024, 1, 15, 10, 30, 10, 250000,
                                                  tzinfo=timezone.utc)


def test_include_transcript_returns_data_as_posted(server):
    body = make_conv()
    body["transcript"][0]["metadata"] = {"lang": "en", "confidence": 0.5}
    body["metadata"]["custom"] = {"k": [1, "two", None, True]}
    body["summary"] = {"text": "Resolved", "sentiment": "positive"}
    _post_ok(server, body)
    r = server.get_conv(body["conversationId"], include=True)
    assert r.status_code == 200
    got = r.json()
    assert set(got) == CONVERSATION_FIELDS | {"transcript", "metadata", "summary"}
    assert got["transcript"] == body["transcript"]
    assert got["metadata"] == body["metadata"]
    assert got["summary"] == body["summary"]
    # and without include, none of them
    assert set(server.get_conv(body["conversationId"]).json()) == CONVERSATION_FIELDS


def test_include_without_summary_gives_null(server):
    body = make_conv()
    _post_ok(server, body)
    got = server.get_conv(body["conversationId"], include=True).json()
    assert "summary" in got and got["summary"] is None


def test_include_unknown_value_rejected(server):
    body = make_conv()
    _post_ok(server, body)
    r = server.get(f"/api/v1/conversations/{body['conversationId']}?include=everything")
    err = assert_error(r, 400, "INVALID_PARAMETER")
    assert "include" in err["message"]


@pytest.mark.parametrize("cid", ["does-not-exist", uid(), "with%20space-unknown"],
                         ids=["plain", "random-id", "escaped-space"])
def test_unknown_conversation_404(server, cid):
    r = server.get(f"/api/v1/conversations/{cid}")
    assert_error(r, 404, "NOT_FOUND")
    assert r.headers["Content-Type"].startswith("application/json")


# ------------------------------------------------------------------ list
@pytest.fixture(scope="module")
def dataset(server):
    """Seven conversations under a unique tag: two emails x two accounts, posted in order."""
    tag = uid()[:12]
    e1, e2 = f"one+{tag}@example.com", f"two&{tag}@example.com"
    a1, a2 = f"acc1-{tag}", f"acc2 {tag}"
    layout = [(e1, a1), (e1, a1), (e1, a2), (e2, a1), (e2, a2), (e2, a2), (e2, a2)]
    posted = []
    for i, (e, a) in enumerate(layout):
        body = make_conv(f"{tag}-{i:02d}", emailId=e, accountId=a)
        data = _post_ok(server, body)
        posted.append({"conversationId": body["conversationId"], "emailId": e, "accountId": a,
                       "processedAt": data["processedAt"]})
    return {"tag": tag, "e1": e1, "e2": e2, "a1": a1, "a2": a2, "posted": posted}


def _ids(resp):
    assert resp.status_code == 200, resp.text
    return [c["conversationId"] for c in resp.json()["conversations"]]


def _expected(dataset, pred):
    rows = [p for p in dataset["posted"] if pred(p)]
    rows.sort(key=lambda p: p["conversationId"])
    rows.sort(key=lambda p: p["processedAt"], reverse=True)
    return [p["conversationId"] for p in rows]


FILTERS = [
    # (query built from dataset keys, predicate)
    ({"email_id": "e1"}, lambda d, p: p["emailId"] == d["e1"]),
    ({"email_id": "e2"}, lambda d, p: p["emailId"] == d["e2"]),
    ({"account_id": "a2"}, lambda d, p: p["accountId"] == d["a2"]),
    ({"email_id": "e1", "account_id": "a1"},
     lambda d, p: p["emailId"] == d["e1"] and p["accountId"] == d["a1"]),
    ({"email_id": "e2", "account_id": "a1"},
     lambda d, p: p["emailId"] == d["e2"] and p["accountId"] == d["a1"]),
    ({"email_id": "e1", "status": "completed"}, lambda d, p: p["emailId"] == d["e1"]),
    ({"email_id": "e1", "status": "processing"}, lambda d, p: False),
    ({"email_id": "e1", "account_id": "a1", "status": "completed"},
     lambda d, p: p["emailId"] == d["e1"] and p["accountId"] == d["a1"]),
]


@pytest.mark.parametrize("query,pred", FILTERS, ids=[str(q) for q, _ in FILTERS])
def test_list_filters(server, dataset, query, pred):
    params = {k: dataset.get(v, v) for k, v in query.items()}
    r = server.list_convs(limit=100, **params)
    expected = _expected(dataset, lambda p: pred(dataset, p))
    assert _ids(r) == expected
    body = r.json()
    assert body["pagination"]["total"] == len(expected)
    for c in body["conversations"]:
        assert set(c) == CONVERSATION_FIELDS
        assert c["status"] == "completed"
        assert c["agentId"] == "agent_01jxn7fwb2eyq8p6k4m3en4xtm"


def test_list_filter_is_exact_match(server, dataset):
    for email in (dataset["e1"][:-1], dataset["e1"].upper(), dataset["tag"], "%" + dataset["tag"] + "%"):
        r = server.list_convs(email_id=email)
        assert _ids(r) == [], email


def test_list_items_match_get_one(server, dataset):
    r = server.list_convs(email_id=dataset["e1"])
    for item in r.json()["conversations"]:
        assert item == server.get_conv(item["conversationId"]).json()


def test_list_without_filters_and_defaults(server, dataset):
    r = server.list_convs()
    body = r.json()
    assert set(body) == {"conversations", "pagination"}
    p = body["pagination"]
    assert p["page"] == 1 and p["limit"] == 20
    assert p["total"] >= len(dataset["posted"])
    assert len(body["conversations"]) == min(20, p["total"])
    assert p["totalPages"] == -(-p["total"] // 20)


def test_ordering_newest_first_ties_by_id(server, dataset):
    r = server.list_convs(email_id=dataset["e2"])
    items = r.json()["conversations"]
    keys = [(c["processedAt"], c["conversationId"]) for c in items]
    # newest processedAt first; equal processedAt ordered by conversationId ascending
    for (pa, ca), (pb, cb) in zip(keys, keys[1:]):
        assert pa > pb or (pa == pb and ca < cb), keys
    # the last one posted comes first
    assert items[0]["conversationId"] == dataset["posted"][-1]["conversationId"]


def test_pagination(server, dataset):
    email = dataset["e2"]  # 4 conversations
    expected = _expected(dataset, lambda p: p["emailId"] == email)
    assert len(expected) == 4
    pages = []
    for page, n in [(1, 3), (2, 1)]:
        r = server.list_convs(email_id=email, limit=3, page=page)
        body = r.json()
        cursor = body["pagination"].pop("nextCursor")  # a next page: its cursor (test_paging.py)
        assert (cursor is not None) == (page == 1), cursor
        assert body["pagination"] == {"page": page, "limit": 3, "total": 4, "totalPages": 2}
        assert len(body["conversations"]) == n
        pages += _ids(r)
    assert pages == expected

    for page in (3, 50):
        r = server.list_convs(email_id=email, limit=3, page=page)
        body = r.json()
        assert body["conversations"] == []
        assert body["pagination"] == {"page": page, "limit": 3, "total": 4, "totalPages": 2,
                                      "nextCursor": None}

    r = server.list_convs(email_id=email, limit=1, page=4)
    assert _ids(r) == expected[3:4]
    assert r.json()["pagination"]["totalPages"] == 4
    r = server.list_convs(email_id=email, limit=100)
    assert _ids(r) == expected


def test_list_no_match(server):
    r = server.list_convs(email_id=f"nobody-{uid()}@example.com")
    body = r.json()
    assert body["conversations"] == []
    assert body["pagination"]["total"] == 0


BAD_PARAMS = [
    ({"limit": "0"}, "limit"),
    ({"limit": "101"}, "limit"),
    ({"limit": "abc"}, "limit"),
    ({"limit": "-1"}, "limit"),
    ({"limit": "1.5"}, "limit"),
    ({"limit": ""}, "limit"),
    ({"limit": "99999999999999999999999"}, "limit"),
    ({"page": "0"}, "page"),
    ({"page": "abc"}, "page"),
    ({"page": "-2"}, "page"),
    ({"page": "1x"}, "page"),
    ({"page": "2", "limit": "500"}, "limit"),
]


@pytest.mark.parametrize("params,name", BAD_PARAMS, ids=[str(p) for p, _ in BAD_PARAMS])
def test_invalid_query_parameters(server, params, name):
    r = server.list_convs(**params)
    err = assert_error(r, 400, "INVALID_PARAMETER")
    assert name in err["message"] or name in [d["field"] for d in err["details"]], err


@pytest.mark.parametrize("limit", ["1", "100"])
def test_limit_bounds_accepted(server, dataset, limit):
    r = server.list_convs(limit=limit)
    assert r.status_code == 200
    assert r.json()["pagination"]["limit"] == int(limit)
    assert len(r.json()["conversations"]) <= int(limit)
