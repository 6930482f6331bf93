// The dashboard's performance charts, drawn with Chart.js from the JSON the page embeds
// (budgetradar.dashboard.ConnectionPerformance.chart_data; no inline script: the CSP
// allows only same-origin script files). Per connection: spend and conversions with a
// marker on each day BudgetRadar changed something (a click opens the change), and CPA
// and ROAS. Without JavaScript the page shows the same numbers as tables.
(function () {
  "use strict";
  function markerDataset(c) {
    // Drawn along the top of the chart (their own 0..1 axis, hidden) so no line hides them;
    // several changes on one day stack downwards.
    const seen = {};
    return {type: "scatter", label: "Changed by BudgetRadar", yAxisID: "marks", order: -1,
      data: c.markers.map(function (m) {
        seen[m.x] = (seen[m.x] || 0) + 1;
        return {x: m.x, y: 1 - 0.06 * seen[m.x], label: m.label, url: m.url};
      }),
      pointStyle: "triangle", rotation: 180, pointRadius: 9, pointHoverRadius: 12,
      backgroundColor: "#e8590c", borderColor: "#ffffff", borderWidth: 1};
  }
  function openMarker(event, elements, chart) {
    // A click on a marker opens the action or deployment it stands for.
    const hit = elements.find(function (e) { return chart.data.datasets[e.datasetIndex].type === "scatter"; });
    if (hit) {
      const point = chart.data.datasets[hit.datasetIndex].data[hit.index];
      window.location.href = point.url;
    }
  }
  function tooltipLabel(item) {
    const raw = item.raw;
    if (raw && typeof raw === "object" && raw.label) { return raw.label; }
    return item.dataset.label + ": " + item.formattedValue;
  }
  function draw() {
    if (typeof Chart === "undefined") { return; }
    const node = document.getElementById("br-dashboard-data");
    if (!node) { return; }
    JSON.parse(node.textContent).forEach(function (c, i) {
      const volume = document.getElementById("br-dash-volume-" + i);
      const efficiency = document.getElementById("br-dash-efficiency-" + i);
      const common = {animation: false, responsive: true, interaction: {mode: "nearest", intersect: false},
        plugins: {tooltip: {callbacks: {label: tooltipLabel}}},
        scales: {x: {type: "category", labels: c.labels, ticks: {maxTicksLimit: 10}}}};
      if (volume) {
        new Chart(volume, {type: "line", data: {labels: c.labels, datasets: [
          {label: "Spend (" + c.currency + ")", data: c.spend, yAxisID: "money", borderColor: "#2f7ed8",
           backgroundColor: "#2f7ed8", pointRadius: 0, spanGaps: false},
          {label: "Conversions", data: c.conversions, yAxisID: "count", borderColor: "#2e7d32",
           backgroundColor: "#2e7d32", pointRadius: 0, spanGaps: false},
          markerDataset(c)]},
          options: Object.assign({}, common, {onClick: openMarker, scales: Object.assign({}, common.scales, {
            marks: {display: false, min: 0, max: 1},
            money: {position: "left", beginAtZero: true, title: {display: true, text: c.currency}},
            count: {position: "right", beginAtZero: true, grid: {drawOnChartArea: false},
                    title: {display: true, text: "Conversions"}}})})});
      }
      if (efficiency) {
        new Chart(efficiency, {type: "line", data: {labels: c.labels, datasets: [
          {label: "CPA (" + c.currency + ")", data: c.cpa, yAxisID: "cpa", borderColor: "#8a5a00",
           backgroundColor: "#8a5a00", pointRadius: 0},
          {label: "ROAS", data: c.roas, yAxisID: "roas", borderColor: "#6a1b9a", backgroundColor: "#6a1b9a",
           pointRadius: 0}]},
          options: Object.assign({}, common, {scales: Object.assign({}, common.scales, {
            cpa: {position: "left", beginAtZero: true, title: {display: true, text: "CPA " + c.currency}},
            roas: {position: "right", beginAtZero: true, grid: {drawOnChartArea: false},
                   title: {display: true, text: "ROAS"}}})})});
      }
      const cell = volume && volume.closest(".br-dash-connection");
      if (cell) { cell.setAttribute("data-charts-drawn", "true"); }
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
