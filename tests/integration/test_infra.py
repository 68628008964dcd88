"""Several instances on one PostgreSQL and one Redis act as one service, and outages of
either are survived without a restart. Every server here is real: a throw-away PostgreSQL
cluster and redis-server started by the test (services.py)."""
import concurrent.futures
import json
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from helpers import KEY1, KEY2, Server, assert_error, finish_server, make_conv, new_session
from services import PgCluster, RedisServer


@pytest.fixture(scope="module")
def redis():
    r = RedisServer()
    r.start()
    yield r
    r.destroy()


@pytest.fixture(scope="module")
def pg():
    c = PgCluster()
    c.start()
    yield c
    c.destroy()


@pytest.fixture
def pair(pg, redis, tmp_path):
    """Two gensendrep instances on one database and one Redis."""
    url = pg.create_database("pair_" + uuid.uuid4().hex[:12])
    redis.flush()  # rate-limit windows of earlier tests (same client IP) must not count
    servers = []

    def start(env=None, each=({}, {})):
        for name, own in zip(("a", "b"), each):
            srv = Server(tmp_path / name, backend="postgres", database_url=url,
                         env={"REDIS_URL": redis.url(), **(env or {}), **own})
            srv.start()
            servers.append(srv)
        return servers

    yield start
    for srv in servers:
        finish_server(srv)


def _post(srv, body, session=None):
    return srv.post_conv(body, session=session)


def test_conversation_posted_to_one_instance_is_read_from_the_other(pair):
    a, b = pair()
    body = make_conv(accountId="acc_" + uuid.uuid4().hex)
    r = _post(a, body)
    assert r.status_code == 200, r.text
    got = b.get_conv(body["conversationId"], include=True)
    assert got.status_code == 200
    assert got.json()["transcript"] == body["transcript"]
    listed = b.list_convs(account_id=body["accountId"]).json()
    assert [c["conversationId"] for c in listed["conversations"]] == [body["conversationId"]]
    # A redelivery to the other instance is recognised as the same delivery.
    again = _post(b, body)
    assert again.json()["data"]["webhookId"] == r.json()["data"]["webhookId"]


def test_webhook_rate_limit_is_one_limit_across_instances(pair):
    a, b = pair(env={"RATE_LIMIT_WEBHOOK_PER_MINUTE": "100"})
    sa, sb = new_session(), new_session()
    codes = []
    for i in range(100):
        srv, sess = (a, sa) if i % 2 == 0 else (b, sb)
        codes.append(_post(srv, make_conv(), session=sess).status_code)
    assert codes == [200] * 100
    for srv, sess in ((a, sa), (b, sb), (b, sb), (a, sa)):
        r = _post(srv, make_conv(), session=sess)
        assert_error(r, 429, "RATE_LIMITED")
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        assert r.headers["RateLimit-Remaining"] == "0"


def test_api_rate_limit_is_one_limit_across_instances(pair):
    a, b = pair(env={"RATE_LIMIT_API_PER_MINUTE": "30"})
    codes = [(a if i % 3 else b).get("/api/v1/conversations").status_code for i in range(30)]
    assert codes == [200] * 30
    assert_error(a.get("/api/v1/conversations"), 429, "RATE_LIMITED")
    assert_error(b.get("/api/v1/conversations"), 429, "RATE_LIMITED")


def _redis_keys(redis):
    """Every key name in the test's Redis (RESP KEYS *)."""
    with socket.create_connection(("127.0.0.1", redis.port), timeout=5) as s:
        s.sendall(b"KEYS *\r\n")
        data = b""
        while True:
            data += s.recv(65536)
            lines = data.split(b"\r\n")
            if lines[0].startswith(b"*") and len(lines) >= 2 * int(lines[0][1:]) + 2:
                return [lines[2 * i + 2].decode() for i in range(int(lines[0][1:]))]


