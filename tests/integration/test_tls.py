"""Native TLS (TLS_CERT_FILE, TLS_KEY_FILE): HTTPS with a test CA made here by openssl, TLS 1.2
and 1.3 only, plain HTTP on the HTTPS port answered with nothing, start-up errors naming the
variable, and SIGHUP renewals: new connections get the new certificate, no request fails
meanwhile, and a broken renewal keeps the certificate in use."""
import base64
import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
import warnings

import pytest
import requests

from helpers import KEY1, free_port, make_conv, run_binary

TLS_ENV = ("TLS_CERT_FILE", "TLS_KEY_FILE")


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


class Pki:
    """A test CA and leaf certificates for 127.0.0.1 signed by it, in a temporary directory."""

    def __init__(self, path):
        self.dir = path
        self.ca = path / "ca.pem"
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=gensendrep test CA",
                 cwd=path)

    def leaf(self, name, serial, key_type="ec"):
        """Writes NAME.pem (the certificate, then the CA: a chain) and NAME.key; returns them."""
        newkey = (["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] if key_type == "ec"
                  else ["-newkey", "rsa:2048"])
        _openssl("req", "-new", *newkey, "-nodes", "-keyout", f"{name}.key", "-out",
                 f"{name}.csr", "-subj", "/CN=127.0.0.1", cwd=self.dir)
        ext = self.dir / f"{name}.ext"
        ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-set_serial", str(serial), "-days", "2", "-extfile", ext.name, "-out",
                 f"{name}.crt", cwd=self.dir)
        chain = self.dir / f"{name}.pem"
        chain.write_bytes((self.dir / f"{name}.crt").read_bytes() + self.ca.read_bytes())
        return chain, self.dir / f"{name}.key"


def _install(src, dst):
    """Replaces dst by src's content atomically (as certbot's symlink switch would)."""
    tmp = dst.with_name(dst.name + ".new")
    tmp.write_bytes(src.read_bytes())
    os.replace(tmp, dst)


@pytest.fixture
def pki(tmp_path):
    d = tmp_path / "pki"
    d.mkdir()
    return Pki(d)


@pytest.fixture
def tls_server(make_server, pki, tmp_path):
    """A server on HTTPS with leaf "one" (serial 1001) installed as live/cert.pem and key.pem."""
    live = tmp_path / "live"
    live.mkdir()
    cert, key = pki.leaf("one", 1001)
    _install(cert, live / "cert.pem")
    _install(key, live / "key.pem")
    srv = make_server(env={"TLS_CERT_FILE": live / "cert.pem", "TLS_KEY_FILE": live / "key.pem"},
                      tls_ca=pki.ca)
    srv.live = live
    return srv


def _served_certificate(port, ca):
    """The DER certificate a new TLS connection gets (verified against the test CA)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            return s.getpeercert(binary_form=True)


def _der(pem_path):
    text = pem_path.read_text()
    first = text[:text.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")]
    return ssl.PEM_cert_to_DER_cert(first)


def _handshake(port, version, ca=None):
    """The negotiated version of a handshake limited to `version`, or the ssl/OS error."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = version
        ctx.maximum_version = version
    if ca:
        ctx.load_verify_locations(str(ca))
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if version < ssl.TLSVersion.TLSv1_2:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # else OpenSSL 3 refuses to offer TLS 1.1 at all
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                return s.version()
        except (ssl.SSLError, OSError) as e:
            return e


