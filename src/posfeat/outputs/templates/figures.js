// posfeat's interactive figures: plotly.js travels deflated in the page (no network); it is inflated here with the
// browser's DecompressionStream and run as an inline script, allowed by the CSP through the hash of its source.
// Each figure's data and layout are JSON beside its div. The figures are drawn after the feature explorer is ready, one at
// a time with a pause between, so that the page answers input while they draw.
(function () {
  "use strict";
  const pause = () => new Promise((resolve) => setTimeout(resolve, 0));
  function explorerReady() {
    return new Promise((resolve) => {
      if (document.body.dataset.explorer) return resolve();
      new MutationObserver((_, obs) => { if (document.body.dataset.explorer) { obs.disconnect(); resolve(); } })
        .observe(document.body, {attributes: true, attributeFilter: ["data-explorer"]});
    });
  }
  async function start() {
    await explorerReady();
    const t0 = performance.now();
    const packed = document.getElementById("plotly-js");
    const divs = document.querySelectorAll("div.plotly-figure");
    if (!packed || divs.length === 0) return;
    const text = atob(packed.textContent.trim()), bytes = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    const source = new TextDecoder().decode(await new Response(stream).arrayBuffer());
    const script = document.createElement("script");
    script.textContent = source;
    await pause();
    document.head.appendChild(script);
    for (const div of divs) {
      await pause();
      const fig = JSON.parse(document.getElementById("figure-" + div.id).textContent);
      await window.Plotly.newPlot(div, fig.data, fig.layout, {responsive: true, displaylogo: false});
    }
    document.body.dataset.figuresMs = String(Math.round(performance.now() - t0));
  }
  start().then(() => { document.body.dataset.figures = "ready"; },
    (e) => { document.body.dataset.figures = "failed"; throw e; });
})();
