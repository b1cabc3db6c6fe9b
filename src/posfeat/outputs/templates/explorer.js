// posfeat feature explorer: reads the deflated data embedded in the page; no network.
// Every string that comes from a model, tokenizer or config reaches the page through textContent
// (never innerHTML); the Neuronpedia link is built from an id validated and URL-encoded in Python.
(function () {
  "use strict";
  const DATA = JSON.parse(document.getElementById("explorer-data").textContent);
  const KINDS = DATA.kinds, PAGE = 100, P = DATA.n_positions, P0 = DATA.first_position || 0;
  const TOK = DATA.tokens, K = TOK.k, SVGNS = "http://www.w3.org/2000/svg", BLOCK = DATA.profile_block || 1;
  const el = (id) => document.getElementById(id);
  let table = null, profiles = null, refs = null, vals = null, byToken = null, rows = [], tokenAct = null, vocab = [];
  let profileRow = null, nExact = 0, histCodes = null, inputs = null, logitData = null, preCoef = null, preBasis = null, preScale = null, preExact = null, preRow = null;
  let sortKey = "feature", sortDir = 1, page = 0;

  function bytesOf(b64) {
    const text = atob(b64), out = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
    return out;
  }
  async function inflate(b64) {
    const bytes = bytesOf(b64);
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }
  const NB = Math.ceil(P / BLOCK);
  // positional features: every position at 255 levels; the others: means over blocks of BLOCK positions (repeated here)
  function profile(f) {
    const out = new Float64Array(P), scale = table.scale[f] || 0, L = table.levels[f] || 255, r = profileRow[f];
    let q = 0;
    if (r < nExact) {
      for (let i = 0; i < P; i++) { q = (q + profiles[r * P + i]) & 255; out[i] = q / L * scale; }
      return out;
    }
    const base = nExact * P + (r - nExact) * NB;
    for (let j = 0; j < NB; j++) {
      q = (q + profiles[base + j]) & 255;
      for (let i = j * BLOCK; i < Math.min(P, (j + 1) * BLOCK); i++) out[i] = q / L * scale;
    }
    return out;
  }
  const LITTLE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
  // little-endian unsigned integers of 2 or 4 bytes (a view where the machine is little-endian, as nearly all are)
  function readIds(bytes, width) {
    const n = bytes.length / width;
    if (LITTLE && bytes.byteOffset % width === 0) return width === 2 ? new Uint16Array(bytes.buffer, bytes.byteOffset, n) : new Uint32Array(bytes.buffer, bytes.byteOffset, n);
    const dv = new DataView(bytes.buffer, bytes.byteOffset), out = width === 2 ? new Uint16Array(n) : new Uint32Array(n);
    for (let i = 0; i < n; i++) out[i] = width === 2 ? dv.getUint16(2 * i, true) : dv.getUint32(4 * i, true);
    return out;
  }
  function tokenString(t) { return t < vocab.length ? vocab[t] : `<${t}>`; }
  function norm(s) { const t = s.trim(); return DATA.vocab.uncased ? t.toLowerCase() : t; }
  // the mean pre-activation by position: exact for positional features, else on the top PCs of W_pos
  function preactivation(f) {
    const out = new Float64Array(P), pre = DATA.pre;
    if (preRow.has(f)) {
      const r = preRow.get(f), lo = pre.exact_lo[r], hi = pre.exact_hi[r];
      for (let i = 0; i < P; i++) out[i] = lo + preExact[r * P + i] / 255 * (hi - lo);
      return [out, true];
    }
    const R = pre.pcs, sc = preScale[f] / 127, m = table.pre_mean[f];
    for (let i = 0; i < P; i++) {
      let v = m;
      for (let k = 0; k < R; k++) v += preBasis[i * R + k] * preCoef[f * R + k] * sc;
      out[i] = v;
    }
    return [out, false];
  }
  // a feature's top tokens over the whole vocabulary: [[string, mean activation], ...], highest first
  function topTokens(f, n = K) {
    const out = [];
    for (let j = 0; j < Math.min(n, K); j++) {
      const r = refs[f * K + j];
      if (r < vocab.length) out.push([vocab[r], vals[f * K + j] / 255 * (table.token_score[f] || 0)]);
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
        if (r >= vocab.length) continue;
        const key = norm(vocab[r]);
        let list = byToken.get(key);
        if (!list) { list = []; byToken.set(key, list); }
        list.push([f, vals[f * K + j] / 255 * (table.token_score[f] || 0)]);
      }
    }
  }
  // features with the token among their top tokens (leading/trailing spaces ignored; case too where the vocabulary is uncased)
  function tokenMatches(q) {
    const hits = new Map();
    for (const [f, v] of byToken.get(norm(q)) || []) hits.set(f, Math.max(v, hits.get(f) ?? -Infinity));
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
    const head = el("feature-head"), actHead = head.querySelector("th.token-activation");
    if (tokenAct && !actHead) {
      const th = document.createElement("th");
      th.className = "token-activation";
      th.textContent = "on the token";
      th.title = "the feature's exact mean activation on the searched token, over the context's positions";
      head.insertBefore(th, head.children[1]);
    } else if (!tokenAct && actHead) actHead.remove();
    for (const f of rows.slice(page * PAGE, (page + 1) * PAGE)) {
      const tr = document.createElement("tr");
      tr.dataset.row = f;
      const cols = tokenAct ? [COLS[0], ["token_activation", "on the token"], ...COLS.slice(1)] : COLS;
      for (const [key] of cols) {
        const td = document.createElement("td");
        if (key === "feature") {
          const a = document.createElement("a");
          a.href = `#feature-${f}`;
          a.className = "feature-link";
          a.textContent = String(f);
          td.appendChild(a);
          tr.appendChild(td);
          continue;
        }
        if (key === "token_activation") td.className = "token-activation";
        td.textContent = fmt(key === "token_activation" ? num(value(f, key)) : value(f, key));
        if (key === "top_tokens" || key === "runs" || key === "kind") { td.className = "l"; td.title = td.textContent; }
        tr.appendChild(td);
      }
      tr.addEventListener("click", (ev) => { ev.preventDefault(); openCard(f, true); });
      body.appendChild(tr);
    }
    const q = el("feature-search").value;
    el("explorer-status").textContent = (tokenAct ? `${rows.length} feature(s) have ${JSON.stringify(q)} among their top ${K} tokens` +
      (DATA.vocab.uncased ? " (the vocabulary is uncased: case ignored)" : "") : `${rows.length} feature(s)`) + `; page ${page + 1} of ${pages}`;
    if (q.trim() !== "" && rows.length === 0) {  // no match: no stale card
      const card = el("feature-card");
      card.textContent = "";
      card.appendChild(para(`No feature matches ${JSON.stringify(q)}.`));
      card.firstChild.className = "cap no-match";
    }
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
  // a curve over the positions with a horizontal line at 0 (and at the firing threshold when above 0) and the context edge
  function svgPre(values, threshold, approx) {
    const W = 560, H = 170, L = 52, R = 10, T = 12, B = 34, n = values.length;
    const lo = Math.min(0, threshold, ...values), hi = Math.max(0, threshold, ...values), span = hi - lo || 1;
    const x = (i) => L + (n > 1 ? i * (W - L - R) / (n - 1) : 0), y = (v) => H - B - (H - B - T) * (v - lo) / span;
    const root = svg("svg", {class: "preactivation", viewBox: `0 0 ${W} ${H}`, width: "100%", role: "img"});
    root.appendChild(svg("title", {}, "mean pre-activation over tokens at each position"));
    const axes = svg("g", {class: "axes", "font-size": 10, fill: "#444"});
    axes.appendChild(svg("line", {x1: L, x2: L, y1: T, y2: H - B, stroke: "#444"}));
    for (const p of ticks(P0, P0 + n - 1, 8)) axes.appendChild(svg("text", {class: "xtick", x: x(p - P0), y: H - B + 14, "text-anchor": "middle"}, String(p)));
    for (const v of ticks(lo, hi, 4)) axes.appendChild(svg("text", {class: "ytick", x: L - 6, y: y(v) + 3, "text-anchor": "end"}, String(v)));
    axes.appendChild(svg("text", {x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle"}, "position"));
    root.appendChild(axes);
    root.appendChild(svg("line", {class: "zero-line", x1: L, x2: W - R, y1: y(0), y2: y(0), stroke: "#444"}));
    if (threshold > 0) root.appendChild(svg("line", {class: "threshold-line", x1: L, x2: W - R, y1: y(threshold), y2: y(threshold), stroke: "#2ca02c", "stroke-dasharray": "2,2"}));
    if (DATA.context < P0 + n) {
      const cx = x(DATA.context - P0 - 0.5);
      root.appendChild(svg("line", {class: "context-edge", x1: cx, x2: cx, y1: T, y2: H - B, stroke: "#888", "stroke-dasharray": "4,3"}));
    }
    const pts = Array.from(values, (v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    root.appendChild(svg("polyline", {fill: "none", stroke: approx ? "#9467bd" : "#1f77b4", "stroke-width": 1.3, points: pts}));
    return root;
  }
  // the exact activation histogram over the context's grid: bars of log count
  function svgHistogram(codes, max) {
    const W = 560, H = 140, L = 52, R = 10, T = 10, B = 30, n = codes.length, top = Math.max(...codes, 1);
    const root = svg("svg", {class: "histogram", viewBox: `0 0 ${W} ${H}`, width: "100%", role: "img"});
    root.appendChild(svg("title", {}, "number of inputs per activation bin (log scale)"));
    const bw = (W - L - R) / n;
    codes.forEach((c, i) => {
      const h = (H - B - T) * c / top, count = Math.round(2 ** (c / DATA.hist.scale) - 1);
      const bar = svg("rect", {class: "bar", x: L + i * bw + 0.5, y: H - B - h, width: Math.max(bw - 1, 1), height: h, fill: "#1f77b4"});
      bar.appendChild(svg("title", {}, `(${num(max * i / n)}, ${num(max * (i + 1) / n)}]: about ${count} inputs`));
      root.appendChild(bar);
    });
    const axes = svg("g", {class: "axes", "font-size": 10, fill: "#444"});
    axes.appendChild(svg("line", {x1: L, x2: W - R, y1: H - B, y2: H - B, stroke: "#444"}));
    for (const v of ticks(0, max, 6)) axes.appendChild(svg("text", {class: "xtick", x: L + (W - L - R) * v / (max || 1), y: H - B + 13, "text-anchor": "middle"}, String(v)));
    axes.appendChild(svg("text", {x: (L + W - R) / 2, y: H - 3, "text-anchor": "middle"}, "activation"));
    axes.appendChild(svg("text", {x: 12, y: (T + H - B) / 2, "text-anchor": "middle", transform: `rotate(-90 12 ${(T + H - B) / 2})`}, "log count"));
    root.appendChild(axes);
    return root;
  }
  function pairsTable(cls, head, rowsOf) {
    const t = document.createElement("table");
    t.className = cls;
    const hr = document.createElement("tr");
    for (const h of head) { const th = document.createElement("th"); th.textContent = h; hr.appendChild(th); }
    t.appendChild(hr);
    for (const r of rowsOf) {
      const tr = document.createElement("tr");
      r.forEach((v, i) => { const td = document.createElement("td"); td.textContent = v; if (i === 0) td.className = "l tok"; tr.appendChild(td); });
      t.appendChild(tr);
    }
    return t;
  }
  function section(title, ...nodes) {
    const d = document.createElement("div"), h = document.createElement("h4");
    h.textContent = title;
    d.append(h, ...nodes);
    return d;
  }
  // the share of the context's grid where the feature fires (exact: its histogram's firing count over the grid's size)
  function fireShare(f) { return table.fire ? table.fire[f] : table.firing[f] / DATA.hist.grid; }
  function pastContext(f, values) {
    if (DATA.context >= P0 + values.length) return `no positions past the context (${DATA.context}) were studied`;
    const c = DATA.context - P0;
    const mean = (a) => a.reduce((x, y) => x + y, 0) / Math.max(1, a.length);
    const inside = Array.from(values.slice(0, c)), past = Array.from(values.slice(c));
    const peak = past.indexOf(Math.max(...past));
    let text = `past the context (positions ${DATA.context}..${P0 + values.length - 1}): mean activation ${num(mean(past))} (inside ${num(mean(inside))}), ` +
      `highest at position ${DATA.context + peak} (${num(past[peak])})`;
    if (table.past_fire) text += `; fires on ${num(100 * table.past_fire[f])}% of inputs there (inside ${num(100 * fireShare(f))}%)`;
    if (table.spurious_pairs) text += `; ${table.spurious_pairs[f]} (token, position) pairs fire there for tokens that never fire inside`;
    return text;
  }
  function openCard(f, fromClick) {
    if (!(f >= 0 && f < DATA.n_features)) return;
    const card = el("feature-card"), box = document.createElement("div"), kind = KINDS[table.kind[f]];
    box.dataset.feature = f;
    box.dataset.kind = kind;
    const h = document.createElement("h3"), self = document.createElement("a");
    self.href = `#feature-${f}`;
    self.textContent = `Feature ${f}`;
    self.title = "link to this card";
    h.append(self, `: ${kind}`);
    if (DATA.neuronpedia && DATA.neuronpedia.startsWith("https://www.neuronpedia.org/")) {
      const np = document.createElement("a");
      np.href = DATA.neuronpedia + encodeURIComponent(String(f));
      np.rel = "noopener noreferrer";
      np.textContent = "Neuronpedia";
      h.append(" ", np);
    }
    box.appendChild(h);
    box.appendChild(para(`position share ${fmt(table.position_share[f])}, token share ${fmt(table.token_share[f])}, interaction ${fmt(table.interaction_share[f])}; ` +
      `fires on ${fmt(num(fireShare(f)))} of the grid inside the context; peak ${table.peak[f]}; firing runs: ${table.runs[f] || "none"}`));
    const prof = profile(f), [pre, exactPre] = preactivation(f);
    const wpos = para(`decoder direction nearest W_pos row ${table.nearest_wpos_row[f]} (cosine ${fmt(table.decoder_cos_wpos[f])})`);
    wpos.className = "nearest-wpos";
    const position = section("Position",
      para(`mean activation over tokens at positions ${P0}..${P0 + P - 1} (dashed: end of the training context, ${DATA.context}; ` +
        `max ${fmt(table.scale[f])}; drawn at ${table.levels[f]} levels` + (profileRow[f] >= nExact && BLOCK > 1 ? `, as means over blocks of ${BLOCK} positions` : "") +
        "; hover for each position's value)"),
      svgProfile(prof),
      para(`mean pre-activation over tokens by position (solid line: 0` + (table.threshold[f] > 0 ? `; dotted: the firing threshold ${fmt(table.threshold[f])}` : "") +
        "; dashed: the context edge; " + (exactPre ? "exact, 255 levels)" :
        `on the top ${DATA.pre.pcs} principal components of W_pos, ${num(100 * DATA.pre.share)}% of its variance; exact: posfeat feature ${f})`)),
      svgPre(pre, table.threshold[f] || 0, !exactPre), wpos);
    position.className = "card-position";
    const top = topTokens(f);
    const tokens = section("Tokens", para(`top ${top.length} tokens over the whole vocabulary (mean activation over the context's positions):`),
      pairsTable("top-tokens", [], top.map(([s, v]) => [JSON.stringify(s), String(num(v))])));
    tokens.className = "card-tokens";
    tokens.querySelector("table.top-tokens").firstChild.remove();  // no header row: token, mean
    const parts = [];
    if (DATA.hist) {
      const B = DATA.hist.bins, codes = Array.from(histCodes.slice(f * B, (f + 1) * B)), max = table.hist_max[f], grid = DATA.hist.grid;
      const hist = section("Activation histogram",
        para(`exact over all ${grid} inputs of the context (every token x positions ${P0}..${DATA.context - 1}): ${table.firing[f]} fire ` +
          `(${num(100 * table.firing[f] / grid)}%); ${B} bins over (0, ${num(max)}]; bar heights on a log scale, hover for counts`),
        svgHistogram(codes, max));
      hist.className = "card-histogram";
      const I = DATA.hist.inputs, got = [];
      for (let j = 0; j < I.k; j++) {
        const t = inputs.ids[f * I.k + j];
        if (t < DATA.vocab.n) got.push([JSON.stringify(tokenString(t)), String(inputs.pos[f * I.k + j]), String(num(inputs.vals[f * I.k + j] / 255 * max))]);
      }
      const inp = section("Top inputs", got.length ? pairsTable("top-inputs", ["token", "position", "activation"], got) : para("none: the feature never fires on the grid"));
      inp.className = "card-inputs";
      tokens.appendChild(inp);
      parts.push(hist);
    } else {
      parts.push(section("Activation histogram", para(`activation histogram: ${DATA.hist_note}`)));
    }
    const body = kind === "positional" ? [position, tokens] : [tokens, position];
    const lg = DATA.logits;
    let logitsBox;
    if (lg.note) logitsBox = section("Logit effects", para(`none: ${lg.note}`));
    else {
      const sc = table.logit_scale[f] / 127, list = (ids, v) => Array.from({length: lg.k}, (_, j) => [JSON.stringify(tokenString(ids[f * lg.k + j])), String(num(v[f * lg.k + j] * sc))]);
      logitsBox = section("Logit effects", para("decoder direction through the unembedding (W_dec[f] @ W_E^T, tied; the final LayerNorm's scale left out):"),
        pairsTable("logits-up", ["promotes", "logit"], list(logitData.up, logitData.upV)), pairsTable("logits-down", ["suppresses", "logit"], list(logitData.down, logitData.downV)));
    }
    logitsBox.className = "card-logits";
    const past = section("Past the context", para(pastContext(f, prof)));
    past.className = "card-past";
    box.append(...body, ...parts, logitsBox, past);
    card.textContent = "";
    card.appendChild(box);
    if (fromClick) history.replaceState(null, "", `#feature-${f}`);
  }
  // ---- the prompt box: the model's tokenizer run in the page (BERT WordPiece or byte-level BPE), nothing sent anywhere
  let vocabIndex = null, bpeRanks = null;
  function wordpiece(text, T) {
    if (!vocabIndex) vocabIndex = new Map(vocab.map((s, i) => [s, i]));
    let clean = "";
    for (const ch of text) {
      const c = ch.codePointAt(0);
      if (c === 0 || c === 0xfffd || (/[\p{Cc}\p{Cf}]/u.test(ch) && !/[\t\n\r]/.test(ch))) continue;
      if (/\s/u.test(ch)) clean += " ";
      else if (T.chinese && ((c >= 0x4e00 && c <= 0x9fff) || (c >= 0x3400 && c <= 0x4dbf) || (c >= 0x20000 && c <= 0x2a6df) ||
        (c >= 0xf900 && c <= 0xfaff) || (c >= 0x2f800 && c <= 0x2fa1f))) clean += ` ${ch} `;
      else clean += ch;
    }
    if (T.strip_accents) clean = clean.normalize("NFD").replace(/\p{Mn}/gu, "");
    if (T.lowercase) clean = clean.toLowerCase();
    const words = clean.split(" ").filter(Boolean).flatMap((w) => w.split(/([\p{P}!-\/:-@\[-`{-~])/u).filter(Boolean));
    const unk = vocabIndex.get(T.unk), ids = [];
    for (const w of words) {
      const chars = Array.from(w), pieces = [];
      if (chars.length > T.max_chars) { ids.push(unk); continue; }
      let start = 0, bad = false;
      while (start < chars.length) {
        let end = chars.length, found = -1;
        while (start < end) {
          const sub = (start > 0 ? T.prefix : "") + chars.slice(start, end).join("");
          if (vocabIndex.has(sub)) { found = vocabIndex.get(sub); break; }
          end--;
        }
        if (found < 0) { bad = true; break; }
        pieces.push(found);
        start = end;
      }
      if (bad) ids.push(unk); else ids.push(...pieces);
    }
    return ids;
  }
  const GPT2_PATTERN = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;
  async function bytebpe(text, T) {
    if (!bpeRanks) {
      const m = readIds(await inflate(T.merges), T.id_bytes), step = T.first_result === null ? 3 : 2;
      bpeRanks = new Map();
      for (let r = 0; r * step < m.length; r++) {
        const result = step === 3 ? m[r * 3 + 2] : T.first_result + r;
        bpeRanks.set(m[r * step] * 4294967296 + m[r * step + 1], [r, result]);
      }
    }
    const ids = [], enc = new TextEncoder();
    for (const word of (T.prefix_space && !/^\s/.test(text) ? " " + text : text).match(GPT2_PATTERN) || []) {
      let parts = Array.from(enc.encode(word), (b) => T.bytes[b]);
      for (;;) {
        let best = null;
        for (let i = 0; i + 1 < parts.length; i++) {
          const hit = bpeRanks.get(parts[i] * 4294967296 + parts[i + 1]);
          if (hit && (best === null || hit[0] < best[0])) best = hit;
        }
        if (best === null) break;
        const [rank] = best, merged = [];
        for (let i = 0; i < parts.length; i++) {
          const hit = i + 1 < parts.length ? bpeRanks.get(parts[i] * 4294967296 + parts[i + 1]) : null;
          if (hit && hit[0] === rank) { merged.push(hit[1]); i++; } else merged.push(parts[i]);
        }
        parts = merged;
      }
      ids.push(...parts);
    }
    return ids;
  }
  async function tokenizeText(text) {
    const T = DATA.tokenizer, ids = T.kind === "wordpiece" ? wordpiece(text, T) : await bytebpe(text, T), sp = T.special || [];
    return sp.length >= 2 ? [sp[0], ...ids, ...sp.slice(1)] : [...sp, ...ids];
  }
  function featureLinks(list) {
    const span = document.createElement("span");
    list.forEach(([f, v], i) => {
      const a = document.createElement("a");
      a.href = `#feature-${f}`;
      a.className = "feature-link";
      a.textContent = String(f);
      span.append(i ? ", " : "", a, ` (${num(v)})`);
    });
    if (!list.length) span.textContent = "none";
    return span;
  }
  let positionalFeatures = null;
  async function runPrompt() {
    const text = el("prompt-text").value, out = el("prompt-out");
    out.textContent = "";
    if (!text) return;
    const ids = await tokenizeText(text);
    if (el("prompt-text").value !== text) return;  // typed on meanwhile
    if (!positionalFeatures) positionalFeatures = [...Array(DATA.n_features).keys()].filter((f) => KINDS[table.kind[f]] === "positional");
    const t = document.createElement("table");
    t.id = "prompt-tokens";
    const head = document.createElement("tr");
    for (const h of ["position", "token", "id", "features with it among their top tokens (mean over positions)", "positional features here (mean over tokens)"]) {
      const th = document.createElement("th"); th.textContent = h; head.appendChild(th);
    }
    t.appendChild(head);
    ids.forEach((id, p) => {
      const tr = document.createElement("tr");
      tr.dataset.tokenId = id;
      if (P0 + p >= DATA.context) tr.className = "past-context";
      const key = norm(tokenString(id)), byTok = (byToken.get(key) || []).slice().sort((x, y) => y[1] - x[1]).slice(0, 5);
      const here = p - P0 >= 0 && p - P0 < P ? positionalFeatures.map((f) => [f, profile(f)[p - P0]]).filter(([, v]) => v > 0).sort((x, y) => y[1] - x[1]).slice(0, 5) : [];
      const cells = [String(p), JSON.stringify(tokenString(id)), String(id)];
      for (const c of cells) { const td = document.createElement("td"); td.textContent = c; tr.appendChild(td); }
      for (const list of [byTok, here]) { const td = document.createElement("td"); td.className = "l"; td.appendChild(featureLinks(list)); tr.appendChild(td); }
      t.appendChild(tr);
    });
    out.appendChild(t);
    el("prompt-status").textContent = `${ids.length} token(s); rows past the context (${DATA.context}) are shaded`;
  }
  function startPrompt() {
    const T = DATA.tokenizer;
    if (!T || !T.kind) {
      el("prompt-text").disabled = true;
      el("prompt-status").textContent = `No prompt box for this model: ${T ? T.note : "no tokenizer"}. Run posfeat prompt "your text" instead.`;
      return;
    }
    el("prompt-status").textContent = `tokenised in the page by the model's own ${T.kind === "wordpiece" ? "WordPiece" : "byte-level BPE"} vocabulary`;
    el("prompt-text").addEventListener("input", () => { runPrompt().catch((e) => { el("prompt-status").textContent = "the tokenizer failed: " + e; }); });
  }
  function openFromHash() {
    const m = /^#feature-(\d+)$/.exec(location.hash);
    if (!m) return;
    openCard(Number(m[1]), false);
    el("explorer-title").scrollIntoView({block: "start"});
  }
  async function start() {
    const t0 = performance.now();
    table = JSON.parse(new TextDecoder().decode(await inflate(DATA.table)));
    profiles = await inflate(DATA.profiles);
    profileRow = new Int32Array(DATA.n_features);
    let ne = 0, nr = 0;
    for (let f = 0; f < DATA.n_features; f++) if (KINDS[table.kind[f]] === "positional") ne++;
    nExact = ne;
    ne = 0;
    for (let f = 0; f < DATA.n_features; f++) profileRow[f] = KINDS[table.kind[f]] === "positional" ? ne++ : nExact + nr++;
    vocab = JSON.parse(new TextDecoder().decode(await inflate(DATA.vocab.strings)));
    refs = readIds(await inflate(TOK.ids), TOK.id_bytes);
    vals = await inflate(TOK.values);
    if (DATA.hist) {
      const I = DATA.hist.inputs;
      histCodes = await inflate(DATA.hist.counts);
      inputs = {ids: readIds(await inflate(I.ids), I.id_bytes), pos: readIds(await inflate(I.positions), 2), vals: await inflate(I.values)};
    }
    if (!DATA.logits.note) {
      const L = DATA.logits;
      logitData = {up: readIds(await inflate(L.up), L.id_bytes), down: readIds(await inflate(L.down), L.id_bytes),
        upV: new Int8Array((await inflate(L.up_values)).buffer), downV: new Int8Array((await inflate(L.down_values)).buffer)};
    }
    preCoef = new Int8Array((await inflate(DATA.pre.coef)).buffer);
    const f32 = async (b64) => {
      const b = await inflate(b64), dv = new DataView(b.buffer, b.byteOffset), out = new Float32Array(b.length / 4);
      for (let i = 0; i < out.length; i++) out[i] = dv.getFloat32(4 * i, true);
      return out;
    };
    preBasis = await f32(DATA.pre.basis);
    preScale = await f32(DATA.pre.coef_scale);
    preExact = await inflate(DATA.pre.exact);
    preRow = new Map(DATA.pre.exact_features.map((f, r) => [f, r]));
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
      if (tokenAct && rows.length) openCard(rows[0], false);  // a token: the strongest feature on it
      if (/^\d+$/.test(t) && Number(t) < DATA.n_features) openCard(Number(t), true);
    });
    el("kind-filter").addEventListener("change", () => { page = 0; render(); });
    el("page-prev").addEventListener("click", () => { page = Math.max(0, page - 1); render(); });
    el("page-next").addEventListener("click", () => { page += 1; render(); });
    window.addEventListener("hashchange", openFromHash);
    startPrompt();
    render();
    openFromHash();
    document.body.dataset.explorer = "ready";
    document.body.dataset.explorerMs = String(Math.round(performance.now() - t0));  // decoding the data
    document.body.dataset.explorerAt = String(Math.round(performance.now()));  // since the page began to load
  }
  start().catch((e) => {
    el("explorer-status").textContent = "the explorer could not start: " + e;
    document.body.dataset.explorer = "failed";
    throw e;
  });
})();
