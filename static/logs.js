// docker-watcher logs panel (the stage page's #logs section): follows an instance's output live
// over the API's Server-Sent Events stream and filters the shown lines as the user types. No
// framework and no build step; without it the panel still shows the last lines, and the filter
// form asks the server.
//
// - Follow (on at first when the container runs): one EventSource on data-logs-stream with
//   ?tail=200. The server sends the last 200 lines, then each new one, so on every (re)connect
//   the panel is replaced by what the stream sends: nothing is shown twice or lost. An `end`
//   message (the container stopped) closes it for good; a dropped connection is retried by us
//   with backoff, not by the browser (its retry would send the last lines again).
// - Filter: a case-insensitive substring; lines that do not contain it are hidden, new lines too.
// - The view sticks to the bottom while following, unless the user scrolled up to read.
(function () {
  "use strict";

  var panel = document.getElementById("logs");
  if (!panel || typeof window.EventSource !== "function") {
    return;
  }
  var url = panel.getAttribute("data-logs-stream");
  var pre = document.getElementById("logs-lines");
  var filterBox = document.getElementById("logs-filter");
  var followBox = document.getElementById("logs-follow");
  var stateText = document.getElementById("logs-state");
  var empty = document.getElementById("logs-empty");
  if (!url || !pre || !filterBox || !followBox) {
    return;
  }
  var MAX_LINES = 5000;
  var TAIL = 200;
  var source = null;
  var retryMs = 1000;
  var retryTimer = null;
  var replaceOnNext = false;

  function setState(text) {
    if (stateText) {
      stateText.textContent = text;
    }
  }

  function wanted() {
    return filterBox.value.trim().toLowerCase();
  }

  function lineText(span) {
    return span.getAttribute("data-text") || span.textContent;
  }

  function applyFilter(span, filter) {
    span.hidden = filter !== "" && lineText(span).toLowerCase().indexOf(filter) === -1;
  }

  function refreshEmpty() {
    if (!empty) {
      return;
    }
    var shown = pre.querySelector(".line:not([hidden])");
    empty.hidden = shown !== null;
    empty.textContent = pre.children.length === 0 ? "No output." : "No line matches.";
  }

  function filterAll() {
    var filter = wanted();
    var lines = pre.children;
    for (var i = 0; i < lines.length; i++) {
      applyFilter(lines[i], filter);
    }
    refreshEmpty();
  }

  function pad(n, width) {
    var s = String(n);
    while (s.length < width) {
      s = "0" + s;
    }
    return s;
  }

  function timeOfDay(iso) {
    var d = new Date(iso);
    if (isNaN(d.getTime())) {
      return "";
    }
    return pad(d.getUTCHours(), 2) + ":" + pad(d.getUTCMinutes(), 2) + ":" +
      pad(d.getUTCSeconds(), 2) + "." + pad(d.getUTCMilliseconds(), 3);
  }

  function render(line) {
    var span = document.createElement("span");
    span.className = line.stream === "stderr" ? "line stderr" : "line";
    span.setAttribute("data-text", line.text);
    if (line.time) {
      var time = document.createElement("time");
      time.setAttribute("datetime", line.time);
      time.title = line.time;
      time.textContent = timeOfDay(line.time);
      span.appendChild(time);
      span.appendChild(document.createTextNode(" "));
    }
    span.appendChild(document.createTextNode(line.text));
    return span;
  }

  function atBottom() {
    return pre.scrollHeight - pre.scrollTop - pre.clientHeight < 24;
  }

  function append(line) {
    var stick = atBottom();
    if (replaceOnNext) {
      pre.textContent = "";
      replaceOnNext = false;
      stick = true;
    }
    var span = render(line);
    applyFilter(span, wanted());
    pre.appendChild(span);
    while (pre.children.length > MAX_LINES) {
      pre.removeChild(pre.firstChild);
    }
    refreshEmpty();
    if (stick) {
      pre.scrollTop = pre.scrollHeight;
    }
  }

  function stop(text) {
    if (retryTimer) {
      clearTimeout(retryTimer);
      retryTimer = null;
    }
    if (source) {
      source.close();
      source = null;
    }
    setState(text);
  }

  function start() {
    stop("connecting…");
    replaceOnNext = true;
    source = new EventSource(url + "?tail=" + TAIL);
    source.addEventListener("open", function () {
      retryMs = 1000;
      setState("following");
      panel.setAttribute("data-logs-following", "");
    });
    source.addEventListener("line", function (message) {
      try {
        append(JSON.parse(message.data));
      } catch (e) {
        // A message that is not JSON is skipped; the next ones still come.
      }
    });
    source.addEventListener("end", function (message) {
      var reason = "the stream ended";
      try {
        reason = JSON.parse(message.data).reason || reason;
      } catch (e) {
        // Keep the generic reason.
      }
      if (replaceOnNext) {
        // Nothing came before the end: the panel keeps what the page showed.
        replaceOnNext = false;
      }
      followBox.checked = false;
      panel.removeAttribute("data-logs-following");
      stop("stopped following: " + reason);
    });
    source.addEventListener("error", function () {
      if (!source) {
        return;
      }
      // Our own retry: the browser's would resend the last lines on top of the shown ones.
      source.close();
      source = null;
      panel.removeAttribute("data-logs-following");
      setState("connection lost; retrying…");
      retryTimer = setTimeout(function () {
        retryTimer = null;
        if (followBox.checked) {
          start();
        }
      }, retryMs);
      retryMs = Math.min(retryMs * 2, 30000);
    });
  }

  followBox.addEventListener("change", function () {
    if (followBox.checked) {
      start();
    } else {
      panel.removeAttribute("data-logs-following");
      stop("paused");
    }
  });
  // `input` as the user types; `change` and `search` for a box cleared by a script or its ✕.
  filterBox.addEventListener("input", filterAll);
  filterBox.addEventListener("change", filterAll);
  filterBox.addEventListener("search", filterAll);

  followBox.parentNode.hidden = false;
  filterAll();
  pre.scrollTop = pre.scrollHeight;
  if (panel.hasAttribute("data-logs-follow")) {
    followBox.checked = true;
    start();
  }
})();
