"""Interactive HTML writer: one self-contained page (no network at view time).

The page embeds the view model as JSON and ~400 lines of plain JavaScript that lay the graph out
(layered: longest-path ranks, barycentre ordering, isotonic x placement; each expanded block
call laid out recursively as a box of its own, with ports where tensors cross its border), draw it
as SVG, and handle pan (drag), zoom (wheel, buttons), collapsing and expanding block calls (click
a block's header or box) and a details panel (click a layer: arguments, weight shapes, input and
output shapes, parameters, FLOPs and the ``.kd`` source line it came from).

Every layer call is an SVG group with ``data-layer`` (ops: ``data-op``, collapsed block calls:
``data-block``), which tests and scripts can count.
"""
from __future__ import annotations

import json
from html import escape

from ..flops import format_flops
from .dot import COLORS, SHARED_COLOR, SKIP_COLOR
from .view import View

__all__ = ["to_html"]

_CSS = """
:root { --fg: #1d2329; --muted: #5c6670; --line: #d5dae0; --accent: #4c6ef5; }
* { box-sizing: border-box; }
html, body { margin: 0; height: 100%; font-family: 'DejaVu Sans', Helvetica, Arial, sans-serif;
  color: var(--fg); background: #fff; }
body { display: flex; flex-direction: column; }
header { display: flex; align-items: center; gap: 16px; padding: 8px 14px; border-bottom: 1px solid var(--line);
  background: #f8f9fa; flex-wrap: wrap; }
header h1 { font-size: 17px; margin: 0; }
header .stats { color: var(--muted); font-size: 13px; }
header .legend { color: var(--muted); font-size: 12px; margin-left: auto; }
header .legend b { font-weight: normal; padding: 0 4px; }
.tools button { font: inherit; font-size: 12px; padding: 3px 9px; border: 1px solid var(--line);
  background: #fff; border-radius: 4px; cursor: pointer; }
.tools button:hover { border-color: var(--accent); }
main { flex: 1; display: flex; min-height: 0; position: relative; }
#canvas { flex: 1; width: 100%; height: 100%; cursor: grab; background: #fff; touch-action: none; }
#canvas.dragging { cursor: grabbing; }
#canvas text { font-family: 'DejaVu Sans', Helvetica, Arial, sans-serif; }
.node { cursor: pointer; }
.node rect { stroke-width: 1.2; }
.node.selected rect { stroke-width: 3; stroke: #f03e3e !important; }
.node:hover rect { stroke-width: 2; }
.cluster-head { cursor: pointer; }
.edge { fill: none; stroke: #5c6670; stroke-width: 1.1; }
.edge.skip { stroke: @SKIP@; stroke-width: 1.6; }
.edge.mask { stroke: #adb5bd; stroke-dasharray: 4 3; }
.shared-link { fill: none; stroke: @SHARED@; stroke-width: 1.3; stroke-dasharray: 5 4; }
.elabel { font-size: 10px; fill: #5c6670; paint-order: stroke; stroke: #fff; stroke-width: 3px; }
#panel { width: 380px; max-width: 45%; overflow: auto; border-left: 1px solid var(--line); padding: 12px 14px;
  font-size: 13px; background: #fcfcfd; }
#panel[hidden] { display: none; }
#panel h2 { font-size: 15px; margin: 0 0 2px; word-break: break-all; }
#panel .type { color: var(--muted); margin-bottom: 8px; }
#panel table { border-collapse: collapse; width: 100%; margin: 4px 0 10px; }
#panel td { border-top: 1px solid #eceef1; padding: 3px 4px; vertical-align: top; word-break: break-word; }
#panel td:first-child { color: var(--muted); white-space: nowrap; width: 1%; }
#panel h3 { font-size: 12px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); margin: 10px 0 2px; }
#panel pre { background: #f1f3f5; padding: 6px 8px; border-radius: 4px; white-space: pre-wrap; margin: 4px 0; font-size: 12px; }
#panel .close { float: right; border: none; background: none; font-size: 18px; cursor: pointer; color: var(--muted); }
code { font-family: 'DejaVu Sans Mono', Menlo, monospace; font-size: 12px; }
"""

