"""PostgreSQL's own failure modes, seen from outside: data a client sent that the database
refuses is the client's fault (4xx, never 500); a restart of the cluster, idle or mid-stream,
loses nothing acknowledged and, while idle, costs no request at all; start-up waits a bounded
time for the database; PostgreSQL's notices are JSON log lines. Every server here is real: a
throw-away PostgreSQL cluster per test that stops or restarts it (services.py)."""
import concurrent.futures
import hashlib
import json
import os
import subprocess
import threading
import time
import uuid

import pytest

from helpers import Server, assert_error, finish_server, make_conv, new_session
from services import PgCluster, _as_postgres, _pg_bin, free_port

pytestmark = pytest.mark.backends("postgres")


@pytest.fixture
def cluster():
    c = PgCluster()
    c.start()
    yield c
    c.destroy()


def _db_of(url):
    return url.rsplit("/", 1)[1]


def _json_lines(srv):
    """Every stderr line, parsed; a line that is not JSON fails the test."""
    recs = []
    for line in srv.stderr_text().splitlines():
        try:
            recs.append(json.loads(line))
        except ValueError:
            pytest.fail(f"stderr line is not JSON: {line!r}")
    return recs


# ---------------------------------------------------------------- client data (defect 3)
@pytest.mark.parametrize("path", [
    "/api/v1/conversations/ab%FFcd",
    "/api/v1/conversations/%C3%28",
    "/api/v1/conversations?email_id=%FF",
    "/api/v1/conversations?account_id=acc%E2%82&status=completed",
])
def test_bytes_the_database_refuses_are_the_clients_fault(server, path):
    r = server.get(path)
    assert r.status_code == 400, (r.status_code, r.text)
    assert_error(r, 400)
    # The reader's connection survives the refused read.
    body = make_conv()
    assert server.post_conv(body).status_code == 200
    assert server.get_conv(body["conversationId"]).status_code == 200


# ---------------------------------------------------------------- restarts (defect 8)
def test_restart_while_idle_costs_no_request(cluster, tmp_path):
    """An idle connection reads as healthy after the server restarted; the first batch and
    the first read after a restart used to fail with 503."""
    srv = Server(tmp_path / "srv", backend="postgres", database_url=cluster.create_database("idle"),
                 env={"THREADS": "1"})
    try:
        srv.start()
        seeded = make_conv()
        assert srv.post_conv(seeded).status_code == 200
        assert srv.get_conv(seeded["conversationId"]).status_code == 200
        for _ in range(2):
            cluster.stop()
            cluster.start()
            body = make_conv()
            r = srv.post_conv(body)
            assert r.status_code == 200, r.text
            r = srv.get_conv(body["conversationId"], include=True)
            assert r.status_code == 200, r.text
            assert srv.list_convs().status_code == 200
            assert srv.get("/api/v1/health", key=None).status_code == 200
        assert "postgresql unreachable" not in srv.stderr_text()
    finally:
        finish_server(srv)


def test_a_failed_reader_connect_does_not_lock_the_writer_out(cluster, tmp_path):
    url = cluster.create_database("lockout")
    db = _db_of(url)
    srv = Server(tmp_path / "srv", backend="postgres", database_url=url, env={"THREADS": "1"})
    try:
        srv.start()
        assert srv.post_conv(make_conv()).status_code == 200
        assert srv.list_convs().status_code == 200
        # Every connection of the service goes; for a moment none can be made.
        cluster.psql(f"ALTER DATABASE {db} ALLOW_CONNECTIONS false")
        cluster.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE application_name = 'gensendrep'")
        assert_error(srv.list_convs(), 503, "SERVICE_UNAVAILABLE")  # a reader's connect fails
        cluster.psql(f"ALTER DATABASE {db} ALLOW_CONNECTIONS true")
        # The writer reconnects at once: the reader's pause is the readers' own.
        t0 = time.monotonic()
        r = srv.post_conv(make_conv())
        assert r.status_code == 200, (r.text, time.monotonic() - t0)
    finally:
        finish_server(srv)


def test_a_statement_the_schema_changed_under_is_prepared_again(cluster, tmp_path):
    """A failed batch keeps its connection only when the error leaves the session as it was (a
    full disk, a refused value, a conflict). A prepared statement whose result type changed
    under it (another instance's migration, an administrator's ALTER) fails on that session
    until it is prepared again: one answer is 503, the next goes through on a new connection
    (was: every write failed until a restart)."""
    url = cluster.create_database("stale")
    srv = Server(tmp_path / "srv", backend="postgres", database_url=url, env={"THREADS": "1"})

    def create_key():
        return srv.request("POST", "/api/v1/keys", data=json.dumps({"name": "k",
                                                                   "scopes": ["read"]}),
                           headers={"Content-Type": "application/json"})
    try:
        srv.start()
        assert create_key().status_code == 201
        cluster.psql("ALTER TABLE api_keys ALTER COLUMN id TYPE varchar(200)", db=_db_of(url))
        first = create_key()
        assert first.status_code in (201, 503), first.text
        if first.status_code == 503:
            assert_error(first, 503, "SERVICE_UNAVAILABLE")
        for _ in range(3):
            r = create_key()
            assert r.status_code == 201, r.text
        assert srv.post_conv(make_conv()).status_code == 200
    finally:
        finish_server(srv)


