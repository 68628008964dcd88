"""Erasure and retention (issue 9 item 4), black-box, both backends.

DELETE /api/v1/conversations/{id} erases the conversation's row, every delivery, its ElevenLabs
events and its audio in one transaction: afterwards get, /audio, include=events and the list
show nothing of it, and (SQLite) its text is in neither the database file nor its log.
RETENTION_DAYS erases, in the background and in small batches, conversations processed longer
ago than that (rows are aged directly in the database for the test) and keeps recent ones,
while ingest keeps answering."""
import hashlib
import hmac
import json
import sqlite3
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from helpers import KEY2, assert_error, make_conv, pg_cluster, uid

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "elevenlabs"
SECRET = "wsec_57506b15b729457580a8ec8a16cf3b594534526df7cfdef57efafbed7ad50768"
EL_ENV = {"ELEVENLABS_WEBHOOK_SECRET": SECRET}
DAY_US = 86400 * 1000000


def conv_path(cid, suffix=""):
    return "/api/v1/conversations/" + quote(cid, safe="") + suffix


def el_post(server, fixture, cid):
    raw = (FIXTURES / fixture).read_bytes()
    body = raw.replace(json.loads(raw)["data"]["conversation_id"].encode(), cid.encode())
    t = int(time.time())
    mac = hmac.new(SECRET.encode(), str(t).encode() + b"." + body, hashlib.sha256).hexdigest()
    r = server.request("POST", "/api/v1/webhook/elevenlabs", key=None, data=body,
                       headers={"Content-Type": "application/json",
                                "ElevenLabs-Signature": f"t={t},v0={mac}"})
    assert r.status_code == 200, r.text[:300]


def erase(server, cid, **kw):
    return server.request("DELETE", conv_path(cid), **kw)


def listed_ids(server):
    r = server.list_convs(limit=100)
    assert r.status_code == 200, r.text
    return {c["conversationId"] for c in r.json()["conversations"]}


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


# ------------------------------------------------------------------ DELETE
def test_delete_erases_the_conversation_everywhere(make_server):
    srv = make_server(env=EL_ENV)
    cid, other = f"conv_{uid()}", f"conv_{uid()}"
    el_post(srv, "post_call_transcription_success.json", cid)
    el_post(srv, "post_call_audio_small.json", cid)
    assert srv.post_conv(make_conv(cid)).status_code == 200  # a second version, seed-shaped
    el_post(srv, "post_call_transcription_success.json", other)
    el_post(srv, "post_call_audio_small.json", other)
    assert srv.get(conv_path(cid, "/audio")).status_code == 200
    assert cid in listed_ids(srv)

    r = erase(srv, cid)
    assert r.status_code == 200, r.text
    assert r.json() == {"success": True, "data": {"conversationId": cid, "erased": True}}

    assert_error(srv.get(conv_path(cid)), 404, "NOT_FOUND")
    assert_error(srv.get(conv_path(cid) + "?include=transcript,events"), 404, "NOT_FOUND")
    assert_error(srv.get(conv_path(cid, "/audio")), 404, "NOT_FOUND")
    assert cid not in listed_ids(srv)
    # nothing of it is left to erase
    assert_error(erase(srv, cid), 404, "NOT_FOUND")
    # the neighbour keeps its row, events and audio
    r = srv.get(conv_path(other) + "?include=events")
    assert r.status_code == 200
    assert len(r.json()["events"]) == 2
    assert srv.get(conv_path(other, "/audio")).status_code == 200
    assert other in listed_ids(srv)


def test_delete_of_audio_alone(make_server):
    """Audio whose transcript never came is still the conversation's: erased, then 404."""
    srv = make_server(env=EL_ENV)
    cid = f"conv_{uid()}"
    el_post(srv, "post_call_audio_small.json", cid)
    assert srv.get(conv_path(cid, "/audio")).status_code == 200
    assert erase(srv, cid).status_code == 200
    assert_error(srv.get(conv_path(cid, "/audio")), 404, "NOT_FOUND")
    assert_error(erase(srv, cid), 404, "NOT_FOUND")


def test_delete_needs_a_bearer_key(server):
    cid = f"conv_{uid()}"
    assert server.post_conv(make_conv(cid)).status_code == 200
    assert_error(erase(server, cid, key=None), 401, "UNAUTHORIZED")
    assert_error(erase(server, cid, key="not-a-key"), 401, "UNAUTHORIZED")
    assert server.get_conv(cid).status_code == 200  # still there
    assert erase(server, cid, key=KEY2).status_code == 200


def test_delete_of_unknown_ids_is_404(server):
    assert_error(erase(server, f"conv_{uid()}"), 404, "NOT_FOUND")
    # a raw '/' never reaches the erasure: .../{id}/audio is not a conversation to erase
    cid = f"conv_{uid()}"
    assert server.post_conv(make_conv(cid)).status_code == 200
    r = server.request("DELETE", conv_path(cid, "/audio"))
    assert_error(r, 405, "METHOD_NOT_ALLOWED")
    assert server.get_conv(cid).status_code == 200


