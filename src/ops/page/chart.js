// fieldgate status page: inline SVG charts (sparklines, the larger chart of
// a point, the uplink's hour, a device's hour). No dependencies; exposes
// window.FG_CHART.
"use strict";
(function () {
  var fmt = function (v) {
    if (v == null || !isFinite(v)) return "–";
    var a = Math.abs(v);
    if (a >= 1000 || Number.isInteger(v)) return String(Math.round(v * 10) / 10);
    if (a >= 10) return v.toFixed(1);
    return String(Math.round(v * 1000) / 1000);
  };
  // chart width in SVG units: the screen's, so text keeps its size on a phone
  var width = function () { return Math.max(300, Math.min(900, document.body.clientWidth - 40)); };
  var hhmm = function (ts) {
    return new Date(ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  };

  // [[ts, v|null]] from a history ({raw, buckets}): bucket averages before
  // the first raw reading, then the raw readings.
  function series(h, bucketMs) {
    var out = [];
    var firstRaw = h.raw.length ? h.raw[0][0] : Infinity;
    h.buckets.forEach(function (b) {
      var mid = b[0] + bucketMs / 2;
      if (mid < firstRaw) out.push([mid, b[2], "b"]);
    });
    h.raw.forEach(function (r) { out.push([r[0], r[1], "r"]); });
    return out;
  }

  function range(vals) {
    var lo = Infinity, hi = -Infinity;
    vals.forEach(function (v) {
      if (v != null && isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    });
    if (lo === Infinity) return null;
    if (lo === hi) { lo -= 1; hi += 1; }
    return [lo, hi];
  }

  // An SVG path through pts ([ts, v, kind]); a null value, or a step
  // longer than gapMs(prev, cur), starts a new segment (a gap, never a
  // line to zero). Returns {d, segments}.
  function path(pts, sx, sy, gapMs) {
    var d = "", segs = 0, prev = null;
    pts.forEach(function (p) {
      if (p[1] == null || !isFinite(p[1])) { prev = null; return; }
      var x = sx(p[0]).toFixed(1), y = sy(p[1]).toFixed(1);
      if (prev && p[0] - prev[0] <= gapMs(prev, p)) {
        d += "L" + x + " " + y;
      } else {
        d += "M" + x + " " + y;
        segs++;
      }
      prev = p;
    });
    return { d: d, segments: segs };
  }

  // a gap: no reading for 3 polls, and at least 10 s (the live stream
  // brings one value every 2 s, a busy gateway's a little later)
  function gapFn(pollMs, bucketMs) {
    var rawGap = Math.max(3 * (pollMs || 1000), 10000);
    return function (a, b) { return a[2] === "r" && b[2] === "r" ? rawGap : 2 * bucketMs; };
  }

  // A sparkline: {svg (markup), min, max}.
  function spark(id, h, win, pollMs, now) {
    var bucketMs = win.bucket_s * 1000;
    var pts = series(h, bucketMs);
    var vals = [];
    h.buckets.forEach(function (b) { vals.push(b[1], b[3]); });
    h.raw.forEach(function (r) { vals.push(r[1]); });
    var r = range(vals);
    var W = 120, H = 28;
    var t0 = pts.length ? Math.max(pts[0][0], now - win.span_s * 1000) : now - 1000;
    var t1 = Math.max(now, t0 + 1000);
    var sx = function (t) { return ((t - t0) / (t1 - t0)) * W; };
    var sy = r ? function (v) { return H - 2 - ((v - r[0]) / (r[1] - r[0])) * (H - 4); } : function () { return H / 2; };
    var p = path(pts.filter(function (q) { return q[0] >= t0; }), sx, sy, gapFn(pollMs, bucketMs));
    var svg = '<svg class="spark" id="' + id + '" viewBox="0 0 ' + W + " " + H + '" preserveAspectRatio="none" data-segments="' +
      p.segments + '" data-points="' + pts.length + '"><path d="' + p.d + '"/></svg>';
    var lo = Infinity, hi = -Infinity;
    vals.forEach(function (v) { if (v != null) { lo = Math.min(lo, v); hi = Math.max(hi, v); } });
    return { svg: svg, min: lo === Infinity ? null : lo, max: hi === -Infinity ? null : hi };
  }

  function ticks(t0, t1, maxTicks) {
    var steps = [1, 2, 5, 10, 15, 30, 60, 120, 240].map(function (m) { return m * 60000; });
    var step = steps.find(function (s) { return (t1 - t0) / s <= maxTicks; }) || steps[steps.length - 1];
    var out = [];
    for (var t = Math.ceil(t0 / step) * step; t <= t1; t += step) out.push(t);
    return out;
  }

  // The axes of a larger chart: time labels (browser time zone) and the
  // value range with the unit.
  function axes(t0, t1, r, unit, sx, sy, W, H, pad) {
    var s = "";
    ticks(t0, t1, 6).forEach(function (t) {
      var x = sx(t).toFixed(1);
      s += '<line class="grid" x1="' + x + '" x2="' + x + '" y1="' + pad + '" y2="' + (H - 18) + '"/>';
      s += '<text class="tick" x="' + x + '" y="' + (H - 4) + '" text-anchor="middle">' + hhmm(t) + "</text>";
    });
    if (r) {
      var u = unit ? " " + unit : "";
      s += '<text class="tick" x="2" y="' + (sy(r[1]) + 4).toFixed(1) + '">' + fmt(r[1]) + u + "</text>";
      s += '<text class="tick" x="2" y="' + (sy(r[0]) - 2).toFixed(1) + '">' + fmt(r[0]) + u + "</text>";
    }
    return s;
  }

  // The larger chart of one point: the min-max band and the average per
  // bucket, the raw readings of the last minutes.
  function big(doc, now) {
    var win = doc.window, bucketMs = win.bucket_s * 1000;
    var W = width(), H = 240, pad = 8, left = 0;
    var vals = [];
    doc.buckets.forEach(function (b) { vals.push(b[1], b[3]); });
    doc.raw.forEach(function (r) { vals.push(r[1]); });
    var r = range(vals);
    var t0 = Math.max(now - win.span_s * 1000, win.since || now - 1000);
    var t1 = Math.max(now, t0 + 60000);
    var sx = function (t) { return left + ((t - t0) / (t1 - t0)) * (W - left); };
    var sy = r ? function (v) { return pad + (1 - (v - r[0]) / (r[1] - r[0])) * (H - 18 - 2 * pad); } : function () { return H / 2; };
    var band = "";
    doc.buckets.forEach(function (b) {
      if (b[1] == null) return;
      var x = sx(b[0]), w = Math.max(1, sx(b[0] + bucketMs) - x);
      band += '<rect class="band" x="' + x.toFixed(1) + '" width="' + w.toFixed(1) + '" y="' + sy(b[3]).toFixed(1) +
        '" height="' + Math.max(1, sy(b[1]) - sy(b[3])).toFixed(1) + '"/>';
    });
    var avg = path(doc.buckets.map(function (b) { return [b[0] + bucketMs / 2, b[2], "b"]; }), sx, sy, function () { return 2 * bucketMs; });
    var raw = path(doc.raw.map(function (q) { return [q[0], q[1], "r"]; }), sx, sy, function () { return 5000; });
    return '<svg class="big" id="big-chart" viewBox="0 0 ' + W + " " + H + '">' + axes(t0, t1, r, doc.unit, sx, sy, W, H, pad) + band +
      '<path class="avg" d="' + avg.d + '"/><path class="raw" d="' + raw.d + '" data-segments="' + raw.segments + '"/></svg>';
  }

  // The uplink's hour: outbox depth (area), send rate (line), the times it
  // went down (red) and came back (green), outages shaded.
  function uplink(doc, now) {
    var W = width(), H = 150, pad = 6;
    var s = doc.samples;
    var t0 = s.length ? s[0][0] : now - 30000, t1 = Math.max(now, t0 + 30000);
    var sx = function (t) { return ((t - t0) / (t1 - t0)) * W; };
    var maxDepth = Math.max(1, Math.max.apply(null, s.map(function (q) { return q[1]; }).concat([0])));
    var maxRate = Math.max(1, Math.max.apply(null, s.map(function (q) { return q[2]; }).concat([0])));
    var sd = function (v) { return pad + (1 - v / maxDepth) * (H - 18 - 2 * pad); };
    var sr = function (v) { return pad + (1 - v / maxRate) * (H - 18 - 2 * pad); };
    var out = "", down = null;
    doc.events.forEach(function (e) {
      var x = sx(e[0]).toFixed(1);
      if (e[1] === "down") down = e[0];
      else if (down != null) {
        out += '<rect class="outage" x="' + sx(down).toFixed(1) + '" width="' + Math.max(1, sx(e[0]) - sx(down)).toFixed(1) + '" y="0" height="' + (H - 18) + '"/>';
        down = null;
      }
      out += '<line class="ev ' + e[1] + '" data-ts="' + e[0] + '" x1="' + x + '" x2="' + x + '" y1="0" y2="' + (H - 18) + '"/>';
    });
    if (down != null) out += '<rect class="outage" x="' + sx(down).toFixed(1) + '" width="' + Math.max(1, W - sx(down)).toFixed(1) + '" y="0" height="' + (H - 18) + '"/>';
    var area = "";
    if (s.length) {
      area = "M" + sx(s[0][0]).toFixed(1) + " " + sd(0).toFixed(1);
      s.forEach(function (q) { area += "L" + sx(q[0]).toFixed(1) + " " + sd(q[1]).toFixed(1); });
      area += "L" + sx(s[s.length - 1][0]).toFixed(1) + " " + sd(0).toFixed(1) + "Z";
    }
    var rate = path(s.map(function (q) { return [q[0], q[2], "r"]; }), sx, sr, function () { return 10000; });
    var ax = "";
    ticks(t0, t1, 6).forEach(function (t) {
      ax += '<text class="tick" x="' + sx(t).toFixed(1) + '" y="' + (H - 4) + '" text-anchor="middle">' + hhmm(t) + "</text>";
    });
    ax += '<text class="tick" x="2" y="' + (pad + 8) + '">' + fmt(maxDepth) + ' queued</text>';
    ax += '<text class="tick rate" x="' + (W - 2) + '" y="' + (pad + 8) + '" text-anchor="end">' + fmt(maxRate) + ' msg/s</text>';
    return '<svg class="big" id="uplink-chart" viewBox="0 0 ' + W + " " + H + '" data-samples="' + s.length + '">' + out +
      '<path class="depth" d="' + area + '"/><path class="rate" d="' + rate.d + '"/>' + ax + "</svg>";
  }

  // The start of a device's window: the span back from now, or since the
  // history has data.
  function start(win, now) {
    return Math.max(now - win.span_s * 1000, (win.since || now) - (win.since || now) % (win.bucket_s * 1000));
  }

  // A device's window: readings per bucket as bars, offline time in red.
  function device(name, trail, win, now) {
    var W = 240, H = 24, bucketMs = win.bucket_s * 1000;
    var t0 = start(win, now), span = Math.max(bucketMs, now - t0);
    var max = Math.max(1, Math.max.apply(null, trail.map(function (b) { return b[1]; }).concat([0])));
    var bw = Math.max(1, (bucketMs / span) * W);
    var bars = "";
    trail.forEach(function (b) {
      if (b[0] + bucketMs < t0) return;
      var x = (((b[0] - t0) / span) * W).toFixed(1);
      var h = Math.max(1, (b[1] / max) * (H - 2));
      if (b[3] > 0) bars += '<rect class="off" x="' + x + '" width="' + bw.toFixed(1) + '" y="0" height="' + H + '"/>';
      bars += '<rect class="on" x="' + x + '" width="' + bw.toFixed(1) + '" y="' + (H - h).toFixed(1) + '" height="' + h.toFixed(1) + '"/>';
    });
    return '<svg class="trail" id="trail-' + name + '" viewBox="0 0 ' + W + " " + H + '" preserveAspectRatio="none">' + bars + "</svg>";
  }

  window.FG_CHART = { spark: spark, big: big, uplink: uplink, device: device, start: start, fmt: fmt, hhmm: hhmm };
})();
