"""A write the database refuses answers 503 and stores nothing; the service recovers by itself.
SQLite: another process holding the database's write lock longer than the busy timeout."""
import sqlite3
import threading
import time
from pathlib import Path

from helpers import Server, assert_error, finish_server, make_conv


def _hold_write_lock(db_path, seconds, locked):
    con = sqlite3.connect(db_path, timeout=10, isolation_level=None)
    con.execute("BEGIN EXCLUSIVE")
    locked.set()
    time.sleep(seconds)
    con.execute("ROLLBACK")
    con.close()


def test_locked_database_answers_503_and_stores_nothing(tmp_path):
    srv = Server(tmp_path, backend="sqlite")
    srv.start()
    try:
        db = Path(srv.database_url.split(":", 1)[1])
        assert srv.post_conv(make_conv()).status_code == 200
        locked = threading.Event()
        holder = threading.Thread(target=_hold_write_lock, args=(str(db), 11, locked))
        holder.start()
        assert locked.wait(5)
        refused = make_conv()
        t0 = time.monotonic()
        r = srv.post_conv(refused)
        assert_error(r, 503, "SERVICE_UNAVAILABLE")
        assert "Retry-After" in r.headers
        assert time.monotonic() - t0 < 8, "the write should give up (busy timeout 5 s) well before the lock ends"
        health = srv.get("/api/v1/health", key=None)
        assert health.status_code == 503 and health.json()["status"] == "unhealthy"
        holder.join()
        # Nothing half-stored, and the service recovers without a restart.
        assert_error(srv.get_conv(refused["conversationId"]), 404, "NOT_FOUND")
        # Health answers from a check up to about a second old (defect 5): the failed check
        # made while the lock was held may still answer for that long.
        deadline = time.monotonic() + 3
        while srv.get("/api/v1/health", key=None).status_code != 200:
            assert time.monotonic() < deadline, "health did not recover after the lock"
            time.sleep(0.1)
        r = srv.post_conv(refused)
        assert r.status_code == 200, r.text
        assert srv.get_conv(refused["conversationId"]).status_code == 200
    finally:
        finish_server(srv)