def test_an_id_with_a_slash_is_erased_when_written_2f(server):
    cid = f"team/{uid()}"
    assert server.post_conv(make_conv(cid)).status_code == 200
    assert erase(server, cid).status_code == 200
    assert_error(server.get_conv(cid), 404, "NOT_FOUND")


def test_a_webhook_after_erasure_is_stored_again(server):
    body = make_conv()
    cid = body["conversationId"]
    first = server.post_conv(body)
    assert first.status_code == 200
    assert erase(server, cid).status_code == 200
    again = server.post_conv(body)  # the same bytes: a new delivery, not a redelivery
    assert again.status_code == 200
    assert again.json()["data"]["webhookId"] != first.json()["data"]["webhookId"]
    assert server.get_conv(cid).status_code == 200


def test_delete_is_listed_in_allow(server):
    r = server.request("OPTIONS", conv_path("x"))
    assert "DELETE" in [m.strip() for m in r.headers["Allow"].split(",")]


# ------------------------------------------------------------------ SQLite: no trace
@pytest.mark.backends("sqlite")
def test_erased_text_is_in_neither_the_database_file_nor_its_log(make_server, backend):
    srv = make_server(env=EL_ENV)
    path = Path(srv.database_url[len("sqlite:"):])
    wal = Path(str(path) + "-wal")
    secret_text = f"ERASE-ME-{uid()}".encode()
    kept_text = f"KEEP-ME-{uid()}".encode()

    def on_disk():
        return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")

    def outbox_events(cid):
        db = sqlite3.connect(str(path), timeout=10)
        try:
            return db.execute("SELECT count(*) FROM outbox_events WHERE conversation_id = ?",
                              (cid,)).fetchone()[0]
        finally:
            db.close()

    # A subscription (disabled: its events wait) makes every change write its outbox event,
    # a copy of the text: SQLite writes none while nothing could read them.
    r = srv.request("POST", "/api/v1/subscriptions",
                    json={"url": "https://no-such-host.invalid/hook", "enabled": False})
    assert r.status_code == 201, r.text
    body = make_conv()
    body["transcript"][0]["content"] = secret_text.decode() + " " + "x" * 20000  # overflow pages
    cid = body["conversationId"]
    assert srv.post_conv(body).status_code == 200
    body["transcript"][1]["content"] = secret_text.decode() + " v2"  # a second version
    assert srv.post_conv(body).status_code == 200
    kept = make_conv()
    kept["transcript"][0]["content"] = kept_text.decode()
    assert srv.post_conv(kept).status_code == 200
    assert secret_text in on_disk()
    assert outbox_events(cid) == 2  # created, updated: the text is in the outbox too

    assert erase(srv, cid).status_code == 200
    # The log is emptied (a TRUNCATE checkpoint) once no reader needs it: within moments.
    assert wait_for(lambda: secret_text not in on_disk(), timeout=10), \
        "the erased text is still in the database file or its log"
    assert secret_text not in path.read_bytes()
    assert not wal.exists() or secret_text not in wal.read_bytes()
    assert outbox_events(cid) == 1  # conversation.deleted alone
    assert kept_text in on_disk()  # the search does find text that was not erased
    assert srv.get_conv(kept["conversationId"], include=True).status_code == 200
    # ... and still after a restart (nothing comes back from the log)
    srv.stop()
    srv.start()
    assert secret_text not in on_disk()
    assert_error(srv.get_conv(cid), 404, "NOT_FOUND")


# ------------------------------------------------------------------ retention
def test_retention_erases_old_conversations_and_keeps_recent_ones(make_server):
    srv = make_server(env={**EL_ENV, "RETENTION_DAYS": "30"})
    old = [f"old_{uid()}" for _ in range(230)]  # more than two batches of 100
    recent = [f"new_{uid()}" for _ in range(5)]
    orphan = f"orphan_{uid()}"  # audio whose transcript never came
    young_orphan = f"young_{uid()}"
    for cid in old + recent:
        assert srv.post_conv(make_conv(cid)).status_code == 200
    el_post(srv, "post_call_audio_small.json", orphan)
    el_post(srv, "post_call_audio_small.json", young_orphan)
    ids = ",".join(f"'{c}'" for c in old)
    sql(srv, f"UPDATE conversations SET processed_at_us = processed_at_us - 40 * {DAY_US}, "
             f"first_processed_at_us = first_processed_at_us - 40 * {DAY_US} "
             f"WHERE conversation_id IN ({ids})")
    sql(srv, f"UPDATE events SET received_at_us = received_at_us - 40 * {DAY_US} "
             f"WHERE conversation_id = '{orphan}'")
    sql(srv, f"UPDATE audio_meta SET received_at_us = received_at_us - 40 * {DAY_US} "
             f"WHERE conversation_id = '{orphan}'")

    # Ingest keeps answering while retention runs.
    stop = threading.Event()
    results = []

    def ingest():
        while not stop.is_set():
            t0 = time.time()
            r = srv.post_conv(make_conv())
            results.append((r.status_code, time.time() - t0))

    t = threading.Thread(target=ingest)
    t.start()
    try:
        # oldest first: the last one posted is the last one erased
        gone = wait_for(lambda: srv.get_conv(old[-1]).status_code == 404, timeout=30, step=0.5)
    finally:
        stop.set()
        t.join()
    assert gone, "old conversations were not erased within 30 s"
    for cid in old:
        assert srv.get_conv(cid).status_code == 404, cid
    for cid in recent:
        assert srv.get_conv(cid).status_code == 200
    assert wait_for(lambda: srv.get(conv_path(orphan, "/audio")).status_code == 404, timeout=15)
    assert srv.get(conv_path(young_orphan, "/audio")).status_code == 200
    assert results and all(code == 200 for code, _ in results), results[:20]
    assert max(d for _, d in results) < 5, max(d for _, d in results)
    assert wait_for(lambda: "retention: erased" in srv.stderr_text(), timeout=15)


