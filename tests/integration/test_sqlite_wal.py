"""SQLite's write-ahead log is copied into the database file in the background and stays
bounded: the database file grows with what is stored while the log does not. Watched from
outside, on the files themselves, while the server runs (closing the last connection would
checkpoint anyway and hide a checkpointer that does nothing)."""
import threading
import time
from pathlib import Path

from helpers import Server, finish_server, make_conv, new_session

BODY_PAD = 8 * 1024  # 8 KB webhooks, as in the issue
# The checkpointer restarts the log once it passes 4 MiB; what the writer appends while that
# happens comes on top, more on a loaded machine.
LOG_BOUND = 10 * 1024 * 1024


def _big_conv(tag, i):
    return make_conv(f"wal-{tag}-{i}", summary={"text": ("x%05d" % i) * (BODY_PAD // 6)})


def _size(path):
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


class _WalWatcher:
    """Samples the log's size every few milliseconds and keeps the largest seen."""

    def __init__(self, wal):
        self.wal, self.largest, self.stop = wal, 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            self.largest = max(self.largest, _size(self.wal))
            time.sleep(0.005)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def _files(srv):
    db = Path(srv.database_url.split(":", 1)[1])
    return db, Path(str(db) + "-wal")


def _wait_db_at_least(db, size, timeout=10):
    deadline = time.monotonic() + timeout
    while _size(db) < size and time.monotonic() < deadline:
        time.sleep(0.05)
    return _size(db)


def test_background_checkpoints_move_the_log_into_the_database(tmp_path):
    srv = Server(tmp_path, backend="sqlite")
    srv.start()
    try:
        db, wal = _files(srv)
        n = 200
        with _WalWatcher(wal) as watch:
            for i in range(n):
                r = srv.post_conv(_big_conv("seq", i))
                assert r.status_code == 200, r.text
            stored = _wait_db_at_least(db, n * BODY_PAD)
        # Before the fix: the database file stayed at 4,096 bytes and the log reached 6.6 MB.
        assert stored >= n * BODY_PAD, f"database file is {stored} bytes after {n} x 8 KB"
        assert watch.largest <= LOG_BOUND, f"log grew to {watch.largest} bytes"
    finally:
        finish_server(srv)


def test_log_stays_bounded_under_sustained_writes_and_reads(tmp_path):
    srv = Server(tmp_path, backend="sqlite")
    srv.start()
    try:
        db, wal = _files(srv)
        per_thread, threads_n = 300, 8  # ~20 MB of bodies, more than twice the log's bound
        failures = []

        def worker(w):
            session = new_session()
            for i in range(per_thread):
                r = srv.post_conv(_big_conv(f"par{w}", i), session=session)
                if r.status_code != 200:
                    failures.append((r.status_code, r.text[:200]))

        reading = threading.Event()

        def reader():
            # Readers keep snapshots of the log open; they must not keep it from restarting.
            session = new_session()
            while not reading.is_set():
                r = srv.get("/api/v1/conversations", params={"limit": 100}, session=session)
                if r.status_code != 200:
                    failures.append((r.status_code, r.text[:200]))

        with _WalWatcher(wal) as watch:
            readers = [threading.Thread(target=reader) for _ in range(2)]
            threads = [threading.Thread(target=worker, args=(w,)) for w in range(threads_n)]
            for t in readers + threads:
                t.start()
            for t in threads:
                t.join()
            reading.set()
            for t in readers:
                t.join()
            stored = _wait_db_at_least(db, per_thread * threads_n * BODY_PAD)
        assert not failures, failures[:5]
        assert stored >= per_thread * threads_n * BODY_PAD, f"database file is {stored} bytes"
        # The log restarts from its beginning once the database holds all of it: it stays
        # bounded whatever the amount written.
        assert watch.largest <= LOG_BOUND, f"log grew to {watch.largest} bytes"
    finally:
        finish_server(srv)
