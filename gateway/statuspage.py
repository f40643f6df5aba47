"""The operator status page's HTML: one self-contained document (inline CSS and JS, no font, image or script from
anywhere), so it works on a machine without internet and on a phone (one column below 40em).

The page holds no data: it polls ``/status.json`` (gateway.status) every two seconds with the operator token in
an Authorization header. The token comes in the link's fragment (``/status#token=iqt_...``), as GraphiQL's does
(gateway.graphiql): the browser never sends a fragment to a server, so no access log or proxy sees it, and the
page takes it out of the address bar and the history at once. It is kept in the page's memory only (like
GraphiQL's headers, not persisted): a reload asks for it again in a form.

Everything the JSON carries (addresses, folder names, errors) is put in the page with ``textContent``, never as
HTML, and the response's Content-Security-Policy allows only this page's own script and style (by hash) and
requests to its own origin: a folder named ``<img src=//evil>`` is text, and nothing is fetched from elsewhere.
"""

from __future__ import annotations

import base64
import hashlib

from starlette.responses import HTMLResponse

POLL_MS = 2000

_STYLE = """
:root { color-scheme: light dark; --fg: #1b1f24; --muted: #5b6570; --bg: #f6f7f9; --card: #fff; --line: #d8dde3;
  --ok: #1a7f37; --warn: #9a6700; --bad: #cf222e; --bar: #2f81f7; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6edf3; --muted: #9aa5b1; --bg: #0d1117; --card: #161b22;
  --line: #30363d; } }
* { box-sizing: border-box; }
[hidden] { display: none !important; }
body { margin: 0; font: 15px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
  background: var(--bg); }
header { display: flex; flex-wrap: wrap; gap: .25em 1em; align-items: baseline; padding: .75em 1em;
  border-bottom: 1px solid var(--line); background: var(--card); position: sticky; top: 0; }
h1 { font-size: 1.1em; margin: 0; }
main { max-width: 64em; margin: 0 auto; padding: .75em; display: grid; gap: .75em;
  grid-template-columns: repeat(auto-fill, minmax(min(100%, 30em), 1fr)); }
.muted { color: var(--muted); }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: .75em; min-width: 0; }
.card h2 { font-size: 1em; margin: 0 0 .25em; overflow-wrap: anywhere; }
.badge { display: inline-block; padding: 0 .5em; border-radius: 1em; font-size: .85em; border: 1px solid; }
.s-ready, .s-follow, .s-active { color: var(--ok); }
.s-syncing, .s-initial, .s-pending, .s-resync { color: var(--warn); }
.s-error, .s-auth_failed, .s-disabled, .s-failing { color: var(--bad); }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .1em .75em; margin: .5em 0; font-size: .9em; }
dt { color: var(--muted); } dd { margin: 0; overflow-wrap: anywhere; }
.error { color: var(--bad); font-size: .9em; overflow-wrap: anywhere; margin: .25em 0; }
.folder { padding: .35em 0; border-top: 1px solid var(--line); }
.folder .row { display: flex; justify-content: space-between; gap: .5em; }
.folder .name { overflow-wrap: anywhere; }
.progress-text { font-variant-numeric: tabular-nums; white-space: nowrap; }
.bar { height: 6px; background: var(--line); border-radius: 3px; overflow: hidden; margin-top: .2em; }
.bar > div { height: 100%; background: var(--bar); width: 0; transition: width .5s; }
.hook { font-size: .9em; border-top: 1px solid var(--line); padding: .35em 0; overflow-wrap: anywhere; }
form { max-width: 40em; margin: 2em auto; padding: 1em; display: flex; flex-wrap: wrap; gap: .5em; }
form input { flex: 1 1 20em; padding: .5em; font: inherit; }
form button { padding: .5em 1em; font: inherit; }
#problem { color: var(--bad); padding: 0 1em; }
"""

