/* opsbook site: the run index and its filters. Plain JavaScript, no library and no network: the runs come
   from runs.js (window.OPSBOOK_RUNS, loaded with a <script src>), so the page works from file://.
   Rows are built with textContent: nothing from a record is ever parsed as HTML.
   The filters can be given in the URL: index.html?status=failed or index.html#runbook=X&from=2026-01-01
   (keys: runbook status mode target operator incident verify from to q); the page keeps them in #... */
(function () {
  "use strict";
  var RUNS = window.OPSBOOK_RUNS || [];
  var KEYS = ["runbook", "status", "mode", "target", "operator", "incident", "verify", "from", "to", "q"];
  var STEP = 1000;
  var form = document.getElementById("filters");
  var body = document.getElementById("runs-body");
  var count = document.getElementById("count");
  var more = document.getElementById("more");
  var limit = STEP;

  function fromUrl() {
    var out = {};
    [window.location.search, window.location.hash].forEach(function (part) {
      var s = (part || "").replace(/^[?#]/, "");
      if (!s) { return; }
      var p = new URLSearchParams(s);
      KEYS.forEach(function (k) { if (p.has(k)) { out[k] = p.get(k); } });
    });
    return out;
  }

  function setField(k, v) {
    var el = form.elements[k];
    if (!el) { return; }
    if (el.tagName === "SELECT" && v) {
      var known = Array.prototype.some.call(el.options, function (o) { return o.value === v; });
      if (!known) {
        var o = document.createElement("option");
        o.value = v;
        o.textContent = v;
        el.appendChild(o);
      }
    }
    el.value = v;
  }

  function state() {
    var f = {};
    KEYS.forEach(function (k) { var el = form.elements[k]; f[k] = el ? String(el.value).trim() : ""; });
    return f;
  }

  function matches(r, f) {
    if (f.runbook && r.runbook !== f.runbook) { return false; }
    if (f.status && r.status !== f.status) { return false; }
    if (f.mode && r.mode !== f.mode) { return false; }
    if (f.target && r.target !== f.target) { return false; }
    if (f.operator && r.operator !== f.operator) { return false; }
    if (f.incident && r.incident !== f.incident) { return false; }
    if (f.verify && r.verify !== f.verify) { return false; }
    var day = String(r.started || "").slice(0, 10);
    if (f.from && (!day || day < f.from)) { return false; }
    if (f.to && (!day || day > f.to)) { return false; }
    if (f.q) {
      var hay = [r.id, r.runbook, r.headline, r.incident, r.operator, r.target].join(" ").toLowerCase();
      if (hay.indexOf(f.q.toLowerCase()) < 0) { return false; }
    }
    return true;
  }

  function td(tr, text, cls) {
    var c = document.createElement("td");
    c.textContent = text == null ? "" : String(text);
    if (cls) { c.className = cls; }
    tr.appendChild(c);
    return c;
  }

  function link(tr, text, href) {
    var c = document.createElement("td");
    if (href) {
      var a = document.createElement("a");
      a.setAttribute("href", href);
      a.textContent = text;
      c.appendChild(a);
    } else {
      c.textContent = text || "";
    }
    tr.appendChild(c);
  }

  function render() {
    var f = state();
    var shown = 0, total = 0;
    var frag = document.createDocumentFragment();
    for (var i = 0; i < RUNS.length; i++) {
      var r = RUNS[i];
      if (!matches(r, f)) { continue; }
      total++;
      if (shown >= limit) { continue; }
      shown++;
      var tr = document.createElement("tr");
      tr.className = "st-" + String(r.status).replace(/[^a-z]/g, "");
      tr.setAttribute("data-run", r.id);
      td(tr, r.started);
      var c = document.createElement("td");
      var a = document.createElement("a");
      a.setAttribute("href", r.page);
      var code = document.createElement("code");
      code.textContent = r.id;
      a.appendChild(code);
      c.appendChild(a);
      tr.appendChild(c);
      td(tr, r.runbook);
      td(tr, r.status === "started" ? "started, never finished" : r.status);
      td(tr, r.mode);
      td(tr, r.target);
      td(tr, r.operator);
      link(tr, r.incident, r.incident_page);
      td(tr, r.headline, "summary");
      td(tr, r.verify === "problem" ? "PROBLEM" : r.verify, r.verify === "problem" ? "v-bad" : "v-ok");
      frag.appendChild(tr);
    }
    body.textContent = "";
    body.appendChild(frag);
    count.textContent = "(" + total + " of " + RUNS.length + (shown < total ? ", first " + shown + " shown" : "") + ")";
    more.hidden = shown >= total;
    more.textContent = "show all " + total;
  }

  function save() {
    var f = state(), p = new URLSearchParams();
    KEYS.forEach(function (k) { if (f[k]) { p.set(k, f[k]); } });
    var q = p.toString();
    try {
      window.history.replaceState(null, "", window.location.pathname + (q ? "#" + q : ""));
    } catch (e) {
      window.location.replace("#" + q);
    }
  }

  function apply() {
    var u = fromUrl();
    KEYS.forEach(function (k) { setField(k, u[k] || ""); });
    limit = STEP;
    render();
  }

  form.addEventListener("input", function () { limit = STEP; render(); save(); });
  form.addEventListener("change", function () { limit = STEP; render(); save(); });
  form.addEventListener("submit", function (ev) { ev.preventDefault(); });
  form.addEventListener("reset", function () {
    window.setTimeout(function () { limit = STEP; render(); save(); }, 0);
  });
  more.addEventListener("click", function () { limit = Infinity; render(); });
  window.addEventListener("hashchange", apply);
  apply();
  document.body.setAttribute("data-rendered", String(RUNS.length));
})();
