"""The broker publishers (src/queue/) against a real redis-server and a real nats-server -js:
runs the unit binary build/debug/tests/test_queue with GSR_TEST_REDIS_URL / GSR_TEST_NATS_URL
set, so its server tests run instead of being skipped (under ASan + UBSan like every test)."""
import os
import subprocess

import pytest

from helpers import REPO
from services import NatsServer, RedisServer

BINARY = os.environ.get("GSR_TEST_QUEUE_BIN", str(REPO / "build" / "debug" / "tests" / "test_queue"))


@pytest.fixture(scope="module")
def brokers():
    redis = RedisServer()
    redis.start()
    nats = NatsServer(user="gsr", password="s3cret-do-not-print")
    nats.start()
    yield redis, nats
    redis.destroy()
    nats.destroy()


def test_publishers_against_real_brokers(brokers):
    redis, nats = brokers
    if not os.access(BINARY, os.X_OK):
        pytest.fail(f"{BINARY} missing: run `make build/debug/tests/test_queue`")
    env = dict(os.environ, GSR_TEST_REDIS_URL=redis.url() + "/3",
               GSR_TEST_NATS_URL=nats.url())
    run = subprocess.run([BINARY], env=env, capture_output=True, text=True, timeout=300)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    assert "SKIPPED" not in out, out[-6000:]
    assert "s3cret-do-not-print" not in out
