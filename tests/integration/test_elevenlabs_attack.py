"""POST /api/v1/webhook/elevenlabs and GET /api/v1/conversations/{id}/audio under attack: what a
stranger without the signing secret (or a client with an API key) can make the server do.
Both backends."""
import base64
import os
import time

from test_elevenlabs_webhook import SECRET, post, uid

FORGED = "t={},v0=" + "ab" * 32  # well-formed and fresh, but signed by nobody


def forged():
    return FORGED.format(int(time.time()))


def test_a_signature_header_does_not_bypass_the_per_ip_limit(make_server):
    """A request carrying an ElevenLabs-Signature header is limited by the endpoint once it
    knows whether the signature is good; one refused before that (wrong Content-Type, a body
    over the route's limit) must still count against the per-IP limit, like any unsigned
    request, or a stranger gets unlimited requests just by adding the header."""
    srv = make_server(env={"ELEVENLABS_WEBHOOK_SECRET": SECRET,
                           "ELEVENLABS_AUDIO_MAX_BYTES": str(64 * 1024),
                           "RATE_LIMIT_WEBHOOK_PER_MINUTE": "3"})
    body = b'{"type":"x","data":{"conversation_id":"c"}}'
    codes = [post(srv, body, sig=forged(), headers={"Content-Type": "text/plain"}).status_code
             for _ in range(5)]
    assert codes[:3] == [415, 415, 415] and codes[3:] == [429, 429], codes

    srv2 = make_server(env={"ELEVENLABS_WEBHOOK_SECRET": SECRET,
                            "ELEVENLABS_AUDIO_MAX_BYTES": str(64 * 1024),
                            "RATE_LIMIT_WEBHOOK_PER_MINUTE": "3"})
    big = (b'{"type":"post_call_audio","data":{"conversation_id":"c","full_audio":"'
           + base64.b64encode(os.urandom(80 * 1024)) + b'"}}')

    def chunks():  # chunked: no Content-Length to refuse it from the headers
        for i in range(0, len(big), 16384):
            yield big[i:i + 16384]

    codes = [post(srv2, chunks(), sig=forged()).status_code for _ in range(5)]
    assert codes[:3] == [413, 413, 413] and codes[3:] == [429, 429], codes
    # The per-IP window is spent: an unsigned request from the same address is limited too.
    assert post(srv2, body, secret=None).status_code == 429
