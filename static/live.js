/* Live progress on the import page, without polling: the import's Server-Sent Events say when
   something changed, and htmx fetches the progress fragment then. The fragment fetched this way
   (`data-live-fragment`) does not poll; the one the page starts with does, and so does the fallback
   (`data-poll-fragment`) once the stream has failed for good. Without JavaScript the page reloads
   itself (a meta refresh), as before. */
(function () {
  "use strict";

  // Failed connections in a row, with no event in between, before polling takes over for good.
  var MAX_ERRORS = 3;

  function start() {
    var progress = document.getElementById("progress");
    var url = progress && progress.getAttribute("data-live");
    if (!url || !window.EventSource || !window.htmx) {
      return;
    }
    var source = new EventSource(url);
    var errors = 0;
    var live = true;
    var busy = false;
    var again = false;

    // One fetch at a time: events arriving meanwhile make one more fetch once it is done.
    function refresh() {
      if (busy) {
        again = true;
        return;
      }
      // The fragment replaces itself, so its attributes are read afresh every time.
      var current = document.getElementById("progress");
      var next = current && current.getAttribute(live ? "data-live-fragment" : "data-poll-fragment");
      if (!next) {
        return;
      }
      busy = true;
      window.htmx.ajax("GET", next, { target: "#progress", swap: "outerHTML" }).then(settled, settled);
    }

    function settled() {
      busy = false;
      if (again) {
        again = false;
        refresh();
      }
    }

    function finish(fallBack) {
      source.close();
      live = !fallBack;
      refresh();
    }

    source.addEventListener("status", function () {
      errors = 0;
      refresh();
    });
    source.addEventListener("images", function () {
      errors = 0;
    });
    // The server closes the stream after these; closing it here keeps the browser from reconnecting.
    source.addEventListener("end", function () {
      finish(false);
    });
    source.addEventListener("gone", function () {
      finish(false);
    });
    source.addEventListener("error", function () {
      errors += 1;
      // CLOSED: the browser gave up (an error status, not an event stream); otherwise it reconnects.
      if (source.readyState === EventSource.CLOSED || errors >= MAX_ERRORS) {
        finish(true);
      }
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
