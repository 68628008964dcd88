"""The ElevenLabs webhook when the disk is full (a real tmpfs filled to ENOSPC, as in
test_disk_full.py): an event that cannot be kept is answered 503 with Retry-After, which
ElevenLabs retries, stores nothing, and is accepted once space is back."""
import base64
import json
import os
import time

import pytest

from helpers import assert_error
from test_disk_full import _fill, tiny_fs  # noqa: F401 (fixture)
from test_elevenlabs_webhook import SECRET, accepted, get_audio, get_conv, post, uid, \
    with_conversation_id


def _audio_event(cid, mp3):
    return (b'{"type":"post_call_audio","event_timestamp":1,"data":{"conversation_id":"'
            + cid.encode() + b'","full_audio":"' + base64.b64encode(mp3) + b'"}}')


def test_audio_spool_on_a_full_disk_is_503_then_accepted(make_server, tiny_fs):  # noqa: F811
    srv = make_server(env={"ELEVENLABS_WEBHOOK_SECRET": SECRET, "TMPDIR": str(tiny_fs)})
    filler = _fill(tiny_fs)
    cid = "conv_" + uid()
    mp3 = os.urandom(2 * 1024 * 1024)
    body = _audio_event(cid, mp3)
    r = post(srv, body)
    assert_error(r, 503, "SERVICE_UNAVAILABLE")
    assert r.headers.get("Retry-After") == "1"
    assert get_audio(srv, cid).status_code == 404
    filler.unlink()
    accepted(post(srv, body), cid)  # ElevenLabs' retry
    assert get_audio(srv, cid).content == mp3


@pytest.mark.backends("sqlite")
def test_event_on_a_full_database_disk_is_503_then_accepted(make_server, tiny_fs):  # noqa: F811
    srv = make_server(env={"ELEVENLABS_WEBHOOK_SECRET": SECRET},
                      database_url=f"sqlite:{tiny_fs}/db.sqlite")
    filler = _fill(tiny_fs)
    refused = []
    for _ in range(200):  # until the database really needs a new page
        cid = "conv_" + uid()
        body = with_conversation_id("post_call_transcription_success.json", cid)
        r = post(srv, body)
        if r.status_code == 503:
            assert r.headers.get("Retry-After") == "1"
            refused.append((cid, body))
            if len(refused) >= 3:
                break
        else:
            accepted(r, cid)
    assert refused, "the full disk was never hit"
    for cid, _ in refused:
        assert get_conv(srv, cid).status_code == 404
    filler.unlink()
    deadline = time.monotonic() + 30
    for cid, body in refused:
        while True:
            r = post(srv, body)
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        accepted(r, cid)
        assert json.loads(get_conv(srv, cid).text)["conversationId"] == cid
