#!/usr/bin/python3
"""make bench: drives gensendrep (release build) with wrk on this machine and prints one table.

Scenarios: the ceiling (a trivial libmicrohttpd server answering the same POSTs, for every body
size below), webhook ingest (seed example and a 40-message ~8 KB transcript at 64 and 256
connections, the seed's shape grown to ~64 KiB at 64) on SQLite,
signed ElevenLabs post_call_transcription events (~20 KB, signed per request) on SQLite, with
REDIS_URL (shared rate limits), on PostgreSQL, then get-one and a filtered list on a store of
100,000 conversations; and delivery: seed ingest on SQLite with one webhook subscription (a C
receiver answering 200 at once, bench/delivery_receiver.c) and a Redis Stream (QUEUE_URL)
attached, reporting the ingest rate and the delivery lag (event stored -> received) p50/p99 for
both; export and analytics: on a store of 1,000,000 generated conversations spread over 2025
(bench/gen_store.c, cached in build/bench-cache), the time of a whole NDJSON and CSV export with
the server's peak RSS, and the latency of GET /api/v1/analytics over the year, on SQLite and on
PostgreSQL. Every server is started here on free ports and stopped afterwards. Each row that
measures the server's CPU per answered request also splits it by thread group (HTTP workers,
the store's writer, the others), read per thread from /proc/<pid>/task."""
import atexit
import glob
import hashlib
import http.client
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
from services import PgCluster, RedisServer, _as_postgres, _pg_bin, free_port  # noqa: E402

BIN = os.path.join(REPO, "gensendrep")
STATIC = os.path.join(REPO, "build", "bench", "static_server")
RECEIVER = os.path.join(REPO, "build", "bench", "delivery_receiver")
GEN = os.path.join(REPO, "build", "bench", "gen_store")
KEY = "bench-key"
# An invented ElevenLabs workspace webhook secret, as the server's ELEVENLABS_WEBHOOK_SECRET.
EL_SECRET = "wsec_bench_0f3a9c1e7b5d4a2f8e6c0b9a7d5f3e1c"
EL_FIXTURE = os.path.join(REPO, "tests", "fixtures", "elevenlabs",
                          "post_call_transcription_success.json")
EL_BODY_BYTES = int(os.environ.get("BENCH_EL_BODY_BYTES", "20000"))
DURATION = os.environ.get("BENCH_DURATION", "10s")
STORE_SIZE = int(os.environ.get("BENCH_STORE_SIZE", "100000"))
# BENCH_ONLY=elevenlabs,ingest runs only those groups (default: all of them).
GROUPS = ("ceiling", "startup", "ingest", "elevenlabs", "redis", "delivery", "postgresql",
          "reads", "export", "analytics")
ONLY = set(filter(None, os.environ.get("BENCH_ONLY", ",".join(GROUPS)).split(",")))
if ONLY - set(GROUPS):
    sys.exit(f"BENCH_ONLY: unknown group(s) {sorted(ONLY - set(GROUPS))}; known: {GROUPS}")
LUA = {name: os.path.join(REPO, "bench", name + ".lua")
       for name in ("webhook_seed", "webhook_large", "webhook_64k", "webhook_elevenlabs", "fill",
                    "get_one", "list", "analytics")}
# The export and analytics scenarios' store: BIG_SIZE generated conversations, kept in CACHE
# between runs under a key made of BIG_STORE_VERSION (bump it when bench/gen_store.c or what the
# store writes for a webhook changes), the generator's source, the backend's migrations and the
# size; a store of another key is deleted when a new one is made.
BIG_SIZE = int(os.environ.get("BENCH_BIG_SIZE", "1000000"))
BIG_STORE_VERSION = 1
CACHE = os.environ.get("BENCH_CACHE", os.path.join(REPO, "build", "bench-cache"))
ANALYTICS_TARGET_MS = 20.0
ANALYTICS_DURATION = os.environ.get("BENCH_ANALYTICS_DURATION", "5s")
YEAR = "from=2025-01-01T00:00:00Z&to=2026-01-01T00:00:00Z"
ANALYTICS_QUERIES = (
    ("interval=day", f"{YEAR}&interval=day"),
    ("interval=hour", f"{YEAR}&interval=hour"),
    ("interval=day, tz=America/New_York",
     "from=2025-01-01T00:00:00-05:00&to=2026-01-01T00:00:00-05:00&interval=day"
     "&tz=America/New_York"),
    ("interval=day, agent_id filter", f"{YEAR}&interval=day&agent_id=agent_03_2"),
)
LABEL = {"webhook_seed": "seed example", "webhook_large": "8 KB transcript",
         "webhook_64k": "64 KB transcript", "webhook_elevenlabs": "signed ElevenLabs event ~20 KB"}
