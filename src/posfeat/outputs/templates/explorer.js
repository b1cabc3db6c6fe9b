// posfeat feature explorer: reads the deflated data embedded in the page; no network.
(function () {
  "use strict";
  const DATA = JSON.parse(document.getElementById("explorer-data").textContent);
  const KINDS = DATA.kinds, PAGE = 100, P = DATA.n_positions;
  const el = (id) => document.getElementById(id);
  let table = null, profiles = null, rows = [], sortKey = "feature", sortDir = 1, page = 0;

  async function inflate(b64) {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }
  function profile(f) {
    const out = new Float64Array(P), scale = table.scale[f] || 0;
    let q = 0;
    const L = table.levels[f] || 255;
    for (let i = 0; i < P; i++) { q = (q + profiles[f * P + i]) & 255; out[i] = q / L * scale; }
    return out;
  }
  function tokensOf(f) { return (table.top_tokens[f] || "").split(" | "); }
  function fmt(v) { return v === null || v === undefined ? "n/a" : (typeof v === "number" ? String(v) : v); }
  function value(f, key) {
    if (key === "feature") return f;
    if (key === "kind") return KINDS[table.kind[f]];
    return table[key][f];
  }
  const COLS = [["feature", "id"], ["kind", "kind"], ["positional_score", "positional score"], ["token_score", "token score"],
    ["position_share", "position share"], ["token_share", "token share"], ["interaction_share", "interaction"], ["peak", "peak"],
    ["runs", "runs"], ["top_tokens", "top tokens"]];

  function filtered() {
    const q = el("feature-search").value, kind = el("kind-filter").value;
    let list = [...Array(DATA.n_features).keys()];
    if (kind !== "all") list = list.filter((f) => KINDS[table.kind[f]] === kind);
    const t = q.trim();
    if (t !== "" && /^\d+$/.test(t)) list = list.filter((f) => f === Number(t));
    else if (q !== "") list = list.filter((f) => tokensOf(f).some((s) => s === q || s.trim() === t));
    return list.sort((a, b) => {
      const x = value(a, sortKey), y = value(b, sortKey);
      if (x === y) return a - b;
      if (x === null) return 1;
      if (y === null) return -1;
      return (x < y ? -1 : 1) * sortDir;
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
        if (key === "top_tokens" || key === "runs" || key === "kind") td.className = "l";
        tr.appendChild(td);
      }
      tr.addEventListener("click", () => openCard(f));
      body.appendChild(tr);
    }
    el("explorer-status").textContent = `${rows.length} feature(s); page ${page + 1} of ${pages}`;
  }
  function svgProfile(values) {
    const W = 640, H = 120, max = Math.max(...values, 1e-12), n = values.length;
    const x = (i) => (n > 1 ? i * W / (n - 1) : 0), y = (v) => H - 4 - (H - 8) * Math.max(v, 0) / max;
    const pts = Array.from(values, (v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    const cx = x(Math.min(DATA.context, n - 1)).toFixed(1);
    return `<svg class="profile" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" xmlns="http://www.w3.org/2000/svg">` +
      `<line x1="${cx}" x2="${cx}" y1="0" y2="${H}" stroke="#888" stroke-dasharray="4,3"/>` +
      `<polyline fill="none" stroke="#d62728" stroke-width="1.3" points="${pts}"/></svg>`;
  }
  function openCard(f) {
    const card = el("feature-card");
    const values = profile(f);
    const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
    // every value goes through esc(); the link only to Neuronpedia's own https pages
    const np = typeof DATA.neuronpedia === "string" && DATA.neuronpedia.startsWith("https://www.neuronpedia.org/") ? DATA.neuronpedia : null;
    const link = np ? ` <a href="${esc(np + encodeURIComponent(String(f)))}">Neuronpedia</a>` : "";
    card.innerHTML = `<div data-feature="${esc(f)}"><h3>Feature ${esc(f)}: ${esc(KINDS[table.kind[f]])}${link}</h3>` +
      `<p>position share ${esc(fmt(table.position_share[f]))}, token share ${esc(fmt(table.token_share[f]))}, interaction ${esc(fmt(table.interaction_share[f]))}; ` +
      `fires on ${esc(fmt(table.fire[f]))} of the grid inside the context; peak ${esc(table.peak[f])}; firing runs: ${esc(table.runs[f] || "none")}</p>` +
      `<p>mean activation over tokens at positions 0..${esc(P - 1)} (dashed: end of the training context, ${esc(DATA.context)}; max ${esc(fmt(table.scale[f]))}; drawn at ${esc(table.levels[f])} levels)</p>` +
      svgProfile(values) + `<p>top tokens: ${esc(table.top_tokens[f])}</p></div>`;
    card.scrollIntoView({block: "nearest"});
  }
  async function start() {
    table = JSON.parse(new TextDecoder().decode(await inflate(DATA.table)));
    profiles = await inflate(DATA.profiles);
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
      if (/^\d+$/.test(t) && Number(t) < DATA.n_features) openCard(Number(t));
    });
    el("kind-filter").addEventListener("change", () => { page = 0; render(); });
    el("page-prev").addEventListener("click", () => { page = Math.max(0, page - 1); render(); });
    el("page-next").addEventListener("click", () => { page += 1; render(); });
    render();
    document.body.dataset.explorer = "ready";
  }
  start().catch((e) => { el("explorer-status").textContent = "the explorer could not start: " + e; throw e; });
})();
