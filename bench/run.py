#!/usr/bin/python3
"""make bench: drives gensendrep (release build) with wrk on this machine and prints one table.

Scenarios: the ceiling (a trivial libmicrohttpd server answering the same POSTs), webhook
ingest (seed example and a 40-message ~8 KB transcript) at 64 and 256 connections on SQLite,
with REDIS_URL (shared rate limits), on PostgreSQL, then get-one and a filtered list on a store
of 100,000 conversations. Every server is started here on free ports and stopped afterwards."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
from services import PgCluster, RedisServer, free_port  # noqa: E402

BIN = os.path.join(REPO, "gensendrep")
STATIC = os.path.join(REPO, "build", "bench", "static_server")
KEY = "bench-key"
DURATION = os.environ.get("BENCH_DURATION", "10s")
STORE_SIZE = int(os.environ.get("BENCH_STORE_SIZE", "100000"))
LUA = {name: os.path.join(REPO, "bench", name + ".lua")
       for name in ("webhook_seed", "webhook_large", "fill", "get_one", "list")}


def wait_http(port, path="/api/v1/health", timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as r:
                if r.status in (200, 404, 405):
                    return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing answered on port {port}")


class Proc:
    """A server process whose peak RSS (VmHWM) is read before it is stopped."""

    def __init__(self, argv, env=None, cwd=None):
        self.port = free_port()
        full_env = dict(os.environ, **(env or {}), PORT=str(self.port), HOST="127.0.0.1")
        self.log = tempfile.NamedTemporaryFile(prefix="gensendrep-bench-", suffix=".log")
        argv = [a.replace("{port}", str(self.port)) for a in argv]
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(argv, env=full_env, cwd=cwd, stdout=subprocess.DEVNULL,
                                     stderr=self.log)
        wait_http(self.port)
        self.startup_ms = (time.monotonic() - self.t0) * 1000

    def peak_rss_mib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(60)


def gensendrep(database_url, workdir, extra=None):
    env = {"API_SECRET_KEY": KEY, "DATABASE_URL": database_url, "LOG_LEVEL": "info",
           "RATE_LIMIT_WEBHOOK_PER_MINUTE": "100000000", "RATE_LIMIT_API_PER_MINUTE": "100000000",
           "MAX_CONNECTIONS_PER_IP": "0", **(extra or {})}
    return Proc([BIN], env=env, cwd=workdir)


def wrk(port, script, connections, args=(), duration=DURATION):
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}", "--latency", "-s", LUA[script],
           f"http://127.0.0.1:{port}"]
    if args:
        cmd += ["--"] + [str(a) for a in args]
    out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, BENCH_KEY=KEY),
                         check=True).stdout
    return parse_wrk(out)


def _ms(text):
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def parse_wrk(out):
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    return {"rps": rps, "p50": p50, "p99": p99, "errors": errors}


ROWS = []


def row(scenario, connections, result, rss):
    ROWS.append((scenario, connections, result, rss))
    print(f"  {scenario} c={connections}: {result['rps']:.0f} req/s, p99 {result['p99']:.2f} ms, "
          f"errors {result['errors']}, peak RSS {rss:.1f} MiB", file=sys.stderr, flush=True)


def ingest(label, database_url, workdir, connections=(64, 256), scripts=("webhook_seed",),
           extra=None):
    for script in scripts:
        for c in connections:
            srv = gensendrep(database_url, workdir, extra)
            try:
                name = f"{label}, {'seed example' if script == 'webhook_seed' else '8 KB transcript'}"
                row(name, c, wrk(srv.port, script, c), srv.peak_rss_mib())
            finally:
                srv.stop()


def count(port):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/conversations?limit=1",
                                 headers={"Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)["pagination"]["total"]


def fill(srv):
    while count(srv.port) < STORE_SIZE:
        # wrk calls request() once before sending to see whether it is dynamic: that call
        # takes fill_0, so fill_1..fill_N are the ones sent.
        wrk(srv.port, "fill", 64, args=(0, STORE_SIZE), duration="15s")


def main():
    work = tempfile.mkdtemp(prefix="gensendrep-bench-")
    results = {}
    try:
        static = Proc([STATIC, "{port}"])
        for c in (64, 256):
            r = wrk(static.port, "webhook_seed", c)
            results[("ceiling", c)] = r
            row("ceiling: static libmicrohttpd reply", c, r, static.peak_rss_mib())
        static.stop()

        sqlite_url = lambda name: f"sqlite:{work}/{name}.db"  # noqa: E731
        srv = gensendrep(sqlite_url("startup"), work)
        print(f"  start-up to first healthy answer: {srv.startup_ms:.0f} ms", file=sys.stderr)
        startup_ms = srv.startup_ms
        srv.stop()

        ingest("ingest, SQLite", sqlite_url("ingest"), work,
               scripts=("webhook_seed", "webhook_large"))
        redis = RedisServer()
        redis.start()
        ingest("ingest, SQLite + REDIS_URL", sqlite_url("ingest_redis"), work, connections=(64,),
               extra={"REDIS_URL": redis.url()})
        redis.destroy()

        pg = None
        try:
            pg = PgCluster()
            pg.start()
        except Exception as e:  # noqa: BLE001 - PostgreSQL is optional for the bench
            print(f"  (PostgreSQL not available: {e})", file=sys.stderr)
            pg = None
        if pg:
            ingest("ingest, PostgreSQL", pg.create_database("bench_ingest"), work)

        srv = gensendrep(sqlite_url("reads"), work)
        print(f"  filling {STORE_SIZE} conversations...", file=sys.stderr, flush=True)
        fill(srv)
        row(f"get one of {STORE_SIZE}, SQLite", 64, wrk(srv.port, "get_one", 64, args=(STORE_SIZE,)),
            srv.peak_rss_mib())
        row(f"filtered list of {STORE_SIZE}, SQLite", 64, wrk(srv.port, "list", 64),
            srv.peak_rss_mib())
        srv.stop()
        if pg:
            srv = gensendrep(pg.create_database("bench_reads"), work)
            fill(srv)
            # A store of this size in service has been vacuumed and analysed by autovacuum;
            # a freshly bulk-filled one has not. Measure the steady state.
            pg.psql("VACUUM ANALYZE", "bench_reads")
            row(f"get one of {STORE_SIZE}, PostgreSQL", 64,
                wrk(srv.port, "get_one", 64, args=(STORE_SIZE,)), srv.peak_rss_mib())
            row(f"filtered list of {STORE_SIZE}, PostgreSQL", 64, wrk(srv.port, "list", 64),
                srv.peak_rss_mib())
            srv.stop()
            pg.destroy()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print()
    print(f"| scenario | connections | requests/s | p50 ms | p99 ms | errors | peak RSS MiB |")
    print(f"|---|---|---|---|---|---|---|")
    for scenario, c, r, rss in ROWS:
        print(f"| {scenario} | {c} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | "
              f"{r['errors']} | {rss:.1f} |")
    print()
    for c in (64, 256):
        ours = next((r for s, cc, r, _ in ROWS if s == "ingest, SQLite, seed example" and cc == c), None)
        if ours:
            print(f"SQLite ingest at {c} connections = {ours['rps'] / results[('ceiling', c)]['rps']:.0%} "
                  f"of the static-reply ceiling")
    local = next(r for s, c, r, _ in ROWS if s == "ingest, SQLite, seed example" and c == 64)
    shared = next(r for s, c, r, _ in ROWS if s.startswith("ingest, SQLite + REDIS_URL") and c == 64)
    print(f"ingest with REDIS_URL = {shared['rps'] / local['rps']:.0%} of ingest without it "
          f"(target: at least 80%)")
    print(f"start-up to first healthy answer: {startup_ms:.0f} ms")


if __name__ == "__main__":
    main()