def _wait_log(srv, text, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(text in r.get("msg", "") for r in srv.log_records()):
            return
        time.sleep(0.05)
    raise AssertionError(f"no log line with {text!r}:\n{srv.stderr_text()[-3000:]}")


def test_https_health_and_webhook_round_trip(tls_server):
    r = tls_server.get("/api/v1/health", key=None)
    assert r.status_code == 200, r.text
    assert r.url.startswith("https://")
    body = make_conv()
    r = tls_server.post_conv(body)
    assert r.status_code == 200, r.text
    g = tls_server.get_conv(body["conversationId"], include=True)
    assert g.status_code == 200, g.text
    got = g.json()
    assert got["conversationId"] == body["conversationId"]
    assert got["transcript"][0]["content"] == body["transcript"][0]["content"]
    assert any("(HTTPS)" in r.get("msg", "") for r in tls_server.log_records())


def test_tls_1_2_and_1_3_accepted(tls_server):
    assert _handshake(tls_server.port, ssl.TLSVersion.TLSv1_2, tls_server.tls_ca) == "TLSv1.2"
    assert _handshake(tls_server.port, ssl.TLSVersion.TLSv1_3, tls_server.tls_ca) == "TLSv1.3"


def test_tls_1_1_and_1_0_refused(tls_server, pki):
    # Control: this client does speak TLS 1.1 to a server that allows it, so the refusal below
    # is gensendrep's.
    cert, key = pki.leaf("control", 3001)
    port = free_port()
    control = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(cert), "-key",
         str(key), "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0", "-www", "-quiet"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "openssl s_server did not start"
                time.sleep(0.05)
        assert _handshake(port, ssl.TLSVersion.TLSv1_1) == "TLSv1.1"
    finally:
        control.terminate()
        control.wait(10)
    for version in (ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1):
        res = _handshake(tls_server.port, version)
        assert isinstance(res, Exception), f"{version.name} was accepted: {res}"
    assert tls_server.get("/api/v1/health", key=None).status_code == 200


def test_plain_http_on_https_port_gets_no_answer(tls_server):
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", tls_server.port), timeout=10) as s:
            s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            data = b""
            try:
                while True:  # until the server closes; the timeout fails the test
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            except ConnectionResetError:
                pass
            assert not data.startswith(b"HTTP/"), data[:200]
    r = tls_server.get("/api/v1/health", key=None)
    assert r.status_code == 200
    assert tls_server.running


def _start_error(tmp_path, env):
    r = run_binary([], cwd=tmp_path, env_overrides=env, timeout=30)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    return r.returncode, lines, r.stderr


def test_startup_errors_name_the_variable(pki, tmp_path):
    cert, key = pki.leaf("good", 1101)
    _other_cert, other_key = pki.leaf("other", 1102)
    key_text = other_key.read_text()
    missing = tmp_path / "no-such-file.pem"

    rc, lines, _ = _start_error(tmp_path, {"TLS_CERT_FILE": missing, "TLS_KEY_FILE": key})
    assert rc == 2 and len(lines) == 1, lines
    assert "TLS_CERT_FILE" in lines[0] and "No such file" in lines[0], lines

    secret_path = tmp_path / "secret-name.key"
    rc, lines, _ = _start_error(tmp_path, {"TLS_CERT_FILE": cert, "TLS_KEY_FILE": secret_path})
    assert rc == 2 and len(lines) == 1, lines
    assert "TLS_KEY_FILE" in lines[0] and "secret-name" not in lines[0], lines

    # A key that is not the certificate's: refused, naming the variable, never the key.
    rc, lines, err = _start_error(tmp_path, {"TLS_CERT_FILE": cert, "TLS_KEY_FILE": other_key})
    assert rc == 2 and len(lines) == 1, lines
    assert "TLS_KEY_FILE" in lines[0] and "does not belong" in lines[0], lines
    body = "".join(key_text.splitlines()[1:-1])
    assert body[:40] not in err.replace("\n", "")

    # The key's content put into the variable by mistake never comes back out.
    rc, lines, err = _start_error(tmp_path, {"TLS_CERT_FILE": cert, "TLS_KEY_FILE": key_text})
    assert rc == 2 and len(lines) == 1 and "TLS_KEY_FILE" in lines[0], lines
    assert "PRIVATE KEY" not in err and body[:40] not in err.replace("\n", "")

    # Nor does it when put into TLS_CERT_FILE.
    rc, lines, err = _start_error(tmp_path, {"TLS_CERT_FILE": key_text, "TLS_KEY_FILE": key})
    assert rc == 2 and len(lines) == 1 and "TLS_CERT_FILE" in lines[0], lines
    assert "PRIVATE KEY" not in err and body[:40] not in err.replace("\n", "")

    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    rc, lines, _ = _start_error(tmp_path, {"TLS_CERT_FILE": garbage, "TLS_KEY_FILE": key})
    assert rc == 2 and len(lines) == 1 and "TLS_CERT_FILE" in lines[0], lines

    rc, lines, _ = _start_error(tmp_path, {"TLS_CERT_FILE": cert, "TLS_KEY_FILE": None})
    assert rc == 2 and "TLS_KEY_FILE" in "".join(lines), lines


def test_sighup_renewal_serves_new_certificate_without_failures(tls_server, pki):
    srv = tls_server
    one = srv.live / "cert.pem"
    assert _served_certificate(srv.port, pki.ca) == _der(one)
    # A connection established before the renewal keeps working after it.
    kept = srv.new_session()
    assert kept.get(srv.url("/api/v1/health"), timeout=10).status_code == 200

    failures, done, counts = [], threading.Event(), [0]

    def hammer():
        while not done.is_set():
            try:
                with requests.Session() as s:  # a new connection, so a new handshake, each time
                    s.trust_env = False
                    r = s.get(srv.url("/api/v1/health"), verify=str(pki.ca), timeout=10,
                              headers={"Connection": "close"})
                if r.status_code != 200:
                    failures.append(r.status_code)
            except requests.RequestException as e:
                failures.append(repr(e))
            counts[0] += 1

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        cert2, key2 = pki.leaf("two", 1002, key_type="rsa")  # a new key too, of another type
        _install(key2, srv.live / "key.pem")
        _install(cert2, srv.live / "cert.pem")
        before = counts[0]
        srv.proc.send_signal(signal.SIGHUP)
        _wait_log(srv, "TLS certificate and key reloaded")
        deadline = time.monotonic() + 10
        while _served_certificate(srv.port, pki.ca) != _der(cert2):
            assert time.monotonic() < deadline, "the renewed certificate is not served"
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        done.set()
        for t in threads:
            t.join(30)
    assert not failures, failures[:5]
    assert counts[0] > before, "no request was made during the reload"
    assert kept.get(srv.url("/api/v1/health"), timeout=10).status_code == 200
    kept.close()
    body = make_conv()
    assert srv.post_conv(body).status_code == 200
    assert srv.get_conv(body["conversationId"]).status_code == 200
    assert srv.running


def test_sighup_with_broken_renewal_keeps_old_certificate(tls_server, pki):
    srv = tls_server
    one = _der(srv.live / "cert.pem")
    (srv.live / "cert.pem").write_text("-----BEGIN CERTIFICATE-----\nbroken\n")
    srv.proc.send_signal(signal.SIGHUP)
    _wait_log(srv, "TLS reload failed")
    assert _served_certificate(srv.port, pki.ca) == one
    assert srv.get("/api/v1/health", key=None).status_code == 200

    # A half-done renewal (new certificate, old key) is refused too.
    cert3, _key3 = pki.leaf("three", 1003)
    _install(cert3, srv.live / "cert.pem")
    srv.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while sum("does not belong" in r.get("msg", "") for r in srv.log_records()) < 1:
        assert time.monotonic() < deadline, srv.stderr_text()[-2000:]
        time.sleep(0.05)
    assert _served_certificate(srv.port, pki.ca) == one
    # Once the key arrives, the next SIGHUP takes both.
    _install(_key3, srv.live / "key.pem")
    srv.proc.send_signal(signal.SIGHUP)
    _wait_log(srv, "TLS certificate and key reloaded")
    assert _served_certificate(srv.port, pki.ca) == _der(cert3)
    assert srv.get("/api/v1/health", key=None).status_code == 200


def test_sighup_without_tls_is_harmless(make_server):
    srv = make_server()
    srv.proc.send_signal(signal.SIGHUP)
    _wait_log(srv, "nothing to reload")
    assert srv.get("/api/v1/health", key=None).status_code == 200
    assert srv.url("/").startswith("http://")


def test_readme_openssl_checks(tls_server):
    """The commands README "Security" names: TLS 1.1 refused, 1.2 and 1.3 accepted."""
    def s_client(*args):
        r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{tls_server.port}",
                            "-CAfile", str(tls_server.tls_ca), *args], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=30)
        return r.returncode, r.stdout + r.stderr

    rc, out = s_client("-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    assert rc != 0 and "Cipher is (NONE)" in out, out[-2000:]
    for flag, name in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
        rc, out = s_client(flag)
        assert rc == 0 and f"New, {name}, Cipher is" in out, out[-2000:]
        assert "Verify return code: 0 (ok)" in out, out[-2000:]


def test_stalled_handshake_is_cut(make_server, pki, tmp_path):
    """A client that never finishes its handshake is cut by the header timeout (what bounds the
    life of a replaced certificate, see src/http/tls.c)."""
    cert, key = pki.leaf("slow", 1201)
    srv = make_server(env={"TLS_CERT_FILE": cert, "TLS_KEY_FILE": key,
                           "HEADER_TIMEOUT_SECONDS": "1"}, tls_ca=pki.ca)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=15) as s:
        s.sendall(b"\x16\x03\x01\x00\x80\x01\x00\x00\x7c\x03\x03")  # the start of a ClientHello
        start = time.monotonic()
        try:
            assert s.recv(100) == b""
        except ConnectionResetError:
            pass
        assert time.monotonic() - start < 10
    assert srv.get("/api/v1/health", key=None).status_code == 200


