"""A slow PostgreSQL (a lock held from psql) must not slow down what does not need the locked
table: libmicrohttpd's event threads never wait on the database (reads run on the offload
pool while the request is suspended), health answers from a recent check within a bounded
time, and concurrent health calls share one probe. Real servers only: the session's
PostgreSQL cluster (services.py) and a psql session holding the lock."""
import concurrent.futures
import os
import signal
import sqlite3
import subprocess
import time

import pytest

from helpers import Server, assert_error, finish_server, make_conv, new_session, pg_cluster
from services import PgCluster, _as_postgres, _pg_bin

pytestmark = pytest.mark.backends("postgres")


class HeldLock:
    """A psql session that runs `sql` in an open transaction (so its locks are held) until
    release()."""

    def __init__(self, database_url, sql):
        cluster = pg_cluster()
        db = database_url.rsplit("/", 1)[1]
        self.proc = subprocess.Popen(
            _as_postgres([_pg_bin("psql"), "-h", "127.0.0.1", "-p", str(cluster.port), "-U",
                          "postgres", "-d", db, "-v", "ON_ERROR_STOP=1", "-Atq"]),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.proc.stdin.write(f"BEGIN;\n{sql};\nSELECT 'locked';\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline().strip()
        assert line == "locked", (line, self.proc.stderr.read() if self.proc.poll() else "")

    def release(self):
        if self.proc.poll() is None:
            self.proc.stdin.write("ROLLBACK;\n")
            self.proc.stdin.close()
            self.proc.wait(10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def _timed(fn):
    t0 = time.monotonic()
    r = fn()
    return r, time.monotonic() - t0


def _stuck_read(srv, path, pool, n=1):
    """Starts n GETs of path that will wait on the held lock; returns their futures once the
    server has them (their connections are open and the requests sent)."""
    futs = [pool.submit(lambda: srv.get(path, session=new_session(), timeout=40))
            for _ in range(n)]
    time.sleep(0.5)
    for f in futs:
        assert not f.done(), f.result().text
    return futs


def test_openapi_is_fast_while_a_read_waits_on_a_locked_table(make_server):
    """Defect 2 as reported: THREADS=1, a table locked in psql, an unrelated GET /openapi.json
    waited 7.2 s behind a read stuck on the lock."""
    srv = make_server(env={"THREADS": "1"})
    body = make_conv()
    assert srv.post_conv(body).status_code == 200
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        with HeldLock(srv.database_url, "LOCK TABLE conversations IN ACCESS EXCLUSIVE MODE"):
            stuck = _stuck_read(srv, "/api/v1/conversations/" + body["conversationId"], pool)
            stuck += _stuck_read(srv, "/api/v1/conversations?limit=5", pool)
            for _ in range(5):
                r, took = _timed(lambda: srv.get("/openapi.json", key=None, timeout=30))
                assert r.status_code == 200
                assert took < 2.0, f"GET /openapi.json took {took:.1f}s behind a stuck read"
            # Health's read does not touch the locked table, and its probe writes elsewhere.
            r, took = _timed(lambda: srv.get("/api/v1/health", key=None, timeout=30))
            assert r.status_code == 200 and r.json()["status"] == "healthy", r.text
            assert took < 2.0, f"health took {took:.1f}s behind a stuck read"
            # A malformed webhook is answered without the store at all.
            r, took = _timed(lambda: srv.post_raw('{"emailId":', timeout=30))
            assert_error(r, 400, "INVALID_JSON")
            assert took < 2.0, f"a 400 took {took:.1f}s behind a stuck read"
        # Once the lock is gone the stuck reads are answered correctly.
        got = stuck[0].result(timeout=30)
        assert got.status_code == 200, got.text
        assert got.json()["conversationId"] == body["conversationId"]
        listed = stuck[1].result(timeout=30)
        assert listed.status_code == 200, listed.text
        assert body["conversationId"] in [c["conversationId"] for c in listed.json()["conversations"]]


def test_full_offload_queue_answers_503_at_once(make_server):
    """Requests waiting for the offload pool are bounded: past OFFLOAD_QUEUE they get a 503
    with Retry-After at once instead of piling up."""
    srv = make_server(env={"THREADS": "1", "OFFLOAD_THREADS": "1", "OFFLOAD_QUEUE": "1"})
    body = make_conv()
    assert srv.post_conv(body).status_code == 200
    path = "/api/v1/conversations/" + body["conversationId"]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        with HeldLock(srv.database_url, "LOCK TABLE conversations IN ACCESS EXCLUSIVE MODE"):
            # One read runs on the one offload thread (stuck on the lock), one waits in the
            # queue of one; the other three are refused at once, whatever the arrival order.
            # The first is sent alone and given time to reach the offload thread: sent
            # together, all five could reach the single event thread before the offload
            # thread took the first off the queue, and four were refused.
            def read():
                return srv.get(path, session=new_session(), timeout=40)
            futs = [pool.submit(read)]
            time.sleep(1.0)
            futs += [pool.submit(read) for _ in range(4)]
            deadline = time.monotonic() + 5
            while sum(f.done() for f in futs) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)
            done = [f for f in futs if f.done()]
            assert len(done) == 3, [f.result().status_code for f in done]
            for f in done:
                r = f.result()
                err = assert_error(r, 503, "SERVICE_UNAVAILABLE")
                assert "busy" in err["message"].lower(), err
                assert r.headers.get("Retry-After") == "1"
        # Once the lock is gone the two accepted reads are answered.
        for f in futs:
            if f not in done:
                assert f.result(timeout=30).status_code == 200


def test_health_answers_unhealthy_within_a_bound_when_the_probe_is_stuck(make_server):
    """A probe stuck on the database must not make health hang: after a bound it answers
    503 unhealthy, later calls answer at once from that result, and health recovers by
    itself once the database moves again."""
    srv = make_server(env={"THREADS": "1"})
    assert srv.get("/api/v1/health", key=None).status_code == 200
    time.sleep(1.2)  # the last result is no longer fresh
    with HeldLock(srv.database_url, "LOCK TABLE health_probe IN ACCESS EXCLUSIVE MODE"):
        r, took = _timed(lambda: srv.get("/api/v1/health", key=None, timeout=30))
        assert r.status_code == 503, r.text
        assert r.json()["status"] == "unhealthy"
        assert r.json()["dependencies"]["database"] == "disconnected"
        assert took < 4.0, f"health took {took:.1f}s with a stuck probe"
        # The probe is still stuck: no second probe is started, the answer comes at once.
        for _ in range(3):
            r, took = _timed(lambda: srv.get("/api/v1/health", key=None, timeout=30))
            assert r.status_code == 503
            assert took < 1.0, f"health took {took:.1f}s while its probe is stuck"
        # Unrelated requests are not held up either.
        r, took = _timed(lambda: srv.get("/openapi.json", key=None, timeout=30))
        assert r.status_code == 200 and took < 2.0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        r = srv.get("/api/v1/health", key=None)
        if r.status_code == 200:
            break
        time.sleep(0.2)
    assert r.status_code == 200 and r.json()["status"] == "healthy", r.text


def test_concurrent_health_calls_share_one_probe(make_server):
    """Defect 5: every public health call was a durable write. Now at most one probe is in
    flight and its result answers for about a second: 200 calls within a second cause at most
    a couple of probe writes (counted by a trigger on the probe's table)."""
    srv = make_server()
    cluster = pg_cluster()
    db = srv.database_url.rsplit("/", 1)[1]
    cluster.psql("CREATE TABLE probe_writes (n int NOT NULL); INSERT INTO probe_writes VALUES (0); "
                 "CREATE FUNCTION count_probe() RETURNS trigger LANGUAGE plpgsql AS "
                 "$$BEGIN UPDATE probe_writes SET n = n + 1; RETURN NULL; END$$; "
                 "CREATE TRIGGER count_probe AFTER INSERT OR UPDATE ON health_probe "
                 "FOR EACH ROW EXECUTE FUNCTION count_probe()", db=db)
    time.sleep(1.2)  # the start-up check is no longer fresh

    def health(_):
        return srv.get("/api/v1/health", key=None, session=new_session()).status_code

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(health, range(200)))
    took = time.monotonic() - t0
    assert codes == [200] * 200
    writes = int(cluster.psql("SELECT n FROM probe_writes", db=db).strip())
    # One probe per second (and about a second's slack at each end) at most.
    assert 1 <= writes <= took + 2, f"{writes} probe writes for 200 health calls in {took:.1f}s"


@pytest.mark.backends("sqlite")
def test_health_probe_coalescing_on_sqlite(make_server):
    """The same on SQLite: the probe count comes from a trigger in the database file."""
    srv = make_server()
    db = srv.database_url.split(":", 1)[1]
    con = sqlite3.connect(db, timeout=10)
    con.executescript("CREATE TABLE probe_writes (n INTEGER NOT NULL); "
                      "INSERT INTO probe_writes VALUES (0); "
                      "CREATE TRIGGER count_probe_ins AFTER INSERT ON health_probe "
                      "BEGIN UPDATE probe_writes SET n = n + 1; END; "
                      "CREATE TRIGGER count_probe_upd AFTER UPDATE ON health_probe "
                      "BEGIN UPDATE probe_writes SET n = n + 1; END;")
    con.commit()
    time.sleep(1.2)

    def health(_):
        return srv.get("/api/v1/health", key=None, session=new_session()).status_code

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(health, range(200)))
    took = time.monotonic() - t0
    assert codes == [200] * 200
    writes = con.execute("SELECT n FROM probe_writes").fetchone()[0]
    con.close()
    assert 1 <= writes <= took + 2, f"{writes} probe writes for 200 health calls in {took:.1f}s"