def test_api_rate_limit_follows_the_key_not_its_place_in_the_list(pair, redis):
    """During a rotation instances list the keys in different orders: each key still has one
    budget across instances (it was keyed by the key's index, so budgets mixed), and Redis
    never holds the key itself."""
    a, b = pair(env={"RATE_LIMIT_API_PER_MINUTE": "20"},
                each=({"API_SECRET_KEY": f"{KEY1},{KEY2}"}, {"API_SECRET_KEY": f"{KEY2},{KEY1}"}))
    codes = [(a if i % 2 else b).get("/api/v1/conversations", key=KEY1).status_code
             for i in range(20)]
    assert codes == [200] * 20
    assert_error(a.get("/api/v1/conversations", key=KEY1), 429, "RATE_LIMITED")
    assert_error(b.get("/api/v1/conversations", key=KEY1), 429, "RATE_LIMITED")
    # The other key's budget is untouched on both instances.
    assert a.get("/api/v1/conversations", key=KEY2).status_code == 200
    assert b.get("/api/v1/conversations", key=KEY2).status_code == 200
    names = _redis_keys(redis)
    api = [n for n in names if n.startswith("gensendrep:rl:api:key:")]
    assert len(api) == 2, names
    for n in names:
        assert KEY1 not in n and KEY2 not in n, n
    for rec in a.log_records() + b.log_records():
        for n in api:
            assert n.rsplit(":", 1)[1] not in json.dumps(rec), rec


def test_concurrent_redeliveries_to_both_instances_leave_one_row(pair, pg):
    a, b = pair()
    body = make_conv()
    raw = json.dumps(body)
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda i: (a if i % 2 else b).post_conv(raw, session=new_session()),
                                range(40)))
    assert all(r.status_code == 200 for r in results), [r.text for r in results if r.status_code != 200]
    assert len({r.json()["data"]["webhookId"] for r in results}) == 1
    db = a.database_url.rsplit("/", 1)[1]
    cid = body["conversationId"]
    assert pg.psql(f"SELECT count(*) FROM conversations WHERE conversation_id = '{cid}'", db) == "1\n"
    assert pg.psql(f"SELECT count(*) FROM deliveries WHERE conversation_id = '{cid}'", db) == "1\n"

    # Different versions racing: still one row, and it is one of the versions sent.
    versions = [make_conv(cid, metadata={**body["metadata"], "duration": d}) for d in range(1, 21)]
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda iv: (a if iv[0] % 2 else b).post_conv(iv[1], session=new_session()),
                                enumerate(versions)))
    assert all(r.status_code == 200 for r in results)
    assert pg.psql(f"SELECT count(*) FROM conversations WHERE conversation_id = '{cid}'", db) == "1\n"
    assert a.get_conv(cid).json()["duration"] in range(1, 21)


