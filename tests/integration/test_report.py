"""GET /api/v1/conversations/{conversation_id}/report: a printable HTML page of one conversation
(who, when, how long, status, the summary/analysis, the transcript as a dialogue with times, the
audio link). Everything a client sent stays text: the page is parsed with html.parser and must
hold no script element, no event handler attribute and no javascript: link, with the hostile
text shown as written. Errors are JSON like GET one. Both backends, on an encrypted store
(ENCRYPTION_KEYS) and a plain one."""
import base64
import hashlib
import hmac
import json
import socket
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote, unquote

import pytest

from helpers import KEY1, Server, assert_error, finish_server, make_conv, run_binary, uid

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "elevenlabs"
SECRET = "wsec_report_0123456789abcdef0123456789abcdef0123456789abcdef01234567"
SEALED = "k1:" + base64.b64encode(hashlib.sha256(b"report test key").digest()).decode()
EL_ENV = {"ELEVENLABS_WEBHOOK_SECRET": SECRET, "RATE_LIMIT_ELEVENLABS_PER_MINUTE": "1000000"}

# The only elements the page is made of: anything else (script, iframe, object, img, form, a
# stray tag from the data) fails the test.
ALLOWED_TAGS = {"html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "h3", "p",
                "main", "section", "dl", "dt", "dd", "span", "time", "a", "ol", "li", "code",
                "strong", "div", "table", "thead", "tbody", "tr", "th", "td", "bdi"}
VOID = {"meta", "link", "br", "img", "input", "hr", "source", "wbr", "area", "base", "col",
        "embed", "param", "track"}


# ------------------------------------------------------------------ a small DOM
class Node:
    def __init__(self, tag, attrs, parent):
        self.tag, self.attrs, self.parent, self.children = tag, dict(attrs), parent, []

    def text(self):
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def iter(self):
        for c in self.children:
            if isinstance(c, Node):
                yield c
                yield from c.iter()

    def find_all(self, tag, cls=None):
        return [n for n in self.iter() if n.tag == tag and
                (cls is None or cls in (n.attrs.get("class") or "").split())]

    def find(self, tag, cls=None):
        found = self.find_all(tag, cls)
        return found[0] if found else None


class Page(HTMLParser):
    def __init__(self, html):
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", [], None)
        self.cur = self.root
        self.tags = []  # every start tag with its attributes, in order
        self.doctype = None
        self.feed(html)
        self.close()

    def handle_decl(self, decl):
        self.doctype = decl

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, attrs))
        node = Node(tag, attrs, self.cur)
        self.cur.children.append(node)
        if tag not in VOID:
            self.cur = node

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, attrs))
        self.cur.children.append(Node(tag, attrs, self.cur))

    def handle_endtag(self, tag):
        n = self.cur
        while n is not self.root and n.tag != tag:
            n = n.parent
        assert n is not self.root, f"</{tag}> closes nothing open"
        assert n is self.cur, f"</{tag}> closes <{self.cur.tag}> implicitly"
        self.cur = n.parent

    def handle_data(self, data):
        self.cur.children.append(data)

    def facts(self):
        """The Details list: {label: dd node}."""
        dl = self.root.find("dl", "facts")
        dts, dds = dl.find_all("dt"), dl.find_all("dd")
        assert len(dts) == len(dds)
        return {dt.text(): dd for dt, dd in zip(dts, dds)}

    def turns(self):
        """The transcript: [(speaker, datetime or None, time text, offset, text)]."""
        out = []
        for li in self.root.find_all("li", "turn"):
            t = li.find("time")
            off = li.find("span", "offset")
            out.append((li.find("span", "speaker").text(), t.attrs["datetime"] if t else None,
                        t.text() if t else None, off.text() if off else None,
                        li.find("p", "text").text()))
        return out


