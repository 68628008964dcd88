"""The durability promise under a crash: drive concurrent webhooks, kill -9 the server mid-
stream, restart it on the same database, and every conversation that was answered 2xx is there,
byte for byte as it was sent. Runs on every backend."""
import threading
import time
import uuid

from helpers import new_session


def _raw_body(i, tag):
    """A webhook body built from known raw parts, so the bytes of each part can be compared."""
    cid = f"crash-{tag}-{i}"
    transcript = (
        '[\n  {"timestamp": "2024-01-15T10:30:00.250+01:00", "speaker": "user",\n'
        f'   "content": "n\\u00b0{i}: caf\u00e9 \\"quoted\\" \\\\ tab\\t 😀", "messageId": "m1",\n'
        '   "metadata": {"confidence": 0.93, "big": 12345678901234567890123}},\n'
        '  {"timestamp": "2024-01-15T09:31:00Z", "speaker": "agent", "content": "", '
        '"messageId": "m2"}\n]')
    metadata = ('{"sessionId": null, "agentId": "agent_01", "duration": %d, "messageCount": 2,'
                ' "platform": "web", "userAgent": "Mozilla/5.0", "extra": [1.0, 2e3, -0]}' % i)
    summary = '{"text": "r\u00e9sum\u00e9", "score": 1.50}'
    body = ('{"emailId": "crash-%s@example.com", "accountId": "acc", "conversationId": "%s",'
            ' "transcript": %s, "metadata": %s, "summary": %s}' % (tag, cid, transcript, metadata,
                                                                 summary))
    return cid, body.encode("utf-8"), {"transcript": transcript, "metadata": metadata,
                                       "summary": summary}


def test_kill9_mid_stream_loses_no_acknowledged_byte(make_server):
    srv = make_server()
    tag = uuid.uuid4().hex[:10]
    acked, lock = [], threading.Lock()
    stop = threading.Event()

    def worker(w):
        session = new_session()
        for i in range(w * 100000, w * 100000 + 5000):
            if stop.is_set():
                return
            cid, raw, parts = _raw_body(i, tag)
            try:
                r = srv.post_raw(raw, session=session, timeout=10)
            except Exception:  # noqa: BLE001 - the server is gone
                return
            if r.status_code == 200:
                with lock:
                    acked.append((cid, parts))

    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(12)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while len(acked) < 400 and time.monotonic() < deadline:
        time.sleep(0.01)
    srv.kill9()
    stop.set()
    for t in threads:
        t.join(30)
    assert len(acked) >= 400, f"only {len(acked)} acknowledged before the kill"
    srv.start()
    for cid, parts in acked:
        r = srv.get_conv(cid, include=True)
        assert r.status_code == 200, (cid, r.status_code)
        text = r.content.decode("utf-8")
        for name, raw in parts.items():
            assert f'"{name}":{raw}' in text, (cid, name)
