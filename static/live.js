// docker-watcher live updates: one EventSource on /api/events/stream (the session cookie
// authenticates it). No framework and no build step; pages work without it.
//
// - <body data-live="events">: new events are prepended to the event log table when they match
//   its filters (data-severity / data-source / data-project on the table).
// - <body data-live="regions">: any event (with ?all=1, also the transient ones) about what the
//   page shows makes it fetch itself again and swap in its fresh `data-live-region` parts, so
//   statuses come from the server's own rendering rather than being guessed here.
//
// Resuming: the first connection asks for the events after the newest one the page was rendered
// with (?last_event_id=, from data-last-event-id); the browser's own retries send Last-Event-ID;
// when the browser gives up (readyState CLOSED) we reconnect with backoff and ?last_event_id=
// set to the last id we saw.
(function () {
  "use strict";

  var body = document.body;
  var mode = body.getAttribute("data-live");
  if (!mode || typeof window.EventSource !== "function") {
    return;
  }
  var statusBadge = document.getElementById("live-status");
  var lastId = parseInt(body.getAttribute("data-last-event-id") || "0", 10) || 0;
  var stageAttr = body.getAttribute("data-live-stage");
  var onlyStage = stageAttr ? parseInt(stageAttr, 10) : null;
  var source = null;
  var retryMs = 1000;
  var connectedOnce = false;

  function setStatus(state, text) {
    if (statusBadge) {
      statusBadge.setAttribute("data-state", state);
      statusBadge.textContent = text;
    }
  }

  function streamUrl() {
    var params = [];
    if (mode === "regions") {
      params.push("all=1");
    }
    if (lastId > 0) {
      params.push("last_event_id=" + lastId);
    }
    return "/api/events/stream" + (params.length ? "?" + params.join("&") : "");
  }

  function connect() {
    source = new EventSource(streamUrl());
    source.addEventListener("open", function () {
      retryMs = 1000;
      setStatus("live", "live");
      // After a reconnect, transient events may have been missed: look again.
      if (connectedOnce && mode === "regions") {
        scheduleRefresh();
      }
      connectedOnce = true;
    });
    source.addEventListener("event", function (message) {
      var id = parseInt(message.lastEventId || "", 10);
      if (id > lastId) {
        lastId = id;
      }
      var event;
      try {
        event = JSON.parse(message.data);
      } catch (e) {
        return;
      }
      if (mode === "events") {
        addEventRow(event);
      } else {
        onRegionEvent(event);
      }
    });
    source.addEventListener("error", function () {
      setStatus("reconnecting", "reconnecting…");
      if (source.readyState === EventSource.CLOSED) {
        source.close();
        window.setTimeout(connect, retryMs);
        retryMs = Math.min(retryMs * 2, 30000);
      }
    });
  }

  // ----- regions: refresh the server-rendered parts ---------------------------------------

  var refreshTimer = null;
  var refreshing = false;
  var refreshAgain = false;

  function onRegionEvent(event) {
    if (onlyStage !== null && event.stage_id !== onlyStage) {
      return;
    }
    scheduleRefresh();
  }

  function scheduleRefresh() {
    if (refreshTimer !== null) {
      window.clearTimeout(refreshTimer);
    }
    refreshTimer = window.setTimeout(refresh, 250);
  }

  // A region the user is working in (focus inside, a confirmation open) is left alone until the
  // next refresh.
  function busy(region) {
    var active = document.activeElement;
    if (active && active !== document.body && region.contains(active)) {
      return true;
    }
    return region.querySelector("details[open]") !== null;
  }

  function refresh() {
    refreshTimer = null;
    if (refreshing) {
      refreshAgain = true;
      return;
    }
    refreshing = true;
    fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (!response.ok || response.redirected) {
          return null;
        }
        return response.text();
      })
      .then(function (html) {
        if (html === null) {
          return;
        }
        var fresh = new DOMParser().parseFromString(html, "text/html");
        var regions = document.querySelectorAll("[data-live-region][id]");
        for (var i = 0; i < regions.length; i++) {
          var region = regions[i];
          var replacement = fresh.getElementById(region.id);
          if (!replacement || busy(region)) {
            continue;
          }
          region.replaceWith(document.importNode(replacement, true));
        }
        body.setAttribute("data-refreshed", String(Date.now()));
      })
      .catch(function () {
        // The next event tries again.
      })
      .then(function () {
        refreshing = false;
        if (refreshAgain) {
          refreshAgain = false;
          scheduleRefresh();
        }
      });
  }

  // ----- the event log: prepend matching rows -----------------------------------------------

  function listAttr(element, name) {
    var raw = element.getAttribute(name) || "";
    return raw ? raw.split(",") : [];
  }

  function cell(row, content) {
    var td = document.createElement("td");
    if (content instanceof Node) {
      td.appendChild(content);
    } else if (content !== null && content !== undefined) {
      td.textContent = String(content);
    }
    row.appendChild(td);
    return td;
  }

  function link(href, text) {
    var a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    return a;
  }

  // Names of projects and stages, for rows arriving live: the project filter's options and the
  // table's data-stage-names know those that existed when the page was rendered; one created
  // since is asked of the API once, and its link shows "#id" until the answer comes.
  var names = { projects: {}, stages: null };

  function stageNames() {
    if (names.stages === null) {
      var table = document.getElementById("event-table");
      try {
        names.stages = JSON.parse((table && table.getAttribute("data-stage-names")) || "{}");
      } catch (e) {
        names.stages = {};
      }
    }
    return names.stages;
  }

  function projectName(id) {
    var option = document.querySelector('#filter-project option[value="' + id + '"]');
    return option ? option.textContent : names.projects[id];
  }

  function stageName(id) {
    return stageNames()[id];
  }

  function nameLink(kind, id, known) {
    var a = link("/" + kind + "/" + id, known || "#" + id);
    if (!known) {
      fetch("/api/" + kind + "/" + id, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (resource) {
          if (resource && resource.name) {
            (kind === "stages" ? stageNames() : names.projects)[id] = resource.name;
            a.textContent = resource.name;
          }
        })
        .catch(function () {});
    }
    return a;
  }

  function detailsText(details) {
    var parts = [];
    for (var key in details) {
      if (Object.prototype.hasOwnProperty.call(details, key)) {
        var value = details[key];
        parts.push(key + "=" + (typeof value === "string" ? value : JSON.stringify(value)));
      }
    }
    return parts.join(" ");
  }

  function addEventRow(event) {
    var table = document.getElementById("event-table");
    var rows = document.getElementById("event-rows");
    if (!table || !rows || event.id === null || event.id === undefined) {
      return;
    }
    var severities = listAttr(table, "data-severity");
    var sources = listAttr(table, "data-source");
    var project = table.getAttribute("data-project");
    if (severities.length && severities.indexOf(event.severity) < 0) {
      return;
    }
    if (sources.length && sources.indexOf(event.source) < 0) {
      return;
    }
    if (project && String(event.project_id) !== project) {
      return;
    }
    if (rows.querySelector('tr[data-event-id="' + event.id + '"]')) {
      return;
    }
    var row = document.createElement("tr");
    row.setAttribute("data-event-id", String(event.id));
    row.className = "sev-row-" + event.severity + " new-row";
    var time = document.createElement("time");
    time.setAttribute("datetime", event.ts);
    time.title = event.ts;
    time.textContent = "just now";
    cell(row, time);
    var severity = document.createElement("span");
    severity.className = "sev sev-" + event.severity;
    severity.textContent = event.severity;
    cell(row, severity);
    cell(row, event.source);
    cell(row, event.message).className = "message";
    cell(row, event.project_id ? nameLink("projects", event.project_id, projectName(event.project_id)) : null);
    cell(row, event.stage_id ? nameLink("stages", event.stage_id, stageName(event.stage_id)) : null);
    cell(row, event.instance_id);
    var details = document.createElement("small");
    details.textContent = detailsText(event.details || {});
    cell(row, details).className = "details";
    rows.insertBefore(row, rows.firstChild);

    var empty = document.getElementById("events-empty");
    if (empty) {
      empty.remove();
    }
    var total = document.getElementById("events-total");
    if (total) {
      total.textContent = String((parseInt(total.textContent, 10) || 0) + 1);
    }
  }

  setStatus("connecting", "connecting…");
  connect();
})();

// Copy buttons: <button data-copy="#id"> copies the value (or text) of the element it names,
// and says so on the button for a moment. Without a clipboard (plain http), the text is
// selected instead so Ctrl+C works.
(function () {
  "use strict";
  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("button[data-copy]") : null;
    if (!button) {
      return;
    }
    var target = document.querySelector(button.getAttribute("data-copy"));
    if (!target) {
      return;
    }
    var text = "value" in target ? target.value : target.textContent;
    var label = button.textContent;
    function done(message) {
      button.textContent = message;
      setTimeout(function () { button.textContent = label; }, 1500);
    }
    function select() {
      if (typeof target.select === "function") {
        target.select();
      } else {
        var range = document.createRange();
        range.selectNodeContents(target);
        var selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
      }
      done("Selected: press Ctrl+C");
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { done("Copied"); }, select);
    } else {
      select();
    }
  });
})();