# Scripts measured at fewer connection counts than the others.
SCRIPT_CONNECTIONS = {"webhook_64k": (64,)}
CEILING = "ceiling: static libmicrohttpd reply"


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

    def __init__(self, argv, env=None, cwd=None, threads=True):
        """threads: its CPU splits by gensendrep's thread names (else all of it is HTTP
        workers': the static-reply server)."""
        self.threads = threads
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

    def cpu_s(self):
        return cpu_seconds(self.proc.pid)

    def cpu_split(self):
        """(total, {group: seconds}) of CPU time so far; see cpu_groups()."""
        if not self.threads:
            total = cpu_seconds(self.proc.pid)
            return total, {"workers": total, "writer": None, "others": None}
        return cpu_groups(self.proc.pid)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(60)


def cpu_seconds(pid):
    """User + system CPU time the process has used so far (every thread), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# Thread groups of the CPU split, in print order: libmicrohttpd's HTTP workers (their comm is
# "MHD-worker"; any other "MHD-" thread counts with them), the store's writer ("gsr-writer"), and
# everything else (the main thread, the checkpointer, the offload pool, delivery, publishing,
# audit, the log writer, and any thread that ended during the run).
GROUPS_CPU = (("workers", "HTTP workers"), ("writer", "writer"), ("others", "others"))


def cpu_groups(pid):
    """(total, {"workers", "writer", "others"}) CPU seconds (user + system) of pid so far: the
    first two summed over its threads from /proc/<pid>/task/<tid>/stat, by name
    (/proc/<pid>/task/<tid>/comm); "others" is the process's total less those two, so it also
    holds the time of threads that have ended."""
    tick = os.sysconf("SC_CLK_TCK")
    groups = {"workers": 0.0, "writer": 0.0}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                comm = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended meanwhile: its time is in the process's total
        group = "workers" if comm.startswith("MHD-") else \
            "writer" if comm == "gsr-writer" else None
        if group:
            groups[group] += (int(fields[11]) + int(fields[12])) / tick
    total = cpu_seconds(pid)
    groups["others"] = total - groups["workers"] - groups["writer"]
    return total, groups


def postgres_cpu_seconds(data_dir):
    """CPU time so far of a PostgreSQL cluster: the postmaster, its children that ended (cutime,
    cstime) and the ones alive (each backend, its auxiliary processes); None where that cannot
    be read (e.g. a kernel without /proc/<pid>/task/<tid>/children)."""
    try:
        with open(os.path.join(data_dir, "postmaster.pid")) as f:
            pid = int(f.readline())
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = sum(int(x) for x in fields[11:15])
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = f.read().split()
    except (OSError, ValueError):
        return None
    for child in children:
        try:
            with open(f"/proc/{child}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def gensendrep(database_url, workdir, extra=None):
    env = {"API_SECRET_KEY": KEY, "DATABASE_URL": database_url, "LOG_LEVEL": "info",
           "RATE_LIMIT_WEBHOOK_PER_MINUTE": "100000000", "RATE_LIMIT_API_PER_MINUTE": "100000000",
           "MAX_CONNECTIONS_PER_IP": "0", **(extra or {})}
    return Proc([BIN], env=env, cwd=workdir)


def wrk(port, script, connections, args=(), duration=DURATION, cpu_of=None, timeout=None,
        pg_data=None):
    """Runs wrk; cpu_of: a Proc whose CPU time per answered request goes in "cpu_us", split by
    thread group in "cpu_groups" (µs, None where a group does not apply); pg_data: a PostgreSQL
    data directory whose cluster's CPU time per answered request goes in "pg_cpu_us"; timeout:
    wrk's per-request timeout (its default is 2 s; a request past it counts as an error)."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}", "--latency", "-s", LUA[script],
           f"http://127.0.0.1:{port}"]
    if timeout:
        cmd[1:1] = ["--timeout", timeout]
    if args:
        cmd += ["--"] + [str(a) for a in args]
    env = dict(os.environ, BENCH_KEY=KEY, BENCH_EL_SECRET=EL_SECRET)
    c0, g0 = cpu_of.cpu_split() if cpu_of else (0, None)
    pg0 = postgres_cpu_seconds(pg_data) if pg_data else None
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    if cpu_of:
        c1, g1 = cpu_of.cpu_split()
    pg1 = postgres_cpu_seconds(pg_data) if pg0 is not None else None
    result = parse_wrk(out)
    n = result["requests"]
    if cpu_of and n:
        result["cpu_us"] = (c1 - c0) / n * 1e6
        result["cpu_groups"] = {k: None if g1[k] is None else (g1[k] - g0[k]) / n * 1e6
                                for k, _ in GROUPS_CPU}
    if pg1 is not None and n:
        result["pg_cpu_us"] = (pg1 - pg0) / n * 1e6
    return result


def _ms(text):
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def parse_wrk(out):
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    return {"rps": rps, "p50": p50, "p99": p99, "errors": errors, "requests": requests}


ROWS = []


