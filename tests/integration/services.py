"""Real dependency servers for the tests: a throw-away PostgreSQL cluster (initdb + pg_ctl in a
temp dir, on a free port), a redis-server and a nats-server with JetStream, each on a free port.
All stop themselves at exit; Redis and NATS can be stopped and started again on the same port
mid-test (a broker outage). Nothing here is a fake: the suite talks to the same servers users
run."""
import atexit
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(cmd):
    """initdb and postgres refuse to run as root: run them as the postgres user then."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--"] + cmd
    return cmd


def _pg_bin(name):
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if not path:
        raise RuntimeError(f"{name} not found: install the Debian package postgresql "
                           "(make test does so when run as root)")
    return path


class PgCluster:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="gensendrep-pg-")
        self.data = os.path.join(self.dir, "data")
        self.port = None
        self.running = False
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        subprocess.run(_as_postgres([_pg_bin("initdb"), "-D", self.data, "-U", "postgres",
                                     "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"]),
                       check=True, capture_output=True)
        atexit.register(self.destroy)

    def start(self):
        if self.port is None:
            self.port = free_port()
        opts = (f"-c listen_addresses=127.0.0.1 -c port={self.port} "
                f"-c unix_socket_directories={self.dir} -c max_connections=200")
        subprocess.run(_as_postgres([_pg_bin("pg_ctl"), "-D", self.data, "-o", opts, "-w",
                                     "-t", "30", "-l", os.path.join(self.dir, "log"), "start"]),
                       check=True, capture_output=True)
        self.running = True

    def stop(self, mode="fast"):
        if self.running:
            subprocess.run(_as_postgres([_pg_bin("pg_ctl"), "-D", self.data, "-m", mode, "-w",
                                         "stop"]), capture_output=True)
            self.running = False

    def psql(self, sql, db="postgres"):
        return subprocess.run(_as_postgres([_pg_bin("psql"), "-h", "127.0.0.1", "-p",
                                            str(self.port), "-U", "postgres", "-d", db,
                                            "-v", "ON_ERROR_STOP=1", "-Atqc", sql]),
                              check=True, capture_output=True, text=True).stdout

    def create_database(self, name):
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def url(self, db):
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def destroy(self):
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisServer:
    def __init__(self):
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(exe):
            raise RuntimeError("redis-server not found: install the Debian package redis-server "
                               "(make test does so when run as root)")
        self.exe = exe
        self.dir = tempfile.mkdtemp(prefix="gensendrep-redis-")
        self.port = free_port()
        self.proc = None
        atexit.register(self.destroy)

    def start(self):
        if self.running:
            return
        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def flush(self):
        """Forgets every key (rate-limit windows) so a test starts from a clean slate."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(b"FLUSHALL\r\n")
            assert s.recv(16).startswith(b"+OK")

    def stop(self, kill=False):
        """Stops the server (SIGTERM, or SIGKILL with kill=True); start() brings it back on the
        same port, empty (nothing is saved)."""
        if self.proc and self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def destroy(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class NatsServer:
    """nats-server with JetStream (-js) on a free port, storing in its own temp dir, which a
    restart keeps (a stop and start is an outage, not a new server)."""

    def __init__(self, user=None, password=None):
        exe = shutil.which("nats-server") or "/usr/bin/nats-server"
        if not os.path.exists(exe):
            raise RuntimeError("nats-server not found: install the Debian package nats-server "
                               "(make test does so when run as root)")
        self.exe = exe
        self.dir = tempfile.mkdtemp(prefix="gensendrep-nats-")
        self.port = free_port()
        self.user = user
        self.password = password
        self.proc = None
        self.log = os.path.join(self.dir, "log")
        atexit.register(self.destroy)

    def start(self):
        if self.running:
            return
        cmd = [self.exe, "-a", "127.0.0.1", "-p", str(self.port), "-js",
               "-sd", os.path.join(self.dir, "js"), "-l", self.log]
        if self.user:
            cmd += ["--user", self.user, "--pass", self.password]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    if s.recv(4096).startswith(b"INFO "):
                        break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("nats-server did not start")
        # JetStream answers once its store is ready.
        from brokers import NatsClient
        while True:
            try:
                with NatsClient(self.port, self.user, self.password) as c:
                    c.request("$JS.API.INFO", b"", timeout=2)
                return
            except (OSError, TimeoutError, RuntimeError):
                if time.time() > deadline:
                    raise RuntimeError("nats-server: JetStream did not come up")
                time.sleep(0.1)

    def stop(self, kill=False):
        if self.proc and self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            self.proc.wait(15)
        self.proc = None

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def url(self, with_credentials=True):
        cred = ""
        if self.user and with_credentials:
            cred = f"{self.user}:{self.password}@"
        return f"nats://{cred}127.0.0.1:{self.port}"

    def destroy(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
