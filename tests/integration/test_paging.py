"""GET /api/v1/conversations: cursor pages (pagination.nextCursor) and the from/to window.

A cursor continues after the last row of the page before, in the list's order (when each
conversation was first stored, newest first, then conversationId; a redelivery never moves a
conversation), without counting: every answer that has a next page gives
its cursor, the last page gives null. from/to is the half-open window [from, to) on the
conversation's startTime, or its processedAt when it has none."""
import base64
import hashlib
import json
import threading
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

import pytest

from helpers import KEY1, KEY2, assert_error, make_conv, uid


def _ids(resp):
    assert resp.status_code == 200, resp.text
    return [c["conversationId"] for c in resp.json()["conversations"]]


def _post(server, **kw):
    body = make_conv(**kw)
    r = server.post_conv(body)
    assert r.status_code == 200, r.text
    return body["conversationId"]


def _walk(server, limit, **params):
    """Every id of the list by cursor pages of `limit` (from a counted first page, or from
    cursor="" when params has it); returns (ids, pages)."""
    r = server.list_convs(limit=limit, **params)
    params.pop("cursor", None)
    ids, pages = _ids(r), [r.json()]
    while pages[-1]["pagination"]["nextCursor"] is not None:
        r = server.list_convs(limit=limit, cursor=pages[-1]["pagination"]["nextCursor"],
                              **params)
        ids += _ids(r)
        pages.append(r.json())
        assert len(pages) < 1000
    return ids, pages


def _started(account, start):
    """A conversation of account whose transcript starts at start (None: empty transcript)."""
    body = make_conv(accountId=account)
    if start is None:
        body["transcript"] = []
        body["metadata"]["messageCount"] = 0
    else:
        body["transcript"] = [{"timestamp": start, "speaker": "user", "content": "hi",
                               "messageId": "m1"}]
        body["metadata"]["messageCount"] = 1
    return body