def cpu_group_text(result, sep):
    """The row's CPU per request by thread group, in GROUPS_CPU order ("n/a" where a group does
    not apply, "-" where nothing was measured)."""
    groups = result.get("cpu_groups")
    return sep.join("-" if not groups else "n/a" if groups[k] is None else f"{groups[k]:.0f}"
                    for k, _ in GROUPS_CPU)


def row(scenario, connections, result, rss):
    ROWS.append((scenario, connections, result, rss))
    cpu = f", server CPU {result['cpu_us']:.0f} us/req" if "cpu_us" in result else ""
    if "cpu_groups" in result:
        cpu += " (" + ", ".join(f"{name} {text}" for (_, name), text in
                                zip(GROUPS_CPU, cpu_group_text(result, "|").split("|"))) + ")"
    if "pg_cpu_us" in result:
        cpu += f", PostgreSQL CPU {result['pg_cpu_us']:.0f} us/req"
    print(f"  {scenario} c={connections}: {result['rps']:.0f} req/s, p99 {result['p99']:.2f} ms, "
          f"errors {result['errors']}{cpu}, peak RSS {rss:.1f} MiB", file=sys.stderr, flush=True)


def elevenlabs_template(workdir):
    """The transcription fixture with its turns repeated until the event is about
    EL_BODY_BYTES long; @@CONVERSATION_ID@@ stands for the id the wrk script puts in."""
    with open(EL_FIXTURE, encoding="utf-8") as f:
        event = json.load(f)
    data = event["data"]
    turns = data["transcript"]
    last = turns[-1]["time_in_call_secs"] + 5
    grown = list(turns)
    size = lambda: len(json.dumps(event, separators=(",", ":")).encode())  # noqa: E731
    i = 0
    while size() < EL_BODY_BYTES:
        turn = dict(turns[i % len(turns)], time_in_call_secs=last + 5 * i)
        grown.append(turn)
        data["transcript"] = grown
        i += 1
    data["metadata"]["call_duration_secs"] = grown[-1]["time_in_call_secs"] + 5
    data["conversation_id"] = "@@CONVERSATION_ID@@"
    variables = data.get("conversation_initiation_client_data", {}).get("dynamic_variables", {})
    if "system__conversation_id" in variables:
        variables["system__conversation_id"] = "@@CONVERSATION_ID@@"
    path = os.path.join(workdir, "elevenlabs_event.json")
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(event, separators=(",", ":")))
    return path


def ingest(label, database_url, workdir, connections=(64, 256), scripts=("webhook_seed",),
           extra=None, pg_data=None):
    for script in scripts:
        env, args = dict(extra or {}), ()
        if script == "webhook_elevenlabs":
            env.update(ELEVENLABS_WEBHOOK_SECRET=EL_SECRET,
                       RATE_LIMIT_ELEVENLABS_PER_MINUTE="100000000")
            args = (elevenlabs_template(workdir),)
        for c in (c for c in connections if c in SCRIPT_CONNECTIONS.get(script, (c,))):
            srv = gensendrep(database_url, workdir, env)
            try:
                row(f"{label}, {LABEL[script]}", c,
                    wrk(srv.port, script, c, args=args, cpu_of=srv, pg_data=pg_data),
                    srv.peak_rss_mib())
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


def http_json(port, path, body=None, method="GET"):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {KEY}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def _ts_us(text):
    """RFC 3339 UTC with microseconds -> microseconds since the epoch."""
    import calendar
    head, _, frac = text.rstrip("Z").partition(".")
    return calendar.timegm(time.strptime(head, "%Y-%m-%dT%H:%M:%S")) * 1000000 + \
        int((frac + "000000")[:6])


def stream_lags_ms(port, stream):
    """Per entry of the Redis Stream: XADD time (the entry id's milliseconds, Redis's clock)
    minus the event's timestamp (when it was stored), in ms; sorted."""
    from brokers import RespClient
    lags, last = [], "-"
    with RespClient(port, timeout=60) as r:
        while True:
            entries = r("XRANGE", stream, last, "+", "COUNT", 5000)
            if not entries:
                break
            for entry_id, fields in entries:
                last = "(" + entry_id.decode()
                it = iter(fields)
                f = dict(zip(it, it))
                added_ms = int(entry_id.split(b"-")[0])
                ts = json.loads(f[b"event"])["timestamp"]
                lags.append(added_ms - _ts_us(ts) / 1000)
    return sorted(lags)


def pct(values, q):
    return values[min(len(values) - 1, int(len(values) * q))] if values else float("nan")


DELIVERY = {}


