// posfeat feature explorer: reads the deflated data embedded in the page; no network.
// Every string that comes from a model, tokenizer or config reaches the page through textContent
// (never innerHTML); the Neuronpedia link is built from an id validated and URL-encoded in Python.
(function () {
  "use strict";
  const DATA = JSON.parse(document.getElementById("explorer-data").textContent);
  const KINDS = DATA.kinds, PAGE = 100, P = DATA.n_positions, P0 = DATA.first_position || 0;
  const TOK = DATA.tokens, K = TOK.k, SVGNS = "http://www.w3.org/2000/svg";
  const el = (id) => document.getElementById(id);
  let table = null, profiles = null, refs = null, vals = null, byToken = null, rows = [], tokenAct = null;
  let sortKey = "feature", sortDir = 1, page = 0;

  async function inflate(b64) {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }
  function half(h) {  // IEEE float16 -> number
    const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 31, m = h & 1023;
    if (e === 0) return s * m * 2 ** -24;
    if (e === 31) return m ? NaN : s * Infinity;
    return s * (1 + m / 1024) * 2 ** (e - 15);
  }
  function profile(f) {
    const out = new Float64Array(P), scale = table.scale[f] || 0;
    let q = 0;
    const L = table.levels[f] || 255;
    for (let i = 0; i < P; i++) { q = (q + profiles[f * P + i]) & 255; out[i] = q / L * scale; }
    return out;
  }
  // a feature's top tokens over the whole vocabulary: [[string, mean activation], ...], highest first
  function topTokens(f, n = K) {
    const out = [];
    for (let j = 0; j < Math.min(n, K); j++) {
      const r = refs[f * K + j];
      if (r < TOK.strings.length) out.push([TOK.strings[r], vals[f * K + j]]);
    }
    return out;
  }
  function num(v) { return Number.isFinite(v) ? Number(v.toPrecision(3)) : v; }
  function fmt(v) { return v === null || v === undefined ? "n/a" : String(v); }
  function value(f, key) {
    if (key === "feature") return f;
    if (key === "kind") return KINDS[table.kind[f]];
    if (key === "top_tokens") return topTokens(f, 5).map(([s]) => s).join(" | ");
    if (key === "token_activation") return tokenAct ? tokenAct.get(f) : null;
    return table[key][f];
  }
  const COLS = [["feature", "id"], ["kind", "kind"], ["positional_score", "positional score"], ["token_score", "token score"],
    ["position_share", "position share"], ["token_share", "token share"], ["interaction_share", "interaction"], ["peak", "peak"],
    ["runs", "runs"], ["top_tokens", "top tokens"]];

  // token string -> features that have it among their top K tokens, with the activation (exact index, inverted here)
  function buildIndex() {
    byToken = new Map();
    for (let f = 0; f < DATA.n_features; f++) {
      for (let j = 0; j < K; j++) {
        const r = refs[f * K + j];
        if (r >= TOK.strings.length) continue;
        let list = byToken.get(r);
        if (!list) { list = []; byToken.set(r, list); }
        list.push([f, vals[f * K + j]]);
      }
    }
  }
  function tokenMatches(q) {
    const t = q.trim(), hits = new Map();
    TOK.strings.forEach((s, r) => {
      if (s === q || s.trim() === t) for (const [f, v] of byToken.get(r) || []) hits.set(f, Math.max(v, hits.get(f) ?? -Infinity));
    });
    return hits;
  }
  function filtered() {
    const q = el("feature-search").value, kind = el("kind-filter").value, t = q.trim();
    let list = [...Array(DATA.n_features).keys()];
    tokenAct = null;
    if (t !== "" && /^\d+$/.test(t)) list = list.filter((f) => f === Number(t));
    else if (q !== "") { tokenAct = tokenMatches(q); list = [...tokenAct.keys()]; }
    if (kind !== "all") list = list.filter((f) => KINDS[table.kind[f]] === kind);
    const key = tokenAct && sortKey === "feature" ? "token_activation" : sortKey, dir = key === "token_activation" ? -1 : sortDir;
    return list.sort((a, b) => {
      const x = value(a, key), y = value(b, key);
      if (x === y) return a - b;
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : 1) * dir;
    });
  }
  function render() {
    rows = filtered();
    const pages = Math.max(1, Math.ceil(rows.length / PAGE));
    page = Math.min(page, pages - 1);
    const body = el("feature-rows");
    body.textContent = "";
    for (const f of rows.slice(page * PAGE, (page + 1) * PAGE)) {
      const tr = document.createElement("tr");
      tr.dataset.row = f;
      for (const [key] of COLS) {
        const td = document.createElement("td");
        td.textContent = fmt(value(f, key));
        if (key === "top_tokens" || key === "runs" || key === "kind") { td.className = "l"; td.title = td.textContent; }
        tr.appendChild(td);
      }
      tr.addEventListener("click", () => openCard(f, true));
      body.appendChild(tr);
    }
    const q = el("feature-search").value;
    el("explorer-status").textContent = (tokenAct ? `${rows.length} feature(s) have ${JSON.stringify(q)} among their top ${K} tokens` :
      `${rows.length} feature(s)`) + `; page ${page + 1} of ${pages}`;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function ticks(lo, hi, n) {  // about n round ticks in [lo, hi]
    const span = hi - lo || 1, step0 = span / n, mag = 10 ** Math.floor(Math.log10(step0));
    const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= step0);
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9 * span; v += step) out.push(Number(v.toPrecision(6)));
    return out;
  }
  // the profile: axes with ticks (position, mean activation), the context edge, and each position's value on hover
  function svgProfile(values) {
    const W = 560, H = 200, L = 52, R = 10, T = 12, B = 34, n = values.length, max = Math.max(...values, 1e-12);
    const x = (i) => L + (n > 1 ? i * (W - L - R) / (n - 1) : 0), y = (v) => H - B - (H - B - T) * Math.max(v, 0) / max;
    const root = svg("svg", {class: "profile", viewBox: `0 0 ${W} ${H}`, width: "100%", role: "img"});
    root.appendChild(svg("title", {}, "mean activation over tokens at each position"));
    const axes = svg("g", {class: "axes", "font-size": 10, fill: "#444"});
    axes.appendChild(svg("line", {x1: L, x2: W - R, y1: H - B, y2: H - B, stroke: "#444"}));
    axes.appendChild(svg("line", {x1: L, x2: L, y1: T, y2: H - B, stroke: "#444"}));
    for (const p of ticks(P0, P0 + n - 1, 8)) {
      const px = x(p - P0);
      axes.appendChild(svg("line", {x1: px, x2: px, y1: H - B, y2: H - B + 4, stroke: "#444"}));
      axes.appendChild(svg("text", {class: "xtick", x: px, y: H - B + 14, "text-anchor": "middle"}, String(p)));
    }
    for (const v of ticks(0, max, 4)) {
      axes.appendChild(svg("line", {x1: L - 4, x2: L, y1: y(v), y2: y(v), stroke: "#444"}));
      axes.appendChild(svg("text", {class: "ytick", x: L - 6, y: y(v) + 3, "text-anchor": "end"}, String(v)));
    }
    axes.appendChild(svg("text", {x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle"}, "position"));
    axes.appendChild(svg("text", {x: 12, y: (T + H - B) / 2, "text-anchor": "middle", transform: `rotate(-90 12 ${(T + H - B) / 2})`}, "mean activation"));
    root.appendChild(axes);
    if (DATA.context < P0 + n) {
      const cx = x(DATA.context - P0 - 0.5);
      root.appendChild(svg("line", {class: "context-edge", x1: cx, x2: cx, y1: T, y2: H - B, stroke: "#888", "stroke-dasharray": "4,3"}));
      root.appendChild(svg("text", {x: cx + 3, y: T + 9, "font-size": 10, fill: "#666"}, `context ${DATA.context}`));
    }
    const pts = Array.from(values, (v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    root.appendChild(svg("polyline", {fill: "none", stroke: "#d62728", "stroke-width": 1.3, points: pts}));
    const guide = svg("line", {class: "hover-guide", y1: T, y2: H - B, stroke: "#1f77b4", visibility: "hidden"});
    const dot = svg("circle", {r: 3, fill: "#1f77b4", visibility: "hidden"});
    const tip = svg("text", {class: "hover-value", x: W - R, y: T + 9, "text-anchor": "end", "font-size": 11, fill: "#1f77b4"}, "");
    root.append(guide, dot, tip);
    root.addEventListener("mousemove", (ev) => {
      const box = root.getBoundingClientRect(), sx = (ev.clientX - box.left) * W / box.width;
      const i = Math.max(0, Math.min(n - 1, Math.round((sx - L) * (n - 1) / Math.max(1, W - L - R))));
      for (const [k, v] of [["x1", x(i)], ["x2", x(i)]]) guide.setAttribute(k, v);
      dot.setAttribute("cx", x(i)); dot.setAttribute("cy", y(values[i]));
      guide.setAttribute("visibility", "visible"); dot.setAttribute("visibility", "visible");
      tip.textContent = `position ${P0 + i}: ${num(values[i])}`;
    });
    root.addEventListener("mouseleave", () => { guide.setAttribute("visibility", "hidden"); dot.setAttribute("visibility", "hidden"); tip.textContent = ""; });
    return root;
  }
  function para(...parts) {
    const p = document.createElement("p");
    for (const part of parts) p.append(part);
    return p;
  }
  function openCard(f, fromClick) {
    if (!(f >= 0 && f < DATA.n_features)) return;
    const card = el("feature-card"), box = document.createElement("div");
    box.dataset.feature = f;
    const h = document.createElement("h3"), self = document.createElement("a");
    self.href = `#feature-${f}`;
    self.textContent = `Feature ${f}`;
    self.title = "link to this card";
    h.append(self, `: ${KINDS[table.kind[f]]}`);
    if (DATA.neuronpedia && DATA.neuronpedia.startsWith("https://www.neuronpedia.org/")) {
      const np = document.createElement("a");
      np.href = DATA.neuronpedia + encodeURIComponent(String(f));
      np.rel = "noopener noreferrer";
      np.textContent = "Neuronpedia";
      h.append(" ", np);
    }
    box.appendChild(h);
    box.appendChild(para(`position share ${fmt(table.position_share[f])}, token share ${fmt(table.token_share[f])}, interaction ${fmt(table.interaction_share[f])}; ` +
      `fires on ${fmt(table.fire[f])} of the grid inside the context; peak ${table.peak[f]}; firing runs: ${table.runs[f] || "none"}`));
    box.appendChild(para(`mean activation over tokens at positions ${P0}..${P0 + P - 1} (dashed: end of the training context, ${DATA.context}; ` +
      `max ${fmt(table.scale[f])}; drawn at ${table.levels[f]} levels; hover for each position's value)`));
    box.appendChild(svgProfile(profile(f)));
    const top = topTokens(f);
    box.appendChild(para(`top ${top.length} tokens over the whole vocabulary (mean activation over the context's positions):`));
    const list = document.createElement("table");
    list.className = "top-tokens";
    for (const [s, v] of top) {
      const tr = document.createElement("tr"), a = document.createElement("td"), b = document.createElement("td");
      a.className = "l tok";
      a.textContent = JSON.stringify(s);
      b.textContent = String(num(v));
      tr.append(a, b);
      list.appendChild(tr);
    }
    box.appendChild(list);
    card.textContent = "";
    card.appendChild(box);
    if (fromClick) history.replaceState(null, "", `#feature-${f}`);
  }
  function openFromHash() {
    const m = /^#feature-(\d+)$/.exec(location.hash);
    if (!m) return;
    openCard(Number(m[1]), false);
    el("explorer-title").scrollIntoView({block: "start"});
  }
  async function start() {
    table = JSON.parse(new TextDecoder().decode(await inflate(DATA.table)));
    profiles = await inflate(DATA.profiles);
    const rb = await inflate(TOK.refs), vb = await inflate(TOK.values), dv = new DataView(vb.buffer);
    const rv = new DataView(rb.buffer);
    refs = TOK.ref_bytes === 2 ? Uint16Array.from({length: rb.length / 2}, (_, i) => rv.getUint16(2 * i, true))
      : Uint32Array.from({length: rb.length / 4}, (_, i) => rv.getUint32(4 * i, true));
    vals = Float64Array.from({length: vb.length / 2}, (_, i) => half(dv.getUint16(2 * i, true)));
    buildIndex();
    const head = el("feature-head");
    for (const [key, name] of COLS) {
      const th = document.createElement("th");
      const b = document.createElement("button");
      b.textContent = name;
      b.dataset.sort = key;
      b.addEventListener("click", () => { sortDir = sortKey === key ? -sortDir : (key === "feature" || key === "peak" ? 1 : -1); sortKey = key; render(); });
      th.appendChild(b);
      head.appendChild(th);
    }
    el("feature-search").addEventListener("input", () => {
      page = 0; render();
      const t = el("feature-search").value.trim();
      if (/^\d+$/.test(t) && Number(t) < DATA.n_features) openCard(Number(t), true);
    });
    el("kind-filter").addEventListener("change", () => { page = 0; render(); });
    el("page-prev").addEventListener("click", () => { page = Math.max(0, page - 1); render(); });
    el("page-next").addEventListener("click", () => { page += 1; render(); });
    window.addEventListener("hashchange", openFromHash);
    render();
    openFromHash();
    document.body.dataset.explorer = "ready";
  }
  start().catch((e) => { el("explorer-status").textContent = "the explorer could not start: " + e; throw e; });
})();
