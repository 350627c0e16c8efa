// The live status page refreshes its live part in place (no full reload, no flicker): every
// data-refresh-seconds it fetches data-refresh-url (the same part, rendered alone) and swaps it in when it
// changed. It pauses while the tab is hidden, and stops when the answer is not the fragment (logged out).
"use strict";
(() => {
  const box = document.querySelector("[data-refresh-url]");
  if (!box) {
    return;
  }
  const url = box.dataset.refreshUrl;
  const seconds = Math.min(60, Math.max(30, Number(box.dataset.refreshSeconds) || 30));
  let timer = null;
  let busy = false;
  let last = null;  // the last fragment swapped in, as the server sent it

  const stamp = (html) => html.replace(/<p[^>]*id="status-updated"[^>]*>[\s\S]*?<\/p>/, "");

  async function refresh() {
    if (busy || document.hidden) {
      return;
    }
    busy = true;
    try {
      const response = await fetch(url, {
        credentials: "same-origin",
        headers: { "X-Requested-With": "status-refresh" },
        cache: "no-store",
      });
      if (!response.ok || response.headers.get("X-Status-Fragment") !== "1") {
        window.clearInterval(timer);
        box.dataset.refreshState = "stopped";
        return;
      }
      const html = await response.text();
      if (last === null || stamp(html) !== stamp(last)) {
        box.innerHTML = html;
        last = html;
      } else {
        const fresh = new DOMParser().parseFromString(html, "text/html").getElementById("status-updated");
        const old = document.getElementById("status-updated");
        if (fresh && old) {
          old.textContent = fresh.textContent;
        }
      }
      box.dataset.refreshState = "ok";
      box.dataset.refreshedAt = new Date().toISOString();
    } catch (error) {
      box.dataset.refreshState = "error";  // a network blip: try again next time
    } finally {
      busy = false;
    }
  }

  timer = window.setInterval(refresh, seconds * 1000);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) {
      refresh();
    }
  });
})();