def delivery(database_url, workdir, connections=64):
    """Seed ingest with one subscription and a Redis Stream attached; waits for both to catch
    up after wrk ends (at most 5 minutes) and reports the lags."""
    redis = RedisServer()
    redis.start()
    rcv = Proc([RECEIVER, "{port}"])
    stream = "gensendrep:bench"
    srv = gensendrep(database_url, workdir, {"QUEUE_URL": redis.url(), "QUEUE_STREAM": stream,
                                             "DELIVERY_ALLOW_PRIVATE_NETWORKS": "true"})
    try:
        http_json(srv.port, "/api/v1/subscriptions", {"url": f"http://127.0.0.1:{rcv.port}/hook"},
                  "POST")
        others0 = cpu_seconds(rcv.proc.pid), cpu_seconds(redis.proc.pid)
        result = wrk(srv.port, "webhook_seed", connections, cpu_of=srv)
        others = [(cpu_seconds(p) - c0) / max(result["requests"], 1) * 1e6
                  for p, c0 in zip((rcv.proc.pid, redis.proc.pid), others0)]
        rss = srv.peak_rss_mib()
        end = time.monotonic()
        at_end = http_json(rcv.port, "/stats")["count"]  # delivered while wrk ran
        total = count(srv.port)
        from brokers import RespClient
        caught_up = None
        while time.monotonic() - end < 300:
            got = http_json(rcv.port, "/stats")["count"]
            with RespClient(redis.port) as r:
                queued = r("XLEN", stream)
            if got >= total and queued >= total:
                caught_up = time.monotonic() - end
                total = count(srv.port)  # requests wrk had in flight at its end count too
                if got >= total and queued >= total:
                    break
                caught_up = None
            time.sleep(0.2)
        stats = http_json(rcv.port, "/stats")
        lags = stream_lags_ms(redis.port, stream)
        row("ingest, SQLite + subscription + Redis Stream, seed example", connections, result,
            rss)
        DELIVERY.update(total=total, delivered=stats["count"], published=len(lags),
                        caught_up=caught_up, p50=stats["p50_ms"], p99=stats["p99_ms"],
                        max=stats["max_ms"], q50=pct(lags, 0.5), q99=pct(lags, 0.99),
                        receiver_us=others[0], redis_us=others[1], at_end=at_end,
                        drain=(total - at_end) / caught_up if caught_up else None)
        print(f"  delivery: {stats['count']}/{total} delivered, {len(lags)} published, caught up "
              f"{'%.1f s' % caught_up if caught_up is not None else 'NOT within 300 s'} after "
              f"ingest ended; lag p50 {stats['p50_ms']:.0f} ms, p99 {stats['p99_ms']:.0f} ms "
              f"(subscription), p50 {DELIVERY['q50']:.0f} ms, p99 {DELIVERY['q99']:.0f} ms "
              f"(Redis Stream)", file=sys.stderr, flush=True)
    finally:
        srv.stop()
        rcv.stop()
        redis.destroy()


# ---- export and analytics on a generated store of BIG_SIZE conversations ----

def _store_key(backend):
    h = hashlib.sha256(f"v{BIG_STORE_VERSION} {BIG_SIZE} {backend}".encode())
    for path in [os.path.join(REPO, "bench", "gen_store.c")] + sorted(
            glob.glob(os.path.join(REPO, "src", "store", "migrations", backend, "*.sql"))):
        with open(path, "rb") as f:
            h.update(os.path.relpath(path, REPO).encode() + b"\0" + f.read())
    return f"{backend}-{BIG_SIZE}-{h.hexdigest()[:16]}"


def _forget_other_stores(backend, keep):
    for old in glob.glob(os.path.join(CACHE, f"{backend}-*")):
        if not os.path.basename(old).startswith(keep):
            print(f"  removing the outdated cached store {os.path.relpath(old, REPO)}",
                  file=sys.stderr, flush=True)
            if os.path.isdir(old):
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.unlink(old)


GENERATED = {}