def test_postgresql_outage_answers_503_and_recovers_without_restart(tmp_path, redis):
    cluster = PgCluster()
    cluster.start()
    srv = Server(tmp_path / "srv", backend="postgres", database_url=cluster.create_database("outage"))
    try:
        srv.start()
        sent, acked, refused = {}, set(), set()
        stop = threading.Event()

        def writer():
            session = new_session()
            while not stop.is_set():
                body = make_conv()
                sent[body["conversationId"]] = body
                try:
                    r = srv.post_conv(body, session=session, timeout=30)
                except Exception:  # noqa: BLE001 - a refused connection is not an answer
                    continue
                assert r.status_code in (200, 503), r.text
                (acked if r.status_code == 200 else refused).add(body["conversationId"])

        threads = [threading.Thread(target=writer) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(1)
        cluster.stop()
        time.sleep(1.5)
        health = srv.get("/api/v1/health", key=None)
        assert health.status_code == 503
        assert health.json()["dependencies"]["database"] == "disconnected"
        assert_error(srv.get("/api/v1/conversations"), 503, "SERVICE_UNAVAILABLE")
        assert_error(srv.get_conv("anything"), 503, "SERVICE_UNAVAILABLE")
        cluster.start()
        time.sleep(1.5)
        stop.set()
        for t in threads:
            t.join()
        assert refused, "no request was refused while PostgreSQL was down"
        assert srv.running, "gensendrep died during the outage"
        assert srv.get("/api/v1/health", key=None).status_code == 200
        assert srv.post_conv(make_conv()).status_code == 200
        # Every acknowledged conversation is there, whole; a refused one is either absent or
        # whole (its COMMIT may have landed just as the connection broke), never partial.
        for cid, body in sent.items():
            r = srv.get_conv(cid, include=True)
            if cid in acked:
                assert r.status_code == 200, cid
            if r.status_code == 200:
                got = r.json()
                assert got["transcript"] == body["transcript"] and got["metadata"] == body["metadata"]
            else:
                assert r.status_code == 404
    finally:
        finish_server(srv)
        cluster.destroy()


def test_redis_outage_keeps_webhooks_flowing_and_health_degraded(tmp_path):
    r = RedisServer()
    r.start()
    srv = Server(tmp_path / "srv", backend="sqlite", env={"REDIS_URL": r.url()})
    try:
        srv.start()
        assert srv.get("/api/v1/health", key=None).json()["dependencies"]["redis"] == "connected"
        assert srv.post_conv(make_conv()).status_code == 200
        r.stop()
        for _ in range(20):
            assert srv.post_conv(make_conv()).status_code == 200
        time.sleep(1.5)  # the background probe notices within a second
        health = srv.get("/api/v1/health", key=None)
        assert health.status_code == 200
        assert health.json()["status"] == "degraded"
        assert health.json()["dependencies"]["redis"] == "disconnected"
        # Said once in the log, not once per request.
        assert srv.stderr_text().count("redis unreachable") == 1
        r.start()
        time.sleep(1.5)
        health = srv.get("/api/v1/health", key=None).json()
        assert health["status"] == "healthy" and health["dependencies"]["redis"] == "connected"
        # Connections made before the outage are replaced quietly: Redis is not reported
        # down again, and health does not flap.
        for _ in range(20):
            assert srv.post_conv(make_conv(), session=new_session()).status_code == 200
            assert srv.get("/api/v1/conversations", session=new_session()).status_code == 200
        health = srv.get("/api/v1/health", key=None).json()
        assert health["status"] == "healthy", health
        assert srv.stderr_text().count("redis unreachable") == 1
    finally:
        finish_server(srv)
        r.destroy()


def test_unreachable_redis_at_start_up_is_survived(tmp_path):
    from services import free_port
    srv = Server(tmp_path / "srv", backend="sqlite",
                 env={"REDIS_URL": f"redis://127.0.0.1:{free_port()}"})
    try:
        srv.start()
        assert srv.post_conv(make_conv()).status_code == 200
        body = srv.get("/api/v1/health", key=None).json()
        assert body["status"] == "degraded" and body["dependencies"]["redis"] == "disconnected"
    finally:
        finish_server(srv)


def test_instances_migrating_the_same_new_database_at_once(pg, tmp_path):
    url = pg.create_database("race_" + uuid.uuid4().hex[:12])
    servers = [Server(tmp_path / f"s{i}", backend="postgres", database_url=url) for i in range(3)]
    try:
        for srv in servers:
            srv.port = None
        threads = [threading.Thread(target=srv.start) for srv in servers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(srv.running for srv in servers)
        db = url.rsplit("/", 1)[1]
        # every migration, once each (whichever instance applied it)
        migrations = sorted(Path(__file__).resolve().parents[2].glob("src/store/migrations/pg/*.sql"))
        expected = ",".join(str(int(m.name[:4])) for m in migrations)
        assert len(migrations) >= 3
        assert pg.psql("SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_migrations",
                   db) == expected + "\n"
    finally:
        for srv in servers:
            finish_server(srv)


def test_instance_waits_for_another_instances_long_migration(pg, tmp_path):
    """An instance starting while another holds the migration lock longer than the connection's
    15 s statement timeout (a long index build on a large store) waits for it, then starts: it
    does not exit and leave the deployment short of an instance."""
    url = pg.create_database("longmig_" + uuid.uuid4().hex[:12])
    db = url.rsplit("/", 1)[1]
    holder = threading.Thread(  # the lock key of store_pg.c's migrate()
        target=pg.psql, args=("SELECT pg_advisory_lock(7261001), pg_sleep(18)", db))
    holder.start()
    srv = Server(tmp_path / "srv", backend="postgres", database_url=url)
    try:
        time.sleep(1)
        started = time.monotonic()
        srv.start(timeout=60)
        assert srv.starts == 1, srv.last_stderr()[-2000:]  # the first process waited: no restart
        assert time.monotonic() - started >= 15  # it did wait for the lock, past the timeout
        assert srv.post_conv(make_conv()).status_code == 200
    finally:
        holder.join()
        finish_server(srv)
