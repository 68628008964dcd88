/* gensendrep dashboard (GET /dashboard). Plain JavaScript, no library, nothing loaded from
 * elsewhere. Rules this file keeps (the page's Content-Security-Policy enforces the first two):
 * - no inline script, no eval, no new Function, no string timers;
 * - every value that came from the API is inserted as text (textContent, attribute values set
 *   through the DOM, SVG built with createElementNS): never innerHTML or insertAdjacentHTML;
 * - the API key lives in sessionStorage (this tab, until it closes or "Sign out") and is sent
 *   only to this server, as "Authorization: Bearer". */
(function () {
  "use strict";

  var KEY_STORAGE = "gensendrep.dashboard.key";
  var refreshMs = 30000; /* the default; the Auto-refresh control changes it (0: off) */
  var PAGE_ROWS = 25;
  var LIST_MAX = 100; /* the list API's largest limit */
  var SVG_NS = "http://www.w3.org/2000/svg";

  var key = null;
  var timer = null;
  var generation = 0; /* each refresh's number: an older answer arriving late is dropped */
  var refreshing = false;
  var refreshAbort = null; /* the AbortController of the refresh in flight */
  var REQUEST_TIMEOUT_MS = 30000; /* a hung request ends here, so auto-refresh goes on */
  var lastRefresh = 0;
  var lastSuccess = null; /* the time of the last refresh that got every answer */
  var paged = false; /* "Show more" was used: automatic refreshes leave the list alone */
  var listGen = 0; /* the list's number: "Show more" drops a page of a list reloaded since */
  var changeTimer = null; /* a filter's "change", debounced */
  var nextCursor = null;
  var shownRows = 0;
  var lastSeries = null;
  var reportUrl = null;
  var reportGen = 0; /* the report asked last: an older answer is dropped */
  var known = { account: new Map(), agent: new Map(), platform: new Map() };

  function $(id) {
    return document.getElementById(id);
  }

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function svg(tag, attrs) {
    var e = document.createElementNS(SVG_NS, tag);
    for (var name in attrs) {
      if (Object.prototype.hasOwnProperty.call(attrs, name)) e.setAttribute(name, String(attrs[name]));
    }
    return e;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function show(node, visible) {
    node.hidden = !visible;
  }

  /* ---------------------------------------------------------------- formatting */
  var intFormat = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });

  function fmtInt(n) {
    if (typeof n !== "number" || !isFinite(n)) return "–";
    return intFormat.format(n);
  }

  function fmtDuration(s) {
    if (typeof s !== "number" || !isFinite(s)) return "–";
    if (s < 10 && Math.round(s) !== s) return s.toFixed(1) + " s";
    s = Math.round(s);
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    var h = Math.floor(s / 3600);
    var m = Math.floor((s % 3600) / 60);
    if (h < 48) return h + " h " + m + " min";
    return fmtInt(Math.floor(h / 24)) + " d " + (h % 24) + " h";
  }

  function fmtPercent(part, whole) {
    if (!whole) return "–";
    var p = (100 * part) / whole;
    return (p < 10 && p > 0 ? p.toFixed(1) : Math.round(p)) + "%";
  }

  function keyText(k) {
    return k === null || k === undefined || k === "" ? "(unknown)" : String(k);
  }

  /* A breakdown entry's label: the summed rest past the top 20 ("rest": true) is not a value. */
  function entryText(e) {
    return e.rest === true ? "(all others)" : keyText(e.key);
  }

  /* ---------------------------------------------------------------- time zones */
  function validZone(tz) {
    try {
      new Intl.DateTimeFormat("en-US", { timeZone: tz });
      return true;
    } catch (e) {
      return false;
    }
  }

  var partFormats = {};
  function wallParts(tz, ms) {
    var f = partFormats[tz];
    if (!f) {
      f = new Intl.DateTimeFormat("en-US", {
        timeZone: tz, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit",
        hour: "2-digit", minute: "2-digit", second: "2-digit"
      });
      partFormats[tz] = f;
    }
    var out = {};
    f.formatToParts(new Date(ms)).forEach(function (p) {
      if (p.type !== "literal") out[p.type] = parseInt(p.value, 10);
    });
    if (out.hour === 24) out.hour = 0;
    return out;
  }

  /* The zone's offset from UTC at the instant ms, in milliseconds. */
  function zoneOffset(tz, ms) {
    var p = wallParts(tz, ms);
    var wall = Date.UTC(p.year, p.month - 1, p.day, p.hour, p.minute, p.second);
    return wall - Math.floor(ms / 1000) * 1000;
  }

  /* The first instant whose local date in tz is "YYYY-MM-DD": local midnight, or, on a day
   * whose midnight does not exist (a DST change at 00:00, e.g. America/Santiago 2026-09-06),
   * the instant the day starts (01:00). */
  function midnightIn(tz, date) {
    var y = +date.slice(0, 4), m = +date.slice(5, 7), d = +date.slice(8, 10);
    var guess = Date.UTC(y, m - 1, d);
    var t = guess - zoneOffset(tz, guess);
    var t2 = guess - zoneOffset(tz, t);
    var best = null;
    [t, t2].forEach(function (c) {
      if (dateIn(tz, c) === date && (best === null || c < best)) best = c;
    });
    if (best === null) {
      /* midnight is skipped: the day starts at the first whole minute after the gap */
      best = Math.max(t, t2);
      while (dateIn(tz, best) !== date) best += 60000;
    }
    /* an earlier instant of the same date (midnight repeated by a change back) */
    while (dateIn(tz, best - 60000) === date) best -= 60000;
    return best;
  }

  function pad(n, w) {
    var s = String(n);
    while (s.length < (w || 2)) s = "0" + s;
    return s;
  }

  function dateIn(tz, ms) {
    var p = wallParts(tz, ms);
    return pad(p.year, 4) + "-" + pad(p.month) + "-" + pad(p.day);
  }

  function addDays(date, n) {
    var t = Date.UTC(+date.slice(0, 4), +date.slice(5, 7) - 1, +date.slice(8, 10)) + n * 86400000;
    var d = new Date(t);
    return pad(d.getUTCFullYear(), 4) + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate());
  }

  function instant(ms) {
    return new Date(ms).toISOString().replace(".000Z", "Z");
  }

  /* "2026-03-08 14:05" in tz, for an RFC 3339 time from the API. */
  function localTime(tz, iso) {
    var ms = Date.parse(iso);
    if (!isFinite(ms)) return String(iso);
    var p = wallParts(tz, ms);
    return pad(p.year, 4) + "-" + pad(p.month) + "-" + pad(p.day) + " " + pad(p.hour) + ":" +
      pad(p.minute);
  }

  /* A series entry's label, read from its "start" (already in the requested zone's offset). */
  function seriesLabel(start, interval) {
    var s = String(start);
    if (interval === "hour") return s.slice(5, 10) + " " + s.slice(11, 16);
    return s.slice(0, 10);
  }

  /* ---------------------------------------------------------------- the API */
  function ApiError(status, code, message) {
    this.status = status;
    this.code = code;
    this.message = message;
  }

  function describe(err, what) {
    if (!(err instanceof ApiError)) return what + ": " + String(err && err.message ? err.message : err);
    switch (err.status) {
      case 0:
        if (err.code === "TIMEOUT") return what + ": no answer within " + REQUEST_TIMEOUT_MS / 1000 + " s; the next refresh tries again.";
        return what + ": the server could not be reached.";
      case 401:
        return "The API key was not accepted (401). Check it and sign in again.";
      case 403:
        return "This API key may not read conversations (403: it needs the read scope).";
      case 404:
        return what + ": not found (404" + (err.message ? ": " + err.message : "") + ").";
      case 429:
        return what + ": too many requests (429); the next refresh tries again.";
      case 503:
        return what + ": the service is unavailable right now (503); the next refresh tries again.";
      default:
        return what + " failed (" + err.status + (err.message ? ": " + err.message : "") + ").";
    }
  }

  /* signal: an AbortSignal that cancels the request (a newer refresh). Every request ends
   * after REQUEST_TIMEOUT_MS (status 0, "TIMEOUT"), its body included: the answer is
   * { resp, text }. streaming (an export, any size): the Response itself, the time limit
   * covering only its headers. */
  function apiFetch(path, params, k, signal, streaming) {
    var url = new URL(path, window.location.origin);
    Object.keys(params || {}).forEach(function (name) {
      var v = params[name];
      if (v !== undefined && v !== null && (v !== "" || name === "cursor")) url.searchParams.set(name, v);
    });
    var ctl = new AbortController();
    var timedOut = false;
    var timeout = window.setTimeout(function () {
      timedOut = true;
      ctl.abort();
    }, REQUEST_TIMEOUT_MS);
    var onAbort = function () {
      ctl.abort();
    };
    if (signal) {
      if (signal.aborted) ctl.abort();
      else signal.addEventListener("abort", onAbort);
    }
    var done = function () {
      window.clearTimeout(timeout);
      if (signal) signal.removeEventListener("abort", onAbort);
    };
    return fetch(url.href, {
      headers: { Authorization: "Bearer " + (k || key), Accept: "application/json" },
      cache: "no-store",
      credentials: "omit",
      redirect: "error",
      referrerPolicy: "no-referrer",
      signal: ctl.signal
    }).then(function (resp) {
      if (resp.ok && streaming) {
        done();
        return resp;
      }
      return resp.text().then(function (body) {
        done();
        if (resp.ok) return { resp: resp, text: body };
        var code = "", message = "";
        try {
          var j = JSON.parse(body);
          if (j && j.error) {
            code = String(j.error.code || "");
            message = String(j.error.message || "");
          }
        } catch (e) { /* not the JSON envelope */ }
        throw new ApiError(resp.status, code, message);
      });
    }).then(null, function (e) {
      done();
      if (e instanceof ApiError) throw e;
      if (timedOut) throw new ApiError(0, "TIMEOUT", "");
      if (signal && signal.aborted) throw new ApiError(0, "ABORTED", "");
      throw new ApiError(0, "NETWORK", "");
    });
  }

  function apiJson(path, params, signal) {
    return apiFetch(path, params, null, signal).then(function (r) {
      return JSON.parse(r.text);
    });
  }

  /* ---------------------------------------------------------------- filters */
  function browserZone() {
    var tz = "";
    try {
      tz = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
    } catch (e) { /* old engine */ }
    return tz && validZone(tz) ? tz : "UTC";
  }

  function setDefaultFilters() {
    var tz = browserZone();
    var today = dateIn(tz, Date.now());
    $("f-tz").value = tz;
    $("f-from").value = addDays(today, -6);
    $("f-to").value = today;
    $("f-interval").value = "day";
    ["f-account", "f-agent", "f-platform", "f-status"].forEach(function (id) {
      $(id).value = "";
    });
  }

  /* The filters as query parameters, or a message saying what is wrong. */
  function readFilters() {
    var tz = $("f-tz").value.trim() || browserZone();
    if (!validZone(tz)) return { error: "Time zone: \"" + tz + "\" is not an IANA time zone (e.g. Europe/Paris)." };
    var from = $("f-from").value, to = $("f-to").value;
    if (!/^\d{4}-\d{2}-\d{2}$/.test(from)) return { error: "From: choose a date." };
    if (!/^\d{4}-\d{2}-\d{2}$/.test(to)) return { error: "To: choose a date." };
    if (to < from) return { error: "To is before From." };
    var interval = $("f-interval").value;
    var fromMs = midnightIn(tz, from), toMs = midnightIn(tz, addDays(to, 1));
    var hours = (toMs - fromMs) / 3600000;
    if (interval === "hour" && hours > 24 * 31) return { error: "Hourly: choose at most 31 days." };
    return {
      tz: tz,
      interval: interval,
      from: instant(fromMs),
      to: instant(toMs),
      account_id: $("f-account").value.trim(),
      agent_id: $("f-agent").value.trim(),
      platform: $("f-platform").value.trim(),
      status: $("f-status").value.trim()
    };
  }

  function analyticsParams(f, status) {
    return {
      from: f.from, to: f.to, interval: f.interval, tz: f.tz, account_id: f.account_id,
      agent_id: f.agent_id, platform: f.platform, status: status === undefined ? f.status : status
    };
  }

  /* The list and the export take the time, account and status filters. */
  function listParams(f) {
    return { from: f.from, to: f.to, account_id: f.account_id, status: f.status };
  }

  /* The entry of a breakdown that sums the keys past the top 20: marked "rest": true, or (an
   * answer without that member) the last of more than 20 entries, keyed "other". */
  function isRest(e, i, list) {
    if (!e) return false;
    if (e.rest === true) return true;
    var marked = list.some(function (x) {
      return x && Object.prototype.hasOwnProperty.call(x, "rest");
    });
    return !marked && e.key === "other" && i === list.length - 1 && list.length > 20;
  }

  function remember(kind, entries) {
    entries = Array.isArray(entries) ? entries : [];
    entries.forEach(function (e, i) {
      if (e && typeof e.key === "string" && e.key !== "" && !isRest(e, i, entries)) known[kind].set(e.key, true);
    });
  }

  function fillDatalist(id, values) {
    var list = $(id);
    var have = new Set();
    Array.prototype.forEach.call(list.options, function (o) {
      have.add(o.value);
    });
    values.forEach(function (v) {
      if (have.has(v)) return;
      var o = document.createElement("option");
      o.value = v;
      list.appendChild(o);
    });
  }

  /* ---------------------------------------------------------------- rendering */
  function renderTotals(a) {
    var t = (a && a.totals) || {};
    var d = t.durationSeconds || {};
    $("t-conversations").textContent = fmtInt(t.conversations);
    $("t-completed").textContent = fmtInt(t.completed);
    $("t-failed").textContent = fmtInt(t.failed);
    $("t-messages").textContent = fmtInt(t.messages);
    $("t-duration-sum").textContent = fmtDuration(d.sum);
    $("t-duration-avg").textContent = fmtDuration(d.avg);
    $("t-duration-p50").textContent = fmtDuration(d.p50);
    $("t-duration-p90").textContent = fmtDuration(d.p90);
    $("t-duration-p99").textContent = fmtDuration(d.p99);
  }

  function renderBars(id, entries) {
    var list = $(id);
    clear(list);
    entries = Array.isArray(entries) ? entries : [];
    if (!entries.length) {
      list.appendChild(el("li", "No conversations.", "muted"));
      return;
    }
    var total = 0, max = 0;
    entries.forEach(function (e) {
      total += e.conversations || 0;
      max = Math.max(max, e.conversations || 0);
    });
    entries.forEach(function (e) {
      var li = el("li");
      var label = el("div", null, "bar-label");
      var k = el("span", entryText(e), "bar-key");
      if (e.key === null || e.key === undefined) k.className += " muted";
      label.appendChild(k);
      label.appendChild(el("span", fmtInt(e.conversations) + " · " + fmtPercent(e.conversations, total), "bar-value"));
      li.appendChild(label);
      var track = el("div", null, "bar-track");
      track.setAttribute("aria-hidden", "true");
      var fill = el("div", null, "bar-fill");
      fill.style.width = (max ? (100 * (e.conversations || 0)) / max : 0) + "%"; /* CSSOM: allowed by the CSP */
      track.appendChild(fill);
      li.appendChild(track);
      list.appendChild(li);
    });
  }

  function renderAgents(all, failed) {
    var body = $("by-agent").tBodies[0];
    clear(body);
    var entries = (all && Array.isArray(all.byAgent)) ? all.byAgent : [];
    /* a Map: agent ids such as "__proto__" or "constructor" are keys like any other */
    var failedBy = new Map();
    var failedList = failed && Array.isArray(failed.byAgent) ? failed.byAgent : null;
    var failedRest = false; /* failures of agents past the top 20 are summed: unknown per agent */
    (failedList || []).forEach(function (e, i) {
      if (isRest(e, i, failedList)) failedRest = true;
      else failedBy.set(e.key, e.conversations || 0);
    });
    if (!entries.length) {
      var tr0 = el("tr");
      var td0 = el("td", "No conversations.", "muted");
      td0.colSpan = 5;
      tr0.appendChild(td0);
      body.appendChild(tr0);
    }
    entries.forEach(function (e) {
      var tr = el("tr");
      var th = el("th", entryText(e));
      th.scope = "row";
      tr.appendChild(th);
      tr.appendChild(el("td", fmtInt(e.conversations), "num"));
      var f = null; /* null: unknown, shown "–" */
      if (failedList && !isRest(e, entries.indexOf(e), entries)) {
        if (failedBy.has(e.key)) f = failedBy.get(e.key);
        else if (!failedRest) f = 0;
      }
      tr.appendChild(el("td", f === null ? "–" : fmtInt(f), "num"));
      tr.appendChild(el("td", f === null ? "–" : fmtPercent(f, e.conversations), "num"));
      tr.appendChild(el("td", fmtDuration(e.durationSeconds && e.durationSeconds.avg), "num"));
      body.appendChild(tr);
    });
    /* the agent that fails most: the largest named entry of the failed-only breakdown */
    var worst = null;
    (failedList || []).forEach(function (e, i) {
      if (isRest(e, i, failedList) || !(e.conversations > 0)) return;
      if (!worst || e.conversations > worst.conversations) worst = e;
    });
    var out = $("fails-most-agent");
    if (!failedList) out.textContent = "– (the status filter excludes failures)";
    else if (!worst) out.textContent = "none (no failed conversation)";
    else {
      var of = null;
      entries.forEach(function (e, i) {
        if (e.key === worst.key && !isRest(e, i, entries)) of = e.conversations;
      });
      out.textContent = keyText(worst.key) + " (" + fmtInt(worst.conversations) + " failed" +
        (of !== null ? " of " + fmtInt(of) : "") + ")";
    }
  }

  function renderChart(series, f) {
    lastSeries = { series: series, f: f };
    var box = $("chart");
    clear(box);
    var unit = f.interval === "hour" ? "hour" : f.interval === "week" ? "week" : "day";
    $("series-unit").textContent = unit;
    $("series-caption").textContent = "Conversations per " + unit + " (" + f.tz + ")";
    var body = $("series-table").tBodies[0];
    clear(body);
    series = Array.isArray(series) ? series : [];
    series.forEach(function (s) {
      var tr = el("tr");
      var th = el("th");
      th.scope = "row";
      var time = el("time", seriesLabel(s.start, f.interval));
      time.setAttribute("datetime", String(s.start));
      th.appendChild(time);
      tr.appendChild(th);
      tr.appendChild(el("td", fmtInt(s.conversations), "num"));
      tr.appendChild(el("td", fmtInt(s.messages), "num"));
      tr.appendChild(el("td", fmtDuration(s.durationSeconds && s.durationSeconds.avg), "num"));
      body.appendChild(tr);
    });

    var W = Math.max(280, Math.floor(box.clientWidth || 600)), H = 224;
    var left = 40, right = 8, top = 10, bottom = 30;
    var plotW = W - left - right, plotH = H - top - bottom;
    var max = 0, total = 0, busiest = null;
    series.forEach(function (s) {
      var c = s.conversations || 0;
      total += c;
      if (c > max) {
        max = c;
        busiest = s;
      }
    });
    var root = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-labelledby": "chart-title chart-desc", focusable: "false" });
    var title = svg("title", { id: "chart-title" });
    title.textContent = "Conversations per " + unit + ", " + f.tz;
    var desc = svg("desc", { id: "chart-desc" });
    desc.textContent = series.length + " " + unit + (series.length === 1 ? "" : "s") + ", " +
      fmtInt(total) + " conversations" +
      (busiest ? "; the most: " + fmtInt(max) + " on " + seriesLabel(busiest.start, f.interval) : "") +
      ". The same numbers are in the table below.";
    root.appendChild(title);
    root.appendChild(desc);
    var top1 = max > 0 ? max : 1;
    var ticks = top1 <= 4 ? [] : [Math.round(top1 / 2)];
    ticks.unshift(0);
    ticks.push(top1);
    ticks.forEach(function (v) {
      var y = top + plotH - (plotH * v) / top1;
      root.appendChild(svg("line", { x1: left, x2: W - right, y1: y, y2: y, "class": v === 0 ? "axis" : "grid" }));
      var t = svg("text", { x: left - 6, y: y + 4, "text-anchor": "end" });
      t.textContent = fmtInt(v);
      root.appendChild(t);
    });
    var n = series.length;
    if (n) {
      var slot = plotW / n, bw = Math.max(1, slot * 0.7);
      var every = Math.max(1, Math.ceil((n * 64) / plotW));
      series.forEach(function (s, i) {
        var c = s.conversations || 0;
        var h = (plotH * c) / top1;
        var x = left + i * slot + (slot - bw) / 2;
        var r = svg("rect", { x: x, y: top + plotH - h, width: bw, height: Math.max(h, c ? 1 : 0), "class": "bar" });
        var tip = svg("title", {});
        tip.textContent = seriesLabel(s.start, f.interval) + ": " + fmtInt(c) + " conversations";
        r.appendChild(tip);
        root.appendChild(r);
        if (i % every === 0) {
          var lbl = svg("text", { x: left + i * slot + slot / 2, y: H - bottom + 16, "text-anchor": "middle" });
          lbl.textContent = f.interval === "hour" ? String(s.start).slice(11, 16) : String(s.start).slice(5, 10);
          root.appendChild(lbl);
        }
      });
    }
    box.appendChild(root);
  }

  function reportHref(id) {
    return "/api/v1/conversations/" + encodeURIComponent(id) + "/report";
  }

  function appendRows(rows, tz) {
    var body = $("recent").tBodies[0];
    rows.forEach(function (c) {
      if (!c || typeof c !== "object") return;
      var tr = el("tr");
      var td = el("td");
      var a = el("a", c.conversationId);
      a.href = reportHref(String(c.conversationId));
      a.setAttribute("data-conversation-id", String(c.conversationId));
      a.addEventListener("click", function (ev) {
        ev.preventDefault();
        openReport(String(c.conversationId), a);
      });
      td.appendChild(a);
      tr.appendChild(td);
      var when = c.startTime || c.processedAt;
      var tdw = el("td");
      if (when) {
        var t = el("time", localTime(tz, when));
        t.setAttribute("datetime", String(when));
        tdw.appendChild(t);
      } else tdw.textContent = "–";
      tr.appendChild(tdw);
      tr.appendChild(el("td", c.status === undefined || c.status === null ? "–" : c.status));
      tr.appendChild(el("td", keyText(c.agentId)));
      tr.appendChild(el("td", keyText(c.accountId)));
      tr.appendChild(el("td", fmtDuration(c.duration), "num"));
      tr.appendChild(el("td", fmtInt(c.messageCount), "num"));
      body.appendChild(tr);
      shownRows++;
    });
    show($("recent-empty"), shownRows === 0);
  }

  function renderList(page, f, append) {
    if (!append) {
      clear($("recent").tBodies[0]);
      shownRows = 0;
    }
    var rows = page && Array.isArray(page.conversations) ? page.conversations : [];
    appendRows(rows, f.tz);
    nextCursor = page && page.pagination && typeof page.pagination.nextCursor === "string" ? page.pagination.nextCursor : null;
    show($("more"), nextCursor !== null && shownRows < 10000);
  }

  function clearData() {
    ["t-conversations", "t-completed", "t-failed", "t-messages", "t-duration-sum", "t-duration-avg",
      "t-duration-p50", "t-duration-p90", "t-duration-p99"].forEach(function (id) {
      $(id).textContent = "–";
    });
    $("fails-most-agent").textContent = "–";
    clear($("chart"));
    ["series-table", "by-agent", "recent"].forEach(function (id) {
      clear($(id).tBodies[0]);
    });
    ["by-status", "by-platform", "by-account", "by-outcome"].forEach(function (id) {
      clear($(id));
    });
    ["account-list", "agent-list", "platform-list"].forEach(function (id) {
      clear($(id));
    });
    known = { account: new Map(), agent: new Map(), platform: new Map() };
    lastSeries = null;
    nextCursor = null;
    shownRows = 0;
    paged = false;
    lastSuccess = null;
    show($("more"), false);
    show($("recent-empty"), false);
    setError("dash-error", "");
    $("status-line").textContent = "";
  }

  function setError(id, text) {
    var p = $(id);
    p.textContent = text;
    show(p, !!text);
  }

  /* ---------------------------------------------------------------- refresh */
  function clockTime(d) {
    return pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }

  function statusLine(failedNow) {
    var every = refreshMs ? " · refreshes every " + refreshMs / 1000 + " s" : " · auto-refresh off";
    var text;
    if (!failedNow) text = "Updated " + clockTime(lastSuccess);
    else if (lastSuccess) text = "Last updated " + clockTime(lastSuccess) + " (stale: the last refresh failed)";
    else text = "Not updated yet (the refresh failed)";
    if (paged) text += " · the list keeps the rows you loaded (Refresh reloads it)";
    $("status-line").textContent = text + every;
  }

  /* One refresh at a time: a new one aborts the one in flight (its answers are dropped).
   * auto: started by the timer; then the list is left alone once "Show more" was used. */
  function refresh(auto) {
    if (!key) return;
    var f = readFilters();
    if (f.error) {
      setError("filters-error", f.error);
      return;
    }
    setError("filters-error", "");
    if (refreshAbort) refreshAbort.abort();
    var ctl = new AbortController();
    refreshAbort = ctl;
    var gen = ++generation;
    refreshing = true;
    $("refresh-now").disabled = true;
    if (auto !== true) paged = false;
    var keepList = auto === true && paged;
    $("status-line").textContent = "Loading…";
    var wantFailed = f.status === "" || f.status === "failed";
    var lp = listParams(f);
    lp.limit = PAGE_ROWS;
    lp.cursor = ""; /* the first page, not counted */
    var asks = [
      apiJson("/api/v1/analytics", analyticsParams(f), ctl.signal),
      f.status === "failed" || !wantFailed ? Promise.resolve(null) : apiJson("/api/v1/analytics", analyticsParams(f, "failed"), ctl.signal),
      keepList ? Promise.resolve(null) : apiJson("/api/v1/conversations", lp, ctl.signal)
    ];
    Promise.all(asks.map(function (p) {
      return p.then(function (v) {
        return { ok: true, value: v };
      }, function (e) {
        return { ok: false, error: e };
      });
    })).then(function (res) {
      if (gen !== generation || !key) return;
      refreshing = false;
      refreshAbort = null;
      $("refresh-now").disabled = false;
      lastRefresh = Date.now();
      var errors = [];
      for (var i = 0; i < res.length; i++) {
        if (!res[i].ok && res[i].error instanceof ApiError && res[i].error.status === 401) {
          signOut("Your API key was not accepted any more (401). Sign in again.");
          return;
        }
      }
      var a = res[0], failed = res[1], list = res[2];
      if (a.ok) {
        var an = a.value || {};
        renderTotals(an);
        renderChart(an.series, f);
        renderBars("by-status", an.byStatus);
        renderBars("by-platform", an.byPlatform);
        renderBars("by-account", an.byAccount);
        renderBars("by-outcome", an.byOutcome);
        remember("account", an.byAccount);
        remember("agent", an.byAgent);
        remember("platform", an.byPlatform);
        var failedAnswer = f.status === "failed" ? an : failed.ok ? failed.value : null;
        if (!failed.ok) errors.push(describe(failed.error, "Failures by agent"));
        renderAgents(an, wantFailed ? failedAnswer : null);
      } else {
        errors.push(describe(a.error, "Analytics"));
      }
      if (list.ok) {
        if (!keepList) {
          listGen++;
          renderList(list.value, f, false);
        }
      } else errors.push(describe(list.error, "Recent conversations"));
      fillDatalist("account-list", Array.from(known.account.keys()).sort());
      fillDatalist("agent-list", Array.from(known.agent.keys()).sort());
      fillDatalist("platform-list", Array.from(known.platform.keys()).sort());
      setError("dash-error", errors.join(" "));
      if (!errors.length) lastSuccess = new Date();
      statusLine(errors.length > 0);
      document.body.setAttribute("data-refreshed", String(gen));
    });
  }

  function loadMore() {
    if (!key || nextCursor === null) return;
    var f = readFilters();
    if (f.error) return;
    var gen = listGen;
    var lp = listParams(f);
    lp.limit = PAGE_ROWS;
    lp.cursor = nextCursor;
    $("more").disabled = true;
    apiJson("/api/v1/conversations", lp).then(function (page) {
      if (gen !== listGen || !key) return;
      renderList(page, f, true);
      paged = true;
      if (lastSuccess) statusLine(false);
    }, function (e) {
      if (e instanceof ApiError && e.status === 401) signOut("Your API key was not accepted any more (401). Sign in again.");
      else setError("dash-error", describe(e, "More conversations"));
    }).then(function () {
      $("more").disabled = false;
    });
  }

  function startTimer() {
    stopTimer();
    if (!refreshMs) return;
    timer = window.setInterval(function () {
      if (!document.hidden && !refreshing) refresh(true);
    }, refreshMs);
  }

  function stopTimer() {
    if (timer !== null) window.clearInterval(timer);
    timer = null;
  }

  /* ---------------------------------------------------------------- the report */
  function closeReport() {
    reportGen++;
    var d = $("report-dialog");
    if (d.open) d.close();
  }

  /* The Download link exists only while a report's blob: URL is set. */
  function setDownload(url) {
    var a = $("report-download");
    if (url) a.href = url;
    else a.removeAttribute("href");
    show(a, !!url);
  }

  function dropReport() {
    $("report-frame").src = "about:blank";
    setDownload(null);
    if (reportUrl) URL.revokeObjectURL(reportUrl);
    reportUrl = null;
  }

  /* The report needs the key, so it is fetched here and shown from a blob: URL in an iframe
   * sandboxed with no permission at all (no script, no form, no navigation of this page, an
   * opaque origin that cannot read this page or its storage). */
  function openReport(id, opener) {
    var d = $("report-dialog");
    dropReport();
    $("report-title").textContent = "Report: " + id;
    setError("report-error", "");
    $("report-download").setAttribute("download", "report-" + id.replace(/[^A-Za-z0-9._-]/g, "_").slice(0, 100) + ".html");
    d.returnFocusTo = opener;
    if (!d.open) d.showModal();
    if (id === "." || id === "..") {
      /* new URL() resolves "." and ".." as path segments even encoded: the request would go
       * elsewhere, so these ids are not fetched */
      setError("report-error", "The report of a conversation whose id is \"" + id + "\" cannot be opened here: use the API.");
      return;
    }
    var asked = ++reportGen;
    apiFetch(reportHref(id), {}).then(function (r) {
      var type = (r.resp.headers.get("Content-Type") || "").split(";")[0].trim().toLowerCase();
      if (type !== "text/html") throw new ApiError(-1, "TYPE", "the answer is " + (type || "untyped") + ", not text/html");
      return r.text;
    }).then(function (html) {
      if (!d.open || asked !== reportGen) return;
      reportUrl = URL.createObjectURL(new Blob([html], { type: "text/html;charset=utf-8" }));
      $("report-frame").src = reportUrl;
      setDownload(reportUrl);
    }, function (e) {
      if (asked !== reportGen) return;
      if (e instanceof ApiError && e.status === 401) {
        closeReport();
        signOut("Your API key was not accepted any more (401). Sign in again.");
        return;
      }
      setError("report-error", e instanceof ApiError && e.code === "TYPE" ? "The report could not be shown: " + e.message + "." : describe(e, "The report"));
    });
  }

  /* ---------------------------------------------------------------- export */
  function exportAs(format, button) {
    var f = readFilters();
    if (f.error) {
      setError("filters-error", f.error);
      return;
    }
    var p = listParams(f);
    p.format = format;
    if (format === "csv") p.bom = "true"; /* a file for a spreadsheet: Excel reads UTF-8 by its mark */
    button.disabled = true;
    $("status-line").textContent = "Exporting " + format.toUpperCase() + "…";
    apiFetch("/api/v1/conversations/export", p, null, null, true).then(function (resp) {
      return resp.blob();
    }).then(function (blob) {
      var name = "conversations-" + $("f-from").value + "-to-" + $("f-to").value + (format === "csv" ? ".csv" : ".ndjson");
      var url = URL.createObjectURL(blob);
      var a = document.createElement("a");
      a.href = url;
      a.download = name;
      a.hidden = true;
      document.body.appendChild(a);
      a.click();
      document.body.removeChild(a);
      window.setTimeout(function () {
        URL.revokeObjectURL(url);
      }, 60000);
      $("status-line").textContent = "Saved " + name + " (" + fmtInt(blob.size) + " bytes).";
    }, function (e) {
      if (e instanceof ApiError && e.status === 401) signOut("Your API key was not accepted any more (401). Sign in again.");
      else setError("dash-error", describe(e, "The export"));
    }).then(function () {
      button.disabled = false;
    });
  }

  /* ---------------------------------------------------------------- sign in and out */
  function showDashboard() {
    show($("signin-view"), false);
    show($("dash-view"), true);
    show($("session"), true);
  }

  function signOut(message) {
    key = null;
    generation++;
    listGen++;
    refreshing = false;
    if (refreshAbort) refreshAbort.abort();
    refreshAbort = null;
    $("refresh-now").disabled = false;
    try {
      window.sessionStorage.removeItem(KEY_STORAGE);
    } catch (e) { /* storage refused */ }
    stopTimer();
    closeReport();
    dropReport();
    clearData();
    show($("dash-view"), false);
    show($("session"), false);
    show($("signin-view"), true);
    $("api-key").value = "";
    setError("signin-error", message || "");
    $("api-key").focus();
  }

  function signIn(ev) {
    ev.preventDefault();
    var k = $("api-key").value.trim();
    if (!k) {
      setError("signin-error", "Enter an API key.");
      $("api-key").focus();
      return;
    }
    if (!/^[\x21-\x7e]+$/.test(k)) {
      setError("signin-error", "That is not an API key: a key is printable ASCII without spaces.");
      $("api-key").focus();
      return;
    }
    setError("signin-error", "");
    $("signin-button").disabled = true;
    /* the cheapest read that needs the read scope */
    apiFetch("/api/v1/conversations", { limit: 1, cursor: "" }, k).then(function () {
      key = k;
      try {
        window.sessionStorage.setItem(KEY_STORAGE, k);
      } catch (e) { /* kept in memory only */ }
      $("api-key").value = "";
      showDashboard();
      refresh();
      startTimer();
      $("main").focus();
    }, function (e) {
      setError("signin-error", describe(e, "Sign-in"));
      $("api-key").focus();
      $("api-key").select();
    }).then(function () {
      $("signin-button").disabled = false;
    });
  }

  /* ---------------------------------------------------------------- start */
  function filtersChanged() {
    if (changeTimer !== null) window.clearTimeout(changeTimer);
    changeTimer = null;
    nextCursor = null;
    shownRows = 0;
    refresh();
  }

  /* "change" of a control: a choice (select, date) applies at once; a text field waits a
   * moment, so that Enter (which submits too) or a quick next change makes one refresh. */
  function filterChanged(ev) {
    if (changeTimer !== null) window.clearTimeout(changeTimer);
    changeTimer = null;
    if (ev && ev.target && ev.target.type === "text") changeTimer = window.setTimeout(filtersChanged, 400);
    else filtersChanged();
  }

  function init() {
    setDefaultFilters();
    if (typeof Intl.supportedValuesOf === "function") {
      try {
        fillDatalist("tz-list", Intl.supportedValuesOf("timeZone"));
      } catch (e) { /* no list: free text */ }
    }
    $("signin-form").addEventListener("submit", signIn);
    $("sign-out").addEventListener("click", function () {
      signOut("Signed out. The key was removed from this browser tab.");
    });
    $("refresh-now").addEventListener("click", refresh);
    $("auto-refresh").addEventListener("change", function () {
      var v = parseInt($("auto-refresh").value, 10);
      refreshMs = isFinite(v) && v > 0 ? v * 1000 : 0;
      if (key) {
        startTimer();
        refresh(true);
      }
    });
    $("filters").addEventListener("submit", function (ev) {
      ev.preventDefault();
      filtersChanged();
    });
    $("filters").addEventListener("change", filterChanged);
    $("reset").addEventListener("click", function () {
      setDefaultFilters();
      filtersChanged();
    });
    $("more").addEventListener("click", loadMore);
    $("export-csv").addEventListener("click", function () {
      exportAs("csv", $("export-csv"));
    });
    $("export-ndjson").addEventListener("click", function () {
      exportAs("ndjson", $("export-ndjson"));
    });
    $("report-close").addEventListener("click", closeReport);
    $("report-dialog").addEventListener("close", function () {
      dropReport();
      var back = $("report-dialog").returnFocusTo;
      if (back && document.body.contains(back)) back.focus();
    });
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden && key && refreshMs && Date.now() - lastRefresh > refreshMs) refresh(true);
    });
    var resizeTimer = null;
    window.addEventListener("resize", function () {
      if (resizeTimer) window.clearTimeout(resizeTimer);
      resizeTimer = window.setTimeout(function () {
        if (lastSeries) renderChart(lastSeries.series, lastSeries.f);
      }, 150);
    });

    var saved = null;
    try {
      saved = window.sessionStorage.getItem(KEY_STORAGE);
    } catch (e) { /* storage refused */ }
    if (saved) {
      key = saved;
      showDashboard();
      refresh();
      startTimer();
    } else {
      show($("signin-view"), true);
      $("api-key").focus();
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
