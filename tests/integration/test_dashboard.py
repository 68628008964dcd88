"""GET /dashboard: the page, its script and its style, served from the binary.

Black-box checks of what is served (headers, the Content-Security-Policy, no inline script or
style, no HTML built from strings in the script), then the dashboard driven in headless Chromium
(Debian chromium + chromium-driver, python3-selenium) against a real server holding known
conversations: sign-in (a wrong key, then a right one), the totals, the per-day counts in the
browser's time zone, the agent that fails most, the table and a report opened from it, filters,
the automatic refresh, the export, sign-out, phone width and the keyboard. Screenshots are saved
under build/artifacts/ and checked (a PNG of the expected size, taken while the DOM showed the
numbers the test expects). A missing Chromium fails the test: it never skips."""
import base64
import csv
import datetime as dt
import hashlib
import hmac
import io
import json
import os
import re
import shutil
import struct
import time
import zlib
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote
from zoneinfo import ZoneInfo

import pytest

from helpers import KEY1, REPO, Server, assert_error, finish_server, free_port, make_conv, uid

ARTIFACTS = REPO / "build" / "artifacts"
PAGE, SCRIPT, STYLE = "/dashboard", "/dashboard/app.js", "/dashboard/app.css"


def directives(csp):
    out = {}
    for part in csp.split(";"):
        words = part.split()
        if words:
            assert words[0] not in out, f"directive {words[0]} given twice"
            out[words[0]] = words[1:]
    return out


class Tags(HTMLParser):
    """Every start tag with its attributes, and the text inside each <script> and <style>."""

    def __init__(self, html):
        super().__init__(convert_charrefs=True)
        self.tags, self.inline, self._in = [], [], None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag in ("script", "style"):
            self._in = tag

    def handle_endtag(self, tag):
        self._in = None

    def handle_data(self, data):
        if self._in and data.strip():
            self.inline.append((self._in, data))


# ------------------------------------------------------------------ what the server sends
def check_common(r, content_type):
    assert r.status_code == 200, r.text[:300]
    assert r.headers["Content-Type"] == content_type
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    # The files change with the binary: never served from a stale cache after an upgrade.
    assert r.headers["Cache-Control"] == "no-store"
    assert r.headers["Referrer-Policy"] == "no-referrer"
    assert r.headers["X-Frame-Options"] == "DENY"
    assert "Set-Cookie" not in r.headers
    d = directives(r.headers["Content-Security-Policy"])
    assert d["default-src"] == ["'none'"]
    assert d["script-src"] == ["'self'"]  # no 'unsafe-inline', no 'unsafe-eval', no host
    assert d["connect-src"] == ["'self'"]
    assert d["frame-src"] == ["blob:"]
    assert d["frame-ancestors"] == ["'none'"]
    assert d["base-uri"] == ["'none'"]
    assert d["form-action"] == ["'none'"]
    assert d["img-src"] == ["data:"]
    return d


def test_page_script_and_style_headers(server):
    page = server.request("GET", PAGE, key=None)  # no key: the page holds no data
    d = check_common(page, "text/html; charset=utf-8")
    js = server.request("GET", SCRIPT, key=None)
    check_common(js, "text/javascript; charset=utf-8")
    css = server.request("GET", STYLE, key=None)
    check_common(css, "text/css; charset=utf-8")
    # styles: this server's file, and the one constant <style> of the reports the page frames
    # (a blob: frame keeps this page's policy), by its hash: never 'unsafe-inline'
    assert d["style-src"][0] == "'self'" and len(d["style-src"]) == 2
    assert re.fullmatch(r"'sha256-[A-Za-z0-9+/]{43}='", d["style-src"][1])
    body = make_conv()
    assert server.post_conv(body).status_code == 200
    report = server.get(f"/api/v1/conversations/{body['conversationId']}/report").text
    styles = re.findall(r"<style>(.*?)</style>", report, re.S)
    assert len(styles) == 1
    digest = base64.b64encode(hashlib.sha256(styles[0].encode()).digest()).decode()
    assert d["style-src"][1] == f"'sha256-{digest}'"


def test_page_has_no_inline_code_and_names_its_files(server):
    html = server.request("GET", PAGE, key=None).text
    tags = Tags(html)
    assert not tags.inline, f"inline script or style: {tags.inline[:1]}"
    scripts = [a for t, a in tags.tags if t == "script"]
    assert scripts == [{"src": SCRIPT, "defer": None}]
    assert [a["href"] for t, a in tags.tags if t == "link" and a.get("rel") == "stylesheet"] == [STYLE]
    for tag, attrs in tags.tags:
        assert "style" not in attrs, f"<{tag}> has a style attribute"
        assert not [a for a in attrs if a.startswith("on")], f"<{tag}> has an event handler"
        for a in ("href", "src"):
            v = (attrs.get(a) or "").strip().lower()
            assert not v.startswith(("http:", "https:", "//", "javascript:")), f"<{tag} {a}={v}>"
    # every control has a label
    ids = {a.get("id") for t, a in tags.tags}
    labelled = {a["for"] for t, a in tags.tags if t == "label" and "for" in a}
    for tag, attrs in tags.tags:
        if tag in ("input", "select", "textarea"):
            assert attrs.get("id") in labelled or attrs.get("aria-label"), f"unlabelled <{tag}>"
    assert labelled <= ids
    assert tags.tags[0] == ("html", {"lang": "en"})
    # the frame that shows a report: sandboxed with no permission at all
    frames = [a for t, a in tags.tags if t == "iframe"]
    assert frames and all(a.get("sandbox") == "" for a in frames)


def test_script_builds_no_html_from_strings(server):
    js = server.request("GET", SCRIPT, key=None).text
    code = re.sub(r"/\*.*?\*/", "", js, flags=re.S)  # its comments name what it never does
    code = code.replace('"http://www.w3.org/2000/svg"', "")  # the SVG namespace: not a fetch
    for bad in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                "new Function", "localStorage", "document.cookie", "http://", "https://"):
        assert bad not in code, bad
    assert "sessionStorage" in code  # the key, for this browser tab only
    assert "textContent" in code


def test_other_methods_and_paths(server):
    r = server.request("POST", PAGE, key=None)
    assert_error(r, 405, "METHOD_NOT_ALLOWED")
    assert "GET" in r.headers["Allow"]
    head = server.request("HEAD", SCRIPT, key=None)
    assert head.status_code == 200
    assert head.headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert int(head.headers["Content-Length"]) == len(server.request("GET", SCRIPT, key=None).content)
    for path in ("/dashboard/", "/dashboard/app.js.map", "/dashboard/../openapi.json.x",
                 "/dashboard/index.html"):
        assert_error(server.request("GET", path, key=None), 404)


