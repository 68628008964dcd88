"""Encryption at rest (issue 9 item 3), black-box, both backends.

With ENCRYPTION_KEYS set, text a client sent (an email, an account id, transcript words, an
ElevenLabs audio's bytes) is in neither the raw SQLite file nor its WAL, nor in a pg_dump of the
PostgreSQL database, while every read gives it back byte for byte. Equality filters and
account-bound keys work over sealed rows and rows written before encryption was switched on.
A key rotation with `gensendrep reencrypt` (run while the service runs) lets the old key go;
rows written before encryption are sealed by it. A wrong key, a missing key and sealed data
without ENCRYPTION_KEYS stop start-up at once with a line naming ENCRYPTION_KEYS."""
import base64
import hashlib
import hmac
import json
import re
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import quote

from helpers import BINARY, KEY1, assert_error, free_port, make_conv, pg_cluster, uid
from receiver import Receiver

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "elevenlabs"
SECRET = "wsec_57506b15b729457580a8ec8a16cf3b594534526df7cfdef57efafbed7ad50768"
K1 = "k1:" + base64.b64encode(hashlib.sha256(b"test key one").digest()).decode()
K2 = "k2:" + base64.b64encode(hashlib.sha256(b"test key two").digest()).decode()
K1_OTHER_BYTES = "k1:" + base64.b64encode(hashlib.sha256(b"not key one").digest()).decode()
EL_ENV = {"ELEVENLABS_WEBHOOK_SECRET": SECRET}
START_FAIL_TIMEOUT = 30  # a refusal must come long before this, even on a loaded machine


def conv_path(cid, suffix=""):
    return "/api/v1/conversations/" + quote(cid, safe="") + suffix


# ------------------------------------------------------------------ what goes in
class Known:
    """One conversation's worth of unique text, sent as a seed webhook, an ElevenLabs
    transcription (email/account from its dynamic variables) and an ElevenLabs audio."""

    def __init__(self):
        u = uid()
        self.email = f"secret.{u[:12]}@example.com"
        self.account = f"acct_secret_{u[12:24]}"
        self.words = f"Zanzibar{u[:10]} papaya{u[10:20]} quartz{u[20:30]}"
        self.el_email = f"el.{u[:12]}@example.org"
        self.el_account = f"acct_el_{u[8:20]}"
        self.el_words = f"Xylophone{u[:10]} marigold{u[10:20]}"
        self.audio_marker = f"AUDIO-SECRET-{u}-XYZ".encode()[:48]  # 48 bytes: whole base64 groups
        self.seed_cid = f"conv_{uid()}"
        self.el_cid = f"conv_{uid()}"
        self.transcript = None  # the seed conversation's latest transcript, as sent
        self.el_event = None  # the ElevenLabs transcription event's bytes, as sent

    def needles(self):
        """Every text that must not be found at rest, as raw bytes; with the hex spelling
        (pg_dump writes bytea as hex) and the audio marker's base64 too."""
        texts = [self.email, self.account, self.el_email, self.el_account]
        texts += self.words.split() + self.el_words.split()
        out = [t.encode() for t in texts] + [self.audio_marker]
        out += [t.encode().hex().encode() for t in texts] + [self.audio_marker.hex().encode()]
        out.append(base64.b64encode(self.audio_marker))
        return out


def seed_body(k, cid=None, email=None, account=None):
    body = make_conv(cid or k.seed_cid, emailId=email or k.email, accountId=account or k.account)
    body["transcript"][0]["content"] = k.words
    return body


def el_post(server, body):
    t = int(time.time())
    mac = hmac.new(SECRET.encode(), str(t).encode() + b"." + body, hashlib.sha256).hexdigest()
    return server.request("POST", "/api/v1/webhook/elevenlabs", key=None, data=body,
                          headers={"Content-Type": "application/json",
                                   "ElevenLabs-Signature": f"t={t},v0={mac}"})


def el_transcription(k):
    doc = json.loads((FIXTURES / "post_call_transcription_success.json").read_bytes())
    data = doc["data"]
    data["conversation_id"] = k.el_cid
    dyn = data["conversation_initiation_client_data"]["dynamic_variables"]
    dyn["user_email"], dyn["account_id"] = k.el_email, k.el_account
    dyn["system__conversation_id"] = k.el_cid
    data["transcript"][1]["message"] = k.el_words
    return json.dumps(doc).encode()