def test_sighup_during_shutdown_is_ignored(tls_server):
    """SIGTERM's graceful shutdown goes on undisturbed by a SIGHUP: the request in flight is
    answered and the exit code is 0 (a SIGHUP is not a second stop signal)."""
    srv = tls_server
    ctx = ssl.create_default_context(cafile=str(srv.tls_ca))
    body = json.dumps(make_conv()).encode()
    half = len(body) // 2
    head = (f"POST /api/v1/webhook/conversation HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {KEY1}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=15) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(head + body[:half])
            time.sleep(0.3)
            srv.send_signal(signal.SIGTERM)
            _wait_log(srv, "finishing in-flight requests")
            srv.proc.send_signal(signal.SIGHUP)
            time.sleep(0.5)
            assert srv.running, srv.stderr_text()[-2000:]
            s.sendall(body[half:])
            answer = b""
            while b"\r\n\r\n" not in answer:
                chunk = s.recv(4096)
                if not chunk:
                    break
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert srv.stop() == 0
    assert not any("SIGHUP" in r.get("msg", "") for r in srv.log_records())


def test_elevenlabs_audio_streams_over_https(make_server, pki):
    """ElevenLabs posts only to https://: a signed audio webhook streamed in chunks over TLS is
    stored, and its audio read back whole and by range over TLS."""
    from test_elevenlabs_webhook import PATH, SECRET, accepted, signature
    cert, key = pki.leaf("el", 1301)
    srv = make_server(env={"TLS_CERT_FILE": cert, "TLS_KEY_FILE": key,
                           "ELEVENLABS_WEBHOOK_SECRET": SECRET}, tls_ca=pki.ca)
    mp3 = os.urandom(3 * 1024 * 1024)
    cid = f"conv_{os.urandom(8).hex()}"
    head = json.dumps({"type": "post_call_audio", "event_timestamp": int(time.time()),
                       "data": {"agent_id": "agent_x", "conversation_id": cid,
                                "full_audio": ""}})[:-3].encode()  # up to the opening quote
    whole = head + base64.b64encode(mp3) + b'"}}'

    def chunks(size=64 * 1024):
        for i in range(0, len(whole), size):
            yield whole[i:i + size]

    h = {"Content-Type": "application/json", "ElevenLabs-Signature": signature(whole)}
    r = srv.session.post(srv.url(PATH), data=chunks(), headers=h, timeout=60)
    accepted(r, cid)
    audio = f"/api/v1/conversations/{cid}/audio"
    r = srv.get(audio, timeout=60)
    assert r.status_code == 200 and r.content == mp3
    r = srv.get(audio, headers={"Range": "bytes=1000-99999"})
    assert r.status_code == 206 and r.content == mp3[1000:100000]