# ------------------------------------------------------------------ the page in Chromium
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ZONE = "Asia/Tokyo"  # the browser's zone (emulated): "per day" must be the reader's day
DESKTOP, PHONE = (1280, 900), (375, 812)
WAIT = 20  # seconds for anything the page does (a loaded machine)
EL_SECRET = "wsec_dashboard_0123456789abcdef0123456789abcdef0123456789abcdef012345"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "elevenlabs"
HOSTILE = "<img src=x onerror=window.__pwned=1>"
KEY_STORAGE = "gensendrep.dashboard.key"
# The browser tests run on SQLite only: the page reads the same API on both backends (the API's
# own tests cover PostgreSQL), and a browser per backend would add half a minute to make test.
BROWSER = pytest.mark.backends("sqlite")


def wait_for(what, probe, timeout=WAIT):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = probe()
            if last:
                return last
        except Exception as e:  # the element is being replaced: look again
            last = e
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    """Headless Chromium through chromedriver, with its own profile and download folders, the
    browser's time zone set to ZONE. Missing packages fail the test (CI must never pass
    without having run the browser)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("python3-selenium is missing: apt-get install python3-selenium "
                    "(scripts/deps.sh test installs it)")
    for path, pkg in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            pytest.fail(f"{path} is missing: apt-get install {pkg} (scripts/deps.sh test)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    profile = tmp_path_factory.mktemp("chromium-profile")
    downloads = tmp_path_factory.mktemp("chromium-downloads")
    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", f"--user-data-dir={profile}", "--disable-gpu",
                "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking", "--disable-sync",
                "--lang=en-US", "--hide-scrollbars", f"--window-size={DESKTOP[0]},{DESKTOP[1]}"):
        opts.add_argument(arg)
    if os.geteuid() == 0:
        opts.add_argument("--no-sandbox")  # Chromium's sandbox refuses to run as root
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(CHROMEDRIVER, port=free_port(), log_path=str(ARTIFACTS / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=opts)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    driver.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": ZONE})
    driver.execute_cdp_cmd("Browser.setDownloadBehavior",
                           {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()


def el_body(cid, agent, account, start, duration, status, outcome):
    """A signed-webhook body: the ElevenLabs post-call transcription fixture made into cid."""
    body = json.loads((FIXTURES / "post_call_transcription_success.json").read_text())
    data = body["data"]
    data["conversation_id"] = cid
    data["agent_id"] = agent
    data["status"] = status
    data["metadata"]["start_time_unix_secs"] = int(start.timestamp())
    data["metadata"]["call_duration_secs"] = duration
    data["analysis"]["call_successful"] = outcome
    dyn = data["conversation_initiation_client_data"]["dynamic_variables"]
    dyn["account_id"] = account
    dyn["system__conversation_id"] = cid
    dyn["system__agent_id"] = agent
    return json.dumps(body).encode()


def el_signature(body):
    t = int(time.time())
    mac = hmac.new(EL_SECRET.encode(), str(t).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={t},v0={mac}"


class Data:
    """Known conversations over the last days of ZONE and what the dashboard must show."""

    def __init__(self, srv):
        self.srv = srv
        tz = ZoneInfo(ZONE)
        today = dt.datetime.now(tz).date()
        self.today = today
        run = uid()[:8]
        self.agents = {n: f"agent_{n}_{run}" for n in ("alpha", "beta", "gamma")}
        a = self.agents

        def at(days_ago, hh, mm):
            d = today - dt.timedelta(days=days_ago)
            return dt.datetime(d.year, d.month, d.day, hh, mm, tzinfo=tz)

        # (agent, account, local start, duration s, status, platform or EL outcome)
        seed = [
            (a["alpha"], "acc_one", at(6, 10, 0), 300, "web"),
            (a["alpha"], "acc_one", at(5, 0, 30), 120, "phone"),  # the day before in UTC
            (a["gamma"], "acc_two", at(5, 23, 30), 60, "web"),
            (a["alpha"], "acc_two", at(3, 12, 0), 600, "web"),
            (HOSTILE, "acc_one", at(3, 12, 5), 45, "web"),  # stays text everywhere
            (a["alpha"], "acc_one", at(1, 8, 0), 90, "phone"),
            (a["alpha"], "acc_one", at(9, 9, 0), 100, "web"),  # before the 7 days shown
        ]
        eleven = [
            (a["beta"], "acc_one", at(4, 9, 0), 30, "failed", "failure"),
            (a["beta"], "acc_two", at(2, 13, 0), 20, "failed", "failure"),
            (a["beta"], "acc_one", at(2, 13, 30), 200, "done", "success"),
            (a["beta"], "acc_one", at(1, 0, 10), 15, "failed", "failure"),
            (a["alpha"], "acc_two", at(1, 18, 0), 40, "failed", "unknown"),
        ]
        self.ids = []
        for i, (agent, account, start, duration, platform) in enumerate(seed):
            cid = f"conv_dash_{run}_{i}" if agent != HOSTILE else f"conv_{HOSTILE}_{run}"
            ts = start.astimezone(dt.timezone.utc)
            body = make_conv(cid, accountId=account)
            body["transcript"] = [
                {"timestamp": ts.strftime("%Y-%m-%dT%H:%M:%SZ"), "speaker": "user",
                 "content": f"Hello {HOSTILE}", "messageId": "m1"},
                {"timestamp": (ts + dt.timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                 "speaker": "agent", "content": "Hi", "messageId": "m2"},
            ]
            body["metadata"].update(agentId=agent, duration=duration, messageCount=2,
                                    platform=platform)
            r = srv.post_conv(body)
            assert r.status_code == 200, r.text[:300]
            self.ids.append(cid)
        for i, (agent, account, start, duration, status, outcome) in enumerate(eleven):
            cid = f"conv_dash_{run}_el{i}"
            raw = el_body(cid, agent, account, start, duration, status, outcome)
            r = srv.request("POST", "/api/v1/webhook/elevenlabs", key=None, data=raw,
                            headers={"Content-Type": "application/json",
                                     "ElevenLabs-Signature": el_signature(raw)})
            assert r.status_code == 200, r.text[:300]
            self.ids.append(cid)
        # January 2020: enough rows for more than one page of the table
        self.old = []
        for i in range(30):
            body = make_conv(f"conv_dash_{run}_old{i:02d}", accountId="acc_old")
            for j, m in enumerate(body["transcript"]):
                m["timestamp"] = f"2020-01-{1 + i % 28:02d}T10:00:{j:02d}Z"
            assert srv.post_conv(body).status_code == 200
            self.old.append(body["conversationId"])
        # what the API says of each (start, status, counts): the expectations follow from it
        self.convs = {}
        for cid in self.ids:
            r = srv.get_conv(cid)
            assert r.status_code == 200, r.text[:300]
            self.convs[cid] = r.json()
        first = today - dt.timedelta(days=6)
        self.days = [first + dt.timedelta(days=i) for i in range(7)]
        self.shown = {cid: c for cid, c in self.convs.items() if self.day(c) in self.days}
        assert len(self.shown) == len(self.ids) - 1
        shown = list(self.shown.values())
        self.per_day = {d: sum(1 for c in shown if self.day(c) == d) for d in self.days}
        self.totals = {
            "conversations": len(shown),
            "completed": sum(1 for c in shown if c["status"] == "completed"),
            "failed": sum(1 for c in shown if c["status"] == "failed"),
            "messages": sum(c["messageCount"] for c in shown),
            "duration": sum(c["duration"] for c in shown),
        }
        assert self.totals["failed"] == 4 and self.totals["messages"] > 0
        # the agent that fails most: beta, 3 of its 4
        self.worst = (a["beta"], 3, 4)
        utc_days = sorted(c["startTime"][:10] for c in shown)
        local_days = sorted(self.day(c).isoformat() for c in shown)
        assert utc_days != local_days  # the zone matters for this data

    @staticmethod
    def day(c):
        t = c["startTime"] or c["processedAt"]
        return dt.datetime.fromisoformat(t.replace("Z", "+00:00")).astimezone(ZoneInfo(ZONE)).date()


@pytest.fixture(scope="module")
def dash(backend, tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp(f"dashboard-{backend}"), backend=backend,
                 env={"ELEVENLABS_WEBHOOK_SECRET": EL_SECRET,
                      "RATE_LIMIT_ELEVENLABS_PER_MINUTE": "1000000"})
    srv.start()
    try:
        srv.data = Data(srv)
    except BaseException:
        finish_server(srv)
        raise
    yield srv
    finish_server(srv)


def local(y, m, d, hh=12, mm=0):
    return dt.datetime(y, m, d, hh, mm, tzinfo=ZoneInfo(ZONE))


def post_seed(srv, cid, agent, account, start):
    body = make_conv(cid, accountId=account)
    ts = start.astimezone(dt.timezone.utc)
    for i, m in enumerate(body["transcript"]):
        m["timestamp"] = (ts + dt.timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
    body["metadata"]["agentId"] = agent
    r = srv.post_conv(body)
    assert r.status_code == 200, r.text[:300]


def post_failed(srv, cid, agent, account, start):
    raw = el_body(cid, agent, account, start, 30, "failed", "failure")
    r = srv.request("POST", "/api/v1/webhook/elevenlabs", key=None, data=raw,
                    headers={"Content-Type": "application/json",
                             "ElevenLabs-Signature": el_signature(raw)})
    assert r.status_code == 200, r.text[:300]


class Extra:
    """Days of 2019 the first tests never show: more than 20 agents with failures (an agent of
    the top 20 whose failures are summed under "other"), agent ids named like Object.prototype's
    members, the conversation ids "." and "..", and a day with more rows than the list's
    largest page."""
    RANKS, NAMES, MANY = "2019-03-10", "2019-04-10", "2019-07-10"

    def __init__(self, srv):
        run = uid()[:6]
        self.busy = f"zz_busy_{run}"  # 5 conversations, 1 failed: top of all, "other" of failed
        for i in range(4):
            post_seed(srv, f"conv_busy_{run}_{i}", self.busy, "acc_x", local(2019, 3, 10, 9, i))
        post_failed(srv, f"conv_busy_{run}_f", self.busy, "acc_x", local(2019, 3, 10, 10))
        for a in range(21):  # 21 agents with 2 failures each: one of them and busy are "other"
            for j in range(2):
                post_failed(srv, f"conv_f{a:02d}_{run}_{j}", f"f{a:02d}_{run}", "acc_x",
                            local(2019, 3, 10, 11, a))
        post_seed(srv, f"conv_proto_{run}", "__proto__", "acc_x", local(2019, 4, 10, 9))
        post_failed(srv, f"conv_proto_{run}_f", "__proto__", "acc_x", local(2019, 4, 10, 9, 5))
        post_failed(srv, f"conv_ctor_{run}_f", "constructor", "acc_x", local(2019, 4, 10, 10))
        post_seed(srv, f"conv_tostr_{run}", "toString", "acc_x", local(2019, 4, 10, 11))
        post_seed(srv, ".", "hasOwnProperty", "acc_x", local(2019, 4, 10, 12))
        post_seed(srv, "..", "hasOwnProperty", "acc_x", local(2019, 4, 10, 13))
        self.many = []
        for i in range(105):
            cid = f"conv_many_{run}_{i:03d}"
            post_seed(srv, cid, "agent_many", "acc_many", local(2019, 7, 10, 1 + i // 60, i % 60))
            self.many.append(cid)


@pytest.fixture(scope="module")
def extra(dash):
    if not hasattr(dash, "extra"):
        dash.extra = Extra(dash)
    return dash.extra


# ---- driving the page
def by_id(d, i):
    from selenium.webdriver.common.by import By
    return d.find_element(By.ID, i)


def text(d, i):
    return by_id(d, i).get_attribute("textContent").strip()


def visible(d, i):
    return by_id(d, i).is_displayed()


def refreshed(d):
    return d.execute_script("return document.body.getAttribute('data-refreshed')")


def wait_refresh(d, before):
    """Until a refresh after `before` (the data-refreshed mark) has been rendered."""
    wait_for("a refresh", lambda: (refreshed(d) or None) if refreshed(d) != before else None)


def set_viewport(d, size):
    d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                      {"width": size[0], "height": size[1], "deviceScaleFactor": 1,
                       "mobile": size[0] < 600})


def open_signed_out(d, srv, size=DESKTOP):
    set_viewport(d, size)
    d.get(srv.url(PAGE))
    d.execute_script("window.sessionStorage.clear()")
    d.get(srv.url(PAGE))
    wait_for("the sign-in form", lambda: visible(d, "api-key"))


def sign_in(d, srv, key=KEY1, size=DESKTOP, auto_refresh="0"):
    """Signs in; the automatic refresh (30 s by default) is then set to auto_refresh seconds
    ("0": off), so that only what a test does changes the page."""
    from selenium.webdriver.support.ui import Select
    open_signed_out(d, srv, size)
    by_id(d, "api-key").send_keys(key)
    by_id(d, "signin-button").click()
    wait_for("the dashboard", lambda: visible(d, "dash-view") and refreshed(d))
    assert text(d, "dash-error") == ""
    assert text(d, "status-line").endswith("refreshes every 30 s")
    if auto_refresh != "30":
        mark = refreshed(d)
        Select(by_id(d, "auto-refresh")).select_by_value(auto_refresh)
        wait_refresh(d, mark)


def series_rows(d):
    return d.execute_script("""
        return Array.from(document.querySelectorAll('#series-table tbody tr')).map(tr =>
          [tr.querySelector('time').getAttribute('datetime'), tr.cells[1].textContent]);""")


def agent_rows(d):
    return d.execute_script("""
        return Array.from(document.querySelectorAll('#by-agent tbody tr')).map(tr =>
          Array.from(tr.cells).map(c => c.textContent));""")


def recent_ids(d):
    return d.execute_script("""
        return Array.from(document.querySelectorAll('#recent tbody a')).map(a =>
          a.getAttribute('data-conversation-id'));""")


def fmt_int(n):
    return f"{n:,}"


def fmt_duration(s):
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


def check_numbers(d, data):
    """The totals, the per-day counts and the agent that fails most, as the DOM shows them."""
    t = data.totals
    assert text(d, "t-conversations") == fmt_int(t["conversations"])
    assert text(d, "t-completed") == fmt_int(t["completed"])
    assert text(d, "t-failed") == fmt_int(t["failed"])
    assert text(d, "t-messages") == fmt_int(t["messages"])
    assert text(d, "t-duration-sum") == fmt_duration(t["duration"])
    got = series_rows(d)
    assert [s[:10] for s, _ in got] == [x.isoformat() for x in data.days]
    assert [int(n) for _, n in got] == [data.per_day[x] for x in data.days]
    # each start is local midnight in the browser's zone, with its offset
    offset = dt.datetime.now(ZoneInfo(ZONE)).strftime("%z")
    assert all(s.endswith(offset[:3] + ":" + offset[3:]) for s, _ in got), got
    worst, failed, of = data.worst
    assert text(d, "fails-most-agent") == f"{worst} ({failed} failed of {of})"
    rows = {r[0]: r for r in agent_rows(d)}
    assert rows[worst][1:4] == [str(of), str(failed), "75%"]
    assert rows[HOSTILE][1:3] == ["1", "0"]


def png_size(path):
    raw = Path(path).read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert raw[12:16] == b"IHDR"
    return struct.unpack(">II", raw[16:24]), len(raw)


def screenshot(d, name, size, check):
    """Saves build/artifacts/dashboard-NAME.png of the viewport, checked: the DOM shows what
    check() asserts just before and just after (no refresh in between), and the file is a PNG
    of the viewport's size."""
    mark = refreshed(d)
    check()
    path = ARTIFACTS / f"dashboard-{name}.png"
    assert d.save_screenshot(str(path))
    check()
    assert refreshed(d) == mark, "the page refreshed during the screenshot"
    (w, h), nbytes = png_size(path)
    assert (w, h) == size, (w, h)
    assert nbytes > 10000, f"{path}: {nbytes} bytes is too small for a rendered page"
    print(f"screenshot: {path}")
    return path


