// fieldgate status page: renders /api/v1/status, then follows /events
// (server-sent events carrying the same document). No dependencies.
"use strict";
(function () {
  var esc = function (s) {
    return String(s == null ? "" : s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  };
  var dur = function (s) {
    if (s == null) return "–";
    s = Math.round(s);
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
    return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
  };
  var bytes = function (n) {
    if (n < 1024) return n + " B";
    if (n < 1048576) return (n / 1024).toFixed(1) + " KiB";
    return (n / 1048576).toFixed(1) + " MiB";
  };
  var time = function (ms) { return ms ? new Date(ms).toLocaleTimeString() : "never"; };
  var value = function (v) {
    if (v === null || v === undefined) return "–";
    if (typeof v === "number" && !Number.isInteger(v)) return String(Math.round(v * 1000) / 1000);
    return String(v);
  };
  var row = function (k, v) { return "<dt>" + esc(k) + "</dt><dd>" + v + "</dd>"; };

  function device(d) {
    var h = '<section class="device ' + esc(d.state) + '" id="dev-' + esc(d.name) + '" data-state="' + esc(d.state) + '">';
    h += "<h2>" + esc(d.name) + ' <span class="badge ' + esc(d.state) + '">' + esc(d.state) + "</span>";
    h += ' <span class="sub">' + esc(d.kind) + "</span></h2>";
    if (d.error) h += '<p class="error">' + esc(d.error) + "</p>";
    h += '<p class="sub">last good value ' + esc(time(d.last_ok_ts)) + "</p>";
    h += '<table><tr><th>point</th><th>value</th><th class="q">quality</th><th>age</th></tr>';
    d.points.forEach(function (p) {
      h += '<tr class="' + (p.stale ? "stale" : "fresh") + '" data-point="' + esc(p.name) + '">';
      h += "<td>" + esc(p.name) + (p.writable ? ' <span class="sub">(writable)</span>' : "") + "</td>";
      h += '<td class="value" id="val-' + esc(d.name) + "-" + esc(p.name) + '">' + esc(value(p.value)) + (p.unit ? " " + esc(p.unit) : "") + "</td>";
      h += '<td class="q">' + esc(p.quality || "–") + "</td>";
      h += '<td class="age">' + esc(dur(p.age_s)) + (p.stale ? ' <span class="badge stale">stale</span>' : "") + "</td></tr>";
    });
    return h + "</table></section>";
  }

  function render(s) {
    document.getElementById("gateway").textContent = s.gateway;
    document.title = s.gateway + " · fieldgate";
    var online = s.devices.filter(function (d) { return d.state === "online"; }).length;
    document.getElementById("meta").textContent =
      "fieldgate " + s.version + " · up " + dur(s.uptime_s) + " · " + online + "/" + s.devices.length + " devices online";
    var u = s.uplink, b = s.broker, html = "";
    html += '<div class="card" id="uplink"><h2>Uplink ';
    if (!u.configured) {
      html += '<span class="badge">not configured</span></h2></div>';
    } else {
      html += '<span class="badge ' + (u.connected ? "connected" : "down") + '">' + (u.connected ? "connected" : "down") + "</span></h2><dl>";
      html += row("outbox", esc(u.outbox_depth) + " messages, " + esc(bytes(u.outbox_bytes)));
      html += row("oldest waiting", esc(dur(u.oldest_age_s)));
      html += row("send rate", esc(u.send_rate) + " msg/s");
      html += row("time to drain", u.drain_eta_s == null ? "– (not sending)" : esc(dur(u.drain_eta_s)));
      html += row("sent / acked", esc(u.sent) + " / " + esc(u.acked)) + "</dl></div>";
    }
    html += '<div class="card" id="broker"><h2>Embedded broker</h2><dl>';
    html += row("clients", esc(b.clients));
    html += row("messages in / out", esc(b.publish_in_per_s) + " / " + esc(b.publish_out_per_s) + " per s");
    html += row("dropped", esc(b.dropped));
    html += row("retained", esc(b.retained)) + "</dl></div>";
    document.getElementById("summary").innerHTML = html;
    document.getElementById("devices").innerHTML = s.devices.map(device).join("");
    var w = s.warnings.map(function (e) {
      return '<li class="' + esc(e.level) + '"><span class="sub">' + esc(time(e.ts)) + " " + esc(e.level) + "</span> " + esc(e.message) + "</li>";
    });
    document.getElementById("warnings").innerHTML = w.length ? w.join("") : '<li class="sub">none</li>';
  }

  var live = document.getElementById("live");
  if (window.FIELDGATE_INITIAL) render(window.FIELDGATE_INITIAL);
  if (window.EventSource) {
    var es = new EventSource("/events");
    es.onmessage = function (e) {
      live.textContent = "live";
      live.className = "badge live";
      render(JSON.parse(e.data));
    };
    es.onerror = function () {
      live.textContent = "reconnecting";
      live.className = "badge down";
    };
  }
})();