def check_safe(page, cid):
    """Structure every report must have, and nothing that could run; the only link is the
    conversation's own audio, with no dot segment a browser would resolve elsewhere."""
    assert page.doctype and page.doctype.lower() == "doctype html"
    assert page.cur is page.root, "an element was left open"
    html = page.root.find("html")
    assert html.attrs.get("lang") == "en"
    for tag, attrs in page.tags:
        assert tag in ALLOWED_TAGS, f"unexpected element <{tag}>"
        for name, value in attrs:
            assert not name.startswith("on"), (tag, name)
            assert name in {"lang", "charset", "name", "content", "class", "id", "datetime",
                            "href", "type", "title", "aria-labelledby", "scope", "role"}, name
            if name == "href":
                assert value == "/api/v1/conversations/" + quote(cid, safe="") + "/audio", value
                segments = [unquote(seg) for seg in value.split("/")]
                assert "." not in segments and ".." not in segments, value
    assert not page.root.find_all("script")
    assert len(page.root.find_all("h1")) == 1
    assert [h.text() for h in page.root.find_all("h2")][0] == "Details"


def check_headers(r):
    assert r.status_code == 200, r.text[:500]
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"
    csp = r.headers["Content-Security-Policy"]
    directives = {d.split()[0]: d.split()[1:] for d in csp.split(";") if d.strip()}
    assert directives["default-src"] == ["'none'"]
    assert "script-src" not in directives  # default-src 'none' applies: no script at all
    assert directives["style-src"] == ["'unsafe-inline'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Cache-Control"] == "no-store"
    assert r.content.decode("utf-8")  # valid UTF-8


def report(srv, cid, key=KEY1, **kw):
    return srv.get("/api/v1/conversations/" + quote(cid, safe="") + "/report", key=key, **kw)


def read_page(srv, cid, **kw):
    r = report(srv, cid, **kw)
    check_headers(r)
    page = Page(r.text)
    check_safe(page, cid)
    return page