def png_colours(raw, enough=3):
    """The number of distinct pixel colours of an 8-bit RGB or RGBA PNG (counting stops at
    `enough`): pure Python, zlib and the PNG filters."""
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, ihdr = 8, b"", None
    while pos < len(raw):
        n, kind = struct.unpack(">I4s", raw[pos:pos + 8])
        chunk = raw[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + n
    w, h, depth, ctype, _, _, interlace = ihdr
    assert depth == 8 and ctype in (2, 6) and interlace == 0, ihdr
    bpp = 3 if ctype == 2 else 4
    data = zlib.decompress(idat)
    stride = w * bpp
    prev = bytearray(stride)
    colours = set()
    for y in range(h):
        f = data[y * (stride + 1)]
        line = bytearray(data[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if f == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 255
        elif f == 2:
            line = bytearray((a + b) & 255 for a, b in zip(line, prev))
        elif f == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 255
        elif f == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        colours.update(bytes(line[i:i + bpp]) for i in range(0, stride, bpp))
        if len(colours) >= enough:
            return len(colours)
        prev = line
    return len(colours)


# What each part of the page must show, as rendered (WebElement.text is the visible text).
PARTS = {"totals": "dl.totals", "chart": "#chart", "fails-most": "#fails-most",
         "recent": "#recent"}


def element_shots(d, name, data):
    """An element screenshot of the totals, the chart, the agent that fails most and the table,
    each displayed, of a non-zero size, not blank (several colours), saved as
    build/artifacts/dashboard-NAME-PART.png; and the numbers in their rendered text."""
    from selenium.webdriver.common.by import By
    t = data.totals
    want = {"totals": [fmt_int(t["conversations"]), fmt_int(t["failed"]),
                       fmt_duration(t["duration"])],
            "fails-most": [f"{data.worst[0]} ({data.worst[1]} failed of {data.worst[2]})"],
            "recent": [sorted(data.shown)[0]], "chart": []}
    for part, css in PARTS.items():
        e = d.find_element(By.CSS_SELECTOR, css)
        d.execute_script("arguments[0].scrollIntoView({block: 'start'})", e)
        assert e.is_displayed(), part
        size = e.size
        assert size["width"] > 0 and size["height"] > 0, (part, size)
        png = e.screenshot_as_png
        (w, h), _ = png_size_bytes(png)
        assert w > 0 and h > 0, (part, w, h)
        assert png_colours(png) >= 3, f"{part}: the screenshot is blank"
        (ARTIFACTS / f"dashboard-{name}-{part}.png").write_bytes(png)
        shown = e.text
        for x in want[part]:
            assert x in shown, (part, x, shown[:300])
    bars = d.find_elements(By.CSS_SELECTOR, "#chart svg rect.bar")
    assert [b for b in bars if b.size["height"] > 0 and b.is_displayed()], "no chart bar drawn"
    d.execute_script("window.scrollTo(0, 0)")


def png_size_bytes(raw):
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and raw[12:16] == b"IHDR"
    return struct.unpack(">II", raw[16:24]), len(raw)


FAILED_LOAD = re.compile(r"Failed to load resource: the server responded with a status of (\d+)")


def check_console(d, statuses=()):
    """No CSP refusal and no SEVERE entry in the browser's log but the HTTP errors the test
    provoked on purpose (statuses). Reading the log empties it."""
    bad = []
    for entry in d.get_log("browser"):
        msg = entry.get("message", "")
        if "Refused to" in msg:
            bad.append(msg)
        elif entry.get("level") == "SEVERE":
            m = FAILED_LOAD.search(msg)
            if not (m and int(m.group(1)) in statuses):
                bad.append(msg)
    assert bad == [], bad


@BROWSER
def test_a_wrong_key_shows_an_error_and_keeps_nothing(chromium, dash):
    d = chromium
    open_signed_out(d, dash)
    by_id(d, "api-key").send_keys("test-key-wrong")
    by_id(d, "signin-button").click()
    wait_for("the error", lambda: visible(d, "signin-error"))
    msg = text(d, "signin-error")
    assert "not accepted" in msg and "401" in msg, msg
    assert not visible(d, "dash-view")
    assert d.execute_script("return window.sessionStorage.length + window.localStorage.length") == 0
    assert d.execute_script("return document.cookie") == ""
    screenshot(d, "wrong-key", DESKTOP, lambda: ("401" in text(d, "signin-error")))
    check_console(d, (401,))


@BROWSER
def test_totals_days_and_the_agent_that_fails_most(chromium, dash):
    d, data = chromium, dash.data
    sign_in(d, dash)
    # the key: this tab's session storage only
    assert d.execute_script(f"return window.sessionStorage.getItem('{KEY_STORAGE}')") == KEY1
    assert d.execute_script("return window.localStorage.length") == 0
    assert by_id(d, "f-tz").get_attribute("value") == ZONE  # the browser's zone by default
    assert by_id(d, "f-from").get_attribute("value") == data.days[0].isoformat()
    assert by_id(d, "f-to").get_attribute("value") == data.today.isoformat()
    check_numbers(d, data)
    # the chart: one bar per day, heights in the proportions of the counts, a text alternative
    bars = d.execute_script("""
        return Array.from(document.querySelectorAll('#chart svg rect.bar')).map(r =>
          [parseFloat(r.getAttribute('height')), r.querySelector('title').textContent]);""")
    assert len(bars) == 7
    counts = [data.per_day[x] for x in data.days]
    top = max(counts)
    for (h, title), n, day in zip(bars, counts, data.days):
        assert title == f"{day.isoformat()}: {n} conversations"
        assert abs(h - bars[counts.index(top)][0] * n / top) < 1.01
    svg = d.execute_script("const s = document.querySelector('#chart svg'); return "
                           "[s.getAttribute('role'), s.getAttribute('aria-labelledby')]")
    assert svg == ["img", "chart-title chart-desc"]
    assert f"{data.totals['conversations']} conversations" in text(d, "chart-desc")
    # breakdowns hold the numbers of the data
    status = d.execute_script("return Array.from(document.querySelectorAll('#by-status li')).map("
                              "li => li.querySelector('.bar-key').textContent + '=' + "
                              "li.querySelector('.bar-value').textContent.split(' ')[0])")
    assert sorted(status) == sorted([f"completed={data.totals['completed']}",
                                     f"failed={data.totals['failed']}"])
    # a value from the API is text: the hostile agent id made no element and ran nothing
    assert d.execute_script("return window.__pwned === undefined && "
                            "document.querySelectorAll('main img').length === 0")
    screenshot(d, "desktop", DESKTOP, lambda: check_numbers(d, data))
    element_shots(d, "desktop", data)
    check_console(d)


@BROWSER
def test_the_table_lists_the_conversations_and_opens_a_report(chromium, dash):
    from selenium.webdriver.common.by import By
    d, data = chromium, dash.data
    sign_in(d, dash)
    ids = recent_ids(d)
    assert sorted(ids) == sorted(data.shown)  # the 7 days only, every one
    order = sorted(data.shown, key=lambda c: (data.convs[c]["processedAt"]), reverse=True)
    assert ids[0] == order[0]  # newest processedAt first
    hostile = next(c for c in ids if HOSTILE in c)
    link = d.find_element(By.CSS_SELECTOR, f'#recent a[data-conversation-id="{hostile}"]')
    assert link.text == hostile
    assert link.get_attribute("href") == dash.url(
        "/api/v1/conversations/" + quote(hostile, safe="") + "/report")
    # a row opens its report (fetched with the key, shown in a sandboxed blob: frame)
    target = data.ids[3]
    link = d.find_element(By.CSS_SELECTOR, f'#recent a[data-conversation-id="{target}"]')
    link.click()
    wait_for("the report dialog", lambda: visible(d, "report-dialog"))
    frame = by_id(d, "report-frame")
    wait_for("the report", lambda: frame.get_attribute("src").startswith("blob:"))
    assert frame.get_attribute("sandbox") == ""
    # "Download" appears with the report's blob: URL, never as a live "#" before
    wait_for("the Download link", lambda: visible(d, "report-download"))
    assert by_id(d, "report-download").get_attribute("href") == frame.get_attribute("src")
    assert text(d, "report-title") == f"Report: {target}"

    def in_report():
        d.switch_to.frame(frame)
        try:
            h1 = d.find_element(By.TAG_NAME, "h1").text
            sub = d.find_element(By.CSS_SELECTOR, "p.sub").text
            width = d.execute_script("return getComputedStyle(document.body).maxWidth")
            return h1, sub, width
        finally:
            d.switch_to.default_content()

    h1, sub, width = wait_for("the report's page", lambda: in_report()[0] and in_report())
    assert (h1, sub) == ("Conversation report", target)
    assert width == "800px"  # the report's own style applies (its hash is in the CSP)
    screenshot(d, "report", DESKTOP, lambda: text(d, "report-title") == f"Report: {target}")
    # Escape closes it and the focus goes back to the link
    from selenium.webdriver.common.keys import Keys
    d.switch_to.active_element.send_keys(Keys.ESCAPE)
    wait_for("the dialog to close", lambda: not visible(d, "report-dialog"))
    assert d.switch_to.active_element.get_attribute("data-conversation-id") == target
    assert by_id(d, "report-frame").get_attribute("src") == "about:blank"
    assert not visible(d, "report-download") and by_id(d, "report-download").get_attribute("href") is None
    # the hostile id's report opens too (its id is one path segment)
    d.find_element(By.CSS_SELECTOR, f'#recent a[data-conversation-id="{hostile}"]').click()
    wait_for("its report", lambda: by_id(d, "report-frame").get_attribute("src").startswith("blob:"))
    assert text(d, "report-error") == ""
    by_id(d, "report-close").click()
    wait_for("the dialog to close", lambda: not visible(d, "report-dialog"))
    check_console(d)


@BROWSER
def test_filters_and_refresh(chromium, dash):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select
    d, data = chromium, dash.data
    sign_in(d, dash)
    # an agent filter: the analytics follow it, the table keeps the time/account/status filters
    agent = by_id(d, "f-agent")
    agent.send_keys(data.agents["beta"] + Keys.ENTER)
    wait_for("beta's numbers", lambda: (text(d, "t-conversations"), text(d, "t-failed")) == ("4", "3"))
    assert sorted(recent_ids(d)) == sorted(data.shown)
    # a status filter narrows the table too
    agent.clear()
    by_id(d, "f-status").send_keys("failed" + Keys.ENTER)
    failed = sorted(c for c in data.shown if data.convs[c]["status"] == "failed")
    wait_for("the failed ones", lambda: sorted(recent_ids(d)) == failed)
    assert text(d, "t-conversations") == "4" and text(d, "t-failed") == "4"
    # an hourly view of the last day (24 bars)
    mark = refreshed(d)
    by_id(d, "f-status").clear()
    d.execute_script("""  // date inputs take keys in the locale's order: set the values
        const f = document.getElementById('f-from'), t = document.getElementById('f-to');
        f.value = arguments[0]; t.value = arguments[0];
        document.getElementById('f-interval').value = 'hour';
        document.getElementById('filters').requestSubmit();""", data.days[-2].isoformat())
    wait_refresh(d, mark)
    day = data.days[-2]
    wait_for("24 hours", lambda: len(series_rows(d)) == 24)
    assert text(d, "t-conversations") == str(data.per_day[day])
    # the automatic refresh: a new conversation appears without touching anything
    mark = refreshed(d)
    Select(by_id(d, "auto-refresh")).select_by_value("10")
    wait_refresh(d, mark)
    before = int(text(d, "t-conversations"))
    body = make_conv(f"conv_dash_late_{uid()}")
    ts = dt.datetime.combine(day, dt.time(15, 0), ZoneInfo(ZONE)).astimezone(dt.timezone.utc)
    for i, m in enumerate(body["transcript"]):
        m["timestamp"] = (ts + dt.timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert dash.post_conv(body).status_code == 200
    wait_for("the automatic refresh", lambda: text(d, "t-conversations") == str(before + 1),
             timeout=30)
    assert body["conversationId"] in recent_ids(d)
    assert dash.request("DELETE", "/api/v1/conversations/" + body["conversationId"]).status_code == 200
    Select(by_id(d, "auto-refresh")).select_by_value("0")
    # a month with more rows than a page: "Show more" follows the cursor to the end
    d.execute_script("""
        document.getElementById('f-from').value = '2020-01-01';
        document.getElementById('f-to').value = '2020-01-31';
        document.getElementById('f-interval').value = 'week';
        document.getElementById('filters').requestSubmit();""")
    wait_for("a first page", lambda: len(recent_ids(d)) == 25 and visible(d, "more"))
    assert text(d, "t-conversations") == "30"
    by_id(d, "more").click()
    wait_for("the rest", lambda: len(recent_ids(d)) == 30 and not visible(d, "more"))
    assert sorted(recent_ids(d)) == sorted(data.old)
    # a report that is gone meanwhile says so in the dialog
    gone = data.old[0]
    assert dash.request("DELETE", "/api/v1/conversations/" + gone).status_code == 200
    d.find_element("css selector", f'#recent a[data-conversation-id="{gone}"]').click()
    wait_for("the report's error", lambda: visible(d, "report-error"))
    assert text(d, "report-error") == "The report: not found (404: Conversation not found)."
    assert not visible(d, "report-download")  # nothing to download
    by_id(d, "report-close").click()
    wait_for("the dialog to close", lambda: not visible(d, "report-dialog"))
    # a time zone that is not one says so and keeps the numbers
    shown, mark = text(d, "t-conversations"), refreshed(d)
    d.execute_script("document.getElementById('f-tz').value = 'Mars/Olympus_Mons';"
                     "document.getElementById('apply').click()")
    wait_for("the zone error", lambda: visible(d, "filters-error"))
    assert "not an IANA time zone" in text(d, "filters-error")
    assert text(d, "t-conversations") == shown and refreshed(d) == mark
    check_console(d, (404,))


# Records every fetch the page makes (URL and signal); execute_script is not bound by the CSP.
RECORD_FETCH = """
    if (!window.__realFetch) window.__realFetch = window.fetch;
    window.__fetches = [];
    window.fetch = function (url, opts) {
      window.__fetches.push({url: String(url), signal: opts && opts.signal});
      return window.__realFetch.apply(this, arguments);
    };"""


def set_dates(d, tz, first, last, interval="day"):
    d.execute_script("""
        document.getElementById('f-tz').value = arguments[0];
        document.getElementById('f-from').value = arguments[1];
        document.getElementById('f-to').value = arguments[2];
        document.getElementById('f-interval').value = arguments[3];
        document.getElementById('filters').requestSubmit();""", tz, first, last, interval)


@BROWSER
def test_days_whose_midnight_does_not_exist(chromium, dash):
    """From/To are the first instant of the local date: 01:00 where the clocks skip midnight."""
    from urllib.parse import parse_qs, urlsplit
    d = chromium
    sign_in(d, dash)
    d.execute_script(RECORD_FETCH)
    for tz, day, start, end in (("America/Santiago", "2026-09-06", "2026-09-06T04:00:00Z",
                                 "2026-09-07T03:00:00Z"),
                                ("Asia/Beirut", "2026-03-29", "2026-03-28T22:00:00Z",
                                 "2026-03-29T21:00:00Z"),
                                ("America/Havana", "2026-03-08", "2026-03-08T05:00:00Z",
                                 "2026-03-09T04:00:00Z")):
        mark = refreshed(d)
        d.execute_script("window.__fetches = []")
        set_dates(d, tz, day, day)
        wait_refresh(d, mark)
        asked = [parse_qs(urlsplit(f["url"]).query) for f in d.execute_script(
            "return window.__fetches.map(f => ({url: f.url}))") if "/analytics" in f["url"]]
        assert asked, tz
        for q in asked:
            assert (q["from"], q["to"]) == ([start], [end]), (tz, q)
        assert text(d, "dash-error") == ""
    check_console(d)


@BROWSER
def test_refreshes_do_not_pile_up_and_a_failure_says_stale(chromium, dash):
    d = chromium
    sign_in(d, dash)
    d.execute_script(RECORD_FETCH)
    # Refresh is disabled while a refresh is in flight; a newer refresh aborts the older one
    mark = refreshed(d)
    state = d.execute_script("""
        const b = document.getElementById('refresh-now');
        b.click();
        const disabled = b.disabled, first = window.__fetches.slice();
        document.getElementById('filters').requestSubmit();
        return [disabled, first.length, first.every(f => f.signal && f.signal.aborted)];""")
    assert state == [True, 3, True], state
    wait_refresh(d, mark)
    wait_for("Refresh enabled again", lambda: by_id(d, "refresh-now").is_enabled())
    assert text(d, "dash-error") == ""
    # typing in a text filter, then Enter: one refresh, not one for "change" and one for submit
    from selenium.webdriver.common.keys import Keys
    d.execute_script("window.__fetches = []")
    mark = refreshed(d)
    by_id(d, "f-account").send_keys("acc_one" + Keys.ENTER)
    wait_refresh(d, mark)
    time.sleep(0.6)  # past the change debounce: nothing more is asked
    asked = d.execute_script("return window.__fetches.filter(f => f.url.includes('/analytics'))"
                             ".map(f => f.signal.aborted)")
    assert asked == [False, False], asked
    ok_line = text(d, "status-line")
    assert ok_line.startswith("Updated "), ok_line
    # a refresh that fails keeps the last good time and says the numbers are stale
    d.execute_script("window.fetch = () => Promise.reject(new TypeError('offline'))")
    mark = refreshed(d)
    by_id(d, "refresh-now").click()
    wait_refresh(d, mark)
    line = text(d, "status-line")
    assert line.startswith("Last updated " + ok_line.split()[1]) and "(stale" in line, line
    assert "could not be reached" in text(d, "dash-error")
    # a request that never answers ends after 30 s (shortened here: the page's 30 s timers
    # run in 0.3 s), and the refresh after it works: a hung request stops nothing
    d.execute_script("""
        window.fetch = (url, opts) => new Promise((_, reject) => opts.signal.addEventListener(
          'abort', () => reject(new DOMException('aborted', 'AbortError'))));
        const st = window.__realSetTimeout || window.setTimeout;
        window.__realSetTimeout = st;
        window.setTimeout = (f, ms) => st(f, ms === 30000 ? 300 : ms);""")
    mark = refreshed(d)
    by_id(d, "refresh-now").click()
    wait_refresh(d, mark)
    assert "no answer within 30 s" in text(d, "dash-error"), text(d, "dash-error")
    assert "(stale" in text(d, "status-line") and by_id(d, "refresh-now").is_enabled()
    d.execute_script("window.fetch = window.__realFetch; window.setTimeout = window.__realSetTimeout")
    mark = refreshed(d)
    by_id(d, "refresh-now").click()
    wait_refresh(d, mark)
    assert text(d, "status-line").startswith("Updated ") and text(d, "dash-error") == ""
    check_console(d)


@BROWSER
def test_odd_agent_ids_unknown_failures_and_dot_ids(chromium, dash, extra):
    d = chromium
    sign_in(d, dash)
    # more than 20 agents with failures: "busy" is in the top 20 of all but summed under
    # "other" among the failures, so its failures are unknown ("–"), not 0
    mark = refreshed(d)
    set_dates(d, ZONE, Extra.RANKS, Extra.RANKS)
    wait_refresh(d, mark)
    rows = {r[0]: r for r in agent_rows(d)}
    assert rows[extra.busy][1:4] == ["5", "–", "–"], rows[extra.busy]
    assert not [r for r in rows.values() if "NaN" in "".join(r)], rows
    assert sum(1 for r in rows.values() if r[2:4] == ["2", "100%"]) >= 18
    # agent ids named like Object.prototype's members are ordinary keys
    mark = refreshed(d)
    set_dates(d, ZONE, Extra.NAMES, Extra.NAMES)
    wait_refresh(d, mark)
    rows = {r[0]: r[1:4] for r in agent_rows(d)}
    assert rows["__proto__"] == ["2", "1", "50%"], rows
    assert rows["constructor"] == ["1", "1", "100%"], rows
    assert rows["toString"] == ["1", "0", "0%"], rows
    assert rows["hasOwnProperty"] == ["2", "0", "0%"], rows
    # "." and ".." would be resolved away by the URL parser: the dialog says so, fetches nothing
    d.execute_script(RECORD_FETCH)
    for cid in (".", ".."):
        d.find_element("css selector", f'#recent a[data-conversation-id="{cid}"]').click()
        wait_for("the report's error", lambda: visible(d, "report-error"))
        assert "cannot be opened here" in text(d, "report-error")
        assert not visible(d, "report-download")
        assert by_id(d, "report-frame").get_attribute("src") == "about:blank"
        by_id(d, "report-close").click()
        wait_for("the dialog to close", lambda: not visible(d, "report-dialog"))
    assert d.execute_script("return window.__fetches.length") == 0
    check_console(d)


@BROWSER
def test_show_more_survives_the_automatic_refresh(chromium, dash, extra):
    from selenium.webdriver.support.ui import Select
    d = chromium
    sign_in(d, dash)
    mark = refreshed(d)
    set_dates(d, ZONE, Extra.MANY, Extra.MANY)
    wait_refresh(d, mark)
    for n in (25, 50, 75, 100):
        wait_for(f"{n} rows", lambda: len(recent_ids(d)) == n and visible(d, "more")
                 and by_id(d, "more").is_enabled())
        by_id(d, "more").click()
    wait_for("every row", lambda: len(recent_ids(d)) == 105 and not visible(d, "more"))
    # an automatic refresh (choosing the interval refreshes as the timer does) keeps them
    mark = refreshed(d)
    Select(by_id(d, "auto-refresh")).select_by_value("300")
    wait_refresh(d, mark)
    assert sorted(recent_ids(d)) == sorted(extra.many)
    assert "keeps the rows you loaded" in text(d, "status-line")
    # "Refresh" reloads the list from its first page
    mark = refreshed(d)
    by_id(d, "refresh-now").click()
    wait_refresh(d, mark)
    assert len(recent_ids(d)) == 25
    Select(by_id(d, "auto-refresh")).select_by_value("0")
    check_console(d)


@BROWSER
def test_export_saves_what_the_filters_match(chromium, dash):
    d, data = chromium, dash.data
    sign_in(d, dash)
    for old in data_files(d):
        old.unlink()
    by_id(d, "export-csv").click()
    wait_for("the saved export", lambda: text(d, "status-line").startswith("Saved "))
    name = f"conversations-{data.days[0].isoformat()}-to-{data.today.isoformat()}.csv"
    assert name in text(d, "status-line")
    path = d.downloads / name
    wait_for("the downloaded file", lambda: path.exists() and path.stat().st_size > 0)
    assert path.read_bytes().startswith(b"\xef\xbb\xbf"), "the file for a spreadsheet is marked UTF-8"
    rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
    assert sorted(r["conversationId"] for r in rows) == sorted(data.shown)
    assert next(r for r in rows if HOSTILE in r["conversationId"])["agentId"] == HOSTILE
    by_id(d, "export-ndjson").click()
    ndjson = d.downloads / name.replace(".csv", ".ndjson")
    wait_for("the NDJSON export", lambda: ndjson.exists() and ndjson.stat().st_size > 0)
    lines = [json.loads(x) for x in ndjson.read_text().splitlines()]
    assert sorted(x["conversationId"] for x in lines) == sorted(data.shown)


def data_files(d):
    return [p for p in d.downloads.iterdir() if p.is_file()]


@BROWSER
def test_phone_width_has_no_horizontal_scrolling(chromium, dash):
    d, data = chromium, dash.data
    sign_in(d, dash, size=PHONE)
    assert d.execute_script("return window.innerWidth") == PHONE[0]
    widths = d.execute_script("return [document.documentElement.scrollWidth, "
                              "document.documentElement.clientWidth, document.body.scrollWidth]")
    assert widths[0] <= widths[1] and widths[2] <= widths[1], widths
    # nothing sticks out of the viewport but what scrolls inside its own box
    out = d.execute_script("""
        const w = document.documentElement.clientWidth, bad = [];
        for (const e of document.querySelectorAll('body *')) {
          if (!e.getClientRects().length || e.closest('.scroll, dialog, datalist')) continue;
          const r = e.getBoundingClientRect();
          if (r.right > w + 0.5) bad.push(e.tagName + '#' + e.id + '.' + e.className);
        }
        return bad;""")
    assert out == [], out
    assert d.execute_script("return document.querySelector('#chart svg').getBoundingClientRect()"
                            ".width") <= PHONE[0]
    check_numbers(d, data)
    screenshot(d, "phone", PHONE, lambda: check_numbers(d, data))
    element_shots(d, "phone", data)
    check_console(d)
    set_viewport(d, DESKTOP)


# Each visible control must be reached by Tab.
CONTROLS = """
    return Array.from(document.querySelectorAll('a[href], button, input, select, summary'))
      .filter(e => e.getClientRects().length && !e.disabled && !e.closest('dialog'))
      .map(e => e.id || e.getAttribute('data-conversation-id') || e.textContent.trim());"""


@BROWSER
def test_keyboard_reaches_every_control_and_everything_is_labelled(chromium, dash):
    from selenium.webdriver.common.keys import Keys
    d = chromium
    sign_in(d, dash)
    want = set(d.execute_script(CONTROLS))
    assert {"f-from", "f-to", "f-interval", "f-tz", "f-account", "f-agent", "f-platform",
            "f-status", "apply", "reset", "export-csv", "export-ndjson", "sign-out",
            "refresh-now", "auto-refresh"} <= want
    d.execute_script("document.activeElement.blur(); window.scrollTo(0, 0)")
    d.find_element("tag name", "body").send_keys(Keys.TAB)
    reached, seen_focus = set(), []
    for _ in range(400):
        name = d.execute_script("const e = document.activeElement; return e.id || "
                                "e.getAttribute('data-conversation-id') || e.textContent.trim()")
        reached.add(name)
        seen_focus.append(name)
        if want <= reached:
            break
        d.switch_to.active_element.send_keys(Keys.TAB)
    assert want <= reached, sorted(want - reached)
    # every control has a name a screen reader reads out
    unnamed = d.execute_script("""
        return Array.from(document.querySelectorAll('input, select, button'))
          .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                       && !e.textContent.trim()).map(e => e.id);""")
    assert unnamed == []
    # text contrast of at least 4.5:1 against what is behind it
    low = d.execute_script("""
        function rgb(s) { const m = s.match(/[\\d.]+/g).map(Number); return m; }
        function lum(c) { const a = c.slice(0, 3).map(v => { v /= 255;
          return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
          return 0.2126 * a[0] + 0.7152 * a[1] + 0.0722 * a[2]; }
        function bg(e) { for (; e; e = e.parentElement) { const c = rgb(getComputedStyle(e).backgroundColor);
          if (c.length < 4 || c[3] > 0.5) return c; } return [255, 255, 255]; }
        const bad = [];
        for (const e of document.querySelectorAll('main *, header *')) {
          if (!e.getClientRects().length || e.closest('svg, dialog')) continue;
          if (![...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim())) continue;
          const a = lum(rgb(getComputedStyle(e).color)), b = lum(bg(e));
          const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
          if (ratio < 4.5) bad.push(e.tagName + '#' + e.id + ' ' + ratio.toFixed(2));
        }
        return bad;""")
    assert low == [], low


@BROWSER
def test_sign_out_forgets_the_key(chromium, dash):
    d = chromium
    sign_in(d, dash)
    by_id(d, "sign-out").click()
    wait_for("the sign-in form", lambda: visible(d, "api-key"))
    assert d.execute_script("return window.sessionStorage.length") == 0
    assert text(d, "t-conversations") == "–"
    assert recent_ids(d) == []
    assert "Signed out" in text(d, "signin-error")
    # a reload stays signed out
    d.get(dash.url(PAGE))
    wait_for("the sign-in form", lambda: visible(d, "api-key"))
    assert not visible(d, "dash-view")
    # a key the server never issued, found in storage, is forgotten
    d.execute_script(f"window.sessionStorage.setItem('{KEY_STORAGE}', 'test-key-revoked')")
    d.get(dash.url(PAGE))
    wait_for("the sign-in form", lambda: visible(d, "signin-error"))
    assert "401" in text(d, "signin-error")
    assert d.execute_script("return window.sessionStorage.length") == 0
    check_console(d, (401,))


def create_key(srv, **body):
    r = srv.request("POST", "/api/v1/keys", key=KEY1, data=json.dumps(body),
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    return r.json()


@BROWSER
def test_a_real_key_revoked_while_open_and_an_account_bound_key(chromium, dash):
    d, data = chromium, dash.data
    # a key bound to one account sees that account's conversations only
    bound = create_key(dash, name="dash-bound-" + uid(), scopes=["read"], accounts=["acc_two"])
    sign_in(d, dash, key=bound["key"])
    mine = sorted(c for c, v in data.shown.items() if v["accountId"] == "acc_two")
    assert 0 < len(mine) < len(data.shown)
    assert text(d, "t-conversations") == str(len(mine))
    assert sorted(recent_ids(d)) == mine
    accounts = d.execute_script("return Array.from(document.querySelectorAll('#by-account "
                                ".bar-key')).map(e => e.textContent)")
    assert accounts == ["acc_two"], accounts
    # a key created, signed in with, then revoked: the next refresh goes back to sign-in
    made = create_key(dash, name="dash-revoked-" + uid(), scopes=["read"])
    sign_in(d, dash, key=made["key"])
    assert d.execute_script(f"return window.sessionStorage.getItem('{KEY_STORAGE}')") == made["key"]
    assert dash.request("DELETE", "/api/v1/keys/" + made["id"], key=KEY1).status_code in (200, 204)

    def back_at_sign_in():  # revocation reaches the key cache within about a second
        if visible(d, "api-key"):
            return True
        if by_id(d, "refresh-now").is_enabled():
            by_id(d, "refresh-now").click()
        time.sleep(0.3)
        return False

    wait_for("the sign-in form", back_at_sign_in)
    assert "401" in text(d, "signin-error")
    assert d.execute_script("return window.sessionStorage.length") == 0
    assert text(d, "t-conversations") == "–" and recent_ids(d) == []
    check_console(d, (401,))
