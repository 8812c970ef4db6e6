/* Railyard cockpit: jobs-list refresh and compare picks, job-page charts and log tail.
   Vanilla JS; charts with Plotly (served from the installed plotly package). */
(function () {
  "use strict";
  var TERMINAL = { SUCCEEDED: 1, FAILED: 1, CANCELLED: 1 };

  function chartData() {
    var node = document.getElementById("chart-data");
    return node ? JSON.parse(node.textContent) : {};
  }

  function plot(id, traces, layout) {
    var el = document.getElementById(id);
    if (!el || !window.Plotly) { return; }
    var base = { margin: { l: 60, r: 20, t: 20, b: 50 }, height: 320, hovermode: "closest" };
    window.Plotly.newPlot(el, traces, Object.assign(base, layout || {}),
                          { displaylogo: false, responsive: true });
  }

  // ------------------------------------------------------------------ jobs page
  function jobsPage() {
    var table = document.getElementById("jobs");
    var button = document.getElementById("compare");
    function picked() {
      return Array.prototype.map.call(document.querySelectorAll("input.pick:checked"),
                                      function (b) { return b.value; });
    }
    function update() {
      var n = picked().length;
      button.disabled = n < 2 || n > 4;
      button.textContent = "Compare selected" + (n ? " (" + n + ")" : "");
    }
    document.addEventListener("change", function (ev) {
      if (ev.target.classList && ev.target.classList.contains("pick")) { update(); }
    });
    button.addEventListener("click", function () {
      window.location.href = "/compare?ids=" + encodeURIComponent(picked().join(","));
    });
    function refresh() {
      var keep = picked();
      fetch(table.dataset.rowsUrl, { credentials: "same-origin" }).then(function (r) {
        if (!r.ok) { return null; }
        return r.text();
      }).then(function (html) {
        if (html === null) { return; }
        document.getElementById("job-rows").innerHTML = html;
        keep.forEach(function (id) {
          var box = document.querySelector('input.pick[value="' + id + '"]');
          if (box) { box.checked = true; }
        });
        update();
      }).catch(function () { /* the next poll tries again */ });
    }
    window.setInterval(refresh, 5000);
  }

  // ------------------------------------------------------------------ job page
  function gantt(bars) {
    if (!bars.length) {
      var el = document.getElementById("chart-gantt");
      if (el) { el.textContent = "no phase has started yet"; el.style.minHeight = "0"; }
      return;
    }
    var byAttempt = {};
    bars.forEach(function (b) { (byAttempt[b.attempt] = byAttempt[b.attempt] || []).push(b); });
    var traces = Object.keys(byAttempt).map(function (a) {
      var list = byAttempt[a];
      return { type: "bar", orientation: "h", name: "attempt " + a,
               y: list.map(function (b) { return b.phase + " (#" + a + ")"; }),
               base: list.map(function (b) { return b.start; }),
               x: list.map(function (b) { return Math.max(b.end - b.start, 0.05); }),
               hovertemplate: "%{y}: %{base:.1f}s → +%{x:.1f}s<extra></extra>" };
    });
    plot("chart-gantt", traces, { barmode: "overlay", height: 80 + 28 * bars.length,
      xaxis: { title: { text: "seconds since the job was created" } },
      yaxis: { autorange: "reversed" } });
  }

  function jobCharts(data) {
    gantt(data.gantt || []);
    var c = data.curves || {};
    if (c.roc_points) {
      plot("chart-roc", [{ x: c.roc_points.x, y: c.roc_points.y, mode: "lines",
                           name: "ROC (AUC " + (c.auc || 0).toFixed(3) + ")" },
                         { x: [0, 1], y: [0, 1], mode: "lines", name: "chance",
                           line: { dash: "dash", color: "#999" } }],
           { xaxis: { title: { text: "false positive rate" }, range: [0, 1] },
             yaxis: { title: { text: "true positive rate" }, range: [0, 1.02] } });
    }
    if (c.pr_points) {
      plot("chart-pr", [{ x: c.pr_points.x, y: c.pr_points.y, mode: "lines",
                          name: "AP " + (c.pr_auc || 0).toFixed(3) }],
           { xaxis: { title: { text: "recall" }, range: [0, 1] },
             yaxis: { title: { text: "precision" }, range: [0, 1.02] } });
    }
    var imp = data.importance || [];
    if (imp.length) {
      var rev = imp.slice().reverse();
      plot("chart-importance", [{ type: "bar", orientation: "h",
        x: rev.map(function (f) { return f.importance; }),
        y: rev.map(function (f) { return f.feature; }) }],
        { height: 80 + 24 * imp.length, margin: { l: 160, r: 20, t: 10, b: 40 } });
    }
    var pva = data.predicted_vs_actual || {};
    if (pva.x && pva.x.length) {
      var lo = Math.min.apply(null, pva.x.concat(pva.y)), hi = Math.max.apply(null, pva.x.concat(pva.y));
      plot("chart-pva", [{ x: pva.x, y: pva.y, mode: "markers", name: "holdout rows" },
                         { x: [lo, hi], y: [lo, hi], mode: "lines", name: "y = x",
                           line: { dash: "dash", color: "#999" } }],
           { xaxis: { title: { text: "actual" } }, yaxis: { title: { text: "predicted" } } });
    }
    var prog = data.progress || {};
    if (prog.round && prog.round.length) {
      plot("chart-progress", Object.keys(prog).filter(function (k) { return k !== "round"; })
        .map(function (k) { return { x: prog.round, y: prog[k], mode: "lines", name: k }; }),
        { xaxis: { title: { text: "round" } } });
    }
    var t = data.trials || {};
    if (t.values && t.values.length) {
      var idx = t.values.map(function (_, i) { return i + 1; });
      var colors = t.status.map(function (s) {
        return s === "SUCCEEDED" ? "#1f77b4" : s === "STOPPED" ? "#999" : "#d62728";
      });
      plot("chart-trials", [
        { x: idx, y: t.values, mode: "markers", name: t.metric + " per trial",
          text: t.ids.map(function (id, i) { return id + " (" + t.status[i] + ")"; }),
          marker: { color: colors, size: 9 } },
        { x: idx, y: t.best_so_far, mode: "lines", name: "best so far", line: { shape: "hv" } }],
        { xaxis: { title: { text: "trial (in the order they ended)" } },
          yaxis: { title: { text: t.metric } } });
      var params = Object.keys(t.params || {});
      if (params.length) {
        plot("chart-params", params.map(function (p, i) {
          return { x: t.params[p], y: t.values, mode: "markers", name: p,
                   xaxis: i ? "x" + (i + 1) : "x", yaxis: i ? "y" + (i + 1) : "y",
                   marker: { color: colors } };
        }), Object.assign({ grid: { rows: 1, columns: params.length, pattern: "independent" },
                            showlegend: false }, params.reduce(function (acc, p, i) {
          acc["xaxis" + (i ? i + 1 : "")] = { title: { text: p } }; return acc;
        }, {})));
      }
    }
    var parts = (data.partitions || []).filter(function (p) { return typeof p.value === "number"; });
    if (parts.length) {
      plot("chart-partitions", [{ type: "histogram", x: parts.map(function (p) { return p.value; }) }],
           { xaxis: { title: { text: "metric across partitions" } }, yaxis: { title: { text: "partitions" } } });
    }
  }

  function followLog() {
    var pre = document.getElementById("log");
    var head = document.getElementById("job");
    if (!pre || !head) { return; }
    var offset = 0, wasActive = head.dataset.active === "true", lastRead = false;
    function tick() {
      fetch(pre.dataset.url + "?offset=" + offset, { credentials: "same-origin", cache: "no-store" })
        .then(function (r) {
          if (!r.ok) { throw new Error("log read failed: " + r.status); }
          var status = r.headers.get("X-Job-Status") || "";
          var size = parseInt(r.headers.get("X-Log-Size") || "0", 10);
          return r.text().then(function (text) { return [text, status, size]; });
        }).then(function (res) {
          var text = res[0], status = res[1];
          if (text) {
            var atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
            pre.textContent += text;
            if (atEnd) { pre.scrollTop = pre.scrollHeight; }
          }
          offset = Math.max(offset, res[2]);
          var badge = document.getElementById("job-status");
          if (badge && status && badge.textContent !== status) {
            badge.textContent = status;
            badge.className = "status status-" + status;
          }
          if (TERMINAL[status]) {
            if (lastRead) {
              var f = document.getElementById("log-follow");
              if (f) { f.textContent = "ended"; }
              if (wasActive) { window.location.reload(); }
              return;
            }
            lastRead = true;       // read once more after the job ended: the log's tail
          }
          window.setTimeout(tick, wasActive ? 1000 : 0);
        }).catch(function () { window.setTimeout(tick, 3000); });
    }
    tick();
  }

  function jobPage() {
    jobCharts(chartData());
    followLog();
    var form = document.getElementById("cancel-form");
    if (form) {
      form.addEventListener("submit", function (ev) {
        if (!window.confirm("Cancel job " + document.getElementById("job").dataset.jobId + "?")) {
          ev.preventDefault();
        }
      });
    }
    var copy = document.getElementById("copy-spec");
    if (copy) {
      copy.addEventListener("click", function () {
        var text = document.getElementById("spec").textContent;
        var done = function () { copy.textContent = "Copied"; };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(text).then(done, function () { fallbackCopy(text); done(); });
        } else { fallbackCopy(text); done(); }
      });
    }
  }

  function fallbackCopy(text) {
    var area = document.createElement("textarea");
    area.value = text; document.body.appendChild(area); area.select();
    try { document.execCommand("copy"); } catch (e) { /* nothing to copy to */ }
    document.body.removeChild(area);
  }

  function sortable() {
    Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
      var heads = table.querySelectorAll("thead th");
      Array.prototype.forEach.call(heads, function (th, col) {
        th.addEventListener("click", function () {
          var asc = !th.classList.contains("sorted-asc");
          Array.prototype.forEach.call(heads, function (h) { h.classList.remove("sorted-asc", "sorted-desc"); });
          th.classList.add(asc ? "sorted-asc" : "sorted-desc");
          var body = table.tBodies[0];
          var rows = Array.prototype.slice.call(body.rows);
          rows.sort(function (a, b) {
            var x = a.cells[col].textContent.trim(), y = b.cells[col].textContent.trim();
            var nx = parseFloat(x), ny = parseFloat(y), cmp;
            if (!isNaN(nx) && !isNaN(ny)) { cmp = nx - ny; }
            else if (x === "" || y === "") { cmp = x === "" ? 1 : -1; return cmp; }
            else { cmp = x.localeCompare(y); }
            return asc ? cmp : -cmp;
          });
          rows.forEach(function (r) { body.appendChild(r); });
        });
      });
    });
  }

  function comparePage() {
    var curves = (chartData().compare_roc || []).filter(function (c) { return c.roc; });
    if (curves.length) {
      plot("chart-compare-roc", curves.map(function (c) {
        return { x: c.roc.x, y: c.roc.y, mode: "lines", name: c.name + " " + c.id.slice(0, 8) };
      }), { showlegend: true, xaxis: { title: { text: "false positive rate" } },
            yaxis: { title: { text: "true positive rate" } } });
    } else {
      var el = document.getElementById("chart-compare-roc");
      if (el) { el.textContent = "none of these jobs recorded ROC curve points"; el.style.minHeight = "0"; }
    }
    var box = document.getElementById("only-diff"), table = document.getElementById("compare-spec");
    function apply() { table.classList.toggle("only-diff", box.checked); }
    box.addEventListener("change", apply);
    apply();
  }

  document.addEventListener("DOMContentLoaded", function () {
    var page = document.body.dataset.page;
    sortable();
    if (page === "jobs") { jobsPage(); }
    if (page === "job") { jobPage(); }
    if (page === "compare") { comparePage(); }
  });
})();