_JS = r"""
(function () {
"use strict";
const D = JSON.parse(document.getElementById("kdsl-data").textContent);
const NS = "http://www.w3.org/2000/svg";
const svg = document.getElementById("canvas"), vp = document.getElementById("viewport");
const panel = document.getElementById("panel");
const COLORS = D.colors, SYM = {add: "+", sub: "\u2212", mul: "\u00d7", div: "\u00f7", matmul: "@"};
const FONT = "12px 'DejaVu Sans', Helvetica, Arial, sans-serif";
const BOLD = "bold " + FONT, SMALL = "11px 'DejaVu Sans', Helvetica, Arial, sans-serif";
const GAP_X = 18, GAP_Y = D.show_shapes ? 42 : 30, PAD = 12, HEAD = 24, LINE = 16;

const byId = {}, order = {}, clusters = {}, direct = {"": []}, chains = {}, minOrd = {};
D.nodes.forEach((n, i) => { byId[n.id] = n; order[n.id] = i; });
D.clusters.forEach(c => { clusters[c.id] = c; c.kids = []; direct[c.id] = []; minOrd[c.id] = Infinity; });
const rootKids = [];
D.clusters.forEach(c => (c.parent ? clusters[c.parent].kids : rootKids).push(c.id));
D.nodes.forEach(n => {
  direct[n.cluster].push(n.id);
  const ch = [];
  for (let c = n.cluster; c; c = clusters[c].parent) { ch.unshift(c); minOrd[c] = Math.min(minOrd[c], order[n.id]); }
  chains[n.id] = ch;
});
const collapsed = new Set(D.expand ? [] : D.clusters.map(c => c.id));

const ctx2d = document.createElement("canvas").getContext("2d");
function tw(s, f) { ctx2d.font = f; return ctx2d.measureText(s).width; }
function fmtInt(n) { return Number(n).toLocaleString("en-US"); }
function fmtFlops(n) {
  if (n === null || n === undefined) return "?";
  for (const [u, v] of [["T", 1e12], ["G", 1e9], ["M", 1e6], ["K", 1e3]]) if (n >= v) return (n / v).toFixed(2) + " " + u + "FLOPs";
  return n + " FLOPs";
}
function stats(params, flops) {
  if (!D.show_params) return "";
  const b = [];
  if (params) b.push(fmtInt(params) + " params");
  if (flops) b.push(fmtFlops(flops));
  return b.join(" \u00b7 ");
}
function clip(s, n) { return s.length > n ? s.slice(0, n - 1) + "\u2026" : s; }
function argsOf(call) { const i = call.indexOf("("); return i >= 0 && call.endsWith(")") ? call.slice(i + 1, -1) : call; }

// -- boxes ----------------------------------------------------------------------------------
function box(lines, extra) {
  let w = 0;
  for (const l of lines) w = Math.max(w, l.reduce((a, s) => a + tw(s[0], s[1]), 0));
  return Object.assign({w: Math.ceil(w) + 20, h: lines.length * LINE + 10, lines}, extra);
}
function nodeBox(n) {
  if (n.kind === "op") {
    const t = SYM[n.type] || n.type;
    return {w: Math.max(28, Math.ceil(tw(t, SMALL)) + 16), h: 20, lines: [[[t, SMALL, "#333"]]], op: true};
  }
  if (n.kind === "input" || n.kind === "output") {
    const l2 = [[n.type, SMALL, "#5c6670"]];
    if (D.show_shapes) l2.push(["  " + n.out_shapes[0], SMALL, "#333"]);
    return box([[[n.label, BOLD, "#111"]], l2]);
  }
  const head = [[n.label, BOLD, "#111"], ["  " + n.type, FONT, "#5c6670"]];
  if (n.shared) head.push(["  shared " + n.shared.index + "/" + n.shared.count, SMALL, COLORS.shared]);
  const lines = [head];
  const a = argsOf(n.call);
  if (a) lines.push([[clip(a, 60), SMALL, "#333"]]);
  const s = stats(n.params, n.flops);
  if (s) lines.push([[s, SMALL, "#5c6670"]]);
  return box(lines);
}
function blockBox(c) {
  const s = stats(c.params, c.flops);
  return box([[[c.name, BOLD, "#111"], ["  block " + c.block, FONT, "#5c6670"], ["   \u229e", FONT, COLORS.block[1]]],
              [[c.layers + " layers" + (s ? " \u00b7 " + s : ""), SMALL, "#5c6670"]]]);
}

// -- layout -----------------------------------------------------------------------------------
function itemOf(id, cid) {
  const ch = chains[id];
  let i = 0;
  if (cid) { i = ch.indexOf(cid); if (i < 0) return null; i += 1; }
  return i < ch.length ? "c:" + ch[i] : id;
}
function pava(t) {
  const bl = [];
  for (const v of t) {
    bl.push([v, 1]);
    while (bl.length > 1 && bl[bl.length - 2][0] / bl[bl.length - 2][1] > bl[bl.length - 1][0] / bl[bl.length - 1][1]) {
      const b = bl.pop(); bl[bl.length - 1][0] += b[0]; bl[bl.length - 1][1] += b[1];
    }
  }
  const out = [];
  for (const [s, n] of bl) for (let i = 0; i < n; i++) out.push(s / n);
  return out;
}
function layout(cid) {
  const items = {}, list = [];
  const add = (key, it) => { it.key = key; items[key] = it; list.push(it); return it; };
  for (const k of (cid ? clusters[cid].kids : rootKids)) {
    if (collapsed.has(k)) add("c:" + k, Object.assign(blockBox(clusters[k]), {kind: "block", cid: k, ord: minOrd[k]}));
    else { const sub = layout(k); add("c:" + k, {kind: "sub", cid: k, sub, w: sub.w, h: sub.h, ord: minOrd[k]}); }
  }
  for (const id of direct[cid]) add(id, Object.assign(nodeBox(byId[id]), {kind: "node", id, ord: order[id]}));
  const edges = [], ekeys = {};
  for (const e of D.edges) {
    let s = itemOf(e.src, cid), t = itemOf(e.dst, cid);
    if ((s === null && t === null) || s === t) continue;
    if (s === null) { s = "in:" + e.value; if (!items[s]) add(s, {kind: "in", w: 0, h: 0, ord: -1, value: e.value}); }
    if (t === null) { t = "out:" + e.value; if (!items[t]) add(t, {kind: "out", w: 0, h: 0, ord: 1e15, value: e.value}); }
    const k = s + ">" + t + ">" + e.value;
    if (ekeys[k]) continue;
    edges.push(ekeys[k] = {s, t, value: e.value, shape: e.mask ? "mask" : e.shape, mask: e.mask});
  }
  list.sort((a, b) => a.ord - b.ord);
  const ins = {}, outs = {};
  list.forEach(it => { ins[it.key] = []; outs[it.key] = []; });
  for (const e of edges) {
    if (items[e.s].ord < items[e.t].ord) { ins[e.t].push(e); outs[e.s].push(e); } else e.back = true;
  }
  // shortcuts, as this level shows them: an edge whose target another target of the same tensor reaches
  // (a search from each other target, never past the last target, so long models stay cheap)
  const groups = {};
  for (const e of edges) { e.skip = false; if (!e.back && !e.mask) (groups[e.s + ">" + e.value] = groups[e.s + ">" + e.value] || []).push(e); }
  for (const g of Object.values(groups)) {
    if (g.length < 2) continue;
    const last = Math.max(...g.map(e => items[e.t].ord)), want = new Set(g.map(e => e.t));
    for (const st of g) {
      const seen = new Set([st.t]), stack = [st.t];
      while (stack.length) for (const o of outs[stack.pop()]) {
        if (items[o.t].ord <= last && !seen.has(o.t)) { seen.add(o.t); stack.push(o.t); if (want.has(o.t)) g.forEach(e => { if (e.t === o.t) e.skip = true; }); }
      }
    }
  }
  const rank = {};
  let maxr = 0;
  for (const it of list) {
    if (it.kind === "out") continue;
    let r = 0;
    for (const e of ins[it.key]) r = Math.max(r, rank[e.s] + 1);
    rank[it.key] = r; maxr = Math.max(maxr, r);
  }
  let R = maxr;
  if (list.some(it => it.kind === "out")) { R = maxr + 1; list.forEach(it => { if (it.kind === "out") rank[it.key] = R; }); }
  const ranks = [];
  for (let r = 0; r <= R; r++) ranks.push([]);
  list.forEach(it => ranks[rank[it.key]].push(it));
  // segments through dummy nodes; offsets of the attach points from the item's centre
  const up = {}, dn = {};
  Object.keys(items).forEach(k => { up[k] = []; dn[k] = []; });
  const off = (it, value, top) => it.kind === "sub" ? (top ? it.sub.inX[value] : it.sub.outX[value]) - it.w / 2 : 0;
  let nd = 0;
  for (const e of edges) {
    const r0 = rank[e.s], r1 = e.back ? rank[e.s] + 1 : rank[e.t];
    e.chain = [e.s];
    for (let r = r0 + 1; r < r1; r++) {
      const d = {key: "d" + (nd++), kind: "dummy", w: 6, h: 0, ord: items[e.s].ord + 0.5};
      items[d.key] = d; up[d.key] = []; dn[d.key] = []; ranks[r].push(d); e.chain.push(d.key);
    }
    e.chain.push(e.t);
    if (e.back) continue;
    for (let i = 0; i + 1 < e.chain.length; i++) {
      const a = items[e.chain[i]], b = items[e.chain[i + 1]];
      const oa = i === 0 ? off(a, e.value, false) : 0, ob = i + 2 === e.chain.length ? off(b, e.value, true) : 0;
      dn[a.key].push({k: b.key, mine: oa, theirs: ob});
      up[b.key].push({k: a.key, mine: ob, theirs: oa});
    }
  }
  // order within ranks: barycentre sweeps
  const pos = {};
  ranks.forEach(row => { row.sort((a, b) => a.ord - b.ord); row.forEach((it, i) => pos[it.key] = i); });
  for (let it = 0; it < 6; it++) {
    const down = it % 2 === 0;
    for (let q = 1; q < ranks.length; q++) {
      const row = ranks[down ? q : ranks.length - 1 - q];
      for (const x of row) {
        const nb = down ? up[x.key] : dn[x.key];
        x.bc = nb.length ? nb.reduce((a, s) => a + pos[s.k], 0) / nb.length : pos[x.key];
      }
      row.sort((a, b) => (a.bc - b.bc) || (a.ord - b.ord));
      row.forEach((x, i) => pos[x.key] = i);
    }
  }
  // x: isotonic regression towards the neighbours' attach points, keeping order and spacing
  const X = {};
  ranks.forEach(row => { let c = 0; row.forEach(x => { X[x.key] = c + x.w / 2; c += x.w + GAP_X; }); });
  const sep = (a, b) => (a.w + b.w) / 2 + (a.kind === "dummy" && b.kind === "dummy" ? 6 : GAP_X);
  function place(row, nbOf) {
    if (!row.length) return;
    const want = row.map(x => {
      const nb = nbOf(x);
      return nb.length ? nb.reduce((a, s) => a + X[s.k] + s.theirs - s.mine, 0) / nb.length : X[x.key];
    });
    const c = [0];
    for (let i = 1; i < row.length; i++) c.push(c[i - 1] + sep(row[i - 1], row[i]));
    const y = pava(want.map((w, i) => w - c[i]));
    row.forEach((x, i) => X[x.key] = y[i] + c[i]);
  }
  for (let it = 0; it < 8; it++) {
    const down = it % 2 === 0;
    for (let q = 1; q < ranks.length; q++) {
      const r = down ? q : ranks.length - 1 - q;
      place(ranks[r], x => down ? up[x.key] : dn[x.key]);
    }
  }
  for (let q = 0; q < ranks.length; q++) place(ranks[q], x => up[x.key].concat(dn[x.key]));
  // y: rows
  const rowY = [], rowH = ranks.map(row => Math.max(0, ...row.map(x => x.h)));
  const portRow = row => row.length > 0 && row.every(x => x.kind === "in" || x.kind === "out" || x.kind === "dummy");
  let y = cid ? HEAD : 0;
  for (let r = 0; r <= R; r++) {
    rowY.push(y);
    y += rowH[r] + (r === R ? 0 : (portRow(ranks[r]) || portRow(ranks[r + 1])) ? GAP_Y / 2 : GAP_Y);
  }
  let lo = Infinity, hi = -Infinity;
  Object.values(items).forEach(x => { lo = Math.min(lo, X[x.key] - x.w / 2); hi = Math.max(hi, X[x.key] + x.w / 2); });
  const pad = cid ? PAD : 0, shift = pad - lo;
  const W = hi - lo + 2 * pad, H = y + (cid ? PAD : 0);
  const out = {w: W, h: H, list, edges, inX: {}, outX: {}};
  for (let r = 0; r <= R; r++) for (const x of ranks[r]) {
    x.x = X[x.key] + shift; x.top = rowY[r] + (rowH[r] - x.h) / 2; x.r = r;
    if (x.kind === "in") { out.inX[x.value] = x.x; x.top = 0; }
    if (x.kind === "out") { out.outX[x.value] = x.x; x.top = H; }
  }
  for (const e of edges) {
    const pts = [];
    e.chain.forEach((k, i) => {
      const x = items[k];
      if (i === 0) pts.push([x.x + off(x, e.value, false), x.kind === "in" ? 0 : x.top + x.h]);
      else if (i === e.chain.length - 1) pts.push([x.x + off(x, e.value, true), x.kind === "out" ? H : x.top]);
      else { pts.push([x.x, rowY[x.r]]); pts.push([x.x, rowY[x.r] + rowH[x.r]]); }
    });
    e.pts = pts;
    e.arrow = items[e.t].kind !== "out";
    e.labelled = items[e.s].kind !== "in" && items[e.s].kind !== "sub";
  }
  return out;
}

// -- drawing ---------------------------------------------------------------------------------------
function el(tag, attrs, parent) {
  const e = document.createElementNS(NS, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (parent) parent.appendChild(e);
  return e;
}
function drawLines(g, lines, x0, y0) {
  lines.forEach((l, i) => {
    const t = el("text", {x: x0, y: y0 + i * LINE + 12}, g);
    for (const [s, f, color] of l) {
      const sp = el("tspan", {fill: color, "font-size": f.indexOf("11px") >= 0 ? 11 : 12}, t);
      if (f.startsWith("bold")) sp.setAttribute("font-weight", "bold");
      sp.textContent = s;
    }
  });
}
const positions = {};
let selected = null;
function pathOf(pts) {
  let d = "M" + pts[0][0].toFixed(1) + "," + pts[0][1].toFixed(1);
  for (let i = 1; i < pts.length; i++) {
    const [px, py] = pts[i - 1], [qx, qy] = pts[i], m = (py + qy) / 2;
    d += qy - py < 1 ? " L" + qx.toFixed(1) + "," + qy.toFixed(1)
      : " C" + px.toFixed(1) + "," + m.toFixed(1) + " " + qx.toFixed(1) + "," + m.toFixed(1) + " " + qx.toFixed(1) + "," + qy.toFixed(1);
  }
  return d;
}
function render(L, ox, oy, g, depth) {
  const done = new Set();
  for (const e of L.edges) {
    const pts = e.pts.map(([x, y]) => [x + ox, y + oy]);
    const p = el("path", {d: pathOf(pts), class: "edge" + (e.skip ? " skip" : "") + (e.mask ? " mask" : "")}, g);
    if (e.arrow) p.setAttribute("marker-end", e.skip ? "url(#arrow-skip)" : "url(#arrow)");
    const lk = e.s + ">" + e.value;
    if (D.show_shapes && e.labelled && !done.has(lk)) {
      done.add(lk);
      const t = el("text", {x: pts[0][0] + 5, y: pts[0][1] + 13, class: "elabel"}, g);
      t.textContent = e.shape;
    }
  }
  for (const it of L.list) {
    const x = ox + it.x - it.w / 2, y = oy + it.top;
    if (it.kind === "node") drawNode(byId[it.id], it, x, y, g);
    else if (it.kind === "block") drawBlock(clusters[it.cid], it, x, y, g);
    else if (it.kind === "sub") {
      const c = clusters[it.cid];
      const cg = el("g", {class: "cluster", "data-cluster": c.id}, g);
      const shade = ["#f8f9ff", "#eef1fb", "#e4e9f7"][Math.min(depth, 2)];
      el("rect", {x, y, width: it.w, height: it.h, rx: 8, fill: shade, stroke: "#91a7ff", "stroke-width": 1}, cg);
      const head = el("g", {class: "cluster-head"}, cg);
      el("rect", {x, y, width: it.w, height: HEAD - 4, fill: "transparent"}, head);
      const s = stats(c.params, c.flops);
      drawLines(head, [[["\u229f ", FONT, COLORS.block[1]], [c.name, BOLD, "#111"], ["  block " + c.block + (s ? " \u00b7 " + s : ""), SMALL, "#5c6670"]]], x + 8, y + 1);
      head.addEventListener("click", ev => { ev.stopPropagation(); if (!dragged) { collapsed.add(c.id); redraw(); } });
      render(it.sub, x, y, cg, depth + 1);
    }
  }
}
function drawNode(n, it, x, y, g) {
  const [fill, stroke] = COLORS[n.family] || COLORS.other;
  const attrs = {class: "node fam-" + n.family, "data-node": n.id, transform: "translate(" + x.toFixed(1) + "," + y.toFixed(1) + ")"};
  attrs[n.kind === "op" ? "data-op" : n.kind === "layer" ? "data-layer" : "data-" + n.kind] = n.name;
  const ng = el("g", attrs, g);
  el("rect", {width: it.w, height: it.h, rx: it.op ? 10 : 6, fill, stroke}, ng);
  if (it.op) {
    const t = el("text", {x: it.w / 2, y: 14, "text-anchor": "middle", "font-size": 11, fill: "#333"}, ng);
    t.textContent = it.lines[0][0][0];
  } else drawLines(ng, it.lines, 10, 5);
  const title = el("title", {}, ng);
  title.textContent = n.name + ": " + n.call;
  ng.addEventListener("click", ev => { ev.stopPropagation(); if (!dragged) select(n.id); });
  positions[n.id] = {x, y, w: it.w, h: it.h, g: ng};
  if (selected === n.id) ng.classList.add("selected");
}
function drawBlock(c, it, x, y, g) {
  const [fill, stroke] = COLORS.block;
  const bg = el("g", {class: "node block", "data-block": c.id, transform: "translate(" + x.toFixed(1) + "," + y.toFixed(1) + ")"}, g);
  el("rect", {width: it.w, height: it.h, rx: 6, fill, stroke, "stroke-dasharray": "4 2"}, bg);
  drawLines(bg, it.lines, 10, 5);
  el("title", {}, bg).textContent = c.id + " (click to expand)";
  bg.addEventListener("click", ev => { ev.stopPropagation(); if (!dragged) { collapsed.delete(c.id); redraw(); } });
}
let L = null;
function redraw() {
  while (vp.firstChild) vp.removeChild(vp.firstChild);
  for (const k in positions) delete positions[k];
  L = layout("");
  const g = el("g", {}, vp);
  render(L, 0, 0, g, 0);
  for (const grp of D.shared) {
    for (let i = 0; i + 1 < grp.length; i++) {
      const a = positions[grp[i]], b = positions[grp[i + 1]];
      if (!a || !b) continue;
      const ax = a.x + a.w, ay = a.y + a.h / 2, bx = b.x + b.w, by = b.y + b.h / 2, cx = Math.max(ax, bx) + 60;
      el("path", {d: "M" + ax + "," + ay + " C" + cx + "," + ay + " " + cx + "," + by + " " + bx + "," + by, class: "shared-link"}, g);
    }
  }
}

// -- details panel -----------------------------------------------------------------------------
function h(tag, text, parent, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = text;
  if (cls) e.className = cls;
  if (parent) parent.appendChild(e);
  return e;
}
function table(rows, parent) {
  const t = h("table", null, parent);
  for (const [k, v] of rows) { const tr = h("tr", null, t); h("td", k, tr); h("code", v, h("td", null, tr)); }
}
function select(id) {
  if (selected && positions[selected]) positions[selected].g.classList.remove("selected");
  selected = id;
  if (positions[id]) positions[id].g.classList.add("selected");
  const n = byId[id];
  panel.textContent = "";
  const close = h("button", "\u00d7", panel, "close");
  close.title = "close (Esc)";
  close.addEventListener("click", () => { panel.hidden = true; });
  h("h2", n.name, panel);
  h("div", n.type + (n.kind === "op" ? " (function)" : n.kind === "layer" ? " layer" : ""), panel, "type");
  h("pre", n.call, panel);
  const facts = [];
  if (n.in_shapes.length) facts.push(["input" + (n.in_shapes.length > 1 ? "s" : ""), n.in_shapes.join("  ")]);
  facts.push(["output", n.out_shapes.join("  ")]);
  if (n.kind === "layer" || n.kind === "op") {
    facts.push(["params", fmtInt(n.params) + (n.shared && n.shared.index > 1 ? " (counted at call 1)" : "")]);
    facts.push(["FLOPs", n.flops === null ? "? (symbolic size)" : fmtInt(n.flops) + " per sample"]);
  }
  if (n.shared) facts.push(["shared", "call " + n.shared.index + " of " + n.shared.count + " (one set of weights)"]);
  if (n.cluster) facts.push(["block call", n.cluster]);
  table(facts, panel);
  if (n.weights.length) { h("h3", "Weights", panel); table(n.weights.map(w => [w[0], w[1] + (w[2] ? "" : "  non-trainable")]), panel); }
  if (n.args.length) { h("h3", "Arguments", panel); table(n.args, panel); }
  if (n.source) {
    h("h3", "Source", panel);
    h("code", n.source.loc, h("div", null, panel));
    if (n.source.text) h("pre", n.source.text, panel, "src");
  }
  panel.hidden = false;
}

// -- pan and zoom ---------------------------------------------------------------------------------
const view = {x: 20, y: 20, k: 1};
function apply() { vp.setAttribute("transform", "translate(" + view.x.toFixed(1) + "," + view.y.toFixed(1) + ") scale(" + view.k.toFixed(4) + ")"); }
function zoomAt(mx, my, f) {
  const k = Math.min(6, Math.max(0.03, view.k * f));
  f = k / view.k;
  view.x = mx - (mx - view.x) * f; view.y = my - (my - view.y) * f; view.k = k; apply();
}
function fit(all) {
  const r = svg.getBoundingClientRect(), W = r.width || 1200, H = r.height || 800;
  let k = Math.min((W - 40) / Math.max(L.w, 1), all ? (H - 40) / Math.max(L.h, 1) : Infinity, 1.25);
  if (!all) k = Math.max(k, 0.45);          // wide graphs: stay readable, pan sideways
  view.k = k; view.x = (W - L.w * k) / 2; view.y = 20;
  if (all) view.y = Math.max(20, (H - L.h * k) / 2);
  apply();
}
svg.addEventListener("wheel", ev => {
  ev.preventDefault();
  const r = svg.getBoundingClientRect();
  zoomAt(ev.clientX - r.left, ev.clientY - r.top, Math.exp(-ev.deltaY * 0.0015));
}, {passive: false});
let drag = null, dragged = false;
svg.addEventListener("pointerdown", ev => { drag = {x: ev.clientX, y: ev.clientY, moved: false}; dragged = false; svg.classList.add("dragging"); });
window.addEventListener("pointermove", ev => {
  if (!drag) return;
  const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
  if (Math.abs(dx) + Math.abs(dy) > 2) drag.moved = true;
  view.x += dx; view.y += dy; drag.x = ev.clientX; drag.y = ev.clientY; apply();
});
window.addEventListener("pointerup", () => { dragged = !!(drag && drag.moved); drag = null; svg.classList.remove("dragging"); });
function centre(k) { const r = svg.getBoundingClientRect(); zoomAt(r.width / 2, r.height / 2, k); }
document.getElementById("fit").addEventListener("click", () => fit(true));
document.getElementById("zoom-in").addEventListener("click", () => centre(1.25));
document.getElementById("zoom-out").addEventListener("click", () => centre(0.8));
document.getElementById("expand").addEventListener("click", () => { collapsed.clear(); redraw(); });
document.getElementById("collapse").addEventListener("click", () => { D.clusters.forEach(c => collapsed.add(c.id)); redraw(); fit(false); });
window.addEventListener("keydown", ev => {
  if (ev.key === "Escape") panel.hidden = true;
  else if (ev.key === "f") fit(true);
  else if (ev.key === "+" || ev.key === "=") centre(1.25);
  else if (ev.key === "-") centre(0.8);
});

function reveal(name) {   // deep link: page.html#layer=NAME opens that layer's details
  const n = D.nodes.find(x => x.name === name);
  if (!n) return false;
  chains[n.id].forEach(c => collapsed.delete(c));
  redraw();
  select(n.id);
  const p = positions[n.id], r = svg.getBoundingClientRect();
  view.k = 1; view.x = (r.width || 1200) / 2 - (p.x + p.w / 2); view.y = (r.height || 800) / 2 - (p.y + p.h / 2);
  apply();
  return true;
}
window.addEventListener("hashchange", () => {
  const m = /^#layer=(.+)$/.exec(location.hash);
  if (m) reveal(decodeURIComponent(m[1]));
});

redraw();
fit(false);
const deep = /^#layer=(.+)$/.exec(location.hash);
if (deep) reveal(decodeURIComponent(deep[1]));
document.body.setAttribute("data-rendered", String(vp.querySelectorAll("[data-node]").length));
})();
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="kdsl">
<title>@TITLE@ \u2014 kdsl graph</title>
<style>@CSS@</style>
</head>
<body data-model="@TITLE@" data-layer-count="@LAYERS@" data-call-count="@CALLS@">
<header>
  <h1>@TITLE@</h1>
  <span class="stats">@STATS@</span>
  <span class="tools">
    <button id="fit" title="fit the whole graph (f)">Fit</button>
    <button id="zoom-in" title="zoom in (+)">+</button>
    <button id="zoom-out" title="zoom out (-)">\u2212</button>
    <button id="expand" title="show the layers inside every block call">Expand blocks</button>
    <button id="collapse" title="draw each block call as one box">Collapse blocks</button>
  </span>
  <span class="legend"><b style="color:@SKIP@">\u2501 shortcut</b><b style="color:@SHARED@">\u2504 shared weights</b>
    drag to pan \u00b7 wheel to zoom \u00b7 click a layer for details</span>
</header>
<main>
  <svg id="canvas" role="img" aria-label="data-flow diagram of @TITLE@">
    <defs>
      <marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
        <path d="M0,1 L9,5 L0,9 z" fill="#5c6670"/></marker>
      <marker id="arrow-skip" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
        <path d="M0,1 L9,5 L0,9 z" fill="@SKIP@"/></marker>
    </defs>
    <g id="viewport"></g>
  </svg>
  <aside id="panel" hidden></aside>
</main>
<noscript><p>This diagram is drawn by JavaScript; enable it, or use kdsl graph -o model.svg.</p></noscript>
<script type="application/json" id="kdsl-data">@DATA@</script>
<script>@JS@</script>
</body>
</html>
"""