def _lock_key(conversation_id):
    """The advisory-lock key the writer takes for a conversation id (store_pg.c lock_keys)."""
    return int.from_bytes(hashlib.sha256(conversation_id.encode()).digest()[:8], "little",
                          signed=True)


class _Psql:
    """One psql session kept open (to hold a lock)."""

    def __init__(self, cluster, db):
        self.p = subprocess.Popen(_as_postgres([_pg_bin("psql"), "-h", "127.0.0.1", "-p",
                                                str(cluster.port), "-U", "postgres", "-d", db,
                                                "-Atq"]),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(self, sql):
        self.p.stdin.write(sql + "\n")
        self.p.stdin.write("SELECT 'done';\n")
        self.p.stdin.flush()
        out = []
        while (line := self.p.stdout.readline().rstrip("\n")) != "done":
            out.append(line)
        return out

    def close(self):
        self.p.stdin.close()
        self.p.wait(10)


def _wait_for(cond, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_batch_whose_connection_is_lost_mid_transaction_is_sent_again(cluster, tmp_path):
    """The writer's backend is terminated while its batch waits on a lock: the server rolled
    the transaction back, so the batch goes again on a new connection instead of 503."""
    url = cluster.create_database("midbatch")
    db = _db_of(url)
    srv = Server(tmp_path / "srv", backend="postgres", database_url=url)
    holder = _Psql(cluster, db)
    try:
        srv.start()
        body = make_conv()
        cid = body["conversationId"]
        holder.run(f"SELECT pg_advisory_lock({_lock_key(cid)});")
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            fut = pool.submit(srv.post_conv, body, session=new_session(), timeout=30)
            waiting = ("SELECT pid FROM pg_stat_activity WHERE application_name = 'gensendrep' "
                       "AND wait_event_type = 'Lock'")
            assert _wait_for(lambda: cluster.psql(waiting, db).strip() != "")
            cluster.psql(f"SELECT pg_terminate_backend(pid) FROM ({waiting}) w", db)
            # The batch is sent again and waits on the lock once more.
            assert _wait_for(lambda: cluster.psql(waiting, db).strip() != "")
            holder.run(f"SELECT pg_advisory_unlock({_lock_key(cid)});")
            r = fut.result()
        assert r.status_code == 200, r.text
        got = srv.get_conv(cid, include=True)
        assert got.status_code == 200 and got.json()["transcript"] == body["transcript"]
        rows = cluster.psql(f"SELECT count(*) FROM deliveries WHERE conversation_id = '{cid}'", db)
        assert rows == "1\n"
        assert "sending it again" in srv.stderr_text()
    finally:
        holder.close()
        finish_server(srv)


def test_restart_mid_stream_loses_nothing_acknowledged(cluster, tmp_path):
    """Webhooks flow from several threads while the cluster restarts (pg_ctl restart, fast):
    every 200 is stored byte for byte, nothing is stored twice or half, every answer is 200 or
    503 (never 500), and the service recovers by itself."""
    url = cluster.create_database("midstream")
    db = _db_of(url)
    srv = Server(tmp_path / "srv", backend="postgres", database_url=url)
    try:
        srv.start()
        sent, acked, refused, statuses = {}, set(), set(), []
        stop = threading.Event()
        lock = threading.Lock()

        def writer():
            session = new_session()
            while not stop.is_set():
                body = make_conv(accountId="acc_" + uuid.uuid4().hex)
                raw = json.dumps(body, ensure_ascii=False).encode()
                cid = body["conversationId"]
                with lock:
                    sent[cid] = raw
                try:
                    r = srv.post_conv(raw, session=session, timeout=30)
                except Exception:  # noqa: BLE001 - a refused connection is not an answer
                    session = new_session()
                    continue
                with lock:
                    statuses.append(r.status_code)
                    (acked if r.status_code == 200 else refused).add(cid)

        threads = [threading.Thread(target=writer) for _ in range(6)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        subprocess.run(_as_postgres([_pg_bin("pg_ctl"), "-D", cluster.data, "-m", "fast", "-w",
                                     "-t", "30", "-l", os.path.join(cluster.dir, "log"),
                                     "restart"]),
                       check=True, capture_output=True, timeout=60)
        # It recovers by itself: within a few seconds, webhooks are accepted again.
        assert _wait_for(lambda: srv.post_conv(make_conv(), session=new_session()).status_code
                         == 200, timeout=15)
        time.sleep(1.5)
        stop.set()
        for t in threads:
            t.join()
        assert srv.running, "gensendrep died during the restart"
        assert set(statuses) <= {200, 503}, sorted(set(statuses))
        assert len(acked) > 20, len(acked)
        # Every acknowledged conversation is there, byte for byte.
        for cid in acked:
            r = srv.get_conv(cid, include=True)
            assert r.status_code == 200, (cid, r.text)
            body = json.loads(sent[cid])
            got = r.json()
            assert got["transcript"] == body["transcript"] and got["metadata"] == body["metadata"]
        stored = {}
        for line in cluster.psql("SELECT d.conversation_id, encode(sha256(d.body), 'hex'), "
                                 "(SELECT count(*) FROM deliveries e "
                                 " WHERE e.conversation_id = d.conversation_id) "
                                 "FROM conversations c JOIN deliveries d ON d.id = c.delivery_id",
                                 db).splitlines():
            cid, digest, versions = line.split("|")
            stored[cid] = (digest, int(versions))
        for cid in acked:
            assert stored[cid] == (hashlib.sha256(sent[cid]).hexdigest(), 1), cid
        # A refused one is absent or whole (its COMMIT may have landed as the connection
        # broke), never stored twice.
        for cid, (digest, versions) in stored.items():
            if cid in sent:
                assert (digest, versions) == (hashlib.sha256(sent[cid]).hexdigest(), 1), cid
        orphans = cluster.psql("SELECT count(*) FROM deliveries d WHERE NOT EXISTS "
                               "(SELECT 1 FROM conversations c WHERE c.delivery_id = d.id)", db)
        assert orphans == "0\n"
        assert "postgresql reachable again" in srv.stderr_text()
    finally:
        finish_server(srv)


# ---------------------------------------------------------------- start-up and the log
def test_start_up_waits_for_postgresql(tmp_path):
    cluster = PgCluster()
    cluster.port = free_port()
    srv = Server(tmp_path / "srv", backend="postgres", database_url=cluster.url("postgres"),
                 env={"DATABASE_CONNECT_TIMEOUT_SECONDS": "60"})
    try:
        srv.port = free_port()
        srv._spawn()
        time.sleep(2.5)
        assert srv.running, srv.last_stderr()
        cluster.start()
        srv.wait_ready(timeout=15)
        recs = _json_lines(srv)
        waits = [r for r in recs if r["msg"].startswith("waiting for postgresql")]
        assert len(waits) >= 2, recs
        assert all(r["level"] == "warning" for r in waits)
        assert all(not r["msg"].endswith(("\n", " ")) and "\n" not in r["msg"] for r in waits)
        assert "attempt 1," in waits[0]["msg"] and "attempt 2," in waits[1]["msg"]
        assert any(r["msg"].startswith("postgresql reachable after") for r in recs)
        assert srv.post_conv(make_conv()).status_code == 200
    finally:
        finish_server(srv)
        cluster.destroy()


def test_start_up_gives_up_after_the_timeout(tmp_path):
    srv = Server(tmp_path / "srv", backend="postgres",
                 database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/x",
                 env={"DATABASE_CONNECT_TIMEOUT_SECONDS": "2"})
    srv.port = free_port()
    t0 = time.monotonic()
    srv._spawn()
    srv.proc.wait(20)
    srv.stopped_by_us = True
    elapsed = time.monotonic() - t0
    assert srv.proc.returncode == 1
    assert 1.5 < elapsed < 15, elapsed
    text = srv.last_stderr()
    lines = text.splitlines()
    final = lines[-1]
    assert "cannot connect to PostgreSQL" in final and "DATABASE_CONNECT_TIMEOUT_SECONDS=2" in final
    assert not final.endswith(" ") and "\t" not in final
    waits = [json.loads(l) for l in lines[:-1] if "waiting for postgresql" in l]
    assert len(waits) >= 2
    finish_server(srv)


def test_sigterm_ends_the_start_up_wait(tmp_path):
    srv = Server(tmp_path / "srv", backend="postgres",
                 database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/x",
                 env={"DATABASE_CONNECT_TIMEOUT_SECONDS": "600"})
    srv.port = free_port()
    srv._spawn()
    time.sleep(1.5)
    srv.proc.terminate()
    srv.proc.wait(10)  # well before the 600 s
    srv.stopped_by_us = True
    assert srv.proc.returncode == 1
    finish_server(srv)


def test_postgresql_notices_are_json_log_lines(cluster, tmp_path):
    url = cluster.create_database("notices")
    srv = Server(tmp_path / "srv", backend="postgres", database_url=url)
    try:
        srv.start()
        srv.restart()  # migrations again: CREATE TABLE IF NOT EXISTS says "skipping"
        recs = _json_lines(srv)
        notices = [r for r in recs if "already exists, skipping" in r["msg"]]
        assert notices, srv.stderr_text()[-2000:]
        assert notices[0]["msg"].startswith("postgresql NOTICE: ")
        assert not notices[0]["msg"].endswith("\n")
    finally:
        finish_server(srv)
