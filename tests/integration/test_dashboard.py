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
import io
import json
import os
import re
import shutil
import struct
import tempfile
import time
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
