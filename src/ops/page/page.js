// fieldgate status page: renders /api/v1/status, then follows /events
// (server-sent events carrying the same document). Trends come from
// /api/v1/history (every 30 s) and are extended by each live document;
// charts are drawn by chart.js. No dependencies.
"use strict";
(function () {
  var C = window.FG_CHART;
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
  var levels = { 3: "3.1", 4: "3.1.1", 5: "5.0" };

  var hist = null, uplinkDoc = null, last = null;
  var get = function (url, then) {
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (j) { if (j) then(j); })
      .catch(function () {});
  };
  var histDevice = function (name) {
    return hist && hist.devices.find(function (d) { return d.name === name; });
  };

  // a live document's values extend the trends (a reading not good: a gap)
  function extend(s) {
    if (!hist) return;
    s.devices.forEach(function (d) {
      var hd = histDevice(d.name);
      if (!hd) return;
      d.points.forEach(function (p) {
        if (p.ts == null || typeof p.value === "string") return;
        var h = hd.points[p.name] || (hd.points[p.name] = { raw: [], buckets: [] });
        var lastTs = h.raw.length ? h.raw[h.raw.length - 1][0] : 0;
        if (p.ts <= lastTs) return;
        var v = p.quality === "good" && p.value != null ? Number(p.value) : null;
        h.raw.push([p.ts, v]);
        if (h.raw.length > 120) h.raw.shift();
      });
    });
  }

  function trendCell(d, p, hd, now) {
    var h = hd && hd.points[p.name];
    if (!h) return '<td class="trend"></td>';
    if (h.changes) {
      var ch = h.changes.slice(-3).reverse().map(function (c) {
        return '<li><span class="sub">' + esc(time(c[0])) + "</span> " + esc(c[1]) + "</li>";
      });
      return '<td class="trend"><ol class="changes" id="changes-' + esc(d.name) + "-" + esc(p.name) + '">' + ch.join("") + "</ol></td>";
    }
    var pollMs = hd.poll_s ? hd.poll_s * 1000 : null;
    var sp = C.spark("spark-" + d.name + "-" + p.name, h, hist.window, pollMs, now);
    return '<td class="trend">' + sp.svg + '<span class="mm" id="mm-' + esc(d.name) + "-" + esc(p.name) + '">' +
      esc(C.fmt(sp.min)) + " – " + esc(C.fmt(sp.max)) + "</span></td>";
  }

  function hour(d, hd, now) {
    if (!hd || !hist.window.span_s) return "";
    var n = 0, off = 0, bad = 0, polls = 0, pollMs = 0, reqs = 0, errs = 0;
    hd.trail.forEach(function (b) {
      n += b[1]; bad += b[2]; off += b[3];
      polls += b[4] || 0; pollMs += b[5] || 0; reqs += b[6] || 0; errs += b[7] || 0;
    });
    var secs = Math.max(1, (now - C.start(hist.window, now)) / 1000);
    var mins = Math.max(1 / 6, secs / 60);
    var h = '<div class="hour">' + C.device(d.name, hd.trail, hist.window, now) + '<span class="sub">';
    h += (hd.poll_s ? "poll every " + esc(hd.poll_s) + " s · " : "") + esc(Math.round((n / mins) * 10) / 10) + " readings/min";
    if (polls) {
      h += " · a poll takes " + esc(Math.round(pollMs / polls)) + " ms";
      h += " · errors " + esc(reqs ? Math.round((errs / reqs) * 1000) / 10 : 0) + "% of " + esc(reqs) + " requests";
    }
    h += " · offline " + esc(dur(off / 1000)) + (bad ? " · " + esc(bad) + " not good" : "") + " in the last " + esc(dur(secs)) + "</span></div>";
    return h;
  }

  function device(d, now) {
    var hd = histDevice(d.name);
    var h = '<section class="device ' + esc(d.state) + '" id="dev-' + esc(d.name) + '" data-state="' + esc(d.state) + '">';
    h += "<h2>" + esc(d.name) + ' <span class="badge ' + esc(d.state) + '">' + esc(d.state) + "</span>";
    h += ' <span class="sub">' + esc(d.kind) + "</span></h2>";
    if (d.error) h += '<p class="error">' + esc(d.error) + "</p>";
    if (d.learned) h += '<p class="sub learned">limits learned: ' + esc(d.learned) + "</p>";
    h += '<p class="sub">last good value ' + esc(time(d.last_ok_ts)) + "</p>" + hour(d, hd, now);
    h += '<table><tr><th>point</th><th>value</th><th>trend</th><th class="q">quality</th><th>age</th></tr>';
    d.points.forEach(function (p) {
      h += '<tr class="' + (p.stale ? "stale" : "fresh") + '" data-device="' + esc(d.name) + '" data-point="' + esc(p.name) + '">';
      h += "<td>" + esc(p.name) + (p.writable ? ' <span class="sub">(writable)</span>' : "") + "</td>";
      h += '<td class="value" id="val-' + esc(d.name) + "-" + esc(p.name) + '">' + esc(value(p.value)) + (p.unit ? " " + esc(p.unit) : "") + "</td>";
      h += trendCell(d, p, hd, now);
      h += '<td class="q">' + esc(p.quality || "–") + "</td>";
      h += '<td class="age">' + esc(dur(p.age_s)) + (p.stale ? ' <span class="badge stale">stale</span>' : "") + "</td></tr>";
    });
    return h + "</table></section>";
  }

  function uplinkCard(u, now) {
    var html = '<div class="card wide" id="uplink"><h2>Uplink ';
    if (!u.configured) return html + '<span class="badge">not configured</span></h2></div>';
    html += '<span class="badge ' + (u.connected ? "connected" : "down") + '">' + (u.connected ? "connected" : "down") + "</span></h2><dl>";
    if (u.problem) html += row("problem", '<span class="badge down">' + esc(u.problem) + "</span>");
    html += row("outbox", esc(u.outbox_depth) + " messages, " + esc(bytes(u.outbox_bytes)));
    html += row("oldest waiting", esc(dur(u.oldest_age_s)));
    html += row("send rate", esc(u.send_rate) + " msg/s");
    html += row("time to drain", u.drain_eta_s == null ? "– (not sending)" : esc(dur(u.drain_eta_s)));
    html += row("sent / acked", esc(u.sent) + " / " + esc(u.acked)) + "</dl>";
    if (uplinkDoc && uplinkDoc.configured) {
      html += '<p class="sub">outbox depth (area) and send rate (line); down <span class="key down"></span> and back <span class="key up"></span></p>';
      html += C.uplink(uplinkDoc, now);
    }
    return html + "</div>";
  }

  function brokerCard(b) {
    var html = '<div class="card wide" id="broker"><h2>Embedded broker</h2><dl>';
    html += row("clients", esc(b.clients));
    html += row("messages in / out", esc(b.publish_in_per_s) + " / " + esc(b.publish_out_per_s) + " per s");
    html += row("dropped", esc(b.dropped));
    html += row("retained", esc(b.retained)) + "</dl>";
    var list = b.list || [];
    var drops = list.some(function (c) { return c.dropped > 0; });
    html += '<table id="clients"><tr><th>client id</th><th>address</th><th>MQTT</th><th>subs</th><th>queued</th><th class="q">since</th>' + (drops ? "<th>dropped</th>" : "") + "</tr>";
    list.forEach(function (c) {
      html += '<tr data-client="' + esc(c.client_id) + '"><td class="cid">' + esc(c.client_id) + "</td><td>" + esc(c.address) + '</td><td class="level">' +
        esc(levels[c.protocol_level] || c.protocol_level) + "</td><td>" + esc(c.subscriptions) + "</td><td>" + esc(c.queued) +
        '</td><td class="q">' + esc(time(c.connected_since)) + "</td>" + (drops ? "<td>" + esc(c.dropped) + "</td>" : "") + "</tr>";
    });
    if (!list.length) html += '<tr><td colspan="6" class="sub">no clients connected</td></tr>';
    return html + "</table></div>";
  }

  function render(s) {
    last = s;
    var now = s.ts;
    document.getElementById("gateway").textContent = s.gateway;
    document.title = s.gateway + " · fieldgate";
    var online = s.devices.filter(function (d) { return d.state === "online"; }).length;
    var since = hist && hist.window.since ? " · history since " + time(hist.window.since) : "";
    document.getElementById("meta").textContent =
      "fieldgate " + s.version + " · up " + dur(s.uptime_s) + " · " + online + "/" + s.devices.length + " devices online" + since;
    document.getElementById("summary").innerHTML = uplinkCard(s.uplink, now) + brokerCard(s.broker);
    document.getElementById("devices").innerHTML = s.devices.map(function (d) { return device(d, now); }).join("");
    var w = s.warnings.map(function (e) {
      return '<li class="' + esc(e.level) + '"><span class="sub">' + esc(time(e.ts)) + " " + esc(e.level) + "</span> " + esc(e.message) + "</li>";
    });
    document.getElementById("warnings").innerHTML = w.length ? w.join("") : '<li class="sub">none</li>';
  }

  // tapping a numeric point opens its hour
  function openChart(dev, point) {
    var base = "/api/v1/devices/" + encodeURIComponent(dev) + "/points/" + encodeURIComponent(point) + "/history";
    get(base, function (doc) {
      var o = document.getElementById("overlay");
      o.innerHTML = '<div class="card chart"><h2>' + esc(dev) + " / " + esc(point) + (doc.unit ? ' <span class="sub">' + esc(doc.unit) + "</span>" : "") +
        '<button id="close" type="button">close</button></h2>' + C.big(doc, Date.now()) +
        '<p class="sub">min–max per ' + esc(dur(doc.window.bucket_s)) + " (band), average (line), raw readings of the last 2 minutes (dark); times in your time zone. " +
        '<a id="csv" download href="' + base + '?format=csv">CSV</a></p></div>';
      o.hidden = false;
      document.getElementById("close").onclick = function () { o.hidden = true; };
    });
  }
  document.getElementById("devices").addEventListener("click", function (e) {
    var tr = e.target.closest("tr[data-point]");
    if (tr && tr.querySelector("svg.spark")) openChart(tr.getAttribute("data-device"), tr.getAttribute("data-point"));
  });

  var live = document.getElementById("live");
  var refresh = function () { if (last) render(last); };
  if (window.FIELDGATE_INITIAL) render(window.FIELDGATE_INITIAL);
  window.addEventListener("resize", refresh); // charts follow the width (a phone turned)
  var loadHistory = function () { get("/api/v1/history", function (h) { hist = h; refresh(); }); };
  var loadUplink = function () { get("/api/v1/uplink/history", function (u) { uplinkDoc = u; refresh(); }); };
  loadHistory();
  loadUplink();
  setInterval(loadHistory, 30000);
  setInterval(loadUplink, 4000);
  if (window.EventSource) {
    var es = new EventSource("/events");
    es.onmessage = function (e) {
      live.textContent = "live";
      live.className = "badge live";
      var s = JSON.parse(e.data);
      extend(s);
      render(s);
    };
    es.onerror = function () {
      live.textContent = "reconnecting";
      live.className = "badge down";
    };
  }
})();
