// Draws the usage chart from the JSON the page embeds (Chart.js is vendored, no CDN).
(function () {
  const el = document.getElementById("usage-series");
  const canvas = document.getElementById("usage-chart");
  if (!el || !canvas || !window.Chart) return;
  const series = JSON.parse(el.textContent);
  new window.Chart(canvas, {
    type: "line",
    data: {
      labels: series.map((p) => p.bucket.replace("T", " ").slice(0, 16)),
      datasets: [
        { label: "Requests", data: series.map((p) => p.requests), yAxisID: "y" },
        { label: "Tokens", data: series.map((p) => p.tokens), yAxisID: "y1" },
        { label: "Cost (USD)", data: series.map((p) => p.cost_usd), yAxisID: "y2" },
        { label: "Errors", data: series.map((p) => p.errors), yAxisID: "y" },
      ],
    },
    options: {
      responsive: true, maintainAspectRatio: false, animation: false,
      scales: { y: { beginAtZero: true, position: "left" }, y1: { beginAtZero: true, position: "right", grid: { drawOnChartArea: false } },
                y2: { beginAtZero: true, display: false } },
    },
  });
  canvas.dataset.ready = "1";
})();
