// The planner run page: allocation (current vs proposed) and response curves with their
// operating points, drawn with Chart.js from the JSON the page embeds (no inline script:
// the admin's Content-Security-Policy allows only same-origin script files).
(function () {
  "use strict";
  function data(id) {
    const node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  }
  function draw() {
    if (typeof Chart === "undefined") { return; }
    const a = data("br-allocation-data");
    const canvas = document.getElementById("br-allocation");
    if (a && canvas) {
      new Chart(canvas, {type: "bar", data: {labels: a.labels, datasets: [
        {label: "Current", data: a.current, backgroundColor: "#9aa5b1"},
        {label: "Proposed", data: a.proposed, backgroundColor: "#2f7ed8"}]},
        options: {indexAxis: a.labels.length > 30 ? "y" : "x", animation: false, responsive: true}});
    }
    (data("br-curves-data") || []).forEach(function (c, i) {
      const target = document.getElementById("br-curve-" + (i + 1));
      if (!target) { return; }
      new Chart(target, {type: "scatter", data: {datasets: [
        {label: "Curve", data: c.curve, showLine: true, pointRadius: 0, borderColor: "#2f7ed8"},
        {label: "Current", data: [c.current], pointRadius: 6, backgroundColor: "#9aa5b1"},
        {label: "Proposed", data: [c.proposed], pointRadius: 6, backgroundColor: "#e8590c"}]},
        options: {animation: false, scales: {x: {title: {display: true, text: "Daily spend"}},
                                              y: {title: {display: true, text: "Conversions a day"}}}}});
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