def el_audio(k):
    """(event body, the decoded audio it carries): the fixture's MP3 with the marker inside."""
    doc = json.loads((FIXTURES / "post_call_audio_small.json").read_bytes())
    audio = base64.b64decode(doc["data"]["full_audio"])
    at = (len(audio) // 2) // 3 * 3
    audio = audio[:at] + k.audio_marker + audio[at:]
    doc["data"]["full_audio"] = base64.b64encode(audio).decode()
    doc["data"]["conversation_id"] = k.el_cid
    return json.dumps(doc).encode(), audio


def keep_outbox(srv):
    """A disabled subscription (its events wait): every change then writes its outbox event, a
    copy of the conversation that must be sealed as its row is. SQLite writes no event while
    nothing could read it (README "Onward delivery"), so without one its outbox would be empty
    and what it keeps would go unchecked."""
    r = srv.request("POST", "/api/v1/subscriptions",
                    json={"url": "https://no-such-host.invalid/hook", "enabled": False})
    assert r.status_code == 201, r.text[:300]


def outbox_events(srv, cid):
    """How many outbox events the server's database holds of conversation cid."""
    q = f"SELECT count(*) FROM outbox_events WHERE conversation_id = '{cid}'"
    if srv.backend == "sqlite":
        db = sqlite3.connect(srv.database_url[len("sqlite:"):], timeout=10)
        try:
            return db.execute(q).fetchone()[0]
        finally:
            db.close()
    return int(pg_cluster().psql(q, srv.database_url.rsplit("/", 1)[1]).strip())


def write_known(srv, k):
    """Sends k's three webhooks; returns the audio bytes."""
    body = seed_body(k)
    r = srv.post_conv(body)
    assert r.status_code == 200, r.text[:300]
    k.transcript = body["transcript"]
    k.el_event = el_transcription(k)
    r = el_post(srv, k.el_event)
    assert r.status_code == 200, r.text[:300]
    body, audio = el_audio(k)
    r = el_post(srv, body)
    assert r.status_code == 200, r.text[:300]
    return audio


def check_reads(srv, k, audio, key=KEY1):
    """Everything k sent reads back exactly: get, list (by email and account), include=events,
    audio whole and by range."""
    r = srv.get(conv_path(k.seed_cid) + "?include=transcript", key=key)
    assert r.status_code == 200, r.text[:300]
    c = r.json()
    c = c.get("data", c)
    assert c["emailId"] == k.email and c["accountId"] == k.account, c
    assert c["transcript"][0]["content"] == k.words
    assert c["transcript"] == k.transcript

    r = srv.get(conv_path(k.el_cid) + "?include=transcript,events", key=key)
    assert r.status_code == 200, r.text[:300]
    c = r.json()
    c = c.get("data", c)
    assert c["emailId"] == k.el_email and c["accountId"] == k.el_account, c
    assert k.el_words in json.dumps(c["transcript"])
    events = c["events"]
    assert [e["type"] for e in events] == ["post_call_transcription", "post_call_audio"], events
    assert events[0]["event"] == json.loads(k.el_event)
    assert k.el_event in r.content  # byte for byte, as it came

    for params, cid in (({"email_id": k.email}, k.seed_cid), ({"account_id": k.account}, k.seed_cid),
                        ({"email_id": k.el_email}, k.el_cid),
                        ({"account_id": k.el_account}, k.el_cid)):
        r = srv.list_convs(key=key, limit=100, **params)
        assert r.status_code == 200, r.text[:300]
        assert [x["conversationId"] for x in r.json()["conversations"]] == [cid], (params, r.text)

    r = srv.get(conv_path(k.el_cid, "/audio"), key=key)
    assert r.status_code == 200, r.text[:300]
    assert r.content == audio
    r = srv.get(conv_path(k.el_cid, "/audio"), key=key, headers={"Range": "bytes=100-299"})
    assert r.status_code == 206, r.text[:300]
    assert r.content == audio[100:300]


# ------------------------------------------------------------------ what is at rest
def sqlite_files(srv):
    path = Path(srv.database_url[len("sqlite:"):])
    return [path, Path(str(path) + "-wal")]


def pg_dump(srv):
    from services import _as_postgres, _pg_bin
    db = srv.database_url.rsplit("/", 1)[1]
    pg = pg_cluster()
    r = subprocess.run(_as_postgres([_pg_bin("pg_dump"), "-h", "127.0.0.1", "-p", str(pg.port),
                                     "-U", "postgres", "-d", db]),
                       capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    assert b"COPY public.conversations" in r.stdout or b"CREATE TABLE" in r.stdout
    return r.stdout


def at_rest(srv):
    """The raw bytes an attacker with the database gets: the SQLite file and its WAL, or a
    pg_dump of the PostgreSQL database."""
    if srv.backend == "sqlite":
        return b"".join(p.read_bytes() for p in sqlite_files(srv) if p.exists())
    return pg_dump(srv)


def found(srv, needles):
    raw = at_rest(srv)
    return [n for n in needles if n in raw]


def wait_for(pred, timeout=20.0, step=0.3):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


# ------------------------------------------------------------------ the CLI and start-up
def run_cli(srv, args, keys, timeout=120):
    env = srv.build_env()
    env.pop("ENCRYPTION_KEYS", None)
    if keys is not None:
        env["ENCRYPTION_KEYS"] = keys
    return subprocess.run([BINARY, *args], cwd=srv.workdir, env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def start_fails(srv, keys):
    """Starts the service on srv's database with ENCRYPTION_KEYS=keys (None: unset), expecting
    it to refuse at once; returns its stderr."""
    srv.port = free_port()
    t0 = time.monotonic()
    r = run_cli(srv, [], keys, timeout=START_FAIL_TIMEOUT)
    assert r.returncode != 0, r.stderr[-2000:]
    assert time.monotonic() - t0 < START_FAIL_TIMEOUT
    assert "ENCRYPTION_KEYS" in r.stderr, r.stderr[-2000:]
    assert "listening" not in r.stderr
    for secret in (K1, K2, K1_OTHER_BYTES):
        assert secret.split(":")[1] not in r.stderr  # never a key's bytes
    assert "AddressSanitizer" not in r.stderr and "runtime error:" not in r.stderr
    return r.stderr


def reencrypt(srv, keys, batch=None):
    args = ["reencrypt"] + (["--batch", str(batch)] if batch else [])
    r = run_cli(srv, args, keys)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "reencrypt: done" in r.stderr, r.stderr[-3000:]
    assert "AddressSanitizer" not in r.stderr and "runtime error:" not in r.stderr
    return r.stderr


def with_keys(srv, keys):
    """Restarts srv (SIGTERM, exit 0) with ENCRYPTION_KEYS=keys (None: unset)."""
    if srv.running:
        assert srv.stop() == 0
    srv.env_overrides["ENCRYPTION_KEYS"] = keys
    srv.start()


def rewrite_seals_settle(srv, needles):
    """SQLite: an old page image may sit in the WAL until the next checkpoint; a clean stop
    checkpoints and removes the WAL. Waits, then stops and starts once if needed."""
    if wait_for(lambda: not found(srv, needles), timeout=5):
        return
    assert srv.stop() == 0
    srv.start()


# ------------------------------------------------------------------ tests
def test_known_text_is_not_at_rest_and_reads_back(make_server):
    srv = make_server(env={**EL_ENV, "ENCRYPTION_KEYS": K1})
    keep_outbox(srv)
    k = Known()
    audio = write_known(srv, k)
    # a second version of the seed conversation (a redelivery with new text)
    body = seed_body(k)
    body["transcript"][1]["content"] = k.words + " again"
    assert srv.post_conv(body).status_code == 200
    k.transcript = body["transcript"]
    assert outbox_events(srv, k.seed_cid) == 2  # created, updated: the outbox holds it too
    assert outbox_events(srv, k.el_cid) == 2  # created, audio_added
    check_reads(srv, k, audio)
    assert found(srv, k.needles()) == []
    assert srv.stop() == 0  # SQLite: the WAL is folded into the file
    assert found(srv, k.needles()) == []
    srv.start()
    check_reads(srv, k, audio)

    # the same search finds the text when encryption is off (the search itself works)
    plain = make_server(env=EL_ENV)
    kp = Known()
    write_known(plain, kp)
    hits = found(plain, kp.needles())
    assert kp.email.encode() in hits or kp.email.encode().hex().encode() in hits, hits
    assert kp.words.split()[0].encode() in hits or \
        kp.words.split()[0].encode().hex().encode() in hits, hits
    assert kp.audio_marker in hits or kp.audio_marker.hex().encode() in hits, hits


def test_filters_and_bound_keys_over_plain_and_sealed_rows(make_server):
    srv = make_server(env=EL_ENV)
    email, account, other_account = f"shared.{uid()[:10]}@example.com", f"acc_{uid()[:12]}", \
        f"acc_{uid()[:12]}"
    before, after, other = f"conv_{uid()}", f"conv_{uid()}", f"conv_{uid()}"
    k = Known()
    assert srv.post_conv(seed_body(k, before, email, account)).status_code == 200
    with_keys(srv, K1)
    assert srv.post_conv(seed_body(k, after, email, account)).status_code == 200
    assert srv.post_conv(seed_body(k, other, email, other_account)).status_code == 200

    def ids(key=KEY1, **params):
        r = srv.list_convs(key=key, limit=100, **params)
        assert r.status_code == 200, r.text[:300]
        return sorted(c["conversationId"] for c in r.json()["conversations"])

    assert ids(email_id=email) == sorted([before, after, other])
    assert ids(account_id=account) == sorted([before, after])
    assert ids(account_id=other_account) == [other]
    assert ids(email_id=email, account_id=account) == sorted([before, after])
    assert ids(email_id="nobody@example.com") == []

    r = srv.request("POST", "/api/v1/keys", data=json.dumps(
        {"name": "bound", "scopes": ["read"], "accounts": [account]}),
        headers={"Content-Type": "application/json"})
    assert r.status_code == 201, r.text[:300]
    made = r.json()
    bound = made.get("data", made)["key"]
    assert ids(key=bound) == sorted([before, after])
    assert ids(key=bound, email_id=email) == sorted([before, after])
    for cid in (before, after):
        r = srv.get(conv_path(cid), key=bound)
        assert r.status_code == 200, r.text[:300]
        c = r.json()
        c = c.get("data", c)
        assert c["accountId"] == account and c["emailId"] == email
    assert_error(srv.get(conv_path(other), key=bound), 404, "NOT_FOUND")

    # still so after reencrypt has sealed the row written before encryption
    reencrypt(srv, K1)
    assert ids(email_id=email) == sorted([before, after, other])
    assert ids(key=bound) == sorted([before, after])
    assert srv.get(conv_path(before), key=bound).status_code == 200
    assert_error(srv.get(conv_path(other), key=bound), 404, "NOT_FOUND")


def test_rotation_reencrypt_then_the_old_key_goes(make_server):
    srv = make_server(env={**EL_ENV, "ENCRYPTION_KEYS": K1})
    keep_outbox(srv)  # its events are resealed too
    k_old = Known()
    audio_old = write_known(srv, k_old)

    with_keys(srv, f"{K2},{K1}")  # the new key first, the old one still opens
    check_reads(srv, k_old, audio_old)
    k_new = Known()
    audio_new = write_known(srv, k_new)
    check_reads(srv, k_new, audio_new)

    # the service keeps running and ingesting while reencrypt rewrites every row
    stop, posted, statuses = threading.Event(), [], []

    def ingest():
        session = srv.new_session()
        while not stop.is_set():
            u = uid()
            body = seed_body(k_new, cid=f"conv_{u}", email=f"w.{u[:12]}@example.com",
                             account=f"acct_w_{u[12:24]}")
            statuses.append(srv.post_conv(body, session=session).status_code)
            posted.append(body)
        session.close()

    writer = threading.Thread(target=ingest)
    writer.start()
    try:
        out = reencrypt(srv, f"{K2},{K1}", batch=2)
    finally:
        stop.set()
        writer.join()
    assert posted and set(statuses) == {200}, statuses
    assert re.search(r"reencrypt: \d+ rows rewritten", out), out
    assert "k2" in out
    k_during = Known()
    audio_during = write_known(srv, k_during)
    for k, a in ((k_old, audio_old), (k_new, audio_new), (k_during, audio_during)):
        check_reads(srv, k, a)

    # a second run has nothing left to do
    out = reencrypt(srv, f"{K2},{K1}")
    assert "(0 rewritten)" in out, out

    with_keys(srv, K2)  # the old key removed: starts, reads everything
    for k, a in ((k_old, audio_old), (k_new, audio_new), (k_during, audio_during)):
        check_reads(srv, k, a)
    for body in posted:
        r = srv.get(conv_path(body["conversationId"]) + "?include=transcript")
        assert r.status_code == 200 and r.json()["transcript"] == body["transcript"], r.text[:300]
    assert found(srv, k_old.needles() + k_new.needles()) == []
    assert srv.stop() == 0
    # the old key alone cannot open what is now sealed with k2
    err = start_fails(srv, K1)
    assert "k2" in err, err
    srv.env_overrides["ENCRYPTION_KEYS"] = K2
    srv.start()


def test_rows_written_before_encryption_are_sealed_by_reencrypt(make_server):
    srv = make_server(env=EL_ENV)
    keep_outbox(srv)  # its plaintext events are sealed too
    k = Known()
    audio = write_known(srv, k)
    assert outbox_events(srv, k.seed_cid) == 1
    assert found(srv, [k.email.encode(), k.email.encode().hex().encode()]) != []

    with_keys(srv, K1)
    check_reads(srv, k, audio)  # plaintext rows still read
    reencrypt(srv, K1)
    check_reads(srv, k, audio)
    rewrite_seals_settle(srv, k.needles())
    assert found(srv, k.needles()) == []
    check_reads(srv, k, audio)


def test_subscription_urls_and_accounts_are_sealed_and_carried_by_reencrypt(make_server):
    """A subscription's URL (tokens in it) and its account are sealed at rest on both backends:
    neither is in the SQLite file or a pg_dump. One made before ENCRYPTION_KEYS (plaintext)
    keeps working and is sealed by reencrypt; after a rotation to a new key and a reencrypt,
    both open with the new key alone, deliveries still reach their URL, signed, and only the
    subscription's account's events go to it."""
    rcv = Receiver()
    try:
        srv = make_server(env={"DELIVERY_ALLOW_PRIVATE_NETWORKS": "true",
                               "DELIVERY_RETRY_SCHEDULE": "0,1,2"})
        subs = []

        def subscribe():
            token, acc = "urltok" + uid()[:16], "subacct-" + uid()[:12]
            r = srv.request("POST", "/api/v1/subscriptions",
                            json={"url": rcv.url(token), "accountId": acc})
            assert r.status_code == 201, r.text
            subs.append((token, acc, r.json()))

        def delivered_only_to_their_account():
            for token, acc, created in subs:
                mine, other = make_conv(accountId=acc), make_conv(accountId="acct-other-" + uid())
                for body in (other, mine):
                    assert srv.post_conv(body).status_code == 200
                rcv.wait(lambda: rcv.delivered(token, cid=mine["conversationId"]), 30,
                         f"the event at {token}")
                assert not rcv.requests(token, cid=other["conversationId"])
                assert all(q.signature_ok(created["secret"]) for q in rcv.requests(token))
                r = srv.get("/api/v1/subscriptions/" + created["id"])
                assert r.status_code == 200, r.text
                assert (r.json()["url"], r.json()["accountId"]) == (rcv.url(token), acc)

        def needles():
            texts = [t for token, acc, _ in subs for t in (token, acc)]
            return [t.encode() for t in texts] + [t.encode().hex().encode() for t in texts]

        subscribe()  # before encryption: plaintext at rest
        delivered_only_to_their_account()
        with_keys(srv, K1)
        subscribe()
        delivered_only_to_their_account()  # the plaintext one still works
        assert srv.stop() == 0
        srv.start()
        assert found(srv, [t.encode() for t in subs[1][:2]]) == []  # the new one: sealed

        with_keys(srv, f"{K2},{K1}")
        reencrypt(srv, f"{K2},{K1}")
        with_keys(srv, K2)  # k1 retired: everything opens with k2 alone
        delivered_only_to_their_account()
        rewrite_seals_settle(srv, needles())
        assert found(srv, needles()) == []
        delivered_only_to_their_account()
    finally:
        rcv.close()


def test_subscription_patched_after_a_rotation_is_carried_whole_by_reencrypt(make_server):
    """A subscription sealed with k1, PATCHed after a rotation to k2,k1 (one member at a time:
    maxPerSecond, then the URL alone), then `reencrypt` and k1 retired: its URL, account and
    secret all open with k2 alone (GET, the list, a signed delivery to its URL of its account's
    event). An update that re-seals only some of a row's columns must not make the row look
    done to reencrypt, or the key still sealing the rest is retired under it."""
    rcv = Receiver()
    try:
        srv = make_server(env={"DELIVERY_ALLOW_PRIVATE_NETWORKS": "true",
                               "ENCRYPTION_KEYS": K1})
        token, acc = "rotok" + uid()[:12], "rotacct-" + uid()[:10]
        r = srv.request("POST", "/api/v1/subscriptions",
                        json={"url": rcv.url(token), "accountId": acc})
        assert r.status_code == 201, r.text
        created = r.json()
        sid = created["id"]
        with_keys(srv, f"{K2},{K1}")
        r = srv.request("PATCH", "/api/v1/subscriptions/" + sid, json={"maxPerSecond": 50})
        assert r.status_code == 200, r.text
        token2 = token + "b"
        r = srv.request("PATCH", "/api/v1/subscriptions/" + sid, json={"url": rcv.url(token2)})
        assert r.status_code == 200, r.text
        assert srv.stop() == 0
        reencrypt(srv, f"{K2},{K1}")
        with_keys(srv, K2)
        r = srv.get("/api/v1/subscriptions/" + sid)
        assert r.status_code == 200, r.text
        assert (r.json()["url"], r.json()["accountId"], r.json()["maxPerSecond"]) == \
            (rcv.url(token2), acc, 50)
        assert srv.get("/api/v1/subscriptions").status_code == 200
        mine = make_conv(accountId=acc)
        assert srv.post_conv(mine).status_code == 200
        rcv.wait(lambda: rcv.delivered(token2, cid=mine["conversationId"]), 30,
                 f"the event at {token2}")
        assert all(q.signature_ok(created["secret"]) for q in rcv.requests(token2))
    finally:
        rcv.close()


def test_start_fails_fast_without_the_right_key(make_server):
    srv = make_server(env={**EL_ENV, "ENCRYPTION_KEYS": K1})
    k = Known()
    audio = write_known(srv, k)
    assert srv.stop() == 0

    err = start_fails(srv, K2)  # a wrong key: another id
    assert "k1" in err, err
    start_fails(srv, K1_OTHER_BYTES)  # the same id, other bytes
    start_fails(srv, None)  # sealed data, no ENCRYPTION_KEYS
    start_fails(srv, "")
    err = start_fails(srv, "k1:not-base64")  # a bad value: a configuration error (exit 2)
    assert "configuration error" in err
    assert run_cli(srv, [], "k1:not-base64").returncode == 2
    # the CLI commands that open the database refuse the same way
    for args in (["keys", "list"], ["migrate"], ["reencrypt"]):
        r = run_cli(srv, args, K2)
        assert r.returncode != 0 and "ENCRYPTION_KEYS" in r.stderr, (args, r.stderr[-2000:])
    r = run_cli(srv, ["keys", "list"], None)
    assert r.returncode != 0 and "ENCRYPTION_KEYS" in r.stderr, r.stderr[-2000:]

    srv.env_overrides["ENCRYPTION_KEYS"] = K1  # the right key still works
    srv.start()
    check_reads(srv, k, audio)


def test_reencrypt_needs_encryption_keys(make_server):
    srv = make_server()
    r = run_cli(srv, ["reencrypt"], None)
    assert r.returncode == 2, r.stderr
    assert "ENCRYPTION_KEYS" in r.stderr and "reencrypt" in r.stderr
    r = run_cli(srv, ["reencrypt", "--batch", "0"], K1)
    assert r.returncode == 2 and "--batch" in r.stderr, r.stderr


def test_genkey_encryption_makes_a_usable_key(make_server):
    srv = make_server(start=False)
    r = run_cli(srv, ["genkey", "--encryption"], None)
    assert r.returncode == 0, r.stderr
    item = r.stdout.strip()
    assert re.fullmatch(r"k\d{14}:[A-Za-z0-9+/]{43}=", item), item
    assert len(base64.b64decode(item.split(":")[1])) == 32
    assert item.split(":")[1] not in r.stderr
    r2 = run_cli(srv, ["genkey", "--encryption"], None)
    assert r2.stdout.strip().split(":")[1] != item.split(":")[1]
    srv.env_overrides["ENCRYPTION_KEYS"] = item
    srv.start()
    cid = f"conv_{uid()}"
    assert srv.post_conv(make_conv(cid)).status_code == 200
    assert srv.get(conv_path(cid)).status_code == 200
