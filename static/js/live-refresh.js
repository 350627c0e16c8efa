// Refreshes parts of a page in place while something on it is still in progress, without a full reload.
// Markup: a container with data-live-refresh="SECONDS" holding elements with ids; while the page has an element
// matching its data-live-while selector (e.g. a queued or running job), the page is fetched again every SECONDS
// and each [data-live-part] element with an id is replaced by its new version. Without data-live-while it refreshes
// for as long as the page is open. A [data-live-status] element (aria-live) says when it last refreshed.
"use strict";
(() => {
  const root = document.querySelector("[data-live-refresh]");
  if (!root) return;
  const seconds = Math.max(1, Number(root.dataset.liveRefresh) || 30);
  const selector = root.dataset.liveWhile || "";
  const status = document.querySelector("[data-live-status]");
  const maxPolls = Number(root.dataset.liveMax) || 600;
  let polls = 0;
  const active = () => !selector || document.querySelector(selector) !== null;
  const refresh = async () => {
    polls += 1;
    let response;
    try {
      response = await fetch(window.location.href, { headers: { "X-Live-Refresh": "1" }, credentials: "same-origin" });
    } catch (error) {
      if (status) status.textContent = "Could not refresh: the dashboard did not answer. Retrying.";
      return schedule();
    }
    if (response.redirected || !response.ok) {
      if (status) status.textContent = `Could not refresh (${response.status}): reload the page.`;
      return undefined;
    }
    const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
    for (const part of document.querySelectorAll("[data-live-part][id]")) {
      const next = fresh.getElementById(part.id);
      if (next) part.replaceWith(document.importNode(next, true));
    }
    if (status) {
      const now = new Date();
      status.textContent = `Updated ${now.toISOString().slice(11, 19)} UTC.`;
    }
    document.dispatchEvent(new CustomEvent("rgd:updated"));
    return schedule();
  };
  const schedule = () => {
    if (polls < maxPolls && active()) window.setTimeout(refresh, seconds * 1000);
  };
  schedule();
})();
