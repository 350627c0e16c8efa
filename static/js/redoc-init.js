// Starts Redoc on the API docs page (templates/api/redoc.html); no inline script under the CSP.
"use strict";
(function () {
  const container = document.getElementById("redoc-container");
  const settings = JSON.parse(container.dataset.settings || "{}");
  Redoc.init(container.dataset.schemaUrl, settings, container);
})();