_SCRIPT = """
(function () {
  "use strict";
  var POLL_MS = __POLL_MS__;
  var token = null;
  var timer = null;
  var fragment = new URLSearchParams(window.location.hash.replace(/^#/, ""));
  if (window.location.hash) {
    // The token travels in the fragment only: out of the address bar and the history at once.
    window.history.replaceState(null, "", window.location.pathname + window.location.search);
  }
  if (fragment.get("token")) token = fragment.get("token");

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function ago(iso, now) {
    if (!iso) return "";
    var s = Math.max(0, Math.round((Date.parse(now) - Date.parse(iso)) / 1000));
    if (s < 90) return s + " s ago";
    if (s < 5400) return Math.round(s / 60) + " min ago";
    if (s < 129600) return Math.round(s / 3600) + " h ago";
    return Math.round(s / 86400) + " days ago";
  }
  function when(iso, now) {
    var t = el("time", null, ago(iso, now));
    t.dateTime = iso; t.title = iso + " UTC";
    return t;
  }
  function badge(state) { return el("span", "badge s-" + state, state); }
  function pair(dl, name, value) {
    dl.appendChild(el("dt", null, name));
    var dd = el("dd");
    if (value instanceof Node) dd.appendChild(value); else dd.textContent = value;
    dl.appendChild(dd);
  }
  function bar(mirrored, total) {
    var b = el("div", "bar"), fill = el("div");
    var pct = total ? Math.min(100, 100 * mirrored / total) : (total === 0 ? 100 : 0);
    fill.style.width = pct.toFixed(1) + "%";
    b.appendChild(fill);
    return b;
  }
  function errorLine(text, at, now) {
    var p = el("p", "error", text + " ");
    if (at) {
      p.appendChild(el("span", "muted", "("));
      p.appendChild(when(at, now));
      p.appendChild(el("span", "muted", ")"));
    }
    return p;
  }

  function account(a, now) {
    var card = el("section", "card");
    card.dataset.account = a.accountId;
    var h = el("h2", null, a.address + " ");
    h.appendChild(badge(a.syncState));
    card.appendChild(h);
    var dl = el("dl");
    pair(dl, "account", "#" + a.accountId);
    pair(dl, "messages", a.progress);
    var expired = a.leaseHolder ? " (the lease of " + a.leaseHolder + " expired)" : "";
    pair(dl, "sync process", a.leaseLive ? a.leaseHolder : "none" + expired);
    pair(dl, "change log", a.changeLogHead ? "seq " + a.changeLogHead : "empty");
    card.appendChild(dl);
    if (a.syncError) card.appendChild(errorLine(a.syncError, a.syncErrorAt, now));
    a.folders.forEach(function (f) {
      var row = el("div", "folder");
      row.dataset.folder = f.name;
      var top = el("div", "row");
      var name = el("span", "name", f.name + " ");
      name.appendChild(badge(f.syncState));
      top.appendChild(name);
      top.appendChild(el("span", "progress-text", f.progress));
      row.appendChild(top);
      row.appendChild(bar(f.mirrored, f.serverCount));
      if (f.syncError) row.appendChild(errorLine(f.syncError, f.syncErrorAt, now));
      card.appendChild(row);
    });
    a.webhooks.forEach(function (w) {
      var row = el("div", "hook");
      row.dataset.webhook = w.id;
      row.appendChild(badge(w.failing ? (w.state === "active" ? "failing" : w.state) : w.state));
      row.appendChild(el("span", null, " " + w.endpoint + " "));
      var last = w.lastAttemptAt ? "last delivery " : "no delivery yet";
      row.appendChild(el("span", "muted", last));
      if (w.lastAttemptAt) {
        row.appendChild(when(w.lastAttemptAt, now));
        row.appendChild(el("span", "muted", " (" + (w.lastStatus || w.lastError || "no response") + ")"));
      }
      if (w.behind) row.appendChild(el("span", "muted", ", " + w.behind + " behind"));
      if (w.disabledReason) row.appendChild(el("p", "error", w.disabledReason));
      card.appendChild(row);
    });
    return card;
  }

  function render(data) {
    var main = document.getElementById("accounts");
    var cards = data.accounts.map(function (a) { return account(a, data.takenAt); });
    main.replaceChildren.apply(main, cards);
    var errors = data.accounts.filter(function (a) { return a.syncError; }).length;
    var hooks = data.accounts.reduce(function (n, a) { return n + a.failingWebhooks; }, 0);
    document.getElementById("summary").textContent =
      data.accounts.length + " accounts, " + errors + " with errors, " + hooks + " failing webhooks";
    var u = document.getElementById("updated");
    u.textContent = "updated " + new Date(Date.parse(data.takenAt)).toLocaleTimeString();
    u.dateTime = data.takenAt;
  }

  function problem(text) {
    document.getElementById("problem").textContent = text || "";
  }
  function ask(text) {
    token = null;
    if (timer !== null) { clearTimeout(timer); timer = null; }
    problem(text);
    document.getElementById("login").hidden = false;
  }

  function poll() {
    timer = null;
    if (token === null) return;
    fetch("status.json", { headers: { Authorization: "Bearer " + token }, cache: "no-store" })
      .then(function (r) {
        return r.json().then(function (body) { return { status: r.status, body: body }; });
      })
      .then(function (res) {
        if (res.status === 401 || res.status === 403) {
          ask(res.body.errors && res.body.errors[0] ? res.body.errors[0].message : "refused");
          return;
        }
        if (res.status !== 200) throw new Error("HTTP " + res.status);
        problem("");
        render(res.body);
        timer = setTimeout(poll, POLL_MS);
      })
      .catch(function (e) {
        problem("cannot reach the gateway (" + e.message + "); trying again");
        timer = setTimeout(poll, POLL_MS * 2);
      });
  }

  document.getElementById("login").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var field = document.getElementById("token");
    token = field.value.trim() || null;
    field.value = "";
    document.getElementById("login").hidden = token !== null;
    poll();
  });
  if (token === null) ask("");
  else { document.getElementById("login").hidden = true; poll(); }
})();
""".replace("__POLL_MS__", str(POLL_MS))

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>inboxql status</title>
<style>{style}</style>
</head>
<body>
<header><h1>inboxql status</h1><span id="summary" class="muted"></span><time id="updated" class="muted"></time></header>
<p id="problem" role="alert"></p>
<form id="login" hidden>
<input id="token" type="password" autocomplete="off" placeholder="operator token (iqt_...)" aria-label="operator token">
<button type="submit">Show</button>
</form>
<main id="accounts"></main>
<script>{script}</script>
</body>
</html>
"""


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


BODY = _PAGE.format(style=_STYLE, script=_SCRIPT)
# Only this page's own script and style run, and it may fetch only from its own origin.
POLICY = (
    f"default-src 'none'; script-src {_sha256(_SCRIPT)}; style-src {_sha256(_STYLE)}; connect-src 'self'; "
    "img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def status_page() -> HTMLResponse:
    return HTMLResponse(
        BODY,
        headers={
            "content-security-policy": POLICY,
            "referrer-policy": "no-referrer",
            "x-content-type-options": "nosniff",
            "cache-control": "no-store",
        },
    )
