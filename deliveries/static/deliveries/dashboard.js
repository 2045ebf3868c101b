// The live deliveries dashboard: polls data.json and redraws the figures.
"use strict";
(function () {
  const dataUrl = JSON.parse(document.getElementById("data-url").textContent);
  const interval = JSON.parse(document.getElementById("poll-interval").textContent);
  const byId = (id) => document.getElementById(id);

  function time(iso) {
    return new Date(iso).toLocaleTimeString([], { hour12: false });
  }

  function cell(text, className, title) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined || text === "" ? "—" : text;
    if (className) td.className = className;
    if (title) td.title = title;
    return td;
  }

  function row(cells) {
    const tr = document.createElement("tr");
    tr.append(...cells);
    return tr;
  }

  function emptyRow(columns, text) {
    const td = cell(text, "muted");
    td.colSpan = columns;
    return row([td]);
  }

  function outcomeClass(outcome) {
    if (outcome === "success") return "ok";
    return outcome === "4xx" || outcome === "other" ? "warn" : "bad";
  }

  function renderRate(key, figures) {
    byId("rate-" + key).textContent =
      figures.rate === null ? "—" : (figures.rate * 100).toFixed(1) + " %";
    byId("rate-" + key).className =
      "figure " + (figures.rate === null ? "muted" : figures.rate >= 0.95 ? "ok" : "bad");
    byId("succeeded-" + key).textContent = figures.successes;
    byId("attempts-" + key).textContent = figures.attempts;
    byId("sampled-" + key).textContent = figures.sampled ? " (newest attempts only)" : "";
  }

  function renderFeed(attempts) {
    const rows = attempts.map((a) => row([
      cell(time(a.started_at)),
      cell(a.tenant),
      cell(a.endpoint_url, "url", a.endpoint_url),
      cell(a.event_type),
      cell(a.number, "num"),
      cell(a.outcome, outcomeClass(a.outcome), a.error),
      cell(a.status_code, "num"),
      cell(a.duration_ms + " ms", "num"),
    ]));
    byId("feed").replaceChildren(...(rows.length ? rows : [emptyRow(8, "No attempts yet.")]));
  }

  function renderEndpoints(endpoints) {
    const rows = endpoints.map((e) => row([
      cell(e.tenant),
      cell(e.url, "url", e.url),
      cell(e.attempts, "num"),
      cell(e.successes, "num"),
      cell(e.failures, e.failures ? "num bad" : "num"),
      cell(e.last_status_code ?? e.last_outcome, outcomeClass(e.last_outcome)),
      cell(time(e.last_attempt_at)),
      e.is_active ? cell("active", "ok")
                  : cell("disabled: " + (e.disabled_reason || "inactive"), "bad"),
      cell(e.circuit, e.circuit === "open" ? "bad" : e.circuit === "closed" ? "" : "warn"),
    ]));
    byId("endpoints").replaceChildren(
      ...(rows.length ? rows : [emptyRow(9, "No endpoint attempted recently.")]));
  }

  function showStatus(text, isError) {
    byId("status").textContent = text;
    byId("status").className = isError ? "error" : "";
  }

  async function refresh() {
    if (!document.hidden) {
      try {
        const response = await fetch(dataUrl, {
          credentials: "same-origin", cache: "no-store",
          headers: { Accept: "application/json" },
        });
        if (response.status === 403) {
          showStatus("Not signed in as staff any more: reload the page.", true);
          return;  // Polling again cannot help until the user signs in.
        }
        if (!response.ok) throw new Error("HTTP " + response.status);
        const data = await response.json();
        renderRate("5m", data.success_rates["5m"]);
        renderRate("1h", data.success_rates["1h"]);
        byId("dlq-size").textContent =
          data.dead_letters + (data.dead_letters_capped ? "+" : "");
        renderFeed(data.recent_attempts);
        renderEndpoints(data.endpoints);
        showStatus("Live · updated " + time(data.generated_at), false);
      } catch (error) {
        showStatus("Update failed (" + error.message + "), retrying…", true);
      }
    }
    setTimeout(refresh, interval);
  }

  refresh();
})();
