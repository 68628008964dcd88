"""The broker publishers (src/queue/) against a real redis-server and a real nats-server -js:
runs the unit binary build/debug/tests/test_queue with GSR_TEST_REDIS_URL / GSR_TEST_NATS_URL
set, so its server tests run instead of being skipped (under ASan + UBSan like every test)."""
import os
import subprocess

import pytest

from helpers import REPO
from services import NatsServer, RedisServer

BINARY = os.environ.get("GSR_TEST_QUEUE_BIN", str(REPO / "build" / "debug" / "tests" / "test_queue"))
DISPATCH = str(REPO / "build" / "debug" / "tests" / "test_outbound_dispatch")


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


def test_dispatcher_broker_thread_against_nats(brokers):
    """An event over the server's max_payload goes out as a stand-in with the same id (the
    broker used to stop at it for good); one that cannot be rendered is skipped."""
    _, nats = brokers
    if not os.access(DISPATCH, os.X_OK):
        pytest.fail(f"{DISPATCH} missing: run `make build/debug/tests/test_outbound_dispatch`")
    env = dict(os.environ, GSR_TEST_NATS_URL=nats.url(),
               GSR_TEST_FILTER="test_broker_publishes_a_stand_in_for_an_event_over_max_payload")
    run = subprocess.run([DISPATCH], env=env, capture_output=True, text=True, timeout=300)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    assert "SKIPPED" not in out and "1 test(s) run" in out, out[-6000:]
    assert out.count("is larger than the broker takes") == 1, out[-6000:]
    assert "cannot be rendered" in out, out[-6000:]
    assert "s3cret-do-not-print" not in out