def signature(body, secret=SECRET):
    t = int(time.time())
    mac = hmac.new(secret.encode(), str(t).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={t},v0={mac}"


def el_post(srv, name, cid):
    raw = (FIXTURES / name).read_bytes()
    body = raw.replace(json.loads(raw)["data"]["conversation_id"].encode(), cid.encode())
    r = srv.request("POST", "/api/v1/webhook/elevenlabs", key=None, data=body,
                    headers={"Content-Type": "application/json",
                             "ElevenLabs-Signature": signature(body)})
    assert r.status_code == 200, r.text[:500]


def cli_key(srv, *args):
    r = run_binary(["keys", "create", *args], cwd=srv.workdir,
                   env_overrides={"DATABASE_URL": srv.database_url,
                                  "ENCRYPTION_KEYS": srv.env_overrides.get("ENCRYPTION_KEYS")},
                   timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.fixture(scope="module")
def sealed(backend, tmp_path_factory):
    """A server whose store is encrypted at rest, with ElevenLabs signatures configured."""
    srv = Server(tmp_path_factory.mktemp(f"report-{backend}"), backend=backend,
                 env={**EL_ENV, "ENCRYPTION_KEYS": SEALED})
    srv.start()
    yield srv
    finish_server(srv)


# ------------------------------------------------------------------ seed-shaped conversations
def check_seed_page(srv):
    body = make_conv(summary={"outcome": "resolved", "score": 0.1, "tags": ["billing", "refund"]})
    body["transcript"][1]["content"] = "Sure,\nwhat is the problem?"
    assert srv.post_conv(body).status_code == 200
    cid = body["conversationId"]
    page = read_page(srv, cid)
    assert cid in page.root.find("title").text()
    f = page.facts()
    assert f["Conversation"].text() == cid
    assert f["Email"].text() == "user@example.com"
    assert f["Account"].text() == "acc123"
    assert f["Agent"].text() == "agent_01jxn7fwb2eyq8p6k4m3en4xtm"
    assert f["Platform"].text() == "web"
    assert f["Status"].text() == "completed"
    assert "Failure reason" not in f
    assert f["Started"].find("time").attrs["datetime"] == "2024-01-15T10:30:00Z"
    assert f["Started"].text() == "2024-01-15 10:30:00 UTC"
    assert f["Ended"].find("time").attrs["datetime"] == "2024-01-15T10:35:00Z"
    assert f["Duration"].text() == "5 min 0 s"
    assert f["Messages"].text() == "2"
    assert f["Processed"].find("time") is not None
    assert f["Audio"].text() == "none stored" and not f["Audio"].find("a")
    assert page.turns() == [
        ("User", "2024-01-15T10:30:00Z", "2024-01-15 10:30:00 UTC", "+0:00", "Hello, I need help"),
        ("Agent", "2024-01-15T10:31:00Z", "2024-01-15 10:31:00 UTC", "+1:00",
         "Sure,\nwhat is the problem?"),
    ]
    summary = page.root.find("h2", None)
    headings = [h.text() for h in page.root.find_all("h2")]
    assert headings == ["Details", "Summary", "Transcript"], (headings, summary)
    sec = [s for s in page.root.find_all("section") if s.find("h2").text() == "Summary"][0]
    labels = {dt.text(): dd.text() for dt, dd in zip(sec.find_all("dt"), sec.find_all("dd"))}
    assert labels == {"outcome": "resolved", "score": "0.1", "tags": '["billing","refund"]'}


def test_seed_conversation_on_an_encrypted_store(sealed):
    check_seed_page(sealed)


def test_seed_conversation_on_a_plain_store(make_server):
    check_seed_page(make_server())


def test_the_seed_example_without_summary_and_an_empty_transcript(sealed):
    cid = "conv_" + uid()
    body = make_conv(cid, transcript=[])
    assert sealed.post_conv(body).status_code == 200
    page = read_page(sealed, cid)
    f = page.facts()
    assert f["Started"].text() == "unknown" and f["Ended"].text() == "unknown"
    assert [h.text() for h in page.root.find_all("h2")] == ["Details", "Transcript"]
    assert page.turns() == []
    assert "No messages." in page.root.text()


def test_numbers_are_shown_with_the_digits_sent(sealed):
    """One integer beyond 64 bits changes no other number on the page: each shows its digits as
    sent (no rounding to 15 digits, 5 is not 5.0)."""
    body = make_conv(summary={"big": "@BIG@", "real": "@REAL@", "five": "@FIVE@",
                              "nested": {"n": "@FIVE@", "r": "@REAL@", "b": ["@BIG@"]}})
    raw = json.dumps(body).replace('"@BIG@"', "123456789012345678901") \
        .replace('"@REAL@"', "0.30000000000000004").replace('"@FIVE@"', "5")
    assert sealed.post_conv(raw).status_code == 200
    page = read_page(sealed, body["conversationId"])
    sec = [s for s in page.root.find_all("section") if s.find("h2").text() == "Summary"][0]
    labels = {dt.text(): dd.text() for dt, dd in zip(sec.find_all("dt"), sec.find_all("dd"))}
    assert labels == {"big": "123456789012345678901", "real": "0.30000000000000004", "five": "5",
                      "nested": '{"n":5,"r":0.30000000000000004,"b":[123456789012345678901]}'}


# ------------------------------------------------------------------ ElevenLabs
def test_elevenlabs_conversation_with_analysis_and_audio(sealed):
    cid = "conv_" + uid()
    el_post(sealed, "post_call_transcription_success.json", cid)
    event = json.loads((FIXTURES / "post_call_transcription_success.json").read_text())["data"]
    analysis = event["analysis"]
    page = read_page(sealed, cid)
    f = page.facts()
    assert f["Agent"].text() == event["agent_id"]
    assert f["Platform"].text() == "elevenlabs"
    assert f["Status"].text() == "completed"
    assert f["Duration"].text() == "1 min 44 s"
    assert f["Messages"].text() == str(len(event["transcript"]))
    start = event["metadata"]["start_time_unix_secs"]
    assert f["Started"].find("time").attrs["datetime"] == \
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start))
    assert f["Audio"].text() == "none stored"

    sec = [s for s in page.root.find_all("section") if s.find("h2").text() == "Summary"][0]
    text = sec.text()
    assert analysis["call_summary_title"] in text
    assert analysis["transcript_summary"] in text
    assert "Call outcome: success" in text
    rows = {tr.find("th").text(): [td.text() for td in tr.find_all("td")]
            for tr in sec.find_all("tr") if tr.find("td")}
    for name, res in analysis["evaluation_criteria_results"].items():
        assert rows[name] == [res["result"], res["rationale"]]
    for name, res in analysis["data_collection_results"].items():
        want = res["value"] if isinstance(res["value"], str) else json.dumps(res["value"])
        assert rows[name] == [want, res["rationale"]]
    assert rows["refund_amount_usd"][0] == "49.0" and rows["email_confirmed"][0] == "true"

    turns = page.turns()
    assert len(turns) == len(event["transcript"])
    for got, want in zip(turns, event["transcript"]):
        speaker, dt, _, offset, text = got
        assert speaker == {"agent": "Agent", "user": "User"}[want["role"]]
        secs = int(want["time_in_call_secs"])
        assert dt == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start + secs))
        assert offset == f"+{secs // 60}:{secs % 60:02d}"
        assert text == want["message"]

    # the audio arrives: the page links to it, and the link serves it
    el_post(sealed, "post_call_audio_small.json", cid)
    page = read_page(sealed, cid)
    link = page.facts()["Audio"].find("a")
    assert link.attrs["href"] == f"/api/v1/conversations/{cid}/audio"
    audio = sealed.get(link.attrs["href"])
    assert audio.status_code == 200 and audio.headers["Content-Type"] == "audio/mpeg"
    assert f"{len(audio.content)} bytes" in link.text()


