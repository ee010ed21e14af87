// fleetd web UI: live updates from the event stream, relative times, the diff on demand.
// Same origin only; no inline script anywhere (the Content-Security-Policy forbids it).
// Pages work without this file; it only keeps them current.
"use strict";
(function () {
  var MIN_GAP = 1000;      // ms between two refreshes of the page's regions
  var SETTLE = 1500;       // ms: refresh once more after a burst, for changes that end without an event
  var pending = null, settle = null, last = 0, hidden = false;

  function regions() { return document.querySelectorAll("[data-live]"); }

  function refresh() {
    pending = null;
    if (document.hidden) { hidden = true; return; }
    last = Date.now();
    regions().forEach(function (el) {
      var u = new URL(location.href);
      u.searchParams.set("fragment", el.id);
      fetch(u, { credentials: "same-origin", headers: { "X-Fleetd-Fragment": "1" } })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) { if (html !== null) { el.innerHTML = html; ages(el); } })
        .catch(function () {});
    });
  }

  function schedule() {
    if (pending === null) pending = setTimeout(refresh, Math.max(150, MIN_GAP - (Date.now() - last)));
    clearTimeout(settle);
    settle = setTimeout(function () { if (pending === null) refresh(); }, SETTLE);
  }

  function ago(s) {
    if (s < 5) return "just now";
    if (s >= 86400) return Math.floor(s / 86400) + "d ago";
    if (s >= 3600) return Math.floor(s / 3600) + "h ago";
    if (s >= 60) return Math.floor(s / 60) + "m ago";
    return Math.floor(s) + "s ago";
  }

  function ages(root) {
    var now = Date.now() / 1000;
    (root || document).querySelectorAll("time[data-t]").forEach(function (t) {
      t.textContent = ago(now - Number(t.getAttribute("data-t")));
    });
  }

  function connect() {
    var dot = document.getElementById("live");
    if (!window.EventSource || !regions().length) { if (dot) dot.className = "live"; return; }
    var source = new EventSource(document.body.getAttribute("data-stream") || "/api/v1/stream");
    source.onopen = function () { if (dot) { dot.className = "live on"; dot.title = "live: updates as they happen"; } };
    source.onerror = function () { if (dot) { dot.className = "live off"; dot.title = "reconnecting…"; } };
    source.onmessage = function () { schedule(); };
  }

  function diffs() {
    document.querySelectorAll("form[data-fragment]").forEach(function (form) {
      form.addEventListener("submit", function (ev) {
        ev.preventDefault();
        var target = document.getElementById(form.getAttribute("data-fragment"));
        var button = form.querySelector("button");
        if (button) { button.disabled = true; button.textContent = "Computing…"; }
        var u = new URL(form.action, location.href);
        u.searchParams.set("fragment", form.getAttribute("data-fragment"));
        fetch(u, { credentials: "same-origin" })
          .then(function (r) { return r.text(); })
          .then(function (html) { if (target) target.innerHTML = html; })
          .catch(function () { if (button) { button.disabled = false; button.textContent = "Compute diff"; } });
      });
    });
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && hidden) { hidden = false; refresh(); }
  });
  document.addEventListener("DOMContentLoaded", function () {
    connect();
    diffs();
    ages();
    setInterval(ages, 30000);
  });
})();