def test_openapi_is_fast_while_a_reader_connects_to_a_hung_postgresql(tmp_path):
    """Connecting waits too (connect_timeout 5 s, DNS): with the postmaster frozen (SIGSTOP),
    a read that must reconnect hangs in connect, on an offload thread, not on the one event
    thread. A private cluster: freezing the session's would stall other tests."""
    cluster = PgCluster()
    cluster.start()
    srv = Server(tmp_path / "srv", backend="postgres", database_url=cluster.create_database("hung"),
                 env={"THREADS": "1", "OFFLOAD_THREADS": "1"})
    postmaster = None
    try:
        srv.start()
        assert srv.get("/api/v1/conversations?limit=1").status_code == 200
        # Break every connection of the service, then freeze the postmaster: new ones hang.
        cluster.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE datname = 'hung' AND pid <> pg_backend_pid()")
        with open(os.path.join(cluster.data, "postmaster.pid")) as f:
            postmaster = int(f.readline())
        os.kill(postmaster, signal.SIGSTOP)
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            reads = [pool.submit(lambda: srv.get("/api/v1/conversations?limit=1",
                                                 session=new_session(), timeout=40))
                     for _ in range(2)]
            time.sleep(0.5)
            for _ in range(5):
                r, took = _timed(lambda: srv.get("/openapi.json", key=None, timeout=30))
                assert r.status_code == 200
                assert took < 2.0, f"GET /openapi.json took {took:.1f}s behind a connect"
            os.kill(postmaster, signal.SIGCONT)
            postmaster = None
            for f in reads:  # answered either way: 503 (broken or timed out) or 200
                assert f.result(timeout=30).status_code in (200, 503)
        # The service recovers by itself.
        deadline = time.monotonic() + 15
        while srv.get("/api/v1/conversations?limit=1").status_code != 200:
            assert time.monotonic() < deadline, "reads did not recover"
            time.sleep(0.2)
    finally:
        if postmaster:
            os.kill(postmaster, signal.SIGCONT)
        finish_server(srv)
        cluster.destroy()