def _generate(database_url, label):
    print(f"  generating {BIG_SIZE} conversations on {label} (once; cached in "
          f"{os.path.relpath(CACHE, REPO)})...", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    subprocess.run([GEN, database_url, str(BIG_SIZE)], check=True,
                   env=dict(os.environ, LOG_LEVEL="warn"))
    GENERATED[label] = time.monotonic() - t0
    print(f"  generated in {GENERATED[label]:.0f} s", file=sys.stderr, flush=True)


def sqlite_big_store():
    """The path of the cached SQLite store, generated first when missing."""
    os.makedirs(CACHE, exist_ok=True)
    key = _store_key("sqlite")
    path = os.path.join(CACHE, key + ".db")
    if os.path.exists(path):
        return path
    _forget_other_stores("sqlite", key)
    tmp = os.path.join(CACHE, key + ".tmp.db")
    for leftover in glob.glob(tmp + "*"):
        os.unlink(leftover)
    _generate(f"sqlite:{tmp}", "SQLite")
    for suffix in ("-wal", "-shm"):  # none left when the store closed cleanly
        if os.path.exists(tmp + suffix):
            os.rename(tmp + suffix, path + suffix)
    os.rename(tmp, path)
    return path


class CachedPgCluster(PgCluster):
    """A PostgreSQL cluster whose data directory lives in CACHE (the same initdb, options and
    pg_ctl as the bench's temporary cluster), holding database "bench" with the generated
    store; made once, started for each run and stopped (never deleted) at the end."""

    def __init__(self):  # noqa: super().__init__ would make a temporary cluster
        os.makedirs(CACHE, exist_ok=True)
        key = _store_key("pg")
        self.dir = os.path.join(CACHE, key)
        self.data = os.path.join(self.dir, "data")
        self.port = None
        self.running = False
        atexit.register(self.stop)
        if os.path.exists(os.path.join(self.dir, "complete")):
            return
        _forget_other_stores("pg", key)
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        subprocess.run(_as_postgres([_pg_bin("initdb"), "-D", self.data, "-U", "postgres",
                                     "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"]),
                       check=True, capture_output=True)
        self.start()
        _generate(self.create_database("bench"), "PostgreSQL")
        # A store of this size in service has been vacuumed and analysed by autovacuum.
        self.psql("VACUUM ANALYZE", "bench")
        self.stop()
        with open(os.path.join(self.dir, "complete"), "w") as f:
            f.write(f"{BIG_SIZE}\n")

    def destroy(self):
        self.stop()


def check_rows(srv, database_url_fresh, workdir):
    """A few generated rows (a seed webhook, an ElevenLabs transcription and a failed call
    initiation) posted over HTTP to a fresh store: GET ?include=transcript must show the same
    as for the generated ones, but for processedAt."""
    wanted, samples = {}, []
    for n in range(1, 5000):
        out = subprocess.run([GEN, "--body", str(n)], check=True, capture_output=True,
                             text=True).stdout
        endpoint, body = out.split("\n", 1)
        kind = endpoint + (" failure" if "call_initiation_failure" in body else "")
        if kind not in wanted:
            wanted[kind] = n
            samples.append((n, endpoint, body.strip()))
        if len(wanted) == 3:
            break
    fresh = gensendrep(database_url_fresh, workdir)
    try:
        for n, endpoint, body in samples:
            req = urllib.request.Request(f"http://127.0.0.1:{fresh.port}{endpoint}",
                                         data=body.encode(), method="POST",
                                         headers={"Authorization": f"Bearer {KEY}",
                                                  "Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as r:
                assert r.status == 200
            path = f"/api/v1/conversations/gen_{n:07d}?include=transcript"
            posted, generated = http_json(fresh.port, path), http_json(srv.port, path)
            posted.pop("processedAt")
            generated.pop("processedAt")
            if posted != generated:
                raise RuntimeError(f"generated row gen_{n:07d} differs from the same webhook "
                                   f"posted over HTTP:\n{generated}\n{posted}")
    finally:
        fresh.stop()
    print(f"  generated rows checked against the same webhooks posted over HTTP: "
          f"{', '.join(f'gen_{n:07d}' for n, _, _ in samples)} identical", file=sys.stderr)


BIG_ENV = {"OUTBOX_RETENTION_DAYS": "36500"}  # nothing is pruned while the bench runs

EXPORTS = []


def export_one(srv, fmt):
    """Reads the whole export; returns (rows, bytes, seconds)."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=600)
    t0 = time.monotonic()
    conn.request("GET", f"/api/v1/conversations/export?format={fmt}",
                 headers={"Authorization": f"Bearer {KEY}"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"export answered {resp.status}: {resp.read()[:300]!r}")
    lines = size = 0
    while True:
        piece = resp.read(1 << 20)
        if not piece:
            break
        size += len(piece)
        lines += piece.count(b"\n")
    seconds = time.monotonic() - t0
    conn.close()
    return (lines - 1 if fmt == "csv" else lines), size, seconds


def export(backend, database_url, workdir):
    for fmt in ("ndjson", "csv"):
        srv = gensendrep(database_url, workdir, BIG_ENV)  # a fresh process: VmHWM is this export's
        try:
            rss0 = srv.peak_rss_mib()
            c0 = srv.cpu_s()
            rows, size, seconds = export_one(srv, fmt)
            cpu = srv.cpu_s() - c0
            rss = srv.peak_rss_mib()
        finally:
            srv.stop()
        EXPORTS.append((backend, fmt, rows, size, seconds, rss0, rss, cpu))
        print(f"  export {fmt}, {backend}: {rows} rows, {size / 1e6:.0f} MB in {seconds:.1f} s "
              f"({rows / seconds:.0f} rows/s), server peak RSS {rss0:.1f} MiB before, "
              f"{rss:.1f} MiB after, server CPU {cpu:.1f} s", file=sys.stderr, flush=True)
        if rows != BIG_SIZE:
            raise RuntimeError(f"the {fmt} export had {rows} rows, not {BIG_SIZE}")


def big(sqlite_url, workdir):
    """The export and analytics scenarios on SQLite, then on PostgreSQL."""
    path = sqlite_big_store()
    url = f"sqlite:{path}"
    srv = gensendrep(url, workdir, BIG_ENV)
    try:
        check_rows(srv, sqlite_url("check"), workdir)
    finally:
        srv.stop()
    if "export" in ONLY:
        export("SQLite", url, workdir)
    if "analytics" in ONLY:
        analytics("SQLite", url, workdir)
    try:
        cluster = CachedPgCluster()
        cluster.start()
    except Exception as e:  # noqa: BLE001 - PostgreSQL is optional for the bench
        print(f"  (PostgreSQL not available: {e})", file=sys.stderr)
        return
    try:
        url = cluster.url("bench")
        srv = gensendrep(url, workdir, BIG_ENV)
        try:
            check_rows(srv, cluster.create_database(f"bench_check_{os.getpid()}"), workdir)
        finally:
            srv.stop()
            cluster.psql(f"DROP DATABASE IF EXISTS bench_check_{os.getpid()}")
        if "export" in ONLY:
            export("PostgreSQL", url, workdir)
        if "analytics" in ONLY:
            analytics("PostgreSQL", url, workdir)
    finally:
        cluster.stop()


ANALYTICS = []


def analytics(backend, database_url, workdir):
    """GET /api/v1/analytics over the whole year, one connection, requests back to back (wrk
    measures each round trip over loopback: the server's time, plus the answer's transfer)."""
    srv = gensendrep(database_url, workdir, BIG_ENV)
    try:
        # First, that the rollups hold the whole store: every conversation falls in 2025 or
        # (call initiation failures, no start time) at the generation's processedAt, after it;
        # and one day's point equals the list's count for that day.
        try:
            year = http_json(srv.port, f"/api/v1/analytics?{YEAR}&interval=day")
        except urllib.error.HTTPError as e:
            if e.code != 404:
                raise
            print("  (this build has no GET /api/v1/analytics: the analytics scenario is "
                  "skipped)", file=sys.stderr)
            return
        tomorrow = time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(time.time() + 2 * 86400))
        later = http_json(srv.port, "/api/v1/analytics?from=2026-01-01T00:00:00Z"
                                    f"&to={tomorrow}&interval=week")
        counted = year["totals"]["conversations"] + later["totals"]["conversations"]
        day = "from=2025-06-03T00:00:00Z&to=2025-06-04T00:00:00Z"
        listed = http_json(srv.port, f"/api/v1/conversations?{day}&limit=1")["pagination"]
        point = year["series"][153]
        if counted != BIG_SIZE or len(year["series"]) != 365 or \
                not point["start"].startswith("2025-06-03") or \
                point["conversations"] != listed["total"]:
            raise RuntimeError(f"analytics counted {counted} conversations (not {BIG_SIZE}), "
                               f"{len(year['series'])} days, {point['conversations']} on "
                               f"{point['start']} where the list has {listed['total']}")
        print(f"  analytics, {backend}: {year['totals']['conversations']} conversations in 2025 "
              f"+ {later['totals']['conversations']} after it = {BIG_SIZE}; 2025-06-03's point "
              f"({listed['total']}) is the list's count", file=sys.stderr, flush=True)
        for label, query in ANALYTICS_QUERIES:
            http_json(srv.port, f"/api/v1/analytics?{query}")  # the same answer warms the cache
            r = wrk(srv.port, "analytics", 1, args=(query,), duration=ANALYTICS_DURATION,
                    cpu_of=srv, timeout="30s")
            ANALYTICS.append((backend, label, r))
            row(f"analytics over a year of {BIG_SIZE}, {label}, {backend} (target p99 < "
                f"{ANALYTICS_TARGET_MS:.0f} ms)", 1, r, srv.peak_rss_mib())
    finally:
        srv.stop()


def main():
    work = tempfile.mkdtemp(prefix="gensendrep-bench-")
    results = {}
    startup_ms = None
    try:
        if "ceiling" in ONLY:
            # One row per body size the ingest scenarios post (the seed's keeps its old label
            # and both connection counts; the others at 64 connections).
            static = Proc([STATIC, "{port}"], threads=False)
            for c in (64, 256):
                r = wrk(static.port, "webhook_seed", c, cpu_of=static)
                results[("ceiling", c)] = r
                row(CEILING, c, r, static.peak_rss_mib())
            for script in ("webhook_large", "webhook_64k", "webhook_elevenlabs"):
                if script == "webhook_elevenlabs" and not os.path.exists(EL_FIXTURE):
                    continue
                args = (elevenlabs_template(work),) if script == "webhook_elevenlabs" else ()
                r = wrk(static.port, script, 64, args=args, cpu_of=static)
                results[("ceiling", script, 64)] = r
                row(f"{CEILING}, {LABEL[script]}", 64, r, static.peak_rss_mib())
            static.stop()

        sqlite_url = lambda name: f"sqlite:{work}/{name}.db"  # noqa: E731
        if "startup" in ONLY:
            srv = gensendrep(sqlite_url("startup"), work)
            print(f"  start-up to first healthy answer: {srv.startup_ms:.0f} ms", file=sys.stderr)
            startup_ms = srv.startup_ms
            srv.stop()

        if "elevenlabs" in ONLY and not os.path.exists(EL_FIXTURE):
            print(f"  (no {os.path.relpath(EL_FIXTURE, REPO)}: the ElevenLabs scenario is skipped)",
                  file=sys.stderr)
            ONLY.discard("elevenlabs")
        scripts = (("webhook_seed", "webhook_large", "webhook_64k") if "ingest" in ONLY else ()) + \
            (("webhook_elevenlabs",) if "elevenlabs" in ONLY else ())
        if scripts:
            ingest("ingest, SQLite", sqlite_url("ingest"), work, scripts=scripts)
        if "redis" in ONLY:
            redis = RedisServer()
            redis.start()
            ingest("ingest, SQLite + REDIS_URL", sqlite_url("ingest_redis"), work,
                   connections=(64,), extra={"REDIS_URL": redis.url()})
            redis.destroy()

        if "delivery" in ONLY:
            delivery(sqlite_url("delivery"), work)

        pg = None
        if ONLY & {"postgresql", "reads"}:
            try:
                pg = PgCluster()
                pg.start()
            except Exception as e:  # noqa: BLE001 - PostgreSQL is optional for the bench
                print(f"  (PostgreSQL not available: {e})", file=sys.stderr)
                pg = None
        if pg and "postgresql" in ONLY:
            # issue 12: the same three bodies as SQLite (the ElevenLabs event when its fixture
            # is there), gensendrep's own CPU apart from PostgreSQL's (pg_data)
            # A database per body and connection count, CHECKPOINT first, each dropped once
            # measured: the previous run's checkpoint and autovacuum would otherwise land in
            # this one's PostgreSQL CPU (a fresh database alone does not stop autovacuum
            # working through the previous one; a dropped one it leaves alone).
            for script in ("webhook_seed", "webhook_large") + \
                    (("webhook_elevenlabs",) if os.path.exists(EL_FIXTURE) else ()):
                for c in (64, 256):
                    name = f"bench_ingest_{script}_{c}"
                    url = pg.create_database(name)
                    pg.psql("CHECKPOINT")
                    ingest("ingest, PostgreSQL", url, work, connections=(c,), scripts=(script,),
                           pg_data=pg.data)
                    pg.psql(f'DROP DATABASE "{name}" WITH (FORCE)')

        if "reads" in ONLY:
            srv = gensendrep(sqlite_url("reads"), work)
            print(f"  filling {STORE_SIZE} conversations...", file=sys.stderr, flush=True)
            fill(srv)
            row(f"get one of {STORE_SIZE}, SQLite", 64,
                wrk(srv.port, "get_one", 64, args=(STORE_SIZE,), cpu_of=srv),
                srv.peak_rss_mib())
            row(f"filtered list of {STORE_SIZE}, SQLite", 64,
                wrk(srv.port, "list", 64, cpu_of=srv), srv.peak_rss_mib())
            srv.stop()
        if pg and "reads" in ONLY:
            srv = gensendrep(pg.create_database("bench_reads"), work)
            fill(srv)
            # A store of this size in service has been vacuumed and analysed by autovacuum;
            # a freshly bulk-filled one has not. Measure the steady state.
            pg.psql("VACUUM ANALYZE", "bench_reads")
            row(f"get one of {STORE_SIZE}, PostgreSQL", 64,
                wrk(srv.port, "get_one", 64, args=(STORE_SIZE,), cpu_of=srv),
                srv.peak_rss_mib())
            row(f"filtered list of {STORE_SIZE}, PostgreSQL", 64,
                wrk(srv.port, "list", 64, cpu_of=srv), srv.peak_rss_mib())
            srv.stop()
        if pg:
            pg.destroy()

        if ONLY & {"export", "analytics"}:
            big(sqlite_url, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    if ROWS:
        print()
        print("| scenario | connections | requests/s | p50 ms | p99 ms | errors | peak RSS MiB "
              "| server CPU us/req | " + " | ".join(f"{name} us/req" for _, name in GROUPS_CPU) +
              " | PostgreSQL CPU us/req |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for scenario, c, r, rss in ROWS:
        cpu = f"{r['cpu_us']:.0f}" if "cpu_us" in r else "-"
        pg_cpu = f"{r['pg_cpu_us']:.0f}" if "pg_cpu_us" in r else "-"
        print(f"| {scenario} | {c} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | "
              f"{r['errors']} | {rss:.1f} | {cpu} | {cpu_group_text(r, ' | ')} | {pg_cpu} |")
    print()
    find = lambda name, c: next((r for s, cc, r, _ in ROWS  # noqa: E731
                                 if s == name and cc == c), None)
    for c in (64, 256):
        ours = find("ingest, SQLite, seed example", c)
        if ours and ("ceiling", c) in results:
            print(f"SQLite ingest at {c} connections = "
                  f"{ours['rps'] / results[('ceiling', c)]['rps']:.0%} of the static-reply ceiling")
    for script in ("webhook_large", "webhook_64k", "webhook_elevenlabs"):
        ours = find(f"ingest, SQLite, {LABEL[script]}", 64)
        if ours and ("ceiling", script, 64) in results:
            print(f"SQLite ingest, {LABEL[script]}, at 64 connections = "
                  f"{ours['rps'] / results[('ceiling', script, 64)]['rps']:.0%} of the "
                  f"static-reply ceiling with the same body")
    local = find("ingest, SQLite, seed example", 64)
    shared = find("ingest, SQLite + REDIS_URL, seed example", 64)
    if local and shared:
        print(f"ingest with REDIS_URL = {shared['rps'] / local['rps']:.0%} of ingest without it "
              f"(target: at least 80%)")
    with_delivery = find("ingest, SQLite + subscription + Redis Stream, seed example", 64)
    if local and with_delivery:
        print(f"ingest with a subscription and a Redis Stream = "
              f"{with_delivery['rps'] / local['rps']:.0%} of ingest without them "
              f"(target: at least 90%)")
        if "cpu_us" in local and "cpu_us" in with_delivery and DELIVERY:
            print(f"CPU per webhook on this machine's shared cores: gensendrep "
                  f"{local['cpu_us']:.0f} us without delivery, {with_delivery['cpu_us']:.0f} us "
                  f"with it (ingest + the delivery + the publish); the receiver "
                  f"{DELIVERY['receiver_us']:.0f} us and redis-server {DELIVERY['redis_us']:.0f} us "
                  f"more per event")
    if DELIVERY:
        d = DELIVERY
        caught = f"{d['caught_up']:.1f} s" if d["caught_up"] is not None else "never (300 s)"
        print(f"delivery: {d['delivered']} of {d['total']} events delivered and {d['published']} "
              f"published; both caught up {caught} after ingest ended; lag (stored -> received) "
              f"p50 {d['p50']:.0f} ms, p99 {d['p99']:.0f} ms, max {d['max']:.0f} ms; "
              f"Redis Stream lag p50 {d['q50']:.0f} ms, p99 {d['q99']:.0f} ms")
        if d["drain"]:
            print(f"delivery while wrk ran: {d['at_end']} events; the {d['total'] - d['at_end']} "
                  f"left were delivered at {d['drain']:.0f} events/s once the load generator "
                  f"stopped (the dispatcher's rate when it is not competing for the cores)")
    if any(s.endswith(LABEL["webhook_elevenlabs"]) and r["errors"] for s, _, r, _ in ROWS):
        print("signed ElevenLabs events were refused (errors above): the rate is not valid")
    if startup_ms is not None:
        print(f"start-up to first healthy answer: {startup_ms:.0f} ms")
    for label, seconds in GENERATED.items():
        print(f"generated the {BIG_SIZE}-conversation store on {label} in {seconds:.0f} s "
              f"(bench/gen_store.c; cached for the next runs)")
    for backend, label, r in ANALYTICS:
        print(f"analytics over a year of {BIG_SIZE} conversations, {label}, {backend}: "
              f"p50 {r['p50']:.2f} ms, p99 {r['p99']:.2f} ms over {r['requests']} requests "
              f"(target: p99 under {ANALYTICS_TARGET_MS:.0f} ms: "
              f"{'met' if r['p99'] < ANALYTICS_TARGET_MS and not r['errors'] else 'MISSED'})")
    if EXPORTS:
        print()
        print(f"| export of {BIG_SIZE} conversations | format | rows | MB | seconds | rows/s "
              f"| server peak RSS MiB before / after | server CPU s |")
        print("|---|---|---|---|---|---|---|---|")
        for backend, fmt, rows, size, seconds, rss0, rss, cpu in EXPORTS:
            print(f"| {backend} | {fmt} | {rows} | {size / 1e6:.0f} | {seconds:.1f} | "
                  f"{rows / seconds:.0f} | {rss0:.1f} / {rss:.1f} | {cpu:.1f} |")


def serve(backend):
    """bench/run.py serve [sqlite|pg]: gensendrep (release build) on the cached generated store
    (made first when missing), on a free port, until Enter or Ctrl-C; e.g. to look at the
    dashboard or try queries on 1,000,000 conversations. Everything is stopped at the end."""
    work = tempfile.mkdtemp(prefix="gensendrep-bench-")
    cluster = None
    try:
        if backend == "pg":
            cluster = CachedPgCluster()
            cluster.start()
            url = cluster.url("bench")
        else:
            url = f"sqlite:{sqlite_big_store()}"
        srv = gensendrep(url, work, BIG_ENV)
        try:
            print(f"gensendrep on {BIG_SIZE} generated conversations ({url}): "
                  f"http://127.0.0.1:{srv.port}/dashboard, API key {KEY}; Enter stops it")
            try:
                input()
            except (EOFError, KeyboardInterrupt):
                pass
        finally:
            srv.stop()
    finally:
        if cluster:
            cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve(sys.argv[2] if len(sys.argv) > 2 else "sqlite")
    else:
        main()
