// channelhub: the little JavaScript the admin UI uses. Everything works without it, except that
// progress bars then update only on reload.
(function () {
  "use strict";

  // Forms with data-confirm ask before submitting (destructive actions).
  document.addEventListener("submit", function (event) {
    var message = event.target.getAttribute && event.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) { event.preventDefault(); }
  });

  // "all on this page" checkboxes tick every checkbox with the named field.
  document.addEventListener("change", function (event) {
    var name = event.target.getAttribute && event.target.getAttribute("data-check-all");
    if (!name) { return; }
    document.querySelectorAll('input[type=checkbox][name="' + name + '"]').forEach(function (box) {
      box.checked = event.target.checked;
    });
  });

  // Live progress: every 2 s, ask for the runs still queued or running and update their bars.
  var FINISHED = ["ok", "partial", "failed"];
  var POLL_MS = 2000;

  function pendingBars() {
    return Array.prototype.filter.call(document.querySelectorAll(".progress[data-run]"), function (bar) {
      return FINISHED.indexOf(bar.getAttribute("data-status")) < 0;
    });
  }

  function update(bar, run) {
    bar.setAttribute("data-status", run.status);
    var width = run.total ? Math.round(100 * run.done / run.total) : (run.finished ? 100 : 0);
    bar.querySelector(".bar").style.width = width + "%";
    bar.querySelector(".label").innerHTML = "";
    bar.querySelector(".label").appendChild(document.createTextNode(
      run.done + (run.total ? " / " + run.total : "") + " · " + run.status));
    var status = document.querySelector(".run-status");
    if (status && document.querySelectorAll(".progress[data-run]").length === 1) { status.textContent = run.status; }
  }

  function poll() {
    var bars = pendingBars();
    if (!bars.length) { return; }
    var ids = bars.map(function (bar) { return bar.getAttribute("data-run"); });
    fetch("/runs/progress.json?ids=" + ids.join(","), { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) { return response.ok ? response.json() : { runs: [] }; })
      .then(function (data) {
        var finishedNow = false;
        data.runs.forEach(function (run) {
          document.querySelectorAll('.progress[data-run="' + run.id + '"]').forEach(function (bar) { update(bar, run); });
          if (run.finished) { finishedNow = true; }
        });
        // A run page shows items and counts only once the run is over: reload it then.
        if (finishedNow && document.body.querySelector(".run-status")) { window.location.reload(); return; }
        window.setTimeout(poll, POLL_MS);
      })
      .catch(function () { window.setTimeout(poll, POLL_MS * 5); });
  }

  document.addEventListener("DOMContentLoaded", function () { window.setTimeout(poll, POLL_MS); });
})();