def test_dot_ids_show_the_audio_path_as_text(sealed):
    """A link to /api/v1/conversations/../audio would lead to /api/v1/audio: for the ids "."
    and ".." the audio path is text; "..." is no dot segment and keeps its link."""
    for cid in (".", "..", "..."):
        el_post(sealed, "post_call_transcription_success.json", cid)
        el_post(sealed, "post_call_audio_small.json", cid)
        path = "/api/v1/conversations/" + cid.replace(".", "%2E") + "/report"
        r = sealed.get(path)
        check_headers(r)
        page = Page(r.text)
        check_safe(page, cid)
        assert page.facts()["Conversation"].text() == cid
        audio = page.facts()["Audio"]
        if cid == "...":
            assert audio.find("a").attrs["href"] == "/api/v1/conversations/.../audio"
        else:
            assert not audio.find("a"), r.text
            assert audio.find("code").text() == f"/api/v1/conversations/{cid}/audio"


def test_elevenlabs_failed_call_shows_the_reason(sealed):
    cid = "conv_" + uid()
    el_post(sealed, "call_initiation_failure_sip.json", cid)
    page = read_page(sealed, cid)
    f = page.facts()
    assert f["Status"].text() == "failed"
    assert f["Failure reason"].text() == "busy"
    assert f["Duration"].text() == "0 s"
    assert [h.text() for h in page.root.find_all("h2")] == ["Details", "Transcript"]


# ------------------------------------------------------------------ escaping
HOSTILE = "<script>alert(1)</script>"


def test_script_in_every_field_stays_text(sealed):
    cid = f"conv_{uid()}_<script>x</script> & \"q\" 'a'"
    email = '"><script>alert("email")</script>@example.com'
    account = "<img src=x onerror=alert(1)>"
    agent = "</dd></dl><script>alert('agent')</script>"
    body = make_conv(cid, emailId=email, accountId=account, summary={
        "<b>key</b>": HOSTILE, "note": "a & b < c > d \" e ' f",
        "transcript_summary": "</p><script>alert(2)</script>"})
    body["metadata"]["agentId"] = agent
    body["metadata"]["platform"] = "<style>body{display:none}</style>"
    body["transcript"] = [
        {"timestamp": "2024-01-15T10:30:00Z", "speaker": "user", "content": HOSTILE,
         "messageId": "m1"},
        {"timestamp": "2024-01-15T10:30:05.250Z", "speaker": "agent",
         "content": "<a href=\"javascript:alert(3)\">click</a>]]><!-- -->", "messageId": "m2"},
    ]
    assert sealed.post_conv(body).status_code == 200
    r = report(sealed, cid)
    check_headers(r)
    assert "<script" not in r.text.lower() and "<img" not in r.text.lower()
    page = Page(r.text)
    check_safe(page, cid)
    assert len(page.root.find_all("style")) == 1  # only the page's own
    f = page.facts()
    assert f["Conversation"].text() == cid
    assert f["Email"].text() == email
    assert f["Account"].text() == account
    assert f["Agent"].text() == agent
    assert f["Platform"].text() == "<style>body{display:none}</style>"
    assert cid in page.root.find("title").text()
    turns = page.turns()
    assert [t[4] for t in turns] == [HOSTILE, body["transcript"][1]["content"]]
    assert turns[1][1] == "2024-01-15T10:30:05.250000Z" and turns[1][3] == "+0:05"
    text = page.root.text()
    assert "</p><script>alert(2)</script>" in text
    sec = [s for s in page.root.find_all("section") if s.find("h2").text() == "Summary"][0]
    labels = {dt.text(): dd.text() for dt, dd in zip(sec.find_all("dt"), sec.find_all("dd"))}
    assert labels == {"<b>key</b>": HOSTILE, "note": "a & b < c > d \" e ' f"}


