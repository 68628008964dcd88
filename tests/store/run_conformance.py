"""Runs the store conformance suite (tests/store/conformance.c) on SQLite and on a real
PostgreSQL: a throw-away cluster (tests/integration/services.py) with a fresh database whose
URL is passed in GSR_CONFORMANCE_PG_URL. If PostgreSQL cannot be started the run fails: the
PostgreSQL half of the contract is never skipped.

Usage: run_conformance.py BINARY"""
import os
import subprocess
import sys
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))

from services import PgCluster  # noqa: E402


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    binary = sys.argv[1]
    try:
        pg = PgCluster()
        pg.start()
        url = pg.create_database("conformance_" + uuid.uuid4().hex[:12])
    except (OSError, RuntimeError, subprocess.CalledProcessError) as e:
        detail = getattr(e, "stderr", b"") or b""
        print(f"conformance: cannot start PostgreSQL: {e}\n{detail.decode(errors='replace')}",
              file=sys.stderr)
        return 1
    try:
        env = dict(os.environ, GSR_CONFORMANCE_PG_URL=url)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        return subprocess.run([binary], env=env, timeout=600).returncode
    finally:
        pg.destroy()


if __name__ == "__main__":
    sys.exit(main())
