// Starts Swagger UI on the API docs page (templates/api/swagger_ui.html): drf-spectacular's inline
// initialisation, moved here so the Content-Security-Policy needs no inline script. The page hands
// over its settings in data attributes of #swagger-ui.
"use strict";
(function () {
  const container = document.getElementById("swagger-ui");
  const data = container.dataset;
  const swaggerSettings = JSON.parse(data.settings || "{}");
  const schemaAuthNames = JSON.parse(data.schemaAuthNames || "[]");
  let schemaAuthFailed = false;
  let ui;
  const plugins = [];

  const reloadSchema = (ori) => (...args) => {
    schemaAuthFailed = false;
    setTimeout(() => ui.specActions.download());
    return ori(...args);
  };
  if (schemaAuthNames.length > 0) {
    plugins.push(() => ({
      statePlugins: {
        auth: { wrapActions: { authorizeOauth2: reloadSchema, authorize: reloadSchema, logout: reloadSchema } },
      },
    }));
  }

  const isSchemaUrl = (url) => ui !== undefined && url === new URL(ui.getConfigs().url, document.baseURI).href;

  const responseInterceptor = (response) => {
    if (!response.ok && isSchemaUrl(response.url) && !schemaAuthFailed) {
      // Retry once without the credentials, as drf-spectacular's own page does.
      schemaAuthFailed = true;
      setTimeout(() => ui.specActions.download());
    }
    return response;
  };

  const injectAuthCredentials = (request) => {
    if (ui === undefined) {
      return;
    }
    const state = ui.getState().get("auth").get("authorized");
    if (state === undefined) {
      return;
    }
    const authorized = state.toJS();
    for (const authName of schemaAuthNames) {
      const authDef = authorized[authName];
      if (authDef && authDef.schema && authDef.schema.type === "http" && authDef.schema.scheme === "bearer") {
        request.headers["Authorization"] = "Bearer " + authDef.value;
        return;
      }
    }
  };

  const requestInterceptor = (request) => {
    if (request.loadSpec && schemaAuthNames.length > 0 && !schemaAuthFailed) {
      injectAuthCredentials(request);
    }
    if (!["GET", undefined].includes(request.method) && request.credentials === "same-origin") {
      request.headers[data.csrfHeader] = data.csrfToken;
    }
    return request;
  };

  ui = SwaggerUIBundle({
    url: data.schemaUrl,
    dom_id: "#swagger-ui",
    presets: [SwaggerUIBundle.presets.apis],
    plugins,
    layout: "BaseLayout",
    requestInterceptor,
    responseInterceptor,
    ...swaggerSettings,
  });
})();