# ------------------------------------------------------------------ errors and access
def test_unknown_and_unstorable_ids_are_404_json(sealed):
    for cid in ("nope-" + uid(), "x" * 257):
        assert_error(report(sealed, cid), 404, "NOT_FOUND")
    # an erased conversation has no report
    body = make_conv()
    assert sealed.post_conv(body).status_code == 200
    cid = body["conversationId"]
    assert report(sealed, cid).status_code == 200
    assert sealed.request("DELETE", "/api/v1/conversations/" + quote(cid)).status_code == 200
    assert_error(report(sealed, cid), 404, "NOT_FOUND")


def test_auth_scopes_and_accounts(sealed):
    acc_a, acc_b = "acc-a-" + uid(), "acc-b-" + uid()
    a, b = make_conv(accountId=acc_a), make_conv(accountId=acc_b)
    for body in (a, b):
        assert sealed.post_conv(body).status_code == 200
    assert_error(report(sealed, a["conversationId"], key=None), 401, "UNAUTHORIZED")
    assert_error(report(sealed, a["conversationId"], key="wrong-key"), 401, "UNAUTHORIZED")
    ingest = cli_key(sealed, "--name", "i", "--scope", "ingest")
    assert_error(report(sealed, a["conversationId"], key=ingest), 403, "FORBIDDEN")
    bound = cli_key(sealed, "--name", "bound", "--scope", "read", "--account", acc_a)
    assert read_page(sealed, a["conversationId"], key=bound).facts()["Account"].text() == acc_a
    # another account's conversation is answered as if it did not exist
    other = report(sealed, b["conversationId"], key=bound)
    missing = report(sealed, "nope-" + uid(), key=bound)
    assert_error(other, 404, "NOT_FOUND")
    assert other.json()["error"]["message"] == missing.json()["error"]["message"]


def test_reads_are_audited_as_conversation_read(sealed):
    body = make_conv()
    assert sealed.post_conv(body).status_code == 200
    cid = body["conversationId"]
    assert report(sealed, cid, headers={"X-Request-Id": "report-" + cid}).status_code == 200
    assert_error(report(sealed, cid + "-missing"), 404, "NOT_FOUND")

    def outcomes():
        got = {}
        for target in (cid, cid + "-missing"):
            r = sealed.get("/api/v1/audit", params={"target": target,
                                                     "action": "conversation.read"})
            assert r.status_code == 200, r.text
            got[target] = [(e["outcome"], e["requestId"]) for e in r.json()["data"]["entries"]]
        return got

    deadline = time.monotonic() + 10
    while True:
        got = outcomes()
        if (got[cid] and got[cid + "-missing"]) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert got[cid] == [("ok", "report-" + cid)]
    assert [o for o, _ in got[cid + "-missing"]] == ["not_found"]


def test_head_and_other_methods(sealed):
    body = make_conv()
    assert sealed.post_conv(body).status_code == 200
    r = sealed.request("POST", "/api/v1/conversations/" + body["conversationId"] + "/report")
    assert_error(r, 405, "METHOD_NOT_ALLOWED")
    assert "GET" in r.headers["Allow"]
    path = "/api/v1/conversations/" + body["conversationId"] + "/report"
    get = sealed.get(path)
    check_headers(get)
    head = sealed.request("HEAD", path)
    assert head.status_code == 200
    assert head.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in head.headers["Content-Security-Policy"]
    # HEAD announces the page GET sends (same length), and sends no byte of it: read off the
    # wire, nothing follows the headers before the server closes the connection
    assert int(head.headers["Content-Length"]) == len(get.content) > 0
    with socket.create_connection(("127.0.0.1", sealed.port), timeout=10) as sock:
        sock.sendall(f"HEAD {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY1}"
                     "\r\nConnection: close\r\n\r\n".encode())
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    headers, _, rest = raw.partition(b"\r\n\r\n")
    assert headers.startswith(b"HTTP/1.1 200 "), headers
    assert f"content-length: {len(get.content)}".encode() in headers.lower(), headers
    assert rest == b"", rest[:200]
