// CX workbench: draws the charts embedded in the page and swaps drilldown slices in place.
"use strict";

function drawCharts(root) {
  if (typeof Plotly === "undefined") return;
  root.querySelectorAll(".chart[data-chart]").forEach(function (el) {
    var source = el.querySelector("script[type='application/json']");
    if (!source) return;
    var fig = JSON.parse(source.textContent);
    source.remove();
    Plotly.newPlot(el, fig.data, fig.layout, { responsive: true, displayModeBar: false });
  });
}

// Drilldown: a click on a slice fetches its fragment (rendered on the server, the same as the
// page without scripts) and replaces the panel; the link itself still works without scripts.
function drill(event) {
  var link = event.target.closest("[data-drill]");
  if (!link) return;
  var panel = document.getElementById("drilldown");
  if (!panel) return;
  event.preventDefault();
  fetch(link.getAttribute("data-drill"), { credentials: "same-origin" })
    .then(function (r) {
      return r.text().then(function (body) { return { ok: r.ok, body: body }; });
    })
    .then(function (res) {
      if (res.ok) {
        panel.innerHTML = res.body;
      } else {
        var note = document.createElement("p");
        note.className = "callout error";
        note.textContent = "This slice has no stored drilldown.";
        panel.prepend(note);
      }
      panel.scrollIntoView({ behavior: "smooth", block: "start" });
    });
}

document.addEventListener("DOMContentLoaded", function () {
  drawCharts(document);
  document.addEventListener("click", drill);
});
