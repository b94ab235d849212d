// jetjobs web console: keeps the overview and the counts of a table's pages live by polling
// GET /api/overview. It writes text with textContent and draws with SVG elements only, never
// HTML from data. Every page works without it.
(function () {
  "use strict";
  var body = document.body;
  var page = body.dataset.page;
  if (page !== "overview" && page !== "table" && page !== "errors") {
    return;
  }
  var interval = Math.max(parseFloat(body.dataset.interval) || 2, 0.2) * 1000;
  var live = document.getElementById("live");
  var SVG = "http://www.w3.org/2000/svg";
  var statuses = ["pending", "reserved", "success", "error", "ignore"];

  function text(el, value) {
    if (el && el.textContent !== value) {
      el.textContent = value;
    }
  }
  function rate(r) {
    return r === null || r === undefined ? "-" : r.toFixed(1) + "/s";
  }
  function eta(s) {
    if (s === null || s === undefined) return "-";
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = Math.round(s % 60);
    return (h ? h + "h" : "") + (h || m ? m + "m" : "") + sec + "s";
  }
  function leader(t) {
    if (t.leader) {
      return "connection " + t.leader.connection_id + (t.leader.host ? " from " + t.leader.host : "");
    }
    return t.leader_error ? "unknown: " + t.leader_error : "no scheduler leads";
  }
  function scopeOf(table) {
    var found = null;
    document.querySelectorAll("[data-table]").forEach(function (el) {
      if (el !== body && el.dataset.table === table) found = el;
    });
    return found;
  }
  function field(scope, name) {
    return scope.querySelector('[data-field="' + name + '"]');
  }

  function drawBar(el, t) {
    if (!el) return;
    while (el.firstChild) el.removeChild(el.firstChild);
    if (!t.total) return;
    statuses.forEach(function (s) {
      if (!t[s]) return;
      var span = document.createElement("span");
      span.className = "st-bg " + s;
      span.style.width = (100 * t[s] / t.total) + "%";
      span.title = s + ": " + t[s];
      el.appendChild(span);
    });
  }

  function drawHistory(svg, history) {
    if (!svg) return 0;
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    var n = history.length, w = 300, h = 60, max = 0;
    history.forEach(function (p) { if (p.rate > max) max = p.rate; });
    var slot = w / Math.max(n, 30);
    history.forEach(function (p, i) {
      var v = p.rate || 0;
      var bh = max > 0 ? Math.max((v / max) * (h - 4), v > 0 ? 1 : 0) : 0;
      var r = document.createElementNS(SVG, "rect");
      r.setAttribute("x", String(w - (n - i) * slot));
      r.setAttribute("y", String(h - bh));
      r.setAttribute("width", String(Math.max(slot - 1, 1)));
      r.setAttribute("height", String(bh));
      r.setAttribute("class", "rate");
      var title = document.createElementNS(SVG, "title");
      title.textContent = p.time + ": " + rate(p.rate) + ", " + p.remaining + " left";
      r.appendChild(title);
      svg.appendChild(r);
    });
    return max;
  }

  function drawStream(table, t) {
    if (!table) return;
    var tbody = table.tBodies[0];
    while (tbody.firstChild) tbody.removeChild(tbody.firstChild);
    var rows = t.stream || [];
    if (!rows.length) {
      var tr = tbody.insertRow(), td = tr.insertCell();
      td.colSpan = 5;
      td.className = "none";
      td.textContent = t.stream_error ? "unavailable: " + t.stream_error : "no messages, no consumers";
      return;
    }
    rows.forEach(function (r) {
      var tr = tbody.insertRow();
      [r.priority === null ? "stray" : String(r.priority), String(r.waiting), String(r.ack_pending),
        String(r.redelivered), r.consumer || "-"].forEach(function (v) {
        tr.insertCell().textContent = v;
      });
    });
  }

  function update(o) {
    o.tables.forEach(function (t) {
      var scope = scopeOf(t.table);
      if (!scope) return;
      statuses.concat(["total"]).forEach(function (s) {
        text(field(scope, s), String(t[s]));
      });
      var problem = field(scope, "read_error");
      if (problem) {
        text(problem, t.read_error || "");
        problem.hidden = !t.read_error;
      }
      text(field(scope, "rate"), rate(t.rate));
      text(field(scope, "eta_seconds"), eta(t.eta_seconds));
      text(field(scope, "leader"), leader(t));
      drawBar(field(scope, "bar"), t);
      var max = drawHistory(field(scope, "history"), t.history || []);
      text(field(scope, "chart_max"), max > 0 ? "(highest " + rate(max) + ")" : "");
      drawStream(field(scope, "stream"), t);
    });
    text(document.getElementById("updated"), "Read " + o.time + ".");
    if (live) {
      live.className = "live ok";
      live.textContent = "live";
    }
  }

  function poll() {
    fetch("/api/overview", { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(update)
      .catch(function (e) {
        if (live) {
          live.className = "live failed";
          live.textContent = "not updating: " + e.message;
        }
      })
      .finally(function () {
        setTimeout(poll, interval);
      });
  }
  poll();
})();