def _unpad_b64url(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# ------------------------------------------------------------------ cursor pages
def test_cursor_walk_gives_the_pages_in_order(server):
    account = "acc-walk-" + uid()
    posted = [_post(server, accountId=account) for _ in range(7)]
    everything = _ids(server.list_convs(account_id=account, limit=100))
    assert sorted(everything) == sorted(posted) and everything[0] == posted[-1]

    ids, pages = _walk(server, 3, account_id=account)
    assert ids == everything
    assert [len(p["conversations"]) for p in pages] == [3, 3, 1]
    # the first page is a counted page: its total, and the cursor of the next
    assert pages[0]["pagination"]["total"] == 7 and pages[0]["pagination"]["page"] == 1
    # a cursor page is not counted
    for p in pages[1:]:
        assert set(p["pagination"]) == {"limit", "nextCursor"}, p["pagination"]
        assert p["pagination"]["limit"] == 3
    assert pages[-1]["pagination"]["nextCursor"] is None
    # an exact multiple of the limit: the last full page already says there is no next one
    ids, pages = _walk(server, 7, account_id=account)
    assert ids == everything and len(pages) == 1
    # a counted page's cursor continues after that page, and the limit may change on the way
    p2 = server.list_convs(account_id=account, limit=2, page=2).json()
    rest = server.list_convs(account_id=account, limit=5, cursor=p2["pagination"]["nextCursor"])
    assert _ids(rest) == everything[4:]
    assert rest.json()["pagination"]["nextCursor"] is None


def test_empty_cursor_is_the_first_page_uncounted(server):
    """cursor= given empty: the first page without a count; the walk from it meets every row
    once, in the counted list's order."""
    account = "acc-first-" + uid()
    posted = [_post(server, accountId=account) for _ in range(7)]
    everything = _ids(server.list_convs(account_id=account, limit=100))
    assert sorted(everything) == sorted(posted)

    ids, pages = _walk(server, 3, account_id=account, cursor="")
    assert ids == everything and len(ids) == len(set(ids))
    assert [len(p["conversations"]) for p in pages] == [3, 3, 1]
    for p in pages:
        assert set(p["pagination"]) == {"limit", "nextCursor"}, p["pagination"]
    assert pages[0]["pagination"]["nextCursor"]
    # with a window too
    ids, _ = _walk(server, 2, account_id=account, cursor="", to="2999-01-01T00:00:00Z")
    assert ids == everything
    # nothing to list: an empty first page, no count, no next page
    r = server.list_convs(account_id=account + "-none", cursor="")
    assert r.status_code == 200, r.text
    assert r.json() == {"conversations": [], "pagination": {"limit": 20, "nextCursor": None}}
    # an empty cursor with page is still a contradiction
    err = assert_error(server.list_convs(account_id=account, cursor="", page=1), 400,
                       "INVALID_PARAMETER")
    assert [d["field"] for d in err["details"]] == ["cursor"]


def test_cursor_walk_while_writes_continue(server):
    """Rows there when the walk begins come exactly once; none comes twice (rows changed during
    the walk too: test_cursor_walk_meets_changed_conversations_exactly_once)."""
    account = "acc-live-" + uid()
    existing = [_post(server, accountId=account) for _ in range(25)]
    stop = threading.Event()
    written, errors = [], []

    def keep_writing():
        session = server.new_session()
        while not stop.is_set() and len(written) < 400:
            body = make_conv(accountId=account)
            r = server.post_conv(body, session=session)
            if r.status_code != 200:
                errors.append(r.text)
                return
            written.append(body["conversationId"])
            # redeliver an old one unchanged: it keeps its place
            if len(written) % 5 == 0:
                server.post_conv(make_conv(existing[len(written) % 25], accountId=account),
                                 session=session)

    t = threading.Thread(target=keep_writing)
    t.start()
    try:
        ids, pages = _walk(server, 2, account_id=account)
    finally:
        stop.set()
        t.join()
    assert not errors, errors[:1]
    assert len(ids) == len(set(ids)), "a row came twice"
    assert set(existing) <= set(ids), set(existing) - set(ids)
    assert len(pages) >= 13


def _changed(cid, account, n):
    """Another version of conversation cid (its bytes differ: a new version, processed now)."""
    body = make_conv(cid, accountId=account)
    body["metadata"]["duration"] = 1000 + n
    return body


def test_cursor_walk_meets_changed_conversations_exactly_once(server):
    """Between the pages of a cursor walk: a new conversation is posted, conversations already
    passed and not yet reached are redelivered with changed bodies, and one not yet reached is
    erased. Every conversation there when the walk began and not erased is met exactly once, in
    the order the walk began with (a redelivery keeps a conversation's place); the erased one and
    the new ones (newer than the walk's start) are not met. Was: a conversation changed ahead of
    the cursor moved to the front, behind it, and was never met."""
    account = "acc-change-" + uid()
    existing = [_post(server, accountId=account) for _ in range(12)]
    before = _ids(server.list_convs(account_id=account, limit=100))
    assert before == existing[::-1]
    erased = before[8]
    r = server.list_convs(account_id=account, limit=2)
    ids = _ids(r)
    cursor = r.json()["pagination"]["nextCursor"]
    new, step = [], 0
    while cursor:
        step += 1
        assert step < 20
        if step == 1:
            e = server.request("DELETE", "/api/v1/conversations/" + quote(erased, safe=""))
            assert e.status_code == 200, e.text
        new.append(_post(server, accountId=account))
        # passed (the last met, the first met) and ahead (the oldest, the next to come)
        ahead = [c for c in before if c not in ids and c != erased]
        for n, cid in enumerate({ids[-1], ids[0], ahead[-1], ahead[0]}):
            resp = server.post_conv(_changed(cid, account, step * 10 + n))
            assert resp.status_code == 200, resp.text
        r = server.list_convs(account_id=account, limit=2, cursor=cursor)
        ids += _ids(r)
        cursor = r.json()["pagination"]["nextCursor"]
    assert ids == [c for c in before if c != erased], ids
    # the counted list: the new ones first, the rest in their places, processedAt the latest
    now = server.list_convs(account_id=account, limit=100).json()["conversations"]
    assert [c["conversationId"] for c in now] == new[::-1] + ids
    oldest = now[-1]
    assert oldest["conversationId"] == before[-1]
    assert 1000 + step * 10 <= oldest["duration"] < 1000 + step * 10 + 4  # the last version
    assert oldest["processedAt"] > now[0]["processedAt"]  # changed after the newest was posted


def test_cursor_is_bound_to_its_query(server):
    account = "acc-bound-" + uid()
    for _ in range(3):
        _post(server, accountId=account)
    cursor = server.list_convs(account_id=account, limit=1).json()["pagination"]["nextCursor"]
    assert cursor
    for params in ({"account_id": account + "x"}, {}, {"account_id": account, "status": "failed"},
                   {"account_id": account, "from": "2024-01-01T00:00:00Z"}):
        err = assert_error(server.list_convs(limit=1, cursor=cursor, **params), 400,
                           "INVALID_PARAMETER")
        assert [d["field"] for d in err["details"]] == ["cursor"], err
    # the same query written otherwise (an equivalent instant) is the same query
    c2 = server.list_convs(account_id=account, limit=1, to="2999-01-01T00:00:00Z").json()
    r = server.list_convs(account_id=account, limit=1, to="2999-01-01T01:00:00+01:00",
                          cursor=c2["pagination"]["nextCursor"])
    assert r.status_code == 200, r.text


def test_cursor_of_a_key_bound_otherwise_is_refused(make_server):
    """A key bound to accounts walks only its accounts; its cursors are not another key's."""
    srv = make_server()
    acc_a, acc_b = "acc-a-" + uid(), "acc-b-" + uid()
    mine = [_post(srv, accountId=acc_a) for _ in range(3)]
    for _ in range(3):
        _post(srv, accountId=acc_b)
    r = srv.request("POST", "/api/v1/keys", data=json.dumps(
        {"name": "bound-" + uid(), "scopes": ["read"], "accounts": [acc_a]}),
        headers={"Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    bound = r.json()["key"]
    ids, pages = _walk_as(srv, bound, 1)
    assert sorted(ids) == sorted(mine) and len(pages) == 3
    c_bound = pages[0]["pagination"]["nextCursor"]
    c_all = srv.list_convs(limit=1).json()["pagination"]["nextCursor"]
    err = assert_error(srv.list_convs(limit=1, cursor=c_bound), 400, "INVALID_PARAMETER")
    assert [d["field"] for d in err["details"]] == ["cursor"]
    err = assert_error(srv.list_convs(limit=1, cursor=c_all, key=bound), 400, "INVALID_PARAMETER")
    assert [d["field"] for d in err["details"]] == ["cursor"]


def test_keys_bound_to_the_same_accounts_in_another_order_share_cursors(make_server):
    """The bound is a set of accounts: a walk begun with one key goes on with another that names
    the same accounts in another order (a key rotated mid-walk), and no further."""
    srv = make_server()
    acc_a, acc_c = "acc-a-" + uid(), "acc-c-" + uid()
    mine = [_post(srv, accountId=acc) for acc in (acc_a, acc_c, acc_a, acc_c)]

    def bound(accounts):
        r = srv.request("POST", "/api/v1/keys", data=json.dumps(
            {"name": "bound-" + uid(), "scopes": ["read"], "accounts": accounts}),
            headers={"Content-Type": "application/json"})
        assert r.status_code == 201, r.text
        return r.json()["key"]
    first, second = bound([acc_a, acc_c]), bound([acc_c, acc_a])
    page = srv.list_convs(limit=2, key=first).json()
    r = srv.list_convs(limit=2, key=second, cursor=page["pagination"]["nextCursor"])
    assert r.status_code == 200, r.text
    assert sorted(_ids_of(page) + _ids(r)) == sorted(mine)
    other = bound([acc_a])
    err = assert_error(srv.list_convs(limit=2, key=other, cursor=page["pagination"]["nextCursor"]),
                       400, "INVALID_PARAMETER")
    assert [d["field"] for d in err["details"]] == ["cursor"]


def _ids_of(page):
    return [c["conversationId"] for c in page["conversations"]]


def _walk_as(server, key, limit):
    r = server.list_convs(limit=limit, key=key)
    ids, pages = _ids(r), [r.json()]
    while pages[-1]["pagination"]["nextCursor"] is not None:
        r = server.list_convs(limit=limit, key=key, cursor=pages[-1]["pagination"]["nextCursor"])
        ids += _ids(r)
        pages.append(r.json())
        assert len(pages) < 100
    return ids, pages


def _flip(text, i):
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    c = text[i]
    return text[:i] + alphabet[(alphabet.index(c) + 1) % 64] + text[i + 1:]


def test_bad_cursors_are_400_naming_cursor(server):
    account = "acc-bad-" + uid()
    for _ in range(3):
        _post(server, accountId=account)
    good = server.list_convs(account_id=account, limit=1).json()["pagination"]["nextCursor"]
    raw = _unpad_b64url(good)
    # a forged cursor: a well-formed one with a tag computed without the key
    forged = bytearray(raw)
    forged[-16:] = hashlib.sha256(bytes(raw[:-16])).digest()[:16]
    # a cursor moved to another position: the processed time changed, the tag kept
    moved = bytearray(raw)
    moved[5] ^= 1
    bad = ["x", " ", "!!!!", good + "A", good[:-1], good[1:], "A" * 5000, good.upper(),
           good + "=", good.replace("-", "+").replace("_", "/") if ("-" in good or "_" in good)
           else good + "+", base64.urlsafe_b64encode(bytes(forged)).decode().rstrip("="),
           base64.urlsafe_b64encode(bytes(moved)).decode().rstrip("="),
           "AQAAAAAAAAAAAGFh" + "A" * 22, "%00", "\u00e9t\u00e9"]
    bad += [_flip(good, i) for i in range(0, len(good), 7)]
    for cursor in bad:
        r = server.list_convs(account_id=account, limit=1, cursor=cursor)
        err = assert_error(r, 400, "INVALID_PARAMETER")
        assert [d["field"] for d in err["details"]] == ["cursor"], (cursor, err)
    # cursor and page together: which one wins would be a guess
    err = assert_error(server.list_convs(account_id=account, cursor=good, page=1), 400,
                       "INVALID_PARAMETER")
    assert [d["field"] for d in err["details"]] == ["cursor"]
    # the good one still works after all that
    assert len(_ids(server.list_convs(account_id=account, limit=1, cursor=good))) == 1


def test_cursor_of_another_deployment_is_refused(make_server):
    a = make_server()
    b = make_server(env={"API_SECRET_KEY": "test-key-one,other-deployment-" + uid()})
    account = "acc-dep-" + uid()
    for srv in (a, b):
        for _ in range(2):
            _post(srv, accountId=account)
    cursor = a.list_convs(account_id=account, limit=1).json()["pagination"]["nextCursor"]
    assert a.list_convs(account_id=account, limit=1, cursor=cursor).status_code == 200
    err = assert_error(b.list_convs(account_id=account, limit=1, cursor=cursor), 400,
                       "INVALID_PARAMETER")
    assert [d["field"] for d in err["details"]] == ["cursor"]
    # a restart keeps the deployment's cursors valid
    a.restart()
    assert a.list_convs(account_id=account, limit=1, cursor=cursor).status_code == 200


def test_cursor_survives_key_rotation_and_restart(make_server):
    """Cursors are tagged under the database's own random secret: reordering the API keys,
    adding one (a rotation), adding an encryption key, and restarting keep them valid."""
    k1 = "k1:" + base64.b64encode(hashlib.sha256(b"paging rotation one").digest()).decode()
    k2 = "k2:" + base64.b64encode(hashlib.sha256(b"paging rotation two").digest()).decode()
    srv = make_server(env={"API_SECRET_KEY": f"{KEY1},{KEY2}", "ENCRYPTION_KEYS": k1})
    account = "acc-rot-" + uid()
    posted = [_post(srv, accountId=account) for _ in range(3)]
    first = srv.list_convs(account_id=account, limit=1, cursor="")
    cursor = first.json()["pagination"]["nextCursor"]
    srv.env_overrides["API_SECRET_KEY"] = f"rotated-in-{uid()},{KEY2},{KEY1}"
    srv.restart()
    r = srv.list_convs(account_id=account, limit=1, cursor=cursor)
    assert r.status_code == 200, r.text
    srv.env_overrides["ENCRYPTION_KEYS"] = f"{k2},{k1}"
    srv.restart()
    r = srv.list_convs(account_id=account, limit=5, cursor=cursor)
    assert r.status_code == 200, r.text
    assert _ids(first) + _ids(r) == _ids(srv.list_convs(account_id=account, limit=5))
    assert sorted(_ids(first) + _ids(r)) == sorted(posted)


def test_sealed_store_cursor_walk_leaks_nothing(make_server):
    key = "k1:" + base64.b64encode(hashlib.sha256(b"paging test key").digest()).decode()
    srv = make_server(env={"ENCRYPTION_KEYS": key})
    email, account = f"sealed-{uid()}@example.com", "acc-sealed-" + uid()
    posted = [_post(srv, emailId=email, accountId=account) for _ in range(5)]
    for params in ({"email_id": email}, {"account_id": account},
                   {"email_id": email, "account_id": account}):
        ids, pages = _walk(srv, 2, **params)
        assert sorted(ids) == sorted(posted) and len(pages) == 3
        for p in pages[:-1]:
            raw = _unpad_b64url(p["pagination"]["nextCursor"])
            for secret in (email, account, email.split("@")[0], account[4:]):
                assert secret.encode() not in raw
                assert secret.encode().hex().encode() not in raw


# ------------------------------------------------------------------ from / to
def test_from_to_window_with_offsets_and_fallback(server):
    account = "acc-window-" + uid()
    starts = {
        "before": "2024-03-01T09:59:59.999999Z",
        "first": "2024-03-01T12:00:00+02:00",  # 10:00:00Z: the window's first instant
        "inside": "2024-03-01T05:30:00-05:00",  # 10:30:00Z
        "end": "2024-03-01T11:00:00Z",  # the window's end: outside (half-open)
        "none": None,  # no startTime: its processedAt counts
    }
    ids = {}
    for name, start in starts.items():
        body = _started(account, start)
        r = server.post_conv(body)
        assert r.status_code == 200, r.text
        ids[name] = body["conversationId"]
    got = server.get_conv(ids["none"]).json()
    assert got["startTime"] is None
    processed = datetime.fromisoformat(got["processedAt"].replace("Z", "+00:00"))

    def window(**params):
        r = server.list_convs(account_id=account, limit=100, **params)
        counted = _ids(r)
        assert r.json()["pagination"]["total"] == len(counted)
        walked, _ = _walk(server, 1, account_id=account, **params)
        assert walked == counted
        return {k for k, v in ids.items() if v in counted}

    assert window(**{"from": "2024-03-01T10:00:00Z", "to": "2024-03-01T11:00:00Z"}) == \
        {"first", "inside"}
    # the same instants written with other offsets; '+' unencoded arrives as a space
    assert window(**{"from": "2024-03-01T11:00:00+01:00", "to": "2024-03-01T06:00:00-05:00"}) == \
        {"first", "inside"}
    r = server.get("/api/v1/conversations?account_id=" + account +
                   "&from=2024-03-01T11:00:00+01:00&to=2024-03-01T12:00:00+01:00&limit=100")
    assert {k for k, v in ids.items() if v in _ids(r)} == {"first", "inside"}
    assert window(**{"from": "2024-03-01T10:00:00Z"}) == {"first", "inside", "end", "none"}
    assert window(to="2024-03-01T11:00:00Z") == {"before", "first", "inside"}
    assert window(to="2024-03-01T10:00:00Z") == {"before"}
    assert window(**{"from": "2024-03-01T10:00:00Z", "to": "2024-03-01T10:00:00Z"}) == set()
    # the fallback: a window around its processedAt finds it, and only it
    lo = (processed - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    hi = (processed + timedelta(minutes=5)).astimezone(timezone(timedelta(hours=9)))
    assert window(**{"from": lo, "to": hi.isoformat()}) == {"none"}
    assert window(**{"from": got["processedAt"]}) >= {"none"}


BAD_WINDOWS = [
    ({"from": "yesterday"}, "from"),
    ({"from": "2024-03-01T10:00:00"}, "from"),  # no offset
    ({"from": "2024-03-01"}, "from"),
    ({"from": ""}, "from"),
    ({"to": "2024-02-30T00:00:00Z"}, "to"),
    ({"to": "2024-03-01T10:00:00+25:00"}, "to"),
    ({"from": "2024-03-02T00:00:00Z", "to": "2024-03-01T00:00:00Z"}, "to"),
]


@pytest.mark.parametrize("params,field", BAD_WINDOWS, ids=[json.dumps(p) for p, _ in BAD_WINDOWS])
def test_bad_window_is_400_naming_it(server, params, field):
    err = assert_error(server.list_convs(**params), 400, "INVALID_PARAMETER")
    assert [d["field"] for d in err["details"]] == [field], err