def test_without_retention_nothing_old_is_erased(make_server):
    srv = make_server()
    cid = f"old_{uid()}"
    assert srv.post_conv(make_conv(cid)).status_code == 200
    sql(srv, f"UPDATE conversations SET processed_at_us = processed_at_us - 4000 * {DAY_US}, "
             f"first_processed_at_us = first_processed_at_us - 4000 * {DAY_US} "
             f"WHERE conversation_id = '{cid}'")
    time.sleep(1)
    assert srv.get_conv(cid).status_code == 200


@pytest.mark.backends("postgres")
def test_two_instances_run_retention_on_one_database(make_server, backend):
    """Both instances erase from the same database at once: each batch skips the rows the other
    holds, so neither fails or waits, and everything old goes exactly once."""
    a = make_server(env={"RETENTION_DAYS": "30"})
    b = make_server(env={"RETENTION_DAYS": "30"}, database_url=a.database_url)
    old = [f"old_{uid()}" for _ in range(300)]
    keep = f"new_{uid()}"
    for i, cid in enumerate(old):
        assert (a if i % 2 else b).post_conv(make_conv(cid)).status_code == 200
    assert b.post_conv(make_conv(keep)).status_code == 200
    ids = ",".join(f"'{c}'" for c in old)
    sql(a, f"UPDATE conversations SET processed_at_us = processed_at_us - 40 * {DAY_US}, "
           f"first_processed_at_us = first_processed_at_us - 40 * {DAY_US} "
           f"WHERE conversation_id IN ({ids})")
    assert wait_for(lambda: a.list_convs(limit=1).json()["pagination"]["total"] == 1, timeout=30)
    assert a.get_conv(keep).status_code == 200
    for srv in (a, b):
        assert "retention: a batch failed" not in srv.stderr_text()
    # logged once a run of batches ends (the next batch finds nothing)
    assert wait_for(lambda: "retention: erased" in a.stderr_text() + b.stderr_text(), timeout=15)


# ------------------------------------------------------------------ scoped keys
def _new_key(server, scopes, accounts=()):
    body = {"name": "erase-" + uid(), "scopes": list(scopes), "accounts": list(accounts)}
    r = server.request("POST", "/api/v1/keys", data=json.dumps(body),
                       headers={"Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    return r.json()["key"]


def test_delete_needs_the_delete_scope(server):
    reader, deleter = _new_key(server, ["read", "ingest"]), _new_key(server, ["delete"])
    cid = f"conv_{uid()}"
    assert server.post_conv(make_conv(cid)).status_code == 200
    assert_error(erase(server, cid, key=reader), 403, "FORBIDDEN")
    assert server.get_conv(cid).status_code == 200
    assert erase(server, cid, key=deleter).status_code == 200
    assert_error(server.get_conv(cid), 404, "NOT_FOUND")


def test_a_key_bound_to_accounts_erases_only_theirs(make_server):
    srv = make_server(env=EL_ENV)
    bound = _new_key(srv, ["delete"], ["acc-a"])
    mine, theirs, lone = f"conv_{uid()}", f"conv_{uid()}", f"conv_{uid()}"
    assert srv.post_conv(make_conv(mine, accountId="acc-a")).status_code == 200
    assert srv.post_conv(make_conv(theirs, accountId="acc-b")).status_code == 200
    el_post(srv, "post_call_audio_small.json", lone)  # audio of no conversation: no account
    # another account's conversation, and what has no account, do not exist for this key
    assert_error(erase(srv, theirs, key=bound), 404, "NOT_FOUND")
    assert_error(erase(srv, lone, key=bound), 404, "NOT_FOUND")
    assert_error(erase(srv, f"conv_{uid()}", key=bound), 404, "NOT_FOUND")
    assert srv.get_conv(theirs).status_code == 200
    assert srv.get(conv_path(lone, "/audio")).status_code == 200
    r = erase(srv, mine, key=bound)
    assert r.status_code == 200, r.text
    assert r.json()["data"] == {"conversationId": mine, "erased": True}
    assert_error(srv.get_conv(mine), 404, "NOT_FOUND")
