// A table wider than its .table-responsive box scrolls inside it: make that box reachable by keyboard (tabindex)
// and named for screen readers, as WCAG asks of scrollable regions. Re-checked when the window is resized.
"use strict";
(() => {
  const nameOf = (box) => {
    const table = box.querySelector("table");
    const caption = table && table.caption ? table.caption.textContent : "";
    const labelled = table && table.getAttribute("aria-label");
    const section = box.closest("section[aria-labelledby]");
    const heading = section ? document.getElementById(section.getAttribute("aria-labelledby")) : null;
    return (labelled || caption || (heading ? heading.textContent : "") || "Table").trim();
  };
  const mark = () => {
    for (const box of document.querySelectorAll(".table-responsive")) {
      if (box.scrollWidth > box.clientWidth + 1) {
        if (!box.hasAttribute("tabindex")) {
          box.setAttribute("tabindex", "0");
          box.setAttribute("role", "region");
          box.setAttribute("aria-label", `${nameOf(box)} (scrolls sideways)`);
          box.dataset.scrollable = "true";
        }
      } else if (box.dataset.scrollable) {
        box.removeAttribute("tabindex");
        box.removeAttribute("role");
        box.removeAttribute("aria-label");
        delete box.dataset.scrollable;
      }
    }
  };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", mark);
  else mark();
  window.addEventListener("resize", mark);
  document.addEventListener("rgd:updated", mark);
})();
