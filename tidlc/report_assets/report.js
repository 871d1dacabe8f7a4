/* tidlc report page: reads the embedded tidlc.report/1 document and draws summary, graph and table. */
(function () {
  "use strict";
  var doc = JSON.parse(document.getElementById("report-data").textContent);
  var perf = doc.perf || {}, G = doc.graph, nodes = G.nodes, L = G.layout;
  var SVGNS = "http://www.w3.org/2000/svg";
  var partitioned = !!perf.subgraph_reports;
  var totalMs = perf.ms || 0;
  var budget = doc.fps_budget;
  function el(tag, attrs, text) {
    var e = tag.indexOf("svg:") === 0 ? document.createElementNS(SVGNS, tag.slice(4)) : document.createElement(tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }
  function fmt(v, d) {
    if (v === null || v === undefined || (typeof v === "number" && !isFinite(v))) return "-";
    if (typeof v !== "number") return String(v);
    if (Math.abs(v) >= 1e9) return (v / 1e9).toFixed(2) + " G";
    if (Math.abs(v) >= 1e6) return (v / 1e6).toFixed(2) + " M";
    if (Math.abs(v) >= 1e4) return (v / 1e3).toFixed(1) + " k";
    return d === undefined ? String(Math.round(v * 1000) / 1000) : v.toFixed(d);
  }
  // ------------------------------------------------------------------ rows: one per graph node
  var snrBy = {}, firstBad = null;
  if (doc.compare && doc.compare.layers) {
    doc.compare.layers.forEach(function (r) {
      snrBy[r.name] = r;
      if (r.below && firstBad === null) firstBad = r.name;
    });
  }
  function reportOf(node) {
    if (!node.layer) return null;
    return node.layer[0] === null ? perf : perf.subgraph_reports[node.layer[0]];
  }
  var settings = perf.settings || (partitioned && perf.subgraph_reports[0] ? perf.subgraph_reports[0].settings : {}) || {};
  var rows = nodes.map(function (n) {
    var rep = reportOf(n), lay = rep ? rep.layers[n.layer[1]] : null;
    var host = n.host_index !== undefined ? perf.host_ops[n.host_index] : null;
    var mhz = rep && rep.device ? rep.device.c7x_mhz : (perf.device && perf.device.c7x_mhz) || 1000;
    var ms = lay ? lay.cycles / (mhz * 1000) : (host ? host.ms : null);
    var bits = null;
    (n.scales || []).forEach(function (s) { if (s.bits && s.bits <= 16) bits = Math.max(bits || 0, s.bits); });
    if (lay && bits === null) {
      var l16 = (rep.settings && rep.settings.layers_16bit) || [];
      bits = l16.indexOf(n.name) >= 0 ? 16 : ((rep.settings && rep.settings.bits) || 8);
    }
    var snr = snrBy[n.name];
    return {node: n, lay: lay, host: host, name: n.name, op: n.op,
            unit: n.host ? "host (A72)" : (lay ? lay.unit : (n.op === "input" ? "input" : "fused")),
            region: n.region === null || n.region === undefined ? (n.host ? "host" : "-") : "subgraph " + n.region,
            cycles: lay ? lay.cycles : null, ms: ms,
            percent: ms !== null && totalMs ? 100 * ms / totalMs : null,
            mac_util: lay ? lay.mma_utilization : null, macs: lay ? lay.macs : (host ? host.macs : null),
            ddr: lay ? lay.ddr_read_bytes + lay.ddr_write_bytes : (host ? host.bytes : null),
            bits: n.host ? 32 : bits, accel: n.host ? "host" : "accelerated",
            snr: snr ? snr.snr_db : null, bound: lay ? lay.bound : null,
            out: lay ? lay.output_location : null, shape: JSON.stringify((n.shapes || [])[0] || lay && lay.output_shape || "")};
  });
  // ------------------------------------------------------------------ measures
  var measures = [
    {key: "cycles", label: "predicted cycles", num: true},
    {key: "percent", label: "% of frame", num: true},
    {key: "mac_util", label: "MAC utilisation", num: true, good: "high"},
    {key: "ddr", label: "DDR bytes", num: true},
    {key: "bits", label: "precision (8/16)", cat: {8: "#8ecae6", 16: "#ffb703", 32: "#bbbbbb"}},
    {key: "accel", label: "accelerated vs host", cat: {accelerated: "#90be6d", host: "#f8961e"}}];
  if (doc.compare) measures.push({key: "snr", label: "SNR vs float (dB)", num: true, good: "high"});
  function ramp(t) { // 0 = light, 1 = hot
    var a = [255, 247, 188], b = [253, 141, 60], c = [189, 0, 38], p, q;
    if (t < 0.5) { p = a; q = b; t *= 2; } else { p = b; q = c; t = t * 2 - 1; }
    return "rgb(" + [0, 1, 2].map(function (i) { return Math.round(p[i] + (q[i] - p[i]) * t); }).join(",") + ")";
  }
  function colourer(m) {
    if (m.cat) return function (r) { return m.cat[r[m.key]] || "#eeeeee"; };
    var vals = rows.map(function (r) { return r[m.key]; }).filter(function (v) { return typeof v === "number" && isFinite(v); });
    var lo = Math.min.apply(null, vals.concat([0])), hi = Math.max.apply(null, vals.concat([1e-12]));
    if (m.key === "snr") { lo = Math.min.apply(null, vals.concat([60])); hi = Math.max.apply(null, vals.concat([0])); }
    return function (r) {
      var v = r[m.key];
      if (typeof v !== "number" || !isFinite(v)) return "#eeeeee";
      var t = hi > lo ? (v - lo) / (hi - lo) : 0;
      if (m.good === "high") t = 1 - t;
      return ramp(Math.max(0, Math.min(1, t)));
    };
  }
  // ------------------------------------------------------------------ summary
  function summary() {
    var s = document.getElementById("summary");
    s.appendChild(el("h2", {}, "Summary"));
    var cards = el("div", {class: "cards"});
    function card(label, value, cls) { var c = el("div", {class: "card " + (cls || "")}); c.appendChild(el("b", {}, value)); c.appendChild(document.createTextNode(label)); cards.appendChild(c); }
    card("total ms per frame", fmt(totalMs, 3));
    var fps = perf.fps;
    card(budget ? "FPS (budget " + budget + ")" : "FPS", fmt(fps, 1), budget ? (fps >= budget ? "ok" : "bad") : "");
    if (budget) card("of the frame budget", fmt(100 * totalMs * budget / 1000, 1) + " %", fps >= budget ? "ok" : "bad");
    var ddr = perf.ddr_bytes_per_frame;
    if (partitioned) { ddr = 0; perf.subgraph_reports.forEach(function (r) { ddr += r.ddr_bytes_per_frame || 0; }); }
    card("DDR bytes per frame", fmt(ddr) + "B");
    card("DDR GB/s at " + (budget ? budget + " fps" : "max fps"), fmt(ddr * (budget || fps || 0) / 1e9, 3));
    if (perf.mac_utilization !== undefined) card("MAC utilisation", fmt(100 * perf.mac_utilization, 2) + " %");
    if (partitioned) {
      card("C7x ms / A72 ms", fmt(perf.c7x_ms, 3) + " / " + fmt(perf.arm_ms, 3));
      card("transfer + call ms", fmt(perf.transfer_ms, 3) + " + " + fmt(perf.call_ms, 3));
      card("subgraphs / host ops", perf.subgraphs.length + " / " + perf.host_ops.length);
    }
    card("layers", String(rows.length));
    s.appendChild(cards);
    // memory placement
    var reps = partitioned ? perf.subgraph_reports : [perf], place = {}, wb = 0, feat = 0, spill = 0, pers = 0;
    reps.forEach(function (r) {
      wb += r.weight_bytes || 0; feat += r.msmc_feature_bytes || 0; spill += r.spilled_tensors || 0; pers += r.persistent_weight_bytes || 0;
      (r.layers || []).forEach(function (l) { place[l.output_location] = (place[l.output_location] || 0) + 1; });
    });
    s.appendChild(el("h3", {}, "Memory placement"));
    s.appendChild(el("p", {}, "weights " + fmt(wb) + "B (" + fmt(pers) + "B persistent in MSMC), features in MSMC " +
      fmt(feat) + "B, tensors spilled to DDR: " + spill + "; layer outputs by location: " +
      Object.keys(place).map(function (k) { return k + " " + place[k]; }).join(", ")));
    // hints, ranked
    var hints = [];
    (perf.hints || []).forEach(function (h) { hints.push(typeof h === "string" ? {message: h, gain_ms: null} : h); });
    if (partitioned) perf.subgraph_reports.forEach(function (r, i) {
      (r.hints || []).forEach(function (h) { hints.push({message: "subgraph " + i + ": " + h.message, gain_ms: h.gain_ms, kind: h.kind}); });
    });
    hints.sort(function (a, b) { return (b.gain_ms || 0) - (a.gain_ms || 0); });
    s.appendChild(el("h3", {}, "Tuning hints (largest gain first)"));
    var ol = el("ol", {class: "hints"});
    hints.forEach(function (h) { ol.appendChild(el("li", {}, (h.gain_ms !== null && h.gain_ms !== undefined ? "[-" + fmt(h.gain_ms, 3) + " ms] " : "") + h.message)); });
    if (!hints.length) ol.appendChild(el("li", {}, "none"));
    s.appendChild(ol);
    if (doc.compare && doc.compare.layers) snrPlot(s);
  }
  function snrPlot(parent) {
    parent.appendChild(el("h3", {}, "SNR along the network (dB)" + (firstBad ? ": first layer below threshold is " + firstBad : "")));
    var rs = doc.compare.layers, W = Math.max(600, rs.length * 6), H = 160, svg = el("svg:svg", {class: "snr", width: W, height: H, viewBox: "0 0 " + W + " " + H});
    var vals = rs.map(function (r) { return r.snr_db === null ? 0 : r.snr_db; }), hi = Math.max.apply(null, vals.concat([1]));
    var d = vals.map(function (v, i) { return (i ? "L" : "M") + (10 + i * (W - 20) / Math.max(1, rs.length - 1)).toFixed(1) + " " + (H - 10 - (H - 20) * v / hi).toFixed(1); }).join(" ");
    svg.appendChild(el("svg:path", {d: d, fill: "none", stroke: "#1f77b4"}));
    rs.forEach(function (r, i) {
      if (r.name === firstBad) {
        var x = 10 + i * (W - 20) / Math.max(1, rs.length - 1);
        svg.appendChild(el("svg:line", {x1: x, x2: x, y1: 0, y2: H, stroke: "#c0392b", "stroke-dasharray": "4 2"}));
        svg.appendChild(el("svg:text", {x: x + 3, y: 12, fill: "#c0392b"}, r.name));
      }
    });
    parent.appendChild(svg);
  }
  // ------------------------------------------------------------------ graph
  var svg = document.getElementById("graph"), rects = [], groups = [];
  var BW = L.box[0], BH = L.box[1];
  function drawGraph() {
    var edges = el("svg:g"), g = el("svg:g");
    G.edges.forEach(function (e) {
      var a = L.xy[e[0]], b = L.xy[e[1]];
      var x1 = a[0] + BW / 2, y1 = a[1] + BH, x2 = b[0] + BW / 2, y2 = b[1], my = (y1 + y2) / 2;
      edges.appendChild(el("svg:path", {d: "M" + x1 + " " + y1 + "C" + x1 + " " + my + " " + x2 + " " + my + " " + x2 + " " + y2}));
    });
    rows.forEach(function (r, i) {
      var p = L.xy[i], n = r.node;
      var grp = el("svg:g", {class: "node" + (n.host ? " host" : ""), transform: "translate(" + p[0] + "," + p[1] + ")", "data-name": n.name, "data-index": i});
      var rect = el("svg:rect", {width: BW, height: BH, rx: 4});
      grp.appendChild(el("svg:title", {}, n.name + " (" + n.op + ")"));
      grp.appendChild(rect);
      var label = n.name.length > 24 ? n.name.slice(0, 23) + "\u2026" : n.name;
      grp.appendChild(el("svg:text", {x: 5, y: 14}, label));
      grp.appendChild(el("svg:text", {x: 5, y: 29, fill: "#444"}, n.op + (r.cycles !== null ? " \u00b7 " + fmt(r.cycles) + "cyc" : (r.host ? " \u00b7 " + fmt(r.ms, 3) + " ms A72" : ""))));
      grp.addEventListener("click", function (ev) { ev.stopPropagation(); if (!moved) select(i); });
      g.appendChild(grp); rects.push(rect); groups.push(grp);
    });
    svg.appendChild(edges); svg.appendChild(g);
    fit();
  }
  var vb = [0, 0, 100, 100];
  function setVB() { svg.setAttribute("viewBox", vb.join(" ")); }
  function fit() {  // the whole width; at most ~14 layers tall (wheel/drag for the rest), from the top
    var r = svg.getBoundingClientRect(), asp = r.width && r.height ? r.width / r.height : 1.5;
    var w = Math.max(L.width, BW) + 20, h = Math.max(L.height, BH) + 20, maxH = 14 * (BH + 30);
    if (h > maxH) h = maxH;
    if (w / h < asp) w = h * asp; else h = w / asp;
    vb = [L.width / 2 - w / 2, -10, w, h]; setVB(); }
  function pt(ev) { var r = svg.getBoundingClientRect(); return [vb[0] + (ev.clientX - r.left) / r.width * vb[2], vb[1] + (ev.clientY - r.top) / r.height * vb[3]]; }
  svg.addEventListener("wheel", function (ev) {
    ev.preventDefault(); var p = pt(ev), k = ev.deltaY > 0 ? 1.15 : 1 / 1.15;
    vb = [p[0] - (p[0] - vb[0]) * k, p[1] - (p[1] - vb[1]) * k, vb[2] * k, vb[3] * k]; setVB();
  }, {passive: false});
  var drag = null, moved = false;
  svg.addEventListener("mousedown", function (ev) { drag = [ev.clientX, ev.clientY, vb[0], vb[1]]; moved = false; svg.classList.add("drag"); });
  window.addEventListener("mousemove", function (ev) {
    if (!drag) return; var r = svg.getBoundingClientRect(), dx = ev.clientX - drag[0], dy = ev.clientY - drag[1];
    if (Math.abs(dx) + Math.abs(dy) > 3) moved = true;
    vb[0] = drag[2] - dx / r.width * vb[2]; vb[1] = drag[3] - dy / r.height * vb[3]; setVB();
  });
  window.addEventListener("mouseup", function () { drag = null; svg.classList.remove("drag"); });
  document.getElementById("fit").addEventListener("click", fit);
  var sel = document.getElementById("measure");
  measures.forEach(function (m, i) { sel.appendChild(el("option", {value: i}, m.label)); });
  function recolour() {
    var m = measures[+sel.value], c = colourer(m);
    rows.forEach(function (r, i) {
      var fill = r.node.host && m.key !== "accel" && !m.cat ? "#fde2c8" : c(r), k = /rgb\((\d+),(\d+),(\d+)\)/.exec(fill);
      rects[i].setAttribute("fill", fill);
      var dark = k && (0.299 * k[1] + 0.587 * k[2] + 0.114 * k[3]) < 140;  // white text on dark boxes
      Array.prototype.forEach.call(groups[i].querySelectorAll("text"), function (t) { t.setAttribute("fill", dark ? "#fff" : "#222"); });
    });
    var lg = document.getElementById("legend"); lg.textContent = "";
    if (m.cat) Object.keys(m.cat).forEach(function (k) { var b = el("span", {class: "legend-box"}); b.style.background = m.cat[k]; b.style.width = "14px"; lg.appendChild(b); lg.appendChild(document.createTextNode(" " + k + "  ")); });
    else { lg.appendChild(document.createTextNode(m.good === "high" ? "high " : "low ")); var b = el("span", {class: "legend-box"}); b.style.background = "linear-gradient(90deg," + ramp(0) + "," + ramp(0.5) + "," + ramp(1) + ")"; lg.appendChild(b); lg.appendChild(document.createTextNode(m.good === "high" ? " low" : " high")); lg.appendChild(document.createTextNode("   dashed border: host (A72) op, grey: no estimate (fused/input)")); }
  }
  sel.addEventListener("change", recolour);
  // ------------------------------------------------------------------ side panel
  var panel = document.getElementById("panel"), current = null;
  function kv(t, k, v) { var tr = el("tr"); tr.appendChild(el("td", {}, k)); tr.appendChild(el("td", {}, v)); t.appendChild(tr); }
  function select(i) {
    if (current !== null) groups[current].classList.remove("sel");
    current = i; groups[i].classList.add("sel");
    var r = rows[i], n = r.node, lay = r.lay;
    panel.textContent = ""; panel.hidden = false;
    var close = el("button", {class: "close", type: "button", title: "close"}, "\u00d7");
    close.addEventListener("click", function () { panel.hidden = true; groups[i].classList.remove("sel"); current = null; });
    panel.appendChild(close);
    panel.appendChild(el("h3", {id: "panel-name"}, n.name));
    var t = el("table");
    kv(t, "op", n.op + (lay && lay.tidl_layer ? " (TIDL " + lay.tidl_layer + ")" : ""));
    kv(t, "runs on", r.unit + (r.region !== "-" ? ", " + r.region : ""));
    kv(t, "input shapes", JSON.stringify(n.in_shapes || []));
    kv(t, "output shapes", JSON.stringify(n.shapes || []));
    if (n.scales && n.scales.length) kv(t, "scales", n.scales.map(function (s) { return s.bits + " bit, scale " + JSON.stringify(s.scale); }).join("; "));
    if (r.bits) kv(t, "precision", r.bits + " bit");
    if (lay) {
      kv(t, "cycles", fmt(lay.cycles) + " (" + fmt(r.percent, 2) + " % of the frame, " + fmt(r.ms, 4) + " ms)");
      kv(t, "bound by", lay.bound);
      kv(t, "MACs", fmt(lay.macs) + ", MMA utilisation " + fmt(100 * lay.mma_utilization, 2) + " %");
      kv(t, "DDR read / write", fmt(lay.ddr_read_bytes) + "B / " + fmt(lay.ddr_write_bytes) + "B");
      kv(t, "MSMC bytes", fmt(lay.msmc_bytes) + "B");
      kv(t, "output in / weights in", lay.output_location + " / " + lay.weights_location);
      if (lay.note) kv(t, "note", lay.note);
    }
    if (r.host) kv(t, "host (A72)", fmt(r.host.ms, 4) + " ms, " + fmt(r.host.bytes) + "B, " + fmt(r.host.macs) + " MACs");
    var snr = snrBy[n.name];
    if (snr) { kv(t, "SNR vs float", fmt(snr.snr_db, 2) + " dB, cosine " + fmt(snr.cosine, 5) + ", saturated " + fmt(snr.saturated_pct, 2) + " %"); if (snr.cause) kv(t, "likely cause", snr.cause); }
    panel.appendChild(t);
    if (lay) {
      panel.appendChild(el("h4", {}, "Cycle breakdown"));
      var parts = [["compute (" + (lay.unit === "mma" ? "MMA" : "vector") + ")", lay.compute_cycles, "#4e79a7"], ["DMA", lay.dma_cycles, "#f28e2b"], ["setup", lay.setup_cycles, "#bab0ac"]];
      var sum = parts.reduce(function (a, p) { return a + (p[1] || 0); }, 0) || 1, bar = el("div", {class: "bar"}), bt = el("table");
      parts.forEach(function (p) { var s = el("span", {title: p[0]}); s.style.width = (100 * (p[1] || 0) / sum) + "%"; s.style.background = p[2]; bar.appendChild(s); kv(bt, p[0], fmt(p[1])); });
      panel.appendChild(bar); panel.appendChild(bt);
      panel.appendChild(el("p", {}, "the layer costs its setup plus the larger of compute and DMA when they overlap (" + lay.bound + "-bound)."));
    }
    var hs = layerHints(n.name);
    if (hs.length) { panel.appendChild(el("h4", {}, "Hints")); var ul = el("ul"); hs.forEach(function (h) { ul.appendChild(el("li", {}, h)); }); panel.appendChild(ul); }
    var attrs = Object.keys(n.attrs || {});
    if (attrs.length) { panel.appendChild(el("h4", {}, "Attributes")); var at = el("table"); attrs.forEach(function (k) { kv(at, k, JSON.stringify(n.attrs[k])); }); panel.appendChild(at); }
  }
  function layerHints(name) {
    var out = [], reps = partitioned ? perf.subgraph_reports : [perf];
    reps.forEach(function (r) { (r.hints || []).forEach(function (h) { if (typeof h !== "string" && ((h.layers || []).indexOf(name) >= 0 || h.message.indexOf("'" + name + "'") >= 0 || h.message.indexOf(name + ":") >= 0)) out.push(h.message); }); });
    if (partitioned) (perf.hints || []).forEach(function (h) { if (String(h).indexOf("'" + name + "'") >= 0) out.push(h); });
    return out;
  }
  // ------------------------------------------------------------------ table
  var cols = [["name", "layer", "t"], ["op", "op", "t"], ["unit", "unit", "t"], ["region", "region", "t"], ["shape", "output shape", "t"],
              ["cycles", "cycles"], ["percent", "% frame"], ["ms", "ms"], ["mac_util", "MAC util %"], ["ddr", "DDR bytes"],
              ["bits", "bits"], ["out", "output in", "t"]];
  if (doc.compare) cols.push(["snr", "SNR dB"]);
  var table = document.getElementById("layers"), tbody = table.tBodies[0], sortKey = null, sortDir = 1, order = rows.map(function (_, i) { return i; });
  var htr = el("tr");
  cols.forEach(function (c) { var th = el("th", {"data-key": c[0], "data-t": c[2] || ""}, c[1]); if (c[2]) th.classList.add("t"); th.addEventListener("click", function () { sortBy(c[0]); }); htr.appendChild(th); });
  table.tHead.appendChild(htr);
  function cell(r, c) {
    var v = r[c[0]];
    if (c[0] === "mac_util") return v === null ? "-" : fmt(100 * v, 2);
    if (c[0] === "percent") return fmt(v, 2);
    if (c[0] === "ms") return v === null ? "-" : v.toFixed(4);
    if (c[0] === "snr") return fmt(v, 2);
    return c[2] ? (v === null ? "-" : String(v)) : fmt(v);
  }
  var trs = rows.map(function (r, i) {
    var tr = el("tr", {class: (r.node.host ? "host " : "") + (firstBad === r.name ? "badsnr" : ""), "data-index": i});
    cols.forEach(function (c) { tr.appendChild(el("td", {class: c[2] || ""}, cell(r, c))); });
    tr.addEventListener("click", function () { select(i); centre(i); });
    return tr;
  });
  function renderTable() { var q = document.getElementById("filter").value.toLowerCase();
    tbody.textContent = "";
    order.forEach(function (i) { var r = rows[i]; if (!q || (r.name + " " + r.op + " " + r.unit + " " + r.region + " " + r.out).toLowerCase().indexOf(q) >= 0) tbody.appendChild(trs[i]); }); }
  function sortBy(key) {
    if (sortKey === key) sortDir = -sortDir; else { sortKey = key; sortDir = cols.filter(function (c) { return c[0] === key; })[0][2] ? 1 : -1; }
    order.sort(function (a, b) {
      var x = rows[a][key], y = rows[b][key];
      if (x === null || x === undefined) return (y === null || y === undefined) ? a - b : 1;
      if (y === null || y === undefined) return -1;
      if (typeof x === "number") return sortDir * (x - y) || a - b;
      return sortDir * String(x).localeCompare(String(y)) || a - b;
    });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) { th.className = (th.getAttribute("data-t") ? "t " : "") + (th.getAttribute("data-key") === key ? (sortDir > 0 ? "asc" : "desc") : ""); });
    renderTable();
  }
  function centre(i) { var p = L.xy[i]; vb[0] = p[0] + BW / 2 - vb[2] / 2; vb[1] = p[1] + BH / 2 - vb[3] / 2; setVB(); }
  document.getElementById("filter").addEventListener("input", renderTable);
  summary(); drawGraph(); recolour(); renderTable();
  window.tidlcReport = {rows: rows, select: select, sortBy: sortBy, centre: centre};
})();
