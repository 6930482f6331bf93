// The dashboard's performance charts, drawn with Chart.js from the JSON the page embeds
// (budgetradar.dashboard.ConnectionPerformance.chart_data; no inline script: the CSP
// allows only same-origin script files). Per connection: spend and conversions with a
// marker on each day BudgetRadar changed something (a click opens the change), and CPA
// and ROAS. Without JavaScript the page shows the same numbers as tables.
(function () {
  "use strict";
  function markerDataset(c) {
    return {type: "scatter", label: "Changed by BudgetRadar", yAxisID: "money",
      data: c.markers.map(function (m) { return {x: m.x, y: m.y, label: m.label, url: m.url}; }),
      pointStyle: "triangle", pointRadius: 8, pointHoverRadius: 10, backgroundColor: "#e8590c"};
  }
  function openMarker(event, elements, chart) {
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