def _json_for_script(obj) -> str:
    """JSON safe inside <script>: no '</' or '<!--' can end or confuse the element."""
    return (json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
            .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def to_html(view: View, show_shapes: bool = True, show_params: bool = True, expand_blocks: bool = False) -> str:
    """The interactive page for ``view`` (one file; everything it needs is inside it)."""
    t = view.totals
    data = view.to_json()
    data.update(show_shapes=bool(show_shapes), show_params=bool(show_params), expand=bool(expand_blocks),
                colors={**{k: list(v) for k, v in COLORS.items()}, "shared": SHARED_COLOR})
    bits = [f"{t['layers']} layers", f"{t['params']:,} params"]
    if t["non_trainable"]:
        bits[-1] += f" ({t['non_trainable']:,} non-trainable)"
    if t["flops"] is not None:
        bits.append(f"{format_flops(t['flops'])} per sample")
    bits.append(f"{t['inputs']} input{'s' if t['inputs'] != 1 else ''}, "
                f"{t['outputs']} output{'s' if t['outputs'] != 1 else ''}")
    page = _PAGE
    for key, value in (("@CSS@", _CSS), ("@STATS@", escape(" \u00b7 ".join(bits))),
                       ("@LAYERS@", str(t["layers"])), ("@CALLS@", str(t["calls"])),
                       ("@SKIP@", SKIP_COLOR), ("@SHARED@", SHARED_COLOR), ("@TITLE@", escape(view.model))):
        page = page.replace(key, value)
    # data and code last, so nothing inside them is mistaken for a placeholder
    return page.replace("@JS@", _JS).replace("@DATA@", _json_for_script(data))
