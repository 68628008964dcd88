"""Fixtures for the black-box suite.

- `backend`: every test runs once per storage backend in BACKENDS.
- `server`: one server per test module and backend, shared by tests that do not interfere
  (each uses fresh conversationIds).
- `make_server`: a factory for tests that need their own configuration (rate limits, CORS,
  body limits) or that stop/kill the process. Every server is checked at teardown: no
  AddressSanitizer/UBSan/LeakSanitizer report in its stderr, exit code 0 after each SIGTERM.
"""
import os

import pytest

from helpers import BINARY, Server, finish_server

# Storage backends the whole suite runs against (DATABASE_URL builders: helpers.DATABASE_URL_FOR).
BACKENDS = ["sqlite", "postgres"]


def pytest_report_header(config):
    return f"gensendrep binary: {BINARY}"


def pytest_configure(config):
    config.addinivalue_line("markers", "backends(*names): run only against these storage backends")


def _backend_of(item):
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("backend") if callspec else None


def pytest_collection_modifyitems(config, items):
    # Tests about one backend's own failure modes run only for it.
    keep, drop = [], []
    for item in items:
        marker = item.get_closest_marker("backends")
        backend = _backend_of(item)
        (drop if marker and backend and backend not in marker.args else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
    # A missing binary is an error, not a reason to skip: CI must never pass on an empty run.
    if items and not config.option.collectonly and not os.access(BINARY, os.X_OK):
        pytest.exit(f"gensendrep binary {BINARY} not found or not executable: run `make debug` "
                    "or set GENSENDREP_BIN", returncode=4)


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture(scope="module")
def server(backend, tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp(f"shared-{backend}"), backend=backend)
    srv.start()
    yield srv
    finish_server(srv)


@pytest.fixture
def make_server(backend, tmp_path_factory):
    """make_server(env={...}, start=True, workdir=None) -> started Server with its own workdir
    and database (unless workdir is given)."""
    made = []

    def factory(env=None, start=True, workdir=None, **kw):
        wd = workdir or tmp_path_factory.mktemp(f"srv-{backend}")
        srv = Server(wd, backend=backend, env=env, **kw)
        made.append(srv)
        if start:
            srv.start()
        return srv

    yield factory
    errors = []
    for srv in made:
        try:
            finish_server(srv)
        except AssertionError as e:
            errors.append(str(e))
    assert not errors, "\n\n".join(errors)
