// Kiln's pages: draw every chart whose figure the server embedded as JSON
// (<div class="chart" data-figure="ID"> with <script type="application/json" id="ID">),
// with plotly.js served by Kiln from the installed plotly package (no CDN).
(function () {
  function draw() {
    if (typeof Plotly === "undefined") { return; }
    document.querySelectorAll("div.chart[data-figure]").forEach(function (el) {
      var source = document.getElementById(el.dataset.figure);
      if (!source) { return; }
      var fig = JSON.parse(source.textContent);
      Plotly.newPlot(el, fig.data || [], fig.layout || {}, {displaylogo: false, responsive: true})
        .then(function () { el.dataset.drawn = "1"; });
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else { draw(); }
})();
