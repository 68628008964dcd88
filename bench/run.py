#!/usr/bin/python3
"""make bench: drives gensendrep (release build) with wrk on this machine and prints one table.

Scenarios: the ceiling (a trivial libmicrohttpd server answering the same POSTs), webhook
ingest (seed example and a 40-message ~8 KB transcript) at 64 and 256 connections on SQLite,
signed ElevenLabs post_call_transcription events (~20 KB, signed per request) on SQLite, with
REDIS_URL (shared rate limits), on PostgreSQL, then get-one and a filtered list on a store of
100,000 conversations; and delivery: seed ingest on SQLite with one webhook subscription (a C
receiver answering 200 at once, bench/delivery_receiver.c) and a Redis Stream (QUEUE_URL)
attached, reporting the ingest rate and the delivery lag (event stored -> received) p50/p99 for
both. Every server is started here on free ports and stopped afterwards."""
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
RECEIVER = os.path.join(REPO, "build", "bench", "delivery_receiver")
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
          "reads")
ONLY = set(filter(None, os.environ.get("BENCH_ONLY", ",".join(GROUPS)).split(",")))
if ONLY - set(GROUPS):
    sys.exit(f"BENCH_ONLY: unknown group(s) {sorted(ONLY - set(GROUPS))}; known: {GROUPS}")
LUA = {name: os.path.join(REPO, "bench", name + ".lua")
       for name in ("webhook_seed", "webhook_large", "webhook_elevenlabs", "fill", "get_one",
                    "list")}
LABEL = {"webhook_seed": "seed example", "webhook_large": "8 KB transcript",
         "webhook_elevenlabs": "signed ElevenLabs event ~20 KB"}


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

    def cpu_s(self):
        return cpu_seconds(self.proc.pid)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(60)


def cpu_seconds(pid):
    """User + system CPU time the process has used so far (every thread), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def gensendrep(database_url, workdir, extra=None):
    env = {"API_SECRET_KEY": KEY, "DATABASE_URL": database_url, "LOG_LEVEL": "info",
           "RATE_LIMIT_WEBHOOK_PER_MINUTE": "100000000", "RATE_LIMIT_API_PER_MINUTE": "100000000",
           "MAX_CONNECTIONS_PER_IP": "0", **(extra or {})}
    return Proc([BIN], env=env, cwd=workdir)


def wrk(port, script, connections, args=(), duration=DURATION, cpu_of=None):
    """Runs wrk; cpu_of: a Proc whose CPU time per answered request goes in "cpu_us"."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}", "--latency", "-s", LUA[script],
           f"http://127.0.0.1:{port}"]
    if args:
        cmd += ["--"] + [str(a) for a in args]
    env = dict(os.environ, BENCH_KEY=KEY, BENCH_EL_SECRET=EL_SECRET)
    c0 = cpu_of.cpu_s() if cpu_of else 0
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    result = parse_wrk(out)
    if cpu_of and result["requests"]:
        result["cpu_us"] = (cpu_of.cpu_s() - c0) / result["requests"] * 1e6
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


def row(scenario, connections, result, rss):
    ROWS.append((scenario, connections, result, rss))
    cpu = f", server CPU {result['cpu_us']:.0f} us/req" if "cpu_us" in result else ""
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
           extra=None):
    for script in scripts:
        env, args = dict(extra or {}), ()
        if script == "webhook_elevenlabs":
            env.update(ELEVENLABS_WEBHOOK_SECRET=EL_SECRET,
                       RATE_LIMIT_ELEVENLABS_PER_MINUTE="100000000")
            args = (elevenlabs_template(workdir),)
        for c in connections:
            srv = gensendrep(database_url, workdir, env)
            try:
                row(f"{label}, {LABEL[script]}", c,
                    wrk(srv.port, script, c, args=args, cpu_of=srv),
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


def main():
    work = tempfile.mkdtemp(prefix="gensendrep-bench-")
    results = {}
    startup_ms = None
    try:
        if "ceiling" in ONLY:
            static = Proc([STATIC, "{port}"])
            for c in (64, 256):
                r = wrk(static.port, "webhook_seed", c, cpu_of=static)
                results[("ceiling", c)] = r
                row("ceiling: static libmicrohttpd reply", c, r, static.peak_rss_mib())
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
        scripts = (("webhook_seed", "webhook_large") if "ingest" in ONLY else ()) + \
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
            ingest("ingest, PostgreSQL", pg.create_database("bench_ingest"), work)

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
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print()
    print("| scenario | connections | requests/s | p50 ms | p99 ms | errors | peak RSS MiB "
          "| server CPU us/req |")
    print("|---|---|---|---|---|---|---|---|")
    for scenario, c, r, rss in ROWS:
        cpu = f"{r['cpu_us']:.0f}" if "cpu_us" in r else "-"
        print(f"| {scenario} | {c} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | "
              f"{r['errors']} | {rss:.1f} | {cpu} |")
    print()
    find = lambda name, c: next((r for s, cc, r, _ in ROWS  # noqa: E731
                                 if s == name and cc == c), None)
    for c in (64, 256):
        ours = find("ingest, SQLite, seed example", c)
        if ours and ("ceiling", c) in results:
            print(f"SQLite ingest at {c} connections = "
                  f"{ours['rps'] / results[('ceiling', c)]['rps']:.0%} of the static-reply ceiling")
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


if __name__ == "__main__":
    main()
